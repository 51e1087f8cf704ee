//! Include folders this process cannot look into (a container's user against a root-owned
//! log folder): which folder to fix, which ones an exclude silences, the one warning a minute a
//! source gives for them, and `validate`'s list.

use std::path::{Path, PathBuf};

use tracing::warn;

use super::{walk, Tailer};

/// Whether an exclude covers the folder `dir` (`<dir>/**`, `<dir>/*` or `dir` itself): the
/// operator's choice, neither counted nor warned of (a host's /var/log/private under
/// /var/log/**).
pub(super) fn excluded(exclude: &[glob::Pattern], dir: &Path) -> bool {
    let probe = std::ffi::OsStr::new("logferry-exclude-probe");
    exclude
        .iter()
        .any(|x| x.matches_path(dir) || x.matches_path(&dir.join(probe)))
}

/// The folder to fix for `dir`'s error: for a permission error the first folder on its way
/// this process cannot search (else `dir`), for another (a file where a folder should be, a
/// link loop) `dir` itself.
pub(super) fn to_fix(dir: &Path, e: &std::io::Error) -> PathBuf {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        unsearchable(dir)
    } else {
        dir.to_path_buf()
    }
}

/// The folder to fix when `dir` cannot be looked into: the first folder on its way (from the
/// root) this process cannot search, else `dir` itself (it cannot be read).
fn unsearchable(dir: &Path) -> PathBuf {
    let mut ancestors: Vec<&Path> = dir.ancestors().skip(1).collect();
    ancestors.reverse();
    ancestors
        .into_iter()
        .filter(|a| !a.as_os_str().is_empty())
        .find(|a| {
            // As this process's effective user, as opening would be.
            rustix::fs::accessat(
                rustix::fs::CWD,
                *a,
                rustix::fs::Access::EXEC_OK,
                rustix::fs::AtFlags::EACCESS,
            )
            .is_err()
        })
        .unwrap_or(dir)
        .to_path_buf()
}

/// The folders of `include` this process cannot look into now (permissions), or whose path
/// cannot be followed, each with its error and the folder to fix: what `validate` warns of,
/// walked and filtered as the run does.
pub fn unreadable_folders(
    include: &[String],
    exclude: &[glob::Pattern],
    follow: crate::config::FollowSymlinks,
) -> Vec<(PathBuf, PathBuf, std::io::Error)> {
    let mut out = Vec::new();
    for pattern in include {
        if let Ok(w) = walk::expand(pattern, follow, &|| false) {
            for (dir, e) in w.unreadable {
                if !excluded(exclude, &dir) {
                    let fix = to_fix(&dir, &e);
                    out.push((dir, fix, e));
                }
            }
        }
    }
    out
}

impl Tailer {
    /// One warning a minute for all the folders a scan could not look into, not one per
    /// folder: thousands of them (a 0700 folder per job under a mounted root) must not flood
    /// the log. The gauge has the count; the first three are named with the folder to fix.
    pub(super) fn warn_unreadable(&mut self, hidden: &[(PathBuf, std::io::Error)]) {
        let Some((first, e)) = hidden.first() else {
            return;
        };
        let Some(held) = self.repeats.allow("unreadable folders") else {
            return;
        };
        let who = crate::private_fs::identity();
        let named: Vec<String> = hidden
            .iter()
            .take(3)
            .map(|(d, e)| to_fix(d, e).display().to_string())
            .collect();
        let count = hidden.len();
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            let culprit = to_fix(first, e);
            warn!(source = %self.cfg.name, count, path = %culprit.display(), pattern_dir = %first.display(), first = %named.join(", "), error = %e, user = %who, repeated = held, "cannot look into folders of an include pattern: their files are not found; make them readable and searchable by this user, or exclude them (counted in paths_unreadable)");
        } else {
            warn!(source = %self.cfg.name, count, path = %first.display(), first = %named.join(", "), error = %e, repeated = held, "an include pattern's path cannot be followed (a file where a folder should be, or a link loop): its files are not found (counted in paths_unreadable)");
        }
    }
}
