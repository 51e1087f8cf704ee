//! The encrypted spool: for a sink that encrypts, each batch file's payload is an encrypted
//! object (`docs/encryption.md`) under a spool data key of the hour the batch was sealed, made
//! and wrapped by the sink's KEK and kept in `data_dir/spool-keys/<sink>/`. After a crash,
//! what is under `data_dir` is unreadable without the KEK.
//!
//! Spool keys are local (tenant `_spool`), so sealing never waits for the sink's ledger: a sink
//! that is down does not stop batches from being spooled. Delivery opens the payload again and
//! the sink encrypts it under the tenant-hour's key.

use std::sync::Arc;

use bytes::Bytes;
use logferry_sinks::crypt::{decrypt, encrypt_batch, Header, DEFAULT_SEGMENT, INLINE_BYTES};
use logferry_sinks::keys::{hour_of, KeyRing};
use logferry_sinks::BatchMeta;

/// The tenant spool keys are filed under, in the spool's own ledger (apart from the sink's, so
/// no record's tenant can meet them).
const SPOOL_TENANT: &str = "_spool";

pub struct SpoolCrypt {
    keys: Arc<KeyRing>,
}

fn io(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl SpoolCrypt {
    pub fn new(keys: Arc<KeyRing>) -> Self {
        SpoolCrypt { keys }
    }

    /// The payload of `meta`'s batch, encrypted (the parts in order, as one object).
    pub async fn seal(&self, meta: &BatchMeta, parts: &[Bytes]) -> std::io::Result<Bytes> {
        let size: usize = parts.iter().map(Bytes::len).sum();
        let hour = hour_of(meta.sealed_at.unwrap_or_else(chrono::Utc::now));
        let key = self.keys.key_for(SPOOL_TENANT, &hour).await.map_err(io)?;
        let (id, digest, parts) = (meta.id.clone(), meta.sha256.clone(), parts.to_vec());
        let work = move || {
            let total = parts.iter().map(Bytes::len).sum();
            let mut plain = Vec::with_capacity(total);
            parts.iter().for_each(|p| plain.extend_from_slice(p));
            encrypt_batch(&key, &id, &digest, &plain, DEFAULT_SEGMENT)
                .map(Bytes::from)
                .map_err(io)
        };
        if size <= INLINE_BYTES {
            return work();
        }
        tokio::task::spawn_blocking(work).await.map_err(io)?
    }

    /// A sealed payload opened again; refuses one that was changed or cut.
    pub async fn open(&self, sealed: Bytes) -> std::io::Result<Bytes> {
        let (h, _) = Header::read(&mut &sealed[..]).map_err(io)?;
        let sealed_len = sealed.len();
        let key = self
            .keys
            .open(&h.tenant, &h.hour, &h.key_id)
            .await
            .map_err(io)?;
        let work = move || {
            let mut out = Vec::with_capacity(sealed.len());
            decrypt(&mut &sealed[..], &mut out, |_| Ok(key)).map_err(io)?;
            Ok(Bytes::from(out))
        };
        if sealed_len <= INLINE_BYTES {
            return work();
        }
        tokio::task::spawn_blocking(work).await.map_err(io)?
    }
}
