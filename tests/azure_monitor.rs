//! The `azure_monitor` sink against a Logs Ingestion contract server and an Entra stand-in,
//! both over HTTPS with a CA made by the test.

mod common;

use common::monitor::{Monitor, DCR, STREAM};
use common::tls::{Resp, TestCa, TokenServer, CLIENT_ID, CLIENT_SECRET, TENANT};
use common::*;
use std::time::Duration;

struct Env {
    ca: TestCa,
    login: TokenServer,
    monitor: Monitor,
}

fn env() -> Env {
    let ca = TestCa::new();
    let login = TokenServer::start(&ca);
    let monitor = Monitor::start(&ca);
    Env { ca, login, monitor }
}

/// The sink section (without the table header).
fn sink(e: &Env, dcr: &str, extra: &str) -> String {
    format!(
        r#"type = "azure_monitor"
endpoint = "{}"
dcr_id = "{dcr}"
stream = "{STREAM}"
auth = "client_secret"
tenant_id = "{TENANT}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
authority_host = "{}"
tls = {{ ca_file = "{}" }}
retry = {{ initial_backoff = "50ms", max_backoff = "200ms" }}
{extra}"#,
        e.monitor.endpoint(),
        e.login.authority_host(),
        e.ca.ca_pem.display()
    )
}

fn config(e: &Env, dcr: &str, extra: &str) -> String {
    format!(
        "[sources.jobs]\ninclude = [\"{{dir}}/logs/*.log\"]\nsinks = [\"monitor\"]\n[sinks.monitor]\n{}\n",
        sink(e, dcr, extra)
    )
}

#[test]
fn every_record_arrives_in_requests_under_1mb_with_one_token() {
    let e = env();
    let lf = Lf::new(&config(
        &e,
        DCR,
        "time_field = \"ts\"\nfield_map = { account_id = \"AccountId\" }",
    ));
    let log = lf.path("logs/a.log");
    write_lines(&log, 0, 30_000);
    // Three records with a field over the 64 KB limit.
    let big = "x".repeat(100 << 10);
    let mut text = String::new();
    for i in 30_000..30_003u64 {
        text.push_str(&format!(
            "{{\"id\":{i},\"ts\":\"2026-03-04T05:06:07Z\",\"account_id\":\"acct9\",\"blob\":\"{big}\"}}\n"
        ));
    }
    // And one without the time field.
    text.push_str("{\"id\":30003,\"msg\":\"no time here\"}\n");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
        .unwrap();
    let run = lf.spawn();
    wait_until(Duration::from_secs(60), "30,004 records ingested", || {
        e.monitor.records().len() >= 30_004
    });
    assert_eq!(
        run.metric("logferry_fields_truncated_total", "sink=\"monitor\""),
        3.0
    );
    assert_eq!(run.term(Duration::from_secs(20)).code(), Some(0));

    let recs = e.monitor.records();
    assert_eq!(recs.len(), 30_004, "every record once");
    assert_eq!(assert_all_present(&recs, 30_004), 0);
    let calls = e.monitor.batch_calls();
    assert!(calls.len() >= 3, "{} calls", calls.len());
    for c in &calls {
        assert_eq!(c.status, 204);
        assert!(
            c.uncompressed <= 1_000_000,
            "a body of {} bytes",
            c.uncompressed
        );
    }
    assert_eq!(e.login.requests().len(), 1, "one token for every request");
    assert_eq!(
        e.login.requests()[0].scope,
        "https://monitor.azure.com/.default"
    );
    let big_one = recs.iter().find(|r| r["id"] == 30_001).unwrap();
    assert_eq!(
        big_one["blob"].as_str().unwrap().len(),
        64 << 10,
        "cut to 64 KiB"
    );
    assert_eq!(big_one["TimeGenerated"], "2026-03-04T05:06:07.000Z");
    assert_eq!(big_one["AccountId"], "acct9");
    assert!(big_one.get("account_id").is_none());
    let plain = recs.iter().find(|r| r["id"] == 5).unwrap();
    assert_eq!(plain["TimeGenerated"], "2026-11-23T10:00:00.000Z");
    // A record without the time field gets the time it was read.
    let plain = recs.iter().find(|r| r["id"] == 30_003).unwrap();
    let t = chrono::DateTime::parse_from_rfc3339(plain["TimeGenerated"].as_str().unwrap()).unwrap();
    assert!((chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds() < 120);
}

#[test]
fn throttling_waits_for_retry_after_in_seconds_and_as_a_date() {
    let e = env();
    e.monitor.script(Resp {
        status: 429,
        headers: vec![("Retry-After".into(), "1".into())],
        body: b"{\"error\":{\"code\":\"TooManyRequests\"}}".to_vec(),
    });
    // An HTTP date 3 s after the answer is sent.
    e.monitor.script(Resp {
        status: 503,
        headers: vec![("Retry-After".into(), "+3s".into())],
        body: vec![],
    });
    let lf = Lf::new(&config(&e, DCR, ""));
    write_lines(&lf.path("logs/a.log"), 0, 100);
    lf.run_once();
    assert_eq!(e.monitor.records().len(), 100);
    let calls = e.monitor.calls();
    assert_eq!(
        calls.iter().map(|c| c.status).collect::<Vec<_>>(),
        [429, 503, 204]
    );
    assert!(
        calls[1].at - calls[0].at >= Duration::from_millis(950),
        "waited 1 s"
    );
    // The date has a resolution of a second: 3 s ahead means at least 2 s of wait.
    assert!(
        calls[2].at - calls[1].at >= Duration::from_millis(1900),
        "waited for the date"
    );
    let ids: Vec<_> = calls.iter().map(|c| c.request_id.clone()).collect();
    assert!(
        ids.iter().all(|i| i == &ids[0]),
        "one request id per batch: {ids:?}"
    );
}

#[test]
fn a_token_the_service_refuses_is_renewed_and_the_batch_sent_again() {
    let e = env();
    // A long backoff: only the renewal's immediate resend can come within seconds.
    let lf = Lf::new(&config(&e, DCR, "batch = { max_age = \"100ms\" }").replace(
        "initial_backoff = \"50ms\", max_backoff = \"200ms\"",
        "initial_backoff = \"60s\", max_backoff = \"60s\"",
    ));
    let run = lf.spawn();
    write_lines(&lf.path("logs/a.log"), 0, 10);
    wait_until(Duration::from_secs(30), "the first batch", || {
        e.monitor.records().len() == 10
    });
    // From now the service counts tokens older than a second as expired: the cached one is
    // refused. (Set only now: on a loaded machine the first request can come more than a
    // second after its token was fetched, and its renewal would use up the once-a-minute one.)
    e.monitor.state.lock().unwrap().max_token_age = Some(Duration::from_secs(1));
    let first = std::time::Instant::now();
    // Time is the condition: the token must be older than the service allows.
    wait_until(Duration::from_secs(5), "the token to age", || {
        first.elapsed() > Duration::from_millis(2100)
    });
    write_lines(&lf.path("logs/a.log"), 10, 10);
    wait_until(Duration::from_secs(30), "the second batch", || {
        e.monitor.records().len() == 20
    });
    assert_eq!(run.term(Duration::from_secs(20)).code(), Some(0));
    let calls = e.monitor.batch_calls();
    let statuses: Vec<u16> = calls.iter().map(|c| c.status).collect();
    assert_eq!(statuses, [204, 401, 204]);
    assert!(
        calls[2].at - calls[1].at < Duration::from_secs(5),
        "sent again at once"
    );
    assert_ne!(calls[1].token, calls[2].token, "with a new token");
    assert_eq!(e.login.requests().len(), 2);
}

#[test]
fn oversize_bodies_are_split_on_413() {
    let e = env();
    e.monitor.state.lock().unwrap().max_body = 100_000;
    let lf = Lf::new(&config(&e, DCR, ""));
    write_lines(&lf.path("logs/a.log"), 0, 5_000);
    lf.run_once();
    let recs = e.monitor.records();
    assert_eq!(recs.len(), 5_000, "no record lost or sent twice");
    assert_eq!(assert_all_present(&recs, 5_000), 0);
    let calls = e.monitor.calls();
    assert!(calls.iter().any(|c| c.status == 413));
    assert!(calls
        .iter()
        .filter(|c| c.status == 204)
        .all(|c| c.uncompressed <= 100_000));
}

#[test]
fn forbidden_and_bad_request_go_to_dead_letter_with_the_reason() {
    let e = env();
    let lf = Lf::new(&config(&e, "dcr-00000000000000000000000000000bad", ""));
    write_lines(&lf.path("logs/a.log"), 0, 5);
    lf.run_once_incomplete();
    let note = lf.dead_letter_note("monitor");
    let r = note["reason"].as_str().unwrap();
    assert!(
        r.contains("403")
            && r.contains("Monitoring Metrics Publisher")
            && r.contains("dcr-00000000000000000000000000000bad")
            && r.contains("does not have access to ingest data"),
        "{r}"
    );

    let e = env();
    e.monitor.script(Resp::json(
        400,
        r#"{"error":{"code":"InvalidPayload","message":"Column 'Level' is not of type int"}}"#
            .into(),
    ));
    let lf = Lf::new(&config(&e, DCR, ""));
    write_lines(&lf.path("logs/a.log"), 0, 5);
    lf.run_once_incomplete();
    let note = lf.dead_letter_note("monitor");
    let r = note["reason"].as_str().unwrap();
    assert!(
        r.contains("400") && r.contains("Column 'Level' is not of type int") && r.contains(STREAM),
        "{r}"
    );
    assert_eq!(e.monitor.calls().len(), 1, "not retried");
}

#[test]
fn validate_check_sinks_names_the_rule_and_the_role() {
    let e = env();
    for (dcr, code, expect) in [
        (DCR, 0, "ok"),
        (
            "dcr-0000000000000000000000000000dead",
            1,
            "Monitoring Metrics Publisher",
        ),
    ] {
        let lf = Lf::new(&config(&e, dcr, ""));
        let (status, stdout) = lf.check_sinks(&[]);
        assert_eq!(status, Some(code), "{stdout}");
        assert!(stdout.contains(expect), "{stdout}");
        assert!(!stdout.contains(CLIENT_SECRET));
    }
    assert!(e.monitor.records().is_empty(), "the check sends no record");
}

#[test]
fn server_name_verifies_a_certificate_for_another_name_than_the_address() {
    let ca = TestCa::new();
    let login = TokenServer::start(&ca);
    // The ingestion endpoint's certificate names only its DNS name; we reach it by address.
    let monitor = Monitor::start_named(&ca, &["ingest.example.test"]);
    let e = Env { ca, login, monitor };
    let lf = Lf::new(&config(&e, DCR, "").replace(
        "tls = { ca_file = ",
        "tls = { server_name = \"ingest.example.test\", ca_file = ",
    ));
    write_lines(&lf.path("logs/a.log"), 0, 100);
    lf.run_once();
    assert_eq!(assert_all_present(&e.monitor.records(), 100), 0);

    let lf = Lf::new(&config(&e, DCR, ""));
    let (status, stdout) = lf.check_sinks(&[]);
    assert_eq!(status, Some(1), "{stdout}");
}
