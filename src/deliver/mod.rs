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

mod attempt;
mod parking;
mod split;

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use logferry_sink::{BatchMeta, Outcome, SealedBatch, Sink};

use crate::shutdown::{Phase, Shutdown};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use crate::backoff::Backoff;
use crate::encode::Layout;
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
            // Biased, the stop first: a batch given back at `Drain` is ready at the same moment,
            // and taking it would send it once more through the pipeline being replaced.
            let permit = tokio::select! {
                biased;
                // `Abandon` implies `Drain`: no new batch either way.
                _ = shutdown.wait(Phase::Drain) => break,
                p = sem.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            };
            let taken = tokio::select! {
                biased;
                _ = shutdown.wait(Phase::Drain) => break,
                t = self.spool.next_where(&skip) => t,
            };
            let taken = match taken {
                None => break,
                Some(Ok(t)) if shutdown.reached(Phase::Drain) => {
                    self.spool.untake(&t.key);
                    break;
                }
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

use attempt::Attempt;
use parking::Parking;
pub use split::{split_batch, SplitError};

#[cfg(test)]
mod tests;
