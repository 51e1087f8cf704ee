//! Object key templates: `{source}/%Y/%m/%d/%H/{batch_id}.ndjson.gz`.
//!
//! Placeholders: `{source}`, `{sink}`, `{batch_id}`, `{host}` and record fields (`{account_id}`,
//! `{context.user_id}`); strftime specifiers in the literal text take the batch's first record
//! time. Field values are sanitised so that a record can never steer a key outside its prefix.

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, Utc};
use std::fmt::Write as _;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyTemplateError {
    #[error("unclosed `{{` at byte {0}")]
    Unclosed(usize),
    #[error("empty placeholder `{{}}`")]
    Empty,
    #[error("invalid strftime specifier in `{0}`")]
    BadTime(String),
    #[error("the key must contain `{{batch_id}}`, or batches would overwrite each other (a key without it names one object per record: set batch.max_records = 1)")]
    NoBatchId,
    #[error("append blobs are shared by the batches of a key: remove `{{batch_id}}` (roll-over numbers the blobs)")]
    SharedWithBatchId,
    #[error("the key must be a relative path without `..` or empty segments")]
    NotRelative,
    #[error("the key holds a control character (a newline, a tab): object names cannot")]
    Control,
}

#[derive(Debug, Clone)]
enum Part {
    /// Literal text; `time` when it holds strftime specifiers.
    Lit {
        text: String,
        time: bool,
    },
    Source,
    Sink,
    BatchId,
    Host,
    Field(usize),
}

/// A parsed key template. Parsing validates it once; rendering cannot fail.
#[derive(Debug, Clone)]
pub struct KeyTemplate {
    raw: String,
    parts: Vec<Part>,
    fields: Vec<String>,
    granularity: Option<i64>,
}

/// The values a key is rendered from. `fields` are aligned with [`KeyTemplate::fields`].
pub struct KeyContext<'a> {
    pub source: &'a str,
    pub sink: &'a str,
    pub batch_id: &'a str,
    pub host: &'a str,
    pub fields: &'a [Option<&'a str>],
    pub time: DateTime<Utc>,
}

impl KeyTemplate {
    /// A key naming one object per batch: it must contain `{batch_id}`.
    pub fn parse(raw: &str) -> Result<Self, KeyTemplateError> {
        Self::parse_with(raw, Some(true))
    }

    /// A key naming an object many batches append to: it must not contain `{batch_id}`.
    pub fn parse_shared(raw: &str) -> Result<Self, KeyTemplateError> {
        Self::parse_with(raw, Some(false))
    }

    /// A key for batches of one record each: `{batch_id}` is optional, since the record's
    /// own fields can name its object (written never-overwrite by the sinks).
    pub fn parse_per_record(raw: &str) -> Result<Self, KeyTemplateError> {
        Self::parse_with(raw, None)
    }

    /// Whether rendered keys differ per batch.
    pub fn has_batch_id(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::BatchId))
    }

    /// `per_batch`: `Some(true)` the key must hold `{batch_id}`, `Some(false)` it must not,
    /// `None` either.
    fn parse_with(raw: &str, per_batch: Option<bool>) -> Result<Self, KeyTemplateError> {
        let mut parts = Vec::new();
        let mut fields: Vec<String> = Vec::new();
        let mut lit = String::new();
        let mut rest = raw;
        let mut pos = 0;
        while let Some(open) = rest.find('{') {
            lit.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or(KeyTemplateError::Unclosed(pos + open))?;
            let name = after[..close].trim();
            if name.is_empty() {
                return Err(KeyTemplateError::Empty);
            }
            if !lit.is_empty() {
                parts.push(literal(std::mem::take(&mut lit))?);
            }
            parts.push(match name {
                "source" => Part::Source,
                "sink" => Part::Sink,
                "batch_id" => Part::BatchId,
                "host" => Part::Host,
                field => {
                    let idx = match fields.iter().position(|f| f == field) {
                        Some(i) => i,
                        None => {
                            fields.push(field.to_string());
                            fields.len() - 1
                        }
                    };
                    Part::Field(idx)
                }
            });
            pos += open + close + 2;
            rest = &after[close + 1..];
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(literal(lit)?);
        }
        let has_id = parts.iter().any(|p| matches!(p, Part::BatchId));
        if per_batch == Some(true) && !has_id {
            return Err(KeyTemplateError::NoBatchId);
        }
        if per_batch == Some(false) && has_id {
            return Err(KeyTemplateError::SharedWithBatchId);
        }
        if raw.starts_with('/')
            || raw
                .split('/')
                .any(|s| s.is_empty() || s == ".." || s == ".")
        {
            return Err(KeyTemplateError::NotRelative);
        }
        if raw.chars().any(char::is_control) {
            return Err(KeyTemplateError::Control);
        }
        let granularity = parts
            .iter()
            .filter_map(|p| match p {
                Part::Lit { text, time: true } => time_granularity(text),
                _ => None,
            })
            .min();
        Ok(KeyTemplate {
            raw: raw.to_string(),
            parts,
            fields,
            granularity,
        })
    }

    /// The record fields the key uses, in placeholder order. Batches are partitioned by them.
    pub fn fields(&self) -> &[String] {
        &self.fields
    }

    /// The finest time unit the key shows, in seconds (3600 for `%H`), if it shows time at all.
    /// Batches are partitioned by `time / granularity` so that one object never spans two keys.
    pub fn time_granularity(&self) -> Option<i64> {
        self.granularity
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The directories every key starts with (before the first placeholder), `""` when the
    /// first component already varies: where this sink's objects are, for a listing.
    pub fn static_prefix(&self) -> &str {
        let fixed = self
            .raw
            .find(['{', '%'])
            .map_or(&self.raw[..], |i| &self.raw[..i]);
        fixed.rfind('/').map_or("", |i| &fixed[..=i])
    }

    pub fn render(&self, ctx: &KeyContext<'_>) -> String {
        let mut out = String::with_capacity(self.raw.len() + 48);
        for part in &self.parts {
            match part {
                Part::Lit { text, time: false } => out.push_str(text),
                Part::Lit { text, time: true } => {
                    // Validated at parse time, so formatting cannot fail.
                    let _ = write!(out, "{}", ctx.time.format(text));
                }
                Part::Source => push_clean(&mut out, ctx.source),
                Part::Sink => push_clean(&mut out, ctx.sink),
                Part::BatchId => push_clean(&mut out, ctx.batch_id),
                Part::Host => push_clean(&mut out, ctx.host),
                Part::Field(i) => match ctx.fields.get(*i).copied().flatten() {
                    Some(v) => push_clean(&mut out, v),
                    None => out.push_str("_unknown"),
                },
            }
        }
        out
    }
}

impl KeyTemplate {
    /// A regular expression (source text) that matches the keys this template renders, for
    /// reading an archive back: `%Y %m %d %H %M` are captured as groups `Y m d H M`, the
    /// `n`-th field of [`Self::fields`] as `f<n>` (its first place), `{source}` as `source`.
    /// Other time specifiers match any text within a segment. Anchored at both ends; an
    /// encrypted object's suffix is the caller's.
    pub fn pattern(&self) -> String {
        let mut out = String::from("^");
        let mut seen: Vec<String> = Vec::new();
        let mut group = |name: String, body: &str, out: &mut String| {
            if seen.contains(&name) {
                out.push_str(&format!("(?:{body})"));
            } else {
                out.push_str(&format!("(?P<{name}>{body})"));
                seen.push(name);
            }
        };
        const VALUE: &str = "[A-Za-z0-9._@+=-]+";
        for part in &self.parts {
            match part {
                Part::Lit { text, time: false } => out.push_str(&escape(text)),
                Part::Lit { text, time: true } => {
                    let mut chars = text.chars();
                    while let Some(c) = chars.next() {
                        if c != '%' {
                            out.push_str(&escape(&c.to_string()));
                            continue;
                        }
                        match chars.next() {
                            Some('Y') => group("Y".into(), "[0-9]{4}", &mut out),
                            Some(c @ ('m' | 'd' | 'H' | 'M')) => {
                                group(c.to_string(), "[0-9]{2}", &mut out)
                            }
                            Some('%') => out.push('%'),
                            _ => out.push_str("[^/]*?"),
                        }
                    }
                }
                Part::Source => group("source".into(), VALUE, &mut out),
                Part::Field(i) => group(format!("f{i}"), VALUE, &mut out),
                Part::Sink | Part::BatchId | Part::Host => out.push_str(VALUE),
            }
        }
        out.push('$');
        out
    }
}

/// `text` as a regular expression that matches it literally.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn literal(text: String) -> Result<Part, KeyTemplateError> {
    if !text.contains('%') {
        return Ok(Part::Lit { text, time: false });
    }
    if StrftimeItems::new(&text).any(|i| matches!(i, Item::Error)) {
        return Err(KeyTemplateError::BadTime(text));
    }
    Ok(Part::Lit { text, time: true })
}

fn time_granularity(text: &str) -> Option<i64> {
    let mut best: Option<i64> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            continue;
        }
        // Skip padding modifiers such as `%-d`.
        let mut spec = chars.next();
        while matches!(spec, Some('-' | '_' | '0' | '^' | '#')) {
            spec = chars.next();
        }
        let g = match spec {
            Some('S' | 's' | 'T' | 'X' | 'c' | '+' | 'f') => 1,
            Some('M' | 'R') => 60,
            Some('H' | 'I' | 'k' | 'l' | 'p' | 'P') => 3600,
            Some('d' | 'e' | 'j' | 'F' | 'D' | 'x' | 'a' | 'A' | 'u' | 'w') => 86_400,
            // Months and years are not fixed lengths; partitioning by day keeps keys exact.
            Some('m' | 'b' | 'B' | 'h' | 'y' | 'Y' | 'C' | 'G' | 'g' | 'U' | 'W' | 'V') => 86_400,
            _ => continue,
        };
        best = Some(best.map_or(g, |b: i64| b.min(g)));
    }
    best
}

/// A value as a key shows it: [`push_clean`]'s characters, at most 128 of them.
pub fn clean(value: &str) -> String {
    let mut out = String::with_capacity(value.len().min(128));
    push_clean(&mut out, value);
    out
}

/// Whether `name` is a value as a key shows it, now or as earlier versions wrote it (they
/// kept `=`): key ledgers, receipts and archives written then must stay readable.
pub fn is_clean(name: &str) -> bool {
    let now = name.replace('=', "_");
    !name.is_empty() && clean(&now) == now
}

/// Appends a value, keeping only characters that are safe in every object store and file system.
fn push_clean(out: &mut String, value: &str) {
    let start = out.len();
    for c in value.chars().take(128) {
        // No `=`: in a Hive-style segment (`tenant={account_id}`) a value holding one would
        // be read by engines as another name=value pair, and its rows lost to partition pruning.
        if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | '+') {
            out.push(c);
        } else {
            out.push('_');
        }
    }
    let seg = &out[start..];
    if seg.is_empty() || seg.chars().all(|c| c == '.') {
        out.truncate(start);
        out.push('_');
        return;
    }
    // A value never forms a name logferry keeps for itself (the ledger, digests, receipts, a
    // sidecar, a hidden or temp file): `verify` must be able to tell data from its own files.
    let lower = seg.to_ascii_lowercase();
    if seg.starts_with('.') || RESERVED.contains(&lower.as_str()) {
        out.insert(start, '_');
    } else if lower.ends_with(".meta.json") {
        out.push('_');
    }
}

/// Names logferry writes its own files under.
const RESERVED: [&str; 3] = ["_keys", "_digests", "_receipts"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_static_prefix_is_the_directories_before_the_first_placeholder() {
        let p = |k: &str| KeyTemplate::parse(k).unwrap().static_prefix().to_string();
        assert_eq!(p("{source}/%Y/{batch_id}.gz"), "");
        assert_eq!(p("logs/audit/{source}/{batch_id}.gz"), "logs/audit/");
        assert_eq!(p("logs/x-%Y/{batch_id}.gz"), "logs/");
    }
    use chrono::TimeZone;

    fn ctx<'a>(fields: &'a [Option<&'a str>]) -> KeyContext<'a> {
        KeyContext {
            source: "jobs",
            sink: "archive",
            batch_id: "b1",
            host: "h",
            fields,
            time: Utc.with_ymd_and_hms(2026, 3, 4, 5, 6, 7).unwrap(),
        }
    }

    #[test]
    fn renders_time_and_fields() {
        let t =
            KeyTemplate::parse("{source}/{account_id}/%Y/%m/%d/%H/{batch_id}.ndjson.gz").unwrap();
        assert_eq!(t.fields(), ["account_id"]);
        assert_eq!(t.time_granularity(), Some(3600));
        assert_eq!(
            t.render(&ctx(&[Some("acme")])),
            "jobs/acme/2026/03/04/05/b1.ndjson.gz"
        );
    }

    #[test]
    fn field_values_cannot_escape_the_prefix() {
        let t = KeyTemplate::parse("{a}/{batch_id}").unwrap();
        assert_eq!(t.render(&ctx(&[Some("../../etc")])), "_.._.._etc/b1");
        assert_eq!(t.render(&ctx(&[Some("..")])), "_/b1");
        assert_eq!(t.render(&ctx(&[Some("")])), "_/b1");
        assert_eq!(t.render(&ctx(&[None])), "_unknown/b1");
        assert_eq!(t.render(&ctx(&[Some("a%Yb")])), "a_Yb/b1");
        // `=` would read as another partition in a Hive-style segment.
        let h = KeyTemplate::parse("tenant={a}/{batch_id}").unwrap();
        assert_eq!(h.render(&ctx(&[Some("x=1")])), "tenant=x_1/b1");
        // What earlier versions wrote stays a name logferry could have made.
        assert!(is_clean("x=1") && is_clean("x_1") && !is_clean("x/1") && !is_clean(""));
        // Values that would form logferry's own names are escaped.
        for (v, want) in [
            ("_digests", "__digests/b1"),
            ("_KEYS", "__KEYS/b1"),
            ("_receipts", "__receipts/b1"),
            (".hidden", "_.hidden/b1"),
            (".logferry-tmp.x", "_.logferry-tmp.x/b1"),
            ("x.meta.json", "x.meta.json_/b1"),
        ] {
            assert_eq!(t.render(&ctx(&[Some(v)])), want);
            assert_eq!(clean(v), want.trim_end_matches("/b1"));
        }
    }

    #[test]
    fn the_pattern_names_the_time_and_field_parts() {
        let t = KeyTemplate::parse(
            "tenant={account_id}/year=%Y/month=%m/day=%d/hour=%H/{batch_id}.parquet",
        )
        .unwrap();
        assert_eq!(
            t.pattern(),
            "^tenant=(?P<f0>[A-Za-z0-9._@+=-]+)/year=(?P<Y>[0-9]{4})/month=(?P<m>[0-9]{2})/day=(?P<d>[0-9]{2})/hour=(?P<H>[0-9]{2})/[A-Za-z0-9._@+=-]+\\.parquet$"
        );
        let t = KeyTemplate::parse("{source}/%Y/%m/%Y%m%d-%j/{batch_id}.ndjson.gz").unwrap();
        assert_eq!(
            t.pattern(),
            "^(?P<source>[A-Za-z0-9._@+=-]+)/(?P<Y>[0-9]{4})/(?P<m>[0-9]{2})/(?:[0-9]{4})(?:[0-9]{2})(?P<d>[0-9]{2})\\-[^/]*?/[A-Za-z0-9._@+=-]+\\.ndjson\\.gz$"
        );
    }

    #[test]
    fn rejects_keys_without_batch_id_or_relative_path() {
        assert_eq!(
            KeyTemplate::parse("{source}/x").unwrap_err(),
            KeyTemplateError::NoBatchId
        );
        assert_eq!(
            KeyTemplate::parse("/abs/{batch_id}").unwrap_err(),
            KeyTemplateError::NotRelative
        );
        assert_eq!(
            KeyTemplate::parse("a/../{batch_id}").unwrap_err(),
            KeyTemplateError::NotRelative
        );
        for empty in ["a//{batch_id}", "{batch_id}/", "a/{source}//{batch_id}.gz"] {
            assert_eq!(
                KeyTemplate::parse(empty).unwrap_err(),
                KeyTemplateError::NotRelative,
                "{empty}"
            );
        }
        assert_eq!(
            KeyTemplate::parse("a/{batch_id}\n.gz").unwrap_err(),
            KeyTemplateError::Control
        );
        assert_eq!(
            KeyTemplate::parse_shared("a/\tday.ndjson").unwrap_err(),
            KeyTemplateError::Control
        );
        assert!(matches!(
            KeyTemplate::parse("{batch_id").unwrap_err(),
            KeyTemplateError::Unclosed(0)
        ));
        assert!(matches!(
            KeyTemplate::parse("%Q/{batch_id}").unwrap_err(),
            KeyTemplateError::BadTime(_)
        ));
    }

    #[test]
    fn granularity_is_the_finest_unit() {
        let t = KeyTemplate::parse("%Y/%m/%d/%H%M/{batch_id}").unwrap();
        assert_eq!(t.time_granularity(), Some(60));
        let t = KeyTemplate::parse("{source}/{batch_id}").unwrap();
        assert_eq!(t.time_granularity(), None);
    }
}
