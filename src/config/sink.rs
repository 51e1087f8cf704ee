//! Checks a `[sinks.<name>]` table: the options every sink shares, then the type's own.

mod azure;
mod http;
mod otlp;

pub use otlp::OtlpConfig;

use std::path::Path;
use std::time::Duration;

use logferry_sink::{Compression, Encoding, KeyTemplate};

use super::raw::{self, SINK_COMMON_KEYS, SINK_TYPES};
use super::tls::tls;
use super::{
    resolve, size_or, typed, Collector, SinkConfig, SinkKind, DEFAULT_APPEND_KEY, DEFAULT_KEY,
};

/// Credentials never cross a plaintext transport unless the sink says so: `url` (at option
/// `key`) must be https:// when `creds` (what would be sent, in words) travel with it.
/// Loopback gets no exemption: a sidecar's "localhost" can be another container's port.
fn plaintext(p: &str, key: &str, url: &str, creds: &str, allowed: bool, c: &mut Collector) {
    let http = url
        .get(..7)
        .is_some_and(|s| s.eq_ignore_ascii_case("http://"));
    if http && !allowed {
        c.add(
            format!("{p}.{key}"),
            format!("is http://, which would send {creds} in clear: use https://, or set allow_plaintext_credentials = true on this sink if the network between is trusted"),
        );
    }
}

/// An envelope's text before and after the records, and whether they go in as one JSON
/// string (`{{records_str}}`) rather than as JSON values (`{{records}}`).
fn envelope(env: &str) -> Result<(String, String, bool), String> {
    const KNOWN: [&str; 5] = [
        "{{records}}",
        "{{records_str}}",
        "{{batch_id}}",
        "{{record_count}}",
        "{{sealed_at}}",
    ];
    if env.contains('\n') || env.contains('\r') {
        return Err("must not contain line breaks".into());
    }
    let mut rest = env;
    while let Some(i) = rest.find("{{") {
        let tail = &rest[i..];
        let Some(j) = tail.find("}}") else { break };
        let ph = &tail[..j + 2];
        if !KNOWN.contains(&ph) {
            return Err(format!(
                "{ph} is not a placeholder; known: {}",
                KNOWN.join(", ")
            ));
        }
        rest = &tail[j + 2..];
    }
    let n = env.matches("{{records}}").count();
    let s = env.matches("{{records_str}}").count();
    let (marker, string) = match (n, s) {
        (1, 0) => ("{{records}}", false),
        (0, 1) => ("{{records_str}}", true),
        _ => {
            return Err(
                "must contain `{{records}}` (or `{{records_str}}`) exactly once, e.g. {\"logEntries\":{{records}}}".into(),
            )
        }
    };
    let (head, tail) = env.split_once(marker).unwrap_or((env, ""));
    Ok((head.to_string(), tail.to_string(), string))
}

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
        "azure_blob" => typed::<raw::AzureBlob>(table, p, SINK_COMMON_KEYS, c)
            .and_then(|s| azure::azure_blob(p, s, base, c))
            .map(|o| SinkKind::AzureBlob(Box::new(o))),
        "azure_monitor" => typed::<raw::AzureMonitor>(table, p, SINK_COMMON_KEYS, c)
            .and_then(|s| azure::azure_monitor(p, s, base, c))
            .map(|o| SinkKind::AzureMonitor(Box::new(o))),
        "http" => typed::<raw::Http>(table, p, SINK_COMMON_KEYS, c)
            .and_then(|s| http::http(p, s, base, c))
            .map(|o| SinkKind::Http(Box::new(o))),
        "otlp" => typed::<raw::Otlp>(table, p, SINK_COMMON_KEYS, c)
            .and_then(|s| otlp::otlp(p, s, base, c))
            .map(|o| SinkKind::Otlp(Box::new(o))),
        "s3" => typed::<raw::S3>(table, p, SINK_COMMON_KEYS, c)
            .and_then(|s| s3(p, s, base, c))
            .map(|o| SinkKind::S3(Box::new(o))),
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
    let has_encoding = common_t.contains_key("encoding");
    let common: raw::SinkCommon = typed(common_t, p, &[], c)?;
    let mut kind = kind?;
    let timeout = common.timeout.map_or(Duration::from_secs(30), |d| d.0);
    let append = matches!(&kind, SinkKind::AzureBlob(o) if o.blob_type == logferry_destinations::azure_blob::BlobType::Append);
    let per_record = common.batch.max_records == Some(1);
    let parquet = common.encoding == Encoding::Parquet;
    let otlp = matches!(kind, SinkKind::Otlp(_));
    // An OTLP request is no object: its batches are not partitioned by time or field.
    let default_key = if parquet {
        super::parquet::DEFAULT_PARQUET_KEY
    } else if otlp {
        "{source}/{batch_id}"
    } else {
        DEFAULT_KEY
    };
    if otlp && common.key.is_some() {
        c.add(
            format!("{p}.key"),
            "otlp sends requests, not objects: there is no key; remove it",
        );
    }
    let parsed = if append {
        KeyTemplate::parse_shared(common.key.as_deref().unwrap_or(DEFAULT_APPEND_KEY))
    } else if per_record {
        KeyTemplate::parse_per_record(common.key.as_deref().unwrap_or(default_key))
    } else {
        KeyTemplate::parse(common.key.as_deref().unwrap_or(default_key))
    };
    // One object per record, named by its fields: what is there already is never replaced.
    if let (Ok(k), SinkKind::S3(o)) = (&parsed, &mut kind) {
        o.never_overwrite = !k.has_batch_id();
    }
    let key = match parsed {
        Ok(k) => Some(k),
        Err(e) => {
            c.add(format!("{p}.key"), e.to_string());
            None
        }
    };
    let envelope = match common.envelope.as_deref() {
        None => None,
        Some(env) => match envelope(env) {
            Ok(e) => Some(e),
            Err(m) => {
                c.add(format!("{p}.envelope"), m);
                None
            }
        },
    };
    let max_bytes = size_or(
        common.batch.max_bytes,
        if parquet {
            super::parquet::DEFAULT_PARQUET_MAX_BYTES
        } else {
            8 << 20
        },
    );
    if max_bytes < 1024 {
        c.add(format!("{p}.batch.max_bytes"), "must be at least 1KiB");
    }
    // A Parquet batch is held whole and its record column is one buffer of 32-bit offsets.
    if parquet && max_bytes > 1 << 30 {
        c.add(
            format!("{p}.batch.max_bytes"),
            "at most 1GiB with encoding = \"parquet\" (a batch is held whole in memory)",
        );
    }
    let max_records = common.batch.max_records.unwrap_or(50_000);
    if max_records == 0 {
        c.add(format!("{p}.batch.max_records"), "must be at least 1");
    }
    let monitor = matches!(kind, SinkKind::AzureMonitor(_));
    let live = monitor || matches!(kind, SinkKind::Http(_) | SinkKind::Otlp(_));
    if let SinkKind::Otlp(o) = &mut kind {
        otlp::common(p, o, &common, has_encoding, timeout, c);
    }
    if monitor {
        // The Logs Ingestion API takes a gzip'd JSON array and nothing else.
        if common.encoding != Encoding::JsonArray && has_encoding {
            c.add(
                format!("{p}.encoding"),
                "azure_monitor always sends a JSON array; remove it",
            );
        }
        if common
            .compression
            .is_some_and(|c| c != raw::CompressionName::Gzip)
        {
            c.add(
                format!("{p}.compression"),
                "azure_monitor always sends gzip; remove it",
            );
        }
        if common.envelope.is_some() {
            c.add(
                format!("{p}.envelope"),
                "azure_monitor sends a bare JSON array; remove it",
            );
        }
    }
    // Four requests in flight keep a Logs Ingestion DCR busy; object stores need fewer.
    let concurrency = common.concurrency.unwrap_or(if monitor { 4 } else { 2 });
    if !(1..=64).contains(&concurrency) {
        c.add(format!("{p}.concurrency"), "must be between 1 and 64");
    }
    let (compression, parquet_spec) = super::parquet::resolve(p, &common, &kind, key.as_ref(), c);
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
        // Under a DCR's limits (12,000 requests and 2 GB per minute), leaving room for
        // other senders to the same rule.
        None if monitor => (Some(150), Some(25 << 20)),
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
    let encryption = common
        .encryption
        .and_then(|e| super::encryption::sink(p, e, &kind, c));
    if encryption.is_some() && append {
        c.add(
            format!("{p}.encryption"),
            "an append blob cannot be encrypted per batch; use blob_type = \"block\"",
        );
    }
    let integrity = common
        .integrity
        .and_then(|i| super::integrity::sink(p, i, &kind, append, common.buffer, c));
    if c.list.len() > before {
        return None;
    }
    let otlp_encoding = match &kind {
        SinkKind::Otlp(o) => Some(o.options.encoding),
        _ => None,
    };
    Some(SinkConfig {
        name: name.to_string(),
        kind,
        key: key?,
        encoding: if let Some(e) = otlp_encoding {
            e
        } else if monitor || (envelope.is_some() && common.encoding == Encoding::Ndjson) {
            // Records inside an envelope are always a JSON array.
            Encoding::JsonArray
        } else {
            common.encoding
        },
        envelope,
        compression,
        compression_level: common.compression_level,
        parquet: parquet_spec,
        buffer: common.buffer,
        max_bytes,
        max_records,
        // Live destinations (Azure Monitor, an HTTP endpoint, an OTLP receiver) are read as
        // it happens; archives favour fewer, larger objects.
        max_age: common
            .batch
            .max_age
            .map_or(Duration::from_secs(if live { 5 } else { 30 }), |d| d.0),
        initial_backoff,
        max_backoff,
        max_attempts: common.retry.max_attempts,
        concurrency,
        requests_per_second: rps,
        bytes_per_second: bps,
        spool_max_bytes: size_or(common.spool_max_bytes, 1 << 30),
        timeout,
        encryption,
        integrity,
    })
}

const STORAGE_CLASSES: &[&str] = &[
    "STANDARD",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "GLACIER_IR",
    "DEEP_ARCHIVE",
    "REDUCED_REDUNDANCY",
    "EXPRESS_ONEZONE",
];

fn s3(
    p: &str,
    s: raw::S3,
    base: &Path,
    c: &mut Collector,
) -> Option<logferry_destinations::S3Options> {
    let before = c.list.len();
    if s.bucket.is_empty() {
        c.add(format!("{p}.bucket"), "must name a bucket");
    }
    match s.server_side_encryption.as_deref() {
        None | Some("AES256") => {
            if s.kms_key_id.is_some() {
                c.add(
                    format!("{p}.kms_key_id"),
                    "needs server_side_encryption = \"aws:kms\"",
                );
            }
        }
        Some("aws:kms" | "aws:kms:dsse") => {}
        Some(o) => c.add(
            format!("{p}.server_side_encryption"),
            format!("{o:?}: use \"AES256\" or \"aws:kms\""),
        ),
    }
    if let Some(sc) = &s.storage_class {
        if !STORAGE_CLASSES.contains(&sc.as_str()) {
            c.add(
                format!("{p}.storage_class"),
                format!("{sc:?}: one of {}", STORAGE_CLASSES.join(", ")),
            );
        }
    }
    if let Some(cs) = &s.checksum {
        if cs != "crc32c" && cs != "sha256" {
            c.add(
                format!("{p}.checksum"),
                format!("{cs:?}: \"crc32c\" or \"sha256\""),
            );
        }
    }
    let object_lock = match s.object_lock {
        Some(l) if l.mode == "GOVERNANCE" || l.mode == "COMPLIANCE" => {
            if l.retain_days == 0 {
                c.add(format!("{p}.object_lock.retain_days"), "must be at least 1");
            }
            Some((l.mode, l.retain_days))
        }
        Some(l) => {
            c.add(
                format!("{p}.object_lock.mode"),
                format!("{:?}: \"GOVERNANCE\" or \"COMPLIANCE\"", l.mode),
            );
            None
        }
        None => None,
    };
    let read = |what: &str, f: &Option<String>, c: &mut Collector| -> Option<String> {
        let f = f
            .as_deref()
            .map(|f| resolve(base, f).to_string_lossy().into_owned());
        match super::values::secret(what, None, f.as_deref()) {
            Ok(v) => v.map(|s| s.expose().to_string()),
            Err(e) => {
                c.add(format!("{p}.{what}_file"), e);
                None
            }
        }
    };
    let id = read("access_key_id", &s.access_key_id_file, c);
    let secret = read("secret_access_key", &s.secret_access_key_file, c);
    let static_keys = match (id, secret) {
        (Some(id), Some(secret)) => Some(logferry_destinations::StaticKeys { id, secret }),
        (None, None) => None,
        _ => {
            c.add(
                p,
                "access_key_id_file and secret_access_key_file go together",
            );
            None
        }
    };
    let multipart_threshold = s.multipart_threshold.map_or(16 << 20, |v| v.0);
    let part_size = s.part_size.map_or(8 << 20, |v| v.0);
    if part_size < 5 << 20 {
        c.add(format!("{p}.part_size"), "S3 parts are at least 5MiB");
    }
    let tls = tls(p, s.tls.as_ref(), base, c);
    if tls.cert_file.is_some() {
        c.add(
            format!("{p}.tls.cert_file"),
            "S3 takes no client certificate (only tls.ca_file)",
        );
    }
    if tls.server_name.is_some() {
        c.add(
            format!("{p}.tls.server_name"),
            "S3 takes no server_name (only tls.ca_file); point endpoint at the name instead",
        );
    }
    if let Some(e) = &s.endpoint {
        // Every S3 request is signed; over http:// the session token travels in a header and
        // a signed request can be replayed by whoever reads it.
        plaintext(
            p,
            "endpoint",
            e,
            "signed requests and any session token",
            s.allow_plaintext_credentials,
            c,
        );
    }
    if c.list.len() > before {
        return None;
    }
    Some(logferry_destinations::S3Options {
        bucket: s.bucket,
        region: s.region,
        endpoint: s.endpoint,
        force_path_style: s.force_path_style,
        content_type: s.content_type,
        server_side_encryption: s.server_side_encryption,
        kms_key_id: s.kms_key_id,
        bucket_key_enabled: s.bucket_key_enabled,
        storage_class: s.storage_class,
        tags: s.tags.into_iter().collect(),
        object_lock,
        checksum: s.checksum,
        metadata: s.metadata.into_iter().collect(),
        multipart_threshold,
        part_size,
        allow_plaintext_credentials: s.allow_plaintext_credentials,
        never_overwrite: false,
        role_arn: s.role_arn,
        external_id: s.external_id,
        session_name: s.session_name,
        static_keys,
        tls,
    })
}
