//! Copies a record's column values out in one parse that builds no tree, keeping each value's
//! JSON type (a column takes a value only when it fits), and the scalar members of one object
//! (`context.*`) for the columns flattened from it.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};

/// A value as the record holds it.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Missing,
    Null,
    Str(String),
    Int(i64),
    /// An integer beyond `i64` (kept exact for string columns).
    Big(u64),
    /// A number with a fraction or exponent.
    Float(f64),
    Bool(bool),
    /// An object or an array.
    Nested,
}

/// A tree of the paths to copy out; leaves carry the index of their slot.
#[derive(Default, Debug)]
struct Node {
    children: Vec<(String, Node)>,
    slot: Option<usize>,
    /// This object's scalar members are collected (a flattened object).
    spread: bool,
}

impl Node {
    fn at(&mut self, path: &str) -> &mut Node {
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
        node
    }
}

/// One record's values, reused between records.
#[derive(Default)]
pub struct Row {
    pub values: Vec<Scalar>,
    /// The flattened object's scalar members: (name, text), in the record's order.
    pub spread: Vec<(String, String)>,
}

/// Which paths to copy out.
pub struct Extractor {
    tree: Node,
    slots: usize,
}

impl Extractor {
    /// `paths` go to slots `0..paths.len()`; the scalar members of the object at `spread`, if
    /// any, to [`Row::spread`].
    pub fn new(paths: &[&str], spread: Option<&str>) -> Extractor {
        let mut tree = Node::default();
        for (i, p) in paths.iter().enumerate() {
            tree.at(p).slot = Some(i);
        }
        if let Some(s) = spread {
            tree.at(s).spread = true;
        }
        Extractor {
            tree,
            slots: paths.len(),
        }
    }

    /// Fills `row` from `record`; a record that is not a JSON object leaves every value
    /// missing, and so does one serde cannot read whole (a number beyond f64, a lone
    /// surrogate): then `false`.
    pub fn extract(&self, record: &[u8], row: &mut Row) -> bool {
        row.values.clear();
        row.values.resize(self.slots, Scalar::Missing);
        row.spread.clear();
        let mut de = serde_json::Deserializer::from_slice(record);
        let ok = MapSeed {
            node: &self.tree,
            row,
        }
        .deserialize(&mut de)
        .is_ok();
        if !ok {
            row.values.iter_mut().for_each(|v| *v = Scalar::Missing);
            row.spread.clear();
        }
        ok
    }
}

struct MapSeed<'n, 'r> {
    node: &'n Node,
    row: &'r mut Row,
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
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let child = self.node.children.iter().find(|(k, _)| *k == key);
            match child.map(|(_, n)| n) {
                Some(n) => {
                    map.next_value_seed(Value {
                        node: n,
                        row: self.row,
                    })?;
                    // A member a typed column reads is flattened too, when it is a scalar.
                    if self.node.spread {
                        let text = n.slot.and_then(|s| match &self.row.values[s] {
                            Scalar::Str(v) => Some(v.clone()),
                            Scalar::Int(v) => Some(v.to_string()),
                            Scalar::Big(v) => Some(v.to_string()),
                            Scalar::Float(v) => Some(v.to_string()),
                            Scalar::Bool(v) => Some(v.to_string()),
                            _ => None,
                        });
                        if let Some(t) = text {
                            self.row.spread.push((key.into_owned(), t));
                        }
                    }
                }
                None if self.node.spread => {
                    if let Some(text) = map.next_value_seed(Text)? {
                        self.row.spread.push((key.into_owned(), text));
                    }
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// A value on a wanted path: its slot's scalar, and a nested object walked further.
struct Value<'n, 'r> {
    node: &'n Node,
    row: &'r mut Row,
}

impl Value<'_, '_> {
    fn put(self, v: Scalar) {
        if let Some(s) = self.node.slot {
            self.row.values[s] = v;
        }
    }
}

impl<'de> DeserializeSeed<'de> for Value<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Value<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.put(Scalar::Str(v.to_string()));
        Ok(())
    }
    fn visit_string<E>(self, v: String) -> Result<(), E> {
        self.put(Scalar::Str(v));
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.put(Scalar::Int(v));
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.put(i64::try_from(v).map_or(Scalar::Big(v), Scalar::Int));
        Ok(())
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.put(Scalar::Float(v));
        Ok(())
    }
    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.put(Scalar::Bool(v));
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.put(Scalar::Null);
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        if let Some(s) = self.node.slot {
            self.row.values[s] = Scalar::Nested;
        }
        MapSeed {
            node: self.node,
            row: self.row,
        }
        .visit_map(map)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut s: A) -> Result<(), A::Error> {
        while s.next_element::<IgnoredAny>()?.is_some() {}
        self.put(Scalar::Nested);
        Ok(())
    }
}

/// A flattened member's text when it is a scalar (`None` for null, objects and arrays).
struct Text;

impl<'de> DeserializeSeed<'de> for Text {
    type Value = Option<String>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<String>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Text {
    type Value = Option<String>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut s: A) -> Result<Self::Value, A::Error> {
        while s.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_keep_their_json_type_and_a_spread_object_gives_its_scalars() {
        let x = Extractor::new(
            &["id", "n", "f", "ok", "a.b", "obj", "none"],
            Some("context"),
        );
        let mut row = Row::default();
        x.extract(
            br#"{"id":"j1","n":7,"f":1.5,"ok":true,"a":{"b":"deep","c":1},"obj":{"x":[1]},"none":null,
                "context":{"user":"u1","n":3,"nested":{"z":1},"list":[1],"nil":null}}"#,
            &mut row,
        );
        assert_eq!(
            row.values,
            [
                Scalar::Str("j1".into()),
                Scalar::Int(7),
                Scalar::Float(1.5),
                Scalar::Bool(true),
                Scalar::Str("deep".into()),
                Scalar::Nested,
                Scalar::Null,
            ]
        );
        assert_eq!(
            row.spread,
            [("user".into(), "u1".into()), ("n".into(), "3".into())]
        );
        // Not an object: every value missing, nothing spread.
        x.extract(b"[1,2]", &mut row);
        assert!(row.values.iter().all(|v| *v == Scalar::Missing));
        assert!(row.spread.is_empty());
        // An escaped key is read as its text.
        x.extract(br#"{"\u0069d":"k"}"#, &mut row);
        assert_eq!(row.values[0], Scalar::Str("k".into()));
    }
}
