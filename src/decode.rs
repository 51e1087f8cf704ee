//! Turning a line into a record: JSON validated and passed through as its own bytes, or wrapped.
//!
//! A JSON line is parsed once, without building a tree: the parse validates it, checks it is an
//! object and copies out only the fields the pipeline needs (key template fields, the timestamp
//! field). The record that moves on is the line itself, so a valid line costs one validation and
//! one copy into its batch.

use std::fmt::{self, Write as _};

use chrono::{DateTime, Utc};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};

use crate::config::Format;

/// A path tree of the fields to extract; leaves carry the index of their value slot.
#[derive(Default, Debug)]
struct Node {
    children: Vec<(String, Node)>,
    slot: Option<usize>,
}

impl Node {
    fn insert(&mut self, path: &str, slot: usize) {
        let mut node = self;
        for seg in path.split('.') {
            let idx = match node.children.iter().position(|(k, _)| k == seg) {
                Some(i) => i,
                None => {
                    node.children.push((seg.to_string(), Node::default()));
                    node.children.len() - 1
                }
            };
            node = &mut node.children[idx].1;
        }
        node.slot = Some(slot);
    }
}

/// Values copied out of the current record. Strings are reused between records.
#[derive(Default)]
pub struct Values {
    text: Vec<String>,
    set: Vec<bool>,
}

impl Values {
    pub fn get(&self, slot: usize) -> Option<&str> {
        self.set
            .get(slot)
            .copied()
            .unwrap_or(false)
            .then(|| self.text[slot].as_str())
    }
    fn clear(&mut self) {
        self.set.iter_mut().for_each(|s| *s = false);
    }
    fn put(&mut self, slot: usize) -> &mut String {
        self.set[slot] = true;
        let s = &mut self.text[slot];
        s.clear();
        s
    }
}

pub struct Decoder {
    format: Format,
    id_prefix: Option<Vec<u8>>,
    tree: Node,
    time_slot: Option<usize>,
    scratch: Vec<u8>,
    pub values: Values,
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
        let mut tree = Node::default();
        let mut all: Vec<&str> = fields.iter().map(String::as_str).collect();
        for (i, f) in all.iter().enumerate() {
            tree.insert(f, i);
        }
        let time_slot = timestamp_field.map(|t| match all.iter().position(|f| *f == t) {
            Some(i) => i,
            None => {
                tree.insert(t, all.len());
                all.push(t);
                all.len() - 1
            }
        });
        let id_prefix = record_id.map(|f| {
            let mut p = b"{".to_vec();
            let _ = serde_json::to_writer(&mut p, f);
            p.extend_from_slice(b":\"");
            p
        });
        Decoder {
            format,
            id_prefix,
            tree,
            time_slot,
            scratch: Vec::with_capacity(4096),
            values: Values {
                text: vec![String::new(); all.len()],
                set: vec![false; all.len()],
            },
            redact_unparsable: false,
        }
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
        let time = self.time();
        flags.time_unparsed = time.is_none() && self.time_value().is_some();
        Decoded {
            record: if passthrough { line } else { &self.scratch },
            flags,
            values: &self.values,
            time,
            time_raw: self.time_slot.and_then(|slot| self.values.get(slot)),
        }
    }

    /// Extracts the wanted fields again from a record that masking changed, so keys and
    /// partitions are built from masked values only. Returns the record's time.
    pub fn reextract(&mut self, record: &[u8]) -> (&Values, Option<DateTime<Utc>>) {
        self.values.clear();
        let mut de = serde_json::Deserializer::from_slice(record);
        let seed = MapSeed {
            node: &self.tree,
            out: &mut self.values,
        };
        if seed.deserialize(&mut de).is_err() {
            self.values.clear();
        }
        let time = self.time();
        (&self.values, time)
    }

    /// Returns true when the line itself is the record; otherwise the record is in `scratch`.
    fn fill(
        &mut self,
        line: &[u8],
        truncated_from: Option<usize>,
        id: (u64, u64),
        flags: &mut Flags,
    ) -> bool {
        self.values.clear();
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
            let seed = MapSeed {
                node: &self.tree,
                out: &mut self.values,
            };
            seed.deserialize(&mut de).and_then(|_| de.end())
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
                self.values.clear();
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

    /// The record's time from `timestamp_field`.
    fn time(&self) -> Option<DateTime<Utc>> {
        crate::timefmt::parse_time(self.time_value()?)
    }

    /// The text of the timestamp field, when the record has one.
    pub fn time_value(&self) -> Option<&str> {
        self.values.get(self.time_slot?)
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

struct MapSeed<'n, 'o> {
    node: &'n Node,
    out: &'o mut Values,
}

impl<'de> DeserializeSeed<'de> for MapSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for MapSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(child) = map.next_key_seed(KeySeed(self.node))? {
            match child.map(|i| &self.node.children[i].1) {
                Some(n) if n.slot.is_some() => map.next_value_seed(ScalarSeed {
                    slot: n.slot.unwrap_or_default(),
                    out: self.out,
                })?,
                Some(n) if !n.children.is_empty() => map.next_value_seed(Nested {
                    node: n,
                    out: self.out,
                })?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// A nested object on a wanted path; anything else there is ignored, not an error.
struct Nested<'n, 'o> {
    node: &'n Node,
    out: &'o mut Values,
}

impl<'de> DeserializeSeed<'de> for Nested<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Nested<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        MapSeed {
            node: self.node,
            out: self.out,
        }
        .visit_map(map)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut s: A) -> Result<(), A::Error> {
        while s.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

struct KeySeed<'n>(&'n Node);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<usize>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E>(self, k: &str) -> Result<Option<usize>, E> {
        Ok(self.0.children.iter().position(|(c, _)| c == k))
    }
}

struct ScalarSeed<'o> {
    slot: usize,
    out: &'o mut Values,
}

impl<'de> DeserializeSeed<'de> for ScalarSeed<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ScalarSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.out.put(self.slot).push_str(v);
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        let _ = write!(self.out.put(self.slot), "{v}");
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        let _ = write!(self.out.put(self.slot), "{v}");
        Ok(())
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        let _ = write!(self.out.put(self.slot), "{v}");
        Ok(())
    }
    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        let _ = write!(self.out.put(self.slot), "{v}");
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
        while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(())
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut s: A) -> Result<(), A::Error> {
        while s.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }
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
