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
use logferry_sink::BatchMeta;
use logferry_vault::crypt::{decrypt, encrypt_batch, Header, DEFAULT_SEGMENT, INLINE_BYTES};
use logferry_vault::keys::{hour_of, KeyRing};

/// The tenant spool keys are filed under, in the spool's own ledger (apart from the sink's, so
/// no record's tenant can meet them).
pub(crate) const SPOOL_TENANT: &str = "_spool";

pub struct SpoolCrypt {
    keys: Arc<KeyRing>,
    /// Folders of sealed files that outlive the spool (dead letters): the keys they name are
    /// kept for as long as they exist.
    keep: Vec<std::path::PathBuf>,
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
            keep: Vec::new(),
            pruned: std::sync::atomic::AtomicI64::new(i64::MIN),
        }
    }

    /// The payload of `meta`'s batch, encrypted (the parts in order, as one object).
    pub async fn seal(&self, meta: &BatchMeta, parts: &[Bytes]) -> std::io::Result<Bytes> {
        let size: usize = parts.iter().map(Bytes::len).sum();
        let hour = hour_of(meta.sealed_at.unwrap_or_else(chrono::Utc::now));
        let key = self.keys.key_for(SPOOL_TENANT, &hour).await.map_err(io)?;
        let (id, parts) = (meta.id.clone(), parts.to_vec());
        let work = move || {
            let total = parts.iter().map(Bytes::len).sum();
            let mut plain = Vec::with_capacity(total);
            parts.iter().for_each(|p| plain.extend_from_slice(p));
            encrypt_batch(&key, &id, &plain, DEFAULT_SEGMENT)
                .map(Bytes::from)
                .map_err(io)
        };
        if size <= INLINE_BYTES {
            return work();
        }
        tokio::task::spawn_blocking(work).await.map_err(io)?
    }

    /// Spool keys named by sealed files in `dirs` (and their subfolders) are never pruned.
    pub fn keeping(mut self, dirs: Vec<std::path::PathBuf>) -> Self {
        self.keep = dirs;
        self
    }

    /// Whether this hour's pruning is still to do (true once an hour).
    pub fn prune_due(&self) -> bool {
        let hour = chrono::Utc::now().timestamp().div_euclid(3600);
        self.pruned.swap(hour, std::sync::atomic::Ordering::Relaxed) != hour
    }

    /// Deletes the spool keys of hours before both the previous hour and the hour before
    /// `oldest` (when the oldest spooled batch was sealed), except those a dead letter names:
    /// no spooled batch and no letter needs them. When the letters cannot be read, nothing is
    /// deleted this hour (keeping a key too long costs nothing; deleting one loses data).
    pub async fn prune(&self, oldest: Option<chrono::DateTime<chrono::Utc>>) {
        let now = chrono::Utc::now();
        let keep_from = oldest.map_or(now, |o| o.min(now)) - chrono::Duration::hours(1);
        let before = hour_of(keep_from - chrono::Duration::hours(1));
        let dirs = self.keep.clone();
        let kept = match tokio::task::spawn_blocking(move || keys_named_in(&dirs)).await {
            Ok(Ok(k)) => k,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the dead letters' headers; no spool key removed this hour");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "spool key pruning task failed");
                return;
            }
        };
        let gone = match self.keys.list(Some(SPOOL_TENANT)).await {
            Ok(listed) => listed
                .into_iter()
                .filter(|l| l.hour.as_str() <= before.as_str() && !kept.contains(&l.key_id))
                .collect::<Vec<_>>(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list spool keys; trying again next hour");
                return;
            }
        };
        if let Err(e) = self.keys.delete(&gone).await {
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

/// The key ids sealed files under `dirs` (two levels deep: `dead-letter/<sink>/` and
/// `dead-letter/sources/<source>/`) name. A folder that does not exist names none.
fn keys_named_in(
    dirs: &[std::path::PathBuf],
) -> std::io::Result<std::collections::HashSet<String>> {
    let mut out = std::collections::HashSet::new();
    let mut todo: Vec<(std::path::PathBuf, u8)> = dirs.iter().map(|d| (d.clone(), 0)).collect();
    while let Some((dir, depth)) = todo.pop() {
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in rd {
            let entry = entry?;
            let ty = entry.file_type()?;
            if ty.is_dir() && depth < 1 {
                todo.push((entry.path(), depth + 1));
            } else if ty.is_file() {
                if let Some(id) = super::file::sealed_key_id(&entry.path())? {
                    out.insert(id);
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pruning_keeps_the_keys_spooled_batches_and_the_last_hours_need() {
        let dir = tempfile::tempdir().unwrap();
        let kek = logferry_vault::ledger::LocalKek::from_material("k", &[3u8; 32]).unwrap();
        let store = Arc::new(logferry_destinations::dir_store::DirectoryStore::new(
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
        // A dead letter sealed five hours ago, in a sink's folder; a file that is not sealed.
        let dead = dir.path().join("dead-letter");
        std::fs::create_dir_all(dead.join("archive")).unwrap();
        let old = keys.key_for(SPOOL_TENANT, &hours[5]).await.unwrap();
        let mut letter = super::super::file::MAGIC.to_vec();
        letter.extend_from_slice(b"{}\n");
        letter.extend_from_slice(
            &logferry_vault::crypt::encrypt_batch(&old, "b1", b"records", DEFAULT_SEGMENT).unwrap(),
        );
        std::fs::write(dead.join("archive/b1.batch"), letter).unwrap();
        std::fs::write(dead.join("archive/b1.reason.json"), b"{}").unwrap();
        let c = SpoolCrypt::new(keys.clone()).keeping(vec![dead.join("archive")]);
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
        want.push(hours[5].clone());
        want.sort();
        assert_eq!(
            left, want,
            "the current hour, the one before, and the dead letter's"
        );
        // Once the letter is gone, so is its key.
        std::fs::remove_file(dead.join("archive/b1.batch")).unwrap();
        c.prune(None).await;
        let mut left = hours_left().await;
        left.sort();
        want.retain(|h| h != &hours[5]);
        assert_eq!(left, want);
        assert!(c.prune_due());
        assert!(!c.prune_due());
    }
}
