//! Loading and checking the TOML configuration.
//!
//! Every problem is collected, not just the first: unknown keys (with a "did you mean"),
//! values of the wrong form, unset variables, dangling references. Each names the file, the line
//! and the key path, so `logferry validate` can list them all at once.

mod locate;
mod masking;
mod raw;
pub mod values;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;

use logferry_sink::{Compression, Encoding, KeyTemplate};
pub use raw::{Buffer, FollowSymlinks, Format, KeyFileModes, LogFormat, Oversize, ReadFrom};
use values::Size;

pub const DEFAULT_KEY: &str = "{source}/%Y/%m/%d/%H/{batch_id}.ndjson.gz";
/// Append blobs: one series per source, host and day (roll-over adds `-00001`, ...).
pub const DEFAULT_APPEND_KEY: &str = "{source}/%Y/%m/%d/{host}.ndjson.gz";

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
    pub oversize: raw::Oversize,
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
    pub integrity: Option<integrity::IntegrityConfig>,
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

/// Source and sink names become file and directory names under `data_dir` (checkpoints, spool,
/// dead letters) and metric labels: `[A-Za-z0-9_-]{1,64}`, so that no name can reach outside
/// `data_dir` or break a label.
fn check_name(path: &str, name: &str, c: &mut Collector) -> bool {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !ok {
        c.add(
            path,
            "a name is 1 to 64 letters, digits, `_` or `-` (it names files under data_dir)",
        );
    }
    ok
}

/// One thing wrong with a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: Option<usize>,
    pub path: String,
    pub message: String,
}

/// All problems found in one file.
#[derive(Debug)]
pub struct Problems {
    pub file: PathBuf,
    pub list: Vec<Problem>,
    /// Credential values found before the problems, so that they are redacted when shown.
    pub secrets: Vec<String>,
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} has {} problem{}:",
            self.file.display(),
            self.list.len(),
            if self.list.len() == 1 { "" } else { "s" }
        )?;
        for p in &self.list {
            let at = match p.line {
                Some(l) => format!("{}:{l}", self.file.display()),
                None => self.file.display().to_string(),
            };
            if p.path.is_empty() {
                writeln!(f, "  {at}: {}", p.message)?;
            } else {
                writeln!(f, "  {at}: {}: {}", p.path, p.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

struct Collector {
    list: Vec<Problem>,
    /// Strings that `${VAR}` expansion produced, with how they were written.
    expanded: Vec<(String, String)>,
    /// Those of them that may be secret (not a path, a name or a URL, whose secret parts are
    /// found by shape), for the process's redaction.
    secret_expansions: Vec<String>,
}

impl Collector {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.list.push(Problem {
            line: None,
            path: path.into(),
            message: message.into(),
        });
    }
}

/// Environment variables that hold credentials for the AWS and Azure SDKs.
const CREDENTIAL_VARS: &[&str] = &[
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AZURE_CLIENT_SECRET",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_SAS_TOKEN",
];

/// Reads, expands and checks a configuration file with the process environment, and
/// registers the credentials it holds with the process's redaction.
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

pub fn load(path: &Path) -> Result<Config, Problems> {
    let text = std::fs::read_to_string(path).map_err(|e| Problems {
        secrets: Vec::new(),
        file: path.to_path_buf(),
        list: vec![Problem {
            line: None,
            path: String::new(),
            message: format!("cannot read the file: {e}"),
        }],
    })?;
    // Relative paths in the file are relative to the file's directory: make that absolute so
    // checkpoints and logs name files the same way whatever the working directory is.
    let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let res = load_str(&abs, &text, &|k| std::env::var(k).ok());
    // Credentials the SDK chains take from the environment.
    logferry_sink::redact::register(CREDENTIAL_VARS.iter().filter_map(|v| std::env::var(v).ok()));
    // The process's messages (logs, errors, /readyz) never show these from now on, also
    // when the file was refused.
    match &res {
        Ok(cfg) => logferry_sink::redact::register(&cfg.secrets),
        Err(p) => logferry_sink::redact::register(&p.secrets),
    }
    res
}

pub fn load_str(
    path: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, Problems> {
    let fail = |list: Vec<Problem>| Problems {
        file: path.to_path_buf(),
        list,
        secrets: Vec::new(),
    };
    let doc = match toml_edit::Document::parse(text) {
        Ok(d) => d,
        Err(e) => {
            let line = e.span().map(|s| locate::line_of(text, s.start));
            return Err(fail(vec![Problem {
                line,
                path: String::new(),
                message: format!("not valid TOML: {}", e.message().trim()),
            }]));
        }
    };
    let mut table: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => {
            return Err(fail(vec![Problem {
                line: None,
                path: String::new(),
                message: format!("not valid TOML: {e}"),
            }]))
        }
    };
    let mut c = Collector {
        list: Vec::new(),
        expanded: Vec::new(),
        secret_expansions: Vec::new(),
    };
    expand_table(&mut table, "", env, &mut c);
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let secrets::Found {
        values: mut found,
        mut files,
    } = secrets::collect(&table, &base, env);
    found.extend(c.secret_expansions.iter().cloned());
    files.push(path.to_path_buf());
    files.extend(
        secrets::ENV_FILES
            .iter()
            .filter_map(|v| env(v))
            .map(PathBuf::from),
    );
    if let Some(home) = env("HOME") {
        files.push(Path::new(&home).join(".aws/credentials"));
    }
    let cfg = build(path, table, env, &mut c);
    if c.list.is_empty() {
        if let Some(mut cfg) = cfg {
            cfg.secrets = found;
            cfg.credential_files = files;
            return Ok(cfg);
        }
    }
    // A value that came from the environment is never echoed (serde quotes the values it
    // refuses, and a `${TOKEN}` in the wrong place is a token): it is shown as it was written.
    c.expanded
        .sort_by_key(|(value, _)| std::cmp::Reverse(value.len()));
    for p in &mut c.list {
        p.line = locate::line_of_path(&doc, text, &p.path);
        for (value, written) in &c.expanded {
            if p.message.contains(value.as_str()) {
                p.message = p.message.replace(value.as_str(), written);
            }
        }
    }
    c.list.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
    let mut problems = fail(c.list);
    problems.secrets = found;
    Err(problems)
}

fn expand_table(
    t: &mut toml::Table,
    prefix: &str,
    env: &dyn Fn(&str) -> Option<String>,
    c: &mut Collector,
) {
    for (k, v) in t.iter_mut() {
        let path = join(prefix, k);
        expand_value(v, &path, env, c);
    }
}

fn expand_value(
    v: &mut toml::Value,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    c: &mut Collector,
) {
    match v {
        toml::Value::String(s) => match values::expand(s, env) {
            Ok(e) => {
                // Short values ("5s", "gzip") could be any text in a message; a secret is not
                // that short.
                if e != *s && e.len() >= 6 {
                    c.expanded.push((e.clone(), s.clone()));
                    if !secrets::plain_option(path) {
                        c.secret_expansions.push(e.clone());
                    }
                }
                *s = e;
            }
            Err(m) => c.add(path, m),
        },
        toml::Value::Array(a) => {
            for (i, item) in a.iter_mut().enumerate() {
                expand_value(item, &format!("{path}[{i}]"), env, c);
            }
        }
        toml::Value::Table(t) => expand_table(t, path, env, c),
        _ => {}
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Deserializes `table` into `T`, reporting every unknown key: each one is recorded with a
/// suggestion, removed, and the rest deserialized again.
fn typed<T: DeserializeOwned>(
    mut table: toml::Table,
    prefix: &str,
    also_known: &[&str],
    c: &mut Collector,
) -> Option<T> {
    let mut removed: Vec<String> = Vec::new();
    for _ in 0..100 {
        let err = match serde_path_to_error::deserialize::<_, T>(table.clone()) {
            Ok(v) => return Some(v),
            Err(e) => e,
        };
        let segs: Vec<String> = err
            .path()
            .iter()
            .filter_map(|s| match s {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                serde_path_to_error::Segment::Seq { index } => Some(format!("[{index}]")),
                _ => None,
            })
            .collect();
        let rel = segs.join(".").replace(".[", "[");
        let path = join(prefix, &rel);
        let msg = err.inner().to_string();
        let msg = msg.lines().next().unwrap_or_default().to_string();
        if let Some(unknown) = msg.strip_prefix("unknown field `") {
            let name = unknown.split('`').next().unwrap_or_default().to_string();
            let mut known: Vec<String> = msg
                .split('`')
                .skip(3)
                .step_by(2)
                .map(str::to_string)
                .collect();
            if segs.len() == 1 {
                known.extend(also_known.iter().map(|s| s.to_string()));
            }
            c.add(path, unknown_message(&name, &known));
            if !remove_path(&mut table, &segs) {
                return None;
            }
            continue;
        }
        if let Some(field) = msg.strip_prefix("missing field `") {
            // A field we removed for a bad value is not missing as well.
            let field = field.split('`').next().unwrap_or_default();
            if removed.contains(&join(&rel, field)) {
                return None;
            }
        }
        c.add(path, msg);
        // Keep going past a bad value so that every problem of the table is listed.
        if segs.is_empty() || !remove_path(&mut table, &segs) {
            return None;
        }
        removed.push(rel);
    }
    None
}

/// The candidate closest to a mistyped `name`, if any is close enough to suggest.
pub(crate) fn closest<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|k| (strsim::jaro_winkler(name, k), k))
        .filter(|(score, _)| *score > 0.75)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

fn unknown_message(name: &str, known: &[String]) -> String {
    match closest(name, known.iter().map(String::as_str)) {
        Some(k) => format!("unknown key `{name}`; did you mean `{k}`?"),
        None if known.is_empty() => format!("unknown key `{name}`"),
        None => format!(
            "unknown key `{name}`; expected one of: {}",
            known.join(", ")
        ),
    }
}

fn remove_path(table: &mut toml::Table, segs: &[String]) -> bool {
    let Some((last, parents)) = segs.split_last() else {
        return false;
    };
    let mut cur = table;
    for s in parents {
        match cur.get_mut(s) {
            Some(toml::Value::Table(t)) => cur = t,
            _ => return false,
        }
    }
    cur.remove(last).is_some()
}

fn build(
    path: &Path,
    mut table: toml::Table,
    env: &dyn Fn(&str) -> Option<String>,
    c: &mut Collector,
) -> Option<Config> {
    // A relative data_dir or sink path is relative to the directory of the config file, so the
    // same file works whatever the working directory is.
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let sinks_raw = match table.remove("sinks") {
        Some(toml::Value::Table(t)) => t,
        Some(_) => {
            c.add("sinks", "must be a table of [sinks.<name>] sections");
            toml::Table::new()
        }
        None => toml::Table::new(),
    };
    let top: raw::Top = typed(table, "", &[], c)?;
    let mut sinks = Vec::new();
    // References are checked against every declared sink, also those with problems of their own.
    let sink_names: Vec<String> = sinks_raw.keys().cloned().collect();
    for (name, v) in sinks_raw {
        let p = format!("sinks.{name}");
        if !check_name(&p, &name, c) {
            continue;
        }
        match v {
            toml::Value::Table(t) => {
                if let Some(s) = sink::build(&name, &p, t, &base, c) {
                    sinks.push(s);
                }
            }
            _ => c.add(p, "must be a table"),
        }
    }
    if sinks.is_empty() && c.list.is_empty() {
        c.add(
            "sinks",
            "no sink is configured: add a [sinks.<name>] section",
        );
    }
    if top.sources.is_empty() {
        c.add(
            "sources",
            "no source is configured: add a [sources.<name>] section",
        );
    }
    let mut sources = Vec::new();
    for (name, s) in top.sources {
        if !check_name(&format!("sources.{name}"), &name, c) {
            continue;
        }
        if let Some(src) = source::build(&name, s, &base, &sink_names, &top.masking, c) {
            sources.push(src);
        }
    }
    let api_listen = match top.api.listen.as_deref() {
        None | Some("") => None,
        Some(a) => match a.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                c.add(
                    "api.listen",
                    format!("{a:?} is not an address such as \"127.0.0.1:8686\""),
                );
                None
            }
        },
    };
    let data_dir = resolve(&base, top.data_dir.as_deref().unwrap_or("./data"));
    let declared_keks: Vec<String> = top.keks.keys().cloned().collect();
    let key_file_modes = top.security.key_file_modes;
    let keks = encryption::keks(top.keks, &base, env, key_file_modes, c);
    let signing_key_file = encryption::signing(top.signing, &base, key_file_modes, c);
    let spool_kek = top.spool.map(|s| s.kek);
    if let Some(k) = &spool_kek {
        if !declared_keks.contains(k) {
            c.add("spool.kek", format!("no [keks.{k}] is declared"));
        } else if signing_key_file.is_none() && keks.get(k).is_some_and(|k| !k.provider.is_local())
        {
            c.add("spool.kek", encryption::remote_unsigned(k));
        }
    }
    encryption::cross_check(&sinks, &keks, signing_key_file.as_ref(), &declared_keks, c);
    integrity::cross_check(&sinks, signing_key_file.as_ref(), c);
    let mut masking = BTreeMap::new();
    for (name, t) in top.masking {
        if let Some(p) = masking::build(&name, t, &base, env, c) {
            masking.insert(name, std::sync::Arc::new(p));
        }
    }
    Some(Config {
        path: path.to_path_buf(),
        data_dir,
        api_listen,
        unready_after: top
            .api
            .unready_after
            .map_or(Duration::from_secs(300), |d| d.0),
        log_format: top.log_format.unwrap_or_default(),
        log_level: top.log_level.unwrap_or_else(|| "info".into()),
        shutdown_timeout: top
            .shutdown_timeout
            .map_or(Duration::from_secs(20), |d| d.0),
        // Short: duplicates after a crash are the open batches plus this much input.
        checkpoint_interval: top
            .checkpoint_interval
            .map_or(Duration::from_millis(100), |d| d.0),
        sources,
        masking,
        sinks,
        secrets: Vec::new(),
        credential_files: Vec::new(),
        keks,
        signing_key_file,
        spool_kek,
        key_file_modes,
    })
}

pub(crate) fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    };
    // Drop `.` segments so paths read cleanly in logs and checkpoints.
    joined
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect()
}

fn size_or(s: Option<Size>, default: u64) -> u64 {
    s.map_or(default, |s| s.0)
}

mod encryption;
pub mod integrity;
mod secrets;
mod source;

pub use encryption::{read_key_file, EncryptionConfig, KekConfig, KekProvider};

mod sink;

#[cfg(test)]
mod tests;
