//! Payload layout and compression.
//!
//! A batch's uncompressed payload is `head`, then one record per line, then `tail`: for ndjson
//! head and tail are empty and every record ends in `\n`; for a JSON array the head is `[\n` (after
//! an envelope's text, if any), records are separated by `,\n`, and the tail is `\n]`. Records
//! never hold a raw line break (JSON escapes them), so a batch can always be split back into its
//! records.
//!
//! Compression runs on a small pool of OS threads, never on the async runtime. A batch is
//! compressed in blocks of about [`BLOCK_BYTES`], each an independent gzip member or zstd frame;
//! their concatenation is a valid stream for every decoder that follows RFC 1952 / RFC 8878.
//! Blocks keep memory flat whatever `max_bytes` is, let both cores compress one batch, and give
//! the batcher the exact compressed size as it goes.

use std::io::Read;
use std::sync::mpsc;
use std::thread;

use chrono::{DateTime, Utc};
use logferry_sink::{BatchMeta, Compression, Encoding};
use tokio::sync::oneshot;

/// Uncompressed bytes per compression block.
pub const BLOCK_BYTES: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct Layout {
    pub encoding: Encoding,
    /// Text before and after the records; with placeholders (`{{batch_id}}`,
    /// `{{record_count}}`, `{{sealed_at}}`) rendered per batch by [`Layout::render`].
    head: String,
    tail: String,
    /// The records are one JSON string (`{{records_str}}`): each is escaped, `\n` between.
    pub string_records: bool,
}

/// What a batch's envelope placeholders become, fixed when it is sealed.
pub struct Seal<'a> {
    pub id: &'a str,
    pub records: u64,
    pub sealed_at: DateTime<Utc>,
}

/// Placeholders known only when a batch is sealed.
const SEAL_VARS: [&str; 2] = ["{{record_count}}", "{{sealed_at}}"];

impl Layout {
    /// `envelope`: the text before and after the records, and whether they go in as one
    /// JSON string.
    pub fn new(encoding: Encoding, envelope: Option<(&str, &str, bool)>) -> Layout {
        let (eh, et, string_records) = envelope.unwrap_or(("", "", false));
        let (mut head, mut tail) = (eh.to_string(), String::new());
        if string_records {
            head.push('"');
            tail.push('"');
        } else if encoding == Encoding::JsonArray {
            head.push_str("[\n");
            tail.push_str("\n]");
        }
        tail.push_str(et);
        Layout {
            encoding,
            head,
            tail,
            string_records,
        }
    }

    /// The head as a batch opens with `id`, or `None` when it names what only sealing
    /// knows (then it is rendered and compressed at seal time, ahead of the records).
    pub fn head_at_open(&self, id: &str) -> Option<Vec<u8>> {
        if SEAL_VARS.iter().any(|v| self.head.contains(v)) {
            return None;
        }
        Some(self.head.replace("{{batch_id}}", id).into_bytes())
    }

    /// Head and tail with the placeholders filled in.
    pub fn render(&self, seal: &Seal<'_>) -> (Vec<u8>, Vec<u8>) {
        let fill = |t: &str| {
            if !t.contains("{{") {
                return t.as_bytes().to_vec();
            }
            t.replace("{{batch_id}}", seal.id)
                .replace("{{record_count}}", &seal.records.to_string())
                .replace(
                    "{{sealed_at}}",
                    &seal
                        .sealed_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                )
                .into_bytes()
        };
        (fill(&self.head), fill(&self.tail))
    }

    /// The bytes a record adds to a batch at most beyond its own, for size limits.
    pub fn tail_len_max(&self) -> usize {
        self.tail.len() + 64
    }

    /// Appends record number `index` of a batch to `out`.
    #[inline]
    pub fn write_record(&self, out: &mut Vec<u8>, index: u64, record: &[u8]) {
        if self.string_records {
            if index > 0 {
                out.extend_from_slice(b"\\n");
            }
            escape_into(out, record);
            return;
        }
        if self.encoding == Encoding::JsonArray && index > 0 {
            out.extend_from_slice(b",\n");
        }
        out.extend_from_slice(record);
        // Parquet batches are held as NDJSON lines until their file is built.
        if matches!(self.encoding, Encoding::Ndjson | Encoding::Parquet) {
            out.push(b'\n');
        }
    }

    /// Builds a whole uncompressed payload from records (used when a batch is split), with
    /// the lengths of its head and tail.
    pub fn assemble<R: AsRef<[u8]>>(&self, seal: &Seal<'_>, records: &[R]) -> (Vec<u8>, u32, u32) {
        let (head, tail) = self.render(seal);
        let mut out = head.clone();
        for (i, r) in records.iter().enumerate() {
            self.write_record(&mut out, i as u64, r.as_ref());
        }
        out.extend_from_slice(&tail);
        (out, head.len() as u32, tail.len() as u32)
    }

    /// Splits an uncompressed payload back into its records by their separators (never by
    /// parsing JSON; string records are unescaped as [`escape_into`] wrote them).
    pub fn records(&self, meta: &BatchMeta, payload: &[u8]) -> Result<Vec<Vec<u8>>, RecordsError> {
        let (h, t) = (meta.head_len as usize, meta.tail_len as usize);
        if payload.len() < h + t {
            return Err(RecordsError::Short);
        }
        let body = &payload[h..payload.len() - t];
        if self.string_records {
            // The body is the inside of one JSON string, one record per escaped newline.
            return unescape(body)?
                .split(|b| *b == b'\n')
                .filter(|r| !r.is_empty())
                .map(|r| Ok(r.to_vec()))
                .collect();
        }
        let mut out: Vec<Vec<u8>> = body
            .split(|b| *b == b'\n')
            .map(|r| r.strip_suffix(b",").unwrap_or(r))
            .filter(|r| !r.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        if meta.encoding == Encoding::JsonArray && out.first().is_some_and(|r| r == b"[") {
            out.remove(0);
        }
        Ok(out)
    }
}

/// Why a payload could not be read back into records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordsError {
    #[error("payload shorter than its head and tail")]
    Short,
    #[error("the records' string has a bad escape at byte {0}")]
    Escape(usize),
}

/// The inverse of [`escape_into`]: `\"`, `\\`, `\n`, `\r`, `\t` and `\u00XX` back to bytes.
fn unescape(s: &[u8]) -> Result<Vec<u8>, RecordsError> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while let Some(at) = memchr::memchr(b'\\', &s[i..]) {
        out.extend_from_slice(&s[i..i + at]);
        let j = i + at;
        let (byte, len) = match s.get(j + 1) {
            Some(b'"') => (b'"', 2),
            Some(b'\\') => (b'\\', 2),
            Some(b'/') => (b'/', 2),
            Some(b'n') => (b'\n', 2),
            Some(b'r') => (b'\r', 2),
            Some(b't') => (b'\t', 2),
            Some(b'b') => (0x08, 2),
            Some(b'f') => (0x0c, 2),
            Some(b'u') => {
                let hex = s.get(j + 2..j + 6).ok_or(RecordsError::Escape(j))?;
                let v = std::str::from_utf8(hex)
                    .ok()
                    .and_then(|h| h.strip_prefix("00"))
                    .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or(RecordsError::Escape(j))?;
                (v, 6)
            }
            _ => return Err(RecordsError::Escape(j)),
        };
        out.push(byte);
        i = j + len;
    }
    out.extend_from_slice(&s[i..]);
    Ok(out)
}

/// `record` as the inside of a JSON string: quotes, backslashes and control bytes escaped.
fn escape_into(out: &mut Vec<u8>, record: &[u8]) {
    let mut start = 0;
    for (i, &b) in record.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => {
                out.extend_from_slice(&record[start..i]);
                out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&record[start..i]);
        out.extend_from_slice(esc);
        start = i + 1;
    }
    out.extend_from_slice(&record[start..]);
}

pub fn compress(c: Compression, level: Option<i32>, data: &[u8]) -> std::io::Result<Vec<u8>> {
    match c {
        Compression::None => Ok(data.to_vec()),
        Compression::Gzip => gzip(level.unwrap_or(6).clamp(0, 9), data),
        Compression::Zstd => zstd::bulk::compress(data, level.unwrap_or(3)),
    }
}

thread_local! {
    /// Each compression thread's libdeflate compressor (made once per level: its tables are a
    /// few hundred KiB) and the buffer it writes into (kept: a block's bound is ~1 MiB).
    static DEFLATER: std::cell::RefCell<Option<(i32, libdeflater::Compressor, Vec<u8>)>> =
        const { std::cell::RefCell::new(None) };
}

/// One gzip member of a whole buffer with libdeflate, which compresses whole buffers (our
/// blocks are) faster than a streaming zlib at the same level, and a little smaller
/// (docs/benchmarks.md). The same bytes at the same level always give the same member: a
/// spooled batch's bytes never change.
fn gzip(level: i32, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let lvl = libdeflater::CompressionLvl::new(level)
        .map_err(|_| std::io::Error::other(format!("gzip level {level} out of range")))?;
    DEFLATER.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(l, _, _)| *l != level) {
            *slot = Some((level, libdeflater::Compressor::new(lvl), Vec::new()));
        }
        let Some((_, c, buf)) = slot.as_mut() else {
            return Err(std::io::Error::other("no compressor"));
        };
        buf.resize(c.gzip_compress_bound(data.len()), 0);
        let n = c
            .gzip_compress(data, buf)
            .map_err(|e| std::io::Error::other(format!("gzip: {e}")))?;
        // Only the member is kept: a held block must not cost its bound.
        let member = buf[..n].to_vec();
        // A whole OTLP request is larger than a block: its buffer is not kept.
        if buf.capacity() > 2 * BLOCK_BYTES {
            *buf = Vec::new();
        }
        Ok(member)
    })
}

/// Decompresses a payload made of any number of gzip members or zstd frames.
pub fn decompress(c: Compression, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(data.len() * 4);
    match c {
        Compression::None => out.extend_from_slice(data),
        Compression::Gzip => {
            flate2::read::MultiGzDecoder::new(data).read_to_end(&mut out)?;
        }
        Compression::Zstd => {
            zstd::stream::read::Decoder::new(data)?.read_to_end(&mut out)?;
        }
    }
    Ok(out)
}

/// A compressed block, or the error with the block's input, so that the spool writer can try
/// again instead of dropping records.
pub type BlockResult = Result<Block, BlockError>;

/// A block as it is stored.
pub struct Block {
    pub bytes: Vec<u8>,
    /// Set when one job built the whole payload and compressed it (OTLP): the digest and
    /// length of the uncompressed payload, so that the writer need not decompress it.
    pub payload: Option<Payload>,
}

/// An uncompressed payload's SHA-256 (hex) and length.
pub struct Payload {
    pub sha256: String,
    pub len: u64,
}

#[derive(Debug)]
pub struct BlockError {
    pub error: std::io::Error,
    pub raw: Vec<u8>,
}

enum Work {
    Block {
        data: Vec<u8>,
        compression: Compression,
        level: Option<i32>,
    },
    /// A whole batch made into one payload (a Parquet file, an OTLP request).
    Whole {
        records: crate::whole::Records,
        whole: crate::whole::Whole,
    },
}

struct Job {
    work: Work,
    reply: oneshot::Sender<BlockResult>,
}

impl Job {
    fn run(self) {
        let out = match self.work {
            Work::Block {
                data,
                compression,
                level,
            } => match compress(compression, level, &data) {
                Ok(bytes) => Ok(Block {
                    bytes,
                    payload: None,
                }),
                Err(error) => Err(BlockError { error, raw: data }),
            },
            // A payload that cannot be built is not compressed again by the writer: no raw.
            Work::Whole { records, whole } => whole.encode(records).map_err(|error| BlockError {
                error,
                raw: Vec::new(),
            }),
        };
        let _ = self.reply.send(out);
    }
}

/// A fixed pool of compression threads fed through a bounded queue: a full queue blocks the
/// submitting source thread, which is how compression back-pressure reaches the reader.
#[derive(Clone)]
pub struct CompressPool {
    tx: mpsc::SyncSender<Job>,
}

impl CompressPool {
    pub fn new(threads: usize) -> std::io::Result<CompressPool> {
        let (tx, rx) = mpsc::sync_channel::<Job>(threads);
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            thread::Builder::new()
                .name(format!("compress-{i}"))
                .spawn(move || loop {
                    let job = match rx.lock() {
                        Ok(guard) => guard.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    job.run();
                })?;
        }
        Ok(CompressPool { tx })
    }

    /// Queues a block; blocks while the pool is saturated.
    pub fn submit(
        &self,
        data: Vec<u8>,
        compression: Compression,
        level: Option<i32>,
    ) -> oneshot::Receiver<BlockResult> {
        self.queue(Work::Block {
            data,
            compression,
            level,
        })
    }

    /// Queues a whole batch to become one payload; blocks while the pool is saturated.
    pub fn submit_whole(
        &self,
        records: crate::whole::Records,
        whole: crate::whole::Whole,
    ) -> oneshot::Receiver<BlockResult> {
        self.queue(Work::Whole { records, whole })
    }

    fn queue(&self, work: Work) -> oneshot::Receiver<BlockResult> {
        let (reply, rx) = oneshot::channel();
        if let Err(mpsc::SendError(job)) = self.tx.send(Job { work, reply }) {
            // The pool is gone (only at process exit): do the work on this thread instead.
            job.run();
        }
        rx
    }
}

#[cfg(test)]
mod tests;
