//! Encodings that need a batch whole (Parquet, OTLP): the batcher holds the records as they
//! are and a compression thread turns them into the payload when the batch is sealed.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::encode::{Block, Payload};

/// A sealed batch's records for the encoder: the records back to back in `values` (each from
/// `offsets[i]` to `offsets[i + 1]`), each record's time (in the encoding's unit, see
/// [`Whole::time`]), when it was read (OTLP only, nanoseconds), and the source.
pub struct Records {
    pub values: Vec<u8>,
    pub offsets: Vec<i32>,
    pub times: Vec<i64>,
    pub observed: Vec<i64>,
    pub source: String,
}

/// A sink's whole-batch encoder.
#[derive(Clone)]
pub enum Whole {
    Parquet(Arc<crate::parquet::Stage>),
    Otlp(Arc<crate::otlp::Stage>),
}

impl Whole {
    /// A record's time as the encoding keeps it: microseconds for Parquet's `_time`,
    /// nanoseconds for OTLP (0, "unknown", outside the years 1970-2262).
    pub fn time(&self, t: DateTime<Utc>) -> i64 {
        match self {
            // A leap second (`:59:60`) stays in the second, and so in the hour, the key names.
            Whole::Parquet(_) => {
                t.timestamp() * 1_000_000 + i64::from(t.timestamp_subsec_micros().min(999_999))
            }
            Whole::Otlp(_) => t.timestamp_nanos_opt().unwrap_or(0).max(0),
        }
    }

    /// Whether each record's read time is kept (OTLP's `ObservedTimestamp`).
    pub fn observes(&self) -> bool {
        matches!(self, Whole::Otlp(_))
    }

    /// Waits until this sink may build another payload (Parquet: one file at a time, so a
    /// batch held whole is never queued behind another one).
    pub fn reserve(&self) {
        if let Whole::Parquet(s) = self {
            s.reserve();
        }
    }

    /// Builds the payload (on a compression thread).
    pub fn encode(&self, records: Records) -> std::io::Result<Block> {
        match self {
            Whole::Parquet(s) => Ok(Block {
                bytes: s.encode(records)?,
                payload: None,
            }),
            Whole::Otlp(s) => s.encode(records),
        }
    }
}

/// The digest and length of an uncompressed payload.
pub fn payload_of(bytes: &[u8]) -> Payload {
    use sha2::{Digest, Sha256};
    Payload {
        sha256: hex::encode(Sha256::digest(bytes)),
        len: bytes.len() as u64,
    }
}
