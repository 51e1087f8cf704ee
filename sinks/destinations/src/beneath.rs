//! File access beneath a root directory that never follows a link: every path is opened one
//! component at a time from the root's descriptor with `O_NOFOLLOW`, directories are made as
//! needed (0700), new files are created exclusively (0600) under a random temporary name and
//! hard-linked to their name (which fails if anything, a link included, is there).
//!
//! A link found inside the root is refused with [`LinkRefused`], naming it: someone who can
//! write into an archive directory cannot make logferry write, truncate or read a file outside
//! it (the configured root itself may be reached through links: those are the operator's).

use std::ffi::OsStr;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use logferry_sink::store::StoreError;
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, CWD};
use rustix::io::Errno;

const DIR: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);
/// `NONBLOCK`: a FIFO planted at a name cannot hold the reader.
const READ: OFlags = OFlags::RDONLY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::NONBLOCK)
    .union(OFlags::CLOEXEC);
const NEW: OFlags = OFlags::WRONLY
    .union(OFlags::CREATE)
    .union(OFlags::EXCL)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// A symbolic link where logferry would have opened a file or a directory.
#[derive(Debug, thiserror::Error)]
#[error("{0} is a symbolic link inside the sink's root: refused (logferry never writes or reads through a link it did not make)")]
pub struct LinkRefused(pub PathBuf);

/// Whether `e` is a refused link.
pub fn is_link_refused(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|i| i.is::<LinkRefused>())
}

/// Something other than a regular file where logferry reads one (a folder, a FIFO, a device):
/// typed, so that a store tells a name holding nothing of ours from a store that fails.
#[derive(Debug, thiserror::Error)]
#[error("{0} is not a regular file")]
pub struct NotRegular(pub PathBuf);

/// What writing a file found.
#[derive(Debug)]
pub(crate) enum Written {
    New,
    /// The same bytes were there already (a retry or a replay).
    Same,
    /// Other bytes hold the name; they are kept.
    Taken,
}

pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

/// The components of a key: only plain names, at least one.
fn split(key: &str) -> std::io::Result<(Vec<&OsStr>, &OsStr)> {
    let mut comps = Vec::new();
    for c in Path::new(key).components() {
        match c {
            Component::Normal(n) => comps.push(n),
            _ => {
                return Err(std::io::Error::new(
                    ErrorKind::InvalidInput,
                    format!("key {key:?} is not a relative path"),
                ))
            }
        }
    }
    let name = comps.pop().ok_or_else(|| {
        std::io::Error::new(ErrorKind::InvalidInput, "an empty key is not a file name")
    })?;
    Ok((comps, name))
}

/// A file larger than its reader takes: the store's own error, carried through I/O.
fn too_large(shown: &Path, max: u64) -> std::io::Error {
    std::io::Error::other(StoreError::too_large(shown.display().to_string(), max))
}

fn temp_name() -> std::io::Result<String> {
    let mut r = [0u8; 8];
    aws_lc_rs::rand::fill(&mut r).map_err(|_| std::io::Error::other("no random bytes"))?;
    Ok(format!(
        "{}{}",
        crate::directory::TEMP_PREFIX,
        hex::encode(r)
    ))
}

impl Root {
    /// The root directory, made (0700) when `create` and missing.
    pub fn open(path: &Path, create: bool) -> std::io::Result<Root> {
        if create {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)?;
        }
        let fd = rfs::openat(
            CWD,
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Root {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// `O_NOFOLLOW` on a link fails with `ELOOP` or `ENOTDIR`: tell a link from the rest.
    fn classify(dir: &OwnedFd, name: &OsStr, shown: &Path, e: Errno) -> std::io::Error {
        if matches!(e, Errno::LOOP | Errno::NOTDIR | Errno::MLINK) {
            if let Ok(st) = rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
                    return std::io::Error::other(LinkRefused(shown.to_path_buf()));
                }
            }
        }
        e.into()
    }

    /// The directory of `comps` under the root, each component opened without following links
    /// and made when `create`.
    fn dir(&self, comps: &[&OsStr], create: bool) -> std::io::Result<(OwnedFd, PathBuf)> {
        let mut cur = self.fd.try_clone()?;
        let mut shown = self.path.clone();
        for c in comps {
            shown.push(c);
            cur = match rfs::openat(&cur, *c, DIR, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::NOENT) if create => {
                    match rfs::mkdirat(&cur, *c, Mode::from_raw_mode(0o700)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    rfs::openat(&cur, *c, DIR, Mode::empty())
                        .map_err(|e| Self::classify(&cur, c, &shown, e))?
                }
                Err(e) => return Err(Self::classify(&cur, c, &shown, e)),
            };
        }
        Ok((cur, shown))
    }

    /// Writes `bytes` at `key` without ever replacing what is there or following a link.
    pub(crate) fn write_new(&self, key: &str, bytes: &[u8]) -> std::io::Result<Written> {
        let (comps, name) = split(key)?;
        let (dir, shown) = self.dir(&comps, true)?;
        let tmp = temp_name()?;
        let result = (|| {
            let fd = rfs::openat(&dir, tmp.as_str(), NEW, Mode::from_raw_mode(0o600))?;
            let mut f = std::fs::File::from(fd);
            f.write_all(bytes)?;
            f.sync_all()?;
            match rfs::linkat(&dir, tmp.as_str(), &dir, name, AtFlags::empty()) {
                Ok(()) => {}
                Err(Errno::EXIST) => return Self::same_bytes(&dir, name, &shown.join(name), bytes),
                // A file system without hard links (CIFS, vfat, some FUSE): a rename that
                // refuses to replace, or, where even that is missing, a check then a rename
                // (not atomic against another writer, which a directory sink does not have).
                Err(Errno::PERM | Errno::OPNOTSUPP | Errno::MLINK) => {
                    match rfs::renameat_with(
                        &dir,
                        tmp.as_str(),
                        &dir,
                        name,
                        rfs::RenameFlags::NOREPLACE,
                    ) {
                        Ok(()) => {}
                        Err(Errno::EXIST) => {
                            return Self::same_bytes(&dir, name, &shown.join(name), bytes)
                        }
                        Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
                            if rfs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW).is_ok() {
                                return Self::same_bytes(&dir, name, &shown.join(name), bytes);
                            }
                            rfs::renameat(&dir, tmp.as_str(), &dir, name)?;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(e) => return Err(e.into()),
            }
            rfs::fsync(&dir)?;
            Ok(Written::New)
        })();
        let _ = rfs::unlinkat(&dir, tmp.as_str(), AtFlags::empty());
        result
    }

    fn same_bytes(
        dir: &OwnedFd,
        name: &OsStr,
        shown: &Path,
        bytes: &[u8],
    ) -> std::io::Result<Written> {
        let fd = match rfs::openat(dir, name, READ, Mode::empty()) {
            Ok(fd) => fd,
            // A link at the name holds it like any other file: kept, never written through.
            Err(Errno::LOOP) => {
                tracing::warn!(path = %shown.display(), "a symbolic link holds a name logferry writes; refused, left in place");
                return Ok(Written::Taken);
            }
            Err(e) => return Err(Self::classify(dir, name, shown, e)),
        };
        let f = std::fs::File::from(fd);
        let meta = f.metadata()?;
        // The size first: whatever is at the name, it is read only when it could be ours.
        if !meta.is_file() || meta.len() != bytes.len() as u64 {
            return Ok(Written::Taken);
        }
        let mut have = Vec::with_capacity(bytes.len());
        f.take(bytes.len() as u64 + 1).read_to_end(&mut have)?;
        Ok(if have == bytes {
            Written::Same
        } else {
            Written::Taken
        })
    }

    /// The bytes of the regular file at `key`, at most `max` (more is an error found before
    /// it is read); `None` when nothing is there.
    pub fn read(&self, key: &str, max: u64) -> std::io::Result<Option<Vec<u8>>> {
        let (comps, name) = split(key)?;
        let (dir, shown) = match self.dir(&comps, false) {
            Ok(d) => d,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let shown = shown.join(name);
        let fd = match rfs::openat(&dir, name, READ, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(Self::classify(&dir, name, &shown, e)),
        };
        let f = std::fs::File::from(fd);
        let meta = f.metadata()?;
        if !meta.is_file() {
            return Err(std::io::Error::other(NotRegular(shown)));
        }
        match logferry_sink::capped::read(f, max, Some(meta.len())) {
            Ok(out) => Ok(Some(out)),
            Err(logferry_sink::capped::CapError::TooLarge { .. }) => Err(too_large(&shown, max)),
            Err(logferry_sink::capped::CapError::Io(e)) => Err(e),
        }
    }

    /// Removes the file at `key` (a link there is removed, never followed) and syncs its
    /// directory; nothing there is not an error.
    pub fn remove(&self, key: &str) -> std::io::Result<()> {
        let (comps, name) = split(key)?;
        let (dir, _) = match self.dir(&comps, false) {
            Ok(d) => d,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        match rfs::unlinkat(&dir, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(e.into()),
        }
        rfs::fsync(&dir)?;
        Ok(())
    }

    /// Creates and removes a file of a random name: the root is writable.
    pub fn probe(&self) -> std::io::Result<()> {
        let tmp = temp_name()?;
        let fd = rfs::openat(&self.fd, tmp.as_str(), NEW, Mode::from_raw_mode(0o600))?;
        rfs::fsync(&fd)?;
        drop(fd);
        rfs::unlinkat(&self.fd, tmp.as_str(), AtFlags::empty())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    #[test]
    fn files_are_made_private_and_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let r = Root::open(&dir.path().join("root"), true).unwrap();
        assert!(matches!(
            r.write_new("a/b/c.json", b"one").unwrap(),
            Written::New
        ));
        assert!(matches!(
            r.write_new("a/b/c.json", b"one").unwrap(),
            Written::Same
        ));
        assert!(matches!(
            r.write_new("a/b/c.json", b"two").unwrap(),
            Written::Taken
        ));
        assert_eq!(r.read("a/b/c.json", 10).unwrap().unwrap(), b"one");
        let mode = |p: &str| {
            std::fs::metadata(dir.path().join("root").join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!((mode("a/b/c.json"), mode("a/b")), (0o600, 0o700));
        assert!(r.read("a/b/c.json", 2).is_err());
        assert!(r.read("../x", 2).is_err());
        r.remove("a/b/c.json").unwrap();
        assert_eq!(r.read("a/b/c.json", 10).unwrap(), None);
        r.probe().unwrap();
        // Only the made folders are left: no temp file.
        assert_eq!(
            std::fs::read_dir(dir.path().join("root/a/b"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn links_planted_inside_the_root_are_refused_and_nothing_outside_changes() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("kek.hex");
        std::fs::write(&outside, "secret key").unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        let root = dir.path().join("root");
        let r = Root::open(&root, true).unwrap();
        // A link at the final name, and a linked folder on the way.
        symlink(&outside, root.join("obj.json")).unwrap();
        symlink(&elsewhere, root.join("tenant")).unwrap();
        assert!(matches!(
            r.write_new("obj.json", b"secret key").unwrap(),
            Written::Taken
        ));
        let err = r.write_new("tenant/obj.json", b"x").unwrap_err();
        assert!(is_link_refused(&err), "{err}");
        assert!(err.to_string().contains("tenant"), "{err}");
        let err = r.read("obj.json", 100).unwrap_err();
        assert!(is_link_refused(&err), "{err}");
        assert_eq!(std::fs::read(&outside).unwrap(), b"secret key");
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
        // Removing a link removes the link, not its target.
        r.remove("obj.json").unwrap();
        assert!(outside.exists());
    }
}
