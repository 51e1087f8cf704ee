//! Checks a `[sinks.<name>]` table: the options every sink shares, then the type's own.

use std::path::Path;
use std::time::Duration;

use logferry_sinks::{Encoding, KeyTemplate};

use super::raw::{self, SINK_COMMON_KEYS, SINK_TYPES};
use super::{resolve, size_or, typed, Collector, SinkConfig, SinkKind, DEFAULT_KEY};

pub(super) fn build(
    name: &str,
    p: &str,
    mut table: toml::Table,
    base: &Path,
    c: &mut Collector,
) -> Option<SinkConfig> {
    let before = c.list.len();
    let mut common_t = toml::Table::new();
    for k in SINK_COMMON_KEYS {
        if let Some(v) = table.remove(*k) {
            common_t.insert(k.to_string(), v);
        }
    }
    let Some(kind_name) = common_t
        .get("type")
        .and_then(|v| v.as_str())
        .map(str::to_string)
    else {
        c.add(
            format!("{p}.type"),
            format!("missing; one of: {}", SINK_TYPES.join(", ")),
        );
        return None;
    };
    let kind = match kind_name.as_str() {
        "directory" => {
            typed::<raw::Directory>(table, p, SINK_COMMON_KEYS, c).map(|d| SinkKind::Directory {
                path: resolve(base, &d.path),
            })
        }
        other => {
            c.add(
                format!("{p}.type"),
                format!(
                    "unknown sink type {other:?}; one of: {}",
                    SINK_TYPES.join(", ")
                ),
            );
            None
        }
    };
    let common: raw::SinkCommon = typed(common_t, p, &[], c)?;
    let kind = kind?;
    let key = match KeyTemplate::parse(common.key.as_deref().unwrap_or(DEFAULT_KEY)) {
        Ok(k) => Some(k),
        Err(e) => {
            c.add(format!("{p}.key"), e.to_string());
            None
        }
    };
    let envelope = match common.envelope.as_deref() {
        None => None,
        Some(env) => match env.split_once("{{records}}") {
            Some((head, tail)) if !tail.contains("{{records}}") => {
                if head.contains('\n') || tail.contains('\n') {
                    c.add(format!("{p}.envelope"), "must not contain line breaks");
                }
                Some((head.to_string(), tail.to_string()))
            }
            _ => {
                c.add(
                    format!("{p}.envelope"),
                    "must contain `{{records}}` exactly once, e.g. {\"logEntries\":{{records}}}",
                );
                None
            }
        },
    };
    let max_bytes = size_or(common.batch.max_bytes, 8 << 20);
    if max_bytes < 1024 {
        c.add(format!("{p}.batch.max_bytes"), "must be at least 1KiB");
    }
    let max_records = common.batch.max_records.unwrap_or(50_000);
    if max_records == 0 {
        c.add(format!("{p}.batch.max_records"), "must be at least 1");
    }
    let concurrency = common.concurrency.unwrap_or(2);
    if !(1..=64).contains(&concurrency) {
        c.add(format!("{p}.concurrency"), "must be between 1 and 64");
    }
    let level_ok = match (common.compression, common.compression_level) {
        (_, None) => true,
        (logferry_sinks::Compression::Gzip, Some(l)) => (0..=9).contains(&l),
        (logferry_sinks::Compression::Zstd, Some(l)) => (1..=22).contains(&l),
        (logferry_sinks::Compression::None, Some(_)) => false,
    };
    if !level_ok {
        c.add(
            format!("{p}.compression_level"),
            "out of range: gzip takes 0-9, zstd 1-22, none takes no level",
        );
    }
    let initial_backoff = common
        .retry
        .initial_backoff
        .map_or(Duration::from_secs(1), |d| d.0);
    let max_backoff = common
        .retry
        .max_backoff
        .map_or(Duration::from_secs(300), |d| d.0);
    if initial_backoff.is_zero() || max_backoff < initial_backoff {
        c.add(
            format!("{p}.retry"),
            "initial_backoff must be above zero and not above max_backoff",
        );
    }
    let (rps, bps) = match &common.rate_limit {
        Some(r) => (r.requests_per_second, r.bytes_per_second.map(|s| s.0)),
        None => (None, None),
    };
    if rps == Some(0) || bps == Some(0) {
        c.add(
            format!("{p}.rate_limit"),
            "limits must be above zero (leave one out for no limit)",
        );
    }
    if let (Some(b), true) = (bps, true) {
        if b < max_bytes {
            c.add(
                format!("{p}.rate_limit.bytes_per_second"),
                "must be at least batch.max_bytes, or no batch could ever be sent",
            );
        }
    }
    if c.list.len() > before {
        return None;
    }
    Some(SinkConfig {
        name: name.to_string(),
        kind,
        key: key?,
        encoding: if envelope.is_some() && common.encoding == Encoding::Ndjson {
            // Records inside an envelope are always a JSON array.
            Encoding::JsonArray
        } else {
            common.encoding
        },
        envelope,
        compression: common.compression,
        compression_level: common.compression_level,
        buffer: common.buffer,
        max_bytes,
        max_records,
        max_age: common
            .batch
            .max_age
            .map_or(Duration::from_secs(30), |d| d.0),
        initial_backoff,
        max_backoff,
        max_attempts: common.retry.max_attempts,
        concurrency,
        requests_per_second: rps,
        bytes_per_second: bps,
        spool_max_bytes: size_or(common.spool_max_bytes, 1 << 30),
        timeout: common.timeout.map_or(Duration::from_secs(30), |d| d.0),
    })
}
