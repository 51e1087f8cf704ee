//! The sink side of an `integrity` stream: the stored bytes' hash goes onto the object's
//! metadata, and each delivered batch is recorded through a [`Recorder`] (the stream's journal
//! in `data_dir`, kept by the binary) before the spool lets it go, so that the next digest
//! lists it.
//!
//! The journal is synced before `Delivered` is returned: a crash between the object's write
//! and the journal's leaves the batch spooled, and its replay writes the same bytes and
//! records it then (the digester drops repeated sequence numbers).

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::chain::{sha256_hex, time_text, ChainLink, Entry};
use logferry_sink::batch::BatchMeta;
use logferry_sink::{CheckError, Outcome, SealedBatch, Sink};

/// Larger payloads are hashed off the runtime's threads.
const INLINE_HASH: usize = 256 << 10;

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

/// Where a delivered batch's entry is recorded before the spool lets it go (the binary's
/// journal in `data_dir`). `Ok` means the entry is durable.
#[async_trait]
pub trait Recorder: Send + Sync {
    async fn append(&self, entry: Entry) -> Result<(), RecordError>;
}

/// Why an entry was not recorded: the batch is stored but not yet listed, and is sent again
/// (same bytes) to be recorded then. The recorder says what failed where (a journal's path and
/// the I/O error); this crate only passes it on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RecordError {
    pub message: String,
}

impl From<String> for RecordError {
    fn from(message: String) -> Self {
        RecordError { message }
    }
}

pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Hashes what is stored, puts it on the object's metadata and records the delivery.
pub struct ChainedSink {
    inner: Arc<dyn Sink>,
    journal: Arc<dyn Recorder>,
}

impl ChainedSink {
    pub fn new(inner: Arc<dyn Sink>, journal: Arc<dyn Recorder>) -> Self {
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
            // Not stored (`Retry`, `TooLarge`, `Parked`, ...): nothing to record; what
            // follows is the delivery loop's decision.
            o => o,
        }
    }

    fn scope(&self, meta: &BatchMeta) -> Option<String> {
        self.inner.scope(meta)
    }

    fn max_request_bytes(&self) -> Option<u64> {
        self.inner.max_request_bytes()
    }

    async fn check(&self) -> Result<(), CheckError> {
        self.inner.check().await
    }
}
