//! End-to-end behaviour of the core pipeline with the directory sink.

mod common;

use common::*;
use std::time::Duration;

const SINK: &str = r#"
[sinks.archive]
type = "directory"
path = "{dir}/archive"
"#;

fn source(include: &str, extra: &str) -> String {
    format!(
        "[sources.jobs]\ninclude = [\"{{dir}}/logs/{include}\"]\nsinks = [\"archive\"]\n{extra}\n"
    )
}

#[test]
fn many_files_and_partitions_arrive_exactly_once() {
    let lf = Lf::new(&format!(
        "{}{SINK}key = \"{{source}}/{{account_id}}/%Y/%m/%d/{{batch_id}}.ndjson.gz\"\nbatch = {{ max_records = 700 }}\n",
        source("*.log", "timestamp_field = \"ts\"")
    ));
    for f in 0..5u64 {
        write_lines(&lf.path(&format!("logs/f{f}.log")), f * 2000, 2000);
    }
    lf.run_once();
    let recs = lf.final_archive("archive");
    assert_eq!(recs.len(), 10_000);
    assert_eq!(assert_all_present(&recs, 10_000), 0);
    // Every object holds only its partition's records, under the record time's date.
    for acct in 0..3 {
        let dir = lf.path(&format!("archive/jobs/acct{acct}/2026/11/23"));
        let part = archive_records(&dir);
        assert!(!part.is_empty(), "no objects for acct{acct}");
        assert!(part
            .iter()
            .all(|r| r["account_id"] == format!("acct{acct}")));
        let objects = walk(&dir);
        assert!(objects
            .iter()
            .all(|p| p.to_string_lossy().ends_with(".ndjson.gz")));
    }
    assert_eq!(
        walk(&lf.path("data/spool/archive")).len(),
        0,
        "spool drained"
    );
}

#[test]
fn restart_resumes_without_resending() {
    let lf = Lf::new(&format!("{}{SINK}", source("*.log", "")));
    let log = lf.path("logs/a.log");
    write_lines(&log, 0, 3000);
    lf.run_once();
    write_lines(&log, 3000, 1000);
    lf.run_once();
    lf.run_once();
    let recs = lf.final_archive("archive");
    assert_eq!(assert_all_present(&recs, 4000), 0);
    assert_eq!(recs.len(), 4000);
}

#[test]
fn odd_lines_are_kept_counted_and_never_stop_the_file() {
    let lf = Lf::new(&format!(
        "{}{SINK}",
        source("*.log", "max_record_bytes = \"1MiB\"")
    ));
    let log = lf.path("logs/a.log");
    let mut data = Vec::new();
    data.extend_from_slice(b"{\"id\":0,\"s\":\"bad \xff\xfe utf8\"}\n");
    data.extend_from_slice(b"{\"id\":1,\"big\":\"");
    data.extend(std::iter::repeat_n(b'x', 5 << 20));
    data.extend_from_slice(b"\"}\n");
    data.extend_from_slice(b"plain text, not JSON\n");
    data.extend_from_slice(b"[\"an\",\"array\"]\n");
    data.extend_from_slice(b"{\"id\":2}\n");
    std::fs::write(&log, data).unwrap();
    let out = lf.run_once();
    let recs = lf.final_archive("archive");
    assert_eq!(recs.len(), 5, "{recs:?}");
    let utf = recs.iter().find(|r| r["id"] == 0).unwrap();
    assert_eq!(utf["s"], "bad \u{fffd}\u{fffd} utf8");
    // Over max_record_bytes: a stand-in with its size and the top-level scalars, never text.
    let long = recs
        .iter()
        .find(|r| r["_logferry_oversize"].is_object())
        .unwrap();
    assert_eq!(
        long["_logferry_oversize"]["bytes"],
        "{\"id\":1,\"big\":\"".len() + (5 << 20) + 2
    );
    assert_eq!(long["message"], "[REDACTED:oversize]");
    assert_eq!(long["id"], 1);
    assert!(long.get("big").is_none());
    let wrapped: Vec<_> = recs
        .iter()
        .filter(|r| r["_parse_error"].is_string())
        .collect();
    assert_eq!(wrapped.len(), 2);
    assert!(wrapped
        .iter()
        .any(|r| r["message"] == "plain text, not JSON"));
    assert!(
        recs.iter().any(|r| r["id"] == 2),
        "the line after the odd ones arrived"
    );
    let _ = out;
}

#[test]
fn text_format_json_array_zstd_and_envelope() {
    let lf = Lf::new(&format!(
        "{}{SINK}key = \"{{source}}/{{batch_id}}.json.zst\"\nencoding = \"json_array\"\ncompression = \"zstd\"\nenvelope = \"{{\\\"source\\\":\\\"platform\\\",\\\"logEntries\\\":{{{{records}}}}}}\"\n",
        source("*.log", "format = \"text\"")
    ));
    std::fs::write(lf.path("logs/a.log"), "line one\nline \"two\"\n").unwrap();
    lf.run_once();
    let files = walk(&lf.path("archive"));
    assert_eq!(files.len(), 1);
    let v: serde_json::Value = serde_json::from_slice(&decompress(&files[0])).unwrap();
    assert_eq!(v["source"], "platform");
    assert_eq!(v["logEntries"][0]["message"], "line one");
    assert_eq!(v["logEntries"][1]["message"], "line \"two\"");
}

#[test]
fn record_id_is_stable_across_a_full_replay() {
    let lf = Lf::new(&format!("{}{SINK}", source("*.log", "record_id = \"_id\"")));
    write_lines(&lf.path("logs/a.log"), 0, 500);
    lf.run_once();
    let first: Vec<String> = lf
        .archive("archive")
        .iter()
        .map(|r| r["_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        first.iter().collect::<std::collections::HashSet<_>>().len(),
        500
    );
    // Lose the checkpoints: everything is sent again, under the same ids.
    std::fs::remove_dir_all(lf.path("data/checkpoints")).unwrap();
    lf.run_once();
    let all: Vec<String> = lf
        .archive("archive")
        .iter()
        .map(|r| r["_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(all.len(), 1000);
    assert_eq!(
        all.iter().collect::<std::collections::HashSet<_>>().len(),
        500
    );
}

#[test]
fn corrupt_checkpoint_is_set_aside_and_nothing_is_lost() {
    let lf = Lf::new(&format!("{}{SINK}", source("*.log", "")));
    let log = lf.path("logs/a.log");
    write_lines(&log, 0, 1000);
    lf.run_once();
    write_lines(&log, 1000, 1000);
    lf.run_once();
    std::fs::write(
        lf.path("data/checkpoints/jobs.json"),
        b"{\"version\":1,\"files\":[{\"dev",
    )
    .unwrap();
    write_lines(&log, 2000, 500);
    let out = lf.run_once();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("checkpoint file is corrupt"), "{stderr}");
    let aside: Vec<String> = lf
        .files("data/checkpoints")
        .into_iter()
        .filter(|f| f.contains(".corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1);
    let recs = lf.final_archive("archive");
    let dups = assert_all_present(&recs, 2500);
    // The previous copy is one run old: at most that run's 1000 records come again.
    assert!(dups <= 1000, "{dups} duplicates");
}

#[test]
fn permanent_rejection_goes_to_dead_letter_with_its_reason() {
    // Two 128-character values in one path segment make a name no file system takes.
    let lf = Lf::new(&format!(
        "{}{SINK}key = \"{{source}}/{{a}}{{b}}/{{batch_id}}.ndjson.gz\"\n",
        source("*.log", "")
    ));
    let long = "y".repeat(128);
    let mut text = String::new();
    for i in 0..10 {
        text.push_str(&format!(
            "{{\"id\":{i},\"a\":\"{long}\",\"b\":\"{long}\"}}\n"
        ));
    }
    for i in 10..20 {
        text.push_str(&format!("{{\"id\":{i},\"a\":\"x\",\"b\":\"y\"}}\n"));
    }
    std::fs::write(lf.path("logs/a.log"), text).unwrap();
    let out = lf.run_once_incomplete();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("moved to dead-letter"), "{stderr}");
    let recs = lf.final_archive("archive");
    assert_eq!(recs.len(), 10);
    let dead = lf.files("data/dead-letter/archive");
    assert_eq!(dead.len(), 2, "{dead:?}");
    let note = lf.dead_letter_note("archive");
    assert_eq!(note["records"], 10);
    assert!(
        note["reason"].as_str().unwrap().contains("name too long")
            || note["reason"].as_str().unwrap().contains("cannot write"),
        "{note}"
    );
    assert_eq!(walk(&lf.path("data/spool/archive")).len(), 0);
}

#[test]
fn zero_retention_writes_nothing_but_checkpoints() {
    let lf = Lf::new(&format!(
        "{}{SINK}buffer = \"memory\"\n",
        source("*.log", "")
    ));
    write_lines(&lf.path("logs/a.log"), 0, 5000);
    lf.run_once();
    assert_eq!(assert_all_present(&lf.final_archive("archive"), 5000), 0);
    let written = lf.files("data");
    assert!(!written.is_empty());
    assert!(
        written.iter().all(|f| f.starts_with("checkpoints/")),
        "{written:?}"
    );
}

#[test]
fn sigterm_flushes_an_open_batch_long_before_max_age() {
    let lf = Lf::new(&format!(
        "{}{SINK}batch = {{ max_age = \"1h\" }}\n",
        source("*.log", "")
    ));
    write_lines(&lf.path("logs/a.log"), 0, 10);
    let run = lf.spawn();
    wait_until(Duration::from_secs(10), "10 records read", || {
        run.metric("logferry_records_read_total", "source=\"jobs\"") >= 10.0
    });
    assert_eq!(
        lf.archive("archive").len(),
        0,
        "nothing sealed yet: max_age is an hour"
    );
    let status = run.term(Duration::from_secs(10));
    assert!(status.success(), "{status}");
    assert_eq!(assert_all_present(&lf.final_archive("archive"), 10), 0);
}

#[test]
fn new_files_are_found_and_read_from_end_applies_only_at_start() {
    let lf = Lf::new(&format!(
        "{}{SINK}batch = {{ max_age = \"200ms\" }}\n",
        source("*.log", "read_from = \"end\"")
    ));
    write_lines(&lf.path("logs/old.log"), 1_000_000, 100);
    let run = lf.spawn();
    wait_until(Duration::from_secs(10), "old.log opened", || {
        run.metric("logferry_files_open", "source=\"jobs\"") >= 1.0
    });
    write_lines(&lf.path("logs/old.log"), 0, 10);
    write_lines(&lf.path("logs/new.log"), 10, 10);
    wait_until(Duration::from_secs(10), "20 records archived", || {
        lf.archive("archive").len() >= 20
    });
    assert!(run.term(Duration::from_secs(10)).success());
    let recs = lf.final_archive("archive");
    assert_eq!(recs.len(), 20, "the 100 lines before start are skipped");
    assert_eq!(assert_all_present(&recs, 20), 0);
}

#[test]
fn validate_lists_every_problem_and_exits_2() {
    let lf = Lf::new(&format!(
        "{}{SINK}batchh = {{}}\n",
        source("*.log", "sinks = [\"nope\"]\nformatt = \"json\"")
            .replace("sinks = [\"archive\"]\n", "")
    ));
    let out = std::process::Command::new(BIN)
        .args(["validate", "--config"])
        .arg(&lf.cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sources.jobs.formatt: unknown key `formatt`; did you mean `format`?"),
        "{err}"
    );
    assert!(
        err.contains("sinks.archive.batchh: unknown key `batchh`; did you mean `batch`?"),
        "{err}"
    );
    assert!(err.contains("no sink named \"nope\""), "{err}");
    let good = Lf::new(&format!("{}{SINK}", source("*.log", "")));
    let out = std::process::Command::new(BIN)
        .args(["validate", "--config"])
        .arg(&good.cfg)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("archive      directory"));
}

#[test]
fn the_example_config_runs_as_is() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(root.join("config.example.toml")).unwrap();
    // Only the listen port changes, so parallel tests do not collide on 8686.
    let text = text.replace("127.0.0.1:8686", &format!("127.0.0.1:{}", free_port()));
    std::fs::write(dir.path().join("config.example.toml"), text).unwrap();
    std::fs::create_dir_all(dir.path().join("examples/logs")).unwrap();
    for f in ["jobs.log", "audit.log"] {
        std::fs::copy(
            root.join("examples/logs").join(f),
            dir.path().join("examples/logs").join(f),
        )
        .unwrap();
    }
    let out = std::process::Command::new(BIN)
        .args(["run", "--once", "--config"])
        .arg(dir.path().join("config.example.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recs = archive_records(&dir.path().join("archive"));
    let lines = |f: &str| {
        std::fs::read_to_string(root.join("examples/logs").join(f))
            .unwrap()
            .lines()
            .count()
    };
    assert_eq!(recs.len(), lines("jobs.log") + lines("audit.log"));
    assert!(recs
        .iter()
        .all(|r| r["_logferry_id"].is_string() || r["event"].is_string()));
    // The sample logs carry PII; the example profile masks all of it.
    let text = walk(&dir.path().join("archive"))
        .iter()
        .map(|p| String::from_utf8(decompress(p)).unwrap())
        .collect::<String>();
    for secret in [
        "4111 1111 1111 1111",
        "hunter2",
        "@example.com",
        "10.0.1.11",
    ] {
        assert!(!text.contains(secret), "{secret} leaked");
    }
    assert!(text.contains("4111 11** **** 1111"));
    assert!(text.contains("{\"data\":\"masked\"}"));
}
