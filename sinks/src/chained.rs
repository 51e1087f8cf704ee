//! The sink side of an `integrity` stream: the stored bytes' hash goes onto the object's
//! metadata, and each delivered batch is recorded in the stream's journal (in `data_dir`)
//! before the spool lets it go, so that the next digest lists it.
//!
//! The journal is synced before `Delivered` is returned: a crash between the object's write
//! and the journal's leaves the batch spooled, and its replay writes the same bytes and
//! records it then (the digester drops repeated sequence numbers).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::batch::BatchMeta;
use crate::chain::{sha256_hex, time_text, ChainLink, Entry};
use crate::{Outcome, SealedBatch, Sink};

/// Larger payloads are hashed off the runtime's threads.
const INLINE_HASH: usize = 256 << 10;
/// A journal holds at most an hour of entries; more than this is not something logferry wrote.
const MAX_JOURNAL: u64 = 256 << 20;

/// The entry a digest lists for `meta`: delivered as `sha256` (`bytes` long), or dead-lettered.
pub fn entry_for(
    meta: &BatchMeta,
    link: &ChainLink,
    stored: Option<(&str, u64)>,
    dead_letter: Option<String>,
) -> Entry {
    let (sha256, bytes) = stored.map_or((String::new(), 0), |(s, b)| (s.to_string(), b));
    Entry {
        seq: link.seq,
        batch_id: meta.id.clone(),
        key: if dead_letter.is_some() {
            String::new()
        } else {
            meta.key.clone()
        },
        sha256,
        bytes,
        records: meta.record_count,
        first_time: time_text(meta.first_time),
        last_time: time_text(meta.last_time),
        payload_sha256: meta.sha256.clone(),
        sealed_sha256: link.sealed_sha256.clone(),
        prev: link.prev.clone(),
        hash: link.hash.clone(),
        delivered_at: String::new(),
        dead_letter,
    }
}

/// Entries of batches delivered (or dead-lettered) but not yet in a digest.
pub struct Journal {
    path: PathBuf,
    /// No entry is recorded before this time: the end of the last period taken for a digest,
    /// so that a clock stepping back cannot put an entry into a period already signed.
    floor: tokio::sync::Mutex<DateTime<Utc>>,
}

impl Journal {
    pub fn new(path: PathBuf, floor: DateTime<Utc>) -> Journal {
        Journal {
            path,
            floor: tokio::sync::Mutex::new(floor),
        }
    }

    /// Records `entry` as delivered now, durably.
    pub async fn append(&self, mut entry: Entry) -> Result<(), String> {
        let floor = self.floor.lock().await;
        entry.delivered_at = time_text(Utc::now().max(*floor));
        let mut line = serde_json::to_vec(&entry).map_err(|e| e.to_string())?;
        line.push(b'\n');
        let path = self.path.clone();
        let res = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            if let Some(d) = path.parent() {
                crate::private_fs::dir_all(d)?;
            }
            let mut f = crate::private_fs::append(&path)?;
            f.write_all(&line)?;
            f.sync_data()
        })
        .await;
        drop(floor);
        match res {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("cannot write {}: {e}", self.path.display())),
            Err(e) => Err(format!("journal task failed: {e}")),
        }
    }

    /// The entries recorded before `to`, with the number of unreadable lines skipped (a torn
    /// last line after a crash: its batch is still spooled). From now on nothing is recorded
    /// before `to`.
    pub async fn take(&self, to: DateTime<Utc>) -> Result<(Vec<Entry>, usize), String> {
        let mut floor = self.floor.lock().await;
        *floor = (*floor).max(to);
        let (all, bad) = self.read().await?;
        let before = all
            .into_iter()
            .filter(|e| parse_time(&e.delivered_at).is_some_and(|t| t < to))
            .collect();
        Ok((before, bad))
    }

    /// Every entry in the journal (for the chain head at start).
    pub async fn read(&self) -> Result<(Vec<Entry>, usize), String> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || read_entries(&path))
            .await
            .map_err(|e| format!("journal task failed: {e}"))?
    }

    /// Removes the entries recorded before `to` (they are in a digest now).
    pub async fn drop_before(&self, to: DateTime<Utc>) -> Result<(), String> {
        let _floor = self.floor.lock().await;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            let (all, _) = read_entries(&path)?;
            let mut out = Vec::new();
            for e in all {
                if parse_time(&e.delivered_at).is_some_and(|t| t >= to) {
                    out.extend(serde_json::to_vec(&e).map_err(|e| e.to_string())?);
                    out.push(b'\n');
                }
            }
            let tmp = path.with_extension("tmp");
            let write = || -> std::io::Result<()> {
                let mut f = crate::private_fs::create(&tmp)?;
                f.write_all(&out)?;
                f.sync_all()?;
                std::fs::rename(&tmp, &path)?;
                if let Some(d) = path.parent() {
                    std::fs::File::open(d)?.sync_all()?;
                }
                Ok(())
            };
            write().map_err(|e| format!("cannot rewrite {}: {e}", path.display()))
        })
        .await
        .map_err(|e| format!("journal task failed: {e}"))?
    }
}

pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn read_entries(path: &std::path::Path) -> Result<(Vec<Entry>, usize), String> {
    use std::io::Read;
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let mut text = Vec::new();
    f.take(MAX_JOURNAL + 1)
        .read_to_end(&mut text)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if text.len() as u64 > MAX_JOURNAL {
        return Err(crate::ledger_store::too_large(
            &path.display().to_string(),
            MAX_JOURNAL,
        ));
    }
    let (mut out, mut bad) = (Vec::new(), 0);
    for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        match serde_json::from_slice::<Entry>(line) {
            Ok(e) => out.push(e),
            Err(_) => bad += 1,
        }
    }
    Ok((out, bad))
}

/// Hashes what is stored, puts it on the object's metadata and records the delivery.
pub struct ChainedSink {
    inner: Arc<dyn Sink>,
    journal: Arc<Journal>,
}

impl ChainedSink {
    pub fn new(inner: Arc<dyn Sink>, journal: Arc<Journal>) -> Self {
        ChainedSink { inner, journal }
    }
}

#[async_trait]
impl Sink for ChainedSink {
    async fn send(&self, batch: &SealedBatch) -> Outcome {
        // A batch spooled before integrity was turned on has no link: it is sent as it is.
        let Some(link) = &batch.meta.chain else {
            return self.inner.send(batch).await;
        };
        let payload = batch.payload.clone();
        let sha = if payload.len() <= INLINE_HASH {
            sha256_hex(&payload)
        } else {
            match tokio::task::spawn_blocking(move || sha256_hex(&payload)).await {
                Ok(s) => s,
                Err(e) => {
                    return Outcome::Retry {
                        after: None,
                        reason: format!("hashing task failed: {e}"),
                    }
                }
            }
        };
        let mut link = link.clone();
        link.object_sha256 = Some(sha.clone());
        let mut meta = batch.meta.clone();
        meta.chain = Some(link.clone());
        let sent = SealedBatch {
            meta,
            payload: batch.payload.clone(),
        };
        match self.inner.send(&sent).await {
            Outcome::Delivered => {
                let e = entry_for(
                    &sent.meta,
                    &link,
                    Some((&sha, batch.payload.len() as u64)),
                    None,
                );
                match self.journal.append(e).await {
                    Ok(()) => Outcome::Delivered,
                    // Stored but not recorded: sent again later, same bytes, recorded then.
                    Err(e) => Outcome::Retry {
                        after: None,
                        reason: format!("delivered, but the integrity journal failed: {e}"),
                    },
                }
            }
            // Halves of a split would break the chain's one entry per sealed batch.
            Outcome::TooLarge { reason } => Outcome::Rejected {
                reason: format!("{reason} (a batch of an integrity stream is never split)"),
            },
            // Not stored (`Retry`, `Parked`, ...): nothing to record.
            o => o,
        }
    }

    fn scope(&self, meta: &BatchMeta) -> Option<String> {
        self.inner.scope(meta)
    }

    fn max_request_bytes(&self) -> Option<u64> {
        self.inner.max_request_bytes()
    }

    async fn check(&self) -> Result<(), String> {
        self.inner.check().await
    }
}
