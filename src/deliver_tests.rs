//! The delivery loop under paused time, and batch splitting.
//!
//! The sink here is a script of answers, not a stand-in for a destination: the sinks' own
//! tests talk to real servers; these check the loop's timing, which only paused time makes
//! exact.

use super::*;
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
    let layout = Layout::new(logferry_sinks::Encoding::Ndjson, None);
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
        meta: logferry_sinks::BatchMeta {
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
            compression: logferry_sinks::Compression::None,
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
    let policy = Policy {
        initial_backoff: Duration::from_secs(1),
        max_backoff: Duration::from_secs(8),
        max_attempts: None,
        concurrency,
        timeout: Duration::from_secs(30),
        requests: None,
        bytes: None,
        layout: Layout::new(logferry_sinks::Encoding::Ndjson, None),
        level: None,
        seed: Some(seed),
    };
    let health = Arc::new(Health::new(Duration::from_secs(60)));
    let w = Worker::new(
        "k",
        sink.clone(),
        spool.clone(),
        policy,
        dir.path(),
        &metrics,
        health,
    );
    let (_a, abort) = watch::channel(false);
    let (_d, drain) = watch::channel(false);
    w.run(abort, drain).await;
    Run {
        sink,
        spool,
        metrics,
        dir,
    }
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
    let after = logferry_sinks::retry_after(&date);
    let r = deliver(&[sealed("a", 1)], vec![("a", retry(after))], 1, 1).await;
    let got = r.sink.sent.lock().unwrap()[1].0;
    assert!(
        got > Duration::from_secs(118) && got <= Duration::from_secs(120),
        "{got:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn too_large_splits_in_halves_that_keep_every_record() {
    let r = deliver(
        &[sealed("a", 4)],
        vec![(
            "a",
            Outcome::TooLarge {
                reason: "413".into(),
            },
        )],
        1,
        1,
    )
    .await;
    let ids: Vec<String> = r
        .sink
        .sent
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.1.clone())
        .collect();
    assert_eq!(ids, ["a", "a-a", "a-b"]);
    assert!(r.spool.is_empty());
    assert!(r
        .metrics
        .encode()
        .contains("logferry_batches_split_total{sink=\"k\"} 1"));
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

#[test]
fn split_keeps_every_record_and_derives_ids_and_keys() {
    let layout = Layout::new(logferry_sinks::Encoding::JsonArray, None);
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
        meta: logferry_sinks::BatchMeta {
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
            compression: logferry_sinks::Compression::Gzip,
            head_len,
            tail_len,
            sealed_at: Some(now),
            tenant: None,
            key_id: None,
            spool_encrypted: false,
            chain: None,
        },
        payload: Bytes::from(
            encode::compress(logferry_sinks::Compression::Gzip, None, &payload).unwrap(),
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
