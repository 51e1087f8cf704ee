//! A record read for a few fields only: with `body = "string"` the sink needs the values of
//! its attributes, resource fields, event name and severity, not a tree of the whole record.
//! Members on no wanted path are skipped as the text is checked, so the result is the
//! record's tree cut down to those paths (the same lookups work on it), at a small part of
//! the cost of reading every value.

use std::fmt;

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue, KeyValueList};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::spare::Spare;
use super::value::{self, Seed};
use super::Path;

/// The paths a sink reads, as a tree of member names.
#[derive(Debug, Default, Clone)]
pub struct Wanted {
    /// This value is wanted whole (a path ends here).
    whole: bool,
    members: Vec<(String, Wanted)>,
}

impl Wanted {
    pub fn new<'a>(paths: impl IntoIterator<Item = &'a Path>) -> Wanted {
        let mut root = Wanted::default();
        for p in paths {
            let mut at = &mut root;
            for seg in &p.segments {
                let i = match at.members.iter().position(|(k, _)| k == seg) {
                    Some(i) => i,
                    None => {
                        at.members.push((seg.clone(), Wanted::default()));
                        at.members.len() - 1
                    }
                };
                at = &mut at.members[i].1;
            }
            at.whole = true;
        }
        root
    }

    fn member(&self, key: &str) -> Option<&Wanted> {
        self.members.iter().find(|(k, _)| k == key).map(|(_, w)| w)
    }
}

/// The wanted parts of a JSON record. `Err` when the text is not JSON, or holds a value the
/// fast reader refuses: the caller reads it whole then, which keeps the rest.
pub fn parse(
    json: &[u8],
    wanted: &Wanted,
    spare: &mut Spare,
) -> Result<AnyValue, serde_json::Error> {
    value::whole(
        json,
        Select {
            wanted,
            depth: 0,
            spare,
        },
    )
}

struct Select<'w, 's> {
    wanted: &'w Wanted,
    depth: u32,
    spare: &'s mut Spare,
}

impl<'de> DeserializeSeed<'de> for Select<'_, '_> {
    type Value = AnyValue;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<AnyValue, D::Error> {
        // As deep as the whole record's tree goes: below, a value is its JSON text there too.
        if self.wanted.whole || self.depth >= value::MAX_DEPTH {
            return Seed {
                depth: self.depth,
                spare: self.spare,
            }
            .deserialize(d);
        }
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Select<'_, '_> {
    type Value = AnyValue;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    // A value on the way to a wanted field that is not an object has nothing wanted in it.
    fn visit_bool<E>(self, _: bool) -> Result<AnyValue, E> {
        Ok(AnyValue { value: None })
    }

    fn visit_i64<E>(self, _: i64) -> Result<AnyValue, E> {
        Ok(AnyValue { value: None })
    }

    fn visit_u64<E>(self, _: u64) -> Result<AnyValue, E> {
        Ok(AnyValue { value: None })
    }

    fn visit_f64<E>(self, _: f64) -> Result<AnyValue, E> {
        Ok(AnyValue { value: None })
    }

    fn visit_str<E>(self, _: &str) -> Result<AnyValue, E> {
        Ok(AnyValue { value: None })
    }

    fn visit_unit<E>(self) -> Result<AnyValue, E> {
        Ok(AnyValue { value: None })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<AnyValue, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(AnyValue { value: None })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AnyValue, A::Error> {
        let mut values = self.spare.list();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let Some(wanted) = self.wanted.member(&key) else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            let key = self.spare.string(&key);
            let value = map.next_value_seed(Select {
                wanted,
                depth: self.depth + 1,
                spare: self.spare,
            })?;
            values.push(KeyValue {
                key,
                value: Some(value),
                ..Default::default()
            });
        }
        Ok(AnyValue {
            value: Some(any_value::Value::KvlistValue(KeyValueList { values })),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::value::{at, parse as parse_all};

    #[test]
    fn only_wanted_paths_are_kept_and_read_as_the_whole_record() {
        let paths = [
            Path::new("job_id"),
            Path::new("context.user_id"),
            Path::new("context.deep"),
            Path::new("status"),
            Path::new("lines.x"),
        ];
        let w = Wanted::new(&paths);
        let rec = br#"{"job_id":7,"other":{"big":[1,2,3]},"context":{"user_id":"u1","deep":{"a":[true]},"skip":"s"},"status":"failed","lines":[{"x":1}],"status":"ok"}"#;
        let mut spare = Spare::default();
        let got = parse(rec, &w, &mut spare).unwrap();
        let all = parse_all(rec).unwrap();
        for p in &paths[..4] {
            assert_eq!(at(&got, &p.segments), at(&all, &p.segments), "{}", p.key);
        }
        // Through an array nothing is looked up, as in the whole tree.
        assert_eq!(at(&all, &paths[4].segments), None);
        assert_eq!(at(&got, &paths[4].segments), None);
        // Unwanted members are not in the tree.
        assert!(at(&got, &["other".to_string()]).is_none());
        assert!(at(&got, &["context".to_string(), "skip".to_string()]).is_none());
        // Invalid JSON, and a value the fast reader refuses, are errors (read whole then).
        assert!(parse(b"{\"job_id\":1", &w, &mut spare).is_err());
        assert!(parse(br#"{"job_id":1e400}"#, &w, &mut spare).is_err());
    }
}
