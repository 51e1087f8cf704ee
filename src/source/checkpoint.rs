//! Crash-safe checkpoints: how far each file has been durably handed on.
//!
//! Written as temp file, fsync, rename of the current copy to `.prev`, rename of the temp file
//! into place, fsync of the directory. Whatever instant a crash hits, either the current or the
//! previous copy is whole. A file that cannot be parsed is moved aside (never deleted, never
//! silently replaced by "start from zero") and the previous copy is used, with an error log.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

const VERSION: u32 = 1;

/// Identity of a file: device, inode and a fingerprint of its first line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
    #[serde(with = "hex_u64")]
    pub fp: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    #[serde(flatten)]
    pub id: FileId,
    /// Every byte before this offset has been handed on durably; it is a line start.
    pub offset: u64,
    /// Where the file was last seen; used to find it again if it was rotated while stopped.
    pub path: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    version: u32,
    files: Vec<Entry>,
}

pub struct Checkpoints {
    path: PathBuf,
}

/// What loading found, besides the entries: said loudly by the caller.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub set_aside: Option<(PathBuf, CheckpointError)>,
    pub used_previous: bool,
}

impl Checkpoints {
    pub fn new(path: PathBuf) -> Checkpoints {
        Checkpoints { path }
    }

    fn sibling(&self, suffix: &str) -> PathBuf {
        let mut s = self.path.clone().into_os_string();
        s.push(suffix);
        PathBuf::from(s)
    }

    /// Loads the newest whole copy. Errors only when the directory cannot be read at all.
    pub fn load(&self) -> std::io::Result<(Vec<Entry>, LoadReport)> {
        let mut report = LoadReport::default();
        // A temp file is a write that never completed its rename: not trusted, removed.
        let _ = fs::remove_file(self.sibling(".tmp"));
        match read(&self.path) {
            Ok(Some(v)) => return Ok((v, report)),
            Ok(None) => {}
            Err(CheckpointError::Io(e)) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(not_ours(&self.path, e));
            }
            Err(reason) => {
                let aside = self.sibling(&format!(
                    ".corrupt-{}",
                    chrono::Utc::now().format("%Y%m%dT%H%M%S")
                ));
                fs::rename(&self.path, &aside)?;
                report.set_aside = Some((aside, reason));
            }
        }
        match read(&self.sibling(".prev")) {
            Ok(Some(v)) => {
                report.used_previous = true;
                Ok((v, report))
            }
            Ok(None) => Ok((Vec::new(), report)),
            Err(CheckpointError::Io(e)) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                Err(not_ours(&self.sibling(".prev"), e))
            }
            Err(reason) => {
                let aside = self.sibling(".prev.corrupt");
                fs::rename(self.sibling(".prev"), &aside)?;
                if report.set_aside.is_none() {
                    report.set_aside = Some((aside, reason));
                }
                Ok((Vec::new(), report))
            }
        }
    }

    pub fn save(&self, files: &[Entry]) -> std::io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        // Owner only: checkpoints name the files read and how far (0700 directories, 0600 files).
        crate::private_fs::dir_all(dir)?;
        let tmp = self.sibling(".tmp");
        let body = serde_json::to_vec(&Stored {
            version: VERSION,
            files: files.to_vec(),
        })
        .map_err(std::io::Error::other)?;
        let mut f = crate::private_fs::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        if self.path.exists() {
            fs::rename(&self.path, self.sibling(".prev"))?;
        }
        fs::rename(&tmp, &self.path)?;
        fs::File::open(dir)?.sync_all()
    }
}

/// Why a checkpoint file that exists is not used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{0}")]
    Io(std::io::Error),
    #[error("{0}")]
    Json(serde_json::Error),
    #[error("unsupported checkpoint version {0}")]
    Version(u32),
}

/// A checkpoint another user wrote (a run as root in this data_dir) is not corrupt: setting it
/// aside would start the files over (or at their end). The start stops and says whose.
fn not_ours(path: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(
        e.kind(),
        format!(
            "checkpoint file {} cannot be read by this process, {}: {e}; give data_dir back to this user (chown -R)",
            path.display(),
            crate::private_fs::identity()
        ),
    )
}

/// `Ok(None)` when the file does not exist; `Err(reason)` when it exists and is not usable.
fn read(path: &Path) -> Result<Option<Vec<Entry>>, CheckpointError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(CheckpointError::Io(e)),
    };
    let stored: Stored = serde_json::from_slice(&bytes).map_err(CheckpointError::Json)?;
    if stored.version != VERSION {
        return Err(CheckpointError::Version(stored.version));
    }
    Ok(Some(stored.files))
}

mod hex_u64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:016x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let s = String::deserialize(d)?;
        u64::from_str_radix(&s, 16).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(offset: u64) -> Entry {
        Entry {
            id: FileId {
                dev: 1,
                ino: 2,
                fp: 0xdead,
            },
            offset,
            path: "/x.log".into(),
        }
    }

    #[test]
    fn save_then_load_restart() {
        let d = tempfile::tempdir().unwrap();
        let c = Checkpoints::new(d.path().join("jobs.json"));
        assert!(c.load().unwrap().0.is_empty());
        c.save(&[entry(10)]).unwrap();
        c.save(&[entry(20)]).unwrap();
        let (v, r) = c.load().unwrap();
        assert_eq!(v, vec![entry(20)]);
        assert!(r.set_aside.is_none() && !r.used_previous);
    }

    #[test]
    fn checkpoints_are_readable_by_their_owner_only() {
        let d = tempfile::tempdir().unwrap();
        let c = Checkpoints::new(d.path().join("state/jobs.json"));
        c.save(&[entry(10)]).unwrap();
        c.save(&[entry(20)]).unwrap();
        fn mode(p: PathBuf) -> u32 {
            use std::os::unix::fs::PermissionsExt;
            fs::metadata(p).unwrap().permissions().mode() & 0o777
        }
        assert_eq!(mode(d.path().join("state")), 0o700);
        assert_eq!(mode(d.path().join("state/jobs.json")), 0o600);
        assert_eq!(mode(d.path().join("state/jobs.json.prev")), 0o600);
    }

    #[test]
    fn corrupt_file_is_set_aside_and_previous_copy_used() {
        let d = tempfile::tempdir().unwrap();
        let c = Checkpoints::new(d.path().join("jobs.json"));
        c.save(&[entry(10)]).unwrap();
        c.save(&[entry(20)]).unwrap();
        fs::write(d.path().join("jobs.json"), b"{\"version\":1,\"fil").unwrap();
        let (v, r) = c.load().unwrap();
        assert_eq!(v, vec![entry(10)]);
        assert!(r.used_previous);
        let (aside, _) = r.set_aside.unwrap();
        assert_eq!(fs::read(aside).unwrap(), b"{\"version\":1,\"fil");
    }

    #[test]
    fn crash_between_renames_leaves_the_previous_copy() {
        let d = tempfile::tempdir().unwrap();
        let c = Checkpoints::new(d.path().join("jobs.json"));
        c.save(&[entry(10)]).unwrap();
        // As if the process died after moving the current copy aside.
        fs::rename(d.path().join("jobs.json"), d.path().join("jobs.json.prev")).unwrap();
        fs::write(d.path().join("jobs.json.tmp"), b"half").unwrap();
        let (v, r) = c.load().unwrap();
        assert_eq!(v, vec![entry(10)]);
        assert!(r.used_previous);
        assert!(!d.path().join("jobs.json.tmp").exists());
    }
}
