//! The fields the pipeline needs from a record (key template fields, the timestamp field),
//! copied out during one parse that builds no tree. The decoder uses it on each line it
//! validates; the source uses it again on a record that masking changed at one of these paths,
//! so keys and partitions come from masked values only.

use std::fmt::{self, Write as _};

use chrono::{DateTime, Utc};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};

/// A path tree of the fields to extract; leaves carry the index of their value slot.
#[derive(Default, Debug, Clone)]
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
#[derive(Default, Clone)]
pub struct Values {
    text: Vec<String>,
    set: Vec<bool>,
    /// The path is in the record, whatever its value (null, an object, an array too).
    present: Vec<bool>,
}

impl Values {
    pub fn get(&self, slot: usize) -> Option<&str> {
        self.set
            .get(slot)
            .copied()
            .unwrap_or(false)
            .then(|| self.text[slot].as_str())
    }
    /// Whether the record has the path at all.
    pub fn present(&self, slot: usize) -> bool {
        self.present.get(slot).copied().unwrap_or(false)
    }
    pub(crate) fn clear(&mut self) {
        self.set.iter_mut().for_each(|s| *s = false);
        self.present.iter_mut().for_each(|s| *s = false);
    }
    fn mark(&mut self, slot: usize) {
        self.present[slot] = true;
    }
    fn put(&mut self, slot: usize) -> &mut String {
        self.set[slot] = true;
        self.present[slot] = true;
        let s = &mut self.text[slot];
        s.clear();
        s
    }
}

/// The extractor: which paths to copy out, and the last record's values.
#[derive(Clone)]
pub struct Fields {
    tree: Node,
    time_slot: Option<usize>,
    /// The source's `timestamp_format`, tried before the built-in spellings.
    time_format: Option<std::sync::Arc<str>>,
    values: Values,
    paths: Vec<String>,
}

impl Fields {
    /// `fields` are extracted into slots `0..fields.len()`; `timestamp_field`, if any, into the
    /// slot after them (or the slot of an identical field).
    pub fn new(fields: &[String], timestamp_field: Option<&str>) -> Fields {
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
        Fields {
            tree,
            time_slot,
            time_format: None,
            values: Values {
                text: vec![String::new(); all.len()],
                set: vec![false; all.len()],
                present: vec![false; all.len()],
            },
            paths: all.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Every dotted path extracted (key fields, then the timestamp field).
    pub fn paths(&self) -> &[String] {
        &self.paths
    }

    pub fn values(&self) -> &Values {
        &self.values
    }

    pub fn clear(&mut self) {
        self.values.clear();
    }

    /// Parses one JSON object from `d`, copying out the wanted values (the caller checks the
    /// end of input).
    pub fn parse<'de, D: de::Deserializer<'de>>(&mut self, d: D) -> Result<(), D::Error> {
        MapSeed {
            node: &self.tree,
            out: &mut self.values,
        }
        .deserialize(d)
    }

    /// Extracts from a whole record; a record that is not a JSON object yields no values.
    pub fn extract(&mut self, record: &[u8]) {
        self.values.clear();
        let mut de = serde_json::Deserializer::from_slice(record);
        if self.parse(&mut de).is_err() {
            self.values.clear();
        }
    }

    /// The text of the timestamp field, when the record has one.
    pub fn time_value(&self) -> Option<&str> {
        self.values.get(self.time_slot?)
    }

    /// Reads times in `format` first (a source's `timestamp_format`).
    pub fn set_time_format(&mut self, format: Option<&str>) {
        self.time_format = format.map(std::sync::Arc::from);
    }

    /// The record's time from `timestamp_field`.
    pub fn time(&self) -> Option<DateTime<Utc>> {
        let v = self.time_value()?;
        self.time_format
            .as_deref()
            .and_then(|f| crate::timefmt::parse_with(v, f))
            .or_else(|| crate::timefmt::parse_time(v))
    }
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
        self.out.mark(self.slot);
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
        self.out.mark(self.slot);
        while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(())
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut s: A) -> Result<(), A::Error> {
        self.out.mark(self.slot);
        while s.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }
}
