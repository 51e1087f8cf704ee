//! Delivery: one worker per sink takes batches from its spool and sends them with `concurrency`
//! attempts in flight, full-jitter exponential backoff, `Retry-After`, rate limits, splitting of
//! batches that are too large, and dead letters for permanent refusals.
//!
//! This is the only retry loop in logferry: sinks report an [`Outcome`] and nothing else.
//!
//! Tenants are kept apart: a `Parked` answer (one tenant-hour's data key cannot be had) sets
//! aside the batches of that scope ([`Sink::scope`]) while the others flow; after the scope's
//! own backoff one of its batches (the probe) is tried again, and when one is delivered they all
//! go. Parked batches stay spooled, counted (`batches_parked`) and listed in `/readyz`; in a disk
//! spool they never take more than half of it (the oldest is dead-lettered).

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use logferry_sink::{BatchMeta, Outcome, SealedBatch, Sink};

use crate::shutdown::{Phase, Shutdown};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use crate::backoff::Backoff;
use crate::encode::{self, Layout};
use crate::ops::health::Health;
use crate::ops::metrics::Metrics;
use crate::spool::{Scanned, Spool, SpoolKey, Taken};

/// The longest `Retry-After` obeyed as given; longer ones are cut to this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// How often the parked batches are looked over while a scope is parked (scopes with none
/// left, and a disk spool's half).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

pub struct Policy {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub max_attempts: Option<u32>,
    pub concurrency: usize,
    pub timeout: Duration,
    pub requests: Option<DefaultDirectRateLimiter>,
    pub bytes: Option<(DefaultDirectRateLimiter, NonZeroU32)>,
    pub layout: Layout,
    pub level: Option<i32>,
    /// Seeds the backoff jitter (tests); `None` draws a random seed per batch.
    pub seed: Option<u64>,
}

impl Policy {
    pub fn rate_limits(
        rps: Option<u32>,
        bps: Option<u64>,
    ) -> (
        Option<DefaultDirectRateLimiter>,
        Option<(DefaultDirectRateLimiter, NonZeroU32)>,
    ) {
        let requests = rps
            .and_then(NonZeroU32::new)
            .map(|n| RateLimiter::direct(Quota::per_second(n)));
        let bytes = bps
            .and_then(|b| NonZeroU32::new(b.min(u32::MAX as u64) as u32))
            .map(|n| (RateLimiter::direct(Quota::per_second(n)), n));
        (requests, bytes)
    }
}

/// The jitter of a backoff: seeded (tests) or random.
fn jitter(p: &Policy) -> fastrand::Rng {
    p.seed
        .map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed)
}

struct Counters {
    throttled: Counter,
    sent: Counter,
    records: Counter,
    bytes: Counter,
    retries: Counter,
    retry_after: Counter,
    split: Counter,
    dead: Counter,
    dead_records: Counter,
    last: Gauge,
    parked: Gauge,
    parks: Counter,
}

/// A scope (tenant-hour) whose batches are set aside after a `Parked` answer.
struct Parked {
    /// None of its batches is taken before this; then one, the probe.
    until: tokio::time::Instant,
    /// The scope's own backoff: each probe that is parked again waits longer.
    backoff: Backoff,
    since: chrono::DateTime<chrono::Utc>,
    /// The last error.
    reason: String,
    /// One of its batches is out as the probe: no other is taken until its attempt ends.
    probing: bool,
    /// Attempts per batch, kept across parks (`max_attempts` counts them all).
    tries: HashMap<SpoolKey, u32>,
}

/// The parked scopes of one sink. Lock order: the spool's lock, then this one (`skips` runs
/// under the spool's lock), never the other way round.
#[derive(Default)]
struct Parking {
    scopes: std::sync::Mutex<HashMap<String, Parked>>,
    /// One look over the parked batches at a time.
    sweeping: tokio::sync::Mutex<()>,
    /// When a batch was last delivered: parked batches are set aside to make room only while
    /// other scopes flow (when every scope fails, the sink is down, and the spool filling and
    /// reading pausing is the honest answer).
    delivered_at: std::sync::Mutex<Option<chrono::DateTime<chrono::Utc>>>,
}

impl Parking {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Parked>> {
        self.scopes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn scopes(&self) -> HashSet<String> {
        self.lock().keys().cloned().collect()
    }

    /// Whether the worker passes over a batch: its scope is parked and its wait is not over, or
    /// the scope's probe is out.
    fn skips(&self, sink: &dyn Sink, meta: &BatchMeta) -> bool {
        let g = self.lock();
        if g.is_empty() {
            return false;
        }
        let Some(scope) = sink.scope(meta) else {
            return false;
        };
        g.get(&scope)
            .is_some_and(|p| p.probing || p.until > tokio::time::Instant::now())
    }

    /// A batch of `scope` was just taken: when the scope is parked it is the scope's probe,
    /// until the returned guard is dropped.
    fn probe(self: &Arc<Self>, scope: &str, spool: &Arc<Spool>) -> Option<Probe> {
        let mut g = self.lock();
        let p = g.get_mut(scope)?;
        if p.probing {
            return None;
        }
        p.probing = true;
        Some(Probe {
            parking: self.clone(),
            spool: spool.clone(),
            scope: scope.to_string(),
        })
    }

    /// The attempts `key` had before (in earlier parks of `scope`).
    fn tries(&self, scope: &str, key: &SpoolKey) -> u32 {
        self.lock()
            .get(scope)
            .and_then(|p| p.tries.get(key).copied())
            .unwrap_or(0)
    }

    fn forget_tries(&self, scope: Option<&str>, key: &SpoolKey) {
        let Some(scope) = scope else { return };
        if let Some(p) = self.lock().get_mut(scope) {
            p.tries.remove(key);
        }
    }

    /// Parks `scope` after a `Parked` answer to the `attempts`th attempt of `key`: until when,
    /// and whether the scope was not parked before. A scope whose wait is over (its probe was
    /// parked again) waits `after` or its next backoff; one still waiting (the answer is for a
    /// batch that was out before the park) keeps its wait, longer if `after` says so.
    fn park(
        &self,
        scope: &str,
        key: &SpoolKey,
        attempts: u32,
        after: Option<Duration>,
        reason: &str,
        policy: &Policy,
    ) -> (tokio::time::Instant, bool) {
        let now = tokio::time::Instant::now();
        let mut g = self.lock();
        let newly = !g.contains_key(scope);
        let p = g.entry(scope.to_string()).or_insert_with(|| Parked {
            until: now,
            backoff: Backoff::new(policy.initial_backoff, policy.max_backoff, jitter(policy)),
            since: chrono::Utc::now(),
            reason: String::new(),
            probing: false,
            tries: HashMap::new(),
        });
        p.reason = reason.to_string();
        p.tries.insert(key.clone(), attempts);
        if p.until <= now {
            let wait = match after {
                Some(a) => a.min(MAX_RETRY_AFTER),
                None => p.backoff.next_delay(),
            };
            p.until = now + wait;
        } else if let Some(a) = after {
            p.until = p.until.max(now + a.min(MAX_RETRY_AFTER));
        }
        (p.until, newly)
    }

    /// Ends `scope`'s park: since when it was parked, if it was.
    fn unpark(&self, scope: &str) -> Option<chrono::DateTime<chrono::Utc>> {
        self.lock().remove(scope).map(|p| p.since)
    }

    /// Since when `scope` is parked, and its last error.
    fn delivered(&self) {
        *self.delivered_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(chrono::Utc::now());
    }

    /// Whether a batch was delivered after the oldest park began.
    fn others_flow(&self) -> bool {
        let oldest = self.lock().values().map(|p| p.since).min();
        let last = *self.delivered_at.lock().unwrap_or_else(|p| p.into_inner());
        matches!((oldest, last), (Some(o), Some(d)) if d > o)
    }

    fn about(&self, scope: &str) -> Option<(chrono::DateTime<chrono::Utc>, String)> {
        self.lock().get(scope).map(|p| (p.since, p.reason.clone()))
    }
}

/// The one batch of a parked scope let through once the scope's wait is over. When its attempt
/// ends, however it ends, the scope's other batches are looked at again (a delivery has unparked
/// the scope; a new park keeps them aside; a dead letter lets the next one be the probe).
struct Probe {
    parking: Arc<Parking>,
    spool: Arc<Spool>,
    scope: String,
}

impl Drop for Probe {
    fn drop(&mut self) {
        if let Some(p) = self.parking.lock().get_mut(&self.scope) {
            p.probing = false;
        }
        self.spool.poke();
    }
}

/// Until when a throttled sink is left alone: a throttle answer pauses every worker of the
/// sink, not only the request that got it (the destination's quota is the sink's, not one
/// request's).
type Pause = Arc<std::sync::Mutex<Option<tokio::time::Instant>>>;

pub struct Worker {
    pause: Pause,
    pub health: Arc<Health>,
    pub name: String,
    pub sink: Arc<dyn Sink>,
    pub spool: Arc<Spool>,
    pub policy: Arc<Policy>,
    pub dead_dir: PathBuf,
    c: Arc<Counters>,
    /// An integrity stream's journal: dead letters are recorded in it (the digest says why a
    /// sequence number is not in the archive).
    journal: Option<Arc<crate::integrity::Journal>>,
    parking: Arc<Parking>,
}

impl Worker {
    pub fn with_journal(mut self, j: Option<Arc<crate::integrity::Journal>>) -> Self {
        self.journal = j;
        self
    }

    pub fn new(
        name: &str,
        sink: Arc<dyn Sink>,
        spool: Arc<Spool>,
        policy: Policy,
        data_dir: &std::path::Path,
        m: &Metrics,
        health: Arc<Health>,
    ) -> Worker {
        let l = m.sink(name);
        m.track_sink(name);
        // A new worker (a start, a reload) has nothing parked yet.
        health.clear_parked(name);
        m.batches_parked.get_or_create(&l).set(0);
        Worker {
            pause: Pause::default(),
            health,
            name: name.to_string(),
            sink,
            spool,
            policy: Arc::new(policy),
            dead_dir: data_dir.join("dead-letter").join(name),
            c: Arc::new(Counters {
                throttled: m.throttled.get_or_create(&l).clone(),
                sent: m.batches_sent.get_or_create(&l).clone(),
                records: m.records_sent.get_or_create(&l).clone(),
                bytes: m.bytes_sent.get_or_create(&l).clone(),
                retries: m.retries.get_or_create(&l).clone(),
                retry_after: m.retry_after_waits.get_or_create(&l).clone(),
                split: m.batches_split.get_or_create(&l).clone(),
                dead: m.dead_letter_batches.get_or_create(&l).clone(),
                dead_records: m.dead_letter_records.get_or_create(&l).clone(),
                last: m.last_delivery.get_or_create(&l).clone(),
                parked: m.batches_parked.get_or_create(&l).clone(),
                parks: m.parks.get_or_create(&l).clone(),
            }),
            journal: None,
            parking: Arc::default(),
        }
    }

    fn attempt(&self, shutdown: &Shutdown) -> Attempt {
        Attempt {
            pause: self.pause.clone(),
            health: self.health.clone(),
            shutdown: shutdown.clone(),
            name: self.name.clone(),
            sink: self.sink.clone(),
            spool: self.spool.clone(),
            policy: self.policy.clone(),
            dead_dir: self.dead_dir.clone(),
            c: self.c.clone(),
            journal: self.journal.clone(),
            parking: self.parking.clone(),
        }
    }

    /// Delivers until the spool is closed and empty, or shutdown reaches `Abandon` (the
    /// deadline): then attempts in flight are dropped and their batches stay spooled. `Drain` (a reload)
    /// takes no new batch and lets each attempt in flight end; a batch that would wait for a
    /// retry goes back to the spool instead. Batches of a parked scope are passed over (and go
    /// back to the spool when parked in flight), so they never hold the attempts in flight.
    pub async fn run(self, shutdown: Shutdown) {
        let sem = Arc::new(Semaphore::new(self.policy.concurrency));
        let mut tasks = JoinSet::new();
        // Looks over the parked batches now and then, until the loop below ends.
        let sweeps = shutdown.child();
        {
            let ctx = self.attempt(&shutdown);
            let sweeps = sweeps.clone();
            tasks.spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(SWEEP_EVERY) => {},
                        _ = sweeps.wait(Phase::Drain) => break,
                    }
                    if !ctx.parking.is_empty() {
                        ctx.sweep().await;
                    }
                }
            });
        }
        let (parking, sink) = (self.parking.clone(), self.sink.clone());
        let skip = move |m: &BatchMeta| parking.skips(&*sink, m);
        loop {
            let permit = tokio::select! {
                p = sem.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                // `Abandon` implies `Drain`: no new batch either way.
                _ = shutdown.wait(Phase::Drain) => break,
            };
            let taken = tokio::select! {
                t = self.spool.next_where(&skip) => t,
                _ = shutdown.wait(Phase::Drain) => break,
            };
            let taken = match taken {
                None => break,
                Some(Ok(t)) => t,
                Some(Err(e)) => {
                    error!(sink = %self.name, error = %e, "cannot read a spooled batch; it stays in the spool");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let scope = self.sink.scope(&taken.batch.meta);
            let probe = scope
                .as_deref()
                .and_then(|s| self.parking.probe(s, &self.spool));
            let ctx = self.attempt(&shutdown);
            let abandon = shutdown.clone();
            tasks.spawn(async move {
                let key = taken.key.clone();
                tokio::select! {
                    _ = ctx.deliver(taken, scope) => {},
                    _ = abandon.wait(Phase::Abandon) => ctx.spool.untake(&key),
                }
                drop(probe);
                drop(permit);
            });
            while tasks.try_join_next().is_some() {}
        }
        sweeps.advance(Phase::End);
        // Finish what is in flight (or drop it at the deadline).
        while tasks.join_next().await.is_some() {}
    }
}

struct Attempt {
    pause: Pause,
    health: Arc<Health>,
    shutdown: Shutdown,
    name: String,
    sink: Arc<dyn Sink>,
    spool: Arc<Spool>,
    policy: Arc<Policy>,
    dead_dir: PathBuf,
    c: Arc<Counters>,
    journal: Option<Arc<crate::integrity::Journal>>,
    parking: Arc<Parking>,
}

impl Attempt {
    /// Sends one batch until it is delivered, dead-lettered, split, parked (back to the spool,
    /// its scope set aside), or given back (a reload). `scope` is the sink's for the batch.
    async fn deliver(&self, taken: Taken, scope: Option<String>) {
        let Taken { key, batch } = taken;
        let p = &self.policy;
        let mut backoff = Backoff::new(p.initial_backoff, p.max_backoff, jitter(p));
        // Attempts made in earlier parks count too.
        let mut attempts: u32 = scope.as_deref().map_or(0, |s| self.parking.tries(s, &key));
        loop {
            if !self.wait_out_throttle().await {
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
                    if attempts == 1 || attempts % 10 == 0 {
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
                    if batch.meta.chain.is_some() {
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
    async fn flowing(&self, scope: &str, key: &SpoolKey) {
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
    fn parked_batches(&self) -> Vec<Scanned<String>> {
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
    async fn sweep(&self) {
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
    async fn wait_out_throttle(&self) -> bool {
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

    async fn split(&self, batch: &SealedBatch) -> Result<Vec<SealedBatch>, String> {
        let b = batch.clone();
        let p = self.policy.clone();
        tokio::task::spawn_blocking(move || split_batch(&b, &p.layout, p.level))
            .await
            .map_err(|e| e.to_string())?
    }

    /// Moves a batch to `data_dir/dead-letter/<sink>/` with its reason. In memory mode only the
    /// reason is written: zero retention forbids records on disk.
    async fn dead_letter(&self, key: &SpoolKey, batch: &SealedBatch, reason: &str) {
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

/// Waits until the byte limiter has let `len` bytes through. The limiter's burst is one
/// second of the rate, so a larger batch waits for its size in whole bursts, then the rest:
/// a batch of 10 s worth of bytes goes out after about 10 s, never at once.
pub async fn pace_bytes(r: &DefaultDirectRateLimiter, burst: NonZeroU32, len: u64) {
    let mut left = len.max(1);
    while left > 0 {
        let take = left.min(u64::from(burst.get()));
        left -= take;
        // `take` is between 1 and the burst, so the limiter can always grant it.
        let n = NonZeroU32::new(take as u32).unwrap_or(burst);
        let _ = r.until_n_ready(n).await;
    }
}

/// Splits a batch into two halves by records, each with its own derived id and key.
pub fn split_batch(
    b: &SealedBatch,
    layout: &Layout,
    level: Option<i32>,
) -> Result<Vec<SealedBatch>, String> {
    use sha2::{Digest, Sha256};
    let raw = encode::decompress(b.meta.compression, &b.payload).map_err(|e| e.to_string())?;
    let recs = layout.records(&b.meta, &raw)?;
    if recs.len() < 2 {
        return Err(format!("{} record(s) found", recs.len()));
    }
    let mid = recs.len() / 2;
    let mut out = Vec::new();
    for (suffix, part) in [("a", &recs[..mid]), ("b", &recs[mid..])] {
        let mut meta = b.meta.clone();
        meta.id = format!("{}-{suffix}", b.meta.id);
        // Each half's envelope names the half: its id and count, the parent's seal time.
        let (payload, head_len, tail_len) = layout.assemble(
            &encode::Seal {
                id: &meta.id,
                records: part.len() as u64,
                sealed_at: b.meta.sealed_at.unwrap_or(b.meta.last_time),
            },
            part,
        );
        meta.head_len = head_len;
        meta.tail_len = tail_len;
        meta.key = b.meta.key.replacen(&b.meta.id, &meta.id, 1);
        meta.record_count = part.len() as u64;
        meta.sha256 = hex::encode(Sha256::digest(&payload));
        meta.uncompressed_bytes = payload.len() as u64;
        let compressed =
            encode::compress(b.meta.compression, level, &payload).map_err(|e| e.to_string())?;
        out.push(SealedBatch {
            meta,
            payload: Bytes::from(compressed),
        });
    }
    Ok(out)
}

#[cfg(test)]
#[path = "deliver_tests.rs"]
mod tests;
