//! The masking stage: field rules, then pattern rules and detectors on every string value.
//!
//! Runs once per record, before batching, so every sink sees masked data. It fails closed: a
//! record the engine cannot process leaves as `[REDACTED:unprocessable]`, never as it came.
//!
//! Cost model: a record is parsed into a tree only when a field rule can apply to it (its
//! trigger keys appear in the line). Detectors work on the raw text: each string value goes
//! through a byte-level prefilter and only candidates meet a regex; unchanged bytes are copied as
//! they are.

pub mod action;
pub mod card;
pub mod detect;
pub mod rules;
pub mod scan;
pub mod tree;

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use regex::Regex;

pub use action::Action;
use detect::{Found, Kind};
use rules::PathRule;

/// A compiled `[masking.<name>]` profile. Built (and checked) when the configuration loads.
pub struct Profile {
    pub name: String,
    /// Lines that are not one JSON object leave as `[REDACTED:unparsable]` (the profile has
    /// field rules and `unparsable = "redact"`, the default).
    pub redact_unparsable: bool,
    /// Counter kinds: one per rule, then one per detector kind, then `invalid_escape` and
    /// `unprocessable`.
    pub labels: Vec<String>,
    pub(crate) path_rules: Vec<PathRule>,
    pub(crate) pattern_rules: Vec<(usize, Regex, Action)>,
    pub(crate) enabled: u16,
    /// Indexed by `Kind as usize`: the action and the label index of each enabled detector.
    pub(crate) detectors: Vec<Option<(Action, usize)>>,
    pub detector_names: Vec<&'static str>,
}

impl std::fmt::Debug for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Profile")
            .field("name", &self.name)
            .field("rules", &(self.path_rules.len() + self.pattern_rules.len()))
            .field("detectors", &self.detector_names)
            .finish()
    }
}

impl Profile {
    /// What each HMAC rule and detector of this profile makes of `value`: the pseudonyms the
    /// archive holds where the value was (`export --where-hmac`). Empty without HMAC actions.
    pub fn pseudonyms(&self, value: &str) -> Vec<String> {
        let label = |i: usize| self.labels.get(i).map_or("", String::as_str);
        let mut out: Vec<String> = Vec::new();
        let mut add = |a: &Action, l: &str| {
            if matches!(a, Action::Hmac { .. }) {
                let p = a.replace_text(value, l);
                if !out.contains(&p) {
                    out.push(p);
                }
            }
        };
        for r in &self.path_rules {
            add(&r.action, label(r.label));
        }
        for (l, _, a) in &self.pattern_rules {
            add(a, label(*l));
        }
        for (kind, d) in self.detectors.iter().enumerate() {
            if let Some((a, _)) = d {
                let name = detect::Kind::ALL.get(kind).map_or("", |k| k.name());
                add(a, name);
            }
        }
        out
    }

    /// Whether a field rule with an HMAC action covers the dotted path `field` (without
    /// wildcards or indexes): the archive holds only pseudonyms there.
    pub fn pseudonymises(&self, field: &str) -> bool {
        let segs: Vec<&str> = field.split('.').collect();
        self.path_rules.iter().any(|r| {
            matches!(r.action, Action::Hmac { .. })
                && r.paths.iter().any(|p| {
                    p.len() == segs.len()
                        && p.iter().zip(&segs).all(|(s, f)| match s {
                            rules::Seg::Key(k) => k == f,
                            rules::Seg::Any => true,
                            rules::Seg::Index(_) => false,
                        })
                })
        })
    }

    pub fn rule_count(&self) -> usize {
        self.path_rules.len() + self.pattern_rules.len()
    }

    fn unprocessable(&self) -> usize {
        self.labels.len() - 1
    }

    fn invalid_escape(&self) -> usize {
        self.labels.len() - 2
    }
}

/// One change, for `logferry mask --diff`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub path: String,
    pub by: String,
}

/// Applies a profile. One per source thread; keeps its buffers between records.
pub struct Masker {
    p: Arc<Profile>,
    counts: Vec<u64>,
    counters: Vec<Counter>,
    tree_out: Vec<u8>,
    out: Vec<u8>,
    found: Vec<Found>,
    per_path: Vec<usize>,
    edits: Vec<tree::Edit>,
    warned: bool,
    /// The dotted paths the pipeline reads from a record (key fields, the timestamp field).
    key_paths: Vec<Vec<String>>,
    /// Reads those paths from a masked record, when a change reached one.
    fields: Option<crate::fields::Fields>,
    /// The last record changed at, above or below one of `key_paths`.
    key_touched: bool,
    /// Set to collect what changed (the `mask` command); off in the pipeline.
    pub trace: Option<Vec<Change>>,
}

impl Masker {
    pub fn new(p: Arc<Profile>, counters: Vec<Counter>) -> Masker {
        let n = p.labels.len();
        Masker {
            p,
            counts: vec![0; n],
            counters,
            tree_out: Vec::new(),
            out: Vec::new(),
            found: Vec::new(),
            per_path: Vec::new(),
            edits: Vec::new(),
            warned: false,
            key_paths: Vec::new(),
            fields: None,
            key_touched: false,
            trace: None,
        }
    }

    /// The fields the pipeline takes from each record (key fields, the timestamp), read by
    /// `fields`: after masking the masker hands them over ([`Masker::masked`]), reading them
    /// from its output only when a change reached one, so that a masked record is not parsed
    /// twice and the pipeline never takes a key from the record before masking.
    pub fn watch_fields(&mut self, fields: crate::fields::Fields) {
        self.key_paths = fields
            .paths()
            .iter()
            .map(|p| p.split('.').map(str::to_string).collect())
            .collect();
        self.fields = Some(fields);
    }

    /// After a [`Masker::mask`] that changed the record: the masked record, and the watched
    /// fields' values and record time as they are in it. `decoded` and `time` are the
    /// decoder's for the record before masking, handed back when no change reached them.
    pub fn masked<'s>(
        &'s mut self,
        decoded: &'s crate::fields::Values,
        time: Option<chrono::DateTime<chrono::Utc>>,
    ) -> (
        &'s [u8],
        &'s crate::fields::Values,
        Option<chrono::DateTime<chrono::Utc>>,
    ) {
        match &mut self.fields {
            Some(f) if self.key_touched => {
                f.extract(&self.out);
                (&self.out, f.values(), f.time())
            }
            _ => (&self.out, decoded, time),
        }
    }

    /// Whether the last [`Masker::mask`] changed a value (or a key) on a watched path.
    pub fn key_fields_changed(&self) -> bool {
        self.key_touched
    }

    /// Masks one JSON record. Returns true when it changed; the masked record is then
    /// [`Masker::output`]. A record that did not change is left to the caller as it was.
    pub fn mask(&mut self, rec: &[u8]) -> bool {
        let p = self.p.clone();
        let mut in_tree = false;
        self.key_touched = false;
        if !p.path_rules.is_empty() {
            // Escapes could hide a trigger key: such records always take the full path.
            let bypass = memchr::memchr(b'\\', rec).is_some();
            let applies = |r: &PathRule| bypass || r.triggers.iter().all(|t| t.holds(rec));
            if p.path_rules.iter().any(applies) {
                let mut per_path = std::mem::take(&mut self.per_path);
                let mut edits = std::mem::take(&mut self.edits);
                let mut next = std::mem::take(&mut self.out);
                for r in p.path_rules.iter().filter(|r| applies(r)) {
                    // Each rule sees what the rules before it left.
                    let src: &[u8] = if in_tree { &self.tree_out } else { rec };
                    let tree = match tree::Tree::parse(src) {
                        Ok(t) => t,
                        Err(e) => {
                            self.out = next;
                            return self.fail(e);
                        }
                    };
                    per_path.clear();
                    per_path.resize(r.paths.len(), 0);
                    edits.clear();
                    let n = r.edits(&tree, &p.labels[r.label], &mut per_path, &mut edits);
                    self.counts[r.label] += n as u64;
                    if n > 0 && !self.key_touched && !self.key_paths.is_empty() {
                        self.key_touched = r.paths.is_empty()
                            || r.paths.iter().zip(&per_path).any(|(path, hits)| {
                                *hits > 0
                                    && self
                                        .key_paths
                                        .iter()
                                        .any(|k| rule_reaches(r.each.as_deref(), path, k))
                            });
                    }
                    if let Some(t) = &mut self.trace {
                        if r.paths.is_empty() && n > 0 {
                            t.push(Change {
                                path: "(any string)".into(),
                                by: p.labels[r.label].clone(),
                            });
                        }
                        for (path, _) in r.paths.iter().zip(&per_path).filter(|(_, n)| **n > 0) {
                            t.push(Change {
                                path: show_path(r.each.as_deref(), path),
                                by: p.labels[r.label].clone(),
                            });
                        }
                    }
                    if n > 0 {
                        tree::apply(src, &mut edits, &mut next);
                        std::mem::swap(&mut next, &mut self.tree_out);
                        in_tree = true;
                    }
                }
                self.out = next;
                self.per_path = per_path;
                self.edits = edits;
            }
        }
        if p.enabled == 0 && p.pattern_rules.is_empty() {
            if in_tree {
                std::mem::swap(&mut self.out, &mut self.tree_out);
            }
            return in_tree;
        }
        let src: &[u8] = if in_tree { &self.tree_out } else { rec };
        let enabled = p.enabled;
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        let counts = &mut self.counts;
        let found = &mut self.found;
        let trace = &mut self.trace;
        let key_paths = &self.key_paths;
        let touched = &mut self.key_touched;
        let res = scan::rewrite(src, &mut out, |path, tok| {
            let is_key = matches!(tok, scan::Token::Key(_));
            let new = match tok {
                scan::Token::Str(s) => mask_str(
                    &p,
                    enabled,
                    s,
                    true,
                    counts,
                    found,
                    trace.as_mut().map(|t| (t, src, path)),
                ),
                // Keys meet the detectors, not the pattern rules (those are for values).
                scan::Token::Key(k) => mask_str(
                    &p,
                    enabled,
                    k,
                    false,
                    counts,
                    found,
                    trace.as_mut().map(|t| (t, src, path)),
                ),
                scan::Token::Num(n) => {
                    mask_num(&p, n, counts, trace.as_mut().map(|t| (t, src, path)))
                }
            }?;
            // A replaced key renames the path itself: read the fields again, to be safe.
            if !*touched && !key_paths.is_empty() {
                *touched = is_key || key_paths.iter().any(|k| scan_reaches(src, path, k));
            }
            Some(scan::json_string(&new))
        });
        if let Ok(done) = &res {
            let bad = p.invalid_escape();
            self.counts[bad] += done.bad_escapes as u64;
        }
        match res.map(|d| d.changed) {
            Ok(true) => {
                self.out = out;
                true
            }
            Ok(false) => {
                self.out = out;
                if in_tree {
                    std::mem::swap(&mut self.out, &mut self.tree_out);
                }
                in_tree
            }
            Err(e) => {
                self.out = out;
                self.fail(e)
            }
        }
    }

    pub fn output(&self) -> &[u8] {
        &self.out
    }

    /// Fails closed: the whole record is replaced, counted and logged once (without content).
    fn fail(&mut self, why: &str) -> bool {
        self.key_touched = true;
        let u = self.p.unprocessable();
        self.counts[u] += 1;
        if !self.warned {
            self.warned = true;
            tracing::error!(profile = %self.p.name, reason = %why, "a record could not be masked; it was replaced by [REDACTED:unprocessable] (logged once)");
        }
        self.out.clear();
        self.out
            .extend_from_slice(b"{\"message\":\"[REDACTED:unprocessable]\",\"_masking_error\":");
        let _ = serde_json::to_writer(&mut self.out, why);
        self.out.push(b'}');
        true
    }

    /// Adds the tallies to the metrics (once per chunk, not per record).
    pub fn flush_counts(&mut self) {
        for (c, n) in self.counters.iter().zip(self.counts.iter_mut()) {
            if *n > 0 {
                c.inc_by(std::mem::take(n));
            }
        }
    }

    pub fn counts(&self) -> &[u64] {
        &self.counts
    }
}

type Trace<'a> = Option<(&'a mut Vec<Change>, &'a [u8], &'a [scan::El])>;

fn mask_str(
    p: &Profile,
    enabled: u16,
    s: &str,
    patterns: bool,
    counts: &mut [u64],
    found: &mut Vec<Found>,
    mut trace: Trace<'_>,
) -> Option<String> {
    let mut cur: Option<String> = None;
    let rules = if patterns { &p.pattern_rules[..] } else { &[] };
    for (label, re, action) in rules {
        let text = cur.as_deref().unwrap_or(s);
        if re.is_match(text) {
            let mut n = 0;
            let new = re
                .replace_all(text, |c: &regex::Captures<'_>| {
                    n += 1;
                    action.replace_text(&c[0], &p.labels[*label])
                })
                .into_owned();
            counts[*label] += n;
            note(&mut trace, &p.labels[*label]);
            cur = Some(new);
        }
    }
    let text = cur.as_deref().unwrap_or(s);
    detect::find(text, enabled, found);
    if found.is_empty() {
        return cur;
    }
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for f in found.iter() {
        let Some((action, label)) = &p.detectors[f.kind as usize] else {
            continue;
        };
        out.push_str(&text[last..f.start]);
        out.push_str(&action.replace_text(&text[f.start..f.end], f.kind.name()));
        last = f.end;
        counts[*label] += 1;
        note(&mut trace, f.kind.name());
    }
    out.push_str(&text[last..]);
    Some(out)
}

fn mask_num(p: &Profile, n: &[u8], counts: &mut [u64], mut trace: Trace<'_>) -> Option<String> {
    let (action, label) = p.detectors[Kind::CreditCard as usize].as_ref()?;
    if !detect::number_is_card(n) {
        return None;
    }
    counts[*label] += 1;
    note(&mut trace, "credit_card");
    Some(action.replace_text(std::str::from_utf8(n).ok()?, "credit_card"))
}

fn note(trace: &mut Trace<'_>, by: &str) {
    if let Some((t, json, path)) = trace {
        t.push(Change {
            path: scan::path_string(json, path),
            by: by.to_string(),
        });
    }
}

fn show_path(each: Option<&[rules::Seg]>, path: &[rules::Seg]) -> String {
    let mut s = String::new();
    for seg in each.unwrap_or_default().iter().chain(path) {
        match seg {
            rules::Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            rules::Seg::Any => s.push_str("[*]"),
            rules::Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// Whether a rule's path (`each` then `path`) and a watched dotted path meet: one is a
/// prefix of the other. Watched paths go through objects only, so an index never meets one;
/// a wildcard meets any key.
fn rule_reaches(each: Option<&[rules::Seg]>, path: &[rules::Seg], key: &[String]) -> bool {
    let full = each.unwrap_or_default().iter().chain(path);
    for (seg, k) in full.zip(key) {
        match seg {
            rules::Seg::Key(s) if s == k => {}
            rules::Seg::Any => {}
            _ => return false,
        }
    }
    true
}

/// Whether the scanner's current path (a string value) is on or under a watched path. An
/// escaped key is compared conservatively: it counts as meeting.
fn scan_reaches(src: &[u8], path: &[scan::El], key: &[String]) -> bool {
    if path.len() < key.len() {
        return false;
    }
    path.iter().zip(key).all(|(el, k)| match el {
        scan::El::Key(a, b) => {
            let raw = &src[*a..*b];
            raw.contains(&b'\\') || raw == k.as_bytes()
        }
        scan::El::Index(_) => false,
    })
}

#[cfg(test)]
#[path = "mod_tests.rs"]
mod tests;
