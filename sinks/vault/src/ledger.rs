//! The key ledger: one small JSON object per (tenant, UTC hour) holding that hour's data key,
//! wrapped by the key-encryption key (KEK). Deleting the entry erases the hour: the objects stay,
//! and nothing can read them any more.
//!
//! Entries live at `_keys/<tenant>/<YYYY-MM-DDTHH>/<key_id>.key` beside the data: a tenant-hour
//! may have several keys (one per writer and process), each named by its random id, so a name
//! planted or squatted in the ledger can neither be taken for ours nor block writing. Entries of
//! earlier versions at `_keys/<tenant>/<YYYY-MM-DDTHH>.key` are still read.
//!
//! With the `local` KEK the data key is wrapped with AES-256-GCM under the KEK, a random 12-byte
//! nonce, and associated data binding the entry's key id, tenant and hour (`docs/encryption.md`):
//! only the KEK's holder can make an entry that unwraps. A KMS or Key Vault KEK wraps for anyone
//! allowed to encrypt with it (Key Vault's RSA keys: anyone with the public key), so those
//! entries are also signed with the `[signing]` key, and an entry without a valid signature is
//! forged: reported, never used.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::crypt::{random, CryptError, DataKey};
use logferry_sink::store::StoreError;

pub const FORMAT: &str = "logferry-key-1";
const WRAP_MAGIC: &[u8; 5] = b"LFKEY";

/// Where a data key's entry lives, relative to the sink's root or prefix.
pub fn entry_key(tenant: &str, hour: &str, key_id: &str) -> String {
    format!("_keys/{tenant}/{hour}/{key_id}.key")
}

/// Where a tenant-hour's one entry lived before entries were named by key id.
pub fn legacy_entry_key(tenant: &str, hour: &str) -> String {
    format!("_keys/{tenant}/{hour}.key")
}

/// Whether `id` is a key id as logferry makes them (hex, at most 64 digits): an id read from an
/// object's header becomes part of a ledger path only when it is one.
pub fn is_key_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A ledger entry as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub format: String,
    pub key_id: String,
    pub tenant: String,
    pub hour: String,
    /// The KEK's configured name and provider, so a reader knows which KEK to ask.
    pub kek: String,
    pub provider: String,
    /// Base64 of nonce (12) || wrapped key (32) || tag (16) for `local`; of the KMS
    /// ciphertext blob for `aws_kms`; of Key Vault's wrapped bytes for `azure_key_vault`.
    pub wrapped: String,
    /// `azure_key_vault`: the key version that wrapped it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kek_version: Option<String>,
    /// `azure_key_vault`: HMAC-SHA256 under the data key of key id, tenant and hour (Key
    /// Vault's wrap binds nothing else).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    /// Base64 of the `[signing]` key's Ed25519 signature of [`Entry::signed_bytes`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// The signing key's public key (hex), to tell which key a reader should expect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
}

const SIGNED: &[u8] = b"logferry-key-entry-1";

impl Entry {
    /// What the signature covers: a tag, then every field but the signature's own, each as a
    /// u32 big-endian length and its UTF-8 bytes (an absent field is empty).
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut out = SIGNED.to_vec();
        for f in [
            self.format.as_str(),
            &self.key_id,
            &self.tenant,
            &self.hour,
            &self.kek,
            &self.provider,
            &self.wrapped,
            self.kek_version.as_deref().unwrap_or(""),
            self.bind.as_deref().unwrap_or(""),
        ] {
            out.extend_from_slice(&(f.len() as u32).to_be_bytes());
            out.extend_from_slice(f.as_bytes());
        }
        out
    }

    /// Signs the entry with `key`.
    pub fn sign(&mut self, key: &logferry_integrity::signing::SigningKey) {
        self.signature = Some(key.sign(&self.signed_bytes()));
        self.signed_by = Some(key.public_hex());
    }

    /// Whether the entry carries `public`'s signature.
    pub fn signed_by_key(&self, public: &[u8]) -> bool {
        self.signature
            .as_deref()
            .is_some_and(|s| logferry_integrity::signing::verify(public, &self.signed_bytes(), s))
    }

    /// An entry this KEK (`provider`, configured as `kek`) can open: the format it writes, and
    /// its own, not another KEK's.
    pub fn check(&self, provider: &str, kek: &str) -> Result<(), LedgerError> {
        if self.format != FORMAT {
            return Err(LedgerError::Format(self.format.clone()));
        }
        if self.provider != provider || self.kek != kek {
            return Err(LedgerError::OtherKek {
                kek: self.kek.clone(),
                provider: self.provider.clone(),
            });
        }
        Ok(())
    }
}

/// A local KEK: 32 bytes from a key file or the environment, wiped when dropped.
pub struct LocalKek {
    pub name: String,
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for LocalKek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKek")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The associated data of a wrapped key: magic, then key id, tenant and hour, each u16-length
/// prefixed.
fn wrap_aad(key_id: &str, tenant: &str, hour: &str) -> Vec<u8> {
    let mut aad = WRAP_MAGIC.to_vec();
    for f in [key_id, tenant, hour] {
        aad.extend_from_slice(&(f.len() as u16).to_be_bytes());
        aad.extend_from_slice(f.as_bytes());
    }
    aad
}

impl LocalKek {
    /// From the key material as configured: 32 raw bytes, or 64 hex digits, or base64 of 32
    /// bytes (surrounding whitespace ignored). Anything else is refused without showing it.
    pub fn from_material(name: &str, material: &[u8]) -> Result<Self, LedgerError> {
        let mut key = Zeroizing::new([0u8; 32]);
        let text = std::str::from_utf8(material).ok().map(str::trim);
        let decoded: Option<Zeroizing<Vec<u8>>> = match text {
            Some(t) if t.len() == 64 => hex::decode(t).ok().map(Zeroizing::new),
            Some(t) if !t.is_empty() => base64::engine::general_purpose::STANDARD
                .decode(t)
                .ok()
                .map(Zeroizing::new),
            _ => None,
        };
        match decoded {
            Some(d) if d.len() == 32 => key.copy_from_slice(&d),
            _ if material.len() == 32 => key.copy_from_slice(material),
            _ => {
                return Err(LedgerError::KekMaterial {
                    name: name.to_owned(),
                })
            }
        }
        Ok(LocalKek {
            name: name.to_owned(),
            key,
        })
    }

    fn aead(&self) -> Result<LessSafeKey, CryptError> {
        UnboundKey::new(&AES_256_GCM, &self.key[..])
            .map(LessSafeKey::new)
            .map_err(|_| CryptError::Seal("AES-256-GCM key rejected"))
    }

    /// Wraps `key` into a ledger entry.
    pub fn wrap(&self, key: &DataKey) -> Result<Entry, CryptError> {
        let mut nonce = [0u8; 12];
        random(&mut nonce)?;
        let mut sealed = key.bytes.to_vec();
        self.aead()?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(wrap_aad(&key.id, &key.tenant, &key.hour)),
                &mut sealed,
            )
            .map_err(|_| CryptError::Seal("wrapping the data key failed"))?;
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&sealed);
        Ok(Entry {
            format: FORMAT.into(),
            key_id: key.id.clone(),
            tenant: key.tenant.clone(),
            hour: key.hour.clone(),
            kek: self.name.clone(),
            provider: "local".into(),
            wrapped: base64::engine::general_purpose::STANDARD.encode(blob),
            kek_version: None,
            bind: None,
            signature: None,
            signed_by: None,
        })
    }

    /// Unwraps an entry read from the ledger.
    pub fn unwrap(&self, entry: &Entry) -> Result<DataKey, LedgerError> {
        entry.check("local", &self.name)?;
        let mut blob = base64::engine::general_purpose::STANDARD
            .decode(&entry.wrapped)
            .map_err(|_| LedgerError::Unwrap(entry.key_id.clone()))?;
        if blob.len() != 12 + 32 + 16 {
            return Err(LedgerError::Unwrap(entry.key_id.clone()));
        }
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&blob[..12]);
        let aead = self
            .aead()
            .map_err(|_| LedgerError::Unwrap(entry.key_id.clone()))?;
        let plain = aead
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(wrap_aad(&entry.key_id, &entry.tenant, &entry.hour)),
                &mut blob[12..],
            )
            .map_err(|_| LedgerError::Unwrap(entry.key_id.clone()))?;
        let mut bytes = Zeroizing::new([0u8; 32]);
        bytes.copy_from_slice(plain);
        zeroize::Zeroize::zeroize(&mut blob);
        Ok(DataKey {
            id: entry.key_id.clone(),
            tenant: entry.tenant.clone(),
            hour: entry.hour.clone(),
            bytes,
        })
    }
}

/// A key-encryption key: makes a data key for a tenant-hour with its ledger entry, and opens
/// entries again. `local` wraps in-process; the KMS providers ask their service.
#[async_trait::async_trait]
pub trait Kek: Send + Sync {
    /// The KEK's configured name, recorded in every entry it writes.
    fn name(&self) -> &str;
    async fn new_key(&self, tenant: &str, hour: &str) -> Result<(DataKey, Entry), LedgerError>;
    async fn unwrap(&self, entry: &Entry) -> Result<DataKey, LedgerError>;
    /// Whether only this KEK's holder can make an entry that unwraps (a local key's AES-GCM
    /// wrap is a MAC under it). Entries of a KEK that does not are trusted only when signed.
    fn authenticates_entries(&self) -> bool {
        false
    }
}

#[async_trait::async_trait]
impl Kek for LocalKek {
    fn name(&self) -> &str {
        &self.name
    }

    async fn new_key(&self, tenant: &str, hour: &str) -> Result<(DataKey, Entry), LedgerError> {
        let key = DataKey::generate(tenant, hour).map_err(|e| LedgerError::Seal(e.to_string()))?;
        let entry = self
            .wrap(&key)
            .map_err(|e| LedgerError::Seal(e.to_string()))?;
        Ok((key, entry))
    }

    async fn unwrap(&self, entry: &Entry) -> Result<DataKey, LedgerError> {
        LocalKek::unwrap(self, entry)
    }

    fn authenticates_entries(&self) -> bool {
        true
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LedgerError {
    #[error("cannot make a data key: {0}")]
    Seal(String),
    /// The store holding the ledger failed, or a name in it holds something logferry never
    /// wrote ([`StoreError::is_planted`]).
    #[error("key ledger: {0}")]
    Store(StoreError),
    /// The KEK's service (KMS, Key Vault) failed or refused: like a store that fails, an error
    /// to wait out or a permission to grant, never a reason to distrust an entry.
    #[error("key ledger: {0}")]
    Kek(String),
    /// Local key material that is not a key; the material is never in the words.
    #[error(
        "KEK {name:?} is not 32 bytes (give 32 raw bytes, 64 hex digits or base64 of 32 bytes)"
    )]
    KekMaterial { name: String },
    #[error("key shredded: no ledger entry for tenant {tenant:?} hour {hour} (deleted at the end of retention or by `logferry shred`)")]
    Shredded { tenant: String, hour: String },
    #[error("ledger entry format {0:?} is not supported")]
    Format(String),
    #[error("the ledger entry is wrapped by KEK {kek:?} ({provider}), not this one")]
    OtherKek { kek: String, provider: String },
    #[error("data key {0} does not unwrap under this KEK: wrong KEK, or the entry was changed or moved to another tenant or hour")]
    Unwrap(String),
    #[error("ledger entry names key {found} for tenant {tenant:?} hour {hour}, the object wants {wanted}")]
    Mismatch {
        tenant: String,
        hour: String,
        wanted: String,
        found: String,
    },
    #[error("forged ledger entry {path}: {why}; it is not used")]
    Forged { path: String, why: String },
    #[error("ledger entry for tenant {tenant:?} hour {hour} is not valid JSON: {why}")]
    Parse {
        tenant: String,
        hour: String,
        why: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kek(name: &str) -> LocalKek {
        LocalKek::from_material(name, &[7u8; 32]).unwrap()
    }

    #[test]
    fn a_wrapped_key_unwraps_to_the_same_bytes() {
        let dk = DataKey::generate("acme", "2026-12-03T10").unwrap();
        let entry = kek("main").wrap(&dk).unwrap();
        assert!(!entry.wrapped.contains(&hex::encode(&dk.bytes[..])));
        let back = kek("main").unwrap(&entry).unwrap();
        assert_eq!(back.bytes[..], dk.bytes[..]);
        assert_eq!(
            (back.id, back.tenant, back.hour),
            (dk.id, dk.tenant, dk.hour)
        );
    }

    #[test]
    fn an_entry_moved_to_another_tenant_or_hour_does_not_unwrap() {
        let dk = DataKey::generate("acme", "2026-12-03T10").unwrap();
        let entry = kek("main").wrap(&dk).unwrap();
        for moved in [
            Entry {
                tenant: "other".into(),
                ..entry.clone()
            },
            Entry {
                hour: "2026-12-03T11".into(),
                ..entry.clone()
            },
            Entry {
                key_id: "0".repeat(32),
                ..entry.clone()
            },
        ] {
            assert!(matches!(
                kek("main").unwrap(&moved),
                Err(LedgerError::Unwrap(_))
            ));
        }
        let wrong = LocalKek::from_material("main", &[8u8; 32]).unwrap();
        assert!(matches!(wrong.unwrap(&entry), Err(LedgerError::Unwrap(_))));
        assert!(matches!(
            kek("other").unwrap(&entry),
            Err(LedgerError::OtherKek { .. })
        ));
    }

    #[test]
    fn key_material_is_taken_as_raw_hex_or_base64_and_else_refused_without_echo() {
        let hexed = format!("{}\n", "ab".repeat(32));
        let b64 = base64::engine::general_purpose::STANDARD.encode([0xabu8; 32]);
        let a = LocalKek::from_material("k", hexed.as_bytes()).unwrap();
        let b = LocalKek::from_material("k", b64.as_bytes()).unwrap();
        let c = LocalKek::from_material("k", &[0xab; 32]).unwrap();
        assert!(a.key[..] == b.key[..] && b.key[..] == c.key[..]);
        let err = LocalKek::from_material("k", b"hunter2-is-too-short").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
