//! The `http` sink against a receiver written for the tests (tests/common/receiver.rs).

mod common;

use common::receiver::{Fault, Receiver};
use common::tls::TestCa;
use common::*;
use hmac::Mac;
use std::time::Duration;

const KEY: &str = "0123456789abcdef-signing-key";

fn config(url: &str, extra: &str) -> String {
    format!(
        r#"[sources.jobs]
include = ["{{dir}}/logs/*.log"]
sinks = ["endpoint"]
[sinks.endpoint]
type = "http"
url = "{url}"
# The receiver is a local plaintext one.
allow_plaintext_credentials = true
retry = {{ initial_backoff = "50ms", max_backoff = "200ms" }}
{extra}
"#
    )
}

/// The verification docs/sinks/http.md documents: `t=<unix>,v1=<hex>`; HMAC-SHA256 with the shared
/// key over `<t>.` followed by the raw body as received; reject if `t` is over 5 minutes off.
fn verify(header: &str, body: &[u8], key: &[u8]) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = hex::decode(v).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    if (chrono::Utc::now().timestamp() - t).abs() > 300 {
        return false;
    }
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    mac.verify_slice(&v1).is_ok()
}

#[test]
fn ndjson_gzip_with_basic_auth_headers_signature_and_idempotency_keys() {
    let ca = TestCa::new();
    let rx = Receiver::start(Some(ca.server("rx", &["127.0.0.1"]).config));
    rx.state.lock().unwrap().authorization = Some(format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            "ingest:pa55word"
        )
    ));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("password"), "pa55word\n").unwrap();
    std::fs::write(dir.path().join("key"), format!("{KEY}\n")).unwrap();
    let lf = Lf::new(&config(
        &rx.url("/ingest"),
        &format!(
            "key = \"{{source}}/{{account_id}}/{{batch_id}}\"\nheaders = {{ X-Tenant = \"${{TENANT_NAME}}\" }}\nauth = {{ basic = {{ user = \"ingest\", password_file = \"{}\" }} }}\nsignature = {{ key_file = \"{}\" }}\ntls = {{ ca_file = \"{}\" }}",
            dir.path().join("password").display(),
            dir.path().join("key").display(),
            ca.ca_pem.display()
        ),
    ));
    write_lines(&lf.path("logs/a.log"), 0, 3000);
    let out = lf.run_once_env(&[("TENANT_NAME", "acme-prod")]);
    let recs = rx.records();
    assert_eq!(recs.len(), 3000);
    assert_eq!(assert_all_present(&recs, 3000), 0);
    let got = rx.got();
    assert_eq!(got.len(), 3, "a request per account partition");
    let mut keys = Vec::new();
    for g in &got {
        assert_eq!(g.status, 202);
        assert_eq!(g.method, "POST");
        assert_eq!(g.header("content-encoding"), Some("gzip"));
        assert_eq!(g.header("content-type"), Some("application/x-ndjson"));
        assert_eq!(g.header("x-tenant"), Some("acme-prod"));
        let sig = g.header("x-logferry-signature").unwrap();
        assert!(verify(sig, &g.body, KEY.as_bytes()), "{sig}");
        assert!(
            !verify(sig, &g.body[1..], KEY.as_bytes()),
            "a changed body fails"
        );
        keys.push(g.header("idempotency-key").unwrap().to_string());
    }
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 3, "one key per batch");
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(!logs.contains("pa55word") && !logs.contains(KEY));
}

#[test]
fn json_array_in_an_envelope_with_zstd_put_and_a_rotated_bearer_token() {
    let rx = Receiver::start(None);
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "token-one\n").unwrap();
    let lf = Lf::new(&config(
        &rx.url("/v1/logs"),
        &format!(
            "method = \"PUT\"\nencoding = \"json_array\"\nenvelope = '{{\"source\":\"platform\",\"logEntries\":{{{{records}}}}}}'\ncompression = \"zstd\"\nbatch = {{ max_age = \"200ms\" }}\nauth = {{ bearer = {{ token_file = \"{}\" }} }}",
            token.display()
        ),
    ));
    let run = lf.spawn();
    write_lines(&lf.path("logs/a.log"), 0, 100);
    wait_until(Duration::from_secs(30), "100 records", || {
        rx.records().len() == 100
    });
    std::fs::write(&token, "token-two\n").unwrap();
    write_lines(&lf.path("logs/a.log"), 100, 100);
    wait_until(Duration::from_secs(30), "200 records", || {
        rx.records().len() == 200
    });
    assert_eq!(run.term(Duration::from_secs(20)).code(), Some(0));
    assert_eq!(assert_all_present(&rx.records(), 200), 0);
    let got: Vec<_> = rx.got().into_iter().filter(|g| g.method == "PUT").collect();
    assert_eq!(got[0].header("authorization"), Some("Bearer token-one"));
    assert_eq!(
        got.last().unwrap().header("authorization"),
        Some("Bearer token-two")
    );
    for g in &got {
        assert_eq!(g.header("content-encoding"), Some("zstd"));
        assert_eq!(g.header("content-type"), Some("application/json"));
        let raw = zstd::stream::decode_all(&g.body[..]).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(v["source"], "platform");
        assert!(v["logEntries"].is_array());
    }
}

#[test]
fn retries_follow_retry_on_and_wait_for_retry_after_in_both_forms() {
    let rx = Receiver::start(None);
    for _ in 0..2 {
        rx.script(Fault::Status {
            status: 503,
            headers: vec![],
            body: "overloaded".into(),
        });
    }
    rx.script(Fault::Status {
        status: 429,
        headers: vec![("Retry-After".into(), "1".into())],
        body: String::new(),
    });
    // An HTTP date 3 s after the answer is sent.
    rx.script(Fault::Status {
        status: 429,
        headers: vec![("Retry-After".into(), "+3s".into())],
        body: String::new(),
    });
    let lf = Lf::new(&config(&rx.url("/in"), ""));
    write_lines(&lf.path("logs/a.log"), 0, 50);
    lf.run_once();
    let got = rx.got();
    let statuses: Vec<u16> = got.iter().map(|g| g.status).collect();
    assert_eq!(statuses, [503, 503, 429, 429, 202]);
    assert!(
        got[3].at - got[2].at >= Duration::from_millis(950),
        "Retry-After: 1"
    );
    // The date has a resolution of a second: 3 s ahead means at least 2 s of wait.
    assert!(
        got[4].at - got[3].at >= Duration::from_millis(1900),
        "Retry-After as a date"
    );
    let key = got[0].header("idempotency-key").unwrap();
    assert!(got.iter().all(|g| g.header("idempotency-key") == Some(key)));
    assert_eq!(rx.records().len(), 50);
}

#[test]
fn timeouts_and_resets_are_retried_and_other_statuses_are_not() {
    let rx = Receiver::start(None);
    rx.script(Fault::Slow(Duration::from_secs(3)));
    rx.script(Fault::ResetMidBody);
    let lf = Lf::new(&config(&rx.url("/in"), "timeout = \"1s\""));
    write_lines(&lf.path("logs/a.log"), 0, 20_000);
    lf.run_once();
    let got = rx.got();
    assert_eq!(got.len(), 3, "slow, reset, accepted");
    assert_eq!(got[2].status, 202);
    assert!(got
        .iter()
        .all(|g| g.header("idempotency-key") == got[0].header("idempotency-key")));
    assert_eq!(assert_all_present(&rx.records(), 20_000), 0);
    assert_eq!(rx.records().len(), 20_000);

    // 401 is not in retry_on: dead-lettered with the status and the body.
    let rx = Receiver::start(None);
    rx.state.lock().unwrap().authorization = Some("Bearer right".into());
    let lf = Lf::new(&config(
        &rx.url("/in"),
        "auth = { bearer = { token = \"wrong\" } }",
    ));
    write_lines(&lf.path("logs/a.log"), 0, 5);
    lf.run_once_incomplete();
    assert_eq!(rx.got().len(), 1, "not retried");
    let note = lf.dead_letter_note("endpoint");
    let r = note["reason"].as_str().unwrap();
    assert!(
        r.contains("HTTP 401") && r.contains("bad credentials for the logs endpoint"),
        "{r}"
    );
}

#[test]
fn a_413_splits_the_batch_until_the_halves_fit() {
    let rx = Receiver::start(None);
    rx.state.lock().unwrap().max_body = Some(20_000);
    let lf = Lf::new(&config(&rx.url("/in"), "compression = \"none\""));
    write_lines(&lf.path("logs/a.log"), 0, 2_000);
    lf.run_once();
    let recs = rx.records();
    assert_eq!(recs.len(), 2_000, "every record once");
    assert_eq!(assert_all_present(&recs, 2_000), 0);
    let got = rx.got();
    assert!(got.iter().any(|g| g.status == 413));
    let accepted: Vec<_> = got.iter().filter(|g| g.status == 202).collect();
    assert!(accepted.iter().all(|g| g.body.len() <= 20_000));
    // Halves carry keys derived from their parent's: <id>-a, <id>-a-b, ...
    assert!(accepted
        .iter()
        .all(|g| g.header("idempotency-key").unwrap().contains("-a")
            || g.header("idempotency-key").unwrap().contains("-b")));
}

#[test]
fn mutual_tls_with_a_client_certificate_and_a_server_name() {
    let ca = TestCa::new();
    // The server's certificate names only logs.example.test; it listens on 127.0.0.1.
    let rx = Receiver::start(Some(ca.server_mtls("rx", &["logs.example.test"]).config));
    let (cert, key) = ca.client("logferry");
    let tls = |cert: &std::path::Path, key: &std::path::Path, name: bool| {
        format!(
            "tls = {{ ca_file = \"{}\", cert_file = \"{}\", key_file = \"{}\"{} }}",
            ca.ca_pem.display(),
            cert.display(),
            key.display(),
            if name {
                ", server_name = \"logs.example.test\""
            } else {
                ""
            }
        )
    };
    let check = |lf: &Lf| lf.check_sinks(&[]);

    let lf = Lf::new(&config(&rx.url("/in"), &tls(&cert, &key, true)));
    assert_eq!(check(&lf).0, Some(0), "{}", check(&lf).1);
    write_lines(&lf.path("logs/a.log"), 0, 500);
    lf.run_once();
    assert_eq!(assert_all_present(&rx.records(), 500), 0);

    // Without server_name the certificate does not name 127.0.0.1.
    let lf = Lf::new(&config(&rx.url("/in"), &tls(&cert, &key, false)));
    let (code, out) = check(&lf);
    assert_eq!(code, Some(1));
    assert!(out.contains("does not name this host"), "{out}");

    // A client certificate from another CA is refused by the server.
    let other = TestCa::new();
    let (bad_cert, bad_key) = other.client("intruder");
    let lf = Lf::new(&config(&rx.url("/in"), &tls(&bad_cert, &bad_key, true)));
    let (code, out) = check(&lf);
    assert_eq!(code, Some(1));
    assert!(out.contains("client certificate"), "{out}");
}

#[test]
fn the_idempotency_key_survives_a_restart() {
    let rx = Receiver::start(None);
    rx.script(Fault::Status {
        status: 503,
        headers: vec![("Retry-After".into(), "3600".into())],
        body: String::new(),
    });
    let lf = Lf::new(&config(
        &rx.url("/in"),
        "check = \"none\"\nbatch = { max_age = \"200ms\" }",
    ));
    let run = lf.spawn();
    write_lines(&lf.path("logs/a.log"), 0, 30);
    wait_until(Duration::from_secs(30), "the first attempt", || {
        rx.got().len() == 1
    });
    // Stopped while waiting an hour: the batch stays spooled, and the exit says the deadline
    // cut the flush short.
    assert_eq!(run.term(Duration::from_secs(40)).code(), Some(1));
    let run = lf.spawn();
    wait_until(Duration::from_secs(30), "the batch again", || {
        rx.records().len() == 30
    });
    assert_eq!(run.term(Duration::from_secs(20)).code(), Some(0));
    let got = rx.got();
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[0].header("idempotency-key"),
        got[1].header("idempotency-key")
    );
}

/// A body's JSON, decompressed by its Content-Encoding.
fn body_json(g: &common::receiver::Got) -> serde_json::Value {
    let mut raw = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::MultiGzDecoder::new(&g.body[..]),
        &mut raw,
    )
    .unwrap();
    serde_json::from_slice(&raw).unwrap()
}

#[test]
fn envelope_placeholders_are_fixed_at_seal_and_identical_on_every_retry() {
    let rx = Receiver::start(None);
    // The first attempt fails; the retry must send the same bytes.
    rx.script(Fault::Status {
        status: 503,
        headers: vec![],
        body: "busy".into(),
    });
    let lf = Lf::new(&config(
        &rx.url("/loki"),
        "envelope = '{\"batch\":\"{{batch_id}}\",\"count\":{{record_count}},\"sealed\":\"{{sealed_at}}\",\"lines\":{{records_str}}}'\nbatch = { max_age = \"200ms\" }",
    ));
    write_lines(&lf.path("logs/a.log"), 0, 40);
    lf.run_once();
    let got = rx.got();
    assert!(got.len() >= 2, "{} requests", got.len());
    assert_eq!(got[0].status, 503);
    assert_eq!(got[0].body, got[1].body, "the retry sent other bytes");
    let mut seen = 0;
    for g in got.iter().filter(|g| g.status < 300) {
        let v = body_json(g);
        let id = g.header("idempotency-key").unwrap();
        assert_eq!(v["batch"], id, "{{batch_id}} is the batch's id");
        let lines: Vec<serde_json::Value> = v["lines"]
            .as_str()
            .unwrap()
            .split('\n')
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(v["count"], lines.len(), "{{record_count}}");
        let sealed = chrono::DateTime::parse_from_rfc3339(v["sealed"].as_str().unwrap()).unwrap();
        assert!((chrono::Utc::now() - sealed.to_utc()).num_seconds() < 60);
        seen += lines.len();
    }
    assert_eq!(seen, 40);
}

#[test]
fn halves_of_a_split_batch_name_themselves_in_the_envelope() {
    let rx = Receiver::start(None);
    rx.script(Fault::Status {
        status: 413,
        headers: vec![],
        body: String::new(),
    });
    let lf = Lf::new(&config(
        &rx.url("/in"),
        "envelope = '{\"batch\":\"{{batch_id}}\",\"count\":{{record_count}},\"logs\":{{records}}}'\nbatch = { max_age = \"200ms\" }",
    ));
    write_lines(&lf.path("logs/a.log"), 0, 10);
    lf.run_once();
    let ok: Vec<_> = rx.got().into_iter().filter(|g| g.status < 300).collect();
    assert_eq!(ok.len(), 2, "two halves");
    let mut total = 0;
    for g in &ok {
        let v = body_json(g);
        let id = v["batch"].as_str().unwrap();
        assert!(id.ends_with("-a") || id.ends_with("-b"), "{id}");
        assert_eq!(g.header("idempotency-key"), Some(id));
        assert_eq!(v["count"], v["logs"].as_array().unwrap().len());
        total += v["logs"].as_array().unwrap().len();
    }
    assert_eq!(total, 10);
}
