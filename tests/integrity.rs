//! Tamper evidence on a directory archive, end to end with the real binary: the hash chain,
//! signed digests, `logferry verify` naming each kind of tampering, the chain across restarts
//! and reloads and through `kill -9`, and `scripts/verify_digests.py` as an independent reader.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{python, wait_until, walk, Lf, BIN};

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
retry = { initial_backoff = "50ms", max_backoff = "200ms" }
"#;

fn keygen(out: &Path) {
    let o = Command::new(BIN)
        .args(["keygen", "--out"])
        .arg(out)
        .output()
        .unwrap();
    common::succeeded(&o);
}

fn setup() -> Lf {
    let lf = Lf::new(CONFIG);
    keygen(&lf.path("sign.pem"));
    lf
}

fn verify(lf: &Lf) -> (Option<i32>, serde_json::Value) {
    let out = Command::new(BIN)
        .args(["verify", "--json", "--sink", "archive", "--config"])
        .arg(&lf.cfg)
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "verify printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), report)
}

fn kinds(report: &serde_json::Value) -> BTreeSet<String> {
    report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap().to_string())
        .collect()
}

fn python_check(lf: &Lf) -> Output {
    Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/verify_digests.py"))
        .arg(lf.path("archive"))
        .arg(lf.path("sign.pem.pub"))
        .output()
        .expect("python3 runs")
}

/// Data objects of the archive, sorted.
fn objects(lf: &Lf) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = walk(&lf.path("archive/jobs"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".gz"))
        .collect();
    v.sort();
    v
}

fn digests(lf: &Lf) -> Vec<PathBuf> {
    let mut v = walk(&lf.path("archive/_digests"));
    v.sort();
    v
}

/// An archive of two `--once` runs (two digests, nine batches), verified clean, kept aside.
fn two_runs() -> Lf {
    let lf = setup();
    common::write_lines(&lf.path("logs/a.log"), 0, 300);
    lf.run_once();
    common::write_lines(&lf.path("logs/a.log"), 300, 150);
    lf.run_once();
    let (code, report) = verify(&lf);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["digests"], 2, "{report:#}");
    assert_eq!(report["streams"][0]["first_seq"], 1);
    let py = python_check(&lf);
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stdout)
    );
    let copy = Command::new("cp")
        .arg("-a")
        .arg(lf.path("archive"))
        .arg(lf.path("clean"))
        .status()
        .unwrap();
    assert!(copy.success());
    lf
}

fn restore(lf: &Lf) {
    std::fs::remove_dir_all(lf.path("archive")).unwrap();
    let st = Command::new("cp")
        .arg("-a")
        .arg(lf.path("clean"))
        .arg(lf.path("archive"))
        .status()
        .unwrap();
    assert!(st.success());
}

/// Applies `tamper`, expects `verify` to fail naming `kind` (and the Python check to fail
/// when `python` is set), then restores the clean archive.
fn expect(lf: &Lf, kind: &str, python: bool, tamper: impl FnOnce(&Lf)) {
    tamper(lf);
    let (code, report) = verify(lf);
    assert_eq!(code, Some(1), "{kind}: {report:#}");
    assert!(kinds(&report).contains(kind), "{kind}: {report:#}");
    if python {
        let py = python_check(lf);
        assert!(!py.status.success(), "{kind}: the Python check passed");
    }
    restore(lf);
    assert_eq!(verify(lf).0, Some(0), "restored");
}

#[test]
fn verify_names_each_kind_of_tampering_and_exits_non_zero() {
    let lf = two_runs();
    let objs = objects(&lf);
    assert_eq!(objs.len(), 9);
    expect(&lf, "object_missing", true, |_| {
        std::fs::remove_file(&objs[0]).unwrap()
    });
    expect(&lf, "object_modified", true, |_| {
        let mut b = std::fs::read(&objs[1]).unwrap();
        b[10] ^= 1;
        std::fs::write(&objs[1], b).unwrap();
    });
    expect(&lf, "object_swapped", true, |_| {
        let (a, b) = (
            std::fs::read(&objs[2]).unwrap(),
            std::fs::read(&objs[3]).unwrap(),
        );
        std::fs::write(&objs[2], b).unwrap();
        std::fs::write(&objs[3], a).unwrap();
    });
    expect(&lf, "foreign", false, |lf| {
        let p = lf.path("archive/jobs/acct0/planted.ndjson.gz");
        std::fs::write(&p, b"not from logferry").unwrap();
        // Older than the last digest: not a delivery still waiting for its digest.
        let old = std::fs::File::options().write(true).open(&p).unwrap();
        old.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
    });
    let ds = digests(&lf);
    assert_eq!(ds.len(), 2);
    expect(&lf, "digest_missing", true, |_| {
        std::fs::remove_file(&ds[0]).unwrap()
    });
    // An entry dropped from the second digest and the digest signed again with another key.
    expect(&lf, "bad_signature", true, |lf| {
        keygen(&lf.path("other.pem"));
        let other = logferry_sinks::signing::SigningKey::from_pem(
            &std::fs::read_to_string(lf.path("other.pem")).unwrap(),
        )
        .unwrap();
        let text = std::fs::read_to_string(&ds[1]).unwrap();
        let mut body: serde_json::Value =
            serde_json::from_str(text.lines().next().unwrap()).unwrap();
        body["entries"].as_array_mut().unwrap().pop();
        let line = body.to_string();
        let sig =
            serde_json::json!({"signature": other.sign(line.as_bytes()), "public_key_sha256": "x"});
        std::fs::write(&ds[1], format!("{line}\n{sig}\n")).unwrap();
    });
}

#[test]
fn the_chain_continues_across_reloads_and_restarts() {
    let lf = setup();
    let log = lf.path("logs/a.log");
    common::write_lines(&log, 0, 100);
    let run = lf.spawn();
    let delivered = || objects(&lf).len();
    wait_until(Duration::from_secs(20), "first batches", || {
        delivered() >= 3
    });
    run.signal("-HUP");
    wait_until(Duration::from_secs(20), "the reload", || {
        run.logs().contains("switching")
    });
    common::write_lines(&log, 100, 100);
    wait_until(Duration::from_secs(20), "batches after the reload", || {
        delivered() >= 6
    });
    assert!(run.term(Duration::from_secs(20)).success());
    common::write_lines(&log, 200, 100);
    lf.run_once();
    let (code, report) = verify(&lf);
    assert_eq!(code, Some(0), "{report:#}");
    // One stream, numbered without a gap from 1 to the last batch, over both processes.
    assert_eq!(report["streams"].as_array().unwrap().len(), 1, "{report:#}");
    assert_eq!(report["streams"][0]["first_seq"], 1);
    assert_eq!(
        report["streams"][0]["last_seq"].as_u64().unwrap() as usize,
        objects(&lf).len()
    );
    assert!(digests(&lf).len() >= 2, "{report:#}");
    let py = python_check(&lf);
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stdout)
    );
}

#[test]
fn a_kill_9_loop_archive_verifies_clean_with_its_replays_counted() {
    let lf = setup();
    let log = lf.path("logs/a.log");
    std::fs::File::create(&log).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, written, log) = (stop.clone(), written.clone(), log.clone());
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
            while !stop.load(Ordering::Relaxed) {
                let start = written.load(Ordering::Relaxed);
                let text: String = (start..start + 50)
                    .map(|i| format!("{{\"id\":{i},\"account_id\":\"acct{}\"}}\n", i % 3))
                    .collect();
                f.write_all(text.as_bytes()).unwrap();
                written.store(start + 50, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..4 {
        let run = lf.spawn();
        // The scenario is "a crash at a random moment": the wait is the point, not a sync.
        std::thread::sleep(Duration::from_millis(rng.u64(300..1200)));
        run.kill9();
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    lf.run_once();
    let records = common::archive_records(&lf.path("archive/jobs"));
    let n = written.load(Ordering::Relaxed);
    let dups = common::assert_all_present(&records, n);
    let (code, report) = verify(&lf);
    assert_eq!(code, Some(0), "{report:#}");
    // Every record sealed twice is reported as a replay, and nothing else is.
    assert_eq!(report["replayed_records"].as_u64().unwrap(), dups as u64);
    eprintln!("kill -9 x4: {n} records, {dups} sealed twice, reported as replays");
    let py = python_check(&lf);
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stdout)
    );
}

#[test]
fn integrity_is_refused_without_a_signing_key_or_with_a_memory_buffer() {
    let refused = |cfg: String, why: &str| {
        let lf = Lf::new(&cfg);
        let out = Command::new(BIN)
            .args(["validate", "--config"])
            .arg(&lf.cfg)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("sinks.archive.integrity"), "{err}");
        assert!(err.contains(why), "{err}");
    };
    refused(
        CONFIG.replace("[signing]\nkey_file = \"{dir}/sign.pem\"\n", ""),
        "[signing] key_file",
    );
    refused(
        CONFIG.replace("integrity = true", "integrity = true\nbuffer = \"memory\""),
        "buffer = \"disk\"",
    );
}
