//! Tenants kept apart: the scopes (tenant-hours) set aside after a `Parked` answer, their
//! backoff, and the one batch of a scope tried again (the probe).

use super::*;

/// A scope (tenant-hour) whose batches are set aside after a `Parked` answer.
pub(super) struct Parked {
    /// None of its batches is taken before this; then one, the probe.
    pub(super) until: tokio::time::Instant,
    /// The scope's own backoff: each probe that is parked again waits longer.
    pub(super) backoff: Backoff,
    pub(super) since: chrono::DateTime<chrono::Utc>,
    /// The last error.
    pub(super) reason: String,
    /// One of its batches is out as the probe: no other is taken until its attempt ends.
    pub(super) probing: bool,
    /// Attempts per batch, kept across parks (`max_attempts` counts them all).
    pub(super) tries: HashMap<SpoolKey, u32>,
}

/// The parked scopes of one sink. Lock order: the spool's lock, then this one (`skips` runs
/// under the spool's lock), never the other way round.
#[derive(Default)]
pub(super) struct Parking {
    pub(super) scopes: std::sync::Mutex<HashMap<String, Parked>>,
    /// One look over the parked batches at a time.
    pub(super) sweeping: tokio::sync::Mutex<()>,
    /// When a batch was last delivered: parked batches are set aside to make room only while
    /// other scopes flow (when every scope fails, the sink is down, and the spool filling and
    /// reading pausing is the honest answer).
    pub(super) delivered_at: std::sync::Mutex<Option<chrono::DateTime<chrono::Utc>>>,
}

impl Parking {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Parked>> {
        self.scopes.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    pub(super) fn scopes(&self) -> HashSet<String> {
        self.lock().keys().cloned().collect()
    }

    /// Whether the worker passes over a batch: its scope is parked and its wait is not over, or
    /// the scope's probe is out.
    pub(super) fn skips(&self, sink: &dyn Sink, meta: &BatchMeta) -> bool {
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
    pub(super) fn probe(self: &Arc<Self>, scope: &str, spool: &Arc<Spool>) -> Option<Probe> {
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
    pub(super) fn tries(&self, scope: &str, key: &SpoolKey) -> u32 {
        self.lock()
            .get(scope)
            .and_then(|p| p.tries.get(key).copied())
            .unwrap_or(0)
    }

    pub(super) fn forget_tries(&self, scope: Option<&str>, key: &SpoolKey) {
        let Some(scope) = scope else { return };
        if let Some(p) = self.lock().get_mut(scope) {
            p.tries.remove(key);
        }
    }

    /// Parks `scope` after a `Parked` answer to the `attempts`th attempt of `key`: until when,
    /// and whether the scope was not parked before. A scope whose wait is over (its probe was
    /// parked again) waits `after` or its next backoff; one still waiting (the answer is for a
    /// batch that was out before the park) keeps its wait, longer if `after` says so.
    pub(super) fn park(
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
    pub(super) fn unpark(&self, scope: &str) -> Option<chrono::DateTime<chrono::Utc>> {
        self.lock().remove(scope).map(|p| p.since)
    }

    /// Since when `scope` is parked, and its last error.
    pub(super) fn delivered(&self) {
        *self.delivered_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(chrono::Utc::now());
    }

    /// Whether a batch was delivered after the oldest park began.
    pub(super) fn others_flow(&self) -> bool {
        let oldest = self.lock().values().map(|p| p.since).min();
        let last = *self.delivered_at.lock().unwrap_or_else(|p| p.into_inner());
        matches!((oldest, last), (Some(o), Some(d)) if d > o)
    }

    pub(super) fn about(&self, scope: &str) -> Option<(chrono::DateTime<chrono::Utc>, String)> {
        self.lock().get(scope).map(|p| (p.since, p.reason.clone()))
    }
}

/// The one batch of a parked scope let through once the scope's wait is over. When its attempt
/// ends, however it ends, the scope's other batches are looked at again (a delivery has unparked
/// the scope; a new park keeps them aside; a dead letter lets the next one be the probe).
pub(super) struct Probe {
    pub(super) parking: Arc<Parking>,
    pub(super) spool: Arc<Spool>,
    pub(super) scope: String,
}

impl Drop for Probe {
    fn drop(&mut self) {
        if let Some(p) = self.parking.lock().get_mut(&self.scope) {
            p.probing = false;
        }
        self.spool.poke();
    }
}
