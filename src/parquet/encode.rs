//! Builds one Parquet file from a sealed batch's records, column by column, on a compression
//! thread. A value that does not fit its column's type is null there and counted; the record
//! itself is always whole in `record`.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::builder::{
    ArrayBuilder, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, GzipLevel, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::extract::{Extractor, Row, Scalar};
use super::schema::{Codec, ColType, Spec, SPREAD};

/// A sealed batch's records for the encoder: NDJSON lines (whole records, `\n`-ended) in
/// blocks, each record's time in microseconds, and the source.
pub struct Records {
    pub blocks: Vec<Vec<u8>>,
    pub times: Vec<i64>,
    pub source: String,
}

/// Why a batch could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("cannot encode a Parquet file: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("cannot write a Parquet file: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("a batch holds {records} records and {times} times")]
    Times { records: usize, times: usize },
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

/// Encodes `records` as one Parquet file under `spec`. Each block is freed once its records
/// are in the columns, so the batch is held about once, not twice.
pub fn encode(spec: &Spec, records: Records) -> Result<Encoded, EncodeError> {
    let lines_of = |b: &[u8]| b.split(|c| *c == b'\n').filter(|l| !l.is_empty()).count();
    let rows = records.times.len();
    let counted: usize = records.blocks.iter().map(|b| lines_of(b)).sum();
    if counted != rows {
        return Err(EncodeError::Times {
            records: counted,
            times: rows,
        });
    }
    let paths: Vec<&str> = spec.columns.iter().map(|c| c.field.as_str()).collect();
    let x = Extractor::new(&paths, spec.spread.then_some(SPREAD));
    // Nothing to read out of the records: they are not parsed at all.
    let parse = !paths.is_empty() || spec.spread;
    let mut row = Row::default();
    let mut time = TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC");
    let mut source = StringBuilder::with_capacity(rows, rows * records.source.len());
    let bytes: usize = records.blocks.iter().map(Vec::len).sum();
    let mut record = StringBuilder::with_capacity(rows, bytes);
    let mut typed: Vec<Builder> = spec
        .columns
        .iter()
        .map(|c| Builder::new(c.ty, rows))
        .collect();
    // Flattened members by name: each column is back-filled with nulls for earlier rows.
    let mut spread: BTreeMap<String, StringBuilder> = BTreeMap::new();
    let mut mistyped = 0u64;
    let mut i = 0usize;
    let times = records.times;
    for block in records.blocks {
        for line in block.split(|c| *c == b'\n').filter(|l| !l.is_empty()) {
            time.append_value(times[i]);
            source.append_value(&records.source);
            record.append_value(String::from_utf8_lossy(line));
            if parse {
                x.extract(line, &mut row);
                for (b, v) in typed.iter_mut().zip(&row.values) {
                    mistyped += u64::from(!b.push(v));
                }
                for (name, text) in row.spread.drain(..) {
                    let col = spread.entry(name).or_insert_with(|| {
                        let mut b = StringBuilder::with_capacity(rows, rows * 8);
                        b.append_nulls(i);
                        b
                    });
                    // A member named twice in one record: the first one stands.
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
            i += 1;
        }
        // `block` is freed here: its records are in the columns now.
    }
    let names: Vec<String> = spread.keys().cloned().collect();
    let schema = spec.arrow(&names);
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(time.finish()),
        Arc::new(source.finish()),
        Arc::new(record.finish()),
    ];
    columns.extend(typed.into_iter().map(Builder::finish));
    columns.extend(
        spread
            .into_values()
            .map(|mut b| Arc::new(b.finish()) as ArrayRef),
    );
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    drop(row);
    // `record` is nearly unique per row: a dictionary and min/max statistics of whole records
    // cost time and bytes for nothing.
    let whole = parquet::schema::types::ColumnPath::from("record");
    let props = WriterProperties::builder()
        .set_compression(codec(spec))
        .set_dictionary_enabled(true)
        .set_column_dictionary_enabled(whole.clone(), false)
        .set_column_statistics_enabled(whole, parquet::file::properties::EnabledStatistics::None)
        .set_created_by(concat!("logferry ", env!("CARGO_PKG_VERSION")).into())
        .build();
    let mut out = Vec::with_capacity(bytes / 6);
    let mut w = ArrowWriter::try_new(&mut out, schema, Some(props))?;
    w.write(&batch)?;
    w.close()?;
    Ok(Encoded {
        bytes: out,
        mistyped,
    })
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
