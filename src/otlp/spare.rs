//! Memory that one record's OTLP tree gives back for the next record's: a record of the
//! platform becomes some fifty strings and lists, and allocating and freeing each of them for
//! every record cost more than a third of the mapping. The pools are bounded, and a string or
//! list larger than the usual is freed rather than kept, so one huge record does not hold its
//! memory for the rest of the batch.

use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;

/// Spare strings and lists kept (each pool at most this many).
const KEEP: usize = 4096;
/// A string with more capacity than this is freed, not kept.
const KEEP_STRING: usize = 1024;
/// A list with room for more items than this is freed, not kept.
const KEEP_LIST: usize = 256;

#[derive(Default)]
pub struct Spare {
    strings: Vec<String>,
    lists: Vec<Vec<KeyValue>>,
    arrays: Vec<Vec<AnyValue>>,
    record: Option<LogRecord>,
}

impl Spare {
    /// A string holding `s`, in a spare one when there is one.
    pub fn string(&mut self, s: &str) -> String {
        match self.strings.pop() {
            Some(mut o) => {
                o.push_str(s);
                o
            }
            None => s.to_string(),
        }
    }

    /// An empty list for an object's members.
    pub fn list(&mut self) -> Vec<KeyValue> {
        self.lists.pop().unwrap_or_default()
    }

    /// An empty list for an array's items.
    pub fn array(&mut self) -> Vec<AnyValue> {
        self.arrays.pop().unwrap_or_default()
    }

    /// An empty log record (its lists and strings kept from the last one).
    pub fn record(&mut self) -> LogRecord {
        self.record.take().unwrap_or_default()
    }

    /// A copy of `v` made of spare memory.
    pub fn copy(&mut self, v: &AnyValue) -> AnyValue {
        let value = match &v.value {
            Some(Value::StringValue(s)) => Some(Value::StringValue(self.string(s))),
            Some(Value::KvlistValue(l)) => {
                let mut list = self.list();
                for kv in &l.values {
                    list.push(KeyValue {
                        key: self.string(&kv.key),
                        value: kv.value.as_ref().map(|v| self.copy(v)),
                        ..Default::default()
                    });
                }
                Some(Value::KvlistValue(
                    opentelemetry_proto::tonic::common::v1::KeyValueList { values: list },
                ))
            }
            Some(Value::ArrayValue(a)) => {
                let mut items = self.array();
                for v in &a.values {
                    items.push(self.copy(v));
                }
                Some(Value::ArrayValue(
                    opentelemetry_proto::tonic::common::v1::ArrayValue { values: items },
                ))
            }
            other => other.clone(),
        };
        AnyValue { value }
    }

    /// Takes back a string.
    pub fn keep_string(&mut self, mut s: String) {
        if s.capacity() <= KEEP_STRING && s.capacity() > 0 && self.strings.len() < KEEP {
            s.clear();
            self.strings.push(s);
        }
    }

    /// Takes back a value and everything in it.
    pub fn keep(&mut self, v: AnyValue) {
        match v.value {
            Some(Value::StringValue(s)) => self.keep_string(s),
            Some(Value::KvlistValue(l)) => self.keep_members(l.values),
            Some(Value::ArrayValue(a)) => {
                let mut items = a.values;
                for v in items.drain(..) {
                    self.keep(v);
                }
                if items.capacity() <= KEEP_LIST && self.arrays.len() < KEEP {
                    self.arrays.push(items);
                }
            }
            _ => {}
        }
    }

    /// Takes back a key and its value.
    pub fn keep_member(&mut self, kv: KeyValue) {
        self.keep_string(kv.key);
        if let Some(v) = kv.value {
            self.keep(v);
        }
    }

    fn keep_members(&mut self, mut members: Vec<KeyValue>) {
        for kv in members.drain(..) {
            self.keep_member(kv);
        }
        if members.capacity() <= KEEP_LIST && self.lists.len() < KEEP {
            self.lists.push(members);
        }
    }

    /// Takes back a log record once it is written: its body, attributes and strings.
    pub fn keep_record(&mut self, mut lr: LogRecord) {
        if let Some(body) = lr.body.take() {
            self.keep(body);
        }
        for kv in lr.attributes.drain(..) {
            self.keep_member(kv);
        }
        lr.severity_text.clear();
        lr.event_name.clear();
        lr.trace_id.clear();
        lr.span_id.clear();
        if lr.attributes.capacity() <= KEEP_LIST {
            self.record = Some(lr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_comes_back_and_stays_bounded() {
        let mut s = Spare::default();
        let v = super::super::value::parse_with(br#"{"a":"x","b":[1,"y"],"c":{"d":"z"}}"#, &mut s)
            .unwrap();
        let copy = s.copy(&v);
        assert_eq!(copy, v);
        s.keep(v);
        // Keys a, b, c, d and values x, y, z: seven strings, two lists, one array.
        assert_eq!((s.strings.len(), s.lists.len(), s.arrays.len()), (7, 2, 1));
        assert!(s.strings.iter().all(String::is_empty));
        let again = s.string("q");
        assert_eq!(again, "q");
        assert_eq!(s.strings.len(), 6);
        // A large string is freed, not kept; the pool never grows past its bound.
        s.keep_string("x".repeat(KEEP_STRING + 1));
        assert_eq!(s.strings.len(), 6);
        for _ in 0..KEEP + 10 {
            s.keep_string("abc".to_string());
        }
        assert_eq!(s.strings.len(), KEEP);
        s.keep(copy);
    }
}
