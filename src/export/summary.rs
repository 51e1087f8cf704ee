//! What an export did, in text or JSON.

use serde::{Deserialize, Serialize};

/// Something wrong with one object of the selection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Problem {
    /// `missing`, `modified`, `unverified` (in no signed digest), `unreadable`, `misplaced`.
    pub kind: String,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<String>,
    pub detail: String,
}

/// A tenant-hour whose key was shredded: erased on purpose, not an error.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Erased {
    pub key: String,
    pub tenant: String,
    pub hour: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Summary {
    pub sink: String,
    pub from: String,
    pub to: String,
    /// The prefixes listed; `full_listing` when the key has no time part.
    pub prefixes: usize,
    pub full_listing: bool,
    /// Names listed under the prefixes.
    pub objects_listed: u64,
    /// Objects whose key can hold the selection.
    pub objects_selected: u64,
    pub objects_read: u64,
    /// Selected objects left out (unverified without `--allow-unverified`, unreadable).
    pub objects_skipped: u64,
    pub objects_unverified: u64,
    pub objects_erased: u64,
    /// Signed digests read (0 without `integrity`).
    pub digests: u64,
    pub records: u64,
    /// Bytes of records written out (uncompressed).
    pub bytes: u64,
    /// Bytes of objects read, as stored.
    pub bytes_read: u64,
    pub erased: Vec<Erased>,
    pub problems: Vec<Problem>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<String>,
    /// Writing the output failed (the records read are counted all the same).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_error: Option<String>,
    /// Exit 0 only when every selected object was read (and verified, with `integrity`).
    pub complete: bool,
    /// The data keys the objects read were sealed under (tenant, hour, key id): a replay checks
    /// them again before it ships what it read earlier.
    #[serde(skip)]
    pub keys_used: std::collections::BTreeSet<(String, String, String)>,
}

impl Summary {
    pub fn text(&self) -> String {
        let mut s = format!(
            "export of sink {} from {} to {}: {} objects listed under {} prefix{}{}, {} selected, {} read, {} skipped, {} unverified, {} erased; {} records, {} bytes\n",
            self.sink,
            self.from,
            self.to,
            self.objects_listed,
            self.prefixes,
            if self.prefixes == 1 { "" } else { "es" },
            if self.full_listing {
                " (the key has no time part: a full listing)"
            } else {
                ""
            },
            self.objects_selected,
            self.objects_read,
            self.objects_skipped,
            self.objects_unverified,
            self.objects_erased,
            self.records,
            self.bytes
        );
        for e in &self.erased {
            s.push_str(&format!(
                "  erased: {} (tenant {}, hour {}: its key was shredded)\n",
                e.key, e.tenant, e.hour
            ));
        }
        for p in &self.problems {
            let batch = p
                .batch_id
                .as_deref()
                .map(|b| format!(" (batch {b})"))
                .unwrap_or_default();
            s.push_str(&format!("  {}: {}{batch}: {}\n", p.kind, p.key, p.detail));
        }
        if let Some(e) = &self.output_error {
            s.push_str(&format!("  the output failed: {e}\n"));
        }
        if let Some(r) = &self.receipt {
            s.push_str(&format!("  receipt: {r}\n"));
        }
        s.push_str(if self.complete {
            "complete\n"
        } else {
            "INCOMPLETE: see the problems above\n"
        });
        s
    }
}
