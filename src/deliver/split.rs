//! Splitting a batch that the destination refused for its size, by records.

use bytes::Bytes;
use logferry_sink::SealedBatch;

use crate::encode::{self, Layout};

/// Why a batch could not be split.
#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    #[error("{0}")]
    Read(#[from] std::io::Error),
    #[error("{0}")]
    Records(#[from] encode::RecordsError),
    #[error("{0} record(s) found")]
    TooFew(usize),
    #[error("splitting task failed: {0}")]
    Task(String),
    #[error("a Parquet file is not split (object stores take it whole)")]
    Parquet,
    #[error("{0}")]
    Otlp(#[from] crate::otlp::split::ReadError),
}

/// Splits a batch into two halves by records, each with its own derived id and key.
pub fn split_batch(
    b: &SealedBatch,
    layout: &Layout,
    level: Option<i32>,
) -> Result<Vec<SealedBatch>, SplitError> {
    if b.meta.encoding == logferry_sink::Encoding::Parquet {
        return Err(SplitError::Parquet);
    }
    use sha2::{Digest, Sha256};
    let raw = encode::decompress(b.meta.compression, &b.payload)?;
    if b.meta.encoding.is_whole() {
        return split_otlp(b, &raw, level);
    }
    let recs = layout.records(&b.meta, &raw)?;
    if recs.len() < 2 {
        return Err(SplitError::TooFew(recs.len()));
    }
    let mid = recs.len() / 2;
    let mut out = Vec::new();
    for (suffix, part) in [("a", &recs[..mid]), ("b", &recs[mid..])] {
        let mut meta = b.meta.clone();
        meta.id = format!("{}-{suffix}", b.meta.id);
        // Each half's envelope names the half: its id and count, the parent's seal time.
        let (payload, head_len, tail_len) = layout.assemble(
            &encode::Seal {
                id: &meta.id,
                records: part.len() as u64,
                sealed_at: b.meta.sealed_at.unwrap_or(b.meta.last_time),
            },
            part,
        );
        meta.head_len = head_len;
        meta.tail_len = tail_len;
        meta.key = b.meta.key.replacen(&b.meta.id, &meta.id, 1);
        meta.record_count = part.len() as u64;
        meta.sha256 = hex::encode(Sha256::digest(&payload));
        meta.uncompressed_bytes = payload.len() as u64;
        let compressed = encode::compress(b.meta.compression, level, &payload)?;
        out.push(SealedBatch {
            meta,
            payload: Bytes::from(compressed),
        });
    }
    Ok(out)
}

/// Halves an OTLP request by its records (resources and scopes kept with their records).
fn split_otlp(
    b: &SealedBatch,
    raw: &[u8],
    level: Option<i32>,
) -> Result<Vec<SealedBatch>, SplitError> {
    use crate::otlp::split;
    let req = split::read(b.meta.encoding, raw)?;
    let n = split::count(&req);
    if n < 2 {
        return Err(SplitError::TooFew(n));
    }
    let (first, second) = split::halves(req, n / 2);
    let mut out = Vec::new();
    for (suffix, part) in [("a", first), ("b", second)] {
        let payload = split::write(b.meta.encoding, &part)?;
        let mut meta = b.meta.clone();
        meta.id = format!("{}-{suffix}", b.meta.id);
        meta.key = b.meta.key.replacen(&b.meta.id, &meta.id, 1);
        meta.record_count = split::count(&part) as u64;
        let p = crate::whole::payload_of(&payload);
        meta.sha256 = p.sha256;
        meta.uncompressed_bytes = p.len;
        out.push(SealedBatch {
            meta,
            payload: Bytes::from(encode::compress(b.meta.compression, level, &payload)?),
        });
    }
    Ok(out)
}
