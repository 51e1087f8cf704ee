//! Checks a `[sources.<name>]` table.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::{raw, resolve, size_or, Collector, SourceConfig};

pub(super) fn build(
    name: &str,
    s: raw::Source,
    base: &Path,
    sinks: &[String],
    masking: &BTreeMap<String, toml::Table>,
    c: &mut Collector,
) -> Option<SourceConfig> {
    let p = format!("sources.{name}");
    let before = c.list.len();
    if s.include.is_empty() {
        c.add(
            format!("{p}.include"),
            "must list at least one path or glob",
        );
    }
    let mut include = Vec::new();
    for (i, g) in s.include.iter().enumerate() {
        let full = resolve(base, g).to_string_lossy().into_owned();
        match glob::Pattern::new(&full) {
            Ok(_) => include.push(full),
            Err(e) => c.add(
                format!("{p}.include[{i}]"),
                format!("invalid glob {g:?}: {e}"),
            ),
        }
    }
    let mut exclude = Vec::new();
    for (i, g) in s.exclude.iter().enumerate() {
        // An exclude without a slash matches file names anywhere; with one, whole paths.
        let pat = if g.contains('/') {
            resolve(base, g).to_string_lossy().into_owned()
        } else {
            format!("**/{g}")
        };
        match glob::Pattern::new(&pat) {
            Ok(pt) => exclude.push(pt),
            Err(e) => c.add(
                format!("{p}.exclude[{i}]"),
                format!("invalid glob {g:?}: {e}"),
            ),
        }
    }
    if s.sinks.is_empty() {
        c.add(format!("{p}.sinks"), "must name at least one sink");
    }
    for (i, sink) in s.sinks.iter().enumerate() {
        if !sinks.contains(sink) {
            c.add(
                format!("{p}.sinks[{i}]"),
                missing("sink", sink, sinks.iter()),
            );
        }
    }
    if let Some(m) = &s.masking {
        if !masking.contains_key(m) {
            c.add(
                format!("{p}.masking"),
                missing("masking profile", m, masking.keys()),
            );
        }
    }
    let max_line_bytes = size_or(s.max_line_bytes, 1 << 20);
    if !(256..=(256 << 20)).contains(&max_line_bytes) {
        c.add(
            format!("{p}.max_line_bytes"),
            "must be between 256B and 256MiB",
        );
    }
    // Above the platform's 40 MB job records; memory holds one such record per source.
    let max_record_bytes = size_or(s.max_record_bytes, 64 << 20);
    if !(1024..=(1 << 30)).contains(&max_record_bytes) {
        c.add(
            format!("{p}.max_record_bytes"),
            "must be between 1KiB and 1GiB",
        );
    }
    let max_open_files = s.max_open_files.unwrap_or(1024);
    if max_open_files == 0 {
        c.add(format!("{p}.max_open_files"), "must be at least 1");
    }
    for (key, field) in [
        ("record_id", &s.record_id),
        ("timestamp_field", &s.timestamp_field),
    ] {
        if let Some(f) = field {
            if f.is_empty() || f.split('.').any(str::is_empty) {
                c.add(
                    format!("{p}.{key}"),
                    format!("{f:?} is not a field path such as \"ts\" or \"context.time\""),
                );
            }
        }
    }
    if let Some(f) = &s.record_id {
        if f.contains('.') || f.contains('"') || f.contains('\\') {
            c.add(
                format!("{p}.record_id"),
                "must be a top-level field name without dots or quotes",
            );
        }
    }
    if let Some(f) = &s.timestamp_format {
        if s.timestamp_field.is_none() {
            c.add(
                format!("{p}.timestamp_format"),
                "needs timestamp_field (the field it reads)",
            );
        } else if let Err(e) = crate::timefmt::check_format(f) {
            c.add(format!("{p}.timestamp_format"), e);
        }
    }
    if c.list.len() > before {
        return None;
    }
    Some(SourceConfig {
        name: name.to_string(),
        include,
        exclude,
        format: s.format,
        read_from: s.read_from,
        masking: s.masking,
        sinks: s.sinks,
        max_line_bytes: max_line_bytes as usize,
        max_record_bytes: max_record_bytes as usize,
        oversize: s.oversize,
        record_id: s.record_id,
        timestamp_field: s.timestamp_field,
        timestamp_format: s.timestamp_format,
        max_open_files,
        follow_symlinks: s.follow_symlinks,
        glob_interval: s.glob_interval.map_or(Duration::from_millis(500), |d| d.0),
        rotate_wait: s.rotate_wait.map_or(Duration::from_secs(5), |d| d.0),
    })
}

fn missing<'a>(what: &str, name: &str, known: impl Iterator<Item = &'a String>) -> String {
    let known: Vec<&String> = known.collect();
    match (
        super::closest(name, known.iter().map(|k| k.as_str())),
        known.is_empty(),
    ) {
        (Some(k), _) => format!("no {what} named {name:?}; did you mean {k:?}?"),
        (None, true) => format!("no {what} named {name:?}; none is defined"),
        (None, false) => format!(
            "no {what} named {name:?}; defined: {}",
            known
                .iter()
                .map(|k| format!("{k:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
