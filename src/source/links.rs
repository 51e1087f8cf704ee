//! Which files a source may open. The log directory is shared with another container (a
//! different trust domain): a symbolic link planted there must not turn logferry into a
//! reader of its own credentials or of anything else outside the log tree.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::config::FollowSymlinks;

/// Directories that hold mounted credentials (Kubernetes service account tokens, Docker and
/// Kubernetes secrets): never read, whatever `follow_symlinks` says.
const SECRET_DIRS: &[&str] = &["/var/run/secrets", "/run/secrets"];

/// Why a file was not opened.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("a symbolic link to {0}, outside the include roots (follow_symlinks = \"within\")")]
    Outside(PathBuf),
    #[error("reached through a symbolic link (follow_symlinks = \"never\")")]
    Link,
    #[error("it is one of logferry's own credential or key files, never read as a log")]
    Credential,
    #[error("the link changed between the check and the open")]
    Swapped,
}

impl Refused {
    /// A refusal by policy (counted and logged once), not an I/O problem.
    pub fn is_policy(&self) -> bool {
        !matches!(self, Refused::Io(_))
    }
}

/// The rule for one source: its include roots (canonical), its setting, and the files it
/// must never read.
#[derive(Debug, Clone)]
pub struct Admission {
    policy: FollowSymlinks,
    /// `(as written, canonical)` for the part of each include pattern before its first glob
    /// character.
    roots: Vec<(PathBuf, PathBuf)>,
    /// (device, inode) of the credential files, and canonical directories never read.
    forbidden: Vec<(u64, u64)>,
    forbidden_dirs: Vec<PathBuf>,
}

impl Admission {
    /// `credentials` are files never read; `private` directories (the data directory) are
    /// never read either.
    pub fn new(
        include: &[String],
        policy: FollowSymlinks,
        credentials: &[PathBuf],
        private: &[PathBuf],
    ) -> Admission {
        let roots = include
            .iter()
            .map(|p| {
                let root = glob_root(p);
                let canon = std::fs::canonicalize(&root).unwrap_or_else(|_| root.clone());
                (root, canon)
            })
            .collect();
        let forbidden = credentials
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| (m.dev(), m.ino()))
            .collect();
        let forbidden_dirs = SECRET_DIRS
            .iter()
            .map(PathBuf::from)
            .chain(private.iter().cloned())
            .map(|d| canonical_prefix(&d))
            .collect();
        Admission {
            policy,
            roots,
            forbidden,
            forbidden_dirs,
        }
    }

    /// Opens `path` for reading if the policy admits it. The file opened is checked to be
    /// the one that was resolved and admitted: a link swapped in between is refused.
    pub fn open(&self, path: &Path) -> Result<File, Refused> {
        self.open_with(path, || {})
    }

    /// [`Admission::open`] with `between` run after the check and before the open (the
    /// moment an attacker would swap the link; tests use it to do so).
    fn open_with(&self, path: &Path, between: impl FnOnce()) -> Result<File, Refused> {
        let resolved = std::fs::canonicalize(path)?;
        if self.forbidden_dirs.iter().any(|d| resolved.starts_with(d)) {
            return Err(Refused::Credential);
        }
        match self.policy {
            FollowSymlinks::Always => {}
            FollowSymlinks::Within => {
                if !self
                    .roots
                    .iter()
                    .any(|(_, canon)| resolved.starts_with(canon))
                {
                    return Err(Refused::Outside(resolved));
                }
            }
            FollowSymlinks::Never => {
                // No link anywhere below the include root: the path as written, under the
                // canonical root, is already the resolved one.
                let direct = self.roots.iter().any(|(root, canon)| {
                    path.strip_prefix(root)
                        .is_ok_and(|rel| canon.join(rel) == resolved)
                });
                if !direct {
                    return Err(Refused::Link);
                }
            }
        }
        between();
        let file = File::open(path)?;
        let opened = file.metadata()?;
        let id = (opened.dev(), opened.ino());
        if self.forbidden.contains(&id) {
            return Err(Refused::Credential);
        }
        let checked = std::fs::metadata(&resolved)?;
        if (checked.dev(), checked.ino()) != id {
            return Err(Refused::Swapped);
        }
        Ok(file)
    }
}

/// The directory part of a pattern before its first glob character (`/logs/*/app.log` ->
/// `/logs`, `/logs/app.log` -> `/logs`).
fn glob_root(pattern: &str) -> PathBuf {
    let cut = pattern.find(['*', '?', '[', '{']).unwrap_or(pattern.len());
    let head = &pattern[..cut];
    let dir = match head.rfind('/') {
        Some(0) => "/",
        Some(i) => &head[..i],
        None => ".",
    };
    PathBuf::from(dir)
}

/// `d` with its longest existing ancestor resolved (a folder that does not exist yet, such as
/// a ledger before its first key, still matches the files later made in it).
fn canonical_prefix(d: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut cur = d.to_path_buf();
    loop {
        if let Ok(c) = std::fs::canonicalize(&cur) {
            return rest.iter().rev().fold(c, |acc: PathBuf, n| acc.join(n));
        }
        match (cur.file_name().map(|n| n.to_owned()), cur.parent()) {
            (Some(n), Some(p)) => {
                rest.push(n);
                cur = p.to_path_buf();
            }
            _ => return d.to_path_buf(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn roots_are_the_directories_before_the_first_glob() {
        assert_eq!(glob_root("/logs/*/app.log"), PathBuf::from("/logs"));
        assert_eq!(glob_root("/logs/app.log"), PathBuf::from("/logs"));
        assert_eq!(glob_root("/logs/a?/x"), PathBuf::from("/logs"));
        assert_eq!(glob_root("/x*"), PathBuf::from("/"));
    }

    #[test]
    fn links_are_followed_by_policy_and_credentials_never() {
        let d = tempfile::tempdir().unwrap();
        let logs = d.path().join("logs");
        std::fs::create_dir_all(logs.join("sub")).unwrap();
        std::fs::write(logs.join("sub/real.log"), "x\n").unwrap();
        std::fs::write(d.path().join("outside.txt"), "secret\n").unwrap();
        std::fs::write(d.path().join("token"), "t\n").unwrap();
        symlink(logs.join("sub/real.log"), logs.join("inside.log")).unwrap();
        symlink(d.path().join("outside.txt"), logs.join("evil.log")).unwrap();
        symlink(d.path().join("token"), logs.join("token.log")).unwrap();
        let include = vec![format!("{}/**/*.log", logs.display())];
        let creds = vec![d.path().join("token")];

        let within = Admission::new(&include, FollowSymlinks::Within, &creds, &[]);
        assert!(within.open(&logs.join("sub/real.log")).is_ok());
        assert!(within.open(&logs.join("inside.log")).is_ok());
        assert!(matches!(
            within.open(&logs.join("evil.log")),
            Err(Refused::Outside(_))
        ));

        let never = Admission::new(&include, FollowSymlinks::Never, &creds, &[]);
        assert!(never.open(&logs.join("sub/real.log")).is_ok());
        assert!(matches!(
            never.open(&logs.join("inside.log")),
            Err(Refused::Link)
        ));

        let always = Admission::new(&include, FollowSymlinks::Always, &creds, &[]);
        assert!(always.open(&logs.join("evil.log")).is_ok());
        assert!(matches!(
            always.open(&logs.join("token.log")),
            Err(Refused::Credential)
        ));

        // The data directory is never read as logs.
        let private = Admission::new(&include, FollowSymlinks::Always, &[], &[logs.join("sub")]);
        assert!(matches!(
            private.open(&logs.join("inside.log")),
            Err(Refused::Credential)
        ));
    }

    #[test]
    fn a_link_swapped_between_the_check_and_the_open_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let logs = d.path().join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        std::fs::write(logs.join("real.log"), "x\n").unwrap();
        std::fs::write(d.path().join("outside.txt"), "secret\n").unwrap();
        let link = logs.join("app.log");
        symlink(logs.join("real.log"), &link).unwrap();
        let include = vec![format!("{}/*.log", logs.display())];
        let a = Admission::new(&include, FollowSymlinks::Within, &[], &[]);
        let res = a.open_with(&link, || {
            std::fs::remove_file(&link).unwrap();
            symlink(d.path().join("outside.txt"), &link).unwrap();
        });
        assert!(matches!(res, Err(Refused::Swapped)), "{res:?}");
    }
}
