//! Lines over the limit: cut and kept (text), or digested into a stand-in record and
//! optionally written whole to the dead-letter folder (JSON), while they stream past. When a
//! KEK seals the spool of a sink the source feeds, the line is written sealed like the spool
//! (`<fp>-<offset>.json.sealed`, the spool's file format), never in clear.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use logferry_vault::crypt::{DataKey, Sealer};
use logferry_vault::keys::{hour_of, KeyRing};

use super::file::Line;
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

/// What became of a line that was over the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cut {
    Whole,
    /// Cut at the limit; the line's full length.
    Truncated(usize),
    /// Replaced by its stand-in record; the line's length and where it was written whole.
    Oversize {
        total: usize,
        spilled: Option<Result<PathBuf, String>>,
    },
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
    fn finish(self, _total: usize) -> Result<PathBuf, String> {
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
                return Err(e.map_or_else(|| "not opened".to_string(), |e| e.to_string()));
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
                Err(e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::file::Tailed;
    use super::*;

    /// `dir/a.log` with a small record, one of about `pad` bytes, and a small one again.
    fn log_with_big_record(dir: &Path, pad: usize) -> (PathBuf, String) {
        let p = dir.join("a.log");
        let big = format!(
            r#"{{"account_id":7,"lines":[{{"password":"{}"}}],"status":"ok"}}"#,
            "s".repeat(pad)
        );
        std::fs::write(&p, format!("{{\"a\":1}}\n{big}\n{{\"b\":2}}\n")).unwrap();
        (p, big)
    }

    #[test]
    fn an_oversize_json_line_becomes_a_stand_in_and_can_be_spilled_whole() {
        let d = tempfile::tempdir().unwrap();
        let (p, big) = log_with_big_record(d.path(), 50_000);
        let spill = d.path().join("dl");
        let limit = Limit {
            max: 10_000,
            digest: true,
            spill_dir: Some(spill.clone()),
            seal: None,
        };
        let mut t = Tailed::new(&p, std::fs::File::open(&p).unwrap(), true).unwrap();
        let mut got = Vec::new();
        while t
            .read_lines(1000, &limit, &mut Vec::new(), |l| {
                got.push((
                    String::from_utf8_lossy(l.bytes).into_owned(),
                    l.cut,
                    l.offset,
                ))
            })
            .unwrap()
            > 0
        {}
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].0, r#"{"a":1}"#);
        let v: serde_json::Value = serde_json::from_str(&got[1].0).unwrap();
        assert_eq!(v["account_id"], 7);
        assert_eq!(v["status"], "ok");
        assert_eq!(v["_logferry_oversize"]["bytes"], big.len());
        assert!(!got[1].0.contains("sss"));
        let Cut::Oversize {
            total,
            spilled: Some(Ok(path)),
        } = &got[1].1
        else {
            panic!("{:?}", got[1].1)
        };
        assert_eq!(*total, big.len());
        assert_eq!(std::fs::read_to_string(path).unwrap(), big);
        assert_eq!(got[1].2, 8);
        assert_eq!(got[2].0, r#"{"b":2}"#);
        assert_eq!(t.over_limit, 1);
        // The buffer that held the large line is given back.
        assert!(t.buf_capacity() <= 4 * 1000, "{}", t.buf_capacity());
    }

    /// A spool key ring in `dir` (a local KEK) and a runtime for the source thread to wait on.
    fn ring(dir: &Path) -> (tokio::runtime::Runtime, Arc<KeyRing>) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let kek = logferry_vault::ledger::LocalKek::from_material("k", &[3u8; 32]).unwrap();
        let store = Arc::new(logferry_destinations::dir_store::DirectoryStore::new(dir));
        (rt, Arc::new(KeyRing::new(store, Arc::new(kek), "")))
    }

    /// Reads `p` to its end through `limit`: each line's text and what became of it.
    fn read_all(p: &Path, limit: &Limit) -> Vec<(String, Cut)> {
        let mut t = Tailed::new(p, std::fs::File::open(p).unwrap(), true).unwrap();
        let mut got = Vec::new();
        while t
            .read_lines(1000, limit, &mut Vec::new(), |l| {
                got.push((String::from_utf8_lossy(l.bytes).into_owned(), l.cut))
            })
            .unwrap()
            > 0
        {}
        got
    }

    #[test]
    fn a_sealed_spill_holds_no_plaintext_and_decrypts_to_the_line() {
        let d = tempfile::tempdir().unwrap();
        // Larger than a segment of the sealed file, and not a multiple of one.
        let (p, big) = log_with_big_record(d.path(), 150_000);
        let (rt, keys) = ring(&d.path().join("spool-keys"));
        let spill = d.path().join("dl/sources/jobs");
        let limit = Limit {
            max: 10_000,
            digest: true,
            spill_dir: Some(spill.clone()),
            seal: Some(SpillSeal {
                ring: keys.clone(),
                sink: "archive".into(),
                handle: rt.handle().clone(),
                timeout: Duration::from_secs(10),
            }),
        };
        let got = read_all(&p, &limit);
        assert_eq!(got.len(), 3);
        let Cut::Oversize {
            total,
            spilled: Some(Ok(path)),
        } = &got[1].1
        else {
            panic!("{:?}", got[1].1)
        };
        assert_eq!(*total, big.len());
        assert!(path.to_string_lossy().ends_with(".json.sealed"), "{path:?}");
        // Nothing under the folder shows the line.
        for e in std::fs::read_dir(&spill).unwrap() {
            let bytes = std::fs::read(e.unwrap().path()).unwrap();
            assert!(!bytes.windows(16).any(|w| w == [b's'; 16]));
            assert!(!bytes.windows(8).any(|w| w == b"password"));
        }
        // The spool's format: the magic line, the metadata line, the object.
        let bytes = std::fs::read(path).unwrap();
        let rest = bytes.strip_prefix(b"LFSPOOL1\n".as_slice()).unwrap();
        let nl = rest.iter().position(|&b| b == b'\n').unwrap();
        let meta: serde_json::Value = serde_json::from_slice(&rest[..nl]).unwrap();
        assert_eq!(meta["sealed_with_sink"], "archive");
        assert_eq!(meta["compression"], "none");
        assert_eq!(meta["source"], "jobs");
        let object = &rest[nl + 1..];
        let (h, _) = logferry_vault::crypt::Header::read(&mut &object[..]).unwrap();
        assert_eq!(h.tenant, "_spool");
        assert_eq!(meta["id"], h.batch_id.as_str());
        let key = rt
            .block_on(keys.open(&h.tenant, &h.hour, &h.key_id))
            .unwrap();
        let mut plain = Vec::new();
        logferry_vault::crypt::decrypt(&mut &object[..], &mut plain, |_| Ok(key)).unwrap();
        assert_eq!(plain, big.as_bytes());
        assert_eq!(got[2].0, r#"{"b":2}"#);
    }

    #[test]
    fn without_its_key_a_spill_writes_nothing_and_fails() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.log");
        let big = format!(r#"{{"k":1,"secret":"{}"}}"#, "s".repeat(20_000));
        std::fs::write(&p, format!("{big}\n")).unwrap();
        // The key ring's folder cannot be made: its parent is a file.
        std::fs::write(d.path().join("blocked"), b"a file").unwrap();
        let (rt, keys) = ring(&d.path().join("blocked/spool-keys"));
        let spill = d.path().join("dl");
        let limit = Limit {
            max: 10_000,
            digest: true,
            spill_dir: Some(spill.clone()),
            seal: Some(SpillSeal {
                ring: keys,
                sink: "archive".into(),
                handle: rt.handle().clone(),
                timeout: Duration::from_secs(10),
            }),
        };
        let got = read_all(&p, &limit);
        assert_eq!(got.len(), 1);
        assert!(
            matches!(
                &got[0].1,
                Cut::Oversize {
                    spilled: Some(Err(_)),
                    ..
                }
            ),
            "{:?}",
            got[0].1
        );
        // The stand-in goes instead; nothing is on disk.
        assert!(!got[0].0.contains("sss"));
        assert!(!spill.exists() || std::fs::read_dir(&spill).unwrap().next().is_none());
    }
}
