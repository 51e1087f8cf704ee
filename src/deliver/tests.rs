//! The delivery loop under paused time, and batch splitting.
//!
//! The sink here is a script of answers, not a stand-in for a destination: the sinks' own
//! tests talk to real servers; these check the loop's timing, which only paused time makes
//! exact.

use super::*;
use crate::encode;
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::time::Instant;

/// Answers from a script (then `Delivered`) and records when each batch was sent.
struct Script {
    start: Instant,
    answers: Mutex<VecDeque<(String, Outcome)>>,
    sent: Mutex<Vec<(Duration, String)>>,
}

#[async_trait::async_trait]
impl Sink for Script {
    async fn send(&self, batch: &SealedBatch) -> Outcome {
        self.sent
            .lock()
            .unwrap()
            .push((self.start.elapsed(), batch.meta.id.clone()));
        let mut a = self.answers.lock().unwrap();
        match a
            .iter()
            .position(|(id, _)| batch.meta.id.starts_with(id.as_str()))
        {
            Some(i) => a.remove(i).unwrap().1,
            None => Outcome::Delivered,
        }
    }
}

fn sealed(id: &str, records: usize) -> SealedBatch {
    let layout = Layout::new(logferry_sink::Encoding::Ndjson, None);
    let recs: Vec<Vec<u8>> = (0..records)
        .map(|i| format!("{{\"n\":{i}}}").into_bytes())
        .collect();
    let now = chrono::Utc::now();
    let seal = encode::Seal {
        id,
        records: records as u64,
        sealed_at: now,
    };
    let (payload, _, _) = layout.assemble(&seal, &recs);
    SealedBatch {
        meta: logferry_sink::BatchMeta {
            id: id.into(),
            source: "s".into(),
            sink: "k".into(),
            key: format!("s/{id}.ndjson"),
            record_count: records as u64,
            first_time: now,
            last_time: now,
            sha256: String::new(),
            uncompressed_bytes: payload.len() as u64,
            encoding: layout.encoding,
            compression: logferry_sink::Compression::None,
            head_len: 0,
            tail_len: 0,
            sealed_at: None,
            tenant: None,
            key_id: None,
            spool_encrypted: false,
            chain: None,
        },
        payload: Bytes::from(payload),
    }
}

struct Run {
    sink: Arc<Script>,
    spool: Arc<Spool>,
    metrics: Arc<Metrics>,
    dir: tempfile::TempDir,
}

/// Spools `batches`, runs a worker until the spool is empty, returns what was sent.
async fn deliver(
    batches: &[SealedBatch],
    answers: Vec<(&str, Outcome)>,
    concurrency: usize,
    seed: u64,
) -> Run {
    deliver_to(batches, answers, concurrency, seed, false).await
}

/// As [`deliver`], to a sink with an integrity stream (its journal in the run's folder) when
/// `integrity`.
async fn deliver_to(
    batches: &[SealedBatch],
    answers: Vec<(&str, Outcome)>,
    concurrency: usize,
    seed: u64,
    integrity: bool,
) -> Run {
    let sink = Arc::new(Script {
        start: Instant::now(),
        answers: Mutex::new(
            answers
                .into_iter()
                .map(|(i, o)| (i.to_string(), o))
                .collect(),
        ),
        sent: Mutex::new(Vec::new()),
    });
    let spool = Arc::new(Spool::memory(16, 1 << 30, Default::default()));
    for b in batches {
        spool.push(b.clone(), vec![]).await.unwrap();
    }
    spool.close();
    let metrics = Metrics::new();
    let dir = tempfile::tempdir().unwrap();
    let policy = test_policy(concurrency, None, seed);
    let health = Arc::new(Health::new(Duration::from_secs(60)));
    let w = Worker::new(
        "k",
        sink.clone(),
        spool.clone(),
        policy,
        dir.path(),
        &metrics,
        health,
    )
    .with_journal(integrity.then(|| {
        Arc::new(crate::integrity::Journal::new(
            dir.path().join("journal.jsonl"),
            chrono::Utc::now() - chrono::Duration::hours(1),
        ))
    }));
    w.run(crate::shutdown::Shutdown::new()).await;
    Run {
        sink,
        spool,
        metrics,
        dir,
    }
}

/// A 413 for batch `id`, then `Delivered` for everything.
fn too_large(id: &str) -> Vec<(&str, Outcome)> {
    vec![(
        id,
        Outcome::TooLarge {
            reason: "413".into(),
        },
    )]
}

/// The ids of the batches sent, in order.
fn sent_ids_of(sink: &Script) -> Vec<String> {
    sink.sent
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.1.clone())
        .collect()
}

fn sent_ids(r: &Run) -> Vec<String> {
    sent_ids_of(&r.sink)
}

fn retry(after: Option<Duration>) -> Outcome {
    Outcome::Retry {
        after,
        reason: "HTTP 503".into(),
    }
}

#[tokio::test(start_paused = true)]
async fn backoff_waits_are_exactly_the_policy_s() {
    let r = deliver(
        &[sealed("a", 1)],
        vec![("a", retry(None)), ("a", retry(None)), ("a", retry(None))],
        1,
        42,
    )
    .await;
    let mut b = Backoff::new(
        Duration::from_secs(1),
        Duration::from_secs(8),
        fastrand::Rng::with_seed(42),
    );
    let mut at = Duration::ZERO;
    let mut want = vec![at];
    for _ in 0..3 {
        at += b.next_delay();
        want.push(at);
    }
    let got: Vec<Duration> = r.sink.sent.lock().unwrap().iter().map(|s| s.0).collect();
    assert_eq!(got, want);
    assert!(r.spool.is_empty());
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_obeyed_in_seconds_and_as_a_date() {
    let r = deliver(
        &[sealed("a", 1)],
        vec![("a", retry(Some(Duration::from_secs(7))))],
        1,
        1,
    )
    .await;
    let got: Vec<Duration> = r.sink.sent.lock().unwrap().iter().map(|s| s.0).collect();
    assert_eq!(got, [Duration::ZERO, Duration::from_secs(7)]);

    let date = (chrono::Utc::now() + chrono::Duration::seconds(120)).to_rfc2822();
    let after = logferry_sink::retry_after(&date);
    let r = deliver(&[sealed("a", 1)], vec![("a", retry(after))], 1, 1).await;
    let got = r.sink.sent.lock().unwrap()[1].0;
    assert!(
        got > Duration::from_secs(118) && got <= Duration::from_secs(120),
        "{got:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn too_large_splits_in_halves_that_keep_every_record() {
    let r = deliver(&[sealed("a", 4)], too_large("a"), 1, 1).await;
    assert_eq!(sent_ids(&r), ["a", "a-a", "a-b"]);
    assert!(r.spool.is_empty());
    assert!(r
        .metrics
        .encode()
        .contains("logferry_batches_split_total{sink=\"k\"} 1"));
}

/// The delivery loop, not a sink wrapper, decides that a batch of an integrity stream is
/// never split (its halves would break the stream's one entry per sealed batch).
#[tokio::test(start_paused = true)]
async fn too_large_of_an_integrity_stream_is_dead_lettered_not_split() {
    let chained = || {
        let mut b = sealed("a", 4);
        b.meta.chain = Some(logferry_sink::ChainLink {
            stream: "s".into(),
            seq: 1,
            prev: "0".repeat(64),
            sealed_sha256: "x".into(),
            hash: "y".into(),
            object_sha256: None,
        });
        b
    };
    let r = deliver_to(&[chained()], too_large("a"), 1, 1, true).await;
    assert_eq!(
        r.sink.sent.lock().unwrap().len(),
        1,
        "never split nor retried"
    );
    assert!(r.spool.is_empty());
    let note = std::fs::read_to_string(r.dir.path().join("dead-letter/k/a.reason.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&note).unwrap();
    assert_eq!(
        v["reason"],
        "413 (a batch of an integrity stream is never split)"
    );
    // The dead letter is in the journal, so that the digest says why its seq is missing.
    let journal = std::fs::read_to_string(r.dir.path().join("journal.jsonl")).unwrap();
    assert!(journal.contains("never split"), "{journal}");
    // A batch spooled with a link for a sink that no longer has integrity is split as any.
    let r = deliver_to(&[chained()], too_large("a"), 1, 1, false).await;
    assert_eq!(sent_ids(&r), ["a", "a-a", "a-b"]);
}

#[tokio::test(start_paused = true)]
async fn a_refusal_is_dead_lettered_with_its_reason() {
    let r = deliver(
        &[sealed("a", 2)],
        vec![(
            "a",
            Outcome::Rejected {
                reason: "HTTP 400: bad".into(),
            },
        )],
        1,
        1,
    )
    .await;
    assert_eq!(r.sink.sent.lock().unwrap().len(), 1, "never retried");
    assert!(r.spool.is_empty());
    let note = std::fs::read_to_string(r.dir.path().join("dead-letter/k/a.reason.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&note).unwrap();
    assert_eq!(v["reason"], "HTTP 400: bad");
    assert_eq!(v["payload_kept"], false, "memory mode keeps no records");
}

#[tokio::test(start_paused = true)]
async fn a_throttle_answer_pauses_every_worker_of_the_sink() {
    let throttled = Outcome::Throttled {
        after: Some(Duration::from_secs(10)),
        reason: "429".into(),
    };
    let batches: Vec<SealedBatch> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|i| sealed(i, 1))
        .collect();
    let r = deliver(&batches, vec![("a", throttled)], 2, 1).await;
    let sent = r.sink.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 6, "{sent:?}");
    // Only what was already in flight when the answer came went out before the wait.
    let early: Vec<_> = sent
        .iter()
        .filter(|s| s.0 < Duration::from_secs(10))
        .collect();
    assert!(early.len() <= 2, "{sent:?}");
    assert!(early.iter().all(|s| s.0 == Duration::ZERO), "{sent:?}");
}

/// Parks every batch of a tenant in `bad` (a scope is a tenant here) and delivers the others;
/// records each attempt: when, which batch, and whether it was delivered.
struct Tenants {
    start: Instant,
    bad: Mutex<Vec<String>>,
    sent: Mutex<Vec<(Duration, String, bool)>>,
}

#[async_trait::async_trait]
impl Sink for Tenants {
    async fn send(&self, batch: &SealedBatch) -> Outcome {
        let tenant = batch.meta.tenant.clone().unwrap_or_default();
        let parked = self.bad.lock().unwrap().contains(&tenant);
        self.sent
            .lock()
            .unwrap()
            .push((self.start.elapsed(), batch.meta.id.clone(), !parked));
        if parked {
            Outcome::Parked {
                after: None,
                reason: format!("no data key for tenant {tenant:?}"),
            }
        } else {
            Outcome::Delivered
        }
    }

    fn scope(&self, meta: &BatchMeta) -> Option<String> {
        meta.tenant.clone()
    }
}

/// A batch of `tenant`'s records.
fn of(tenant: &str, id: &str, records: usize) -> SealedBatch {
    let mut b = sealed(id, records);
    b.meta.tenant = Some(tenant.into());
    b
}

/// A worker running on its own task (tenant `bad` parked), and what it works with.
struct Live {
    sink: Arc<Tenants>,
    spool: Arc<Spool>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    dir: tempfile::TempDir,
    shutdown: crate::shutdown::Shutdown,
    worker: tokio::task::JoinHandle<()>,
}

impl Live {
    /// The attempts at the batches whose id starts with `prefix`, in order.
    fn attempts(&self, prefix: &str) -> Vec<(Duration, String, bool)> {
        self.sink
            .sent
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.1.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// The value of the sink's series of `name`.
    fn metric(&self, name: &str) -> Option<f64> {
        let text = self.metrics.encode();
        let prefix = format!("{name}{{sink=\"k\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.trim().parse().ok())
    }

    fn readyz(&self) -> serde_json::Value {
        serde_json::from_str(&self.health.report().1).unwrap()
    }

    fn reason(&self, id: &str) -> String {
        let path = self
            .dir
            .path()
            .join(format!("dead-letter/k/{id}.reason.json"));
        let note = std::fs::read_to_string(&path).unwrap();
        let v: serde_json::Value = serde_json::from_str(&note).unwrap();
        v["reason"].as_str().unwrap().to_string()
    }

    async fn stop(self) {
        self.shutdown.advance(crate::shutdown::Phase::Abandon);
        self.worker.await.unwrap();
    }
}

/// Spools `batches` (in a disk spool of `disk_cap` bytes, else in memory) and starts a worker
/// whose sink parks tenant `bad`. It runs until the spool is closed and empty, or `stop`.
async fn start(
    batches: &[SealedBatch],
    disk_cap: Option<u64>,
    concurrency: usize,
    max_attempts: Option<u32>,
) -> Live {
    let sink = Arc::new(Tenants {
        start: Instant::now(),
        bad: Mutex::new(vec!["bad".to_string()]),
        sent: Mutex::new(Vec::new()),
    });
    let dir = tempfile::tempdir().unwrap();
    let spool = Arc::new(match disk_cap {
        Some(cap) => Spool::open_disk(dir.path().join("spool"), cap, Default::default()).unwrap(),
        None => Spool::memory(64, 1 << 30, Default::default()),
    });
    for b in batches {
        spool.push(b.clone(), vec![]).await.unwrap();
    }
    let metrics = Metrics::new();
    let policy = test_policy(concurrency, max_attempts, 7);
    let health = Arc::new(Health::new(Duration::from_secs(3600)));
    let w = Worker::new(
        "k",
        sink.clone(),
        spool.clone(),
        policy,
        dir.path(),
        &metrics,
        health.clone(),
    );
    let shutdown = crate::shutdown::Shutdown::new();
    let worker = tokio::spawn(w.run(shutdown.clone()));
    Live {
        sink,
        spool,
        metrics,
        health,
        dir,
        shutdown,
        worker,
    }
}

/// Bad and good tenants' batches, alternating, oldest first.
fn alternating(n: usize) -> Vec<SealedBatch> {
    (0..n)
        .flat_map(|i| {
            [
                of("bad", &format!("bad{i}"), 2),
                of("good", &format!("good{i}"), 2),
            ]
        })
        .collect()
}

/// Before, two batches of a tenant whose key could not be had held both attempts in flight,
/// retrying forever, and nothing else went out. Now its batches are parked: every other batch
/// goes at once, the parked ones stay spooled and counted, and the tenant is tried once per
/// period of its own backoff (the oldest batch, one at a time).
#[tokio::test(start_paused = true)]
async fn a_parked_tenant_does_not_stop_the_others() {
    let live = start(&alternating(6), None, 2, None).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let good = live.attempts("good");
    assert_eq!(good.len(), 6, "{good:?}");
    assert!(
        good.iter().all(|s| s.2 && s.0 == Duration::ZERO),
        "{good:?}"
    );
    assert_eq!(live.spool.len(), 6, "the parked batches stay spooled");
    assert_eq!(live.metric("logferry_batches_parked"), Some(6.0));

    let bad = live.attempts("bad");
    assert_eq!(
        live.metric("logferry_parks_total"),
        Some(bad.len() as f64),
        "every attempt at the tenant parked it"
    );
    assert!(
        bad.iter().all(|s| s.1 == "bad0" && !s.2),
        "only the oldest is tried: {bad:?}"
    );
    // One attempt at the end of each wait of a backoff with the policy's bounds and seed.
    let mut b = Backoff::new(
        Duration::from_secs(1),
        Duration::from_secs(8),
        fastrand::Rng::with_seed(7),
    );
    let mut want = vec![Duration::ZERO];
    loop {
        let next = *want.last().unwrap() + b.next_delay();
        if next >= Duration::from_secs(60) {
            break;
        }
        want.push(next);
    }
    let got: Vec<Duration> = bad
        .iter()
        .map(|s| s.0)
        .filter(|t| *t < Duration::from_secs(60))
        .collect();
    assert_eq!(got, want);

    let v = live.readyz();
    let k = &v["sinks"]["k"];
    assert_eq!(k["state"], "parked", "{v}");
    assert_eq!(k["parked_scopes"], 1, "{v}");
    assert!(
        k["parked"]["bad"]["last_error"]
            .as_str()
            .unwrap()
            .contains("no data key"),
        "{v}"
    );
    assert!(k["parked"]["bad"]["since"].is_string(), "{v}");
    live.stop().await;
}

/// When the tenant heals, its batches go at the end of the wait under way: the probe is
/// delivered and takes the others along.
#[tokio::test(start_paused = true)]
async fn parked_batches_go_once_the_tenant_heals_and_the_wait_is_over() {
    let mut live = start(&alternating(4), None, 2, None).await;
    live.spool.close();
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(live.spool.len(), 4);
    assert_eq!(live.metric("logferry_batches_parked"), Some(4.0));
    live.sink.bad.lock().unwrap().clear();
    let healed = live.sink.start.elapsed();
    tokio::time::timeout(Duration::from_secs(60), &mut live.worker)
        .await
        .expect("the spool empties")
        .unwrap();
    let bad = live.attempts("bad");
    let delivered: Vec<_> = bad.iter().filter(|s| s.2).collect();
    assert_eq!(delivered.len(), 4, "{bad:?}");
    let at = delivered[0].0;
    assert!(
        at >= healed && at <= healed + Duration::from_secs(8),
        "at the end of the wait under way (at most max_backoff): {bad:?}"
    );
    assert!(
        delivered.iter().all(|s| s.0 == at),
        "the others right after the probe: {bad:?}"
    );
    assert!(
        bad.iter().all(|s| s.2 || s.0 <= healed),
        "nothing tried in vain after the heal: {bad:?}"
    );
    assert!(live.spool.is_empty());
    assert_eq!(live.metric("logferry_batches_parked"), Some(0.0));
    let v = live.readyz();
    assert_eq!(v["sinks"]["k"]["state"], "ok", "{v}");
    assert!(v["sinks"]["k"].get("parked").is_none(), "{v}");
}

/// In a disk spool, parked batches never take more than half of it: the oldest is
/// dead-lettered with the reason, and the other tenants' batches (and the reading that feeds
/// them) never wait for room.
#[tokio::test(start_paused = true)]
async fn parked_batches_never_fill_more_than_half_a_disk_spool() {
    let size = of("bad", "bad00", 10).payload.len() as u64;
    let mut batches: Vec<SealedBatch> = (0..6)
        .map(|i| of("bad", &format!("bad{i:02}"), 10))
        .collect();
    batches.push(of("good", "good00", 10));
    batches.push(of("good", "good01", 10));
    // Room for ten: the six parked are more than half.
    let live = start(&batches, Some(10 * size), 1, None).await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    let reason = live.reason("bad00");
    assert!(
        reason.contains("tenant-hour bad parked since")
            && reason.contains("parked batches fill half the spool; last error: no data key"),
        "{reason}"
    );
    assert!(live.dir.path().join("dead-letter/k/bad00.batch").exists());
    assert_eq!(live.spool.len(), 5);
    assert_eq!(live.metric("logferry_batches_parked"), Some(5.0));

    // Both tenants keep writing: the good batches go at once, no push waits for room.
    for r in 0..10u64 {
        let t = live.sink.start.elapsed();
        live.spool
            .push(of("bad", &format!("bad{:02}", r + 6), 10), vec![])
            .await
            .unwrap();
        live.spool
            .push(of("good", &format!("good{:02}", r + 2), 10), vec![])
            .await
            .unwrap();
        assert_eq!(live.sink.start.elapsed(), t, "a push waited for room");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let good = live.attempts("good");
    assert_eq!(good.len(), 12, "{good:?}");
    assert!(good.iter().all(|s| s.2), "{good:?}");
    assert_eq!(live.spool.len(), 5, "half the spool of parked batches");
    assert_eq!(live.metric("logferry_batches_parked"), Some(5.0));
    assert_eq!(
        live.metric("logferry_dead_letter_batches_total"),
        Some(11.0)
    );
    live.stop().await;
}

/// `max_attempts` counts a batch's attempts across its parks; when one is dead-lettered the
/// next of its tenant is tried, and with none left the tenant is no longer parked.
#[tokio::test(start_paused = true)]
async fn max_attempts_counts_the_attempts_of_every_park() {
    let batches = [
        of("bad", "bad0", 2),
        of("bad", "bad1", 2),
        of("good", "good0", 2),
    ];
    let mut live = start(&batches, None, 1, Some(3)).await;
    live.spool.close();
    tokio::time::timeout(Duration::from_secs(600), &mut live.worker)
        .await
        .expect("every batch delivered or dead-lettered")
        .unwrap();
    let ids: Vec<String> = live.attempts("bad").into_iter().map(|s| s.1).collect();
    assert_eq!(ids, ["bad0", "bad0", "bad0", "bad1", "bad1", "bad1"]);
    assert!(live.attempts("good").iter().all(|s| s.2));
    assert!(live.spool.is_empty());
    assert!(
        live.reason("bad0")
            .starts_with("gave up after 3 attempts; last error: no data key"),
        "{}",
        live.reason("bad0")
    );
    assert_eq!(live.metric("logferry_dead_letter_batches_total"), Some(2.0));
    assert_eq!(live.metric("logferry_parks_total"), Some(4.0));
    assert_eq!(live.metric("logferry_batches_parked"), Some(0.0));
    let v = live.readyz();
    assert!(v["sinks"]["k"].get("parked").is_none(), "{v}");
}

#[test]
fn split_keeps_every_record_and_derives_ids_and_keys() {
    let layout = Layout::new(logferry_sink::Encoding::JsonArray, None);
    let recs: Vec<Vec<u8>> = (0..5)
        .map(|i| format!("{{\"n\":{i}}}").into_bytes())
        .collect();
    let now = chrono::Utc::now();
    let seal = encode::Seal {
        id: "abc",
        records: 5,
        sealed_at: now,
    };
    let (payload, head_len, tail_len) = layout.assemble(&seal, &recs);
    let b = SealedBatch {
        meta: logferry_sink::BatchMeta {
            id: "abc".into(),
            source: "s".into(),
            sink: "k".into(),
            key: "s/abc.json.gz".into(),
            record_count: 5,
            first_time: now,
            last_time: now,
            sha256: String::new(),
            uncompressed_bytes: payload.len() as u64,
            encoding: layout.encoding,
            compression: logferry_sink::Compression::Gzip,
            head_len,
            tail_len,
            sealed_at: Some(now),
            tenant: None,
            key_id: None,
            spool_encrypted: false,
            chain: None,
        },
        payload: Bytes::from(
            encode::compress(logferry_sink::Compression::Gzip, None, &payload).unwrap(),
        ),
    };
    let halves = split_batch(&b, &layout, None).unwrap();
    assert_eq!(halves[0].meta.key, "s/abc-a.json.gz");
    assert_eq!(halves[1].meta.id, "abc-b");
    let mut all = Vec::new();
    for h in &halves {
        let raw = encode::decompress(h.meta.compression, &h.payload).unwrap();
        let v: Vec<serde_json::Value> = serde_json::from_slice(&raw).unwrap();
        assert_eq!(v.len() as u64, h.meta.record_count);
        all.extend(v);
    }
    assert_eq!(all.len(), 5);
    assert_eq!(all[4]["n"], 4);
}

/// governor keeps its own clock, so this one runs in real time: 2,500 bytes at 1,000 bytes/s
/// (a burst of 1,000) cannot all go at once; before, a batch over the burst went unpaced.
#[tokio::test]
async fn a_batch_larger_than_the_burst_waits_for_its_size() {
    let (_, bytes) = Policy::rate_limits(None, Some(1000));
    let (r, burst) = bytes.unwrap();
    let t = std::time::Instant::now();
    pace_bytes(&r, burst, 2500).await;
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(1400), "{took:?}");
}

/// Backoff 1 s to 8 s, a 30 s timeout, no rate limits: the delivery tests' policy.
fn test_policy(concurrency: usize, max_attempts: Option<u32>, seed: u64) -> Policy {
    Policy {
        initial_backoff: Duration::from_secs(1),
        max_backoff: Duration::from_secs(8),
        max_attempts,
        concurrency,
        timeout: Duration::from_secs(30),
        requests: None,
        bytes: None,
        layout: Layout::new(logferry_sink::Encoding::Ndjson, None),
        level: None,
        seed: Some(seed),
    }
}

/// A reload while a batch waits for its retry: the batch goes back to the spool and this
/// worker sends nothing more. Before, the batch given back and the `Drain` were ready at the
/// same moment and the worker's unbiased select took the batch about half the time, sending it
/// once more through the pipeline being replaced (the old URL after a reload). Sixteen rounds:
/// the old code fails one of them with near certainty.
#[tokio::test(start_paused = true)]
async fn a_reload_gives_back_the_batch_waiting_for_a_retry_and_sends_nothing_more() {
    for round in 0..16u64 {
        let sink = Arc::new(Script {
            start: Instant::now(),
            answers: Mutex::new(VecDeque::from([(
                "a".to_string(),
                retry(Some(Duration::from_secs(3600))),
            )])),
            sent: Mutex::new(Vec::new()),
        });
        let spool = Arc::new(Spool::memory(16, 1 << 30, Default::default()));
        spool.push(sealed("a", 3), vec![]).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new();
        let health = Arc::new(Health::new(Duration::from_secs(60)));
        let w = Worker::new(
            "k",
            sink.clone(),
            spool.clone(),
            test_policy(1 + round as usize % 2, None, round),
            dir.path(),
            &metrics,
            health,
        );
        let shutdown = crate::shutdown::Shutdown::new();
        let worker = tokio::spawn(w.run(shutdown.clone()));
        // Busy, so the paused clock does not jump to the end of the wait.
        while sink.sent.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        shutdown.advance(crate::shutdown::Phase::Drain);
        worker.await.unwrap();
        assert_eq!(sent_ids_of(&sink), ["a"], "round {round}");
        assert_eq!(
            spool.len(),
            1,
            "round {round}: the batch stays for the next pipeline"
        );
        let again = spool.next().await.unwrap().unwrap();
        assert_eq!(
            again.batch.meta.id, "a",
            "round {round}: and is not held in flight"
        );
    }
}
