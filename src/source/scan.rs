//! Finding files: globs and excludes, new files and where they start, renames, deletions,
//! files rotated while logferry was stopped, and the limit on open handles.

use super::*;

impl Tailer {
    /// Finds files, notices renames, deletions and truncations. `renames` are the rename
    /// events since the last scan: a live file renamed out of `include` before any scan saw it
    /// is found at its new name and read to its end.
    /// With `full`, files closed for `max_open_files` are looked at too (a stat each); between
    /// full scans their growth is told by events.
    pub(super) fn scan(&mut self, renames: &[(PathBuf, PathBuf)], full: bool) {
        let mut seen: HashMap<(u64, u64), PathBuf> = HashMap::new();
        // Folders the walk could not look into: files under them were not listed, which is
        // not the same as gone.
        let mut hidden: Vec<(PathBuf, std::io::Error)> = Vec::new();
        let mut hidden_set: std::collections::HashSet<PathBuf> = std::collections::HashSet::new();
        // Asked between directories: a large or looping tree does not hold shutdown.
        let signal = self.shutdown.clone();
        let stop = move || signal.reached(crate::shutdown::Phase::Stop);
        for pattern in &self.cfg.include {
            let walked = match walk::expand(pattern, self.cfg.follow_symlinks, &stop) {
                Ok(w) => w,
                Err(e) => {
                    warn!(source = %self.cfg.name, %pattern, error = %e, "bad include pattern");
                    continue;
                }
            };
            if walked.stopped {
                // Shutting down: a partial listing must not mark the files it missed as gone.
                return;
            }
            for (dir, is_loop) in &walked.repeated {
                if *is_loop {
                    if let Some(held) = self.repeats.allow(&format!("loop {}", dir.display())) {
                        warn!(source = %self.cfg.name, path = %dir.display(), repeated = held, "directory reached again through a symbolic link (a loop); not descended again");
                    }
                } else {
                    debug!(source = %self.cfg.name, path = %dir.display(), "directory reached again through another symbolic link; its files are found under the first path");
                }
            }
            for (dir, e) in walked.unreadable {
                let excluded = unreadable::excluded(&self.cfg.exclude, &dir);
                if !excluded && hidden_set.insert(dir.clone()) {
                    hidden.push((dir, e));
                }
            }
            if walked.truncated {
                if let Some(held) = self.repeats.allow(&format!("walk {pattern}")) {
                    warn!(source = %self.cfg.name, %pattern, max_dirs = walk::MAX_DIRS, max_depth = walk::MAX_DEPTH, repeated = held, "include pattern reaches too many directories, or too deep; the walk was cut short and files beyond it are not found");
                }
            }
            for path in walked.files {
                if self.cfg.exclude.iter().any(|x| x.matches_path(&path)) {
                    continue;
                }
                let Ok(meta) = std::fs::metadata(&path) else {
                    continue;
                };
                if !meta.is_file() {
                    continue;
                }
                // The first path wins: the walk lists paths without a symbolic link first.
                seen.entry((meta.dev(), meta.ino())).or_insert(path);
            }
        }
        let mut open_now = self.files.values().filter(|f| f.file.is_some()).count();
        for (key, path) in &seen {
            match self.files.get_mut(key) {
                Some(f) => {
                    if f.path != *path {
                        debug!(source = %self.cfg.name, from = %f.path.display(), to = %path.display(), "file renamed within include");
                        f.path = path.clone();
                        self.reindex = true;
                    }
                    if matches!(f.state, State::Gone) {
                        f.state = State::Live;
                    }
                }
                None if open_now >= self.cfg.max_open_files => {
                    // Every handle is taken: known by its metadata now, opened (and checked
                    // by the admission rule) when a handle is free.
                    let Ok(meta) = std::fs::metadata(path) else {
                        continue;
                    };
                    debug!(source = %self.cfg.name, path = %path.display(), "new file (waiting for a handle)");
                    self.unopened.remove(path);
                    self.proc.c.found.inc();
                    self.files
                        .insert(*key, Tailed::unopened(path, &meta, !self.first_scan_done));
                    self.reindex = true;
                }
                None => match self.open_admitted(path, !self.first_scan_done) {
                    Ok(t) => {
                        open_now += 1;
                        debug!(source = %self.cfg.name, path = %path.display(), "new file");
                        self.unopened.remove(path);
                        self.proc.c.found.inc();
                        self.files.insert(*key, t);
                        self.reindex = true;
                    }
                    Err(e) if e.is_policy() => self.refuse(path, &e),
                    Err(e) => {
                        let size = std::fs::metadata(path).map_or(0, |m| m.len());
                        self.unopened.insert(path.clone(), size);
                        if let Some(held) = self.repeats.allow(&format!("open {}", path.display()))
                        {
                            let who = crate::private_fs::identity();
                            warn!(source = %self.cfg.name, path = %path.display(), error = %e, user = %who, repeated = held, "cannot open file (counted in paths_unreadable)")
                        }
                    }
                },
            }
        }
        if !self.unopened.is_empty() {
            let paths: std::collections::HashSet<&PathBuf> = seen.values().collect();
            self.unopened.retain(|p, _| paths.contains(p));
        }
        let files = &self.files;
        self.unreopened.retain(|k| files.contains_key(k));
        self.hidden_folders = hidden.len();
        self.count_unreadable();
        self.warn_unreadable(&hidden);
        for (key, f) in self.files.iter_mut() {
            // A file under a folder that cannot be looked into now (permissions changed for a
            // while) is not taken for rotated: its handle is read on, its checkpoint kept, and
            // it is not read again from the start when the folder opens again.
            // Only for a file the walk did not list: each of its folders looked up once.
            let unlisted = || f.path.ancestors().any(|a| hidden_set.contains(a));
            if !seen.contains_key(key) && matches!(f.state, State::Live) && !unlisted() {
                // Renamed out of include, or deleted: keep reading the open handle to its end.
                f.state = State::Gone;
                f.last_growth = Instant::now();
                self.proc.c.rotated.inc();
                debug!(source = %self.cfg.name, path = %f.path.display(), "file rotated or deleted; draining");
                if f.file.is_none() {
                    reopen_rotated(&self.cfg.name, f);
                }
            }
            if let Some(file) = &f.file {
                if let Ok(m) = file.metadata() {
                    f.last_size = m.len();
                }
            }
        }
        if !self.first_scan_done {
            self.recover_rotated();
            self.first_scan_done = true;
        }
        self.adopt_moved(renames);
        self.position_new();
        // After new files took their checkpointed positions: before, every file looked unread
        // in whole at a start or reload until it grew.
        let unread: u64 = self.files.values().map(|f| f.unread()).sum();
        // Per-file lag: one series per file held (made when a file is found or renamed, not
        // at every scan), removed once the file is let go.
        let family = &self.proc.c.file_unread;
        for f in self.files.values_mut() {
            let path = f.path.to_string_lossy();
            let current = f.lag.as_ref().is_some_and(|l| l.0.path == path);
            if !current {
                if let Some(old) = f.lag.take() {
                    family.remove(&old.0);
                }
                let label = crate::ops::metrics::FileLabel {
                    source: self.cfg.name.clone(),
                    path: path.into_owned(),
                };
                let g = family.get_or_create(&label).clone();
                f.lag = Some(Box::new((label, g)));
            }
            if let Some(l) = &f.lag {
                l.1.set(f.unread() as i64);
            }
        }
        self.enforce_open_limit(full);
        self.index_paths();
        self.proc.c.unread.set(unread as i64);
        self.proc
            .c
            .files_open
            .set(self.files.values().filter(|f| f.file.is_some()).count() as i64);
    }

    /// At start, files with a checkpoint that no longer match `include` were probably rotated
    /// while logferry was stopped: find them by inode next to their old path and finish them.
    pub(super) fn recover_rotated(&mut self) {
        // Tracked by device and inode (a file waiting for a handle has no fingerprint yet).
        let missing: Vec<Entry> = self
            .saved
            .values()
            .filter(|e| !self.files.contains_key(&(e.id.dev, e.id.ino)))
            .cloned()
            .collect();
        for e in missing {
            let Some(dir) = e.path.parent() else { continue };
            let Ok(rd) = std::fs::read_dir(dir) else {
                continue;
            };
            for de in rd.flatten() {
                let Ok(m) = de.metadata() else { continue };
                if m.ino() != e.id.ino || m.dev() != e.id.dev || !m.is_file() {
                    continue;
                }
                if m.len() <= e.offset || self.files.contains_key(&(m.dev(), m.ino())) {
                    break;
                }
                if let Ok(mut t) = self.open_admitted(&de.path(), false) {
                    if t.fp == Some(e.id.fp) {
                        info!(source = %self.cfg.name, path = %de.path().display(), "finishing a file rotated while stopped");
                        t.state = State::Gone;
                        self.proc.c.found.inc();
                        self.files.insert((m.dev(), m.ino()), t);
                        self.reindex = true;
                    }
                }
                break;
            }
        }
    }

    /// Files renamed from an include match to a name outside it that are not tracked yet (a
    /// generation of the live file that lived between two scans): read them to their end.
    fn adopt_moved(&mut self, renames: &[(PathBuf, PathBuf)]) {
        if renames.is_empty() {
            return;
        }
        let include = &self.include;
        let exclude = &self.cfg.exclude;
        let matches = |p: &std::path::Path| {
            include.iter().any(|i| i.matches_path(p)) && !exclude.iter().any(|x| x.matches_path(p))
        };
        for path in watch::moved_out(renames, matches) {
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let key = (meta.dev(), meta.ino());
            if !meta.is_file() || self.files.contains_key(&key) {
                continue;
            }
            match self.open_admitted(&path, false) {
                Ok(mut t) => {
                    debug!(source = %self.cfg.name, path = %path.display(), "a file rotated before a scan saw it; reading it to its end");
                    t.state = State::Gone;
                    t.last_growth = Instant::now();
                    self.proc.c.rotated.inc();
                    self.proc.c.found.inc();
                    self.files.insert(key, t);
                    self.reindex = true;
                }
                Err(e) if e.is_policy() => self.refuse(&path, &e),
                Err(e) => {
                    warn!(source = %self.cfg.name, path = %path.display(), error = %e, "cannot open a rotated file; its records are not read");
                }
            }
        }
    }

    /// Opens `path` if the source's admission rule lets it.
    fn open_admitted(
        &self,
        path: &std::path::Path,
        from_start_scan: bool,
    ) -> Result<Tailed, links::Refused> {
        let file = self.admit.open(path)?;
        Ok(Tailed::new(path, file, from_start_scan)?)
    }

    /// A file refused by policy: counted and logged once (its path and why, never a byte of
    /// it); the set is bounded, so a flood of links is logged again rather than remembered.
    fn refuse(&mut self, path: &std::path::Path, why: &links::Refused) {
        if self.refused.contains(path) {
            return;
        }
        if self.refused.len() >= 4096 {
            self.refused.clear();
        }
        self.refused.insert(path.to_path_buf());
        self.proc.c.refused.inc();
        warn!(source = %self.cfg.name, path = %path.display(), reason = %why, "file not read (counted in files_refused_total)");
    }

    /// Decides where files with a fingerprint but no position start reading.
    pub(super) fn position_new(&mut self) {
        for f in self.files.values_mut() {
            if f.positioned {
                continue;
            }
            if f.fp.is_none() {
                if let Some(file) = &f.file {
                    f.fp = file::fingerprint(file).ok().flatten();
                }
            }
            let Some(id) = f.id() else { continue };
            f.positioned = true;
            let start = match self.saved.remove(&id) {
                Some(e) if e.offset <= f.last_size => e.offset,
                Some(_) => {
                    // Shorter than its checkpoint: truncated while we were stopped.
                    self.proc.c.truncated_files.inc();
                    0
                }
                None if f.from_start_scan && self.cfg.read_from == ReadFrom::End => {
                    // The end of what is there now, at a line boundary: the first line is whole.
                    f.last_size
                }
                None => 0,
            };
            f.seek(start);
            if start > 0 && self.cfg.read_from == ReadFrom::End && start == f.last_size {
                // read_from = end may land mid-line; skip to the next line start.
                f.seek(line_start_at_or_before(f, start));
            }
            self.dirty = true;
        }
    }

    /// The path index file events are matched against: absolute, as `notify` names them.
    fn index_paths(&mut self) {
        if !std::mem::take(&mut self.reindex) {
            return;
        }
        let cwd = std::env::current_dir().unwrap_or_default();
        self.by_path.clear();
        for (k, f) in &self.files {
            let p = if f.path.is_absolute() {
                f.path.clone()
            } else {
                cwd.join(&f.path)
            };
            self.by_path.insert(p, *k);
        }
    }

    /// Keeps at most `max_open_files` handles: files idle at their end give their handle to
    /// files waiting with unread data. Gone files keep theirs (it is the only way to their data).
    /// With `full`, every closed file is looked at (a stat each); otherwise only those known
    /// to hold unread bytes or named by an event. Returns how many files were given a handle.
    pub(super) fn enforce_open_limit(&mut self, full: bool) -> usize {
        let max = self.cfg.max_open_files;
        let mut waiting = Vec::new();
        for (k, f) in self.files.iter_mut() {
            if f.file.is_some() || !matches!(f.state, State::Live) {
                continue;
            }
            if !full && !f.poked {
                if f.unread() > 0 {
                    waiting.push((f.last_growth, *k));
                }
                continue;
            }
            f.poked = false;
            match std::fs::metadata(&f.path) {
                Ok(m) if m.ino() == f.ino && m.dev() == f.dev => {
                    f.last_size = m.len();
                    if m.len() != f.read_pos {
                        waiting.push((f.last_growth, *k));
                    }
                }
                _ => {
                    reopen_rotated(&self.cfg.name, f);
                    f.state = State::Gone;
                }
            }
        }
        if waiting.is_empty() {
            return 0;
        }
        let open = self.files.values().filter(|f| f.file.is_some()).count();
        let mut room = max.saturating_sub(open);
        if waiting.len() > room {
            let mut idle: Vec<(Instant, (u64, u64))> = self
                .files
                .iter()
                .filter(|(_, f)| f.file.is_some() && f.at_eof && matches!(f.state, State::Live))
                .map(|(k, f)| (f.last_growth, *k))
                .collect();
            idle.sort();
            for (_, k) in idle.into_iter().take(waiting.len() - room) {
                if let Some(f) = self.files.get_mut(&k) {
                    f.file = None;
                    room += 1;
                }
            }
        }
        // Files that could not be opened again last: they do not take the turn of the ones
        // that can (which would wait behind them for ever), and at most this many failures
        // are tried per pass.
        let unreopened = &self.unreopened;
        waiting.sort_by_key(|&(t, k)| (unreopened.contains(&k), t, k));
        let mut opened = 0;
        let mut refused = Vec::new();
        let mut tries = room + 64;
        for (_, k) in waiting {
            if opened >= room || tries == 0 {
                break;
            }
            tries -= 1;
            let Some(f) = self.files.get_mut(&k) else {
                continue;
            };
            // Through the admission rule every time: a link may have been swapped meanwhile.
            let reopened = match self.admit.open(&f.path) {
                Ok(file) => file
                    .metadata()
                    .map(|m| (m.dev() == f.dev && m.ino() == f.ino).then_some(file)),
                Err(e) if e.is_policy() => {
                    // Never read: let it go, once its handle-less state is seen as drained.
                    f.state = State::Gone;
                    refused.push((f.path.clone(), e));
                    continue;
                }
                Err(links::Refused::Io(e)) => Err(e),
                Err(e) => Err(std::io::Error::other(e.to_string())),
            };
            if reopened.is_ok() {
                self.unreopened.remove(&k);
            }
            match reopened {
                Ok(Some(file)) => {
                    f.file = Some(file);
                    f.at_eof = false;
                    opened += 1;
                }
                // Another file has the name now (ours was rotated, or a link was swapped):
                // ours is looked for by inode, the other one is found by the next scan.
                Ok(None) => reopen_rotated(&self.cfg.name, f),
                Err(e) => {
                    self.unreopened.insert(k);
                    if let Some(held) = self.repeats.allow(&format!("reopen {}", f.path.display()))
                    {
                        let who = crate::private_fs::identity();
                        warn!(source = %self.cfg.name, path = %f.path.display(), error = %e, user = %who, repeated = held, "cannot reopen file (counted in paths_unreadable)")
                    }
                }
            }
        }
        for (path, why) in refused {
            self.refuse(&path, &why);
        }
        self.count_unreadable();
        opened
    }

    /// `paths_unreadable`: folders the last scan could not look into, matched files never
    /// opened, and closed files that cannot be opened again (now, not at the next scan).
    fn count_unreadable(&self) {
        let n = self.hidden_folders + self.unopened.len() + self.unreopened.len();
        self.proc.c.unreadable.set(n as i64);
    }
}

/// A file closed for `max_open_files` was rotated: a rename keeps its inode in the same
/// directory (logrotate, size-based rotation), so look for it there and drain it through a new
/// handle. Gone files keep their handle until drained even beyond `max_open_files`.
fn reopen_rotated(source: &str, f: &mut Tailed) {
    match find_by_inode(&f.path, f.dev, f.ino) {
        Some(p) => match open_same(&p, f.dev, f.ino).and_then(|o| {
            o.ok_or_else(|| std::io::Error::other("the file at that name changed while opening"))
        }) {
            Ok(file) => {
                debug!(%source, from = %f.path.display(), to = %p.display(), "a file closed for max_open_files was rotated; reading it to its end");
                f.path = p;
                f.file = Some(file);
                f.at_eof = false;
                f.last_growth = Instant::now();
            }
            Err(e) => {
                warn!(%source, path = %p.display(), error = %e, "cannot reopen a rotated file; its unread end is not read");
            }
        },
        None => {
            warn!(%source, path = %f.path.display(),
                "a file closed for max_open_files was deleted before it could be reopened; its unread end is lost (raise max_open_files)");
        }
    }
}

/// Opens `path` if it still is file (dev, ino): `None` when another file has the name now.
fn open_same(path: &std::path::Path, dev: u64, ino: u64) -> std::io::Result<Option<std::fs::File>> {
    let file = std::fs::File::open(path)?;
    let m = file.metadata()?;
    Ok((m.dev() == dev && m.ino() == ino).then_some(file))
}

/// The path of file (dev, ino) in the directory of `old`, if it is still there.
fn find_by_inode(old: &std::path::Path, dev: u64, ino: u64) -> Option<PathBuf> {
    let rd = std::fs::read_dir(old.parent()?).ok()?;
    rd.flatten().map(|de| de.path()).find(|p| {
        std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file() && m.ino() == ino && m.dev() == dev)
    })
}
