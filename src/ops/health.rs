//! What `/readyz` reports: the pipeline is up; per sink whether deliveries succeed, have been
//! failing since when, or are being dead-lettered, which scopes (tenant-hours) are parked, and
//! whether its spool can be written; per source whether its checkpoints can be written.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

#[derive(Debug, Clone, Default)]
struct SinkHealth {
    failing_since: Option<DateTime<Utc>>,
    dead_lettering_since: Option<DateTime<Utc>>,
    last_error: Option<String>,
    last_delivery: Option<DateTime<Utc>>,
    /// Durability writes (spool, or checkpoints for a source) failing since, with the error.
    durable: Failing,
    /// Scopes (tenant-hours) whose batches are parked: since when, and the last error. Not
    /// cleared by other scopes' deliveries; at most [`MAX_PARKED`] are kept.
    parked: BTreeMap<String, (DateTime<Utc>, String)>,
}

/// Parked scopes kept per sink (more are counted by the metrics only).
const MAX_PARKED: usize = 1000;
/// Parked scopes listed per sink in the report.
const PARKED_SHOWN: usize = 20;

#[derive(Debug, Clone, Default)]
struct Failing {
    since: Option<DateTime<Utc>>,
    error: Option<String>,
}

impl Failing {
    fn fail(&mut self, e: &str) {
        self.since.get_or_insert_with(Utc::now);
        self.error = Some(e.to_string());
    }
    fn ok(&mut self) {
        self.since = None;
        self.error = None;
    }
    /// Adds `"<what>": "failing"|"ok"` (with the error and since when) to `o`; returns whether
    /// it has been failing longer than `limit`.
    fn report(
        &self,
        what: &str,
        o: &mut serde_json::Map<String, serde_json::Value>,
        now: DateTime<Utc>,
        limit: Duration,
    ) -> bool {
        let Some(since) = self.since else {
            o.insert(what.into(), "ok".into());
            return false;
        };
        o.insert(what.into(), "failing".into());
        o.insert(format!("{what}_since"), ts(&since).into());
        if let Some(e) = &self.error {
            o.insert(format!("{what}_error"), cut(e).into());
        }
        (now - since).to_std().unwrap_or_default() >= limit
    }
}

fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// An error as reported: a status, a service's message or an OS error, redacted (a
/// transport error quotes the URL) before it is cut, so a secret is never cut in half.
fn cut(e: &str) -> String {
    logferry_sink::redact::text(e).chars().take(300).collect()
}

pub struct Health {
    ready: AtomicBool,
    /// A sink failing longer than this makes the process not ready.
    unready_after: Mutex<Duration>,
    sinks: Mutex<BTreeMap<String, SinkHealth>>,
    sources: Mutex<BTreeMap<String, Failing>>,
}

impl Health {
    pub fn new(unready_after: Duration) -> Health {
        Health {
            ready: AtomicBool::new(false),
            unready_after: Mutex::new(unready_after),
            sinks: Mutex::new(BTreeMap::new()),
            sources: Mutex::new(BTreeMap::new()),
        }
    }

    /// Config loaded and every worker started (or stopped for a reload).
    pub fn set_running(&self, on: bool) {
        self.ready.store(on, Ordering::Release);
    }

    /// The sinks of a (re)loaded config: others are forgotten, known ones keep their state.
    pub fn set_sinks<'a>(&self, names: impl Iterator<Item = &'a str>, unready_after: Duration) {
        *self.unready_after.lock().unwrap_or_else(|p| p.into_inner()) = unready_after;
        let mut m = self.sinks.lock().unwrap_or_else(|p| p.into_inner());
        let keep: BTreeMap<String, SinkHealth> = names
            .map(|n| (n.to_string(), m.get(n).cloned().unwrap_or_default()))
            .collect();
        *m = keep;
    }

    /// The sources of a (re)loaded config.
    pub fn set_sources<'a>(&self, names: impl Iterator<Item = &'a str>) {
        let mut m = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        let keep: BTreeMap<String, Failing> = names
            .map(|n| (n.to_string(), m.get(n).cloned().unwrap_or_default()))
            .collect();
        *m = keep;
    }

    pub fn checkpoint_failing(&self, source: &str, error: &str) {
        let mut m = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(source.to_string()).or_default().fail(error);
    }

    pub fn checkpoint_ok(&self, source: &str) {
        let mut m = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = m.get_mut(source) {
            f.ok();
        }
    }

    pub fn spool_failing(&self, sink: &str, error: &str) {
        self.with(sink, |h| h.durable.fail(error));
    }

    pub fn spool_ok(&self, sink: &str) {
        self.with(sink, |h| h.durable.ok());
    }

    fn with(&self, sink: &str, f: impl FnOnce(&mut SinkHealth)) {
        let mut m = self.sinks.lock().unwrap_or_else(|p| p.into_inner());
        f(m.entry(sink.to_string()).or_default());
    }

    pub fn delivered(&self, sink: &str) {
        self.with(sink, |h| {
            h.failing_since = None;
            h.dead_lettering_since = None;
            h.last_delivery = Some(Utc::now());
        });
    }

    pub fn failed(&self, sink: &str, reason: &str) {
        self.with(sink, |h| {
            h.failing_since.get_or_insert_with(Utc::now);
            h.last_error = Some(reason.to_string());
        });
    }

    /// `scope`'s batches are parked (a `Parked` answer): reported, and not ready once it lasts
    /// longer than `unready_after`, whatever the other scopes do.
    pub fn parked(&self, sink: &str, scope: &str, reason: &str) {
        self.with(sink, |h| {
            if let Some(p) = h.parked.get_mut(scope) {
                p.1 = reason.to_string();
            } else if h.parked.len() < MAX_PARKED {
                h.parked
                    .insert(scope.to_string(), (Utc::now(), reason.to_string()));
            }
        });
    }

    /// `scope`'s batches flow again (one was delivered), or none is left.
    pub fn unparked(&self, sink: &str, scope: &str) {
        let mut m = self.sinks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = m.get_mut(sink) {
            h.parked.remove(scope);
        }
    }

    /// Forgets every parked scope of `sink` (a new worker starts with none parked).
    pub fn clear_parked(&self, sink: &str) {
        let mut m = self.sinks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = m.get_mut(sink) {
            h.parked.clear();
        }
    }

    pub fn dead_lettered(&self, sink: &str, reason: &str) {
        self.with(sink, |h| {
            h.dead_lettering_since.get_or_insert_with(Utc::now);
            h.last_error = Some(reason.to_string());
        });
    }

    /// (ready, JSON body).
    pub fn report(&self) -> (bool, String) {
        let now = Utc::now();
        let limit = *self.unready_after.lock().unwrap_or_else(|p| p.into_inner());
        let running = self.ready.load(Ordering::Acquire);
        let m = self.sinks.lock().unwrap_or_else(|p| p.into_inner());
        let mut ready = running;
        let mut sinks = serde_json::Map::new();
        for (name, h) in m.iter() {
            let mut o = serde_json::Map::new();
            let state = if let Some(since) = h.dead_lettering_since {
                ready = false;
                o.insert("since".into(), ts(&since).into());
                "dead_lettering"
            } else if let Some(since) = h.failing_since {
                if (now - since).to_std().unwrap_or_default() > limit {
                    ready = false;
                }
                o.insert("since".into(), ts(&since).into());
                "retrying"
            } else if let Some(since) = h.parked.values().map(|p| p.0).min() {
                o.insert("since".into(), ts(&since).into());
                "parked"
            } else {
                "ok"
            };
            o.insert("state".into(), state.into());
            if state != "ok" && state != "parked" {
                if let Some(e) = &h.last_error {
                    o.insert("last_error".into(), cut(e).into());
                }
            }
            if !h.parked.is_empty() {
                // A scope parked too long is as bad as a sink retrying too long.
                if h.parked
                    .values()
                    .any(|p| (now - p.0).to_std().unwrap_or_default() > limit)
                {
                    ready = false;
                }
                let mut parked = serde_json::Map::new();
                for (scope, (since, error)) in h.parked.iter().take(PARKED_SHOWN) {
                    parked.insert(
                        scope.clone(),
                        serde_json::json!({ "since": ts(since), "last_error": cut(error) }),
                    );
                }
                o.insert("parked".into(), serde_json::Value::Object(parked));
                o.insert("parked_scopes".into(), h.parked.len().into());
            }
            if h.durable.report("spool", &mut o, now, limit) {
                ready = false;
            }
            if let Some(t) = &h.last_delivery {
                o.insert("last_delivery".into(), ts(t).into());
            }
            sinks.insert(name.clone(), serde_json::Value::Object(o));
        }
        drop(m);
        let mut sources = serde_json::Map::new();
        for (name, f) in self
            .sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let mut o = serde_json::Map::new();
            if f.report("checkpoint", &mut o, now, limit) {
                ready = false;
            }
            sources.insert(name.clone(), serde_json::Value::Object(o));
        }
        let status = match (running, ready) {
            (false, _) => "starting",
            (true, true) => "ready",
            (true, false) => "not_ready",
        };
        let body = serde_json::json!({ "status": status, "sinks": sinks, "sources": sources });
        (ready, body.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sink_failing_too_long_or_dead_lettering_is_not_ready() {
        let h = Health::new(Duration::ZERO);
        h.set_sinks(["a", "b"].into_iter(), Duration::ZERO);
        assert!(!h.report().0, "starting");
        h.set_running(true);
        assert!(h.report().0);
        h.failed("a", "HTTP 503: busy");
        std::thread::sleep(Duration::from_millis(5));
        let (ready, body) = h.report();
        assert!(!ready);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["sinks"]["a"]["state"], "retrying");
        assert_eq!(v["sinks"]["a"]["last_error"], "HTTP 503: busy");
        assert_eq!(v["sinks"]["b"]["state"], "ok");
        h.delivered("a");
        assert!(h.report().0);
        h.dead_lettered("b", "HTTP 400");
        let v: serde_json::Value = serde_json::from_str(&h.report().1).unwrap();
        assert_eq!(v["status"], "not_ready");
        assert_eq!(v["sinks"]["b"]["state"], "dead_lettering");
    }

    #[test]
    fn a_parked_scope_is_reported_apart_and_not_ready_once_too_long() {
        let h = Health::new(Duration::from_secs(3600));
        h.set_sinks(["a"].into_iter(), Duration::from_secs(3600));
        h.set_running(true);
        h.parked("a", "acme@2026-12-03T10", "no data key: HTTP 403");
        h.parked("a", "beta@2026-12-03T10", "no data key: bad entry");
        // Another tenant's delivery does not end a park.
        h.delivered("a");
        let (ready, body) = h.report();
        assert!(ready, "not parked longer than unready_after yet");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let a = &v["sinks"]["a"];
        assert_eq!(a["state"], "parked");
        assert_eq!(a["parked_scopes"], 2);
        assert_eq!(
            a["parked"]["acme@2026-12-03T10"]["last_error"],
            "no data key: HTTP 403"
        );
        assert!(a["parked"]["beta@2026-12-03T10"]["since"].is_string());
        h.unparked("a", "acme@2026-12-03T10");
        h.unparked("a", "beta@2026-12-03T10");
        let v: serde_json::Value = serde_json::from_str(&h.report().1).unwrap();
        assert_eq!(v["sinks"]["a"]["state"], "ok");
        assert!(v["sinks"]["a"].get("parked").is_none());

        let h = Health::new(Duration::ZERO);
        h.set_sinks(["a"].into_iter(), Duration::ZERO);
        h.set_running(true);
        h.parked("a", "acme@2026-12-03T10", "no data key");
        std::thread::sleep(Duration::from_millis(5));
        let (ready, body) = h.report();
        assert!(!ready, "parked longer than unready_after");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "not_ready");
        for i in 0..(MAX_PARKED + 5) {
            h.parked("a", &format!("t{i}@2026-12-03T10"), "x");
        }
        let v: serde_json::Value = serde_json::from_str(&h.report().1).unwrap();
        assert_eq!(v["sinks"]["a"]["parked_scopes"], MAX_PARKED);
        assert_eq!(
            v["sinks"]["a"]["parked"].as_object().unwrap().len(),
            PARKED_SHOWN
        );
        h.clear_parked("a");
        let v: serde_json::Value = serde_json::from_str(&h.report().1).unwrap();
        assert_eq!(v["sinks"]["a"]["state"], "ok");
    }

    #[test]
    fn a_failing_spool_or_checkpoint_is_reported_and_not_ready_until_it_heals() {
        let h = Health::new(Duration::ZERO);
        h.set_sinks(["a"].into_iter(), Duration::ZERO);
        h.set_sources(["s"].into_iter());
        h.set_running(true);
        let v: serde_json::Value = serde_json::from_str(&h.report().1).unwrap();
        assert_eq!(v["sinks"]["a"]["spool"], "ok");
        assert_eq!(v["sources"]["s"]["checkpoint"], "ok");
        h.spool_failing("a", "No space left on device (os error 28)");
        let (ready, body) = h.report();
        assert!(!ready);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["sinks"]["a"]["spool"], "failing");
        assert_eq!(
            v["sinks"]["a"]["spool_error"],
            "No space left on device (os error 28)"
        );
        assert!(v["sinks"]["a"]["spool_since"].is_string());
        h.spool_ok("a");
        assert!(h.report().0);
        h.checkpoint_failing("s", "disk full");
        let (ready, body) = h.report();
        assert!(!ready);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["sources"]["s"]["checkpoint"], "failing");
        h.checkpoint_ok("s");
        assert!(h.report().0);
    }
}
