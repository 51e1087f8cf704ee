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

use std::io::{Read, Write};
use std::sync::mpsc;
use std::thread;

use logferry_sinks::{BatchMeta, Compression, Encoding};
use tokio::sync::oneshot;

/// Uncompressed bytes per compression block.
pub const BLOCK_BYTES: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct Layout {
    pub encoding: Encoding,
    pub head: Vec<u8>,
    pub tail: Vec<u8>,
}

impl Layout {
    pub fn new(encoding: Encoding, envelope: Option<&(String, String)>) -> Layout {
        let (eh, et) = envelope
            .map(|(h, t)| (h.as_bytes().to_vec(), t.as_bytes().to_vec()))
            .unwrap_or_default();
        match encoding {
            Encoding::Ndjson => Layout {
                encoding,
                head: eh,
                tail: et,
            },
            Encoding::JsonArray => {
                let mut head = eh;
                head.extend_from_slice(b"[\n");
                let mut tail = b"\n]".to_vec();
                tail.extend_from_slice(&et);
                Layout {
                    encoding,
                    head,
                    tail,
                }
            }
        }
    }

    /// Bytes written before a record, given how many the batch already holds.
    #[inline]
    pub fn before(&self, index: u64) -> &'static [u8] {
        match (self.encoding, index) {
            (Encoding::JsonArray, i) if i > 0 => b",\n",
            _ => b"",
        }
    }

    /// Bytes written after every record.
    #[inline]
    pub fn after(&self) -> &'static [u8] {
        match self.encoding {
            Encoding::Ndjson => b"\n",
            Encoding::JsonArray => b"",
        }
    }

    /// Builds a whole uncompressed payload from records (used when a batch is split).
    pub fn assemble<'a>(&self, records: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
        let mut out = self.head.clone();
        for (i, r) in records.enumerate() {
            out.extend_from_slice(self.before(i as u64));
            out.extend_from_slice(r);
            out.extend_from_slice(self.after());
        }
        out.extend_from_slice(&self.tail);
        out
    }
}

/// Splits an uncompressed payload back into its records.
pub fn records<'a>(meta: &BatchMeta, payload: &'a [u8]) -> Result<Vec<&'a [u8]>, String> {
    let (h, t) = (meta.head_len as usize, meta.tail_len as usize);
    if payload.len() < h + t {
        return Err("payload shorter than its head and tail".into());
    }
    let body = &payload[h..payload.len() - t];
    let mut out: Vec<&[u8]> = body
        .split(|b| *b == b'\n')
        .map(|r| r.strip_suffix(b",").unwrap_or(r))
        .filter(|r| !r.is_empty())
        .collect();
    if meta.encoding == Encoding::JsonArray && out.first() == Some(&&b"["[..]) {
        out.remove(0);
    }
    Ok(out)
}

pub fn compress(c: Compression, level: Option<i32>, data: &[u8]) -> std::io::Result<Vec<u8>> {
    match c {
        Compression::None => Ok(data.to_vec()),
        Compression::Gzip => {
            let lvl = flate2::Compression::new(level.unwrap_or(6).clamp(0, 9) as u32);
            let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(data.len() / 4), lvl);
            enc.write_all(data)?;
            enc.finish()
        }
        Compression::Zstd => zstd::bulk::compress(data, level.unwrap_or(3)),
    }
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
pub type BlockResult = Result<Vec<u8>, BlockError>;

#[derive(Debug)]
pub struct BlockError {
    pub error: std::io::Error,
    pub raw: Vec<u8>,
}

struct Job {
    data: Vec<u8>,
    compression: Compression,
    level: Option<i32>,
    reply: oneshot::Sender<BlockResult>,
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
                    let out = compress(job.compression, job.level, &job.data).map_err(|error| {
                        BlockError {
                            error,
                            raw: job.data,
                        }
                    });
                    let _ = job.reply.send(out);
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
        let (reply, rx) = oneshot::channel();
        let job = Job {
            data,
            compression,
            level,
            reply,
        };
        if let Err(mpsc::SendError(job)) = self.tx.send(job) {
            // The pool is gone (only at process exit): compress on this thread instead.
            let out = compress(job.compression, job.level, &job.data).map_err(|error| BlockError {
                error,
                raw: job.data,
            });
            let _ = job.reply.send(out);
        }
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(layout: &Layout) -> BatchMeta {
        let now = chrono::Utc::now();
        BatchMeta {
            id: "x".into(),
            source: "s".into(),
            sink: "k".into(),
            key: "k".into(),
            record_count: 0,
            first_time: now,
            last_time: now,
            sha256: String::new(),
            uncompressed_bytes: 0,
            encoding: layout.encoding,
            compression: Compression::Gzip,
            head_len: layout.head.len() as u32,
            tail_len: layout.tail.len() as u32,
        }
    }

    #[test]
    fn json_array_with_envelope_round_trips() {
        let env = ("{\"logEntries\":".to_string(), "}".to_string());
        let l = Layout::new(Encoding::JsonArray, Some(&env));
        let recs: Vec<&[u8]> = vec![b"{\"a\":1}", b"{\"b\":[1,2]}", b"{}"];
        let p = l.assemble(recs.iter().copied());
        let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
        assert_eq!(v["logEntries"].as_array().unwrap().len(), 3);
        assert_eq!(records(&meta(&l), &p).unwrap(), recs);
    }

    #[test]
    fn ndjson_round_trips() {
        let l = Layout::new(Encoding::Ndjson, None);
        let recs: Vec<&[u8]> = vec![b"{\"a\":1}", b"{\"b\":2}"];
        let p = l.assemble(recs.iter().copied());
        assert_eq!(p, b"{\"a\":1}\n{\"b\":2}\n");
        assert_eq!(records(&meta(&l), &p).unwrap(), recs);
    }

    #[test]
    fn concatenated_members_and_frames_decompress_whole() {
        for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
            let mut all = compress(c, None, b"first\n").unwrap();
            all.extend(compress(c, None, b"second\n").unwrap());
            assert_eq!(decompress(c, &all).unwrap(), b"first\nsecond\n", "{c:?}");
        }
    }

    #[tokio::test]
    async fn pool_compresses_off_the_caller() {
        let pool = CompressPool::new(2).unwrap();
        let rx = pool.submit(b"hello\n".repeat(1000), Compression::Gzip, None);
        let out = rx.await.unwrap().unwrap();
        assert_eq!(
            decompress(Compression::Gzip, &out).unwrap(),
            b"hello\n".repeat(1000)
        );
    }
}
