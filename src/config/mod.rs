//! Loading and checking the TOML configuration.
//!
//! Every problem is collected, not just the first: unknown keys (with a "did you mean"),
//! values of the wrong form, unset variables, dangling references. Each names the file, the line
//! and the key path, so `logferry validate` can list them all at once.

mod encryption;
mod entra;
mod files;
pub mod integrity;
mod loading;
mod locate;
mod masking;
mod model;
pub mod parquet;
mod problems;
mod raw;
mod secrets;
mod sink;
mod source;
mod tables;
mod tls;
pub mod values;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use encryption::{EncryptionConfig, KekConfig, KekProvider};
pub use files::{read_key_file, KeyFileError};
pub use loading::{load, load_str};
pub use model::{AzureMonitorConfig, Config, SinkConfig, SinkKind, SourceConfig};
use problems::Collector;
pub use problems::{Problem, Problems};
pub use raw::{Buffer, FollowSymlinks, Format, KeyFileModes, LogFormat, Oversize, ReadFrom};
pub use sink::OtlpConfig;
pub(crate) use tables::closest;
use tables::typed;
use values::Size;

pub const DEFAULT_KEY: &str = "{source}/%Y/%m/%d/%H/{batch_id}.ndjson.gz";
/// Append blobs: one series per source, host and day (roll-over adds `-00001`, ...).
pub const DEFAULT_APPEND_KEY: &str = "{source}/%Y/%m/%d/{host}.ndjson.gz";

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

#[cfg(test)]
mod tests;
