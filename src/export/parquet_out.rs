//! `export --format parquet`: the exported records as one Parquet file, with the sink's typed
//! columns (its Parquet spec, or the generic schema), written a row group at a time.

use std::io::Write;

use parquet::arrow::ArrowWriter;

use crate::fields::Fields;
use crate::parquet::encode::{batch, properties, Records};
use crate::parquet::Spec;

/// Records are held until this many bytes make a row group.
const ROW_GROUP: usize = 32 << 20;

/// Takes NDJSON records (as `export` writes them) and writes a Parquet file to `W`.
pub struct ParquetOut<W: Write + Send> {
    spec: Spec,
    writer: Option<ArrowWriter<W>>,
    out: Option<W>,
    source: String,
    times: Fields,
    /// A record without a readable time gets this one (the range's start).
    default_time: i64,
    values: Vec<u8>,
    offsets: Vec<i32>,
    stamps: Vec<i64>,
    partial: Vec<u8>,
    pub mistyped: u64,
}

impl<W: Write + Send> ParquetOut<W> {
    /// `spec`'s flattened members are left out: one file has one schema.
    pub fn new(
        mut spec: Spec,
        out: W,
        source: String,
        timestamp_field: Option<&str>,
        timestamp_format: Option<&str>,
        default_time: chrono::DateTime<chrono::Utc>,
    ) -> Self {
        spec.spread = false;
        let mut times = Fields::new(&[], timestamp_field);
        times.set_time_format(timestamp_format);
        ParquetOut {
            spec,
            writer: None,
            out: Some(out),
            source,
            times,
            default_time: default_time.timestamp_micros(),
            values: Vec::new(),
            offsets: vec![0],
            stamps: Vec::new(),
            partial: Vec::new(),
            mistyped: 0,
        }
    }

    fn record(&mut self, line: &[u8]) -> std::io::Result<()> {
        if line.is_empty() {
            return Ok(());
        }
        self.times.extract(line);
        let t = self
            .times
            .time()
            .map_or(self.default_time, |t| t.timestamp_micros());
        self.values.extend_from_slice(line);
        let end = i32::try_from(self.values.len())
            .map_err(|_| std::io::Error::other("a row group past 2 GiB"))?;
        self.offsets.push(end);
        self.stamps.push(t);
        if self.values.len() >= ROW_GROUP {
            self.flush_group()?;
        }
        Ok(())
    }

    fn flush_group(&mut self) -> std::io::Result<()> {
        if self.stamps.is_empty() {
            return Ok(());
        }
        let records = Records {
            values: std::mem::take(&mut self.values),
            offsets: std::mem::replace(&mut self.offsets, vec![0]),
            times: std::mem::take(&mut self.stamps),
            observed: Vec::new(),
            source: self.source.clone(),
        };
        let (b, mistyped) = batch(&self.spec, records).map_err(std::io::Error::other)?;
        self.mistyped += mistyped;
        if self.writer.is_none() {
            let out = self
                .out
                .take()
                .ok_or_else(|| std::io::Error::other("the Parquet output is closed"))?;
            self.writer = Some(
                ArrowWriter::try_new(out, b.schema(), Some(properties(&self.spec)))
                    .map_err(std::io::Error::other)?,
            );
        }
        if let Some(w) = self.writer.as_mut() {
            w.write(&b).map_err(std::io::Error::other)?;
            // Each batch its own row group: memory stays at one.
            w.flush().map_err(std::io::Error::other)?;
        }
        Ok(())
    }

    /// Writes what is held and the footer; returns the inner writer.
    pub fn finish(mut self) -> std::io::Result<W> {
        if !self.partial.is_empty() {
            let last = std::mem::take(&mut self.partial);
            self.record(&last)?;
        }
        self.flush_group()?;
        if self.writer.is_none() {
            // No record at all: a file with the schema and no rows.
            let schema = self.spec.arrow(&[]);
            let out = self
                .out
                .take()
                .ok_or_else(|| std::io::Error::other("the Parquet output is closed"))?;
            self.writer = Some(
                ArrowWriter::try_new(out, schema, Some(properties(&self.spec)))
                    .map_err(std::io::Error::other)?,
            );
        }
        match self.writer.take() {
            Some(w) => w.into_inner().map_err(std::io::Error::other),
            None => Err(std::io::Error::other("the Parquet output is closed")),
        }
    }
}

impl<W: Write + Send> Write for ParquetOut<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut rest = buf;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            if self.partial.is_empty() {
                self.record(&rest[..i])?;
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&rest[..i]);
                self.record(&line)?;
            }
            rest = &rest[i + 1..];
        }
        self.partial.extend_from_slice(rest);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
