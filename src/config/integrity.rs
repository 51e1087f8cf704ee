//! A sink's `integrity = true | { prefix = "..." }`: checked here, used by `crate::integrity`.

use super::raw::{self, Buffer};
use super::{Collector, SinkKind};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrityConfig {
    /// Digests go under `<prefix>/_digests/`.
    pub prefix: String,
}

pub(super) fn sink(
    p: &str,
    i: raw::Integrity,
    kind: &SinkKind,
    append: bool,
    buffer: Buffer,
    c: &mut Collector,
) -> Option<IntegrityConfig> {
    let prefix = match i {
        raw::Integrity::On(false) => return None,
        raw::Integrity::On(true) => String::new(),
        raw::Integrity::With(t) => t.prefix.unwrap_or_default(),
    };
    let at = format!("{p}.integrity");
    if !matches!(
        kind,
        SinkKind::Directory { .. } | SinkKind::S3(_) | SinkKind::AzureBlob(_)
    ) {
        c.add(
            &at,
            "tamper evidence is for archives: directory, s3 and azure_blob sinks",
        );
    }
    if append {
        c.add(
            &at,
            "an append blob has no object per batch to chain; use blob_type = \"block\"",
        );
    }
    if buffer == Buffer::Memory {
        c.add(
            &at,
            "the chain head is made durable with the spooled batch: needs buffer = \"disk\"",
        );
    }
    if prefix.split('/').any(|s| s == ".." || s == ".") {
        c.add(format!("{at}.prefix"), "must not contain \".\" or \"..\"");
    }
    Some(IntegrityConfig {
        prefix: prefix.trim_matches('/').to_string(),
    })
}

/// Digests are signed: an integrity sink needs `[signing] key_file`.
pub(super) fn cross_check(
    sinks: &[super::SinkConfig],
    signing: Option<&std::path::PathBuf>,
    c: &mut Collector,
) {
    for s in sinks.iter().filter(|s| s.integrity.is_some()) {
        if signing.is_none() {
            c.add(
                format!("sinks.{}.integrity", s.name),
                "digests are signed: set [signing] key_file (write one with `logferry keygen`)",
            );
        }
    }
}
