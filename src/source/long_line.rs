//! Lines over the limit: cut and kept (text), or digested into a stand-in record and
//! optionally written whole to the dead-letter folder (JSON), while they stream past; and the
//! [`Line`] a file hands on, which says what became of it. When a
//! KEK seals the spool of a sink the source feeds, the line is written sealed like the spool
//! (`<fp>-<offset>.json.sealed`, the spool's file format), never in clear.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use logferry_vault::crypt::{DataKey, Sealer};
use logferry_vault::keys::{hour_of, KeyRing};

use super::oversize;

/// A line longer than the limit, while it streams past.
pub enum LongLine {
    /// Text: its first `max` bytes are kept and the rest is counted.
    Cut { kept: Vec<u8>, total: usize },
    /// JSON: hashed and scanned for top-level members, optionally written out whole.
    Digest {
        s: Box<oversize::Streamed>,
        spill: Option<Spill>,
    },
}

/// An oversize line on its way to the dead-letter folder: written to `tmp`, renamed at its end.
pub struct Spill {
    file: Option<File>,
    tmp: PathBuf,
    to: PathBuf,
    failed: Option<std::io::Error>,
    /// The line is encrypted on its way (the spool of a sink the source feeds is sealed).
    sealer: Option<Box<Sealer>>,
}

/// The tenant spool keys are filed under (as `spool::crypt` writes them).
use crate::spool::SPOOL_TENANT;
/// Plaintext bytes per segment of a sealed spill.
const SPILL_SEGMENT: u32 = 64 << 10;

/// How a source seals what it spills: under the spool key of the hour, from the spool key ring
/// of the first of its sinks (in configuration order) whose spool is sealed.
#[derive(Clone)]
pub struct SpillSeal {
    pub ring: Arc<KeyRing>,
    /// The sink whose spool keys seal the spill (`logferry decrypt --sink <sink>` reads it).
    pub sink: String,
    /// The pipeline's runtime: the source thread (not one of the runtime's) waits on it for the
    /// key.
    pub handle: tokio::runtime::Handle,
    /// How long to wait for the key before the spill fails (and the stand-in is shipped).
    pub timeout: Duration,
}

impl std::fmt::Debug for SpillSeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpillSeal")
            .field("sink", &self.sink)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl SpillSeal {
    /// The spool key of the current hour. Blocks: called on the source's own thread.
    fn key(&self) -> std::io::Result<Arc<DataKey>> {
        let hour = hour_of(chrono::Utc::now());
        let (ring, timeout) = (self.ring.clone(), self.timeout);
        // The timeout is made inside the runtime (a timer needs its context).
        let got = self.handle.block_on(async move {
            tokio::time::timeout(timeout, ring.key_for(SPOOL_TENANT, &hour)).await
        });
        match got {
            Ok(Ok(k)) => Ok(k),
            Ok(Err(e)) => Err(std::io::Error::other(format!(
                "no spool key of sink {} to seal it with: {e}",
                self.sink
            ))),
            Err(_) => Err(std::io::Error::other(format!(
                "the spool key of sink {} did not come within {:?}",
                self.sink, self.timeout
            ))),
        }
    }
}

/// How long a line may be and what happens to a longer one.
#[derive(Debug, Clone)]
pub struct Limit {
    pub max: usize,
    /// Digest longer lines into a stand-in record (JSON) instead of cutting them (text).
    pub digest: bool,
    /// With `digest`: a folder to write longer lines to, whole (`oversize = "dead_letter"`).
    pub spill_dir: Option<PathBuf>,
    /// With `spill_dir`: lines are written there sealed, never in clear.
    pub seal: Option<SpillSeal>,
}

impl Limit {
    pub fn cut(max: usize) -> Limit {
        Limit {
            max,
            digest: false,
            spill_dir: None,
            seal: None,
        }
    }
}

/// A line as a file hands it on, with what became of it if it was over the limit.
pub struct Line<'a> {
    pub bytes: &'a [u8],
    pub cut: Cut,
    pub offset: u64,
}

impl Line<'_> {
    pub fn truncated_from(&self) -> Option<usize> {
        match self.cut {
            Cut::Truncated(n) => Some(n),
            _ => None,
        }
    }
}

/// What became of a line that was over the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cut {
    Whole,
    /// Cut at the limit; the line's full length.
    Truncated(usize),
    /// Replaced by its stand-in record; the line's length and where it was written whole.
    Oversize {
        total: usize,
        spilled: Option<Result<PathBuf, SpillError>>,
    },
}

/// Why an oversize line was not written whole to the dead-letter folder. The I/O error is kept
/// as its words: a [`Cut`] is cloned and compared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpillError {
    #[error("not opened")]
    NotOpened,
    #[error("{0}")]
    Io(String),
}

/// The state for a line over the limit, with its first bytes `head` already seen.
pub fn start_long(
    limit: &Limit,
    head: &[u8],
    path: &Path,
    fp: Option<u64>,
    offset: u64,
) -> LongLine {
    if !limit.digest {
        return LongLine::Cut {
            kept: head[..limit.max.min(head.len())].to_vec(),
            total: head.len(),
        };
    }
    let mut s = Box::<oversize::Streamed>::default();
    s.feed(head);
    let spill = limit.spill_dir.as_ref().map(|dir| {
        let mut sp = Spill::create(dir, path, fp.unwrap_or(0), offset, limit.seal.as_ref());
        sp.write(head);
        sp
    });
    LongLine::Digest { s, spill }
}

pub fn finish_long(long: LongLine, offset: u64, emit: &mut impl FnMut(Line<'_>)) {
    match long {
        LongLine::Cut { kept, total } => emit(Line {
            bytes: &kept,
            cut: Cut::Truncated(total),
            offset,
        }),
        LongLine::Digest { s, spill } => {
            let total = s.bytes() as usize;
            let mut out = Vec::new();
            s.finish(&mut out);
            let spilled = spill.map(|sp| sp.finish(total));
            emit(Line {
                bytes: &out,
                cut: Cut::Oversize { total, spilled },
                offset,
            });
        }
    }
}

impl Spill {
    /// `<dir>/<fingerprint>-<offset>.json`: the same line read again after a crash lands on the
    /// same name. With `seal`, `<fingerprint>-<offset>.json.sealed`, in the spool's file format
    /// (magic line, JSON metadata line, the line as one encrypted object); when the key cannot
    /// be had nothing is written and the spill fails.
    fn create(
        dir: &Path,
        source_file: &Path,
        fp: u64,
        offset: u64,
        seal: Option<&SpillSeal>,
    ) -> Spill {
        let id = format!("{fp:016x}-{offset}");
        let (name, sealer) = match seal.map(|s| s.key().map(|k| (s, k))) {
            None => (format!("{id}.json"), None),
            Some(Ok((s, key))) => match Sealer::new(&key, &id, SPILL_SEGMENT) {
                Ok(sealer) => (format!("{id}.json.sealed"), Some((s, sealer))),
                Err(e) => {
                    return Spill::not_written(dir, &id, std::io::Error::other(e.to_string()))
                }
            },
            Some(Err(e)) => return Spill::not_written(dir, &id, e),
        };
        let to = dir.join(&name);
        let tmp = dir.join(format!(".{name}.tmp"));
        // Owner only, no link followed: an unsealed spill holds the record in clear.
        let opened = crate::private_fs::dir_all(dir).and_then(|_| crate::private_fs::create(&tmp));
        let (mut file, mut failed) = match opened {
            Ok(f) => (Some(f), None),
            Err(e) => (None, Some(e)),
        };
        if let (Some(f), Some((s, sealer))) = (&mut file, &sealer) {
            // The spool's format: a reader (`logferry decrypt`, spool key pruning) finds the
            // metadata and the object's header where it finds a dead letter's.
            let meta = serde_json::json!({
                "kind": "oversize",
                "id": id,
                "source": dir.file_name().map(|n| n.to_string_lossy().into_owned()),
                "file": source_file.display().to_string(),
                "offset": offset,
                "compression": "none",
                "sealed_with_sink": s.sink,
            });
            let mut head = crate::spool::MAGIC.to_vec();
            head.extend_from_slice(meta.to_string().as_bytes());
            head.push(b'\n');
            head.extend_from_slice(sealer.header());
            if let Err(e) = std::io::Write::write_all(f, &head) {
                failed = Some(e);
            }
        }
        let note = dir.join(format!("{id}.reason.json"));
        let mut reason = serde_json::json!({
            "reason": "oversize: the record is larger than max_record_bytes",
            "file": source_file.display().to_string(),
            "offset": offset,
        });
        if let Some((s, _)) = &sealer {
            reason["sealed_with_sink"] = serde_json::Value::String(s.sink.clone());
        }
        let failed =
            failed.or_else(|| crate::private_fs::write(&note, reason.to_string().as_bytes()).err());
        Spill {
            file,
            tmp,
            to,
            failed,
            sealer: sealer.map(|(_, sealer)| Box::new(sealer)),
        }
    }

    /// A spill that writes nothing: it fails with `e` at its end.
    fn not_written(dir: &Path, id: &str, e: std::io::Error) -> Spill {
        Spill {
            file: None,
            tmp: dir.join(format!(".{id}.json.sealed.tmp")),
            to: dir.join(format!("{id}.json.sealed")),
            failed: Some(e),
            sealer: None,
        }
    }

    pub fn write(&mut self, piece: &[u8]) {
        use std::io::Write;
        if let (Some(f), None) = (&mut self.file, &self.failed) {
            let res = match &mut self.sealer {
                Some(s) => s
                    .write(piece, f)
                    .map_err(|e| std::io::Error::other(e.to_string())),
                None => f.write_all(piece),
            };
            if let Err(e) = res {
                self.failed = Some(e);
            }
        }
    }

    /// Makes the copy durable; the line is acknowledged only after this.
    fn finish(self, _total: usize) -> Result<PathBuf, SpillError> {
        let Spill {
            file,
            tmp,
            to,
            failed,
            sealer,
        } = self;
        let mut file = match (file, failed) {
            (Some(f), None) => f,
            (_, e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e.map_or(SpillError::NotOpened, |e| SpillError::Io(e.to_string())));
            }
        };
        let sealed = match sealer {
            Some(s) => (*s)
                .finish(&mut file)
                .map_err(|e| std::io::Error::other(e.to_string())),
            None => Ok(()),
        };
        let done = sealed
            .and_then(|_| file.sync_all())
            .and_then(|_| std::fs::rename(&tmp, &to))
            .and_then(|_| match to.parent() {
                Some(d) => File::open(d)?.sync_all(),
                None => Ok(()),
            });
        match done {
            Ok(()) => Ok(to),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(SpillError::Io(e.to_string()))
            }
        }
    }
}
