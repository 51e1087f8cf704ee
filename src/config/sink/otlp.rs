//! The `otlp` sink's table: the transport as the `http` sink's (auth, headers, TLS, the
//! plaintext rule), and the mapping of records to the logs data model.

use super::*;
use crate::otlp::{Body, Level, Path as FieldPath, Protocol, Severity, Spec};

/// What a checked `otlp` table becomes (the mapping's compression is the sink's, set after).
#[derive(Debug, Clone)]
pub struct OtlpConfig {
    pub options: logferry_destinations::otlp::OtlpOptions,
    pub spec: Spec,
}

pub const DEFAULT_LOGS_PATH: &str = "/v1/logs";
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 4 << 20;

/// Dotted record paths: none empty, no segment empty, none twice.
fn paths(p: &str, name: &str, list: &[String], c: &mut Collector) -> Vec<FieldPath> {
    let mut out: Vec<FieldPath> = Vec::new();
    for (i, f) in list.iter().enumerate() {
        if f.is_empty() || f.split('.').any(str::is_empty) {
            c.add(
                format!("{p}.{name}[{i}]"),
                format!(
                    "{f:?} is not a field path (names joined by dots, e.g. context.user_email)"
                ),
            );
        } else if out.iter().any(|o| &o.key == f) {
            c.add(format!("{p}.{name}[{i}]"), format!("{f:?} is listed twice"));
        } else {
            out.push(FieldPath::new(f));
        }
    }
    out
}

fn one_path(p: &str, name: &str, f: &str, c: &mut Collector) -> Option<FieldPath> {
    if f.is_empty() || f.split('.').any(str::is_empty) {
        c.add(
            format!("{p}.{name}"),
            format!("{f:?} is not a field path (names joined by dots)"),
        );
        return None;
    }
    Some(FieldPath::new(f))
}

fn level(p: &str, at: &str, v: &str, c: &mut Collector) -> Level {
    Level::parse(v).unwrap_or_else(|| {
        c.add(
            format!("{p}.{at}"),
            format!("{v:?} is not a level: one of {}", Level::NAMES.join(", ")),
        );
        Level::Info
    })
}

pub(super) fn otlp(p: &str, s: raw::Otlp, base: &Path, c: &mut Collector) -> Option<OtlpConfig> {
    let before = c.list.len();
    let endpoint = s.endpoint.trim_end_matches('/');
    if endpoint.contains(['?', '#']) {
        c.add(
            format!("{p}.endpoint"),
            "takes no query or fragment; give the whole path with logs_path",
        );
    }
    if s.logs_path.is_none() && endpoint.to_ascii_lowercase().ends_with(DEFAULT_LOGS_PATH) {
        c.add(
            format!("{p}.endpoint"),
            "ends in /v1/logs, which is appended: give the receiver's base URL, or the whole path as logs_path",
        );
    }
    let path = s.logs_path.as_deref().unwrap_or(DEFAULT_LOGS_PATH);
    if !path.starts_with('/') {
        c.add(
            format!("{p}.logs_path"),
            "must start with / (e.g. /v1/logs)",
        );
    }
    if path
        .chars()
        .any(|ch| ch.is_control() || ch == ' ' || ch == '#')
    {
        c.add(
            format!("{p}.logs_path"),
            "holds a space, a # or a control character (percent-encode it)",
        );
    }
    let encoding = match s.protocol.as_deref() {
        None | Some("protobuf") => Protocol::Protobuf,
        Some("json") => Protocol::Json,
        Some(o) => {
            c.add(
                format!("{p}.protocol"),
                format!("{o:?}: \"protobuf\" or \"json\""),
            );
            Protocol::Protobuf
        }
    };
    let body = match s.body.as_deref() {
        None | Some("map") => Body::Map,
        Some("string") => Body::String,
        Some(o) => {
            c.add(format!("{p}.body"), format!("{o:?}: \"map\" or \"string\""));
            Body::Map
        }
    };
    for k in s.headers.keys() {
        if k.eq_ignore_ascii_case("content-type") {
            c.add(
                format!("{p}.headers.{k}"),
                "is set by logferry from protocol; remove it",
            );
        }
    }
    for k in s.resource.keys() {
        if k.is_empty() {
            c.add(format!("{p}.resource"), "an attribute name is empty");
        }
    }
    let severity = match &s.severity {
        None => Severity {
            fields: crate::otlp::DEFAULT_SEVERITY_FIELDS
                .iter()
                .map(|f| FieldPath::new(f))
                .collect(),
            map: Vec::new(),
            default: Level::Info,
        },
        Some(t) => Severity {
            fields: match t.field.as_deref() {
                Some(f) => one_path(p, "severity.field", f, c).into_iter().collect(),
                None => crate::otlp::DEFAULT_SEVERITY_FIELDS
                    .iter()
                    .map(|f| FieldPath::new(f))
                    .collect(),
            },
            map: t
                .map
                .iter()
                .map(|(w, l)| {
                    (
                        w.to_ascii_lowercase(),
                        level(p, &format!("severity.map.{w}"), l, c),
                    )
                })
                .collect(),
            default: t
                .default
                .as_deref()
                .map_or(Level::Info, |d| level(p, "severity.default", d, c)),
        },
    };
    let max_request_bytes = s
        .max_request_bytes
        .map_or(DEFAULT_MAX_REQUEST_BYTES, |v| v.0);
    if !(64 << 10..=64 << 20).contains(&max_request_bytes) {
        c.add(
            format!("{p}.max_request_bytes"),
            "between 64KiB and 64MiB (receivers refuse larger requests: the Collector's default is 20MiB, many backends take 5MiB)",
        );
    }
    let attributes = paths(p, "attributes", &s.attributes, c);
    let resource_fields = paths(p, "resource_fields", &s.resource_fields, c);
    let event_name = s
        .event_name
        .as_deref()
        .and_then(|f| one_path(p, "event_name", f, c));
    let retry_on = s.retry_on.unwrap_or_else(|| {
        [429, 502, 503, 504]
            .into_iter()
            .map(raw::StatusItem::Code)
            .collect()
    });
    // The transport is the http sink's, checked by its rules; its words name `url`, which is
    // this sink's endpoint.
    let transport = raw::Http {
        url: format!("{endpoint}{path}"),
        method: None,
        headers: s.headers,
        auth: s.auth,
        signature: None,
        tls: s.tls,
        retry_on: Some(retry_on),
        success_on: None,
        check: Some("none".into()),
        allow_plaintext_credentials: s.allow_plaintext_credentials,
    };
    let mark = c.list.len();
    let http = http::http(p, transport, base, c);
    for problem in &mut c.list[mark..] {
        if problem.path == format!("{p}.url") {
            problem.path = format!("{p}.endpoint");
        }
    }
    if c.list.len() > before {
        return None;
    }
    Some(OtlpConfig {
        options: logferry_destinations::otlp::OtlpOptions {
            http: http?,
            max_request_bytes,
            rejected: None,
            answer_timeout: std::time::Duration::from_secs(5),
            encoding: match encoding {
                Protocol::Protobuf => Encoding::OtlpProtobuf,
                Protocol::Json => Encoding::OtlpJson,
            },
        },
        spec: Spec {
            protocol: encoding,
            body,
            attributes,
            resource: s.resource.into_iter().collect(),
            resource_fields,
            event_name,
            severity,
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            compression: Compression::Gzip,
            level: None,
        },
    })
}

/// The options every sink shares, as an OTLP sink takes them: its own encoding (no other, no
/// envelope), gzip or nothing, and how long a success's body is waited for.
pub(super) fn common(
    p: &str,
    o: &mut OtlpConfig,
    common: &raw::SinkCommon,
    has_encoding: bool,
    timeout: std::time::Duration,
    c: &mut Collector,
) {
    // The request is OTLP's: no other encoding, no envelope, gzip or nothing.
    if has_encoding {
        c.add(
            format!("{p}.encoding"),
            "otlp sends OTLP requests (choose protobuf or json with protocol); remove it",
        );
    }
    if common.envelope.is_some() {
        c.add(
            format!("{p}.envelope"),
            "otlp sends OTLP requests; remove it",
        );
    }
    o.spec.compression = match common.compression {
        None | Some(raw::CompressionName::Gzip) => Compression::Gzip,
        Some(raw::CompressionName::None) => Compression::None,
        Some(other) => {
            let name = if other == raw::CompressionName::Zstd {
                "zstd"
            } else {
                "snappy"
            };
            c.add(
                format!("{p}.compression"),
                format!("{name:?}: OTLP/HTTP takes \"gzip\" or \"none\""),
            );
            Compression::Gzip
        }
    };
    o.spec.level = common.compression_level;
    // A success's body (its partial success) is read well inside the attempt's timeout.
    o.options.answer_timeout = timeout / 4;
}
