//! One attempt at delivering a batch, and what its outcome leads to: retry after a backoff or
//! `Retry-After`, a throttle pause for the whole sink, a split, a park, or a dead letter.

use super::*;

pub(super) struct Attempt {
    pub(super) pause: Pause,
    pub(super) health: Arc<Health>,
    pub(super) shutdown: Shutdown,
    pub(super) name: String,
    pub(super) sink: Arc<dyn Sink>,
    pub(super) spool: Arc<Spool>,
    pub(super) policy: Arc<Policy>,
    pub(super) dead_dir: PathBuf,
    pub(super) c: Arc<Counters>,
    pub(super) journal: Option<Arc<crate::integrity::Journal>>,
    pub(super) parking: Arc<Parking>,
}

impl Attempt {
    /// Sends one batch until it is delivered, dead-lettered, split, parked (back to the spool,
    /// its scope set aside), or given back (a reload). `scope` is the sink's for the batch.
    pub(super) async fn deliver(&self, taken: Taken, scope: Option<String>) {
        let Taken { key, batch } = taken;
        let p = &self.policy;
        let mut backoff = Backoff::new(p.initial_backoff, p.max_backoff, jitter(p));
        // Attempts made in earlier parks count too.
        let mut attempts: u32 = scope.as_deref().map_or(0, |s| self.parking.tries(s, &key));
        loop {
            // Past `Drain` no attempt starts: the batch is the next pipeline's (a reload).
            if self.shutdown.reached(Phase::Drain) || !self.wait_out_throttle().await {
                self.spool.untake(&key);
                return;
            }
            if let Some(r) = &p.requests {
                r.until_ready().await;
            }
            if let Some((r, burst)) = &p.bytes {
                pace_bytes(r, *burst, batch.payload.len() as u64).await;
            }
            attempts += 1;
            let outcome = match tokio::time::timeout(p.timeout, self.sink.send(&batch)).await {
                Ok(o) => o,
                Err(_) => Outcome::Retry {
                    after: None,
                    reason: format!("no answer within {:?}", p.timeout),
                },
            };
            // A sink without scopes has nothing to set aside: its park is a retry.
            let outcome = match outcome {
                Outcome::Parked { after, reason } if scope.is_none() => {
                    Outcome::Retry { after, reason }
                }
                o => o,
            };
            if let Outcome::Throttled { after, .. } = &outcome {
                self.c.throttled.inc();
                if let Some(a) = after {
                    let until = tokio::time::Instant::now() + (*a).min(MAX_RETRY_AFTER);
                    let mut g = self.pause.lock().unwrap_or_else(|e| e.into_inner());
                    if g.is_none_or(|t| t < until) {
                        *g = Some(until);
                    }
                }
            }
            match outcome {
                Outcome::Delivered => {
                    self.health.delivered(&self.name);
                    self.parking.delivered();
                    self.c.sent.inc();
                    self.c.records.inc_by(batch.meta.record_count);
                    self.c.bytes.inc_by(batch.payload.len() as u64);
                    self.c.last.set(chrono::Utc::now().timestamp());
                    if attempts > 1 {
                        info!(sink = %self.name, batch = %batch.meta.id, attempts, "batch delivered after retries");
                    }
                    if let Err(e) = self.spool.complete(&key).await {
                        warn!(sink = %self.name, batch = %batch.meta.id, error = %e, "delivered batch could not be removed from the spool; it may be sent again after a restart");
                    }
                    if let Some(s) = scope.as_deref() {
                        self.flowing(s, &key).await;
                    }
                    return;
                }
                Outcome::Retry { after, reason } | Outcome::Throttled { after, reason } => {
                    self.health.failed(&self.name, &reason);
                    if p.max_attempts.is_some_and(|m| attempts >= m) {
                        let why =
                            format!("gave up after {attempts} attempts; last error: {reason}");
                        self.dead_letter(&key, &batch, &why).await;
                        self.parking.forget_tries(scope.as_deref(), &key);
                        return;
                    }
                    self.c.retries.inc();
                    let wait = match after {
                        Some(a) => {
                            self.c.retry_after.inc();
                            a.min(MAX_RETRY_AFTER)
                        }
                        None => backoff.next_delay(),
                    };
                    // The first failure and then every tenth: enough to see, not a flood.
                    if attempts == 1 || attempts.is_multiple_of(10) {
                        warn!(sink = %self.name, batch = %batch.meta.id, attempts, wait_ms = wait.as_millis() as u64, %reason, "delivery failed; retrying");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {},
                        _ = self.shutdown.wait(Phase::Drain) => {
                            // A reload: the new pipeline sends it again.
                            self.spool.untake(&key);
                            return;
                        }
                    }
                }
                Outcome::TooLarge { reason } => {
                    // Halves of a split would break an integrity stream's one entry per
                    // sealed batch.
                    if self.journal.is_some() && batch.meta.chain.is_some() {
                        let why =
                            format!("{reason} (a batch of an integrity stream is never split)");
                        self.dead_letter(&key, &batch, &why).await;
                        self.parking.forget_tries(scope.as_deref(), &key);
                        return;
                    }
                    if batch.meta.record_count <= 1 {
                        let why =
                            format!("a single record is larger than the sink accepts: {reason}");
                        self.dead_letter(&key, &batch, &why).await;
                        return;
                    }
                    match self.split(&batch).await {
                        Ok(halves) => {
                            self.c.split.inc();
                            info!(sink = %self.name, batch = %batch.meta.id, records = batch.meta.record_count, %reason, "batch too large; split in halves");
                            if let Err(e) = self.spool.replace(&key, halves).await {
                                error!(sink = %self.name, error = %e, "cannot spool the halves of a split batch; the whole batch stays");
                                self.spool.untake(&key);
                            }
                        }
                        Err(e) => {
                            let why = format!("too large and cannot be split: {e}");
                            self.dead_letter(&key, &batch, &why).await;
                        }
                    }
                    return;
                }
                Outcome::Rejected { reason } => {
                    self.dead_letter(&key, &batch, &reason).await;
                    self.parking.forget_tries(scope.as_deref(), &key);
                    return;
                }
                Outcome::Parked { after, reason } => {
                    // `scope` is set here: without one the answer became a `Retry` above.
                    let scope = scope.as_deref().unwrap_or_default();
                    if p.max_attempts.is_some_and(|m| attempts >= m) {
                        let why =
                            format!("gave up after {attempts} attempts; last error: {reason}");
                        self.dead_letter(&key, &batch, &why).await;
                        self.parking.forget_tries(Some(scope), &key);
                        self.sweep().await;
                        return;
                    }
                    self.c.parks.inc();
                    if after.is_some() {
                        self.c.retry_after.inc();
                    }
                    // Parked first, then given back: the worker passes over it from now on.
                    let (until, newly) =
                        self.parking.park(scope, &key, attempts, after, &reason, p);
                    self.spool.untake(&key);
                    self.health.parked(&self.name, scope, &reason);
                    if newly {
                        let wait = until.saturating_duration_since(tokio::time::Instant::now());
                        warn!(sink = %self.name, scope = %scope, batch = %batch.meta.id, wait_ms = wait.as_millis() as u64, %reason, "batches of tenant-hour {scope} parked; the others go on");
                    }
                    // When the wait is over the worker looks at the scope's batches again.
                    let spool = self.spool.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep_until(until).await;
                        spool.poke();
                    });
                    self.sweep().await;
                    return;
                }
            }
        }
    }

    /// A batch of `scope` was delivered: the scope's park, if any, is over and its batches go.
    pub(super) async fn flowing(&self, scope: &str, key: &SpoolKey) {
        self.parking.forget_tries(Some(scope), key);
        if let Some(since) = self.parking.unpark(scope) {
            info!(sink = %self.name, scope = %scope, parked_since = %since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), "batches of tenant-hour {scope} delivered again; no longer parked");
            self.health.unparked(&self.name, scope);
            self.spool.poke();
            self.sweep().await;
        }
    }

    /// The spooled batches of parked scopes (oldest first) with their scope. Scopes with none
    /// left are forgotten, and the gauge is set.
    pub(super) fn parked_batches(&self) -> Vec<Scanned<String>> {
        let scopes = self.parking.scopes();
        if scopes.is_empty() {
            self.c.parked.set(0);
            return Vec::new();
        }
        let parked = self
            .spool
            .scan(|m| self.sink.scope(m).filter(|s| scopes.contains(s)));
        let left: HashSet<&str> = parked.iter().map(|b| b.value.as_str()).collect();
        for s in scopes.iter().filter(|s| !left.contains(s.as_str())) {
            if self.parking.unpark(s).is_some() {
                self.health.unparked(&self.name, s);
            }
        }
        self.c.parked.set(parked.len() as i64);
        parked
    }

    /// Looks over the parked batches: see [`Attempt::parked_batches`]; and in a disk spool,
    /// while parked batches take more than half of it and more than one is parked, the oldest
    /// is dead-lettered, so that one tenant's batches never fill the spool and stop everyone.
    /// A memory spool keeps them (`max_attempts` is the way out there).
    pub(super) async fn sweep(&self) {
        let _one = self.parking.sweeping.lock().await;
        let parked = self.parked_batches();
        if self.spool.is_memory() || parked.len() < 2 || !self.parking.others_flow() {
            return;
        }
        let half = self.spool.max_bytes() / 2;
        let mut bytes: u64 = parked.iter().map(|b| b.size).sum();
        let mut count = parked.len();
        let mut dropped = false;
        for b in &parked {
            if bytes <= half || count <= 1 {
                break;
            }
            if b.in_flight {
                continue;
            }
            let taken = match self.spool.take(&b.key).await {
                Some(Ok(t)) => t,
                Some(Err(e)) => {
                    error!(sink = %self.name, error = %e, "cannot read a parked batch to dead-letter it; it stays in the spool");
                    continue;
                }
                None => continue,
            };
            let (since, last) = self
                .parking
                .about(&b.value)
                .unwrap_or_else(|| (chrono::Utc::now(), String::new()));
            let why = format!(
                "tenant-hour {} parked since {} and parked batches fill half the spool; last error: {}",
                b.value,
                since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                last
            );
            self.dead_letter(&taken.key, &taken.batch, &why).await;
            self.parking.forget_tries(Some(b.value.as_str()), &b.key);
            bytes = bytes.saturating_sub(b.size);
            count -= 1;
            dropped = true;
        }
        if dropped {
            self.parked_batches();
        }
    }

    /// Waits while the sink is paused by a throttle answer. `false` when a reload came first.
    pub(super) async fn wait_out_throttle(&self) -> bool {
        loop {
            let until = *self.pause.lock().unwrap_or_else(|e| e.into_inner());
            let Some(t) = until.filter(|t| *t > tokio::time::Instant::now()) else {
                return true;
            };
            tokio::select! {
                _ = tokio::time::sleep_until(t) => {},
                _ = self.shutdown.wait(Phase::Drain) => return false,
            }
        }
    }

    pub(super) async fn split(&self, batch: &SealedBatch) -> Result<Vec<SealedBatch>, SplitError> {
        let b = batch.clone();
        let p = self.policy.clone();
        tokio::task::spawn_blocking(move || split_batch(&b, &p.layout, p.level))
            .await
            .map_err(|e| SplitError::Task(e.to_string()))?
    }

    /// Moves a batch to `data_dir/dead-letter/<sink>/` with its reason. In memory mode only the
    /// reason is written: zero retention forbids records on disk.
    pub(super) async fn dead_letter(&self, key: &SpoolKey, batch: &SealedBatch, reason: &str) {
        self.health.dead_lettered(&self.name, reason);
        self.c.dead.inc();
        self.c.dead_records.inc_by(batch.meta.record_count);
        error!(sink = %self.name, batch = %batch.meta.id, records = batch.meta.record_count, %reason, "batch rejected; moved to dead-letter");
        let dir = self.dead_dir.clone();
        let b = match self.spool.sealed_copy(batch).await {
            Ok(b) => b,
            Err(e) => {
                error!(sink = %self.name, error = %e, "cannot seal the dead letter; the batch stays in the spool");
                self.spool.untake(key);
                return;
            }
        };
        let memory = self.spool.is_memory();
        let why = reason.to_string();
        let res = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            crate::private_fs::dir_all(&dir)?;
            if !memory {
                crate::spool::write_file(&dir.join(format!("{}.batch", b.meta.id)), &b)?;
            }
            let note = serde_json::json!({
                "batch_id": b.meta.id,
                "key": b.meta.key,
                "records": b.meta.record_count,
                "reason": logferry_sink::redact::text(&why),
                "time": chrono::Utc::now().to_rfc3339(),
                "payload_kept": !memory,
            });
            crate::private_fs::write(
                &dir.join(format!("{}.reason.json", b.meta.id)),
                note.to_string().as_bytes(),
            )
        })
        .await;
        match res {
            Ok(Ok(())) => {
                if let (Some(j), Some(link)) = (&self.journal, &batch.meta.chain) {
                    let e = logferry_integrity::chained::entry_for(
                        &batch.meta,
                        link,
                        None,
                        Some(logferry_sink::redact::text(reason).into_owned()),
                    );
                    if let Err(e) = j.append(e).await {
                        // Kept spooled: the digest must say why this sequence number is missing.
                        error!(sink = %self.name, error = %e, "cannot record the dead letter in the integrity journal; the batch stays in the spool");
                        self.spool.untake(key);
                        return;
                    }
                }
                if let Err(e) = self.spool.complete(key).await {
                    warn!(sink = %self.name, error = %e, "dead-lettered batch could not be removed from the spool");
                }
            }
            Ok(Err(e)) => {
                error!(sink = %self.name, error = %e, "cannot write dead-letter; the batch stays in the spool");
                self.spool.untake(key);
            }
            Err(e) => {
                error!(sink = %self.name, error = %e, "dead-letter task failed; the batch stays in the spool");
                self.spool.untake(key);
            }
        }
    }
}
