//! The `azure_key_vault` KEK: data keys made here, wrapped and unwrapped by Azure Key Vault's
//! `wrapkey` / `unwrapkey` (RSA-OAEP-256 on Key Vault keys, A256KW on Managed HSM keys), with
//! Entra ID auth as the Azure sinks.
//!
//! Key Vault's wrap has no associated data, so each entry also carries `bind`: an HMAC-SHA256,
//! under the data key, of the entry's key id, tenant and hour. An entry copied to another
//! tenant or hour unwraps but fails that check. The key version used is kept in the entry;
//! the URL of every call is built from the configured vault, key name and that version (never
//! from a `kid` read back from storage, which would let a changed entry send our token
//! elsewhere).

use std::sync::Arc;

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::crypt::DataKey;
use crate::ledger::{Entry, Kek, LedgerError, FORMAT};
use logferry_destinations::azure_auth::AuthError;
use logferry_destinations::tls::TlsError;

pub const PROVIDER: &str = "azure_key_vault";
const SCOPE: &str = "https://vault.azure.net/.default";
const API_VERSION: &str = "7.4";

#[derive(Debug, Clone)]
pub struct KeyVaultOptions {
    /// `https://<vault>.vault.azure.net` (or a Managed HSM's URL).
    pub vault_url: String,
    pub key_name: String,
    /// A fixed key version; without it, wraps use the key's current version.
    pub key_version: Option<String>,
    /// `RSA-OAEP-256` (default) or `A256KW`.
    pub algorithm: String,
    pub auth: logferry_destinations::azure_auth::Entra,
    pub tls: logferry_destinations::tls::TlsOptions,
}

/// Why the KEK cannot be set up: the vault URL at fault, or its TLS or credential.
#[derive(Debug, thiserror::Error)]
pub enum KeyVaultError {
    #[error("vault_url {url:?}: {cause}")]
    Url { url: String, cause: String },
    #[error("vault_url must be https:// (bearer tokens and keys travel on it)")]
    NotHttps,
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Auth(#[from] AuthError),
}

pub struct KeyVault {
    name: String,
    o: KeyVaultOptions,
    base: String,
    http: reqwest::Client,
    credential: Arc<dyn TokenCredential>,
}

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// A key version as Key Vault writes them: letters and digits only.
fn valid_version(v: &str) -> bool {
    (1..=64).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn bind(key: &[u8; 32], key_id: &str, tenant: &str, hour: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(b"LFKEY");
    for f in [key_id, tenant, hour] {
        mac.update(&(f.len() as u16).to_be_bytes());
        mac.update(f.as_bytes());
    }
    hex::encode(mac.finalize().into_bytes())
}

#[derive(serde::Deserialize)]
struct Answer {
    kid: Option<String>,
    value: String,
}

impl KeyVault {
    pub fn new(name: &str, o: KeyVaultOptions) -> Result<Self, KeyVaultError> {
        let mut url = reqwest::Url::parse(&o.vault_url).map_err(|e| KeyVaultError::Url {
            url: o.vault_url.clone(),
            cause: e.to_string(),
        })?;
        if url.scheme() != "https" {
            return Err(KeyVaultError::NotHttps);
        }
        let http = logferry_destinations::tls::client_for(&o.tls, &mut url)?;
        let credential = o.auth.credential(&http)?;
        Ok(KeyVault {
            name: name.to_owned(),
            base: url.as_str().trim_end_matches('/').to_string(),
            o,
            http,
            credential,
        })
    }

    /// POST `/keys/<name>[/<version>]/<op>`: the answer's bytes and the key version used.
    async fn call(
        &self,
        op: &str,
        version: Option<&str>,
        value: &[u8],
    ) -> Result<(Zeroizing<Vec<u8>>, Option<String>), LedgerError> {
        let key = logferry_sink::percent_encode(&self.o.key_name);
        let url = match version {
            Some(v) => format!(
                "{}/keys/{key}/{v}/{op}?api-version={API_VERSION}",
                self.base
            ),
            None => format!("{}/keys/{key}/{op}?api-version={API_VERSION}", self.base),
        };
        let token = self
            .credential
            .get_token(&[SCOPE], None)
            .await
            .map_err(|e| {
                LedgerError::Kek(format!(
                    "cannot get an Entra ID token for Key Vault ({}): {e}",
                    self.o.auth.name()
                ))
            })?;
        let body = serde_json::json!({ "alg": self.o.algorithm, "value": b64url(value) });
        let res = self
            .http
            .post(&url)
            .bearer_auth(token.token.secret())
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| {
                LedgerError::Kek(format!(
                    "Key Vault {op}: {}",
                    logferry_sink::redact::text(&e.to_string())
                ))
            })?;
        let status = res.status().as_u16();
        let text = res
            .text()
            .await
            .map_err(|e| LedgerError::Kek(format!("Key Vault {op}: {e}")))?;
        match status {
            200 => {}
            400 if op == "unwrapkey" => return Err(LedgerError::Kek(format!("Key Vault refused to unwrap: {}", short(&text)))),
            401 | 403 => {
                return Err(LedgerError::Kek(format!(
                    "Key Vault {op} on key {:?}: {status} (grant the identity keys/wrapKey and keys/unwrapKey, e.g. the Key Vault Crypto Service Encryption User role): {}",
                    self.o.key_name,
                    short(&text)
                )))
            }
            _ => return Err(LedgerError::Kek(format!("Key Vault {op}: {status} {}", short(&text)))),
        }
        let a: Answer = serde_json::from_str(&text)
            .map_err(|e| LedgerError::Kek(format!("Key Vault {op}: unexpected answer: {e}")))?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(a.value.trim_end_matches('='))
            .map_err(|_| LedgerError::Kek(format!("Key Vault {op}: the value is not base64url")))?;
        let used = a
            .kid
            .as_deref()
            .and_then(|k| k.rsplit('/').next())
            .filter(|v| valid_version(v))
            .map(str::to_owned);
        Ok((Zeroizing::new(bytes), used))
    }
}

/// The error Key Vault names, without echoing a whole body.
fn short(text: &str) -> String {
    text.chars().take(300).collect()
}

#[async_trait]
impl Kek for KeyVault {
    fn name(&self) -> &str {
        &self.name
    }

    async fn new_key(&self, tenant: &str, hour: &str) -> Result<(DataKey, Entry), LedgerError> {
        let key = DataKey::generate(tenant, hour).map_err(|e| LedgerError::Seal(e.to_string()))?;
        let (wrapped, used) = self
            .call("wrapkey", self.o.key_version.as_deref(), &key.bytes[..])
            .await?;
        let version = used.or_else(|| self.o.key_version.clone()).ok_or_else(|| {
            LedgerError::Kek("Key Vault did not say which key version wrapped the key".into())
        })?;
        let entry = Entry {
            format: FORMAT.into(),
            key_id: key.id.clone(),
            tenant: tenant.to_owned(),
            hour: hour.to_owned(),
            kek: self.name.clone(),
            provider: PROVIDER.into(),
            wrapped: base64::engine::general_purpose::STANDARD.encode(&wrapped[..]),
            kek_version: Some(version),
            bind: Some(bind(&key.bytes, &key.id, tenant, hour)),
            signature: None,
            signed_by: None,
        };
        Ok((key, entry))
    }

    async fn unwrap(&self, entry: &Entry) -> Result<DataKey, LedgerError> {
        entry.check(PROVIDER, &self.name)?;
        let bad = || LedgerError::Unwrap(entry.key_id.clone());
        let version = entry
            .kek_version
            .as_deref()
            .filter(|v| valid_version(v))
            .ok_or_else(bad)?;
        let wrapped = base64::engine::general_purpose::STANDARD
            .decode(&entry.wrapped)
            .map_err(|_| bad())?;
        let (plain, _) = self.call("unwrapkey", Some(version), &wrapped).await?;
        if plain.len() != 32 {
            return Err(bad());
        }
        let mut bytes = Zeroizing::new([0u8; 32]);
        bytes.copy_from_slice(&plain);
        let want = bind(&bytes, &entry.key_id, &entry.tenant, &entry.hour);
        if entry.bind.as_deref() != Some(want.as_str()) {
            return Err(bad());
        }
        Ok(DataKey {
            id: entry.key_id.clone(),
            tenant: entry.tenant.clone(),
            hour: entry.hour.clone(),
            bytes,
        })
    }
}
