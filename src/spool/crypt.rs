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
    /// The hour (Unix hours) spool keys were last pruned in.
    pruned: std::sync::atomic::AtomicI64,
}

fn io(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl SpoolCrypt {
    pub fn new(keys: Arc<KeyRing>) -> Self {
        SpoolCrypt {
            keys,
            pruned: std::sync::atomic::AtomicI64::new(i64::MIN),
        }
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

    /// Whether this hour's pruning is still to do (true once an hour).
    pub fn prune_due(&self) -> bool {
        let hour = chrono::Utc::now().timestamp().div_euclid(3600);
        self.pruned.swap(hour, std::sync::atomic::Ordering::Relaxed) != hour
    }

    /// Deletes the spool keys of hours before both the previous hour and the hour before
    /// `oldest` (when the oldest spooled batch was sealed): no spooled batch needs them.
    pub async fn prune(&self, oldest: Option<chrono::DateTime<chrono::Utc>>) {
        let now = chrono::Utc::now();
        let keep_from = oldest.map_or(now, |o| o.min(now)) - chrono::Duration::hours(1);
        let before = hour_of(keep_from - chrono::Duration::hours(1));
        if let Err(e) = self
            .keys
            .shred(SPOOL_TENANT, "0000-00-00T00", &before)
            .await
        {
            tracing::warn!(error = %e, "cannot remove spool keys no batch needs; trying again next hour");
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pruning_keeps_the_keys_spooled_batches_and_the_last_hours_need() {
        let dir = tempfile::tempdir().unwrap();
        let kek = logferry_sinks::ledger::LocalKek::from_material("k", &[3u8; 32]).unwrap();
        let store = Arc::new(logferry_sinks::ledger_store::DirectoryStore::new(
            dir.path(),
        ));
        let keys = Arc::new(KeyRing::new(store, Arc::new(kek), ""));
        let now = chrono::Utc::now();
        let hours: Vec<String> = (0..6)
            .map(|h| hour_of(now - chrono::Duration::hours(h)))
            .collect();
        for h in &hours {
            keys.key_for(SPOOL_TENANT, h).await.unwrap();
        }
        let c = SpoolCrypt::new(keys.clone());
        // A batch sealed four hours ago is still spooled: its hour and the one before stay.
        c.prune(Some(now - chrono::Duration::hours(4))).await;
        let hours_left = || async {
            let l = keys.list(None).await.unwrap();
            l.into_iter().map(|l| l.hour).collect::<Vec<String>>()
        };
        let left = hours_left().await;
        assert_eq!(left.len(), 6, "{left:?}");
        c.prune(None).await;
        let mut left = hours_left().await;
        left.sort();
        let mut want = hours[..2].to_vec();
        want.sort();
        assert_eq!(left, want, "the current hour and the one before");
        assert!(c.prune_due());
        assert!(!c.prune_due());
    }
}
