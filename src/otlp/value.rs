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

use super::spare::Spare;

/// JSON levels kept as structure; deeper values are their JSON text.
pub const MAX_DEPTH: u32 = 24;

pub fn string(s: impl Into<String>) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s.into())),
    }
}

/// Reads one JSON value. `Err` when the text is not JSON (the caller keeps it as a string).
/// A value the fast reader refuses but JSON allows (a number beyond a double's range such as
/// `1e400`, a lone surrogate escape) is read again value by value: only that value becomes a
/// string, the rest keeps its types. Strings and lists come from `spare` (the last record's,
/// given back).
pub fn parse_with(json: &[u8], spare: &mut Spare) -> Result<AnyValue, serde_json::Error> {
    let seed = Seed { depth: 0, spare };
    match whole(json, seed) {
        Ok(v) => Ok(v),
        Err(e) => {
            let raw: &serde_json::value::RawValue = serde_json::from_slice(json).map_err(|_| e)?;
            Ok(lenient(raw, 0))
        }
    }
}

/// `seed` over the whole of `json`. Text that is UTF-8 (nearly always) is checked once here
/// rather than string by string.
pub(super) fn whole<T>(
    json: &[u8],
    seed: impl for<'de> DeserializeSeed<'de, Value = T>,
) -> Result<T, serde_json::Error> {
    fn all<'de, R: serde_json::de::Read<'de>, T>(
        mut d: serde_json::Deserializer<R>,
        seed: impl DeserializeSeed<'de, Value = T>,
    ) -> Result<T, serde_json::Error> {
        let v = seed.deserialize(&mut d)?;
        d.end()?;
        Ok(v)
    }
    match std::str::from_utf8(json) {
        Ok(text) => all(serde_json::Deserializer::from_str(text), seed),
        Err(_) => all(serde_json::Deserializer::from_slice(json), seed),
    }
}

/// An object's members as they are written, values unread.
struct RawMembers<'a>(Vec<(String, &'a serde_json::value::RawValue)>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for RawMembers<'a> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = RawMembers<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<RawMembers<'a>, A::Error> {
                let mut out = Vec::new();
                // Keys as written, decoded here: a key JSON allows but a string cannot hold (a
                // lone surrogate escape) keeps its text, and its object keeps its members.
                while let Some(k) = m.next_key::<&'de serde_json::value::RawValue>()? {
                    let key = serde_json::from_str::<String>(k.get()).unwrap_or_else(|_| {
                        let t = k.get();
                        t.strip_prefix('"')
                            .and_then(|t| t.strip_suffix('"'))
                            .unwrap_or(t)
                            .to_string()
                    });
                    out.push((key, m.next_value()?));
                }
                Ok(RawMembers(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// The slow reader: one value at a time from its text, so that one value the fast reader
/// refuses is kept as its text alone.
fn lenient(raw: &serde_json::value::RawValue, depth: u32) -> AnyValue {
    let text = raw.get().trim();
    if depth >= MAX_DEPTH {
        return string(text);
    }
    match text.as_bytes().first() {
        Some(b'{') => match serde_json::from_str::<RawMembers>(text) {
            Ok(m) => of(any_value::Value::KvlistValue(KeyValueList {
                values: m
                    .0
                    .into_iter()
                    .map(|(key, v)| KeyValue {
                        key,
                        value: Some(lenient(v, depth + 1)),
                        ..Default::default()
                    })
                    .collect(),
            })),
            Err(_) => string(text),
        },
        Some(b'[') => match serde_json::from_str::<Vec<&serde_json::value::RawValue>>(text) {
            Ok(items) => of(any_value::Value::ArrayValue(ArrayValue {
                values: items.into_iter().map(|v| lenient(v, depth + 1)).collect(),
            })),
            Err(_) => string(text),
        },
        Some(b'"') => {
            string(serde_json::from_str::<String>(text).unwrap_or_else(|_| text.to_string()))
        }
        Some(b't') => of(any_value::Value::BoolValue(true)),
        Some(b'f') => of(any_value::Value::BoolValue(false)),
        Some(b'n') => AnyValue { value: None },
        // A number: read by the fast reader itself, so that it has the type and value it has
        // in a record read whole (beyond 64 bits a double, -0 a double, the same rounding);
        // one it refuses (1e400) is its text.
        _ => Seed {
            depth,
            spare: &mut Spare::default(),
        }
        .deserialize(&mut serde_json::Deserializer::from_str(text))
        .unwrap_or_else(|_| string(text)),
    }
}

/// Reads any value of JSON.
#[cfg(test)]
pub fn parse(json: &[u8]) -> Result<AnyValue, serde_json::Error> {
    parse_with(json, &mut Spare::default())
}

pub(super) struct Seed<'s> {
    pub(super) depth: u32,
    pub(super) spare: &'s mut Spare,
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = AnyValue;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<AnyValue, D::Error> {
        if self.depth >= MAX_DEPTH {
            let raw: Box<serde_json::value::RawValue> = serde::Deserialize::deserialize(d)?;
            return Ok(string(raw.get()));
        }
        d.deserialize_any(Read {
            depth: self.depth,
            spare: self.spare,
        })
    }
}

struct Read<'s> {
    depth: u32,
    spare: &'s mut Spare,
}

fn of(v: any_value::Value) -> AnyValue {
    AnyValue { value: Some(v) }
}

impl<'de> Visitor<'de> for Read<'_> {
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
        Ok(string(self.spare.string(v)))
    }

    fn visit_unit<E>(self) -> Result<AnyValue, E> {
        Ok(AnyValue { value: None })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<AnyValue, A::Error> {
        let mut values = self.spare.array();
        while let Some(v) = seq.next_element_seed(Seed {
            depth: self.depth + 1,
            spare: self.spare,
        })? {
            values.push(v);
        }
        Ok(of(any_value::Value::ArrayValue(ArrayValue { values })))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AnyValue, A::Error> {
        let mut values = self.spare.list();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let key = self.spare.string(&key);
            let value = map.next_value_seed(Seed {
                depth: self.depth + 1,
                spare: self.spare,
            })?;
            values.push(KeyValue {
                key,
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
        // A key given twice: the last one, as JSON readers (and OTLP receivers) take it.
        cur = list
            .values
            .iter()
            .rev()
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
        // One value the fast reader refuses is kept as its text; the others keep their types.
        let v =
            parse(br#"{"id":4,"status":"failed","f":1e400,"s":"\ud800x","n":[1,-2.5]}"#).unwrap();
        let m = kv(&v);
        assert_eq!(
            m[0].value.clone().unwrap().value,
            Some(any_value::Value::IntValue(4))
        );
        assert_eq!(
            text(at(&v, &["status".into()]).unwrap()).as_deref(),
            Some("failed")
        );
        assert_eq!(
            text(at(&v, &["f".into()]).unwrap()).as_deref(),
            Some("1e400")
        );
        assert!(
            matches!(m[4].value.clone().unwrap().value, Some(any_value::Value::ArrayValue(a)) if a.values.len() == 2)
        );
        assert!(parse(b"{\"a\":1} trailing").is_err());
        // A lone surrogate in a key: the key keeps its text, its siblings their types.
        let v = parse(br#"{"i":1,"ctx":{"\ud800":1,"user":"u1","n":5}}"#).unwrap();
        let ctx = kv(at(&v, &["ctx".into()]).unwrap());
        let keys: Vec<&str> = ctx.iter().map(|k| k.key.as_str()).collect();
        assert_eq!(keys, ["\\ud800", "user", "n"]);
        assert_eq!(
            text(at(&v, &["ctx".into(), "user".into()]).unwrap()).as_deref(),
            Some("u1")
        );
        assert_eq!(
            ctx[2].value.clone().unwrap().value,
            Some(any_value::Value::IntValue(5))
        );
    }
}
