//! A source's rounds: reading what files hold, closing drained ones, and checkpointing.

use super::*;

impl Tailer {
    /// Marks the files the events say were written to.
    pub(super) fn poke(&mut self, news: &mut watch::News) {
        if std::mem::take(&mut news.all_grown) {
            news.grown.clear();
            for f in self.files.values_mut() {
                f.poked = true;
            }
            return;
        }
        for p in news.grown.drain(..) {
            if let Some(f) = self.by_path.get(&p).and_then(|k| self.files.get_mut(k)) {
                f.poked = true;
            }
        }
    }

    /// Gives every open file one chunk: those not known to be at their end, those an event
    /// named, and with `sweep` all of them. Returns whether anything was read.
    pub(super) fn read_round(&mut self, sweep: bool) -> bool {
        let mut progressed = false;
        let limit = &self.limit;
        let name = &self.cfg.name;
        let mut unpositioned = false;
        for f in self.files.values_mut() {
            if f.file.is_none() {
                continue;
            }
            if !f.positioned {
                // Truncated, or found, before it had a whole first line: identified below.
                unpositioned = true;
                continue;
            }
            // A rotated file is always looked at: it is closed once it stayed at its end for
            // rotate_wait, which must not rest on an old look.
            if f.at_eof && !f.poked && !sweep && matches!(f.state, State::Live) {
                continue;
            }
            f.poked = false;
            match f.check_truncated() {
                Ok(true) => {
                    self.proc.c.truncated_files.inc();
                    info!(source = %name, path = %f.path.display(), "file truncated; reading it from the start");
                    f.positioned = f.fp.is_some();
                    if !f.positioned {
                        continue;
                    }
                }
                Ok(false) => {}
                Err(e) => {
                    if let Some(held) = self.repeats.allow(&format!("stat {}", f.path.display())) {
                        warn!(source = %name, path = %f.path.display(), error = %e, repeated = held, "cannot stat file");
                    }
                    continue;
                }
            }
            let Some(fp) = f.fp else { continue };
            // The size was just read: a file no longer than our offset has nothing to read
            // (what a read would say, without a read).
            if f.read_pos >= f.last_size {
                f.at_eof = true;
                continue;
            }
            let now = Utc::now();
            let proc = &mut self.proc;
            let over_before = f.over_limit;
            // The chunk is acknowledged in pieces of ACK_GRAIN: a checkpoint can move past the
            // first records of a chunk while its last ones are still in an open batch, so a
            // crash sends again at most a piece, not a whole chunk.
            let mut ticket = Ticket::new();
            let mut piece_from = f.consumed;
            let mut pieces: Vec<(u64, Ticket)> = Vec::new();
            let res = f.read_lines(CHUNK, limit, &mut self.read_buf, |l| {
                if l.offset >= piece_from + ACK_GRAIN {
                    pieces.push((l.offset, std::mem::take(&mut ticket)));
                    piece_from = l.offset;
                }
                proc.line(l, fp, &ticket, now)
            });
            if f.consumed > piece_from {
                pieces.push((f.consumed, std::mem::take(&mut ticket)));
            }
            for (end, t) in pieces {
                f.pending.push_back((end, Ticket::clone_for_queue(&t)));
                // A piece whose records were not all taken (shutting down) never counts as done.
                if !proc.failed {
                    t.seal().release();
                }
            }
            if over_before == 0 && f.over_limit > 0 {
                let what = match (limit.digest, &limit.spill_dir, &limit.seal) {
                    (false, _, _) => "cut at max_line_bytes and kept".to_string(),
                    (true, None, _) if proc.hold_oversize => {
                        "dropped (a sink keeps nothing on disk)".to_string()
                    }
                    (true, None, _) => {
                        "shipped as a redacted stand-in with its size and SHA-256".to_string()
                    }
                    (true, Some(_), None) => {
                        "written whole to the dead-letter folder, not shipped".to_string()
                    }
                    (true, Some(_), Some(seal)) => format!(
                        "written whole to the dead-letter folder, sealed under sink {}'s spool key (`logferry decrypt --sink {}` reads it), not shipped",
                        seal.sink, seal.sink
                    ),
                };
                warn!(source = %name, path = %f.path.display(), limit = limit.max, "a record is over the size limit; {what} (logged once per file, counted)");
            }
            if let Some(g) = &f.lag {
                g.1.set(f.unread() as i64);
            }
            match res {
                Ok(0) => {}
                Ok(n) => {
                    progressed = true;
                    proc.c.bytes.inc_by(n as u64);
                    proc.flush_counts();
                }
                Err(e) => {
                    if let Some(held) = self.repeats.allow(&format!("read {}", f.path.display())) {
                        warn!(source = %name, path = %f.path.display(), error = %e, repeated = held, "read failed; will retry")
                    }
                }
            }
        }
        if progressed {
            self.acks_pending = true;
            let unread: u64 = self.files.values().map(|f| f.unread()).sum();
            self.proc.c.unread.set(unread as i64);
        }
        if unpositioned {
            self.position_new();
        }
        progressed
    }

    /// Closes rotated or deleted files that stayed at their end for `rotate_wait`, and forgets
    /// them once everything read from them is durable.
    pub(super) fn close_drained(&mut self) {
        let wait = if self.once {
            Duration::ZERO
        } else {
            self.cfg.rotate_wait
        };
        let mut forget = Vec::new();
        for (k, f) in self.files.iter_mut() {
            if !matches!(f.state, State::Gone) {
                continue;
            }
            if f.file.is_some() && f.at_eof && f.last_growth.elapsed() >= wait {
                f.file = None;
                self.proc.c.drained.inc();
                debug!(source = %self.cfg.name, path = %f.path.display(), "rotated file drained and closed");
            }
            if f.file.is_none() && f.pending.is_empty() {
                forget.push(*k);
            }
        }
        for k in forget {
            if let Some(lag) = self.files.remove(&k).and_then(|f| f.lag) {
                self.proc.c.file_unread.remove(&lag.0);
            }
            self.dirty = true;
            self.reindex = true;
        }
    }

    pub(super) fn checkpoint(&mut self) {
        let mut moved = false;
        let mut pending = false;
        for f in self.files.values_mut() {
            moved |= f.advance();
            pending |= !f.pending.is_empty();
        }
        self.acks_pending = pending;
        if !moved && !self.dirty {
            return;
        }
        let entries: Vec<Entry> = self
            .files
            .values()
            .filter_map(|f| {
                Some(Entry {
                    id: f.id()?,
                    offset: f.committed,
                    path: f.path.clone(),
                })
            })
            .chain(
                // Kept until used: before the first scan, and for files still waiting to be
                // opened and identified (their offsets must survive a crash meanwhile).
                self.saved
                    .values()
                    .filter(|e| {
                        !self.first_scan_done
                            || self
                                .files
                                .get(&(e.id.dev, e.id.ino))
                                .is_some_and(|f| !f.positioned)
                    })
                    .cloned(),
            )
            .collect();
        for f in self.files.values() {
            tracing::trace!(source = %self.cfg.name, path = %f.path.display(), committed = f.committed, consumed = f.consumed, pending = f.pending.len(), "checkpoint");
        }
        match self.ckpt.save(&entries) {
            Ok(()) => {
                self.dirty = false;
                if self.ckpt_failures > 0 {
                    info!(source = %self.cfg.name, failures = self.ckpt_failures, "checkpoint writes succeed again");
                    self.ckpt_failures = 0;
                    self.health.checkpoint_ok(&self.cfg.name);
                }
            }
            Err(e) => {
                // Retried at the next interval; the offsets only lag, the records are not lost
                // (a restart meanwhile sends the unrecorded part again).
                self.proc.c.checkpoint_failures.inc();
                self.health
                    .checkpoint_failing(&self.cfg.name, &e.to_string());
                self.ckpt_failures += 1;
                if self.ckpt_failures == 1 || self.ckpt_failures.is_multiple_of(20) {
                    error!(source = %self.cfg.name, error = %e, failures = self.ckpt_failures, "cannot write checkpoint; retrying at the next interval (counted in checkpoint_write_failures_total)");
                }
            }
        }
    }
}
