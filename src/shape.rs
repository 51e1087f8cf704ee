//! Record shaping for destinations with a table schema (Azure Monitor): `TimeGenerated`,
//! renamed columns and field size limits, applied per record before batching so that a batch
//! is exactly the request body and its size is known when it is cut.
//!
//! Only the top level is parsed (keys and raw values); values are copied as they are unless
//! they must be cut, so there is no `serde_json::Value` round trip.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

pub const TIME_GENERATED: &str = "TimeGenerated";

#[derive(Debug, Clone)]
pub struct Shape {
    /// The field whose value becomes `TimeGenerated`; the record's pipeline time (the
    /// source's `timestamp_field`, else read time) when unset or unreadable.
    pub time_field: Option<String>,
    /// Top-level renames (`field_map = { user = "UserName" }`).
    pub field_map: Vec<(String, String)>,
    /// Longest value kept, in bytes of its text; longer ones are cut (counted).
    pub max_field_bytes: usize,
    /// Longest shaped record that fits a request.
    pub max_record_bytes: usize,
}

/// What shaping one record did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Shaped {
    pub truncated_fields: u32,
    /// The record was still over `max_record_bytes` with every field cut and was replaced by
    /// a stub naming its size.
    pub replaced: bool,
}

struct Entries<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Entries<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(m.size_hint().unwrap_or(16));
                while let Some(k) = m.next_key::<Cow<'de, str>>()? {
                    let v: &'de RawValue = m.next_value()?;
                    out.push((k, v));
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl Shape {
    /// Writes the shaped record into `out` (cleared first).
    pub fn apply(&self, record: &[u8], time: DateTime<Utc>, out: &mut Vec<u8>) -> Shaped {
        let entries = match serde_json::from_slice::<Entries>(record) {
            Ok(e) => e.0,
            // The decoder only passes objects on; anything else is kept as a message.
            Err(_) => {
                let text = String::from_utf8_lossy(record);
                let fallback = serde_json::json!({ "message": text }).to_string();
                return self.apply(fallback.as_bytes(), time, out);
            }
        };
        let mut limit = self.max_field_bytes;
        loop {
            let shaped = self.write(&entries, time, limit, out);
            if out.len() <= self.max_record_bytes {
                return shaped;
            }
            if limit <= 64 {
                // Thousands of fields: nothing left to cut. Keep the time and say what
                // happened rather than send a body the service refuses forever.
                out.clear();
                let stub = format!(
                    "{{\"{TIME_GENERATED}\":\"{}\",\"_logferry_error\":\"record of {} bytes does not fit a 1 MB request even with every field cut; it was not sent\"}}",
                    time.to_rfc3339_opts(SecondsFormat::Millis, true),
                    record.len()
                );
                out.extend_from_slice(stub.as_bytes());
                return Shaped {
                    truncated_fields: shaped.truncated_fields,
                    replaced: true,
                };
            }
            limit /= 2;
        }
    }

    fn write(
        &self,
        entries: &[(Cow<str>, &RawValue)],
        time: DateTime<Utc>,
        limit: usize,
        out: &mut Vec<u8>,
    ) -> Shaped {
        let mut shaped = Shaped::default();
        let mut time = time;
        let mut has_time = false;
        out.clear();
        out.push(b'{');
        for (i, (k, v)) in entries.iter().enumerate() {
            if self.time_field.as_deref() == Some(k.as_ref()) {
                if let Some(t) = serde_json::from_str::<Cow<str>>(v.get())
                    .ok()
                    .and_then(|s| crate::timefmt::parse_time(&s))
                    .or_else(|| crate::timefmt::parse_time(v.get()))
                {
                    time = t;
                }
            }
            let name = self
                .field_map
                .iter()
                .find(|(from, _)| from == k)
                .map_or(k.as_ref(), |(_, to)| to.as_str());
            has_time |= name == TIME_GENERATED;
            if i > 0 {
                out.push(b',');
            }
            write_str(out, name);
            out.push(b':');
            let raw = v.get();
            if raw.len() <= limit || name == TIME_GENERATED {
                out.extend_from_slice(raw.as_bytes());
                continue;
            }
            // A string is cut by its text; an object or array becomes its JSON text, cut.
            let text: Cow<str> = if raw.starts_with('"') {
                serde_json::from_str::<Cow<str>>(raw).unwrap_or(Cow::Borrowed(raw))
            } else {
                Cow::Borrowed(raw)
            };
            if text.len() <= limit && raw.starts_with('"') {
                out.extend_from_slice(raw.as_bytes());
                continue;
            }
            let mut end = limit.min(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            write_str(out, &text[..end]);
            shaped.truncated_fields += 1;
        }
        if !has_time {
            if !entries.is_empty() {
                out.push(b',');
            }
            write_str(out, TIME_GENERATED);
            out.push(b':');
            write_str(out, &time.to_rfc3339_opts(SecondsFormat::Millis, true));
        }
        out.push(b'}');
        shaped
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    // Writing JSON into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Shape {
        Shape {
            time_field: Some("ts".into()),
            field_map: vec![("user".into(), "UserName".into())],
            max_field_bytes: 16,
            max_record_bytes: 1_000,
        }
    }

    fn run(s: &Shape, rec: &str) -> (serde_json::Value, Shaped) {
        let mut out = Vec::new();
        let t = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
            .unwrap()
            .with_timezone(&Utc);
        let r = s.apply(rec.as_bytes(), t, &mut out);
        (serde_json::from_slice(&out).unwrap(), r)
    }

    #[test]
    fn time_generated_renames_and_cuts() {
        let (v, r) = run(
            &shape(),
            r#"{"ts":"2026-05-06T07:08:09.5+02:00","user":"ann","note":"0123456789abcdefXYZ","n":12345678901234567890,"obj":{"a":"bbbbbbbbbbbbbbbbbbbb"},"ok":[1,2]}"#,
        );
        assert_eq!(v["TimeGenerated"], "2026-05-06T05:08:09.500Z");
        assert_eq!(v["UserName"], "ann");
        assert!(v.get("user").is_none());
        assert_eq!(v["note"], "0123456789abcdef");
        assert_eq!(v["n"], "1234567890123456", "a long number is cut as text");
        assert_eq!(v["obj"], "{\"a\":\"bbbbbbbbbb");
        assert_eq!(v["ok"], serde_json::json!([1, 2]));
        assert_eq!(r.truncated_fields, 4, "ts, note, n and obj");
    }

    #[test]
    fn read_time_when_the_field_is_missing_and_escapes_count_as_text() {
        let (v, r) = run(
            &shape(),
            r#"{"msg":"\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9"}"#,
        );
        assert_eq!(v["TimeGenerated"], "2026-01-02T03:04:05.000Z");
        // 8 two-byte characters: 16 bytes of text, not cut although the escapes are longer.
        assert_eq!(v["msg"].as_str().unwrap().chars().count(), 8);
        assert_eq!(r.truncated_fields, 0);
        let (v, _) = run(&shape(), r#"{"TimeGenerated":"2020-01-01T00:00:00Z"}"#);
        assert_eq!(v["TimeGenerated"], "2020-01-01T00:00:00Z", "kept as given");
    }

    #[test]
    fn a_record_too_large_for_a_request_is_cut_further_then_replaced() {
        let mut s = shape();
        s.max_field_bytes = 400;
        let fields: Vec<String> = (0..10)
            .map(|i| format!("\"f{i}\":\"{}\"", "x".repeat(300)))
            .collect();
        let rec = format!("{{{}}}", fields.join(","));
        let (v, r) = run(&s, &rec);
        assert!(serde_json::to_vec(&v).unwrap().len() <= 1_000);
        assert_eq!(r.truncated_fields, 10);
        assert!(!r.replaced);
        let fields: Vec<String> = (0..200).map(|i| format!("\"f{i}\":1")).collect();
        let (v, r) = run(&s, &format!("{{{}}}", fields.join(",")));
        assert!(r.replaced);
        assert!(v["_logferry_error"]
            .as_str()
            .unwrap()
            .contains("does not fit"));
    }
}
