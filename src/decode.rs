//! Turning a line into a record: JSON validated and passed through as its own bytes, or wrapped.
//!
//! A JSON line is parsed once, without building a tree: the parse validates it, checks it is an
//! object and copies out only the fields the pipeline needs (key template fields, the timestamp
//! field). The record that moves on is the line itself, so a valid line costs one validation and
//! one copy into its batch.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::de;

use crate::config::Format;
pub use crate::fields::Fields;
pub use crate::fields::Values;

pub struct Decoder {
    format: Format,
    id_prefix: Option<Vec<u8>>,
    fields: Fields,
    scratch: Vec<u8>,
    /// A line that is not one JSON object leaves as `[REDACTED:unparsable]` instead of as its
    /// text: set when the source's masking profile has field rules, which could not see into it.
    pub redact_unparsable: bool,
}

/// What decoding a line produced, besides the record bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Flags {
    pub parse_error: bool,
    pub invalid_utf8: bool,
    /// The timestamp field is there but is no time logferry understands.
    pub time_unparsed: bool,
}

impl Decoder {
    /// `fields` are extracted into slots `0..fields.len()`; `timestamp_field`, if any, into the
    /// slot after them (or the slot of an identical field).
    pub fn new(
        format: Format,
        record_id: Option<&str>,
        fields: &[String],
        timestamp_field: Option<&str>,
    ) -> Decoder {
        let id_prefix = record_id.map(|f| {
            let mut p = b"{".to_vec();
            let _ = serde_json::to_writer(&mut p, f);
            p.extend_from_slice(b":\"");
            p
        });
        Decoder {
            format,
            id_prefix,
            fields: Fields::new(fields, timestamp_field),
            scratch: Vec::with_capacity(4096),
            redact_unparsable: false,
        }
    }

    /// Reads record times in the source's `timestamp_format` before the built-in spellings.
    pub fn with_time_format(mut self, format: Option<&str>) -> Decoder {
        self.fields.set_time_format(format);
        self
    }

    /// A second extractor for the same fields, for records that masking changed.
    pub fn extractor(&self) -> Fields {
        self.fields.clone()
    }

    /// Decodes one line (without its newline). `truncated_from` is the line's full length when
    /// it was cut at `max_line_bytes`; `id` is (file fingerprint, byte offset) for `record_id`.
    /// The record's bytes borrow the line or the decoder's scratch buffer.
    pub fn decode<'a>(
        &'a mut self,
        line: &'a [u8],
        truncated_from: Option<usize>,
        id: (u64, u64),
    ) -> Decoded<'a> {
        let mut flags = Flags::default();
        let line = trim_end(line);
        // A byte-order mark (files written by Windows tools) is not part of the record.
        let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        let passthrough = self.fill(line, truncated_from, id, &mut flags);
        let time = self.fields.time();
        flags.time_unparsed = time.is_none() && self.fields.time_value().is_some();
        Decoded {
            record: if passthrough { line } else { &self.scratch },
            flags,
            values: self.fields.values(),
            time,
            time_raw: self.fields.time_value(),
        }
    }

    /// Returns true when the line itself is the record; otherwise the record is in `scratch`.
    fn fill(
        &mut self,
        line: &[u8],
        truncated_from: Option<usize>,
        id: (u64, u64),
        flags: &mut Flags,
    ) -> bool {
        self.fields.clear();
        let text = match std::str::from_utf8(line) {
            Ok(s) => std::borrow::Cow::Borrowed(s),
            Err(_) => {
                flags.invalid_utf8 = true;
                String::from_utf8_lossy(line)
            }
        };
        if self.format != Format::Json || truncated_from.is_some() {
            wrap(
                &mut self.scratch,
                self.id_prefix.as_deref(),
                id,
                &text,
                None,
                truncated_from,
            );
            return false;
        }
        let t = text.trim_start();
        let res = if t.starts_with('{') {
            let mut de = serde_json::Deserializer::from_str(t);
            self.fields.parse(&mut de).and_then(|_| de.end())
        } else {
            Err(de::Error::custom("not a JSON object"))
        };
        match res {
            Ok(()) if self.id_prefix.is_none() && !flags.invalid_utf8 => true,
            Ok(()) => {
                self.scratch.clear();
                if let Some(prefix) = &self.id_prefix {
                    write_id(&mut self.scratch, prefix, id);
                    let rest = t[1..].trim_start();
                    if !rest.starts_with('}') {
                        self.scratch.push(b',');
                    }
                    self.scratch.extend_from_slice(rest.as_bytes());
                } else {
                    self.scratch.extend_from_slice(t.as_bytes());
                }
                false
            }
            Err(e) => {
                flags.parse_error = true;
                self.fields.clear();
                // serde_json's messages name a position and what was expected, never content.
                let err = e.to_string();
                let text: &str = if self.redact_unparsable {
                    "[REDACTED:unparsable]"
                } else {
                    &text
                };
                wrap(
                    &mut self.scratch,
                    self.id_prefix.as_deref(),
                    id,
                    text,
                    Some(&err),
                    None,
                );
                false
            }
        }
    }
}

/// A decoded record and what was learnt from it.
pub struct Decoded<'a> {
    pub record: &'a [u8],
    pub flags: Flags,
    pub values: &'a Values,
    pub time: Option<DateTime<Utc>>,
    /// The timestamp field's text, when the record has one.
    pub time_raw: Option<&'a str>,
}

fn trim_end(mut line: &[u8]) -> &[u8] {
    while let [rest @ .., b'\r' | b' ' | b'\t'] = line {
        line = rest;
    }
    line
}

fn write_id(out: &mut Vec<u8>, prefix: &[u8], (fp, offset): (u64, u64)) {
    out.extend_from_slice(prefix);
    let mut buf = String::with_capacity(40);
    let _ = write!(buf, "{fp:016x}-{offset}\"");
    out.extend_from_slice(buf.as_bytes());
}

/// `{"message": <line>, "_parse_error": ...}` or `{"message": ..., "_truncated_from": N}`.
fn wrap(
    out: &mut Vec<u8>,
    id_prefix: Option<&[u8]>,
    id: (u64, u64),
    text: &str,
    parse_error: Option<&str>,
    truncated_from: Option<usize>,
) {
    out.clear();
    match id_prefix {
        Some(p) => {
            write_id(out, p, id);
            out.extend_from_slice(b",\"message\":");
        }
        None => out.extend_from_slice(b"{\"message\":"),
    }
    let _ = serde_json::to_writer(&mut *out, text);
    if let Some(e) = parse_error {
        out.extend_from_slice(b",\"_parse_error\":");
        let _ = serde_json::to_writer(&mut *out, e);
    }
    if let Some(n) = truncated_from {
        out.extend_from_slice(format!(",\"_truncated_from\":{n}").as_bytes());
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(fields: &[&str], ts: Option<&str>, id: Option<&str>) -> Decoder {
        let f: Vec<String> = fields.iter().map(|s| s.to_string()).collect();
        Decoder::new(Format::Json, id, &f, ts)
    }

    #[test]
    fn valid_object_passes_through_and_fields_are_extracted() {
        let mut d = dec(&["account_id", "context.user_id"], Some("ts"), None);
        let line = br#"{"ts":"2026-01-02T03:04:05Z","account_id":42,"context":{"user_id":"u\"1","x":[1]},"z":{"a":1}}"#;
        let r = d.decode(line, None, (0, 0));
        assert_eq!(r.record, line);
        assert_eq!(r.flags, Flags::default());
        assert_eq!(r.values.get(0), Some("42"));
        assert_eq!(r.values.get(1), Some("u\"1"));
        assert_eq!(r.time.unwrap().to_rfc3339(), "2026-01-02T03:04:05+00:00");
    }

    #[test]
    fn missing_and_non_scalar_fields_are_absent() {
        let mut d = dec(&["a", "b.c"], None, None);
        let r = d.decode(br#"{"a":{"x":1},"b":"str"}"#, None, (0, 0));
        assert_eq!(r.values.get(0), None);
        assert_eq!(r.values.get(1), None);
    }

    #[test]
    fn non_json_and_non_object_lines_are_wrapped() {
        let mut d = dec(&[], None, None);
        for line in [
            &b"plain text"[..],
            b"[1,2]",
            b"{\"a\":1} trailing",
            b"{\"a\":",
        ] {
            let r = d.decode(line, None, (0, 0));
            assert!(r.flags.parse_error);
            let v: serde_json::Value = serde_json::from_slice(r.record).unwrap();
            assert_eq!(v["message"], std::str::from_utf8(line).unwrap());
            assert!(v["_parse_error"].is_string());
        }
    }

    #[test]
    fn almost_json_is_redacted_whole_when_field_rules_could_not_see_into_it() {
        let mut d = dec(&[], None, None);
        d.redact_unparsable = true;
        for line in [
            &br#"{"password":"hunter2","x":1,}"#[..],
            br#"{"password":NaN}"#,
            br#"{'password':'hunter2'}"#,
            br#"{"password":"hunter2"}{"b":1}"#,
            br#"["password","hunter2"]"#,
        ] {
            let r = d.decode(line, None, (0, 0));
            assert!(r.flags.parse_error);
            let v: serde_json::Value = serde_json::from_slice(r.record).unwrap();
            assert_eq!(v["message"], "[REDACTED:unparsable]");
            assert!(v["_parse_error"].is_string());
            assert!(!String::from_utf8_lossy(r.record).contains("hunter2"));
        }
    }

    #[test]
    fn a_byte_order_mark_is_stripped() {
        let mut d = dec(&["a"], None, None);
        let r = d.decode(b"\xEF\xBB\xBF{\"a\":\"x\"}", None, (0, 0));
        assert!(!r.flags.parse_error);
        assert_eq!(r.record, br#"{"a":"x"}"#);
        assert_eq!(r.values.get(0), Some("x"));
    }

    #[test]
    fn invalid_utf8_is_replaced_and_flagged() {
        let mut d = dec(&[], None, None);
        let r = d.decode(b"{\"a\":\"x\xff\"}", None, (0, 0));
        assert!(r.flags.invalid_utf8);
        let v: serde_json::Value = serde_json::from_slice(r.record).unwrap();
        assert_eq!(v["a"], "x\u{fffd}");
    }

    #[test]
    fn record_id_is_added_to_objects_and_wrapped_lines() {
        let mut d = dec(&[], None, Some("_id"));
        let rec = d.decode(b"{\"a\":1}", None, (0xab, 77)).record;
        assert_eq!(rec, b"{\"_id\":\"00000000000000ab-77\",\"a\":1}");
        let rec = d.decode(b"{ }", None, (1, 2)).record;
        assert_eq!(rec, b"{\"_id\":\"0000000000000001-2\"}");
        let rec = d.decode(b"oops", None, (1, 9)).record;
        let v: serde_json::Value = serde_json::from_slice(rec).unwrap();
        assert_eq!(v["_id"], "0000000000000001-9");
        assert_eq!(v["message"], "oops");
    }

    #[test]
    fn text_and_truncated_lines() {
        let mut d = Decoder::new(Format::Text, None, &[], None);
        let rec = d.decode(b"hello \"world\"\r", None, (0, 0)).record;
        assert_eq!(rec, br#"{"message":"hello \"world\""}"#);
        let mut d = dec(&[], None, None);
        let rec = d.decode(b"{\"a\":\"xxxx", Some(5000), (0, 0)).record;
        let v: serde_json::Value = serde_json::from_slice(rec).unwrap();
        assert_eq!(v["_truncated_from"], 5000);
    }

    #[test]
    fn epoch_timestamps_in_seconds_and_millis() {
        let mut d = dec(&[], Some("t"), None);
        let t = d.decode(b"{\"t\":1700000000}", None, (0, 0)).time;
        assert_eq!(t.unwrap().timestamp(), 1_700_000_000);
        let t = d.decode(b"{\"t\":1700000000123}", None, (0, 0)).time;
        assert_eq!(t.unwrap().timestamp_millis(), 1_700_000_000_123);
    }
}
