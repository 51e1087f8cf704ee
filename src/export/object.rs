//! One archive object to records: decrypted when sealed, decompressed (gzip members, zstd
//! frames, or a Parquet file's `record` column), and the records of the selection passed on.

use std::io::Write;

use chrono::{DateTime, Utc};
use logferry_sink::Compression;
use logferry_vault::crypt::{decrypt as decrypt_stream, CryptError, Header};
use logferry_vault::keys::KeyRing;
use logferry_vault::ledger::LedgerError;

use super::filter::Filter;

/// How one object's records are read.
pub struct Reading<'a> {
    pub compression: Compression,
    pub parquet: bool,
    pub keys: Option<&'a KeyRing>,
    /// Checks a sealed object's header against the place it was read from.
    pub place: &'a dyn Fn(&Header, &str) -> Result<(), String>,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// The object's unit lies inside the range: no record's time needs reading.
    pub whole: bool,
    /// The unit's start, the time of a record that has none.
    pub unit_start: DateTime<Utc>,
    /// The sink encrypts: an object that is not sealed was not written by it.
    pub sealed_only: bool,
    /// A record longer than this ends the object as unreadable (a line without end cannot
    /// make the reader hold it all).
    pub max_record: usize,
}

/// Why an object could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// Its tenant-hour's key was shredded: erased on purpose.
    #[error("erased: the key of tenant {tenant:?} hour {hour} was shredded")]
    Erased {
        tenant: String,
        hour: String,
        key_id: String,
    },
    #[error("{0}")]
    Unreadable(String),
    /// Writing the output failed (the export stops).
    #[error("writing the output: {0}")]
    Output(std::io::Error),
}

/// Counts of one object.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    pub records: u64,
    pub bytes: u64,
    /// The data key it was sealed under (tenant, hour, key id).
    pub key: Option<(String, String, String)>,
}

/// Reads `bytes` (the object as stored) and gives each selected record, newline included, to
/// `out`.
pub fn read_object(
    key: &str,
    bytes: Vec<u8>,
    how: &Reading<'_>,
    filter: &mut Filter,
    handle: &tokio::runtime::Handle,
    out: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
) -> Result<Counts, ObjectError> {
    let unreadable = |e: &dyn std::fmt::Display| ObjectError::Unreadable(e.to_string());
    let mut counts = Counts::default();
    let sealed = key.ends_with(logferry_vault::encrypted::SUFFIX);
    let mut lines = Lines {
        how,
        filter,
        out,
        partial: Vec::new(),
        tail_open: false,
        counts: &mut counts,
        failed: None,
    };
    if !sealed && how.sealed_only {
        return Err(unreadable(
            &"not encrypted, in a sink that encrypts everything it writes: not written by it",
        ));
    }
    if sealed {
        let ring = how
            .keys
            .ok_or_else(|| unreadable(&"sealed, and the sink's KEK is not at hand"))?;
        let mut input = std::io::Cursor::new(&bytes[..]);
        let (header, _) = Header::read(&mut input).map_err(|e| unreadable(&e))?;
        let key_of = handle.block_on(ring.open(&header.tenant, &header.hour, &header.key_id));
        let data_key = match key_of {
            Ok(k) => k,
            Err(LedgerError::Shredded { tenant, hour }) => {
                return Err(ObjectError::Erased {
                    tenant,
                    hour,
                    key_id: header.key_id.clone(),
                })
            }
            Err(e) => return Err(unreadable(&e)),
        };
        (how.place)(&header, key).map_err(ObjectError::Unreadable)?;
        lines.counts.key = Some((
            header.tenant.clone(),
            header.hour.clone(),
            header.key_id.clone(),
        ));
        let mut input = std::io::Cursor::new(&bytes[..]);
        if how.parquet {
            let mut plain = Vec::new();
            decrypt_stream(&mut input, &mut plain, |_| Ok::<_, CryptError>(data_key))
                .map_err(|e| unreadable(&e))?;
            drop(bytes);
            parquet_records(plain, &mut lines)?;
        } else {
            let r = decompress_into(how.compression, &mut lines, |w| {
                decrypt_stream(&mut input, &mut &mut *w, |_| Ok::<_, CryptError>(data_key))
                    .map(|_| ())
                    .map_err(|e| match e {
                        CryptError::Io(m) => std::io::Error::other(m),
                        other => std::io::Error::other(other.to_string()),
                    })
            });
            finish(r, &mut lines)?;
        }
    } else if how.parquet {
        parquet_records(bytes, &mut lines)?;
    } else {
        let r = decompress_into(how.compression, &mut lines, |w| w.write_all(&bytes));
        finish(r, &mut lines)?;
    }
    Ok(counts)
}

fn finish(r: std::io::Result<()>, lines: &mut Lines<'_, '_>) -> Result<(), ObjectError> {
    if let Some(e) = lines.failed.take() {
        return Err(ObjectError::Output(e));
    }
    r.map_err(|e| ObjectError::Unreadable(e.to_string()))?;
    lines.end().map_err(ObjectError::Output)
}

/// Runs `feed` with a writer that decompresses into `lines`.
fn decompress_into(
    c: Compression,
    lines: &mut Lines<'_, '_>,
    feed: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    match c {
        Compression::Gzip => {
            let mut d = flate2::write::MultiGzDecoder::new(lines);
            feed(&mut d)?;
            d.try_finish()
        }
        Compression::Zstd => {
            let mut d = zstd::stream::write::Decoder::new(lines)?;
            feed(&mut d)?;
            d.flush()
        }
        Compression::None => feed(lines),
    }
}

/// The `_time` and `record` columns of a Parquet file, as records.
fn parquet_records(bytes: Vec<u8>, lines: &mut Lines<'_, '_>) -> Result<(), ObjectError> {
    use arrow_array::{Array, StringArray, TimestampMicrosecondArray};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::arrow::ProjectionMask;
    let bad = |e: &dyn std::fmt::Display| {
        ObjectError::Unreadable(format!("not a Parquet file logferry wrote: {e}"))
    };
    let b =
        ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes)).map_err(|e| bad(&e))?;
    let schema = b.parquet_schema();
    let idx = |name: &str| {
        (0..schema.num_columns()).find(|i| {
            schema.column(*i).name() == name && schema.column(*i).path().parts().len() == 1
        })
    };
    let (Some(t), Some(r)) = (idx("_time"), idx("record")) else {
        return Err(bad(&"no _time and record columns"));
    };
    let mask = ProjectionMask::leaves(schema, [t, r]);
    let reader = b
        .with_projection(mask)
        .with_batch_size(4096)
        .build()
        .map_err(|e| bad(&e))?;
    let mut line = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| bad(&e))?;
        let times = batch
            .column_by_name("_time")
            .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
            .ok_or_else(|| bad(&"_time is not a timestamp in microseconds"))?;
        let records = batch
            .column_by_name("record")
            .and_then(|c| c.as_any().downcast_ref::<StringArray>())
            .ok_or_else(|| bad(&"record is not a string column"))?;
        for i in 0..batch.num_rows() {
            if records.is_null(i) {
                continue;
            }
            let time = (!times.is_null(i))
                .then(|| DateTime::<Utc>::from_timestamp_micros(times.value(i)))
                .flatten();
            line.clear();
            line.extend_from_slice(records.value(i).as_bytes());
            line.push(b'\n');
            lines.record(&line, time).map_err(ObjectError::Output)?;
        }
    }
    Ok(())
}

/// Decompressed bytes in, selected records out.
struct Lines<'a, 'o> {
    how: &'a Reading<'a>,
    filter: &'a mut Filter,
    out: &'o mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    partial: Vec<u8>,
    /// Passing bytes as they are, the last ones written did not end a record.
    tail_open: bool,
    counts: &'a mut Counts,
    /// The output failed: the error to report rather than the decoder's.
    failed: Option<std::io::Error>,
}

impl Lines<'_, '_> {
    /// One record with its newline; `time` when the file gives it (Parquet's `_time`).
    fn record(&mut self, line: &[u8], time: Option<DateTime<Utc>>) -> std::io::Result<()> {
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        if body.is_empty() {
            return Ok(());
        }
        let needs_time = !self.how.whole;
        if needs_time || self.filter.has_conditions() {
            self.filter.read(body);
            if !self.filter.matches() {
                return Ok(());
            }
            if needs_time {
                let t = time
                    .or_else(|| self.filter.time())
                    .unwrap_or(self.how.unit_start);
                if t < self.how.from || t >= self.how.to {
                    return Ok(());
                }
            }
        }
        self.counts.records += 1;
        self.counts.bytes += line.len() as u64;
        (self.out)(line)
    }

    fn end(&mut self) -> std::io::Result<()> {
        if self.tail_open {
            // The object's last record had no newline: it gets one.
            self.tail_open = false;
            self.counts.records += 1;
            self.counts.bytes += 1;
            return (self.out)(b"\n");
        }
        if self.partial.is_empty() {
            return Ok(());
        }
        let mut last = std::mem::take(&mut self.partial);
        last.push(b'\n');
        self.record(&last, None)
    }

    fn lines(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let mut rest = buf;
        if !self.partial.is_empty() {
            match memchr(rest) {
                Some(i) => {
                    let mut line = std::mem::take(&mut self.partial);
                    line.extend_from_slice(&rest[..=i]);
                    self.record(&line, None)?;
                    rest = &rest[i + 1..];
                }
                None => {
                    self.partial.extend_from_slice(rest);
                    return self.check_partial();
                }
            }
        }
        while let Some(i) = memchr(rest) {
            self.record(&rest[..=i], None)?;
            rest = &rest[i + 1..];
        }
        self.partial.extend_from_slice(rest);
        self.check_partial()
    }

    fn check_partial(&self) -> std::io::Result<()> {
        if self.partial.len() > self.how.max_record {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "a record longer than {} bytes: not one logferry wrote",
                    self.how.max_record
                ),
            ));
        }
        Ok(())
    }
}

fn memchr(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}

impl Write for Lines<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let res = if self.how.whole && !self.filter.has_conditions() {
            // The whole object is selected: its bytes pass as they are, counted by newline.
            let n = buf.iter().filter(|&&c| c == b'\n').count() as u64;
            self.counts.records += n;
            self.counts.bytes += buf.len() as u64;
            if !buf.is_empty() {
                // A record cut by the buffer's end: counted when its newline comes.
                self.tail_open = buf.last() != Some(&b'\n');
            }
            (self.out)(buf)
        } else {
            self.lines(buf)
        };
        match res {
            Ok(()) => Ok(buf.len()),
            Err(e) => {
                let kind = e.kind();
                self.failed = Some(e);
                Err(std::io::Error::new(kind, "the output failed"))
            }
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
