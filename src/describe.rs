//! What `validate` prints about a configuration, in the words of the configuration file.

use std::fmt::Write;

use logferry_sink::{Compression, Encoding};

use crate::config::{self, Buffer, Format, ReadFrom};

/// The configuration as `validate` shows it.
pub fn summary(cfg: &config::Config) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{}: ok", cfg.path.display());
    let _ = writeln!(s, "data_dir  {}", cfg.data_dir.display());
    if let Some(a) = cfg.api_listen {
        let _ = writeln!(s, "api       http://{a}/metrics /healthz /readyz");
    }
    if let Some(k) = &cfg.spool_kek {
        let provider = cfg.keks.get(k).map_or("?", |c| c.provider.name());
        let _ = writeln!(
            s,
            "spool     sealed under KEK {k} ({provider}), keys in data_dir/spool-keys"
        );
    }
    if let Some(f) = &cfg.signing_key_file {
        let _ = writeln!(s, "signing   receipts signed with {}", f.display());
    }
    let _ = writeln!(s, "\nsources");
    for src in &cfg.sources {
        let _ = writeln!(
            s,
            "  {:<12} {}, read from the {}, masking {}, -> {}",
            src.name,
            format(src.format),
            read_from(src.read_from),
            src.masking.as_deref().unwrap_or("none"),
            src.sinks.join(", ")
        );
        for i in &src.include {
            let _ = writeln!(s, "  {:<12}   include {i}", "");
        }
        for x in &src.exclude {
            let _ = writeln!(s, "  {:<12}   exclude {}", "", x.as_str());
        }
    }
    let _ = writeln!(s, "\nmasking profiles");
    if cfg.masking.is_empty() {
        let _ = writeln!(s, "  none");
    }
    for (name, p) in &cfg.masking {
        let detectors = if p.detector_names.is_empty() {
            "none".to_string()
        } else {
            p.detector_names.join(", ")
        };
        let _ = writeln!(
            s,
            "  {:<12} {} rule(s); detectors: {detectors}",
            name,
            p.rule_count(),
        );
    }
    let _ = writeln!(s, "\nsinks");
    for sk in &cfg.sinks {
        let key = match sk.kind {
            config::SinkKind::Otlp(_) => String::new(),
            _ => format!(", key {}", sk.key.as_str()),
        };
        let _ = writeln!(
            s,
            "  {:<12} {}, {} buffer{key}",
            sk.name,
            sk.type_name(),
            buffer(sk.buffer),
        );
        let _ = writeln!(
            s,
            "  {:<12}   batch {} / {} records / {}, {}, {}, concurrency {}",
            "",
            config::values::Size(sk.max_bytes),
            sk.max_records,
            humantime(sk.max_age),
            encoding(sk.encoding),
            match &sk.parquet {
                Some(p) => format!(
                    "{} columns, {} typed ({})",
                    codec(p.codec, p.level),
                    p.columns.len(),
                    match p.schema {
                        crate::parquet::schema::SchemaName::Generic => "generic",
                        crate::parquet::schema::SchemaName::PlatformJob => "platform_job",
                        crate::parquet::schema::SchemaName::PlatformAudit => "platform_audit",
                    }
                ),
                None => compression(sk.compression, sk.compression_level),
            },
            sk.concurrency
        );
        if let config::SinkKind::Otlp(o) = &sk.kind {
            otlp(&mut s, o);
        }
        if let Some(e) = &sk.encryption {
            let provider = cfg.keks.get(&e.kek).map_or("?", |k| k.provider.name());
            let _ = writeln!(
                s,
                "  {:<12}   encrypted per tenant ({}) and hour under KEK {} ({provider}), keys kept {}",
                "",
                e.tenant_field,
                e.kek,
                e.retention
                    .map_or("until shredded".to_string(), humantime),
            );
        }
    }
    s
}

fn format(f: Format) -> &'static str {
    match f {
        Format::Json => "json",
        Format::Text => "text",
    }
}

fn read_from(r: ReadFrom) -> &'static str {
    match r {
        ReadFrom::Beginning => "beginning",
        ReadFrom::End => "end",
    }
}

fn buffer(b: Buffer) -> &'static str {
    match b {
        Buffer::Disk => "disk",
        Buffer::Memory => "memory",
    }
}

fn encoding(e: Encoding) -> &'static str {
    match e {
        Encoding::Ndjson => "ndjson",
        Encoding::JsonArray => "json array",
        Encoding::Parquet => "parquet",
        Encoding::OtlpProtobuf => "OTLP protobuf",
        Encoding::OtlpJson => "OTLP/JSON",
    }
}

fn codec(c: crate::parquet::schema::Codec, level: Option<i32>) -> String {
    use crate::parquet::schema::Codec;
    match c {
        Codec::Zstd => format!("zstd level {}", level.unwrap_or(1)),
        Codec::Gzip => format!("gzip level {}", level.unwrap_or(6)),
        Codec::Snappy => "snappy".into(),
        Codec::None => "uncompressed".into(),
    }
}

/// With the level that applies (the encoder's defaults when none is set).
fn compression(c: Compression, level: Option<i32>) -> String {
    match c {
        Compression::Gzip => format!("gzip level {}", level.unwrap_or(6)),
        Compression::Zstd => format!("zstd level {}", level.unwrap_or(3)),
        Compression::None => "no compression".into(),
    }
}

/// `30s`, `1m 30s`, `200ms`: as the configuration writes durations.
fn humantime(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) || ms == 0 {
        return format!("{ms}ms");
    }
    let mut secs = d.as_secs();
    let mut parts = Vec::new();
    for (unit, n) in [("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= n {
            parts.push(format!("{}{unit}", secs / n));
            secs %= n;
        }
    }
    parts.join(" ")
}

/// An OTLP sink's mapping in words.
fn otlp(s: &mut String, o: &config::OtlpConfig) {
    use crate::otlp::{Body, Protocol};
    let spec = &o.spec;
    let list = |v: &[crate::otlp::Path]| {
        v.iter()
            .map(|p| p.key.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        s,
        "  {:<12}   POST {} to {}, requests up to {} before compression",
        "",
        match spec.protocol {
            Protocol::Protobuf => "OTLP protobuf",
            Protocol::Json => "OTLP/JSON",
        },
        logferry_sink::redact::url(&o.options.http.url),
        config::values::Size(o.options.max_request_bytes),
    );
    let mut map_words = spec
        .severity
        .map
        .iter()
        .map(|(w, l)| format!("{w}={}", l.name()))
        .collect::<Vec<_>>()
        .join(", ");
    if !map_words.is_empty() {
        map_words = format!(" ({map_words}, then the built-in words)");
    }
    let _ = writeln!(
        s,
        "  {:<12}   each record: body as {}, time from the source's timestamp, severity from the first of {}{} else {}",
        "",
        match spec.body {
            Body::Map => "a map",
            Body::String => "a string",
        },
        list(&spec.severity.fields),
        map_words,
        spec.severity.default.name(),
    );
    if !spec.attributes.is_empty() || spec.event_name.is_some() {
        let _ = writeln!(
            s,
            "  {:<12}   attributes: {}{}",
            "",
            if spec.attributes.is_empty() {
                "none".to_string()
            } else {
                list(&spec.attributes)
            },
            spec.event_name
                .as_ref()
                .map(|e| format!("; event name from {}", e.key))
                .unwrap_or_default(),
        );
    }
    let mut res: Vec<String> = spec
        .resource
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if !spec.resource.iter().any(|(k, _)| k == "service.name") {
        res.insert(0, "service.name=<the source's name>".into());
    }
    if !spec.resource.iter().any(|(k, _)| k == "host.name") {
        res.push(format!("host.name={}", spec.host));
    }
    let _ = writeln!(
        s,
        "  {:<12}   resource: {}{}; scope logferry {}",
        "",
        res.join(", "),
        if spec.resource_fields.is_empty() {
            String::new()
        } else {
            format!(
                "; one resource per value of {}",
                list(&spec.resource_fields)
            )
        },
        env!("CARGO_PKG_VERSION"),
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn validate_speaks_the_configuration_s_words() {
        let text = r#"
[sources.jobs]
include = ["/logs/*.log"]
read_from = "end"
sinks = ["out"]
[sinks.out]
type = "directory"
path = "/archive"
buffer = "memory"
compression = "zstd"
encoding = "json_array"
batch = { max_age = "90s" }
"#;
        let cfg =
            crate::config::load_str(std::path::Path::new("/etc/c.toml"), text, &|_| None).unwrap();
        let s = super::summary(&cfg);
        for want in [
            "json, read from the end, masking none",
            "directory, memory buffer",
            "/ 1m 30s, json array, zstd level 3",
        ] {
            assert!(s.contains(want), "{want:?} not in\n{s}");
        }
        assert!(
            !s.contains("Json") && !s.contains("Memory") && !s.contains(" + "),
            "{s}"
        );
    }

    #[test]
    fn durations_read_as_written() {
        use std::time::Duration;
        assert_eq!(super::humantime(Duration::from_secs(30)), "30s");
        assert_eq!(super::humantime(Duration::from_secs(90)), "1m 30s");
        assert_eq!(super::humantime(Duration::from_millis(200)), "200ms");
        assert_eq!(super::humantime(Duration::from_secs(3600)), "1h");
    }
}
