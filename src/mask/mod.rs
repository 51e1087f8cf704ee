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
            key_touched: false,
            trace: None,
        }
    }

    /// The paths whose values the pipeline takes from each record: after masking, it reads
    /// them again only when [`Masker::key_fields_changed`] says a change reached one, so the
    /// masker hands back what it saw instead of every masked record being parsed twice.
    pub fn watch_fields(&mut self, paths: &[String]) {
        self.key_paths = paths
            .iter()
            .map(|p| p.split('.').map(str::to_string).collect())
            .collect();
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
mod tests {
    use super::*;

    fn masker(profile: &str) -> Masker {
        let text = format!(
            "[sources.s]\ninclude = [\"/x/*.log\"]\nsinks = [\"d\"]\nmasking = \"p\"\n[sinks.d]\ntype = \"directory\"\npath = \"/x\"\n[masking.p]\n{profile}"
        );
        let env = |k: &str| (k == "K").then(|| "0123456789abcdef0123456789abcdef".to_string());
        let cfg = crate::config::load_str(std::path::Path::new("/x/c.toml"), &text, &env)
            .unwrap_or_else(|e| panic!("{e}"));
        Masker::new(cfg.masking["p"].clone(), Vec::new())
    }

    fn run(m: &mut Masker, rec: &str) -> String {
        if m.mask(rec.as_bytes()) {
            String::from_utf8(m.output().to_vec()).unwrap()
        } else {
            rec.to_string()
        }
    }

    #[test]
    fn the_masker_says_whether_a_change_reached_a_watched_field() {
        let mut m = masker(
            r#"detectors = ["email"]
[[masking.p.rules]]
name = "steps"
each = "lines[*]"
paths = ["input"]
action = "redact"
[[masking.p.rules]]
name = "acct"
paths = ["meta.account"]
action = "redact"
"#,
        );
        m.watch_fields(&[
            "account_id".into(),
            "user.email".into(),
            "meta.account.id".into(),
        ]);
        let cases = [
            // A step's input and an email elsewhere: the watched fields are as decoded.
            (
                r#"{"account_id":"a1","lines":[{"input":"x"}],"note":"bob@example.com"}"#,
                false,
            ),
            // The detector masks a watched value.
            (
                r#"{"account_id":"a1","user":{"email":"bob@example.com"}}"#,
                true,
            ),
            // A rule on an object above a watched path.
            (r#"{"account_id":"a1","meta":{"account":{"id":"7"}}}"#, true),
            // Nothing changed at all.
            (r#"{"account_id":"a1"}"#, false),
            // A key that holds a secret is replaced: paths may have changed.
            (r#"{"account_id":"a1","bob@example.com":1}"#, true),
        ];
        for (rec, want) in cases {
            m.mask(rec.as_bytes());
            assert_eq!(m.key_fields_changed(), want, "{rec}");
        }
    }

    #[test]
    fn rules_run_in_order_then_detectors() {
        let mut m = masker(
            r#"detectors = ["email"]
[[masking.p.rules]]
name = "first"
paths = ["a"]
action = "replace"
value = "secret-2 bob@example.com"
[[masking.p.rules]]
name = "second"
paths = ["a"]
pattern = "secret"
action = "redact"
"#,
        );
        assert_eq!(
            run(&mut m, r#"{"a":"x","b":1}"#),
            r#"{"a":"[REDACTED:second]-2 [REDACTED:email]","b":1}"#
        );
        assert_eq!(m.counts(), &[1, 1, 1, 0, 0]);
    }

    #[test]
    fn a_pattern_rule_before_a_field_rule_keeps_its_place() {
        let mut m = masker(
            r#"detectors = []
[[masking.p.rules]]
name = "first"
pattern = "secret"
[[masking.p.rules]]
name = "second"
paths = ["a"]
when = { path = "a", matches = "REDACTED:first" }
action = "replace"
value = "seen after first"
[[masking.p.rules]]
name = "third"
pattern = "seen"
action = "replace"
value = "SEEN"
"#,
        );
        assert_eq!(
            run(&mut m, r#"{"a":"my secret","b":["secret"]}"#),
            r#"{"a":"SEEN after first","b":["[REDACTED:first]"]}"#
        );
        assert_eq!(m.counts(), &[2, 1, 1, 0, 0]);
    }

    #[test]
    fn a_record_that_cannot_be_processed_is_replaced_whole() {
        let mut m = masker("detectors = [\"email\"]\n");
        let out = run(&mut m, r#"{"a":"bob@example.com""#);
        assert!(
            out.starts_with(r#"{"message":"[REDACTED:unprocessable]","_masking_error":"#),
            "{out}"
        );
        assert!(!out.contains("bob"));
        assert_eq!(*m.counts().last().unwrap(), 1);
    }

    #[test]
    fn unchanged_records_are_left_as_they_came() {
        let mut m = masker("detectors = [\"email\", \"credit_card\"]\n");
        assert!(!m.mask(br#"{"id":"ORD-1","n":12345,"t":"2026-11-23T10:00:00Z"}"#));
    }

    #[test]
    fn escapes_cannot_hide_a_secret_or_a_rule_key() {
        let mut m = masker(
            r#"detectors = ["email"]
[[masking.p.rules]]
paths = ["pin"]
action = "remove"
"#,
        );
        let out = run(
            &mut m,
            r#"{"note":"bob\u0040example.com","p\u0069n":"1234","k":1}"#,
        );
        assert_eq!(out, r#"{"note":"[REDACTED:email]","k":1}"#);
    }

    #[test]
    fn keys_that_hold_secrets_are_replaced_and_collisions_numbered() {
        let mut m = masker("detectors = [\"email\", \"credit_card\"]\n");
        assert_eq!(
            run(
                &mut m,
                r#"{"4111111111111111":"x","users":{"alice@example.com":{"n":1},"bob@example.com":2},"ok":1}"#
            ),
            r#"{"[REDACTED:credit_card]":"x","users":{"[REDACTED:email]":{"n":1},"[REDACTED:email]#2":2},"ok":1}"#
        );
    }

    #[test]
    fn hmac_keys_keep_joins() {
        let mut m = masker(
            "detectors = [\"email\"]\n[masking.p.detector.email]\naction = \"hmac\"\nkey_env = \"K\"\n",
        );
        let a = run(&mut m, r#"{"users":{"alice@example.com":1}}"#);
        let b = run(&mut m, r#"{"who":"alice@example.com"}"#);
        let pseudonym = b.split('"').nth(3).unwrap().to_string();
        assert_eq!(pseudonym.len(), 64, "{b}");
        assert!(a.contains(&pseudonym), "{a} / {b}");
        assert!(!a.contains("alice"));
    }

    #[test]
    fn card_numbers_in_every_json_spelling_are_masked() {
        let mut m = masker("detectors = [\"credit_card\"]\n");
        for n in [
            "4111111111111111.0",
            "-4111111111111111",
            "4.111111111111111e15",
            "4111111111111111e0",
        ] {
            let out = run(&mut m, &format!(r#"{{"account_id":{n},"amount":12.5}}"#));
            assert_eq!(
                out, r#"{"account_id":"[REDACTED:credit_card]","amount":12.5}"#,
                "{n}"
            );
        }
    }

    #[test]
    fn a_lone_surrogate_is_replaced_and_the_rest_still_masked() {
        let mut m = masker("detectors = [\"email\"]\n");
        let out = run(
            &mut m,
            r#"{"a":"bad\ud800","b":"bob@example.com","c":"ok"}"#,
        );
        assert_eq!(
            out,
            "{\"a\":\"bad\u{fffd}\",\"b\":\"[REDACTED:email]\",\"c\":\"ok\"}"
        );
        let n = m.counts().len();
        assert_eq!(m.counts()[n - 2], 1, "invalid_escape counted");
        assert_eq!(m.counts()[n - 1], 0, "not unprocessable");
    }
}
