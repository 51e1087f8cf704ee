//! `kill -9` at random moments: nothing may be lost, duplicates stay bounded by open batches.

mod common;

use common::*;
use std::time::Duration;

const MAX_RECORDS: u64 = 100;

const DIRECTORY: &str = "type = \"directory\"\npath = \"{dir}/archive\"";

/// Runs logferry `runs` times with a `kill -9` at a random moment while a writer appends, then
/// once more to the end, and returns what the sink holds (read by `archived`).
fn crash_loop(
    sink: &str,
    buffer: &str,
    runs: usize,
    env: &[(&str, &str)],
    archived: impl Fn(&Lf) -> Vec<serde_json::Value>,
) {
    // One crash loop at a time: seven writers and seven logferry processes on two cores starve
    // each other, and a starved restart ships its replayed records again at the next kill,
    // which measures the scheduler, not logferry's bound. Serial costs no time (they sleep).
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    // Sinks that name their own key (append blobs) keep it; an OTLP request has none.
    let key = if sink.contains("key = ") || sink.contains("type = \"otlp\"") {
        String::new()
    } else {
        "key = \"{source}/{account_id}/{batch_id}.ndjson.gz\"".to_string()
    };
    let lf = Lf::new(&format!(
        r#"[sources.jobs]
include = ["{{dir}}/logs/*.log"]
sinks = ["archive"]
[sinks.archive]
{sink}
{key}
buffer = "{buffer}"
batch = {{ max_records = {MAX_RECORDS}, max_age = "100ms" }}
retry = {{ initial_backoff = "50ms", max_backoff = "200ms" }}
"#
    ));
    let writer = Appender::start(&lf.path("logs/app.log"), 100, |i| {
        format!(
            "{{\"id\":{i},\"account_id\":\"acct{}\",\"msg\":\"job step finished with output\"}}\n",
            i % 3
        )
    });
    let mut rng = fastrand::Rng::with_seed(42);
    let started = std::time::Instant::now();
    // What the writer adds while a process is down and starting is read back in one burst
    // when it is ready. A kill that comes before that burst can be durable (a max_age and a
    // checkpoint_interval after ready, 100 ms each, and as much again for a loaded machine)
    // can ship all of it twice: the writer's input from the previous kill to ready.
    let mut burst = Duration::ZERO;
    let mut since = std::time::Instant::now();
    for _ in 0..runs {
        let run = lf.spawn_env(env);
        let wait = Duration::from_millis(rng.u64(200..1500));
        let spawned = std::time::Instant::now();
        let mut ready = None;
        while spawned.elapsed() < wait {
            if run.ready() {
                ready = Some(std::time::Instant::now());
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // The scenario is "a crash at a random moment": the wait is the point, not a sync.
        std::thread::sleep(wait.saturating_sub(spawned.elapsed()));
        run.kill9();
        // The backlog: written from the previous kill until this process was ready.
        match ready {
            None => burst += since.elapsed(),
            Some(r) if r.elapsed() < Duration::from_millis(400) => burst += r - since,
            Some(_) => {}
        }
        since = std::time::Instant::now();
    }
    let n = writer.finish();
    let rate = n as f64 / started.elapsed().as_secs_f64();
    lf.run_once_env(env);
    let recs = archived(&lf);
    let dups = assert_all_present(&recs, n);
    // Per crash, what was read but not yet durable comes again: the open batches (one per
    // partition, 3 here, at most MAX_RECORDS each), the sealed batches on their way to the
    // spool (the channel holds 2, the writer and the compression queue 1 each), the piece of
    // read progress acknowledged as one (64 KiB of these ~90-byte lines), and the input of one
    // max_age (a record can wait that long in an open batch) and one checkpoint_interval
    // (100 ms each) at the writer's measured rate. In memory mode and for sinks
    // that keep every copy, the batches in flight at the kill (concurrency: at most 4 here)
    // also come again. And a restart's burst, when the kill came before it could be durable
    // (above). Computed from this test's own numbers.
    let in_flight = 4 * MAX_RECORDS;
    let piece = (64 * 1024) / 90;
    let per_kill = (3 + 4) * MAX_RECORDS + in_flight + piece + (rate * 0.2).ceil() as u64;
    let bound = runs as u64 * per_kill + (rate * burst.as_secs_f64()).ceil() as u64;
    assert!(
        bound < n / 2,
        "a bound of {bound} says little about {n} records"
    );
    let kind = sink.lines().next().unwrap_or_default();
    eprintln!("kill -9 x{runs} ({kind}, {buffer} buffer): {n} records written at {rate:.0}/s, 0 lost, {dups} duplicates (bound {bound})");
    assert!((dups as u64) <= bound, "{dups} duplicates exceed {bound}");
    assert_eq!(
        walk(&lf.path("data/spool/archive")).len(),
        0,
        "spool drained at the end"
    );
}

#[test]
fn kill_9_in_a_loop_loses_nothing_with_the_disk_spool() {
    crash_loop(DIRECTORY, "disk", 10, &[], |lf| lf.final_archive("archive"));
}

#[test]
fn kill_9_in_a_loop_loses_nothing_with_parquet_batches() {
    crash_loop(
        "type = \"directory\"\npath = \"{dir}/archive\"\nencoding = \"parquet\"\nkey = \"{source}/{account_id}/{batch_id}.parquet\"",
        "disk",
        10,
        &[],
        |lf| parquet_records(&lf.path("archive")),
    );
}

#[test]
fn kill_9_in_a_loop_loses_nothing_in_zero_retention_mode() {
    crash_loop(DIRECTORY, "memory", 10, &[], |lf| {
        lf.final_archive("archive")
    });
}

#[test]
fn kill_9_in_a_loop_ends_with_every_record_in_the_bucket() {
    let moto = Moto::start();
    let (rt, c) = moto.bucket("crash", false);
    let sink = format!(
        "type = \"s3\"\nallow_plaintext_credentials = true\nbucket = \"crash\"\nregion = \"us-east-1\"\nendpoint = \"{}\"\nforce_path_style = true",
        moto.endpoint
    );
    crash_loop(&sink, "disk", 10, &moto.env(), |_| {
        rt.block_on(async {
            let mut out = Vec::new();
            let mut token = None;
            loop {
                let page = c
                    .list_objects_v2()
                    .bucket("crash")
                    .set_continuation_token(token)
                    .send()
                    .await
                    .unwrap();
                for o in page.contents() {
                    let body = c
                        .get_object()
                        .bucket("crash")
                        .key(o.key().unwrap())
                        .send()
                        .await
                        .unwrap();
                    let bytes = body.body.collect().await.unwrap().into_bytes();
                    let mut raw = Vec::new();
                    std::io::Read::read_to_end(
                        &mut flate2::read::MultiGzDecoder::new(&bytes[..]),
                        &mut raw,
                    )
                    .unwrap();
                    out.extend(
                        raw.split(|b| *b == b'\n')
                            .filter(|l| !l.is_empty())
                            .map(|l| serde_json::from_slice(l).unwrap()),
                    );
                }
                token = page.next_continuation_token().map(str::to_string);
                if token.is_none() {
                    break;
                }
            }
            out
        })
    });
}

#[test]
fn kill_9_in_a_loop_ends_with_every_record_in_azure_blob() {
    let az = Azurite::start();
    az.create_container("crash");
    let sink = format!(
        "type = \"azure_blob\"\nallow_plaintext_credentials = true\ncontainer = \"crash\"\nconnection_string = \"{}\"",
        az.connection_string()
    );
    crash_loop(&sink, "disk", 10, &[], |_| az.records("crash"));
}

#[test]
fn kill_9_in_a_loop_ends_with_every_record_in_azure_append_blobs_and_no_block_twice() {
    let az = Azurite::start();
    az.create_container("crash");
    // Every request goes through a proxy that notes each Append Block and its answer; the
    // sink names the batch in x-ms-client-request-id.
    let proxy = FaultProxy::start(
        az.port,
        Fault {
            drop_response: false,
            method: "PUT",
            path_contains: "comp=appendblock",
            count: 0,
            status: "",
            headers: vec![],
            body: String::new(),
        },
    );
    let sink = format!(
        "type = \"azure_blob\"\nallow_plaintext_credentials = true\ncontainer = \"crash\"\nconnection_string = \"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};BlobEndpoint=http://127.0.0.1:{}/devstoreaccount1;\"\nblob_type = \"append\"\nkey = \"{{source}}/{{account_id}}.ndjson.gz\"",
        proxy.port
    );
    crash_loop(&sink, "disk", 6, &[], |_| az.records("crash"));
    // Records read again after a kill come in new batches (bounded above); a batch that was
    // spooled, appended and then replayed must be found in the blob, never appended again.
    let mut seen = std::collections::HashMap::<String, usize>::new();
    for (head, status) in proxy.answered.lock().unwrap().iter() {
        if !head
            .lines()
            .next()
            .unwrap_or_default()
            .contains("comp=appendblock")
            || !status.contains(" 201 ")
        {
            continue;
        }
        let id = header_in(head, "x-ms-client-request-id").expect("the batch id");
        *seen.entry(id).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    eprintln!(
        "append blobs: {} batches appended, {} appended twice",
        seen.len(),
        twice.len()
    );
    assert!(seen.len() > 50, "the proxy saw the appends: {}", seen.len());
    assert!(twice.is_empty(), "batches appended twice: {twice:?}");
}

/// A header's value in a request head, by case-insensitive name.
fn header_in(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

#[test]
fn kill_9_in_a_loop_ends_with_every_record_in_azure_monitor() {
    use common::monitor::{Monitor, DCR, STREAM};
    use common::tls::{TestCa, TokenServer, CLIENT_ID, CLIENT_SECRET, TENANT};
    let ca = TestCa::new();
    let login = TokenServer::start(&ca);
    let monitor = Monitor::start(&ca);
    let sink = format!(
        "type = \"azure_monitor\"\nendpoint = \"{}\"\ndcr_id = \"{DCR}\"\nstream = \"{STREAM}\"\nauth = \"client_secret\"\ntenant_id = \"{TENANT}\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret = \"{CLIENT_SECRET}\"\nauthority_host = \"{}\"\ntls = {{ ca_file = \"{}\" }}",
        monitor.endpoint(),
        login.authority_host(),
        ca.ca_pem.display()
    );
    crash_loop(&sink, "disk", 6, &[], |_| monitor.records());
}

#[test]
fn kill_9_in_a_loop_ends_with_every_record_at_the_http_endpoint() {
    let rx = common::receiver::Receiver::start(None);
    let sink = format!("type = \"http\"\nurl = \"{}\"", rx.url("/ingest"));
    crash_loop(&sink, "disk", 6, &[], |_| rx.records());
}

#[test]
fn kill_9_in_a_loop_ends_with_every_record_at_the_otlp_receiver() {
    // OTLP has no idempotency key: what was in flight at a kill comes again (the bound counts
    // it), and the receiver (the official Python classes) keeps every copy.
    let rx = common::otlp::OtlpReceiver::start(serde_json::json!([]), None);
    let sink = format!("type = \"otlp\"\nendpoint = \"{}\"", rx.endpoint());
    crash_loop(&sink, "disk", 6, &[], |_| rx.bodies());
}
