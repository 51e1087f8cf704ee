//! The `otlp` sink against a receiver that reads every request with the official OpenTelemetry
//! Python classes (protobuf, and OTLP/JSON through `json_format`): the mapping of the
//! platform's records, the specification's answers, splitting, and masking on the wire.

mod common;

use common::otlp::OtlpReceiver;
use common::*;
use serde_json::json;
use std::time::Duration;

const PROFILE: &str = r#"
[masking.pii]
detectors = ["credit_card", "email"]
[[masking.pii.rules]]
name = "masked_steps"
each = "lines[*]"
when = { path = "masked", equals = true }
paths = ["input", "output"]
action = "replace"
value = { data = "masked" }
"#;

fn job(i: u64, status: &str, secret: &str) -> String {
    format!(
        r#"{{"ts":"2026-11-23T08:{:02}:{:02}.250Z","type":"job","job_id":"job-{i}","account_id":"acct-{}","flow":"invoice-export","status":"{status}","duration_ms":{},"ratio":0.5,"retried":false,"lines":[{{"step":0,"masked":true,"input":{{"card":"{secret}"}}}},{{"step":1,"masked":false,"input":{{"note":"mail {secret}"}}}}],"context":{{"user_id":"u{i}","region":"eu-west-1"}}}}"#,
        i / 60 % 60,
        i % 60,
        i % 3,
        1000 + i
    )
}

fn audit(i: u64, outcome: &str) -> String {
    format!(
        r#"{{"ts":"2026-11-23T09:00:{:02}Z","type":"audit","event_id":"ev-{i}","event":"secret.read","actor":"u{i}","account_id":"acct-{}","outcome":"{outcome}"}}"#,
        i % 60,
        i % 3
    )
}

fn sink(endpoint: &str, extra: &str) -> String {
    format!(
        r#"[sources.jobs]
include = ["{{dir}}/logs/*.log"]
sinks = ["otel"]
timestamp_field = "ts"
masking = "pii"
[sinks.otel]
type = "otlp"
endpoint = "{endpoint}"
retry = {{ initial_backoff = "50ms", max_backoff = "200ms" }}
{extra}
{PROFILE}"#
    )
}

fn nanos(ts: &str) -> u64 {
    chrono::DateTime::parse_from_rfc3339(ts)
        .unwrap()
        .timestamp_nanos_opt()
        .unwrap() as u64
}

#[test]
fn records_arrive_mapped_to_the_logs_data_model_in_protobuf_and_gzip() {
    let rx = OtlpReceiver::start(json!([]), None);
    let lf = Lf::new(&sink(
        &rx.endpoint(),
        r#"attributes = ["job_id", "context.user_id", "duration_ms", "retried"]
resource = { "deployment.environment" = "prod" }
resource_fields = ["account_id"]
event_name = "event"
batch = { max_records = 40 }"#,
    ));
    let cards = ["4111111111111111", "5500005555555559", "ops@example.com"];
    let mut text = String::new();
    let mut want = Vec::new();
    for i in 0..120u64 {
        let (line, sev) = match i % 4 {
            0 => (job(i, "failed", cards[(i % 3) as usize]), (17, "ERROR")),
            1 => (job(i, "succeeded", cards[(i % 3) as usize]), (9, "INFO")),
            2 => (audit(i, "denied"), (13, "WARN")),
            _ => (audit(i, "success"), (9, "INFO")),
        };
        text.push_str(&line);
        text.push('\n');
        want.push((line, sev));
    }
    std::fs::write(lf.path("logs/app.log"), &text).unwrap();
    let before = chrono::Utc::now().timestamp_nanos_opt().unwrap() as u64;
    succeeded(&lf.run_once());

    let reqs = rx.requests();
    assert!(reqs.len() >= 3, "{reqs:?}");
    for r in &reqs {
        assert_eq!(r["path"], "/v1/logs");
        assert_eq!(r["content_type"], "application/x-protobuf");
        assert_eq!(r["content_encoding"], "gzip", "gzip on the wire");
        assert!(r["decode_error"].is_null(), "{r}");
    }
    let got = rx.records();
    assert_eq!(got.len(), 120);
    let raw = std::fs::read_to_string(rx.dir.path().join("records.jsonl")).unwrap();
    for c in cards {
        assert!(!raw.contains(c), "a masked value reached the wire: {c}");
    }
    for (line, (num, text)) in &want {
        let rec: serde_json::Value = serde_json::from_str(line).unwrap();
        let id = rec.get("job_id").or(rec.get("event_id")).unwrap();
        let g = got
            .iter()
            .find(|g| g["body"]["job_id"] == *id || g["body"]["event_id"] == *id)
            .unwrap_or_else(|| panic!("{id} did not arrive"));
        assert_eq!(
            g["time"].as_u64().unwrap(),
            nanos(rec["ts"].as_str().unwrap())
        );
        let observed = g["observed"].as_u64().unwrap();
        assert!(
            observed >= before,
            "observed is when logferry read the line"
        );
        assert_eq!(
            (
                g["severity_number"].as_i64().unwrap(),
                g["severity_text"].as_str().unwrap()
            ),
            (*num, *text)
        );
        assert_eq!(g["body_kind"], "kvlist_value");
        let body = &g["body"];
        assert_eq!(body["account_id"], rec["account_id"]);
        assert_eq!(
            g["resource"],
            json!({"deployment.environment": "prod", "service.name": "jobs",
                   "host.name": g["resource"]["host.name"], "account_id": rec["account_id"]})
        );
        assert!(!g["resource"]["host.name"].as_str().unwrap().is_empty());
        assert_eq!(g["scope"]["name"], "logferry");
        if rec["type"] == "job" {
            // Types kept: integers, doubles, booleans, arrays and maps.
            assert_eq!(body["duration_ms"], rec["duration_ms"]);
            assert_eq!(body["ratio"], json!(0.5));
            assert_eq!(body["retried"], json!(false));
            assert_eq!(body["lines"][0]["input"], json!({"data": "masked"}));
            assert!(body["lines"][1]["input"]["note"]
                .as_str()
                .unwrap()
                .starts_with("mail [REDACTED"));
            assert_eq!(
                g["attributes"],
                json!({"job_id": rec["job_id"], "context.user_id": rec["context"]["user_id"],
                       "duration_ms": rec["duration_ms"], "retried": false})
            );
            assert_eq!(g["attribute_kinds"]["duration_ms"], "int_value");
            assert_eq!(g["attribute_kinds"]["retried"], "bool_value");
            assert_eq!(g["event_name"], "");
        } else {
            assert_eq!(g["event_name"], "secret.read");
            assert_eq!(g["attributes"], json!({}));
            assert_eq!(body, &rec, "an audit record has nothing to mask");
        }
    }
    // One resource per account in a request.
    let accounts: Vec<u64> = reqs
        .iter()
        .map(|r| r["resources"].as_u64().unwrap())
        .collect();
    assert!(accounts.iter().all(|n| *n <= 3), "{accounts:?}");
}

#[test]
fn otlp_json_with_a_string_body_a_path_and_no_compression() {
    let rx = OtlpReceiver::start(json!([]), None);
    let lf = Lf::new(&sink(
        &rx.endpoint(),
        r#"protocol = "json"
body = "string"
compression = "none"
logs_path = "/otlp/v1/logs"
severity = { field = "status", map = { succeeded = "debug" }, default = "warn" }
headers = { "X-Api-Key" = "api-key-0123456789" }
auth = { bearer = { token = "otlp-token-0123456789" } }
allow_plaintext_credentials = true"#,
    ));
    let lines = [
        job(1, "succeeded", "x"),
        job(2, "failed", "x"),
        audit(3, "success"),
    ];
    std::fs::write(lf.path("logs/app.log"), lines.join("\n") + "\n").unwrap();
    succeeded(&lf.run_once());
    let reqs = rx.requests();
    assert!(!reqs.is_empty());
    for r in &reqs {
        assert_eq!(r["path"], "/otlp/v1/logs");
        assert_eq!(r["content_type"], "application/json");
        assert_eq!(r["content_encoding"], "");
        assert_eq!(r["api_key"], "api-key-0123456789");
        assert_eq!(r["authorization"], "Bearer otlp-token-0123456789");
        assert!(r["decode_error"].is_null(), "json_format read it: {r}");
    }
    let got = rx.records();
    assert_eq!(got.len(), 3);
    let sev: Vec<(&str, &str)> = got
        .iter()
        .map(|g| {
            (
                g["body"].as_str().unwrap(),
                g["severity_text"].as_str().unwrap(),
            )
        })
        .map(|(b, s)| {
            (
                if b.contains("job-1") {
                    "1"
                } else if b.contains("job-2") {
                    "2"
                } else {
                    "3"
                },
                s,
            )
        })
        .collect();
    assert!(
        sev.contains(&("1", "DEBUG"))
            && sev.contains(&("2", "ERROR"))
            && sev.contains(&("3", "WARN")),
        "{sev:?}"
    );
    for g in &got {
        assert_eq!(g["body_kind"], "string_value");
        let body: serde_json::Value = serde_json::from_str(g["body"].as_str().unwrap()).unwrap();
        assert!(body["ts"].is_string(), "the record's text");
    }
}

#[test]
fn answers_follow_the_specification() {
    // Four batches of one record, one at a time: 429 with Retry-After, then 503 (both
    // retried), then a partial success (counted, not retried); the next batch is refused
    // with 400 (dead-lettered with the server's message); the others are accepted.
    let rx = OtlpReceiver::start(
        json!([
            {"status": 429, "headers": {"Retry-After": "1"}},
            {"status": 503},
            {"status": 200, "rejected": 1, "message": "severity out of range"},
            {"status": 400, "message": "log record body too deep"},
        ]),
        None,
    );
    let lf = Lf::new(&sink(
        &rx.endpoint(),
        "concurrency = 1\nbatch = { max_records = 1, max_age = \"50ms\" }",
    ));
    let lines: Vec<String> = (0..4).map(|i| audit(i, "success")).collect();
    std::fs::write(lf.path("logs/app.log"), lines.join("\n") + "\n").unwrap();
    let run = lf.spawn();
    // Requests with records (the start-up check posts an empty one).
    let statuses = || -> Vec<u64> {
        rx.requests()
            .iter()
            .filter(|r| r["records"].as_u64() > Some(0))
            .map(|r| r["status"].as_u64().unwrap())
            .collect()
    };
    wait_until(Duration::from_secs(30), "four batches answered", || {
        let s = statuses();
        s.iter().filter(|s| **s == 200).count() >= 3 && s.contains(&400)
    });
    wait_until(
        Duration::from_secs(10),
        "the partial success counted",
        || run.metric("logferry_records_rejected_total", "sink=\"otel\"") == 1.0,
    );
    let got = statuses();
    assert_eq!(&got[..4], &[429, 503, 200, 400], "{got:?}");
    assert!(run.metric("logferry_throttled_total", "sink=\"otel\"") >= 1.0);
    assert!(run.metric("logferry_retry_after_waits_total", "sink=\"otel\"") >= 1.0);
    assert_eq!(
        run.metric("logferry_dead_letter_batches_total", "sink=\"otel\""),
        1.0
    );
    let logs = run.logs();
    assert!(
        logs.contains("severity out of range"),
        "the server's message is logged"
    );
    run.term(Duration::from_secs(20));
    let got = statuses();
    assert_eq!(got.len(), 6, "nothing sent again: {got:?}");
    let note = lf.dead_letter_note("otel");
    assert!(
        note.to_string()
            .contains("HTTP 400: log record body too deep"),
        "{note}"
    );
}

#[test]
fn a_success_whose_body_stalls_is_delivered_once() {
    // The status is in: the batch is delivered, even if the body (its partial success) never
    // comes within the attempt's timeout. Sending it again would duplicate every record.
    let rx = OtlpReceiver::start(json!([{"status": 200, "stall": 6}]), None);
    let lf = Lf::new(&sink(&rx.endpoint(), "concurrency = 1\ntimeout = \"2s\""));
    std::fs::write(lf.path("logs/app.log"), audit(1, "success") + "\n").unwrap();
    succeeded(&lf.run_once());
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 1, "sent once: {reqs:?}");
    // A refusal whose body stalls is still a refusal: dead-lettered, not retried as a timeout.
    let rx = OtlpReceiver::start(json!([{"status": 400, "stall": 6}]), None);
    let lf = Lf::new(&sink(&rx.endpoint(), "concurrency = 1\ntimeout = \"2s\""));
    std::fs::write(lf.path("logs/app.log"), audit(1, "success") + "\n").unwrap();
    lf.run_once_incomplete();
    assert_eq!(rx.requests().len(), 1);
    let note = lf.dead_letter_note("otel").to_string();
    assert!(note.contains("HTTP 400"), "{note}");
}

#[test]
fn refused_records_of_a_partial_success_are_in_the_summary() {
    let rx = OtlpReceiver::start(
        json!([{"status": 200, "rejected": 99, "message": "too old"}]),
        None,
    );
    let lf = Lf::new(&sink(&rx.endpoint(), ""));
    let lines: Vec<String> = (0..2).map(|i| audit(i, "success")).collect();
    std::fs::write(lf.path("logs/app.log"), lines.join("\n") + "\n").unwrap();
    let out = lf.run_once();
    succeeded(&out);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    // Never more than the batch held.
    assert!(
        text.contains("2 records refused by the destination"),
        "{text}"
    );
    assert!(text.contains("too old"), "{text}");
}

#[test]
fn a_429_with_retry_after_pauses_the_sink() {
    let rx = OtlpReceiver::start(
        json!([{"status": 429, "headers": {"Retry-After": "2"}}]),
        None,
    );
    let lf = Lf::new(&sink(&rx.endpoint(), "concurrency = 1"));
    std::fs::write(lf.path("logs/app.log"), audit(1, "success") + "\n").unwrap();
    let start = std::time::Instant::now();
    succeeded(&lf.run_once());
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "waited for Retry-After"
    );
    assert_eq!(rx.records().len(), 1);
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 2, "one refusal, one acceptance: {reqs:?}");
}

#[test]
fn a_413_and_a_request_over_max_request_bytes_split_until_they_fit() {
    // The receiver takes 20 KiB at most; max_request_bytes (64 KiB) lets logferry cut its own
    // batches at 64 KiB. Records of small negative numbers grow fourfold in protobuf, so the
    // batch cut by its records' size still makes requests over the limit: split before sent.
    let rx = OtlpReceiver::start(json!([]), Some(20 << 10));
    let lf = Lf::new(&sink(
        &rx.endpoint(),
        "max_request_bytes = \"64KiB\"\nbatch = { max_records = 5000 }",
    ));
    let mut text = String::new();
    for i in 0..400 {
        let neg = vec!["-1"; 100].join(",");
        text.push_str(&format!("{{\"event_id\":\"ev-{i}\",\"n\":[{neg}]}}\n"));
    }
    std::fs::write(lf.path("logs/app.log"), text).unwrap();
    let out = lf.run_once();
    succeeded(&out);
    let got = rx.bodies();
    assert_eq!(got.len(), 400, "every record, once");
    let mut ids: Vec<&str> = got
        .iter()
        .map(|b| b["event_id"].as_str().unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 400);
    assert_eq!(got[0]["n"][0], json!(-1));
    let reqs = rx.requests();
    assert!(
        reqs.iter().any(|r| r["status"] == 413),
        "the receiver refused a size"
    );
    for r in reqs.iter().filter(|r| r["status"] == 200) {
        assert!(r["decoded_bytes"].as_u64().unwrap() <= 20 << 10, "{r}");
    }
    for r in &reqs {
        assert!(
            r["decoded_bytes"].as_u64().unwrap() <= 64 << 10,
            "never over max_request_bytes: {r}"
        );
    }
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("over max_request_bytes"),
        "split before it was sent: {err}"
    );
}

fn validate(lf: &Lf) -> std::process::Output {
    std::process::Command::new(BIN)
        .args(["validate", "--config"])
        .arg(&lf.cfg)
        .output()
        .unwrap()
}

#[test]
fn validate_describes_the_sink_and_names_bad_options() {
    let lf = Lf::new(&sink(
        "https://collector.example:4318",
        r#"attributes = ["job_id"]
resource_fields = ["account_id"]
auth = { bearer = { token = "tok-1234567890abcdef" } }"#,
    ));
    let out = validate(&lf);
    succeeded(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("POST OTLP protobuf to https://collector.example:4318/v1/logs"),
        "{text}"
    );
    assert!(
        text.contains("one resource per value of account_id"),
        "{text}"
    );
    assert!(
        text.contains("batch 8MiB / 50000 records / 5s"),
        "a live sink's max_age: {text}"
    );
    assert!(!text.contains("tok-1234567890abcdef"));
    for (extra, at, words) in [
        (
            "protocol = \"grpc\"",
            "sinks.otel.protocol",
            "\"protobuf\" or \"json\"",
        ),
        (
            "compression = \"zstd\"",
            "sinks.otel.compression",
            "\"gzip\" or \"none\"",
        ),
        ("key = \"{batch_id}\"", "sinks.otel.key", "no key"),
        (
            "severity = { map = { failed = \"LOUD\" } }",
            "sinks.otel.severity.map.failed",
            "not a level",
        ),
        (
            "attributes = [\"a..b\"]",
            "sinks.otel.attributes[0]",
            "not a field path",
        ),
        ("encoding = \"parquet\"", "sinks.otel.encoding", "remove it"),
        (
            "max_request_bytes = \"1KiB\"",
            "sinks.otel.max_request_bytes",
            "between 64KiB",
        ),
    ] {
        let lf = Lf::new(&sink("https://collector.example:4318", extra));
        let out = validate(&lf);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra}");
        assert!(err.contains(at) && err.contains(words), "{extra}: {err}");
    }
    for (endpoint, extra, at, words) in [
        ("http://user:pa55-word@collector.example", "", "sinks.otel.endpoint", "user and password in the URL"),
        ("http:u:pa55-word@collector.example", "", "sinks.otel.endpoint", "must start with http://"),
        (" http://collector.example", "headers = { Authorization = \"Bearer pa55-word\" }", "sinks.otel.endpoint", "no spaces"),
        ("https://c.example", "logs_path = \"/v1/logs#x\"", "sinks.otel.logs_path", "a #"),
        ("https://c.example/V1/LOGS", "", "sinks.otel.endpoint", "ends in /v1/logs"),
        ("https://collector.example:99999", "", "sinks.otel.endpoint", "not a URL"),
        ("https://collector.example/v1/logs", "", "sinks.otel.endpoint", "ends in /v1/logs"),
        ("https://c.example", "headers = { \"X-A\" = \"v\\r\\nX-Injected: 1\" }", "sinks.otel.headers.X-A", "HTTP does not allow"),
        ("https://c.example", "headers = { \"X A\" = \"v\" }", "sinks.otel.headers.X A", "not a valid header name"),
        ("https://c.example", "headers = { Authorization = \"Bearer a\" }\nauth = { bearer = { token = \"tok-0123456789abcdef\" } }", "sinks.otel.headers.Authorization", "keep one"),
        ("http://c.example", "tls = { server_name = \"c\" }", "sinks.otel.tls", "https:// only"),
        ("https://c.example", "retry_on = [200]", "sinks.otel.retry_on", "success"),
        ("https://c.example", "logs_path = \"/v1/logs\\r\\n\"", "sinks.otel.logs_path", "control character"),
        ("http://c.example", "headers = { \"X-Honeycomb-Team\" = \"hcaik_01SECRETKEYVALUE\" }", "sinks.otel.endpoint", "in clear"),
    ] {
        let lf = Lf::new(&sink(endpoint, extra));
        let out = validate(&lf);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{endpoint} {extra}");
        assert!(err.contains(at) && err.contains(words), "{endpoint} {extra}: {err}");
        assert!(!err.contains("pa55-word") && !err.contains("SECRETKEY"), "{err}");
    }
    // A token over http:// is refused, naming the endpoint.
    let lf = Lf::new(&sink(
        "http://collector.example:4318",
        "auth = { bearer = { token = \"tok-1234567890abcdef\" } }",
    ));
    let out = validate(&lf);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("sinks.otel.endpoint") && err.contains("in clear"),
        "{err}"
    );
    assert!(!err.contains("tok-1234567890abcdef"), "{err}");
}
