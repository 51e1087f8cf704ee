//! Checks a `[sinks.<name>]` table: the options every sink shares, then the type's own.

use std::path::Path;
use std::time::Duration;

use logferry_sinks::{Encoding, KeyTemplate};

use super::raw::{self, SINK_COMMON_KEYS, SINK_TYPES};
use super::{
    resolve, size_or, typed, Collector, SinkConfig, SinkKind, DEFAULT_APPEND_KEY, DEFAULT_KEY,
};

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
            .and_then(|s| azure_blob(p, s, base, c))
            .map(|o| SinkKind::AzureBlob(Box::new(o))),
        "azure_monitor" => typed::<raw::AzureMonitor>(table, p, SINK_COMMON_KEYS, c)
            .and_then(|s| azure_monitor(p, s, base, c))
            .map(|o| SinkKind::AzureMonitor(Box::new(o))),
        "http" => typed::<raw::Http>(table, p, SINK_COMMON_KEYS, c)
            .and_then(|s| http(p, s, base, c))
            .map(|o| SinkKind::Http(Box::new(o))),
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
    if let SinkKind::Http(o) = &mut kind {
        o.timeout = timeout;
    }
    let append = matches!(&kind, SinkKind::AzureBlob(o) if o.blob_type == logferry_sinks::azure_blob::BlobType::Append);
    let parsed = if append {
        KeyTemplate::parse_shared(common.key.as_deref().unwrap_or(DEFAULT_APPEND_KEY))
    } else {
        KeyTemplate::parse(common.key.as_deref().unwrap_or(DEFAULT_KEY))
    };
    let key = match parsed {
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
    let monitor = matches!(kind, SinkKind::AzureMonitor(_));
    if monitor {
        // The Logs Ingestion API takes a gzip'd JSON array and nothing else.
        if common.encoding != Encoding::JsonArray && has_encoding {
            c.add(
                format!("{p}.encoding"),
                "azure_monitor always sends a JSON array; remove it",
            );
        }
        if common.compression != logferry_sinks::Compression::Gzip {
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
    if c.list.len() > before {
        return None;
    }
    Some(SinkConfig {
        name: name.to_string(),
        kind,
        key: key?,
        encoding: if monitor || (envelope.is_some() && common.encoding == Encoding::Ndjson) {
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
        // Azure Monitor is read as it happens; archives favour fewer, larger objects.
        max_age: common
            .batch
            .max_age
            .map_or(Duration::from_secs(if monitor { 5 } else { 30 }), |d| d.0),
        initial_backoff,
        max_backoff,
        max_attempts: common.retry.max_attempts,
        concurrency,
        requests_per_second: rps,
        bytes_per_second: bps,
        spool_max_bytes: size_or(common.spool_max_bytes, 1 << 30),
        timeout,
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

fn s3(p: &str, s: raw::S3, base: &Path, c: &mut Collector) -> Option<logferry_sinks::S3Options> {
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
        (Some(id), Some(secret)) => Some(logferry_sinks::StaticKeys { id, secret }),
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
    let (tls, _) = tls(p, s.tls.as_ref(), base, c, false);
    if tls.cert_file.is_some() {
        c.add(
            format!("{p}.tls.cert_file"),
            "S3 takes no client certificate (only tls.ca_file)",
        );
    }
    if c.list.len() > before {
        return None;
    }
    Some(logferry_sinks::S3Options {
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
        role_arn: s.role_arn,
        external_id: s.external_id,
        session_name: s.session_name,
        static_keys,
        timeout: std::time::Duration::from_secs(30),
        tls,
    })
}

const ACCESS_TIERS: &[&str] = &["Hot", "Cool", "Cold", "Archive"];

fn azure_blob(
    p: &str,
    s: raw::AzureBlob,
    base: &Path,
    c: &mut Collector,
) -> Option<logferry_sinks::azure_blob::AzureBlobOptions> {
    use logferry_sinks::azure_blob::{AppendRoll, BlobAuth, BlobType, ConnectionString};
    let before = c.list.len();
    let valid_name = (3..=63).contains(&s.container.len())
        && s.container
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid_name {
        c.add(
            format!("{p}.container"),
            "3-63 lowercase letters, digits and dashes",
        );
    }
    let blob_type = match s.blob_type.as_deref() {
        None | Some("block") => BlobType::Block,
        Some("append") => BlobType::Append,
        Some(other) => {
            c.add(
                format!("{p}.blob_type"),
                format!("{other:?}: \"block\" (a blob per batch) or \"append\""),
            );
            BlobType::Block
        }
    };
    if let Some(t) = &s.access_tier {
        if !ACCESS_TIERS.contains(&t.as_str()) {
            c.add(
                format!("{p}.access_tier"),
                format!("{t:?}: one of {}", ACCESS_TIERS.join(", ")),
            );
        } else if blob_type == BlobType::Append {
            c.add(
                format!("{p}.access_tier"),
                "access tiers apply to block blobs only; remove it or use blob_type = \"block\"",
            );
        }
    }
    let mut append_roll = AppendRoll::default();
    if let Some(r) = &s.append_roll {
        if blob_type != BlobType::Append {
            c.add(
                format!("{p}.append_roll"),
                "only applies with blob_type = \"append\"",
            );
        }
        if let Some(b) = r.max_bytes {
            if b.0 < 1 << 20 {
                c.add(
                    format!("{p}.append_roll.max_bytes"),
                    "must be at least 1MiB",
                );
            }
            append_roll.max_bytes = b.0;
        }
        if let Some(a) = r.max_age {
            if a.0 < Duration::from_secs(1) {
                c.add(format!("{p}.append_roll.max_age"), "must be at least 1s");
            }
            append_roll.max_age = a.0;
        }
    }
    let file = |f: &Option<String>| {
        f.as_deref()
            .map(|f| resolve(base, f).to_string_lossy().into_owned())
    };
    let mut secret =
        |name: &str, inline: &Option<String>, f: &Option<String>| match super::values::secret(
            name,
            inline.as_deref(),
            file(f).as_deref(),
        ) {
            Ok(v) => v,
            Err(e) => {
                c.add(format!("{p}.{name}"), e);
                None
            }
        };
    let cs = secret(
        "connection_string",
        &s.connection_string,
        &s.connection_string_file,
    );
    let key = secret("account_key", &s.account_key, &s.account_key_file);
    let sas = secret("sas_token", &s.sas_token, &s.sas_token_file);
    let entra = entra(
        p,
        &raw::entra_fields!(s),
        base,
        c,
        "account_key, sas_token or connection_string",
    );
    let location = match (cs, &s.account) {
        (Some(_), Some(_)) => {
            c.add(
                format!("{p}.account"),
                "set either connection_string or account (+ endpoint), not both",
            );
            None
        }
        (Some(cs), None) => {
            for (name, set) in [
                ("endpoint", s.endpoint.is_some()),
                ("account_key", key.is_some()),
                ("sas_token", sas.is_some()),
                ("auth", s.auth.is_some()),
            ] {
                if set {
                    c.add(
                        format!("{p}.{name}"),
                        "the connection string already says where and how; remove one of them",
                    );
                }
            }
            match ConnectionString::parse(cs.expose()) {
                Ok(cs) => Some(cs.into_parts()),
                Err(e) => {
                    c.add(format!("{p}.connection_string"), e);
                    None
                }
            }
        }
        (None, Some(account)) => {
            let endpoint = s
                .endpoint
                .clone()
                .unwrap_or_else(|| format!("https://{account}.blob.core.windows.net"))
                .trim_end_matches('/')
                .to_string();
            if !endpoint.starts_with("https://") && !endpoint.starts_with("http://") {
                c.add(format!("{p}.endpoint"), "must be an http(s):// URL");
            }
            let chosen = [
                ("account_key", key.is_some()),
                ("sas_token", sas.is_some()),
                ("auth", entra.is_some() || s.auth.is_some()),
            ];
            let n = chosen.iter().filter(|(_, set)| *set).count();
            if n > 1 {
                c.add(p, "choose one credential: account_key, sas_token or auth");
            }
            let auth = if let Some(k) = key {
                match base64::Engine::decode(
                    &base64::engine::general_purpose::STANDARD,
                    k.expose().trim(),
                ) {
                    Ok(k) => Some(BlobAuth::AccountKey(k)),
                    Err(_) => {
                        c.add(
                            format!("{p}.account_key"),
                            "is not base64 (copy it from the portal's Access keys)",
                        );
                        None
                    }
                }
            } else if let Some(s) = sas {
                Some(BlobAuth::Sas(
                    s.expose().trim_start_matches('?').to_string(),
                ))
            } else if let Some(e) = entra {
                if !endpoint.starts_with("https://") {
                    c.add(
                        format!("{p}.endpoint"),
                        "Entra ID auth sends bearer tokens, which needs https://",
                    );
                }
                Some(BlobAuth::Entra(e))
            } else {
                if n == 0 {
                    c.add(
                        p,
                        "needs a credential with account: auth (workload_identity, managed_identity, client_secret), account_key (or _file) or sas_token (or _file)",
                    );
                }
                None
            };
            auth.map(|a| (account.clone(), endpoint, a))
        }
        (None, None) => {
            c.add(
                p,
                "needs connection_string (or _file), or account with auth, account_key or sas_token",
            );
            None
        }
    };
    let tls = tls(p, s.tls.as_ref(), base, c, false).0;
    if c.list.len() > before {
        return None;
    }
    let (account, endpoint, auth) = location?;
    Some(logferry_sinks::azure_blob::AzureBlobOptions {
        container: s.container,
        account,
        endpoint,
        auth,
        tls,
        access_tier: s.access_tier,
        metadata: s.metadata.into_iter().collect(),
        create_container: s.create_container,
        blob_type,
        append_roll,
    })
}

/// The Entra ID options both Azure sinks share. `None` when `auth` is not set (another
/// credential applies) or wrong (reported); `others` names the alternatives in messages.
fn entra(
    p: &str,
    s: &raw::EntraFields,
    base: &Path,
    c: &mut Collector,
    others: &str,
) -> Option<logferry_sinks::azure_auth::Entra> {
    use logferry_sinks::azure_auth::Entra;
    let others = if others.is_empty() {
        String::new()
    } else {
        format!(" (or use {others})")
    };
    let client_secret = match super::values::secret(
        "client_secret",
        s.client_secret.as_deref(),
        s.client_secret_file
            .as_deref()
            .map(|f| resolve(base, f).to_string_lossy().into_owned())
            .as_deref(),
    ) {
        Ok(v) => v,
        Err(e) => {
            c.add(format!("{p}.client_secret"), e);
            None
        }
    };
    let entra_fields = [
        ("tenant_id", s.tenant_id.is_some()),
        ("client_id", s.client_id.is_some()),
        ("client_secret", client_secret.is_some()),
        ("authority_host", s.authority_host.is_some()),
        ("federated_token_file", s.federated_token_file.is_some()),
    ];
    if let Some(h) = &s.authority_host {
        if !h.starts_with("https://") {
            c.add(
                format!("{p}.authority_host"),
                "must be an https:// URL (e.g. https://login.microsoftonline.us)",
            );
        }
    }
    match s.auth.as_deref() {
        None => {
            if let Some((name, _)) = entra_fields.iter().find(|(_, set)| *set) {
                c.add(
                    format!("{p}.{name}"),
                    "is an Entra ID option: set auth = \"workload_identity\", \"managed_identity\" or \"client_secret\"",
                );
            }
            None
        }
        Some("workload_identity") => {
            if client_secret.is_some() {
                c.add(
                    format!("{p}.client_secret"),
                    "not used with auth = \"workload_identity\"",
                );
            }
            Some(Entra::WorkloadIdentity {
                tenant_id: s.tenant_id.clone(),
                client_id: s.client_id.clone(),
                token_file: s.federated_token_file.as_deref().map(|f| resolve(base, f)),
                authority_host: s.authority_host.clone(),
            })
        }
        Some("managed_identity") => {
            for (name, set) in entra_fields {
                if set && name != "client_id" {
                    c.add(
                        format!("{p}.{name}"),
                        "not used with auth = \"managed_identity\" (only client_id, for a user-assigned identity)",
                    );
                }
            }
            Some(Entra::ManagedIdentity {
                client_id: s.client_id.clone(),
            })
        }
        Some("client_secret") => {
            let mut missing = |name: &str, v: Option<String>| match v {
                Some(v) => v,
                None => {
                    c.add(
                        format!("{p}.{name}"),
                        "required with auth = \"client_secret\"",
                    );
                    String::new()
                }
            };
            let tenant_id = missing("tenant_id", s.tenant_id.clone());
            let client_id = missing("client_id", s.client_id.clone());
            let secret = missing(
                "client_secret",
                client_secret.as_ref().map(|v| v.expose().to_string()),
            );
            Some(Entra::ClientSecret {
                tenant_id,
                client_id,
                secret,
                authority_host: s.authority_host.clone(),
            })
        }
        Some(other) => {
            c.add(
                format!("{p}.auth"),
                format!(
                    "{other:?}: one of workload_identity, managed_identity, client_secret{others}"
                ),
            );
            None
        }
    }
}

fn azure_monitor(
    p: &str,
    s: raw::AzureMonitor,
    base: &Path,
    c: &mut Collector,
) -> Option<super::AzureMonitorConfig> {
    let before = c.list.len();
    let endpoint = s.endpoint.trim_end_matches('/').to_string();
    if !endpoint.starts_with("https://") {
        c.add(
            format!("{p}.endpoint"),
            "must be an https:// URL (the data collection endpoint's logs ingestion URL)",
        );
    }
    if s.dcr_id.is_empty() {
        c.add(
            format!("{p}.dcr_id"),
            "must be the rule's immutable id (dcr-...)",
        );
    }
    if s.stream.is_empty() {
        c.add(
            format!("{p}.stream"),
            "must name a stream, e.g. Custom-AuditLog_CL",
        );
    }
    let auth = entra(p, &raw::entra_fields!(s), base, c, "");
    if s.auth.is_none() {
        c.add(
            format!("{p}.auth"),
            "required: workload_identity, managed_identity or client_secret",
        );
    }
    let max_field_bytes = s.max_field_bytes.map_or(64 << 10, |b| b.0);
    if !(64..=(64 << 10)).contains(&max_field_bytes) {
        c.add(
            format!("{p}.max_field_bytes"),
            "between 64B and 64KiB (the service's limit per field)",
        );
    }
    for (from, to) in &s.field_map {
        if to.is_empty() || from.is_empty() {
            c.add(format!("{p}.field_map"), "names must not be empty");
        }
    }
    let tls = tls(p, s.tls.as_ref(), base, c, false).0;
    if c.list.len() > before {
        return None;
    }
    Some(super::AzureMonitorConfig {
        options: logferry_sinks::azure_monitor::AzureMonitorOptions {
            endpoint,
            dcr_id: s.dcr_id,
            stream: s.stream,
            auth: auth?,
            scope: s
                .scope
                .unwrap_or_else(|| logferry_sinks::azure_monitor::DEFAULT_SCOPE.to_string()),
            tls,
        },
        shape: crate::shape::Shape {
            time_field: s.time_field,
            field_map: s.field_map.into_iter().collect(),
            max_field_bytes: max_field_bytes as usize,
            // Two bytes for the array's separators around a record.
            max_record_bytes: logferry_sinks::azure_monitor::MAX_REQUEST_BYTES as usize - 16,
        },
    })
}

/// `tls = { ca_file, cert_file, key_file, server_name }`: files must exist; a client
/// certificate needs its key; `server_name` only where `named` (the http sink).
fn tls(
    p: &str,
    t: Option<&raw::Tls>,
    base: &Path,
    c: &mut Collector,
    named: bool,
) -> (logferry_sinks::tls::TlsOptions, Option<String>) {
    let Some(t) = t else {
        return (Default::default(), None);
    };
    let mut file = |name: &str, v: &Option<String>| {
        let path = v.as_deref().map(|f| resolve(base, f));
        if let Some(f) = &path {
            if let Err(e) = std::fs::metadata(f) {
                c.add(format!("{p}.tls.{name}"), format!("{}: {e}", f.display()));
            }
        }
        path
    };
    let opts = logferry_sinks::tls::TlsOptions {
        ca_file: file("ca_file", &t.ca_file),
        cert_file: file("cert_file", &t.cert_file),
        key_file: file("key_file", &t.key_file),
    };
    if opts.cert_file.is_some() != opts.key_file.is_some() {
        c.add(
            format!("{p}.tls"),
            "cert_file and key_file go together (a client certificate and its key)",
        );
    }
    if t.server_name.is_some() && !named {
        c.add(
            format!("{p}.tls.server_name"),
            "only the http sink takes a server_name",
        );
    }
    (opts, t.server_name.clone())
}

/// `retry_on` / `success_on`: codes and classes.
fn statuses(
    p: &str,
    name: &str,
    v: Option<&Vec<raw::StatusItem>>,
    default: &[&str],
    c: &mut Collector,
) -> logferry_sinks::http::Statuses {
    let mut out = logferry_sinks::http::Statuses::default();
    let items: Vec<String> = match v {
        Some(list) => list
            .iter()
            .map(|i| match i {
                raw::StatusItem::Code(n) => n.to_string(),
                raw::StatusItem::Text(t) => t.clone(),
            })
            .collect(),
        None => default.iter().map(|s| s.to_string()).collect(),
    };
    for i in items {
        if let Err(e) = out.add(&i) {
            c.add(format!("{p}.{name}"), e);
        }
    }
    out
}

fn http(
    p: &str,
    s: raw::Http,
    base: &Path,
    c: &mut Collector,
) -> Option<logferry_sinks::http::HttpOptions> {
    use logferry_sinks::http::{CheckMethod, HttpAuth, Secretish, Signature};
    let before = c.list.len();
    if !(s.url.starts_with("https://") || s.url.starts_with("http://")) {
        c.add(format!("{p}.url"), "must be an http:// or https:// URL");
    }
    let method = s
        .method
        .clone()
        .unwrap_or_else(|| "POST".into())
        .to_ascii_uppercase();
    if method != "POST" && method != "PUT" {
        c.add(format!("{p}.method"), "POST or PUT");
    }
    let mut secret =
        |name: &str, inline: &Option<String>, file: &Option<String>| match (inline, file) {
            (Some(_), Some(_)) => {
                c.add(
                    format!("{p}.{name}"),
                    format!("set either {name} or {name}_file, not both"),
                );
                None
            }
            (Some(v), None) => Some(Secretish::Inline(v.clone())),
            (None, Some(f)) => {
                let path = resolve(base, f);
                if let Err(e) = std::fs::metadata(&path) {
                    c.add(
                        format!("{p}.{name}_file"),
                        format!("{}: {e}", path.display()),
                    );
                }
                Some(Secretish::File(path))
            }
            (None, None) => None,
        };
    let auth = match &s.auth {
        None => HttpAuth::None,
        Some(a) => match (&a.basic, &a.bearer) {
            (Some(b), None) => match secret("auth.basic.password", &b.password, &b.password_file) {
                Some(pw) => HttpAuth::Basic {
                    user: b.user.clone(),
                    password: pw,
                },
                None => {
                    c.add(format!("{p}.auth.basic"), "needs password or password_file");
                    HttpAuth::None
                }
            },
            (None, Some(b)) => match secret("auth.bearer.token", &b.token, &b.token_file) {
                Some(t) => HttpAuth::Bearer(t),
                None => {
                    c.add(format!("{p}.auth.bearer"), "needs token or token_file");
                    HttpAuth::None
                }
            },
            _ => {
                c.add(
                    format!("{p}.auth"),
                    "one of basic = {...} or bearer = {...}",
                );
                HttpAuth::None
            }
        },
    };
    let signature = match &s.signature {
        None => None,
        Some(sig) => {
            let key = match (&sig.key_env, &sig.key_file) {
                (Some(var), None) => std::env::var(var)
                    .map(String::into_bytes)
                    .map_err(|_| format!("environment variable {var} is not set")),
                (None, Some(f)) => {
                    let path = resolve(base, f);
                    std::fs::read(&path)
                        .map(|mut k| {
                            while k.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                                k.pop();
                            }
                            k
                        })
                        .map_err(|e| format!("cannot read key_file {}: {e}", path.display()))
                }
                _ => Err("set key_env or key_file (one of them)".to_string()),
            };
            match key {
                Ok(k) if k.len() >= 16 => Some(Signature {
                    key: k,
                    header: sig
                        .header
                        .clone()
                        .unwrap_or_else(|| "X-Logferry-Signature".into()),
                }),
                Ok(_) => {
                    c.add(
                        format!("{p}.signature"),
                        "the key must be at least 16 bytes",
                    );
                    None
                }
                Err(e) => {
                    c.add(format!("{p}.signature"), e);
                    None
                }
            }
        }
    };
    for k in s.headers.keys() {
        let lower = k.to_ascii_lowercase();
        if [
            "content-encoding",
            "idempotency-key",
            "content-length",
            "host",
        ]
        .contains(&lower.as_str())
        {
            c.add(
                format!("{p}.headers.{k}"),
                "is set by logferry for every request; remove it",
            );
        }
    }
    let retry_on = statuses(
        p,
        "retry_on",
        s.retry_on.as_ref(),
        &["408", "429", "5xx"],
        c,
    );
    let success_on = statuses(p, "success_on", s.success_on.as_ref(), &["2xx"], c);
    let check = match s.check.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("head") => CheckMethod::Head,
        Some("options") => CheckMethod::Options,
        Some("none") => CheckMethod::None,
        Some(other) => {
            c.add(
                format!("{p}.check"),
                format!("{other:?}: \"head\", \"options\" or \"none\""),
            );
            CheckMethod::None
        }
    };
    let (tls, server_name) = tls(p, s.tls.as_ref(), base, c, true);
    if c.list.len() > before {
        return None;
    }
    Some(logferry_sinks::http::HttpOptions {
        url: s.url,
        method,
        headers: s.headers.into_iter().collect(),
        auth,
        signature,
        tls,
        server_name,
        // Set from the common `timeout` by the caller.
        timeout: Duration::from_secs(30),
        retry_on,
        success_on,
        check,
    })
}
