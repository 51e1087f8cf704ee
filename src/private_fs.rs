//! Files logferry writes that hold keys, state, journals or plaintext: created with mode 0600
//! (directories 0700) whatever the umask, and never opened through a symbolic link at the
//! last component of the path (`O_NOFOLLOW`). A file left by an older release or another tool
//! with group or other bits is tightened to 0600 when it is opened for writing.

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of the files written here.
pub const FILE_MODE: u32 = 0o600;
/// Mode of the directories made here.
pub const DIR_MODE: u32 = 0o700;

fn nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

/// Write access, mode 0600 for a file that is created, no link followed.
fn options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.write(true).mode(FILE_MODE).custom_flags(nofollow());
    o
}

/// Takes group and other bits away from a file that already existed (fchmod on the open file,
/// so the path cannot be swapped in between).
fn tighten(f: &File) -> io::Result<()> {
    let mode = f.metadata()?.permissions().mode();
    if mode & 0o077 != 0 {
        f.set_permissions(Permissions::from_mode(FILE_MODE))?;
    }
    Ok(())
}

/// Creates or truncates `path` for writing, mode 0600. A symbolic link at `path` is refused
/// (`ELOOP`), also a dangling one.
pub fn create(path: &Path) -> io::Result<File> {
    let f = options().create(true).truncate(true).open(path)?;
    tighten(&f)?;
    Ok(f)
}

/// Creates `path`, which must not exist yet (not even as a link), mode 0600.
pub fn create_new(path: &Path) -> io::Result<File> {
    options().create_new(true).open(path)
}

/// Opens `path` for appending, creating it with mode 0600; a symbolic link is refused.
pub fn append(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(FILE_MODE)
        .custom_flags(nofollow())
        .open(path)?;
    tighten(&f)?;
    Ok(f)
}

/// [`create`] and write `bytes` (as `std::fs::write`, without a sync).
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    create(path)?.write_all(bytes)
}

/// Creates `path` and its missing parents, each new one with mode 0700. Directories that
/// already exist are left as they are.
pub fn dir_all(path: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
}

/// Whether this process can create files in the directory `path`: a file is made and removed
/// (a mode check alone misses read-only mounts and ACLs).
pub fn check_writable(path: &Path) -> io::Result<()> {
    // The time too: in a container the pid is always 1, and a probe a kill left behind must
    // not be in the way of the next start.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let probe = path.join(format!(
        ".logferry-write-check-{}-{nanos}",
        std::process::id()
    ));
    drop(create_new(&probe)?);
    std::fs::remove_file(&probe)
}

/// [`check_writable`] for `path`, then for each folder of `names` in it and the folders
/// directly below those (links are not followed): a data_dir whose spool or checkpoints an
/// earlier run as root left behind fails here, naming that folder, not later without a path.
/// Only logferry's own folders: a volume's `lost+found` (root's, 0700) is none of its business.
pub fn check_writable_tree(
    path: &Path,
    names: &[&str],
) -> Result<(), (std::path::PathBuf, io::Error)> {
    check_writable(path).map_err(|e| (path.to_path_buf(), e))?;
    for name in names {
        let dir = path.join(name);
        if !std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        check_writable(&dir).map_err(|e| (dir.clone(), e))?;
        let entries = std::fs::read_dir(&dir).map_err(|e| (dir.clone(), e))?;
        for entry in entries.flatten() {
            // The entry's own type: a link is never looked through.
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                check_writable(&entry.path()).map_err(|e| (entry.path(), e))?;
            }
        }
    }
    Ok(())
}

/// Who this process writes as, for messages about permissions: `uid N (gid M)`.
pub fn identity() -> String {
    format!(
        "uid {} (gid {})",
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw()
    )
}

/// An I/O error's text, with who this process is when permission was denied: in a container
/// the usual cause is a file mounted with its host owner and mode 0600.
pub fn why(e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        format!("{e} (this process runs as {})", identity())
    } else {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn create_makes_an_owner_only_file_and_tightens_an_open_one() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.json");
        create(&p).unwrap().write_all(b"one").unwrap();
        assert_eq!(mode(&p), 0o600);
        std::fs::set_permissions(&p, Permissions::from_mode(0o644)).unwrap();
        create(&p).unwrap().write_all(b"2").unwrap();
        assert_eq!(mode(&p), 0o600);
        assert_eq!(std::fs::read(&p).unwrap(), b"2");
    }

    #[test]
    fn create_refuses_a_symbolic_link() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("kek.hex");
        std::fs::write(&target, b"secret").unwrap();
        let link = d.path().join("state.tmp");
        symlink(&target, &link).unwrap();
        assert!(create(&link).is_err());
        assert!(append(&link).is_err());
        assert!(write(&link, b"x").is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"secret");
        // A dangling link is not followed to create its target either.
        let dangling = d.path().join("dangling");
        symlink(d.path().join("nowhere"), &dangling).unwrap();
        assert!(create(&dangling).is_err());
        assert!(!d.path().join("nowhere").exists());
    }

    #[test]
    fn create_new_refuses_an_existing_path() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("key.pem");
        create_new(&p).unwrap().write_all(b"k").unwrap();
        assert_eq!(mode(&p), 0o600);
        let e = create_new(&p).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&p).unwrap(), b"k");
    }

    #[test]
    fn append_adds_and_tightens() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("journal.jsonl");
        append(&p).unwrap().write_all(b"a\n").unwrap();
        assert_eq!(mode(&p), 0o600);
        std::fs::set_permissions(&p, Permissions::from_mode(0o640)).unwrap();
        append(&p).unwrap().write_all(b"b\n").unwrap();
        assert_eq!(mode(&p), 0o600);
        assert_eq!(std::fs::read(&p).unwrap(), b"a\nb\n");
    }

    #[test]
    fn write_and_dir_all_are_owner_only() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("a/b/c");
        dir_all(&dir).unwrap();
        dir_all(&dir).unwrap();
        for p in [d.path().join("a"), d.path().join("a/b"), dir.clone()] {
            assert_eq!(mode(&p), 0o700, "{}", p.display());
        }
        let f = dir.join("batch");
        write(&f, b"plain").unwrap();
        assert_eq!(mode(&f), 0o600);
        assert_eq!(std::fs::read(&f).unwrap(), b"plain");
    }
}
