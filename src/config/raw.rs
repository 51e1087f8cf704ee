//! The configuration file as written: serde structs that reject unknown keys.
//! `super::load` turns them into the checked [`super::Config`].

use std::collections::BTreeMap;

use serde::Deserialize;

use super::values::{Dur, Size};
use logferry_sink::Encoding;

mod sinks;

pub(crate) use sinks::entra_fields;
pub use sinks::{AzureBlob, AzureMonitor, Directory, EntraFields, Http, Otlp, StatusItem, Tls, S3};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Top {
    #[serde(default)]
    pub data_dir: Option<String>,
    #[serde(default)]
    pub api: Api,
    #[serde(default)]
    pub log_format: Option<LogFormat>,
    #[serde(default)]
    pub log_level: Option<String>,
    #[serde(default)]
    pub shutdown_timeout: Option<Dur>,
    #[serde(default)]
    pub checkpoint_interval: Option<Dur>,
    #[serde(default)]
    pub sources: BTreeMap<String, Source>,
    #[serde(default)]
    pub masking: BTreeMap<String, toml::Table>,
    #[serde(default)]
    pub keks: BTreeMap<String, Kek>,
    #[serde(default)]
    pub signing: Option<Signing>,
    #[serde(default)]
    pub spool: Option<SpoolTable>,
    #[serde(default)]
    pub security: Security,
}

/// `[security]`: how logferry treats the files it is given.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Security {
    /// How open a KEK's or the signing key's file may be.
    #[serde(default)]
    pub key_file_modes: KeyFileModes,
}

/// `[security] key_file_modes`: which permission bits a key file (a local KEK's `key_file`,
/// `[signing] key_file`) may have; a file with more is refused when it is loaded.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum KeyFileModes {
    /// Its owner only (mode 0600 or 0400): nothing for the group or others (ssh's rule).
    #[default]
    Owner,
    /// Its group may read it too (0640, 0440: a Kubernetes secret with `fsGroup`), not write it;
    /// nothing for others.
    Group,
    /// No check: the mount is trusted (a Kubernetes secret left at its default 0644 in a pod
    /// whose other users are trusted).
    Trusted,
}

/// `[spool]`: options of every sink's disk spool.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolTable {
    /// Seal every spooled batch under hourly spool keys wrapped by this KEK (sinks that
    /// encrypt use their own KEK).
    pub kek: String,
}

/// `[keks.<name>]`: a key-encryption key that wraps the sinks' data keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kek {
    pub provider: String,
    /// `local`: a file holding 32 bytes (raw, hex or base64).
    #[serde(default)]
    pub key_file: Option<String>,
    /// `local`: an environment variable holding 32 bytes as hex or base64.
    #[serde(default)]
    pub key_env: Option<String>,
    /// `aws_kms`: the key id, key ARN or alias.
    #[serde(default)]
    pub key_id: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    /// `aws_kms`: a VPC endpoint or test server.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub allow_plaintext_credentials: bool,
    /// `azure_key_vault`: `https://<vault>.vault.azure.net`.
    #[serde(default)]
    pub vault_url: Option<String>,
    #[serde(default)]
    pub key_name: Option<String>,
    #[serde(default)]
    pub key_version: Option<String>,
    /// `azure_key_vault`: `RSA-OAEP-256` (default) or `A256KW`.
    #[serde(default)]
    pub algorithm: Option<String>,
    #[serde(default)]
    pub auth: Option<String>,
    #[serde(default)]
    pub tenant_id: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub client_secret: Option<String>,
    #[serde(default)]
    pub client_secret_file: Option<String>,
    #[serde(default)]
    pub authority_host: Option<String>,
    #[serde(default)]
    pub federated_token_file: Option<String>,
    #[serde(default)]
    pub tls: Option<Tls>,
}

/// `[signing]`: the Ed25519 key that signs shredding receipts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signing {
    pub key_file: String,
}

/// `encryption = { ... }` on an object sink.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Encryption {
    pub kek: String,
    pub tenant_field: String,
    /// Parsed apart from other durations: retention runs to years.
    #[serde(default)]
    pub retention: Option<String>,
    #[serde(default)]
    pub segment_size: Option<Size>,
    #[serde(default)]
    pub ledger_prefix: Option<String>,
    /// The ledger in another bucket (s3) or container (azure_blob): for data under a default
    /// retention that would lock the ledger's entries too.
    #[serde(default)]
    pub ledger_bucket: Option<String>,
    #[serde(default)]
    pub ledger_container: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Api {
    pub listen: Option<String>,
    /// `/readyz` turns not ready when a sink has been failing this long.
    pub unready_after: Option<Dur>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    #[default]
    Json,
    Text,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ReadFrom {
    #[default]
    Beginning,
    End,
}

/// What happens to a JSON record over `max_record_bytes`.
#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Oversize {
    /// A stand-in with its size, SHA-256 and top-level scalar fields (masked) is shipped.
    #[default]
    Redact,
    /// The record is written whole to `data_dir/dead-letter/sources/<source>/` (dropped and
    /// counted when a sink of the source keeps nothing on disk).
    DeadLetter,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub format: Format,
    #[serde(default)]
    pub read_from: ReadFrom,
    #[serde(default)]
    pub masking: Option<String>,
    pub sinks: Vec<String>,
    #[serde(default)]
    pub max_line_bytes: Option<Size>,
    #[serde(default)]
    pub max_record_bytes: Option<Size>,
    #[serde(default)]
    pub oversize: Oversize,
    #[serde(default)]
    pub record_id: Option<String>,
    #[serde(default)]
    pub timestamp_field: Option<String>,
    #[serde(default)]
    pub timestamp_format: Option<String>,
    #[serde(default)]
    pub max_open_files: Option<usize>,
    #[serde(default)]
    pub follow_symlinks: FollowSymlinks,
    #[serde(default)]
    pub glob_interval: Option<Dur>,
    #[serde(default)]
    pub rotate_wait: Option<Dur>,
}

/// Options every sink takes, whatever its type. The remaining keys of a `[sinks.<name>]` table
/// are the type's own and are checked by that type's struct.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkCommon {
    /// Read from the table before this struct, to pick the type's own options.
    #[serde(rename = "type")]
    pub _kind: String,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub encoding: Encoding,
    #[serde(default)]
    pub envelope: Option<String>,
    /// Absent: gzip, or zstd columns with `encoding = "parquet"`.
    #[serde(default)]
    pub compression: Option<CompressionName>,
    #[serde(default)]
    pub compression_level: Option<i32>,
    #[serde(default)]
    pub parquet: Option<ParquetTable>,
    #[serde(default)]
    pub buffer: Buffer,
    #[serde(default)]
    pub batch: Batch,
    #[serde(default)]
    pub retry: Retry,
    #[serde(default)]
    pub concurrency: Option<usize>,
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    #[serde(default)]
    pub spool_max_bytes: Option<Size>,
    #[serde(default)]
    pub encryption: Option<Encryption>,
    #[serde(default)]
    pub integrity: Option<Integrity>,
    #[serde(default)]
    pub timeout: Option<Dur>,
}

/// A sink's `compression` as written: the object's wrapping, or with `encoding = "parquet"`
/// the column codec (`snappy` only there).
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CompressionName {
    Gzip,
    Zstd,
    Snappy,
    None,
}

/// `parquet = { schema = "...", columns = [...] }`.
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct ParquetTable {
    #[serde(default)]
    pub schema: Option<String>,
    #[serde(default)]
    pub columns: Vec<ParquetColumn>,
}

/// One of `parquet.columns`: `{ name, field, type }`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ParquetColumn {
    pub name: String,
    pub field: String,
    #[serde(rename = "type")]
    pub ty: String,
}

/// `integrity = true` or `integrity = { prefix = "..." }` on an object sink.
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub enum Integrity {
    On(bool),
    With(IntegrityTable),
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct IntegrityTable {
    #[serde(default)]
    pub prefix: Option<String>,
}

/// Keys of [`SinkCommon`]; used to split a sink table into common and type-specific parts.
pub const SINK_COMMON_KEYS: &[&str] = &[
    "type",
    "key",
    "encoding",
    "envelope",
    "compression",
    "compression_level",
    "parquet",
    "buffer",
    "batch",
    "retry",
    "concurrency",
    "rate_limit",
    "spool_max_bytes",
    "timeout",
    "encryption",
    "integrity",
];

pub const SINK_TYPES: &[&str] = &[
    "directory",
    "s3",
    "azure_blob",
    "azure_monitor",
    "http",
    "otlp",
];

/// Which symbolic links in a source's directories are followed.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum FollowSymlinks {
    /// Only when the target lies under an include pattern's root.
    #[default]
    Within,
    Always,
    Never,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Buffer {
    #[default]
    Disk,
    Memory,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    pub max_bytes: Option<Size>,
    pub max_records: Option<u64>,
    pub max_age: Option<Dur>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    pub initial_backoff: Option<Dur>,
    pub max_backoff: Option<Dur>,
    /// Attempts before a batch is dead-lettered; unlimited when absent (the spool holds it).
    pub max_attempts: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub requests_per_second: Option<u32>,
    pub bytes_per_second: Option<Size>,
}
