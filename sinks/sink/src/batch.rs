//! A sealed batch: the unit that is spooled, sent, retried and acknowledged.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How records are laid out in the uncompressed payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// One JSON object per line.
    #[default]
    Ndjson,
    /// A JSON array, one record per line inside it.
    JsonArray,
    /// One Parquet file (the object stores only).
    Parquet,
    /// An OTLP `ExportLogsServiceRequest` in protobuf (the `otlp` sink).
    OtlpProtobuf,
    /// An OTLP `ExportLogsServiceRequest` in OTLP/JSON (the `otlp` sink).
    OtlpJson,
}

impl Encoding {
    /// Whether a payload is made of the whole batch at once (a Parquet file, an OTLP
    /// request) rather than of records appended.
    pub fn is_whole(self) -> bool {
        matches!(
            self,
            Encoding::Parquet | Encoding::OtlpProtobuf | Encoding::OtlpJson
        )
    }
}

/// How the payload is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    #[default]
    Gzip,
    Zstd,
    None,
}

impl Compression {
    /// The HTTP `Content-Encoding` value, if any.
    pub fn content_encoding(self) -> Option<&'static str> {
        match self {
            Compression::Gzip => Some("gzip"),
            Compression::Zstd => Some("zstd"),
            Compression::None => None,
        }
    }
}

/// Everything about a batch except its bytes. Fixed at sealing time: a retry, also after a
/// restart, reuses it unchanged, which is what makes retries idempotent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchMeta {
    /// UUIDv7 for batches sealed by the batcher; `<parent>-a`/`<parent>-b` for halves of a split.
    pub id: String,
    pub source: String,
    pub sink: String,
    /// The rendered object key (relative path for the directory sink).
    pub key: String,
    pub record_count: u64,
    pub first_time: DateTime<Utc>,
    pub last_time: DateTime<Utc>,
    /// SHA-256 (hex) of the uncompressed payload.
    pub sha256: String,
    pub uncompressed_bytes: u64,
    pub encoding: Encoding,
    pub compression: Compression,
    /// Bytes before and after the records in the uncompressed payload (`[` and `]`, or an
    /// envelope's text). Records are the lines between them; splitting relies on this.
    #[serde(default)]
    pub head_len: u32,
    #[serde(default)]
    pub tail_len: u32,
    /// When the batch was sealed (an envelope's `{{sealed_at}}`; halves of a split keep it).
    #[serde(default)]
    pub sealed_at: Option<DateTime<Utc>>,
    /// The tenant of every record in the batch, when the sink encrypts per tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The data key the stored object is encrypted under (set by the encrypting sink, for
    /// object metadata).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The spool file holds the payload encrypted under a spool key (`spool::crypt`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub spool_encrypted: bool,
    /// The batch's place in its integrity stream (`chain`), set at seal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<ChainLink>,
}

/// A batch ready to send: metadata and the exact bytes every attempt sends.
#[derive(Debug, Clone)]
pub struct SealedBatch {
    pub meta: BatchMeta,
    pub payload: Bytes,
}

impl SealedBatch {
    /// The `Content-Encoding` of the stored bytes: none once they are encrypted (a client
    /// that decoded them as gzip would fail).
    pub fn content_encoding(&self) -> Option<&'static str> {
        match self.meta.key_id {
            Some(_) => None,
            None => self.meta.compression.content_encoding(),
        }
    }

    /// The `Content-Type` of the uncompressed payload.
    pub fn content_type(&self) -> &'static str {
        match self.meta.encoding {
            Encoding::Ndjson => "application/x-ndjson",
            Encoding::JsonArray => "application/json",
            Encoding::Parquet => "application/vnd.apache.parquet",
            Encoding::OtlpProtobuf => "application/x-protobuf",
            Encoding::OtlpJson => "application/json",
        }
    }
}

/// A directory sink's metadata file beside an object.
pub const SIDECAR: &str = ".meta.json";

/// What a sealed batch carries into the spool and onto the object's metadata.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChainLink {
    pub stream: String,
    pub seq: u64,
    /// The hash of the stream's previous entry (the genesis hash for the first).
    pub prev: String,
    /// SHA-256 of the compressed bytes as sealed (before any client-side encryption).
    pub sealed_sha256: String,
    /// This entry's hash (the integrity crate's `entry_hash`).
    pub hash: String,
    /// SHA-256 of the bytes stored, set at delivery (after encryption, when the sink encrypts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_sha256: Option<String>,
}

/// Object metadata for a chained batch (names without a vendor prefix; the sinks add theirs).
pub fn metadata(link: &ChainLink) -> Vec<(&'static str, String)> {
    let mut m = vec![
        ("chain_stream", link.stream.clone()),
        ("chain_seq", link.seq.to_string()),
        ("chain_prev", link.prev.clone()),
        ("chain_hash", link.hash.clone()),
    ];
    if let Some(s) = &link.object_sha256 {
        m.push(("object_sha256", s.clone()));
    }
    m
}
