//! A JSON record read straight into an OTLP `AnyValue` (one pass, no intermediate tree):
//! objects become key-value lists in their order, arrays arrays, strings, booleans, integers
//! and floating-point numbers keep their types, `null` is the empty value.
//!
//! Nesting is bounded: below [`MAX_DEPTH`] levels a value is kept as its JSON text (a string),
//! because receivers stop decoding deep messages (protobuf's usual limit is 100 levels, and
//! each JSON level is three OTLP messages).

use std::fmt;

use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, KeyValue, KeyValueList,
};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

/// JSON levels kept as structure; deeper values are their JSON text.
pub const MAX_DEPTH: u32 = 24;

pub fn string(s: impl Into<String>) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s.into())),
    }
}

/// Reads one JSON value. `Err` when the text is not JSON (the caller keeps it as a string).
pub fn parse(json: &[u8]) -> Result<AnyValue, serde_json::Error> {
    let mut d = serde_json::Deserializer::from_slice(json);
    let v = Seed { depth: 0 }.deserialize(&mut d)?;
    d.end()?;
    Ok(v)
}

struct Seed {
    depth: u32,
}

impl<'de> DeserializeSeed<'de> for Seed {
    type Value = AnyValue;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<AnyValue, D::Error> {
        if self.depth >= MAX_DEPTH {
            let raw: Box<serde_json::value::RawValue> = serde::Deserialize::deserialize(d)?;
            return Ok(string(raw.get()));
        }
        d.deserialize_any(Read { depth: self.depth })
    }
}

struct Read {
    depth: u32,
}

fn of(v: any_value::Value) -> AnyValue {
    AnyValue { value: Some(v) }
}

impl<'de> Visitor<'de> for Read {
    type Value = AnyValue;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<AnyValue, E> {
        Ok(of(any_value::Value::BoolValue(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<AnyValue, E> {
        Ok(of(any_value::Value::IntValue(v)))
    }

    /// Integers above `i64::MAX` keep their digits as a string (a double would change them).
    fn visit_u64<E>(self, v: u64) -> Result<AnyValue, E> {
        Ok(match i64::try_from(v) {
            Ok(i) => of(any_value::Value::IntValue(i)),
            Err(_) => string(v.to_string()),
        })
    }

    fn visit_f64<E>(self, v: f64) -> Result<AnyValue, E> {
        Ok(of(any_value::Value::DoubleValue(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<AnyValue, E> {
        Ok(string(v))
    }

    fn visit_string<E>(self, v: String) -> Result<AnyValue, E> {
        Ok(string(v))
    }

    fn visit_unit<E>(self) -> Result<AnyValue, E> {
        Ok(AnyValue { value: None })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<AnyValue, A::Error> {
        let mut values = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(v) = seq.next_element_seed(Seed {
            depth: self.depth + 1,
        })? {
            values.push(v);
        }
        Ok(of(any_value::Value::ArrayValue(ArrayValue { values })))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AnyValue, A::Error> {
        let mut values = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let value = map.next_value_seed(Seed {
                depth: self.depth + 1,
            })?;
            values.push(KeyValue {
                key: key.into_owned(),
                value: Some(value),
                ..Default::default()
            });
        }
        Ok(of(any_value::Value::KvlistValue(KeyValueList { values })))
    }
}

/// The value at a dotted path of a parsed record (`context.user_email`), if any.
pub fn at<'a>(record: &'a AnyValue, path: &[String]) -> Option<&'a AnyValue> {
    let mut cur = record;
    for seg in path {
        let Some(any_value::Value::KvlistValue(list)) = &cur.value else {
            return None;
        };
        cur = list
            .values
            .iter()
            .find(|kv| &kv.key == seg)?
            .value
            .as_ref()?;
    }
    Some(cur)
}

/// A scalar's text (a string as it is, numbers and booleans written out); `None` for null,
/// lists and maps.
pub fn text(v: &AnyValue) -> Option<std::borrow::Cow<'_, str>> {
    use std::borrow::Cow;
    match v.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(Cow::Borrowed(s)),
        any_value::Value::IntValue(i) => Some(Cow::Owned(i.to_string())),
        any_value::Value::DoubleValue(d) => Some(Cow::Owned(d.to_string())),
        any_value::Value::BoolValue(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(v: &AnyValue) -> &[KeyValue] {
        match &v.value {
            Some(any_value::Value::KvlistValue(l)) => &l.values,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn types_are_kept() {
        let v = parse(br#"{"s":"x","i":-3,"big":18446744073709551615,"f":1.5,"b":true,"n":null,"a":[1,"two"],"o":{"k":"v"}}"#).unwrap();
        let m = kv(&v);
        let keys: Vec<&str> = m.iter().map(|k| k.key.as_str()).collect();
        assert_eq!(
            keys,
            ["s", "i", "big", "f", "b", "n", "a", "o"],
            "order kept"
        );
        let val = |i: usize| m[i].value.clone().unwrap().value;
        assert_eq!(val(0), Some(any_value::Value::StringValue("x".into())));
        assert_eq!(val(1), Some(any_value::Value::IntValue(-3)));
        assert_eq!(
            val(2),
            Some(any_value::Value::StringValue("18446744073709551615".into()))
        );
        assert_eq!(val(3), Some(any_value::Value::DoubleValue(1.5)));
        assert_eq!(val(4), Some(any_value::Value::BoolValue(true)));
        assert_eq!(val(5), None);
        assert!(matches!(val(6), Some(any_value::Value::ArrayValue(a)) if a.values.len() == 2));
        let path = ["o".to_string(), "k".to_string()];
        assert_eq!(text(at(&v, &path).unwrap()).as_deref(), Some("v"));
        assert!(at(&v, &["s".into(), "k".into()]).is_none());
    }

    #[test]
    fn deep_values_are_kept_as_text() {
        let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
        let v = parse(deep.as_bytes()).unwrap();
        let mut cur = &v;
        let mut levels = 0;
        while let Some(any_value::Value::ArrayValue(a)) = &cur.value {
            cur = &a.values[0];
            levels += 1;
        }
        assert_eq!(levels, MAX_DEPTH);
        let want = format!(
            "{}1{}",
            "[".repeat(100 - MAX_DEPTH as usize),
            "]".repeat(100 - MAX_DEPTH as usize)
        );
        assert_eq!(text(cur).as_deref(), Some(want.as_str()));
        assert!(parse(b"not json").is_err());
        assert!(parse(b"{\"a\":1} trailing").is_err());
    }
}
