//! The batcher's sealing rules, with instants given by the test (the batcher takes `now` for
//! ages), so no test waits on a clock.

use super::*;
use crate::config::Format;
use crate::decode::Decoder;
use std::sync::Mutex;

#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<PendingBatch>>>);

impl Outlet for Collect {
    fn send(&mut self, batch: PendingBatch) -> Result<(), ShuttingDown> {
        self.0.lock().unwrap().push(batch);
        Ok(())
    }
}

fn batcher(key: &str, max_records: u64, max_bytes: u64) -> (Batcher<Collect>, Collect) {
    let key = KeyTemplate::parse(key).unwrap();
    let plan = Plan {
        sink: "k".into(),
        field_slots: (0..key.fields().len()).collect(),
        tenant: None,
        bucket_secs: key.time_granularity(),
        key,
        layout: crate::encode::Layout::new(logferry_sink::Encoding::Ndjson, None),
        compression: Compression::None,
        level: None,
        max_bytes,
        max_records,
        max_age: Duration::from_secs(30),
        max_uncompressed: None,
        shape: None,
        whole: None,
    };
    let out = Collect::default();
    let ratio = Arc::new(AtomicU64::new(1.0f64.to_bits()));
    let pool = CompressPool::new(1).unwrap();
    (Batcher::new(plan, "s", "h", pool, out.clone(), ratio), out)
}

/// Adds `{"account_id":acct,"ts":ts}` records through a decoder that extracts the key fields.
fn add(b: &mut Batcher<Collect>, fields: &[&str], acct: &str, ts: &str, n: usize) {
    let fields: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
    let mut d = Decoder::new(Format::Json, None, &fields, Some("ts"));
    let t = Ticket::new();
    for _ in 0..n {
        let line = format!("{{\"account_id\":\"{acct}\",\"ts\":\"{ts}\"}}");
        let rec = d.decode(line.as_bytes(), None, (0, 0));
        let time = rec.time.unwrap();
        b.add(rec.record, rec.values, time, &t).unwrap();
    }
    t.seal().release();
}

fn sealed(out: &Collect) -> Vec<(String, u64)> {
    out.0
        .lock()
        .unwrap()
        .iter()
        .map(|p| (p.meta.key.clone(), p.meta.record_count))
        .collect()
}

#[test]
fn max_records_seals_at_the_count_and_seal_all_takes_the_rest() {
    let (mut b, out) = batcher("{source}/{batch_id}", 3, 1 << 20);
    add(&mut b, &[], "a", "2026-11-23T10:00:00Z", 7);
    let counts: Vec<u64> = sealed(&out).iter().map(|s| s.1).collect();
    assert_eq!(counts, [3, 3]);
    b.seal_all().unwrap();
    let counts: Vec<u64> = sealed(&out).iter().map(|s| s.1).collect();
    assert_eq!(counts, [3, 3, 1]);
}

#[test]
fn max_bytes_seals_when_the_estimate_reaches_it() {
    // Each record is 45 bytes plus its newline; ratio 1 (no compression).
    let (mut b, out) = batcher("{source}/{batch_id}", 1000, 100);
    add(&mut b, &[], "a", "2026-11-23T10:00:00Z", 2);
    assert!(sealed(&out).is_empty(), "92 bytes: still open");
    add(&mut b, &[], "a", "2026-11-23T10:00:00Z", 1);
    assert_eq!(sealed(&out).iter().map(|s| s.1).collect::<Vec<_>>(), [3]);
}

#[test]
fn max_age_seals_at_the_age_not_before() {
    let (mut b, out) = batcher("{source}/{batch_id}", 1000, 1 << 20);
    let opened = Instant::now();
    add(&mut b, &[], "a", "2026-11-23T10:00:00Z", 2);
    b.seal_expired(opened).unwrap();
    assert!(sealed(&out).is_empty());
    // The batch opened after `opened`; a moment before its age it stays open.
    b.seal_expired(opened + Duration::from_secs(30) - Duration::from_millis(500))
        .unwrap();
    assert!(sealed(&out).is_empty());
    b.seal_expired(Instant::now() + Duration::from_secs(30))
        .unwrap();
    assert_eq!(sealed(&out).iter().map(|s| s.1).collect::<Vec<_>>(), [2]);
}

#[test]
fn partitions_by_key_fields_and_time_bucket_hold_only_their_records() {
    let (mut b, out) = batcher("{account_id}/%Y/%m/%d/%H/{batch_id}", 1000, 1 << 20);
    let f = ["account_id"];
    add(&mut b, &f, "a", "2026-11-23T10:00:00Z", 2);
    add(&mut b, &f, "b", "2026-11-23T10:30:00Z", 3);
    add(&mut b, &f, "a", "2026-11-23T11:00:00Z", 4);
    add(&mut b, &f, "a", "2026-11-23T10:59:59Z", 1);
    b.seal_all().unwrap();
    let mut got: Vec<(String, u64)> = sealed(&out)
        .into_iter()
        .map(|(k, n)| (k.rsplit_once('/').unwrap().0.to_string(), n))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("a/2026/11/23/10".to_string(), 3),
            ("a/2026/11/23/11".to_string(), 4),
            ("b/2026/11/23/10".to_string(), 3),
        ]
    );
}

#[test]
fn hundreds_of_partitions_stay_open_together_instead_of_sealing_each_other() {
    // Four hundred accounts, as in the reference workload: each gets one batch, not one per
    // few records.
    let (mut b, out) = batcher("{account_id}/{batch_id}", 50_000, 8 << 20);
    for round in 0..5 {
        for acct in 0..400 {
            add(
                &mut b,
                &["account_id"],
                &format!("acct-{acct}"),
                "2026-11-23T10:00:00Z",
                1,
            );
        }
        assert!(sealed(&out).is_empty(), "sealed early in round {round}");
    }
    b.seal_all().unwrap();
    let got = sealed(&out);
    assert_eq!(got.len(), 400);
    assert!(got.iter().all(|(_, n)| *n == 5));
}
