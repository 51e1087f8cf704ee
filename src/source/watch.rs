//! Files found by events: inotify (through `notify`) on the directories the include patterns
//! name, so that a file created, or renamed in, is opened at once instead of at the next scan,
//! and a file rotated away before any scan saw it (size-based rotation under load renames the
//! live file several times a second) is still found and read, at its new name. The periodic
//! scan stays as the fallback: for file systems without events and for a lost or overflowed
//! event queue.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use notify::event::{ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher};

/// Events held for the source thread; more and the queue counts as overflowed (a full scan
/// finds everything anyway), so memory stays bounded under an event storm.
const MAX_QUEUED: usize = 4096;

#[derive(Default)]
struct Queue {
    /// A file appeared or went: scan now.
    changed: bool,
    /// Renames (from, to), in the order they happened.
    renames: Vec<(PathBuf, PathBuf)>,
    overflowed: bool,
    /// Files written to: read them now (the others stay untouched until the slow sweep).
    grown: HashSet<PathBuf>,
    /// More files were written to than `grown` holds: look at every file.
    all_grown: bool,
    /// Someone else wants the source thread awake (it is asked to stop).
    woken: bool,
}

#[derive(Default)]
struct Inbox {
    q: Mutex<Queue>,
    cv: Condvar,
}

/// Wakes a source thread waiting for events, for a reason other than a file event.
#[derive(Clone)]
pub struct Waker(Arc<Inbox>);

impl Waker {
    pub fn wake(&self) {
        if let Ok(mut q) = self.0.q.lock() {
            q.woken = true;
        }
        self.0.cv.notify_all();
    }
}

/// What the events said since the last look.
#[derive(Default)]
pub(super) struct News {
    pub changed: bool,
    pub renames: Vec<(PathBuf, PathBuf)>,
    pub grown: Vec<PathBuf>,
    pub all_grown: bool,
}

impl News {
    pub fn merge(&mut self, more: News) {
        self.changed |= more.changed;
        self.renames.extend(more.renames);
        if self.grown.len() + more.grown.len() > MAX_QUEUED {
            self.all_grown = true;
            self.grown.clear();
        } else if !self.all_grown {
            self.grown.extend(more.grown);
        }
        self.all_grown |= more.all_grown;
    }
}

pub(super) struct Watch {
    watcher: Option<notify::RecommendedWatcher>,
    inbox: Arc<Inbox>,
    watched: HashSet<PathBuf>,
}

impl Watch {
    pub fn new() -> Watch {
        let inbox = Arc::new(Inbox::default());
        let sink = inbox.clone();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let Ok(q) = sink.q.lock() else { return };
            let mut q = q;
            match res {
                Ok(ev) => match ev.kind {
                    // Data written: that file is read now; a file without events is read only
                    // by the slow sweep, which is what keeps thousands of quiet files cheap.
                    EventKind::Modify(ModifyKind::Data(_)) => {
                        for p in ev.paths {
                            if q.all_grown || q.grown.contains(&p) {
                                continue;
                            }
                            if q.grown.len() < MAX_QUEUED {
                                q.grown.insert(p);
                            } else {
                                q.all_grown = true;
                                q.grown.clear();
                            }
                        }
                    }
                    EventKind::Modify(ModifyKind::Metadata(_)) | EventKind::Access(_) => return,
                    EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
                        if let [from, to] = &ev.paths[..] {
                            if q.renames.len() < MAX_QUEUED {
                                q.renames.push((from.clone(), to.clone()));
                            } else {
                                q.overflowed = true;
                            }
                        }
                        q.changed = true;
                    }
                    _ => q.changed = true,
                },
                // The kernel's queue overflowed, or the watch broke: scan everything.
                Err(_) => q.overflowed = true,
            }
            drop(q);
            sink.cv.notify_all();
        });
        Watch {
            watcher: watcher.ok(),
            inbox,
            watched: HashSet::new(),
        }
    }

    /// Watches the directories `include` names (once each); a directory that does not exist
    /// yet is tried again at the next scan. Returns how many could not be watched.
    pub fn follow(&mut self, include: &[String]) -> usize {
        let Some(w) = &mut self.watcher else {
            return include.len();
        };
        let mut failed = 0;
        for pattern in include {
            let (dir, recursive) = base_dir(pattern);
            if self.watched.contains(&dir) {
                continue;
            }
            let mode = if recursive {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            match w.watch(&dir, mode) {
                Ok(()) => {
                    self.watched.insert(dir);
                }
                Err(_) => failed += 1,
            }
        }
        failed
    }

    /// Waits up to `d` for an event; returns what arrived (possibly nothing).
    pub fn wait(&self, d: Duration) -> News {
        let Ok(q) = self.inbox.q.lock() else {
            return News::default();
        };
        let mut q = match self.inbox.cv.wait_timeout_while(q, d, |q| {
            !q.changed && !q.overflowed && q.grown.is_empty() && !q.all_grown && !q.woken
        }) {
            Ok((q, _)) => q,
            Err(_) => return News::default(),
        };
        take(&mut q)
    }

    /// Wakes this watch's waiter from another thread.
    pub fn waker(&self) -> Waker {
        Waker(self.inbox.clone())
    }

    /// What arrived, without waiting.
    pub fn poll(&self) -> News {
        match self.inbox.q.lock() {
            Ok(mut q) => take(&mut q),
            Err(_) => News::default(),
        }
    }
}

fn take(q: &mut Queue) -> News {
    let n = News {
        changed: q.changed || q.overflowed,
        renames: std::mem::take(&mut q.renames),
        grown: q.grown.drain().collect(),
        // A lost event could have been a write too.
        all_grown: q.all_grown || q.overflowed,
    };
    q.changed = false;
    q.overflowed = false;
    q.all_grown = false;
    q.woken = false;
    n
}

/// The directory a pattern's matches live under (the part before the first glob character),
/// and whether matches may be deeper than one level.
fn base_dir(pattern: &str) -> (PathBuf, bool) {
    let first_glob = pattern.find(['*', '?', '[', '{']).unwrap_or(pattern.len());
    let fixed = &pattern[..first_glob];
    let dir = match fixed.rfind('/') {
        Some(i) => &fixed[..i.max(1)],
        None => ".",
    };
    let rest = &pattern[first_glob..];
    let recursive = rest.contains("**") || rest.contains('/');
    (Path::new(dir).to_path_buf(), recursive)
}

/// Follows renames in order: where each file renamed from a name `matches` accepts ended up.
/// `a -> a.1`, then `a.1 -> a.2`, then `a -> a.1` leaves `{a.2, a.1}`: two generations of the
/// live file, both to read.
pub(super) fn moved_out(
    renames: &[(PathBuf, PathBuf)],
    matches: impl Fn(&Path) -> bool,
) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for (from, to) in renames {
        if let Some(p) = out.iter_mut().find(|p| *p == from) {
            *p = to.clone();
        } else if matches(from) && !matches(to) {
            out.push(to.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stop_signal_wakes_a_source_waiting_for_events() {
        let watch = Watch::new();
        let stop = crate::shutdown::Shutdown::new();
        let waker = watch.waker();
        stop.on_stop(move || waker.wake());
        let setter = {
            let stop = stop.clone();
            std::thread::spawn(move || stop.advance(crate::shutdown::Phase::Stop))
        };
        // Without the waker this waits the whole minute.
        let t = std::time::Instant::now();
        watch.wait(Duration::from_secs(60));
        assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
        setter.join().unwrap();
        // Once set, a later registration wakes at once as well.
        let late = Watch::new();
        let waker = late.waker();
        stop.on_stop(move || waker.wake());
        let t = std::time::Instant::now();
        late.wait(Duration::from_secs(60));
        assert!(t.elapsed() < Duration::from_secs(30));
    }

    #[test]
    fn base_dirs_of_patterns() {
        assert_eq!(base_dir("/logs/*.log"), (PathBuf::from("/logs"), false));
        assert_eq!(base_dir("/logs/a.log"), (PathBuf::from("/logs"), false));
        assert_eq!(base_dir("/logs/**/x.log"), (PathBuf::from("/logs"), true));
        assert_eq!(base_dir("/logs/*/x.log"), (PathBuf::from("/logs"), true));
        assert_eq!(base_dir("/a*.log"), (PathBuf::from("/"), false));
    }

    #[test]
    fn renames_are_followed_through_generations() {
        let p = |s: &str| PathBuf::from(s);
        let live = |x: &Path| x == Path::new("/l/a.log");
        let renames = vec![
            (p("/l/a.log"), p("/l/a.log.1")),
            (p("/l/a.log.1"), p("/l/a.log.2")),
            (p("/l/a.log"), p("/l/a.log.1")),
            (p("/l/other.1"), p("/l/other.2")),
        ];
        assert_eq!(
            moved_out(&renames, live),
            vec![p("/l/a.log.2"), p("/l/a.log.1")]
        );
    }
}
