//! Operations: metrics that move, readiness that follows sink trouble, SIGHUP reloads, JSON
//! logs without secrets, the health probe, and the deployment files.

mod common;

use common::receiver::{Fault, Receiver};
use common::*;
use std::time::Duration;

fn http_config(url: &str, extra: &str) -> String {
    format!(
        r#"log_format = "json"
[api]
unready_after = "1s"
[sources.jobs]
include = ["{{dir}}/logs/*.log"]
sinks = ["endpoint"]
[sinks.endpoint]
type = "http"
url = "{url}"
# The receiver is a local plaintext one.
allow_plaintext_credentials = true
check = "none"
batch = {{ max_age = "200ms" }}
retry = {{ initial_backoff = "100ms", max_backoff = "300ms" }}
{extra}
"#
    )
}

fn probe(lf: &Lf, path: &str) -> (Option<i32>, String) {
    let out = std::process::Command::new(BIN)
        .args([
            "health",
            "--url",
            &format!("http://127.0.0.1:{}{path}", lf.port),
        ])
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn metrics_move_with_records_failures_throttles_and_retries() {
    let rx = Receiver::start(None);
    rx.script(Fault::Status {
        status: 503,
        headers: vec![],
        body: "busy".into(),
    });
    rx.script(Fault::Status {
        status: 429,
        headers: vec![("Retry-After".into(), "1".into())],
        body: String::new(),
    });
    let lf = Lf::new(&http_config(
        &rx.url("/in"),
        "auth = { basic = { user = \"u\", password = \"hunter2-password\" } }\nsignature = { key_env = \"SIGNING_KEY\" }",
    ));
    let run = lf.spawn_env(&[("SIGNING_KEY", "signing-key-0123456789")]);
    assert_eq!(
        run.metric("logferry_records_read_total", "source=\"jobs\""),
        0.0
    );
    write_lines(&lf.path("logs/a.log"), 0, 200);
    wait_until(Duration::from_secs(30), "200 records delivered", || {
        rx.records().len() == 200
    });
    wait_until(Duration::from_secs(10), "the counters", || {
        run.metric("logferry_records_sent_total", "sink=\"endpoint\"") == 200.0
    });
    let m = |n: &str, l: &str| run.metric(n, l);
    assert_eq!(m("logferry_records_read_total", "source=\"jobs\""), 200.0);
    assert!(m("logferry_bytes_read_total", "source=\"jobs\"") > 10_000.0);
    assert_eq!(m("logferry_retries_total", "sink=\"endpoint\""), 2.0);
    assert_eq!(m("logferry_throttled_total", "sink=\"endpoint\""), 1.0);
    assert_eq!(
        m("logferry_retry_after_waits_total", "sink=\"endpoint\""),
        1.0
    );
    assert!(m("logferry_batches_sent_total", "sink=\"endpoint\"") >= 1.0);
    assert_eq!(m("logferry_files_open", "source=\"jobs\""), 1.0);
    assert_eq!(m("logferry_spool_batches", "sink=\"endpoint\""), 0.0);
    let file = lf.path("logs/a.log").display().to_string();
    assert_eq!(
        m("logferry_file_unread_bytes", &format!("path=\"{file}\"")),
        0.0,
        "a series per file, at zero once read"
    );
    assert!(m("logferry_seconds_since_last_delivery", "sink=\"endpoint\"") >= 0.0);
    assert!(
        m(
            "logferry_last_delivery_timestamp_seconds",
            "sink=\"endpoint\""
        ) > 1.7e9
    );
    // More input moves the counters again.
    write_lines(&lf.path("logs/a.log"), 200, 50);
    wait_until(Duration::from_secs(30), "250 sent", || {
        m("logferry_records_sent_total", "sink=\"endpoint\"") == 250.0
    });
    assert_eq!(run.term(Duration::from_secs(20)).code(), Some(0));

    // JSON logs: every line parses, names its sink or source where it is about one, and
    // carries no secret from the configuration.
    let logs = std::fs::read_to_string(run_log(&lf)).unwrap();
    let mut retry_lines = 0;
    for line in logs.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        if v["message"] == "delivery failed; retrying" {
            assert_eq!(v["sink"], "endpoint");
            retry_lines += 1;
        }
    }
    assert!(retry_lines >= 1, "{logs}");
    assert!(!logs.contains("hunter2-password") && !logs.contains("signing-key-0123456789"));
}

/// The newest log file `spawn` wrote.
fn run_log(lf: &Lf) -> std::path::PathBuf {
    let mut logs: Vec<_> = std::fs::read_dir(lf.dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("logferry-")
        })
        .collect();
    logs.sort_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap());
    logs.pop().unwrap()
}

#[test]
fn readyz_turns_not_ready_while_a_sink_keeps_failing_and_ready_after() {
    let rx = Receiver::start(None);
    for _ in 0..25 {
        rx.script(Fault::Status {
            status: 503,
            headers: vec![],
            body: "maintenance".into(),
        });
    }
    let lf = Lf::new(&http_config(&rx.url("/in"), ""));
    let run = lf.spawn();
    let (code, body) = probe(&lf, "/readyz");
    assert_eq!(code, Some(0), "{body}");
    write_lines(&lf.path("logs/a.log"), 0, 10);
    wait_until(Duration::from_secs(30), "not ready", || {
        probe(&lf, "/readyz").0 == Some(1)
    });
    let (_, body) = probe(&lf, "/readyz");
    let v: serde_json::Value = serde_json::from_str(body.trim_start_matches("503 ")).unwrap();
    assert_eq!(v["status"], "not_ready");
    assert_eq!(v["sinks"]["endpoint"]["state"], "retrying");
    assert!(v["sinks"]["endpoint"]["last_error"]
        .as_str()
        .unwrap()
        .contains("HTTP 503: maintenance"));
    assert!(v["sinks"]["endpoint"]["since"].is_string());
    // Liveness is not readiness.
    assert_eq!(probe(&lf, "/healthz").0, Some(0));
    wait_until(Duration::from_secs(60), "ready again", || {
        probe(&lf, "/readyz").0 == Some(0)
    });
    let (_, body) = probe(&lf, "/readyz");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["sinks"]["endpoint"]["state"], "ok");
    assert!(v["sinks"]["endpoint"]["last_delivery"].is_string());
    assert_eq!(rx.records().len(), 10);
    assert_eq!(run.term(Duration::from_secs(20)).code(), Some(0));
    // A stopped logferry fails the probe.
    assert_eq!(probe(&lf, "/healthz").0, Some(1));
}

#[test]
fn sighup_applies_a_valid_config_and_refuses_an_invalid_one() {
    let body = |key: &str, field: &str| {
        format!(
            r#"[sources.jobs]
include = ["{{dir}}/logs/*.log"]
sinks = ["archive"]
masking = "pii"
[masking.pii]
rules = [{{ paths = ["{field}"], action = "redact" }}]
[sinks.archive]
type = "directory"
path = "{{dir}}/archive"
key = "{key}/{{batch_id}}.ndjson.gz"
batch = {{ max_age = "200ms" }}
"#
        )
    };
    let lf = Lf::new(&body("v1", "account_id"));
    let run = lf.spawn();
    let log = lf.path("logs/a.log");
    write_lines(&log, 0, 100);
    wait_until(Duration::from_secs(30), "100 archived", || {
        lf.archive("archive/v1").len() == 100
    });
    // A new key and a new masking rule, as an operator would roll them out.
    let text = std::fs::read_to_string(&lf.cfg).unwrap();
    std::fs::write(
        &lf.cfg,
        text.replace("key = \"v1/", "key = \"v2/")
            .replace("paths = [\"account_id\"]", "paths = [\"msg\"]"),
    )
    .unwrap();
    run.signal("-HUP");
    wait_until(Duration::from_secs(30), "the reload", || {
        run.logs().contains("configuration reloaded")
    });
    write_lines(&log, 100, 100);
    wait_until(Duration::from_secs(30), "100 more under v2", || {
        lf.archive("archive/v2").len() == 100
    });
    // A broken file is refused; the running pipeline goes on with what it had.
    let good = std::fs::read_to_string(&lf.cfg).unwrap();
    std::fs::write(
        &lf.cfg,
        good.replace("[sinks.archive]", "[sinks.archive]\nbatchh = 1"),
    )
    .unwrap();
    run.signal("-HUP");
    wait_until(Duration::from_secs(30), "the refusal", || {
        run.logs().contains("configuration refused")
    });
    assert!(
        run.logs().contains("did you mean"),
        "the problems are logged"
    );
    assert!(run.ready());
    write_lines(&log, 200, 100);
    wait_until(Duration::from_secs(30), "100 more, still under v2", || {
        lf.archive("archive/v2").len() == 200
    });
    assert_eq!(run.term(Duration::from_secs(20)).code(), Some(0));

    let v1 = lf.final_archive("archive/v1");
    let v2 = lf.final_archive("archive/v2");
    let mut all = v1.clone();
    all.extend(v2.clone());
    assert_eq!(all.len(), 300, "nothing lost, nothing twice");
    assert_eq!(assert_all_present(&all, 300), 0);
    let masked = |v: &serde_json::Value| v.as_str().is_some_and(|s| s.starts_with("[REDACTED"));
    assert!(v1
        .iter()
        .all(|r| masked(&r["account_id"]) && !masked(&r["msg"])));
    assert!(v2
        .iter()
        .all(|r| masked(&r["msg"]) && !masked(&r["account_id"])));
}

#[test]
fn a_reload_keeps_spooled_batches_and_sends_each_once() {
    // The endpoint is down when the reload comes: the batch waiting for a retry stays in the
    // spool and the new pipeline sends it, once.
    let rx = Receiver::start(None);
    rx.script(Fault::Status {
        status: 503,
        headers: vec![("Retry-After".into(), "3600".into())],
        body: String::new(),
    });
    let lf = Lf::new(&http_config(&rx.url("/in"), ""));
    let run = lf.spawn();
    write_lines(&lf.path("logs/a.log"), 0, 40);
    wait_until(Duration::from_secs(30), "the first attempt", || {
        rx.got().len() == 1
    });
    let text = std::fs::read_to_string(&lf.cfg).unwrap();
    std::fs::write(&lf.cfg, text.replace("/in\"", "/v2/in\"")).unwrap();
    run.signal("-HUP");
    wait_until(Duration::from_secs(30), "the batch at the new URL", || {
        rx.records().len() == 40
    });
    assert_eq!(run.term(Duration::from_secs(20)).code(), Some(0));
    let got = rx.got();
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].target, "/v2/in");
    assert_eq!(
        got[0].header("idempotency-key"),
        got[1].header("idempotency-key")
    );
}

/// The venv's Python with PyYAML (scripts/test.sh installs it).
fn python() -> std::path::PathBuf {
    tool("python3")
}

#[test]
fn kubernetes_manifests_parse_and_carry_what_a_native_sidecar_needs() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
    let script = r#"
import sys, yaml, json
docs = []
for path in sys.argv[1:]:
    with open(path) as f:
        docs += [d for d in yaml.safe_load_all(f) if d]
print(json.dumps(docs))
"#;
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let out = std::process::Command::new(python())
        .arg("-c")
        .arg(script)
        .args(&files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let kind = |k: &str| {
        docs.iter()
            .find(|d| d["kind"] == k)
            .unwrap_or_else(|| panic!("no {k}"))
    };
    let cm = kind("ConfigMap");
    let deploy = kind("Deployment");
    let spec = &deploy["spec"]["template"]["spec"];
    let sidecar = spec["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "logferry")
        .expect("logferry as an init container");
    assert_eq!(sidecar["restartPolicy"], "Always", "a native sidecar");
    let sc = &sidecar["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        assert!(sidecar[probe].is_object(), "{probe}");
    }
    assert!(sidecar["resources"]["requests"]["memory"].is_string());
    assert!(sidecar["resources"]["limits"]["memory"].is_string());
    let args: Vec<&str> = sidecar["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(args.contains(&"run") && args.contains(&"--config"));
    // The platform container and the sidecar share the log volume.
    let app = spec["containers"].as_array().unwrap().first().unwrap();
    let mounts = |c: &serde_json::Value| -> Vec<String> {
        c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap().to_string())
            .collect()
    };
    let shared: Vec<_> = mounts(app)
        .into_iter()
        .filter(|m| mounts(sidecar).contains(m))
        .collect();
    assert!(!shared.is_empty(), "a shared log volume");
    let volumes = spec["volumes"].as_array().unwrap();
    assert!(volumes.iter().any(
        |v| shared.contains(&v["name"].as_str().unwrap().to_string()) && v["emptyDir"].is_object()
    ));
    assert!(volumes
        .iter()
        .any(|v| v["configMap"]["name"] == cm["metadata"]["name"]));
    assert!(
        volumes
            .iter()
            .any(|v| v["persistentVolumeClaim"].is_object() || v["ephemeral"].is_object()),
        "data_dir survives container restarts"
    );
    // Longer than shutdown_timeout in the config it ships.
    let grace = spec["terminationGracePeriodSeconds"].as_u64().unwrap();
    let config = cm["data"]["logferry.toml"].as_str().unwrap();
    let timeout: u64 = config
        .lines()
        .find_map(|l| {
            l.strip_prefix("shutdown_timeout = \"")?
                .strip_suffix("s\"")?
                .parse()
                .ok()
        })
        .expect("shutdown_timeout in seconds");
    assert!(grace > timeout, "{grace} <= {timeout}");
    // The shipped configuration is valid.
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("logferry.toml");
    std::fs::write(&path, config).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["validate", "--config"])
        .arg(&path)
        .env("AZURE_TENANT_ID", "t")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Credentials come from a Secret or workload identity, never the ConfigMap.
    assert!(docs
        .iter()
        .any(|d| d["kind"] == "Secret" || d["kind"] == "ServiceAccount"));
}

#[test]
fn a_reload_in_zero_retention_mode_loses_and_repeats_nothing() {
    let lf = Lf::new(
        r#"[sources.jobs]
include = ["{dir}/logs/*.log"]
sinks = ["archive"]
[sinks.archive]
type = "directory"
path = "{dir}/archive"
buffer = "memory"
key = "v1/{batch_id}.ndjson.gz"
batch = { max_age = "30s" }
"#,
    );
    let run = lf.spawn();
    let log = lf.path("logs/a.log");
    // Sealed only by the reload (max_age is long): the open batch must be delivered first.
    write_lines(&log, 0, 150);
    wait_until(Duration::from_secs(30), "150 read", || {
        run.metric("logferry_records_read_total", "source=\"jobs\"") == 150.0
    });
    let text = std::fs::read_to_string(&lf.cfg).unwrap();
    std::fs::write(&lf.cfg, text.replace("key = \"v1/", "key = \"v2/")).unwrap();
    run.signal("-HUP");
    wait_until(Duration::from_secs(30), "the reload", || {
        run.logs().contains("configuration reloaded")
    });
    write_lines(&log, 150, 50);
    wait_until(Duration::from_secs(30), "200 read", || {
        run.metric("logferry_records_read_total", "source=\"jobs\"") == 200.0
    });
    assert_eq!(run.term(Duration::from_secs(30)).code(), Some(0));
    let v1 = lf.final_archive("archive/v1");
    let v2 = lf.final_archive("archive/v2");
    assert_eq!(v1.len(), 150, "the open batch went out before the switch");
    let mut all = v1;
    all.extend(v2);
    assert_eq!(all.len(), 200);
    assert_eq!(assert_all_present(&all, 200), 0);
    assert!(
        walk(&lf.path("data"))
            .iter()
            .all(|p| p.to_string_lossy().contains("checkpoints")),
        "zero retention: nothing but checkpoints on disk"
    );
}

/// Three files into the archive with `--once`: the summary's numbers against the archive.
fn backfill(log_format: &str) -> Lf {
    let lf = Lf::new(&format!(
        r#"log_format = "{log_format}"
[sources.jobs]
include = ["{{dir}}/logs/*.log"]
sinks = ["archive"]
[sinks.archive]
type = "directory"
path = "{{dir}}/archive"
batch = {{ max_records = 100 }}
"#
    ));
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        write_lines(&lf.path(&format!("logs/{name}.log")), i as u64 * 250, 250);
    }
    lf
}

#[test]
fn run_once_ends_with_a_summary_that_matches_the_archive() {
    let lf = backfill("text");
    let out = lf.run_once();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(lf.final_archive("archive").len(), 750);
    let bytes: u64 = (0..3)
        .map(|i| {
            std::fs::metadata(lf.path(&format!("logs/{}.log", ["a", "b", "c"][i])))
                .unwrap()
                .len()
        })
        .sum();
    assert!(err.contains("run --once finished in"), "{err}");
    assert!(
        err.contains(&format!(
            "source jobs         3 files, 750 records, {:.1} MB read",
            bytes as f64 / 1e6
        )),
        "{err}"
    );
    let objects = walk(&lf.path("archive")).len();
    assert!(
        err.contains(&format!(
            "sink   archive      {objects} batches, 750 records"
        )),
        "{objects} objects: {err}"
    );
    assert!(err.contains("0 dead-lettered, 0 retries"), "{err}");
    // Not a terminal: no bar, and no colour codes (a container's log is not a terminal).
    assert!(!err.contains("records/s"), "{err}");
    assert!(err.contains(" INFO ") && !err.contains('\u{1b}'), "{err}");

    let lf = backfill("json");
    let out = lf.run_once();
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.contains("run --once summary"))
        .unwrap_or_else(|| panic!("no summary line:\n{err}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let s: serde_json::Value = serde_json::from_str(v["summary"].as_str().unwrap()).unwrap();
    assert_eq!(s["sources"][0]["files"], 3);
    assert_eq!(s["sources"][0]["records"], 750);
    assert_eq!(s["sources"][0]["bytes"], bytes);
    assert_eq!(s["sinks"][0]["records"], 750);
    assert_eq!(s["sinks"][0]["batches"], walk(&lf.path("archive")).len());
    assert!(
        !err.contains("run --once finished in"),
        "JSON logs only: {err}"
    );
}

#[test]
fn run_once_on_a_terminal_shows_a_progress_bar() {
    let lf = backfill("text");
    // script(1) gives the process a pseudo-terminal as stderr.
    let cmd = format!("{BIN} run --once --config {}", lf.cfg.display());
    let out = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .expect("script(1) from util-linux");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("records/s") && text.contains("eta"), "{text}");
    assert_eq!(lf.final_archive("archive").len(), 750);
}
