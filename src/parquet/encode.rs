//! Builds one Parquet file from a sealed batch's records, column by column, on a compression
//! thread. A value that does not fit its column's type is null there and counted; the record
//! itself is always whole in `record`.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::builder::{
    ArrayBuilder, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch, StringArray};
use arrow_buffer::{Buffer, OffsetBuffer, ScalarBuffer};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, GzipLevel, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::extract::{Extractor, Row, Scalar};
use super::schema::{Codec, ColType, Spec, SPREAD};

pub use crate::whole::Records;

/// Why a batch could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("cannot encode a Parquet file: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("cannot write a Parquet file: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("a batch holds {records} records and {times} times")]
    Times { records: usize, times: usize },
    #[error("a batch's record offsets are out of order")]
    Offsets,
}

/// A built file and the number of values left null because they did not fit their column.
pub struct Encoded {
    pub bytes: Vec<u8>,
    pub mistyped: u64,
}

enum Builder {
    String(StringBuilder),
    Int64(Int64Builder),
    Float64(Float64Builder),
    Bool(BooleanBuilder),
    Timestamp(TimestampMicrosecondBuilder),
}

impl Builder {
    fn new(ty: ColType, rows: usize) -> Builder {
        match ty {
            ColType::String => Builder::String(StringBuilder::with_capacity(rows, rows * 16)),
            ColType::Int64 => Builder::Int64(Int64Builder::with_capacity(rows)),
            ColType::Float64 => Builder::Float64(Float64Builder::with_capacity(rows)),
            ColType::Bool => Builder::Bool(BooleanBuilder::with_capacity(rows)),
            ColType::Timestamp => Builder::Timestamp(
                TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC"),
            ),
        }
    }

    /// Appends `v`; `false` when it is there but does not fit (appended as null).
    fn push(&mut self, v: &Scalar) -> bool {
        let absent = matches!(v, Scalar::Missing | Scalar::Null);
        match (self, v) {
            (Builder::String(b), Scalar::Str(s)) => {
                b.append_value(s);
                true
            }
            (Builder::String(b), Scalar::Int(i)) => {
                b.append_value(i.to_string());
                true
            }
            (Builder::String(b), Scalar::Big(u)) => {
                b.append_value(u.to_string());
                true
            }
            (Builder::Float64(b), Scalar::Big(u)) => {
                b.append_value(*u as f64);
                true
            }
            (Builder::String(b), Scalar::Float(f)) => {
                b.append_value(f.to_string());
                true
            }
            (Builder::String(b), Scalar::Bool(x)) => {
                b.append_value(if *x { "true" } else { "false" });
                true
            }
            (Builder::Int64(b), Scalar::Int(i)) => {
                b.append_value(*i);
                true
            }
            (Builder::Float64(b), Scalar::Float(f)) => {
                b.append_value(*f);
                true
            }
            (Builder::Float64(b), Scalar::Int(i)) => {
                b.append_value(*i as f64);
                true
            }
            (Builder::Bool(b), Scalar::Bool(x)) => {
                b.append_value(*x);
                true
            }
            (Builder::Timestamp(b), v) => match timestamp_of(v) {
                Some(t) => {
                    b.append_value(t);
                    true
                }
                None => {
                    b.append_null();
                    absent
                }
            },
            (b, _) => {
                b.append_null();
                absent
            }
        }
    }

    fn finish(self) -> ArrayRef {
        match self {
            Builder::String(mut b) => Arc::new(b.finish()),
            Builder::Int64(mut b) => Arc::new(b.finish()),
            Builder::Float64(mut b) => Arc::new(b.finish()),
            Builder::Bool(mut b) => Arc::new(b.finish()),
            Builder::Timestamp(mut b) => Arc::new(b.finish()),
        }
    }

    fn append_null(&mut self) {
        match self {
            Builder::String(b) => b.append_null(),
            Builder::Int64(b) => b.append_null(),
            Builder::Float64(b) => b.append_null(),
            Builder::Bool(b) => b.append_null(),
            Builder::Timestamp(b) => b.append_null(),
        }
    }
}

/// A timestamp column's value: an RFC 3339 (or other understood) text, or epoch seconds or
/// milliseconds as `timestamp_field` reads them.
fn timestamp_of(v: &Scalar) -> Option<i64> {
    let t = match v {
        Scalar::Str(s) => crate::timefmt::parse_time(s)?,
        Scalar::Int(i) => crate::timefmt::parse_time(&i.to_string())?,
        Scalar::Float(f) => crate::timefmt::parse_time(&f.to_string())?,
        _ => return None,
    };
    Some(t.timestamp_micros())
}

/// The most `context_*` columns one file gets; further member names stay in `record` only.
pub const MAX_SPREAD: usize = 64;

/// A flattened member's column name: lowercase letters, digits and `_` (engines fold case and
/// take no dots or spaces), at most 64 bytes; `None` for an empty name.
fn column_name(member: &str) -> Option<String> {
    let n: String = member
        .chars()
        .take(64)
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '_' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '_',
        })
        .collect();
    (!n.is_empty()).then_some(n)
}

/// Encodes `records` as one Parquet file under `spec`. The records' bytes become the `record`
/// column as they are (no copy when they are valid UTF-8, which the decoder makes them).
pub fn encode(spec: &Spec, records: Records) -> Result<Encoded, EncodeError> {
    let (batch, mistyped) = batch(spec, records)?;
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, batch.schema(), Some(properties(spec)))?;
    w.write(&batch)?;
    w.close()?;
    Ok(Encoded {
        bytes: out,
        mistyped,
    })
}

/// How logferry writes its files: the sink's codec, dictionaries for repetitive strings.
pub fn properties(spec: &Spec) -> WriterProperties {
    // `record` is nearly unique per row: a dictionary and min/max statistics of whole records
    // cost time and bytes for nothing.
    let whole = parquet::schema::types::ColumnPath::from("record");
    WriterProperties::builder()
        .set_compression(codec(spec))
        .set_dictionary_enabled(true)
        .set_column_dictionary_enabled(whole.clone(), false)
        .set_column_statistics_enabled(whole, parquet::file::properties::EnabledStatistics::None)
        .set_created_by(concat!("logferry ", env!("CARGO_PKG_VERSION")).into())
        .build()
}

/// The records as one record batch of `spec`'s schema (with the flattened members found, when
/// `spec.spread`), and the count of values that did not fit their column.
pub fn batch(spec: &Spec, records: Records) -> Result<(RecordBatch, u64), EncodeError> {
    let rows = records.times.len();
    if records.offsets.len() != rows + 1 {
        return Err(EncodeError::Times {
            records: records.offsets.len().saturating_sub(1),
            times: rows,
        });
    }
    let bounds = |i: usize| -> Result<(usize, usize), EncodeError> {
        let (a, b) = (records.offsets[i], records.offsets[i + 1]);
        match (usize::try_from(a), usize::try_from(b)) {
            (Ok(a), Ok(b)) if a <= b && b <= records.values.len() => Ok((a, b)),
            _ => Err(EncodeError::Offsets),
        }
    };
    let paths: Vec<&str> = spec.columns.iter().map(|c| c.field.as_str()).collect();
    let x = Extractor::new(&paths, spec.spread.then_some(SPREAD));
    // Nothing to read out of the records: they are not parsed at all.
    let parse = !paths.is_empty() || spec.spread;
    let mut row = Row::default();
    let mut time = TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC");
    let mut source = StringBuilder::with_capacity(rows, rows * records.source.len());
    let mut typed: Vec<Builder> = spec
        .columns
        .iter()
        .map(|c| Builder::new(c.ty, rows))
        .collect();
    // Flattened members by name: each column is back-filled with nulls for earlier rows.
    let mut spread: BTreeMap<String, StringBuilder> = BTreeMap::new();
    let mut mistyped = 0u64;
    for i in 0..rows {
        let (a, b) = bounds(i)?;
        time.append_value(records.times[i]);
        source.append_value(&records.source);
        if !parse {
            continue;
        }
        let rec = &records.values[a..b];
        if !x.extract(rec, &mut row) && rec.first() == Some(&b'{') {
            // An object serde cannot read whole: every typed column of the row is null,
            // and counted (the record is whole in `record`).
            mistyped += typed.len() as u64;
        }
        for (col, v) in typed.iter_mut().zip(&row.values) {
            mistyped += u64::from(!col.push(v));
        }
        for (name, text) in row.spread.drain(..) {
            let Some(name) = column_name(&name) else {
                continue;
            };
            if !spread.contains_key(&name) && spread.len() >= MAX_SPREAD {
                // Past the cap the member is only in `record`: a batch of ever new names
                // must not grow columns times rows.
                continue;
            }
            let col = spread.entry(name).or_insert_with(|| {
                let mut c = StringBuilder::with_capacity(rows, rows * 8);
                c.append_nulls(i);
                c
            });
            // A member named twice in one record (or two names that clean alike): the first
            // one stands.
            if col.len() <= i {
                col.append_value(text);
            }
        }
        for col in spread.values_mut() {
            if col.len() <= i {
                col.append_null();
            }
        }
    }
    drop(row);
    let record = record_column(records.values, records.offsets)?;
    let names: Vec<String> = spread.keys().cloned().collect();
    let schema = spec.arrow(&names);
    let mut columns: Vec<ArrayRef> =
        vec![Arc::new(time.finish()), Arc::new(source.finish()), record];
    columns.extend(typed.into_iter().map(Builder::finish));
    columns.extend(
        spread
            .into_values()
            .map(|mut b| Arc::new(b.finish()) as ArrayRef),
    );
    Ok((RecordBatch::try_new(schema, columns)?, mistyped))
}

/// The `record` column from the records' own bytes: taken as they are when they are valid
/// UTF-8, else each one with invalid sequences replaced.
fn record_column(values: Vec<u8>, offsets: Vec<i32>) -> Result<ArrayRef, EncodeError> {
    if std::str::from_utf8(&values).is_ok() {
        let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
        return Ok(Arc::new(StringArray::try_new(
            offsets,
            Buffer::from_vec(values),
            None,
        )?));
    }
    let mut b = StringBuilder::with_capacity(offsets.len(), values.len());
    for w in offsets.windows(2) {
        let (a, z) = (w[0] as usize, w[1] as usize);
        b.append_value(String::from_utf8_lossy(
            values.get(a..z).unwrap_or_default(),
        ));
    }
    Ok(Arc::new(b.finish()))
}

fn codec(spec: &Spec) -> Compression {
    match spec.codec {
        Codec::Zstd => Compression::ZSTD(
            spec.level
                .and_then(|l| ZstdLevel::try_new(l).ok())
                .unwrap_or_default(),
        ),
        Codec::Gzip => Compression::GZIP(
            spec.level
                .and_then(|l| GzipLevel::try_new(l.clamp(0, 9) as u32).ok())
                .unwrap_or_default(),
        ),
        Codec::Snappy => Compression::SNAPPY,
        Codec::None => Compression::UNCOMPRESSED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parquet::schema::{Column, SchemaName};
    use arrow_array::{Array, StringArray};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    fn records(lines: &[String]) -> Records {
        let mut values = Vec::new();
        let mut offsets = vec![0i32];
        for l in lines {
            values.extend_from_slice(l.as_bytes());
            offsets.push(values.len() as i32);
        }
        Records {
            values,
            offsets,
            times: vec![0; lines.len()],
            observed: Vec::new(),
            source: "s".into(),
        }
    }

    fn read(bytes: Vec<u8>) -> RecordBatch {
        let mut r = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
            .unwrap()
            .build()
            .unwrap();
        r.next().unwrap().unwrap()
    }

    #[test]
    fn flattened_names_are_cleaned_folded_and_capped() {
        let spec = Spec::new(Codec::Zstd, None, SchemaName::PlatformJob, &[], vec![]);
        let mut lines: Vec<String> = (0..200)
            .map(|i| format!(r#"{{"id":"j{i}","context":{{"k{i}":"v","Region":"eu","a.b c":1}}}}"#))
            .collect();
        lines.push(r#"{"id":"x","context":{"region":"us","":"empty"}}"#.into());
        let e = encode(&spec, records(&lines)).unwrap();
        let b = read(e.bytes);
        let spread: Vec<String> = b
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .filter(|n| n.starts_with("context_"))
            .collect();
        assert_eq!(spread.len(), MAX_SPREAD, "{spread:?}");
        assert!(spread.contains(&"context_region".to_string()));
        assert!(spread.contains(&"context_a_b_c".to_string()));
        assert!(spread.iter().all(|n| n
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')));
        let region = b
            .column_by_name("context_region")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        // "Region" and "region" fold alike: one column, the record's own values.
        assert_eq!(region.value(0), "eu");
        assert_eq!(region.value(200), "us");
        // Every record whole, whatever became of its members.
        let rec = b
            .column_by_name("record")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(rec.value(150), lines[150]);
    }

    #[test]
    fn an_unreadable_object_nulls_and_counts_its_typed_columns_and_big_integers_stay_exact() {
        let user = vec![
            Column {
                name: "n".into(),
                field: "n".into(),
                ty: ColType::String,
            },
            Column {
                name: "id".into(),
                field: "id".into(),
                ty: ColType::String,
            },
        ];
        let spec = Spec::new(Codec::Zstd, None, SchemaName::Generic, &[], user);
        let lines = vec![
            r#"{"id":"a","n":18446744073709551615}"#.to_string(),
            r#"{"id":"b","n":1e400}"#.to_string(),
        ];
        let e = encode(&spec, records(&lines)).unwrap();
        assert_eq!(e.mistyped, 2, "both columns of the unreadable record");
        let b = read(e.bytes);
        let n = b
            .column_by_name("n")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(n.value(0), "18446744073709551615");
        assert!(n.is_null(1));
    }
}
