//! Files the configuration names, checked when it is loaded: files read later must be readable
//! regular files now, and key files no more open than `[security] key_file_modes` allows.

use std::path::{Path, PathBuf};

use super::KeyFileModes;

/// Why a file an option names could not be read when it is needed.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: {}", crate::private_fs::why(.error))]
    Unreadable {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path} is a directory, not a file")]
    Directory { path: PathBuf },
    #[error("{path} is not a regular file")]
    NotRegular { path: PathBuf },
}

/// A path option read later (at every start, or when it changes) must name a readable regular
/// file now: a directory or an unreadable file would otherwise pass `validate` and fail at run
/// time (a token file retried forever, a CA file ending the process).
pub(super) fn readable_file(path: &Path) -> Result<(), FileError> {
    let unreadable = |error: std::io::Error| FileError::Unreadable {
        path: path.to_path_buf(),
        error,
    };
    let f = open_nonblocking(path).map_err(unreadable)?;
    let m = f.metadata().map_err(unreadable)?;
    if m.is_dir() {
        return Err(FileError::Directory {
            path: path.to_path_buf(),
        });
    }
    if !m.is_file() {
        return Err(FileError::NotRegular {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// Opens `path` for reading without waiting: a FIFO planted at the name must not block until a
/// writer comes (it is then refused as not a regular file); reads of a regular file never
/// block anyway.
fn open_nonblocking(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
}

/// Why a key file (`what`: "KEK", "signing key") is refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read {path}: {}", crate::private_fs::why(.error))]
    Unreadable {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path} is a directory, not a {what} file")]
    Directory { path: PathBuf, what: String },
    #[error("{path} is not a regular file")]
    NotRegular { path: PathBuf },
    #[error("{path} is {len} bytes: a {what} file is at most 64 KiB")]
    TooLarge {
        path: PathBuf,
        len: u64,
        what: String,
    },
    /// `rule` says what `[security] key_file_modes` allows and the `chmod` that fixes it.
    #[error("{path} is readable or writable by {who} (mode {mode:04o}): {rule}; in Kubernetes mount the secret with defaultMode: 0400 (or 0440 with fsGroup and [security] key_file_modes = \"group\"); set \"trusted\" only for a mount you trust.")]
    TooOpen {
        path: PathBuf,
        who: &'static str,
        mode: u32,
        rule: String,
    },
    #[error("{path} grew past 64 KiB while it was read")]
    Grew { path: PathBuf },
}

/// A key file is a few hundred bytes at most; a larger one is not a key.
const MAX_KEY_FILE: u64 = 64 * 1024;

/// Reads a key file (`what`: "KEK", "signing key") after checking, on the opened file (no race
/// with a rename in between), that it is a regular file of at most 64 KiB that the group and
/// others cannot open beyond what `modes` allows (ssh's rule for private keys).
pub fn read_key_file(
    path: &Path,
    modes: KeyFileModes,
    what: &str,
) -> Result<zeroize::Zeroizing<Vec<u8>>, KeyFileError> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let unreadable = |error: std::io::Error| KeyFileError::Unreadable {
        path: path.to_path_buf(),
        error,
    };
    let f = open_nonblocking(path).map_err(unreadable)?;
    let meta = f.metadata().map_err(unreadable)?;
    if meta.is_dir() {
        return Err(KeyFileError::Directory {
            path: path.to_path_buf(),
            what: what.to_string(),
        });
    }
    if !meta.is_file() {
        return Err(KeyFileError::NotRegular {
            path: path.to_path_buf(),
        });
    }
    if meta.len() > MAX_KEY_FILE {
        return Err(KeyFileError::TooLarge {
            path: path.to_path_buf(),
            len: meta.len(),
            what: what.to_string(),
        });
    }
    if let Some(e) = mode_problem(path, meta.permissions().mode(), modes, what) {
        return Err(e);
    }
    let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(meta.len() as usize));
    f.take(MAX_KEY_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX_KEY_FILE {
        return Err(KeyFileError::Grew {
            path: path.to_path_buf(),
        });
    }
    Ok(bytes)
}

/// Why a key file of `mode` is refused under `modes`, if it is.
fn mode_problem(path: &Path, mode: u32, modes: KeyFileModes, what: &str) -> Option<KeyFileError> {
    let forbidden = match modes {
        KeyFileModes::Owner => 0o077,
        // The group may read (0o040), not write or execute; others nothing.
        KeyFileModes::Group => 0o037,
        KeyFileModes::Trusted => return None,
    };
    let open = mode & forbidden;
    if open == 0 {
        return None;
    }
    let who = match (open & 0o070 != 0, open & 0o007 != 0) {
        (true, true) => "the group and others",
        (true, false) => "the group",
        _ => "others",
    };
    let shown = path.display();
    let rule = match modes {
        KeyFileModes::Group => format!(
            "with [security] key_file_modes = \"group\" a {what} may be read by its group, not written by it, and must not be open to others. Run `chmod 640 {shown}` (or `chmod 600`)"
        ),
        _ => format!("a {what} must be readable by its owner only. Run `chmod 600 {shown}`"),
    };
    Some(KeyFileError::TooOpen {
        path: path.to_path_buf(),
        who,
        mode: mode & 0o7777,
        rule,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A FIFO planted where a key file is named is refused at once: opening it must not wait
    /// for a writer (which would hang `validate` and `run` forever).
    #[test]
    fn a_fifo_at_a_key_file_is_refused_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("kek.key");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(read_key_file(&fifo, KeyFileModes::Owner, "KEK").map(|_| ()));
        });
        // Bounded by what it measures: a blocked open never answers at all.
        let res = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("read_key_file blocked on a FIFO");
        let err = res.unwrap_err().to_string();
        assert!(err.contains("is not a regular file"), "{err}");
    }
}
