//! Expanding an include pattern into paths, without walking a symbolic link loop for ever.
//!
//! `glob::glob` follows links to directories under `**` and keeps no record of where it has
//! been: two links back to their own directory (`a -> .`, `b -> .`) make its walk exponential,
//! whatever `follow_symlinks` says (the admission rule only sees the paths it yields). This
//! walk matches the same paths the same way (component by component, with the options
//! `glob::glob` uses, literal components joined rather than matched), but:
//! - reads each directory at most once per pattern position (by device and inode): a
//!   directory reached again is recorded and not descended again;
//! - reads every directory reached without a link before any reached through one, so a
//!   directory (and a file) reachable both ways is found under its real path first;
//! - never enters a linked directory below the literal root under `follow_symlinks = "never"`
//!   (linked files are still yielded: the admission rule refuses and counts them);
//! - is bounded in depth and in directories read, and asks `stop` between directories.

use std::collections::{HashSet, VecDeque};
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use glob::{MatchOptions, Pattern, PatternError};

use crate::config::FollowSymlinks;

/// How many directories below its literal root a pattern is walked.
pub(super) const MAX_DEPTH: usize = 64;
/// Directories read per pattern per scan.
pub(super) const MAX_DIRS: usize = 100_000;

/// What one pattern expanded to.
#[derive(Debug, Default)]
pub(super) struct Walked {
    /// Matching paths that are not directories, those reached without a symbolic link first.
    pub files: Vec<PathBuf>,
    /// Directories reached again and not descended again, each with whether it is a loop
    /// (the directory is its own ancestor) rather than a second way to the same directory.
    pub repeated: Vec<(PathBuf, bool)>,
    /// Directories on the pattern's way that exist but cannot be looked into (permissions),
    /// with the error: their files are not found, and the user must hear of it.
    pub unreadable: Vec<(PathBuf, std::io::Error)>,
    /// The walk stopped at [`MAX_DIRS`] or [`MAX_DEPTH`]: files beyond it are not listed.
    pub truncated: bool,
    /// `stop` said so: the walk was left unfinished and `files` is partial.
    pub stopped: bool,
}

/// One component of a pattern below its root.
enum Comp {
    /// No glob character: compared (and, when walking, joined) as it is, as `glob` does.
    Literal(String),
    /// `**`: any number of directories (consecutive ones collapsed, as `glob` does).
    Recursive,
    /// Matched against names.
    Wild(Pattern),
}

/// A directory whose entries are to be matched against `comps[idx]`.
struct Item {
    path: PathBuf,
    idx: usize,
    /// Directories below the walk's start.
    depth: usize,
    /// Reached through a symbolic link (the entry itself or one of its parents below the
    /// literal root).
    linked: bool,
}

struct Walk {
    comps: Vec<Comp>,
    /// The pattern ends in `/`: it matches directories only (never a file).
    require_dir: bool,
    policy: FollowSymlinks,
    options: MatchOptions,
    real: VecDeque<Item>,
    linked: VecDeque<Item>,
    /// (device, inode, pattern position) of every directory read.
    visited: HashSet<(u64, u64, usize)>,
    direct: Vec<PathBuf>,
    via_link: Vec<PathBuf>,
    out: Walked,
}

/// The paths `pattern` matches, as `glob::glob(pattern)` would list them (less the
/// directories), but read loop-safe and bounded (see the module documentation).
pub(super) fn expand(
    pattern: &str,
    policy: FollowSymlinks,
    stop: &dyn Fn() -> bool,
) -> Result<Walked, PatternError> {
    // The whole pattern first, as `glob::glob` does: its errors name positions in it.
    Pattern::new(pattern)?;
    let (mut start, rest) = match pattern.strip_prefix('/') {
        Some(rest) => (PathBuf::from("/"), rest),
        None => (PathBuf::new(), pattern),
    };
    let mut comps: Vec<Comp> = Vec::new();
    for c in rest.split('/').filter(|c| !c.is_empty()) {
        let comp = if c == "**" {
            if matches!(comps.last(), Some(Comp::Recursive)) {
                continue;
            }
            Comp::Recursive
        } else if c.contains(['*', '?', '[']) {
            Comp::Wild(Pattern::new(c)?)
        } else {
            Comp::Literal(c.to_string())
        };
        comps.push(comp);
    }
    let mut w = Walk {
        comps,
        require_dir: pattern.ends_with('/'),
        policy,
        options: MatchOptions::new(),
        real: VecDeque::new(),
        linked: VecDeque::new(),
        visited: HashSet::new(),
        direct: Vec::new(),
        via_link: Vec::new(),
        out: Walked::default(),
    };
    if w.comps.is_empty() {
        return Ok(w.out);
    }
    // The literal root: the leading literal components, never the last one (a pattern
    // without glob characters is the literal path, looked up below). Links in it are the
    // operator's own and are followed under every policy.
    let literal = w.comps[..w.comps.len() - 1]
        .iter()
        .take_while(|c| matches!(c, Comp::Literal(_)))
        .count();
    for c in &w.comps[..literal] {
        if let Comp::Literal(s) = c {
            start.push(s);
        }
    }
    w.real.push_back(Item {
        path: start,
        idx: literal,
        depth: 0,
        linked: false,
    });
    let mut read = 0usize;
    while let Some(item) = w.real.pop_front().or_else(|| w.linked.pop_front()) {
        if stop() {
            w.out.stopped = true;
            break;
        }
        if !w.step(item, &mut read) {
            w.out.truncated = true;
            break;
        }
    }
    let Walk {
        direct,
        via_link,
        mut out,
        ..
    } = w;
    out.files = direct;
    out.files.extend(via_link);
    Ok(out)
}

impl Walk {
    /// Matches the entries of one directory; false once [`MAX_DIRS`] directories were read.
    fn step(&mut self, item: Item, read: &mut usize) -> bool {
        let Item {
            path,
            idx,
            depth,
            linked,
        } = item;
        if let Comp::Literal(name) = &self.comps[idx] {
            // Looked up, not listed: it exists (a dangling link too) or not.
            let next = path.join(name);
            let lmeta = match std::fs::symlink_metadata(&next) {
                Ok(m) => m,
                Err(e) => {
                    // Not there is normal (a folder made later); a folder that cannot be
                    // searched hides everything below it.
                    if e.kind() != std::io::ErrorKind::NotFound {
                        self.out.unreadable.push((path, e));
                    }
                    return true;
                }
            };
            let is_link = lmeta.file_type().is_symlink();
            let is_dir = if is_link {
                std::fs::metadata(&next).is_ok_and(|m| m.is_dir())
            } else {
                lmeta.is_dir()
            };
            self.matched(next, idx, depth, linked || is_link, is_dir);
            return true;
        }
        let recursive = matches!(self.comps[idx], Comp::Recursive);
        let meta = match std::fs::metadata(fs_path(&path)) {
            Ok(m) => m,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    self.out.unreadable.push((path, e));
                }
                return true;
            }
        };
        if !meta.is_dir() {
            return true;
        }
        if !self.visited.insert((meta.dev(), meta.ino(), idx)) {
            let is_loop = is_loop(&path);
            self.out.repeated.push((path, is_loop));
            return true;
        }
        if *read >= MAX_DIRS {
            return false;
        }
        *read += 1;
        let rd = match std::fs::read_dir(fs_path(&path)) {
            Ok(rd) => rd,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    self.out.unreadable.push((path, e));
                }
                return true;
            }
        };
        let mut entries: Vec<(OsString, std::fs::FileType)> = rd
            .flatten()
            .filter_map(|e| Some((e.file_name(), e.file_type().ok()?)))
            .collect();
        entries.sort_by(|a, b| a.0.as_os_str().cmp(b.0.as_os_str()));
        let last = self.comps.len() - 1;
        for (name, ft) in entries {
            let child = path.join(&name);
            // The entry's own type, never followed; a link is looked through only to know
            // whether it leads to a directory.
            let is_link = ft.is_symlink();
            let is_dir = if is_link {
                std::fs::metadata(&child).is_ok_and(|m| m.is_dir())
            } else {
                ft.is_dir()
            };
            let child_linked = linked || is_link;
            let mut k = idx;
            if recursive {
                // `**`: every directory is descended with the same position, and each entry
                // is also matched against the component after it.
                if is_dir {
                    self.push(Item {
                        path: child.clone(),
                        idx,
                        depth: depth + 1,
                        linked: child_linked,
                    });
                }
                if idx == last {
                    // A trailing `**` matches directories only.
                    continue;
                }
                k = idx + 1;
            }
            // Names that are not UTF-8 are never matched (as `glob` does).
            let Some(name) = name.to_str() else { continue };
            let hit = match &self.comps[k] {
                Comp::Literal(s) => s.as_str() == name,
                Comp::Wild(p) => p.matches_with(name, self.options),
                Comp::Recursive => false,
            };
            if hit {
                self.matched(child, k, depth, child_linked, is_dir);
            }
        }
        // `glob` lets a component starting with a dot match `.` and `..` too.
        let specials: Vec<&str> = match &self.comps[idx] {
            Comp::Wild(p) if p.as_str().starts_with('.') => [".", ".."]
                .into_iter()
                .filter(|s| p.matches_with(s, self.options))
                .collect(),
            _ => Vec::new(),
        };
        for special in specials {
            self.matched(path.join(special), idx, depth, linked, true);
        }
        true
    }

    /// `path`, an entry of a directory at `depth`, matched `comps[k]`.
    fn matched(&mut self, path: PathBuf, k: usize, depth: usize, linked: bool, is_dir: bool) {
        if k + 1 == self.comps.len() {
            // Directories are never tailed; a pattern ending in `/` matches nothing else.
            if is_dir || self.require_dir {
                return;
            }
            if linked {
                self.via_link.push(path);
            } else {
                self.direct.push(path);
            }
        } else if is_dir {
            self.push(Item {
                path,
                idx: k + 1,
                depth: depth + 1,
                linked,
            });
        }
    }

    fn push(&mut self, item: Item) {
        if item.linked && matches!(self.policy, FollowSymlinks::Never) {
            return;
        }
        if item.depth > MAX_DEPTH {
            self.out.truncated = true;
            return;
        }
        if item.linked {
            self.linked.push_back(item);
        } else {
            self.real.push_back(item);
        }
    }
}

/// The empty path (a relative pattern's start) is the current directory.
fn fs_path(p: &Path) -> &Path {
    if p.as_os_str().is_empty() {
        Path::new(".")
    } else {
        p
    }
}

/// Whether directory `dir`, reached again, contains the place it was reached from.
fn is_loop(dir: &Path) -> bool {
    let (Some(parent), Ok(target)) = (dir.parent(), std::fs::canonicalize(fs_path(dir))) else {
        return false;
    };
    std::fs::canonicalize(fs_path(parent)).is_ok_and(|p| p.starts_with(&target))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const FOLLOWING: [FollowSymlinks; 2] = [FollowSymlinks::Within, FollowSymlinks::Always];

    fn files(pattern: &str, policy: FollowSymlinks) -> Vec<PathBuf> {
        expand(pattern, policy, &|| false).unwrap().files
    }

    #[test]
    fn two_loops_under_a_recursive_pattern_are_walked_once() {
        let d = tempfile::tempdir().unwrap();
        let logs = d.path().join("logs");
        std::fs::create_dir_all(logs.join("sub")).unwrap();
        std::fs::write(logs.join("sub/real.log"), "x\n").unwrap();
        symlink(".", logs.join("a")).unwrap();
        symlink(".", logs.join("b")).unwrap();
        symlink("..", logs.join("sub/up")).unwrap();
        let pattern = format!("{}/**/*.log", logs.display());
        for policy in FOLLOWING {
            let w = expand(&pattern, policy, &|| false).unwrap();
            assert_eq!(w.files, vec![logs.join("sub/real.log")], "{policy:?}");
            assert!(!w.truncated && !w.stopped);
            assert!(!w.repeated.is_empty(), "{policy:?}");
            assert!(w.repeated.iter().all(|(_, is_loop)| *is_loop), "{w:?}");
            assert!(
                w.repeated.iter().any(|(p, _)| *p == logs.join("a")),
                "{w:?}"
            );
        }
        let w = expand(&pattern, FollowSymlinks::Never, &|| false).unwrap();
        assert_eq!(w.files, vec![logs.join("sub/real.log")]);
        assert!(w.repeated.is_empty(), "links are not entered: {w:?}");
    }

    #[test]
    fn links_to_directories_outside_are_followed_by_policy() {
        let d = tempfile::tempdir().unwrap();
        let logs = d.path().join("logs");
        let outside = d.path().join("outside");
        std::fs::create_dir_all(&logs).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("x.log"), "x\n").unwrap();
        std::fs::write(logs.join("real.log"), "x\n").unwrap();
        symlink(&outside, logs.join("ext")).unwrap();
        symlink(outside.join("x.log"), logs.join("file.log")).unwrap();
        let pattern = format!("{}/**/*.log", logs.display());
        for policy in FOLLOWING {
            assert_eq!(
                files(&pattern, policy),
                vec![
                    logs.join("real.log"),
                    logs.join("file.log"),
                    logs.join("ext/x.log"),
                ],
                "{policy:?}: paths without a link first"
            );
        }
        // Never: the linked directory is not entered; the linked file is still listed (the
        // admission rule refuses and counts it).
        assert_eq!(
            files(&pattern, FollowSymlinks::Never),
            vec![logs.join("real.log"), logs.join("file.log")]
        );
    }

    #[test]
    fn a_second_link_to_a_directory_is_read_under_the_real_path() {
        let d = tempfile::tempdir().unwrap();
        let logs = d.path().join("logs");
        std::fs::create_dir_all(logs.join("2024")).unwrap();
        std::fs::write(logs.join("2024/app.log"), "x\n").unwrap();
        // Sorts before the real directory: it is still read second.
        symlink("2024", logs.join("0-current")).unwrap();
        let w = expand(
            &format!("{}/**/*.log", logs.display()),
            FollowSymlinks::Within,
            &|| false,
        )
        .unwrap();
        assert_eq!(w.files, vec![logs.join("2024/app.log")]);
        assert_eq!(w.repeated, vec![(logs.join("0-current"), false)]);
        // Without `**` too: the directory is read once, under its real path.
        let w = expand(
            &format!("{}/*/*.log", logs.display()),
            FollowSymlinks::Within,
            &|| false,
        )
        .unwrap();
        assert_eq!(w.files, vec![logs.join("2024/app.log")]);
        assert_eq!(w.repeated, vec![(logs.join("0-current"), false)]);
    }

    #[test]
    fn matching_is_the_same_as_glob() {
        let d = tempfile::tempdir().unwrap();
        let logs = d.path().join("logs");
        std::fs::create_dir_all(logs.join("a/b/c")).unwrap();
        std::fs::create_dir_all(logs.join("d.log")).unwrap();
        for f in [
            "top.log",
            "a/one.log",
            "a/b/two.log",
            "a/b/c/three.log",
            ".hidden.log",
            "a/x.txt",
        ] {
            std::fs::write(logs.join(f), "x\n").unwrap();
        }
        for pat in [
            "**/*.log",
            "*.log",
            "*/*.log",
            "a/**/*.log",
            "**/b/*.log",
            "a/*/c/*.log",
            "a/b/two.log",
            "a/?/two.log",
            "[at]*/*.log",
            "**",
            "**/",
            "*.log/",
            ".*",
            "a/b/../*.log",
        ] {
            let pattern = format!("{}/{pat}", logs.display());
            let mut ours = files(&pattern, FollowSymlinks::Within);
            ours.sort();
            let mut theirs: Vec<PathBuf> = glob::glob(&pattern)
                .unwrap()
                .flatten()
                .filter(|p| !p.is_dir())
                .collect();
            theirs.sort();
            assert_eq!(ours, theirs, "{pat}");
        }
    }

    #[test]
    fn a_literal_pattern_is_the_path() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("app.log");
        std::fs::write(&f, "x\n").unwrap();
        let literal = f.display().to_string();
        assert_eq!(files(&literal, FollowSymlinks::Never), vec![f]);
        let missing = d.path().join("missing.log").display().to_string();
        assert!(files(&missing, FollowSymlinks::Within).is_empty());
        assert!(expand("/logs/[", FollowSymlinks::Within, &|| false).is_err());
    }

    #[test]
    fn stop_ends_the_walk() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("app.log"), "x\n").unwrap();
        let w = expand(
            &format!("{}/**/*.log", d.path().display()),
            FollowSymlinks::Within,
            &|| true,
        )
        .unwrap();
        assert!(w.stopped && w.files.is_empty());
    }
}
