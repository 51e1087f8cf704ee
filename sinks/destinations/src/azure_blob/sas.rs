//! Shared-key pieces the official crate lacks: connection strings, and SAS tokens minted from
//! the account key (HMAC-SHA256 over the service's string-to-sign).

use std::collections::HashMap;

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use logferry_sink::percent_encode;

pub(super) const SAS_VERSION: &str = "2022-11-02";
/// Minted tokens live this long and are renewed when half used.
pub(super) const SAS_LIFETIME: chrono::Duration = chrono::Duration::hours(1);

/// The parts of a connection string logferry uses.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionString {
    pub account: String,
    pub key: Option<Vec<u8>>,
    pub blob_endpoint: String,
    pub sas: Option<String>,
}

impl std::fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ConnectionString({}, {})",
            self.account, self.blob_endpoint
        )
    }
}

/// What is wrong with a connection string: the part at fault, never the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionStringError {
    #[error("connection_string: each part must be Key=Value")]
    NotKeyValue,
    #[error("connection_string: AccountName is missing")]
    NoAccount,
    #[error("connection_string: AccountKey is not base64")]
    KeyNotBase64,
    #[error("connection_string: needs an AccountKey or a SharedAccessSignature")]
    NoCredential,
}

/// Azurite's well-known development account (public, documented by Microsoft).
const DEV_ACCOUNT: &str = "devstoreaccount1";
const DEV_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

impl ConnectionString {
    /// Parses `Key=Value;...` as the portal and Azurite write it. The error names the part that
    /// is wrong, never the key.
    pub fn parse(s: &str) -> Result<ConnectionString, ConnectionStringError> {
        let mut m: HashMap<String, String> = HashMap::new();
        for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or(ConnectionStringError::NotKeyValue)?;
            m.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
        if m.get("usedevelopmentstorage")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            m.entry("accountname".into())
                .or_insert_with(|| DEV_ACCOUNT.into());
            m.entry("accountkey".into())
                .or_insert_with(|| DEV_KEY.into());
            m.entry("blobendpoint".into())
                .or_insert_with(|| format!("http://127.0.0.1:10000/{DEV_ACCOUNT}"));
        }
        let account = m
            .get("accountname")
            .cloned()
            .ok_or(ConnectionStringError::NoAccount)?;
        let key = match m.get("accountkey") {
            Some(k) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(k)
                    .map_err(|_| ConnectionStringError::KeyNotBase64)?,
            ),
            None => None,
        };
        let blob_endpoint = match m.get("blobendpoint") {
            Some(e) => e.trim_end_matches('/').to_string(),
            None => {
                let proto = m
                    .get("defaultendpointsprotocol")
                    .map_or("https", String::as_str);
                let suffix = m
                    .get("endpointsuffix")
                    .map_or("core.windows.net", String::as_str);
                format!("{proto}://{account}.blob.{suffix}")
            }
        };
        let sas = m.get("sharedaccesssignature").cloned();
        if key.is_none() && sas.is_none() {
            return Err(ConnectionStringError::NoCredential);
        }
        Ok(ConnectionString {
            account,
            key,
            blob_endpoint,
            sas,
        })
    }
}

/// A container-scoped service SAS signed with the account key: read (properties, a blob's
/// tail), add (append blocks), create, write, delete (the check's probe), list (append roll
/// numbers).
pub fn mint_sas(
    account: &str,
    key: &[u8],
    container: &str,
    expiry: chrono::DateTime<chrono::Utc>,
    allow_http: bool,
) -> String {
    let se = expiry.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let spr = protocols(allow_http);
    // In the canonical order the service requires.
    let sp = "racwdl";
    let resource = format!("/blob/{account}/{container}");
    // Field order of the service SAS string-to-sign for versions 2020-12-06 and later.
    let to_sign = format!("{sp}\n\n{se}\n{resource}\n\n\n{spr}\n{SAS_VERSION}\nc\n\n\n\n\n\n\n");
    let sig = sign(key, &to_sign);
    format!(
        "sv={SAS_VERSION}&sp={sp}&se={}&spr={spr}&sr=c&sig={}",
        percent_encode(&se),
        percent_encode(&sig)
    )
}

/// An account SAS allowing only the creation of containers, for `create_container`.
pub(super) fn account_sas_create(
    account: &str,
    key: &[u8],
    expiry: chrono::DateTime<chrono::Utc>,
    allow_http: bool,
) -> String {
    let se = expiry.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let spr = protocols(allow_http);
    let to_sign = format!("{account}\nc\nb\nc\n\n{se}\n\n{spr}\n{SAS_VERSION}\n\n");
    let sig = sign(key, &to_sign);
    format!(
        "sv={SAS_VERSION}&ss=b&srt=c&sp=c&se={}&spr={spr}&sig={}",
        percent_encode(&se),
        percent_encode(&sig)
    )
}

/// The protocols a minted token allows: https only, unless the sink opted in to http.
fn protocols(allow_http: bool) -> &'static str {
    if allow_http {
        "https,http"
    } else {
        "https"
    }
}

/// Base64 HMAC-SHA256 of a SAS string-to-sign with the account key.
fn sign(key: &[u8], to_sign: &str) -> String {
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(to_sign.as_bytes());
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        }
        // HMAC takes keys of any length: not reachable.
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_allow_https_only_unless_the_sink_opted_in() {
        let exp = chrono::Utc::now();
        assert!(mint_sas("a", b"k", "c", exp, false).contains("&spr=https&"));
        assert!(mint_sas("a", b"k", "c", exp, true).contains("&spr=https,http&"));
        assert!(account_sas_create("a", b"k", exp, false).contains("&spr=https&"));
    }

    #[test]
    fn connection_strings_in_their_usual_forms() {
        let c = ConnectionString::parse("UseDevelopmentStorage=true").unwrap();
        assert_eq!(c.account, "devstoreaccount1");
        assert_eq!(c.blob_endpoint, "http://127.0.0.1:10000/devstoreaccount1");
        let c = ConnectionString::parse(
            "DefaultEndpointsProtocol=https;AccountName=acme;AccountKey=a2V5;EndpointSuffix=core.windows.net",
        )
        .unwrap();
        assert_eq!(c.blob_endpoint, "https://acme.blob.core.windows.net");
        assert_eq!(c.key.as_deref(), Some(&b"key"[..]));
        assert!(!format!("{c:?}").contains("a2V5"));
        assert!(ConnectionString::parse("AccountName=x")
            .unwrap_err()
            .to_string()
            .contains("AccountKey"));
        assert!(ConnectionString::parse("AccountName=x;AccountKey=!!")
            .unwrap_err()
            .to_string()
            .contains("base64"));
    }
}
