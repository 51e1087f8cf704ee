//! The checked configuration, as the rest of logferry reads it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use logferry_sink::{Compression, Encoding, KeyTemplate};

use super::integrity::IntegrityConfig;
use super::{
    Buffer, EncryptionConfig, FollowSymlinks, Format, KekConfig, KeyFileModes, LogFormat, Oversize,
    ReadFrom,
};

#[derive(Debug)]
pub struct Config {
    pub path: PathBuf,
    pub data_dir: PathBuf,
    pub api_listen: Option<SocketAddr>,
    pub unready_after: Duration,
    pub log_format: LogFormat,
    pub log_level: String,
    pub shutdown_timeout: Duration,
    pub checkpoint_interval: Duration,
    pub sources: Vec<SourceConfig>,
    pub masking: BTreeMap<String, std::sync::Arc<crate::mask::Profile>>,
    pub sinks: Vec<SinkConfig>,
    /// Credential values found in the file (see `secrets.rs`), for the process's redaction.
    pub secrets: Vec<String>,
    /// Files holding credentials or keys (and this configuration): never read as logs.
    pub credential_files: Vec<PathBuf>,
    /// Key-encryption keys by name.
    pub keks: BTreeMap<String, KekConfig>,
    /// The Ed25519 key that signs shredding receipts.
    pub signing_key_file: Option<PathBuf>,
    /// `[spool] kek`: every disk spool sealed under this KEK.
    pub spool_kek: Option<String>,
    /// `[security] key_file_modes`: how open a KEK's or the signing key's file may be.
    pub key_file_modes: KeyFileModes,
}

#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub name: String,
    pub include: Vec<String>,
    pub exclude: Vec<glob::Pattern>,
    pub format: Format,
    pub read_from: ReadFrom,
    pub masking: Option<String>,
    pub sinks: Vec<String>,
    /// Text lines longer than this are cut and kept.
    pub max_line_bytes: usize,
    /// JSON records up to this are read and masked whole; longer ones follow `oversize`.
    pub max_record_bytes: usize,
    pub oversize: Oversize,
    pub record_id: Option<String>,
    pub timestamp_field: Option<String>,
    /// A strftime pattern tried before the built-in spellings.
    pub timestamp_format: Option<String>,
    pub max_open_files: usize,
    pub follow_symlinks: FollowSymlinks,
    pub glob_interval: Duration,
    pub rotate_wait: Duration,
}

#[derive(Debug, Clone)]
pub enum SinkKind {
    Directory { path: PathBuf },
    S3(Box<logferry_destinations::S3Options>),
    AzureBlob(Box<logferry_destinations::azure_blob::AzureBlobOptions>),
    AzureMonitor(Box<AzureMonitorConfig>),
    Http(Box<logferry_destinations::http::HttpOptions>),
    Otlp(Box<super::sink::OtlpConfig>),
}

/// The Logs Ingestion sink and the record shaping its table needs.
#[derive(Debug, Clone)]
pub struct AzureMonitorConfig {
    pub options: logferry_destinations::azure_monitor::AzureMonitorOptions,
    pub shape: crate::shape::Shape,
}

#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub name: String,
    pub kind: SinkKind,
    pub key: KeyTemplate,
    pub encoding: Encoding,
    /// Text before and after the records when an envelope wraps them, and whether the
    /// records go in as one JSON string.
    pub envelope: Option<(String, String, bool)>,
    pub compression: Compression,
    pub compression_level: Option<i32>,
    /// `encoding = "parquet"`: the columns and codec (`compression` is then `none`: the file
    /// is never wrapped).
    pub parquet: Option<std::sync::Arc<crate::parquet::Spec>>,
    pub buffer: Buffer,
    pub max_bytes: u64,
    pub max_records: u64,
    pub max_age: Duration,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub max_attempts: Option<u32>,
    pub concurrency: usize,
    pub requests_per_second: Option<u32>,
    pub bytes_per_second: Option<u64>,
    pub spool_max_bytes: u64,
    pub timeout: Duration,
    /// Client-side envelope encryption of the objects (object sinks).
    pub encryption: Option<EncryptionConfig>,
    /// Tamper evidence: a hash chain and signed hourly digests (`integrity`).
    pub integrity: Option<IntegrityConfig>,
}

impl SinkConfig {
    /// The sink was allowed to send credentials over http:// and does (warned at each start).
    pub fn plaintext_credentials(&self) -> bool {
        let http = |u: &str| {
            u.get(..7)
                .is_some_and(|s| s.eq_ignore_ascii_case("http://"))
        };
        match &self.kind {
            SinkKind::S3(o) => {
                o.allow_plaintext_credentials && o.endpoint.as_deref().is_some_and(http)
            }
            SinkKind::AzureBlob(o) => o.allow_plaintext_credentials && http(&o.endpoint),
            SinkKind::Http(o) => o.allow_plaintext_credentials && http(&o.url),
            SinkKind::Otlp(o) => {
                o.options.http.allow_plaintext_credentials && http(&o.options.http.url)
            }
            SinkKind::Directory { .. } | SinkKind::AzureMonitor(_) => false,
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self.kind {
            SinkKind::Directory { .. } => "directory",
            SinkKind::S3(_) => "s3",
            SinkKind::AzureBlob(_) => "azure_blob",
            SinkKind::AzureMonitor(_) => "azure_monitor",
            SinkKind::Http(_) => "http",
            SinkKind::Otlp(_) => "otlp",
        }
    }

    /// The per-record shaping a table destination needs (columns, sizes), if this sink has a
    /// schema: the wiring asks for the capability instead of knowing the sink types.
    pub fn table_shape(&self) -> Option<&crate::shape::Shape> {
        match &self.kind {
            SinkKind::AzureMonitor(m) => Some(&m.shape),
            _ => None,
        }
    }
}

impl Config {
    /// Folders that hold logferry's own files, never read as logs: data_dir (spool, spool
    /// keys, checkpoints, state), and each directory sink's key ledger, receipts and digests.
    pub fn private_dirs(&self) -> Vec<PathBuf> {
        let mut out = vec![self.data_dir.clone()];
        for s in &self.sinks {
            let SinkKind::Directory { path } = &s.kind else {
                continue;
            };
            if let Some(e) = &s.encryption {
                let ledger = path.join(&e.ledger_prefix);
                out.push(ledger.join("_keys"));
                out.push(ledger.join("_receipts"));
            }
            if let Some(i) = &s.integrity {
                out.push(path.join(&i.prefix).join("_digests"));
            }
        }
        out
    }
}
