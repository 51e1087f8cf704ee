//! `logferry verify` against someone who can write to the archive but holds no key: every name
//! it used to skip, links and special files, times in the future, a cut tail, values that
//! would form reserved names, a squatted digest name and a decompression bomb are all seen.

mod common;

use std::time::{Duration, SystemTime};

use common::integrity::{self, keygen, kinds};
use common::{walk, Lf};

const CONFIG: &str = r#"
[signing]
key_file = "{dir}/sign.pem"

[sources.jobs]
include = ["{dir}/logs/*.log"]
sinks = ["archive"]

[sinks.archive]
type = "directory"
path = "{dir}/archive"
key = "{source}/{account_id}/{batch_id}.ndjson.gz"
integrity = true
batch = { max_records = 50, max_age = "100ms" }
"#;

fn setup(config: &str) -> Lf {
    let lf = Lf::new(config);
    keygen(&lf.path("sign.pem"));
    lf
}

fn verify(lf: &Lf, args: &[&str]) -> (Option<i32>, serde_json::Value) {
    integrity::verify_with(lf, "archive", &[], args)
}

/// Both `verify` and the independent Python checker say clean.
fn clean(lf: &Lf) {
    let (code, report) = verify(lf, &[]);
    assert_eq!(code, Some(0), "{report:#}");
    let py = python_check(lf);
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stdout)
    );
}

fn python_check(lf: &Lf) -> std::process::Output {
    std::process::Command::new(common::python())
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/verify_digests.py"))
        .arg(lf.path("archive"))
        .arg(lf.path("sign.pem.pub"))
        .output()
        .expect("python3 runs")
}

/// Writes `text` at `rel` under the archive with an old modification time (an object planted
/// before the last digest: not pending).
fn plant(lf: &Lf, rel: &str, text: &str, modified: SystemTime) {
    let p = lf.path(&format!("archive/{rel}"));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_modified(modified)
        .unwrap();
}

fn problems_naming(report: &serde_json::Value, kind: &str) -> Vec<String> {
    report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"] == kind)
        .map(|p| p["what"].as_str().unwrap().to_string())
        .collect()
}

/// The stream, and where its next digest starts: where the state says the last one ended.
fn next_digest(lf: &Lf) -> (String, chrono::DateTime<chrono::Utc>) {
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(lf.path("data/integrity/archive/state.json")).unwrap(),
    )
    .unwrap();
    let from = chrono::DateTime::parse_from_rfc3339(state["covered_to"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    (state["stream"].as_str().unwrap().to_string(), from)
}

fn archive_with_data() -> Lf {
    let lf = setup(CONFIG);
    common::write_lines(&lf.path("logs/a.log"), 0, 300);
    lf.run_once();
    clean(&lf);
    lf
}

#[test]
fn names_verify_used_to_skip_are_data() {
    let lf = archive_with_data();
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    let planted = [
        "jobs/acct0/x.meta.json",
        "jobs/.hidden",
        "jobs/acct0/.logferry-tmp.zz",
        "jobs/_keys/a",
        "jobs/_digests/a",
        "jobs/_receipts/a",
        "_keys/a/2026-01-01T00.key",
        "_receipts/a/r.json",
    ];
    for p in planted {
        plant(&lf, p, "{\"forged\":true}\n", old);
    }
    let (code, report) = verify(&lf, &[]);
    assert_eq!(code, Some(1), "{report:#}");
    let foreign = problems_naming(&report, "foreign");
    for p in planted {
        assert!(foreign.iter().any(|w| w.starts_with(p)), "{p}: {report:#}");
    }
    let py = String::from_utf8_lossy(&python_check(&lf).stdout).into_owned();
    for p in planted {
        assert!(py.contains(&format!("in no digest: {p}")), "{p}: {py}");
    }
    // A file that is no digest under the digests' prefix.
    plant(&lf, "_digests/junk.txt", "x", old);
    let (_, report) = verify(&lf, &[]);
    assert!(kinds(&report).contains("digest_unreadable"), "{report:#}");
    for p in planted.iter().chain(["_digests/junk.txt"].iter()) {
        std::fs::remove_file(lf.path(&format!("archive/{p}"))).unwrap();
    }
    clean(&lf);
}

#[test]
fn links_and_special_files_are_reported() {
    let lf = archive_with_data();
    let outside = lf.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("x.ndjson.gz"), "x").unwrap();
    std::os::unix::fs::symlink(&outside, lf.path("archive/jobs/linked")).unwrap();
    std::os::unix::fs::symlink(
        outside.join("x.ndjson.gz"),
        lf.path("archive/jobs/acct0/l.ndjson.gz"),
    )
    .unwrap();
    // A listed object moved outside and linked back: same bytes, still not what was written.
    let objects: Vec<_> = walk(&lf.path("archive/jobs/acct1"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".gz"))
        .collect();
    let moved = outside.join("moved.gz");
    std::fs::rename(&objects[0], &moved).unwrap();
    std::os::unix::fs::symlink(&moved, &objects[0]).unwrap();
    let (code, report) = verify(&lf, &[]);
    assert_eq!(code, Some(1), "{report:#}");
    let links = problems_naming(&report, "symlink");
    assert_eq!(links.len(), 3, "{report:#}");
    let py = String::from_utf8_lossy(&python_check(&lf).stdout).into_owned();
    assert_eq!(py.matches("symbolic link").count(), 3, "{py}");
    assert!(kinds(&report).contains("object_unreadable"), "{report:#}");
}

#[test]
fn a_future_modification_time_is_an_anomaly_not_pending() {
    let lf = archive_with_data();
    let future = SystemTime::now() + Duration::from_secs(86_400);
    plant(&lf, "jobs/acct0/later.ndjson.gz", "x", future);
    let (code, report) = verify(&lf, &[]);
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(
        problems_naming(&report, "future_mtime").len(),
        1,
        "{report:#}"
    );
    assert!(report["pending"].as_array().unwrap().is_empty());
    // An object planted now, after the stop's digest: the stream is stopped, so it cannot be
    // pending; it is foreign.
    std::fs::remove_file(lf.path("archive/jobs/acct0/later.ndjson.gz")).unwrap();
    plant(&lf, "jobs/acct0/now.ndjson.gz", "x", SystemTime::now());
    let (code, report) = verify(&lf, &[]);
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(problems_naming(&report, "foreign").len(), 1, "{report:#}");
}

#[test]
fn a_link_at_the_next_digest_name_does_not_stop_digests() {
    let lf = archive_with_data();
    let (stream, from) = next_digest(&lf);
    let name = logferry_integrity::chain::digest_key("", &stream, from);
    std::os::unix::fs::symlink(lf.path("sign.pem"), lf.path(&format!("archive/{name}"))).unwrap();
    common::write_lines(&lf.path("logs/a.log"), 300, 60);
    lf.run_once();
    let (code, report) = verify(&lf, &[]);
    assert_eq!(code, Some(1), "{report:#}");
    let k = kinds(&report);
    assert!(
        k.contains("digest_name_taken") && k.contains("symlink"),
        "{report:#}"
    );
    assert!(std::fs::read_to_string(lf.path("sign.pem"))
        .unwrap()
        .contains("PRIVATE KEY"));
}

/// A stream whose newest digest closed an hour, not a stop, and is more than an hour old is
/// stale: its tail was cut. One closed by a stop is not.
#[test]
fn a_cut_tail_is_stale_and_a_stop_is_not() {
    let lf = setup(CONFIG);
    // The stream starts three hours ago, as a process that has been running would have.
    let now = chrono::Utc::now();
    let hour = now.timestamp() - now.timestamp() % 3600;
    let start = chrono::DateTime::from_timestamp(hour - 3 * 3600, 0).unwrap();
    std::fs::create_dir_all(lf.path("data/integrity/archive")).unwrap();
    std::fs::write(lf.path("data/instance-id"), "feedfacefeedface\n").unwrap();
    let state = serde_json::json!({
        "stream": "archive.feedfacefeedface",
        "covered_to": start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "last": null, "head_seq": 0, "head_hash": "",
    });
    std::fs::write(
        lf.path("data/integrity/archive/state.json"),
        state.to_string(),
    )
    .unwrap();
    common::write_lines(&lf.path("logs/a.log"), 0, 120);
    lf.run_once();
    let later = (now + chrono::Duration::hours(2)).to_rfc3339();
    let (code, report) = verify(&lf, &["--as-of", &later]);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["streams"][0]["state"], "stopped", "{report:#}");
    assert_eq!(report["digests"], 4, "{report:#}");
    // As of an hour and a half after the stream began: one digest existed, the objects did not.
    let then = (start + chrono::Duration::minutes(90)).to_rfc3339();
    let (code, report) = verify(&lf, &["--as-of", &then]);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["digests"], 1, "{report:#}");
    assert_eq!(report["streams"][0]["state"], "running", "{report:#}");
    assert!(report["after_as_of"].as_u64().unwrap() >= 4, "{report:#}");
    // Cut the tail: the stop's digest and every object it lists.
    let digests: Vec<_> = walk(&lf.path("archive/_digests"));
    let last = digests.iter().max().unwrap();
    std::fs::remove_file(last).unwrap();
    for o in walk(&lf.path("archive/jobs")) {
        std::fs::remove_file(o).unwrap();
    }
    let (code, report) = verify(&lf, &["--as-of", &later]);
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(problems_naming(&report, "stale").len(), 1, "{report:#}");
    // Judged as of a moment within the hour after the newest digest, it is not stale yet.
    let (_, report) = verify(&lf, &["--as-of", &now.to_rfc3339()]);
    assert!(!kinds(&report).contains("stale"), "{report:#}");
    let out = std::process::Command::new(common::BIN)
        .args([
            "verify",
            "--sink",
            "archive",
            "--as-of",
            "yesterday",
            "--config",
        ])
        .arg(&lf.cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--as-of \"yesterday\""));
}

#[test]
fn tenants_that_would_form_reserved_names_are_escaped() {
    let lf = setup(&CONFIG.replace(
        "key = \"{source}/{account_id}/{batch_id}.ndjson.gz\"",
        "key = \"{account_id}/{batch_id}.ndjson.gz\"",
    ));
    let lines: String = ["_digests", "_keys", ".x", "y.meta.json"]
        .iter()
        .enumerate()
        .map(|(i, t)| format!("{{\"id\":{i},\"account_id\":\"{t}\"}}\n"))
        .collect();
    std::fs::write(lf.path("logs/a.log"), lines).unwrap();
    lf.run_once();
    for dir in ["__digests", "__keys", "_.x", "y.meta.json_"] {
        assert_eq!(walk(&lf.path(&format!("archive/{dir}"))).len(), 2, "{dir}");
    }
    clean(&lf);
}

#[test]
fn a_squatted_digest_name_neither_stops_digests_nor_goes_unreported() {
    let lf = archive_with_data();
    let (stream, from) = next_digest(&lf);
    let stream = stream.as_str();
    let name = logferry_integrity::chain::digest_key("", stream, from);
    let squat = lf.path(&format!("archive/{name}"));
    std::fs::write(&squat, "not a digest").unwrap();
    common::write_lines(&lf.path("logs/a.log"), 300, 60);
    lf.run_once();
    let taken = logferry_integrity::chain::digest_key_n("", stream, from, 1);
    assert!(lf.path(&format!("archive/{taken}")).exists());
    let (code, report) = verify(&lf, &[]);
    assert_eq!(code, Some(1), "{report:#}");
    let k = kinds(&report);
    assert!(
        k.contains("digest_name_taken") && k.contains("digest_unreadable"),
        "{report:#}"
    );
    let py = String::from_utf8_lossy(&python_check(&lf).stdout).into_owned();
    assert!(py.contains("its own was taken"), "{py}");
    // Without the squatter, the name taken stays on record.
    std::fs::remove_file(&squat).unwrap();
    let (_, report) = verify(&lf, &[]);
    assert_eq!(
        kinds(&report).into_iter().collect::<Vec<_>>(),
        ["digest_name_taken"]
    );
}

#[test]
fn a_decompression_bomb_is_capped_and_reported() {
    let lf = setup(
        &CONFIG
            .replace("ndjson.gz", "ndjson.zst")
            .replace(
                "integrity = true",
                "integrity = true\ncompression = \"zstd\"",
            )
            .replace(
                "sinks = [\"archive\"]",
                "sinks = [\"archive\"]\nmax_line_bytes = \"16MiB\"",
            ),
    );
    // One record of 8 MiB of one byte: a few hundred bytes compressed.
    let big = format!(
        "{{\"id\":1,\"account_id\":\"a\",\"pad\":\"{}\"}}\n",
        "x".repeat(8 << 20)
    );
    std::fs::write(lf.path("logs/a.log"), big).unwrap();
    lf.run_once();
    clean(&lf);
    let (code, report) = verify(&lf, &["--max-inflated", "1MiB"]);
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(
        problems_naming(&report, "inflate_cap").len(),
        1,
        "{report:#}"
    );
}
