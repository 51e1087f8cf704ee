//! The contract between logferry's pipeline and its destinations.
//!
//! A sink receives a [`SealedBatch`]: fixed bytes under a fixed id and object key. It sends it
//! once and reports an [`Outcome`]. Sinks keep no buffer and run no retry loop of their own: the
//! pipeline owns spooling, backoff, rate limits, splitting and dead letters, so every destination
//! gets the same guarantees from one implementation.

pub mod batch;
pub mod capped;
pub mod key;
pub mod redact;
pub mod response;
pub mod store;

use std::time::Duration;

use async_trait::async_trait;

pub use batch::{BatchMeta, ChainLink, Compression, Encoding, SealedBatch};
pub use key::{KeyContext, KeyTemplate, KeyTemplateError};
pub use response::retry_after;

/// Percent-encodes everything but RFC 3986 unreserved characters (URL paths, query values,
/// S3 tagging), one way for every sink.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// What happened to one attempt at sending a batch.
///
/// The variants are the only decisions the pipeline needs; a sink maps its protocol's answers
/// (HTTP status, SDK error kinds, I/O errors) onto them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The destination holds the batch durably. The pipeline deletes it from the spool and may
    /// advance checkpoints past its records.
    Delivered,
    /// A transient failure: send the same bytes again later. `after` is the wait the destination
    /// asked for (`Retry-After`); the pipeline waits at least that long.
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// The destination asks us to slow down (429, SlowDown, ServerBusy): like `Retry`, and
    /// counted apart so that operators see throttling.
    Throttled {
        after: Option<Duration>,
        reason: String,
    },
    /// The destination refuses the batch because of its size. The pipeline splits it by records
    /// and sends the halves; a single record that is still too large is dead-lettered.
    TooLarge { reason: String },
    /// A permanent refusal (bad credentials, missing bucket, malformed data). Retrying cannot
    /// help: the batch goes to the dead-letter directory with `reason`.
    Rejected { reason: String },
    /// A transient failure confined to this batch's scope ([`Sink::scope`]): e.g. one
    /// tenant-hour's key cannot be had (its ledger entry is bad, or the KEK provider refuses
    /// that tenant). The pipeline parks that scope's batches (they stay spooled, counted and
    /// reported) and goes on with the others; after `after` (the wait asked for, if any) or
    /// the scope's backoff, one of them is tried again. A sink without scopes gets `Retry`'s
    /// handling.
    Parked {
        after: Option<Duration>,
        reason: String,
    },
}

/// A destination for sealed batches.
///
/// Implementations must be idempotent per batch: sending the same [`SealedBatch`] twice (a retry
/// after a lost response, or a replay after a crash) must leave the destination as if it had been
/// sent once, which object stores get for free by writing `batch.meta.key`.
#[async_trait]
pub trait Sink: Send + Sync {
    /// Sends one batch. Never panics on a destination's answer; every failure is an [`Outcome`].
    async fn send(&self, batch: &SealedBatch) -> Outcome;

    /// The largest uncompressed request body the destination accepts, if it has a hard limit.
    /// The batcher cuts batches below it so that no request is refused for its size.
    fn max_request_bytes(&self) -> Option<u64> {
        None
    }

    /// The part of the destination `meta`'s batch depends on beyond the destination itself
    /// (for an encrypting sink its tenant-hour, whose data key it needs), or `None`. A
    /// [`Outcome::Parked`] answer sets aside the batches of that scope only.
    fn scope(&self, _meta: &BatchMeta) -> Option<String> {
        None
    }

    /// Checks that the destination is reachable and writable, without writing records.
    /// `Err` carries a sentence for an operator (what failed and what to grant or fix).
    async fn check(&self) -> Result<(), CheckError> {
        Ok(())
    }
}

/// Why [`Sink::check`] failed: a sentence for an operator, naming what failed and what to
/// grant or fix. The sentence is the whole of it: a check reads a destination's own answers,
/// which come in as many shapes as there are destinations, and is shown, never matched on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CheckError {
    pub message: String,
}

impl CheckError {
    pub fn new(message: impl Into<String>) -> Self {
        CheckError {
            message: message.into(),
        }
    }
}

impl From<String> for CheckError {
    fn from(message: String) -> Self {
        CheckError { message }
    }
}

impl From<&str> for CheckError {
    fn from(message: &str) -> Self {
        CheckError::new(message)
    }
}
