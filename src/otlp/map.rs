//! The platform's records in the OpenTelemetry logs data model: one `LogRecord` per record,
//! grouped by resource (the static resource, plus the record's `resource_fields`) under one
//! instrumentation scope, logferry's own.

use std::collections::HashMap;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use super::select::{self, Wanted};
use super::spare::Spare;
use super::value::{self, at, text};
use super::{Body, Path, Spec};
use crate::whole::Records;

/// Why a batch could not be made into a request.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    #[error("a batch holds {records} records and {times} times")]
    Times { records: usize, times: usize },
    #[error("a batch's record offsets are out of order")]
    Offsets,
    #[error("cannot write OTLP/JSON: {0}")]
    Json(#[from] serde_json::Error),
}

fn kv(key: &str, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(value),
        ..Default::default()
    }
}

/// The attributes every resource of a batch from `source` carries.
fn base_resource(spec: &Spec, source: &str) -> Vec<KeyValue> {
    let mut out: Vec<KeyValue> = spec
        .resource
        .iter()
        .map(|(k, v)| kv(k, value::string(v.as_str())))
        .collect();
    if !out.iter().any(|k| k.key == "service.name") {
        out.insert(0, kv("service.name", value::string(source)));
    }
    if !out.iter().any(|k| k.key == "host.name") && !spec.host.is_empty() {
        out.push(kv("host.name", value::string(spec.host.as_str())));
    }
    out
}

/// A path's value in `record`, unless it is missing or null.
fn field<'a>(record: &'a AnyValue, p: &Path) -> Option<&'a AnyValue> {
    at(record, &p.segments).filter(|v| v.value.is_some())
}

/// One record's log record (its memory from `spare`). Its resource fields go to `resource`
/// and their encoding to `key` (the record's group), both from the one reading of the record
/// that the log record's own values come from.
fn map_one(
    spec: &Spec,
    raw: &[u8],
    (time_ns, observed_ns): (i64, i64),
    spare: &mut Spare,
    (wanted, base): (&Wanted, &[KeyValue]),
    resource: &mut Vec<KeyValue>,
    key: &mut Vec<u8>,
) -> LogRecord {
    let parsed = match spec.body {
        Body::Map => value::parse_with(raw, spare).ok(),
        // Only the fields the sink reads (a record the quick reading refuses is read whole).
        Body::String => select::parse(raw, wanted, spare)
            .or_else(|_| value::parse_with(raw, spare))
            .ok(),
    };
    let mut lr = spare.record();
    lr.time_unix_nano = u64::try_from(time_ns).unwrap_or(0);
    lr.observed_time_unix_nano = u64::try_from(observed_ns).unwrap_or(0);
    key.clear();
    let level = match &parsed {
        Some(rec) => {
            for p in &spec.attributes {
                if let Some(v) = field(rec, p) {
                    let value = spare.copy(v);
                    lr.attributes.push(KeyValue {
                        key: spare.string(&p.key),
                        value: Some(value),
                        ..Default::default()
                    });
                }
            }
            for p in &spec.resource_fields {
                // A value equal to the static one of the same name is the static resource's
                // (not a second resource with the same attributes in another order).
                let same = |v: &AnyValue| {
                    base.iter()
                        .any(|b| b.key == p.key && b.value.as_ref() == Some(v))
                };
                if let Some(v) = field(rec, p).filter(|v| !same(v)) {
                    let value = spare.copy(v);
                    let kv = KeyValue {
                        key: spare.string(&p.key),
                        value: Some(value),
                        ..Default::default()
                    };
                    // Records with the same values share a resource. Encoding into a Vec
                    // cannot fail.
                    let _ = kv.encode_length_delimited(key);
                    resource.push(kv);
                }
            }
            if let Some(p) = &spec.event_name {
                if let Some(t) = field(rec, p).and_then(text) {
                    lr.event_name.push_str(&t);
                }
            }
            spec.severity.of(|p| field(rec, p).and_then(text))
        }
        None => spec.severity.default,
    };
    lr.severity_number = level.number();
    lr.severity_text.push_str(level.name());
    lr.body = Some(match (spec.body, parsed) {
        (Body::Map, Some(v)) => v,
        (_, parsed) => {
            if let Some(v) = parsed {
                spare.keep(v);
            }
            // Not JSON (or a string body): the record's text as it is.
            value::string(match std::str::from_utf8(raw) {
                Ok(text) => spare.string(text),
                Err(_) => String::from_utf8_lossy(raw).into_owned(),
            })
        }
    });
    lr
}

/// A batch's records mapped, grouped by resource: each group's resource and its records as
/// `each` made them.
struct Grouped<T> {
    resources: Vec<Resource>,
    records: Vec<Vec<T>>,
}

fn map_all<T>(
    spec: &Spec,
    r: &Records,
    mut each: impl FnMut(LogRecord, &mut Spare) -> T,
) -> Result<Grouped<T>, MapError> {
    let n = r.offsets.len().saturating_sub(1);
    if r.times.len() != n || r.observed.len() != n {
        return Err(MapError::Times {
            records: n,
            times: r.times.len().min(r.observed.len()),
        });
    }
    let base = base_resource(spec, &r.source);
    let mut out = Grouped {
        resources: Vec::new(),
        records: Vec::new(),
    };
    let mut index: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut key = Vec::new();
    let mut fields = Vec::new();
    let mut spare = Spare::default();
    let wanted = Wanted::new(
        spec.attributes
            .iter()
            .chain(&spec.resource_fields)
            .chain(&spec.event_name)
            .chain(&spec.severity.fields),
    );
    for i in 0..n {
        let (a, b) = (r.offsets[i], r.offsets[i + 1]);
        let (Ok(a), Ok(b)) = (usize::try_from(a), usize::try_from(b)) else {
            return Err(MapError::Offsets);
        };
        let raw = r.values.get(a..b).ok_or(MapError::Offsets)?;
        let lr = map_one(
            spec,
            raw,
            (r.times[i], r.observed[i]),
            &mut spare,
            (&wanted, &base),
            &mut fields,
            &mut key,
        );
        let g = match index.get(&key) {
            Some(g) => *g,
            None => {
                let mut attributes = base.clone();
                // A record's own value wins over a static one of the same name.
                attributes.retain(|a| !fields.iter().any(|f| f.key == a.key));
                attributes.extend(fields.iter().cloned());
                out.resources.push(Resource {
                    attributes,
                    ..Default::default()
                });
                out.records.push(Vec::new());
                index.insert(key.clone(), out.resources.len() - 1);
                out.resources.len() - 1
            }
        };
        for kv in fields.drain(..) {
            spare.keep_member(kv);
        }
        out.records[g].push(each(lr, &mut spare));
    }
    Ok(out)
}

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "logferry".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    }
}

/// The request for a batch's records.
pub fn request(spec: &Spec, r: &Records) -> Result<ExportLogsServiceRequest, MapError> {
    let g = map_all(spec, r, |lr, _| lr)?;
    let scope = scope();
    Ok(ExportLogsServiceRequest {
        resource_logs: g
            .resources
            .into_iter()
            .zip(g.records)
            .map(|(resource, log_records)| ResourceLogs {
                resource: Some(resource),
                scope_logs: vec![ScopeLogs {
                    scope: Some(scope.clone()),
                    log_records,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    })
}

// The request's three outer messages with their log records already encoded: each record is
// written by the official `LogRecord` type as soon as it is mapped (its tree then freed), and
// protobuf writes an embedded message exactly as a bytes field of the same number, so the
// request is the one `request` would make (a test decodes it with the official types). prost
// sizes every embedded message again at each level above it; this spares the four outer ones.

#[derive(Clone, PartialEq, prost::Message)]
struct EncodedScopeLogs {
    #[prost(message, optional, tag = "1")]
    scope: Option<InstrumentationScope>,
    /// `ScopeLogs.log_records` (field 2), each an encoded `LogRecord`.
    #[prost(bytes = "vec", repeated, tag = "2")]
    log_records: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct EncodedResourceLogs {
    #[prost(message, optional, tag = "1")]
    resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    scope_logs: Vec<EncodedScopeLogs>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct EncodedRequest {
    #[prost(message, repeated, tag = "1")]
    resource_logs: Vec<EncodedResourceLogs>,
}

/// The request for a batch's records, in protobuf.
pub fn protobuf(spec: &Spec, r: &Records) -> Result<Vec<u8>, MapError> {
    let g = map_all(spec, r, |lr, spare| {
        let bytes = lr.encode_to_vec();
        spare.keep_record(lr);
        bytes
    })?;
    let scope = scope();
    let req = EncodedRequest {
        resource_logs: g
            .resources
            .into_iter()
            .zip(g.records)
            .map(|(resource, log_records)| EncodedResourceLogs {
                resource: Some(resource),
                scope_logs: vec![EncodedScopeLogs {
                    scope: Some(scope.clone()),
                    log_records,
                }],
            })
            .collect(),
    };
    Ok(req.encode_to_vec())
}
