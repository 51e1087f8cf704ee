//! Lines over the limit: cut and kept (text), or digested into a stand-in record and
//! optionally written whole to the dead-letter folder (JSON), while they stream past.

use std::fs::File;
use std::path::{Path, PathBuf};

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
}

/// How long a line may be and what happens to a longer one.
#[derive(Debug, Clone)]
pub struct Limit {
    pub max: usize,
    /// Digest longer lines into a stand-in record (JSON) instead of cutting them (text).
    pub digest: bool,
    /// With `digest`: a folder to write longer lines to, whole (`oversize = "dead_letter"`).
    pub spill_dir: Option<PathBuf>,
}

impl Limit {
    pub fn cut(max: usize) -> Limit {
        Limit {
            max,
            digest: false,
            spill_dir: None,
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
        let mut sp = Spill::create(dir, path, fp.unwrap_or(0), offset);
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
    /// same name.
    fn create(dir: &Path, source_file: &Path, fp: u64, offset: u64) -> Spill {
        let to = dir.join(format!("{fp:016x}-{offset}.json"));
        let tmp = dir.join(format!(".{fp:016x}-{offset}.json.tmp"));
        let opened = std::fs::create_dir_all(dir).and_then(|_| File::create(&tmp));
        let (file, failed) = match opened {
            Ok(f) => (Some(f), None),
            Err(e) => (None, Some(e)),
        };
        let note = dir.join(format!("{fp:016x}-{offset}.reason.json"));
        let reason = serde_json::json!({
            "reason": "oversize: the record is larger than max_record_bytes",
            "file": source_file.display().to_string(),
            "offset": offset,
        });
        let failed = failed.or_else(|| std::fs::write(&note, reason.to_string()).err());
        Spill {
            file,
            tmp,
            to,
            failed,
        }
    }

    pub fn write(&mut self, piece: &[u8]) {
        use std::io::Write;
        if let (Some(f), None) = (&mut self.file, &self.failed) {
            if let Err(e) = f.write_all(piece) {
                self.failed = Some(e);
            }
        }
    }

    /// Makes the copy durable; the line is acknowledged only after this.
    fn finish(self, _total: usize) -> Result<PathBuf, String> {
        let file = match (self.file, self.failed) {
            (Some(f), None) => f,
            (_, e) => {
                let _ = std::fs::remove_file(&self.tmp);
                return Err(e.map_or_else(|| "not opened".to_string(), |e| e.to_string()));
            }
        };
        let done = file
            .sync_all()
            .and_then(|_| std::fs::rename(&self.tmp, &self.to))
            .and_then(|_| match self.to.parent() {
                Some(d) => File::open(d)?.sync_all(),
                None => Ok(()),
            });
        match done {
            Ok(()) => Ok(self.to),
            Err(e) => {
                let _ = std::fs::remove_file(&self.tmp);
                Err(e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::file::Tailed;
    use super::*;

    #[test]
    fn an_oversize_json_line_becomes_a_stand_in_and_can_be_spilled_whole() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.log");
        let big = format!(
            r#"{{"account_id":7,"lines":[{{"password":"{}"}}],"status":"ok"}}"#,
            "s".repeat(50_000)
        );
        std::fs::write(&p, format!("{{\"a\":1}}\n{big}\n{{\"b\":2}}\n")).unwrap();
        let spill = d.path().join("dl");
        let limit = Limit {
            max: 10_000,
            digest: true,
            spill_dir: Some(spill.clone()),
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
}
