//! One tailed file: its identity, its read position and its partial line.
//!
//! Invariants: `buf` holds the bytes from file offset `consumed` to `read_pos` that do not yet
//! form a whole line; when `long` is set, the file is inside a line longer than the limit,
//! `long.kept` holds its first `max_line_bytes` bytes, `consumed` is that line's start, and
//! bytes up to `read_pos` belong to it.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::checkpoint::FileId;
use super::long_line::{finish_long, start_long, LongLine};
pub use super::long_line::{Cut, Limit, Line};
use crate::ack::Ticket;

/// Bytes of the first line that identify a file's content.
const FP_BYTES: usize = 1024;
/// A file's own buffer between rounds holds at most its unfinished line; a larger one is the
/// source's read buffer and is given back.
const KEEP: usize = 4096;
/// Read beyond the size last seen, for what was written since.
const GROWTH_ALLOWANCE: usize = 64 * 1024;

pub enum State {
    /// Reachable under a matched name.
    Live,
    /// Renamed away or deleted: read through the open handle until it stays at its end.
    Gone,
}

pub struct Tailed {
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
    /// Fingerprint of the first line; `None` until the first line is whole.
    pub fp: Option<u64>,
    pub file: Option<File>,
    pub state: State,
    /// Offset of the first byte not yet part of an emitted line.
    pub consumed: u64,
    pub read_pos: u64,
    buf: Vec<u8>,
    /// `buf[..no_nl]` is known to hold no newline (a long line is not searched again).
    no_nl: usize,
    long: Option<LongLine>,
    /// Lines over the limit seen in this file (logged once per file).
    pub over_limit: u64,
    /// Chunks read and not yet durable: (offset after the chunk, ticket).
    pub pending: VecDeque<(u64, Ticket)>,
    /// Everything before this offset is durable.
    pub committed: u64,
    pub at_eof: bool,
    pub last_growth: Instant,
    /// Whether the start position was decided (a checkpoint or `read_from`).
    pub positioned: bool,
    /// Seen in the first scan of this run (`read_from` applies only to those).
    pub from_start_scan: bool,
    pub last_size: u64,
    /// Modification time at the last look; a change without growth means a rewrite.
    last_mtime: (i64, i64),
    /// Written to since the last read (a file event): read it in the next round even if it
    /// was at its end.
    pub poked: bool,
    /// This file's `file_unread_bytes` series, kept current as it is read.
    pub lag: Option<
        Box<(
            crate::ops::metrics::FileLabel,
            prometheus_client::metrics::gauge::Gauge,
        )>,
    >,
}

pub fn fingerprint(file: &File) -> std::io::Result<Option<u64>> {
    let mut head = [0u8; FP_BYTES];
    let mut n = 0;
    while n < FP_BYTES {
        let r = file.read_at(&mut head[n..], n as u64)?;
        if r == 0 {
            break;
        }
        n += r;
    }
    let used = match memchr::memchr(b'\n', &head[..n]) {
        Some(i) => i + 1,
        None if n == FP_BYTES => n,
        None => return Ok(None),
    };
    let digest = Sha256::digest(&head[..used]);
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest[..8]);
    Ok(Some(u64::from_be_bytes(b)))
}

impl Tailed {
    /// Starts tailing `file`, opened from `path` (by the source's admission rule).
    pub fn new(path: &Path, file: File, from_start_scan: bool) -> std::io::Result<Tailed> {
        let meta = file.metadata()?;
        let mut t = Tailed::unopened(path, &meta, from_start_scan);
        t.fp = fingerprint(&file)?;
        t.file = Some(file);
        Ok(t)
    }

    /// A file found while every handle is taken: identified by its metadata only, opened
    /// (through the admission rule) and fingerprinted when it gets a handle.
    pub fn unopened(path: &Path, meta: &std::fs::Metadata, from_start_scan: bool) -> Tailed {
        Tailed {
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
            fp: None,
            file: None,
            state: State::Live,
            consumed: 0,
            read_pos: 0,
            buf: Vec::new(),
            no_nl: 0,
            long: None,
            over_limit: 0,
            pending: VecDeque::new(),
            committed: 0,
            at_eof: false,
            last_growth: Instant::now(),
            positioned: false,
            from_start_scan,
            last_size: meta.len(),
            last_mtime: (meta.mtime(), meta.mtime_nsec()),
            poked: false,
            lag: None,
        }
    }

    pub fn id(&self) -> Option<FileId> {
        self.fp.map(|fp| FileId {
            dev: self.dev,
            ino: self.ino,
            fp,
        })
    }

    pub fn seek(&mut self, offset: u64) {
        self.consumed = offset;
        self.read_pos = offset;
        self.committed = offset;
        self.buf.clear();
        self.no_nl = 0;
        self.long = None;
        self.pending.clear();
    }

    /// Checks for truncation or an in-place rewrite; on either, starts over from offset 0.
    /// Returns whether that happened.
    pub fn check_truncated(&mut self) -> std::io::Result<bool> {
        let Some(file) = &self.file else {
            return Ok(false);
        };
        let meta = file.metadata()?;
        let len = meta.len();
        // The size is known at every read: lag stays current between scans.
        self.last_size = len;
        let mtime = (meta.mtime(), meta.mtime_nsec());
        let touched = mtime != self.last_mtime;
        let shrunk = len < self.read_pos;
        // A change seen before the end was reached stays noticed until the end is: a rewrite
        // as long as our offset is only told by its first line, checked at the end.
        if self.at_eof || shrunk {
            self.last_mtime = mtime;
        }
        // A file truncated and rewritten before we looked can be as long as our offset or
        // longer: its first line tells. Checked only when a file at its end was modified,
        // not on every chunk.
        let rewritten = !shrunk && self.at_eof && touched && self.fp.is_some() && {
            let now = fingerprint(file)?;
            now.is_some() && now != self.fp
        };
        if shrunk || rewritten {
            self.fp = fingerprint(file)?;
            self.seek(0);
            self.at_eof = false;
            return Ok(true);
        }
        Ok(false)
    }

    /// Reads up to `chunk` bytes and passes every whole line to `emit`; a line longer than
    /// `chunk` is read to its end before returning, so a source assembles one large record at
    /// a time, not one per file. Returns bytes read.
    ///
    /// `spare` is the source's read buffer, lent to the file for the round and taken back
    /// after it: between rounds a file keeps only its unfinished line, so memory does not
    /// grow by a chunk per open file.
    pub fn read_lines(
        &mut self,
        chunk: usize,
        limit: &Limit,
        spare: &mut Vec<u8>,
        mut emit: impl FnMut(Line<'_>),
    ) -> std::io::Result<usize> {
        if spare.capacity() > self.buf.capacity() {
            spare.clear();
            spare.extend_from_slice(&self.buf);
            std::mem::swap(&mut self.buf, spare);
        }
        let mut total = 0;
        let res = loop {
            let n = match self.read_once(chunk, limit, &mut emit) {
                Ok(n) => n,
                Err(e) => break Err(e),
            };
            total += n;
            if n == 0 || (self.long.is_none() && self.buf.len() <= chunk) {
                break Ok(total);
            }
        };
        // A large record's buffer is given back once it is done.
        if self.buf.capacity() > 4 * chunk && self.buf.len() <= chunk {
            self.buf.shrink_to(chunk);
        }
        // Whatever size the read made it (reads are sized to the file), the buffer goes back
        // to the source; the file keeps a copy of its unfinished line only.
        if self.long.is_none() && self.buf.len() < chunk / 4 && self.buf.capacity() > KEEP {
            let rest = self.buf.as_slice().to_vec();
            std::mem::swap(&mut self.buf, spare);
            spare.clear();
            self.buf = rest;
        }
        res
    }

    fn read_once(
        &mut self,
        chunk: usize,
        limit: &Limit,
        emit: &mut impl FnMut(Line<'_>),
    ) -> std::io::Result<usize> {
        let Some(file) = &self.file else {
            return Ok(0);
        };
        let old = self.buf.len();
        // Inside a long line, read more at a time (up to 8 MiB) so it takes few calls. No
        // more than the size last seen allows (and a little over, for growth since): the
        // buffer is zeroed up to `want`, and 256 KiB zeroed for a 20 KB file is most of the
        // cost of reading it.
        let avail =
            usize::try_from(self.last_size.saturating_sub(self.read_pos)).unwrap_or(usize::MAX);
        let want = chunk
            .max(old.min(8 << 20))
            .min(avail.saturating_add(GROWTH_ALLOWANCE));
        self.buf.resize(old + want, 0);
        let n = match file.read_at(&mut self.buf[old..], self.read_pos) {
            Ok(n) => n,
            Err(e) => {
                self.buf.truncate(old);
                return Err(e);
            }
        };
        self.buf.truncate(old + n);
        if n == 0 {
            self.at_eof = true;
            return Ok(0);
        }
        self.at_eof = false;
        self.last_growth = Instant::now();
        self.read_pos += n as u64;
        // File offset of buf[0].
        let base = self.read_pos - self.buf.len() as u64;
        let mut pos = 0;
        let mut skip = std::mem::take(&mut self.no_nl);
        while pos < self.buf.len() {
            let rest = &self.buf[pos..];
            let nl = memchr::memchr(b'\n', &rest[skip.min(rest.len())..]).map(|i| i + skip);
            skip = 0;
            if let Some(long) = &mut self.long {
                let piece = &rest[..nl.unwrap_or(rest.len())];
                match long {
                    LongLine::Cut { total, .. } => *total += piece.len(),
                    LongLine::Digest { s, spill } => {
                        s.feed(piece);
                        if let Some(sp) = spill {
                            sp.write(piece);
                        }
                    }
                }
                match nl {
                    Some(i) => {
                        if let Some(long) = self.long.take() {
                            finish_long(long, self.consumed, emit);
                        }
                        pos += i + 1;
                        self.consumed = base + pos as u64;
                    }
                    None => pos = self.buf.len(),
                }
                continue;
            }
            match nl {
                Some(i) => {
                    let line = &rest[..i];
                    let offset = base + pos as u64;
                    if line.len() > limit.max {
                        self.over_limit += 1;
                        let long = start_long(limit, line, &self.path, self.fp, offset);
                        finish_long(long, offset, emit);
                    } else {
                        emit(Line {
                            bytes: line,
                            cut: Cut::Whole,
                            offset,
                        });
                    }
                    pos += i + 1;
                    self.consumed = base + pos as u64;
                }
                None if rest.len() > limit.max => {
                    self.over_limit += 1;
                    let long =
                        start_long(limit, &self.buf[pos..], &self.path, self.fp, self.consumed);
                    self.long = Some(long);
                    pos = self.buf.len();
                }
                None => {
                    self.no_nl = rest.len();
                    break;
                }
            }
        }
        self.buf.drain(..pos);
        Ok(n)
    }

    /// Emits a last line that has no newline (end of a `--once` run: the file is complete).
    pub fn flush_partial(&mut self, limit: &Limit, mut emit: impl FnMut(Line<'_>)) {
        if let Some(long) = self.long.take() {
            finish_long(long, self.consumed, &mut emit);
        } else if !self.buf.is_empty() {
            let buf = std::mem::take(&mut self.buf);
            if buf.len() > limit.max {
                self.over_limit += 1;
                let long = start_long(limit, &buf, &self.path, self.fp, self.consumed);
                finish_long(long, self.consumed, &mut emit);
            } else {
                emit(Line {
                    bytes: &buf,
                    cut: Cut::Whole,
                    offset: self.consumed,
                });
            }
        }
        self.buf.clear();
        self.no_nl = 0;
        self.consumed = self.read_pos;
    }

    /// Moves `committed` past every chunk that is done. Returns whether it moved.
    pub fn advance(&mut self) -> bool {
        let before = self.committed;
        while let Some((end, t)) = self.pending.front() {
            if !t.is_done() {
                break;
            }
            self.committed = *end;
            self.pending.pop_front();
        }
        self.committed != before
    }

    #[cfg(test)]
    pub fn buf_capacity(&self) -> usize {
        self.buf.capacity()
    }

    pub fn unread(&self) -> u64 {
        self.last_size.saturating_sub(self.read_pos)
    }
}

/// Lines over the limit read through a file: stand-ins, and spills in clear or sealed
/// (`super::long_line`).
#[cfg(test)]
#[path = "file_tests.rs"]
mod tests;
