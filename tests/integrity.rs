//! Tamper evidence on a directory archive, end to end with the real binary: the hash chain,
//! signed digests, `logferry verify` naming each kind of tampering, the chain across restarts
//! and reloads and through `kill -9`, and `scripts/verify_digests.py` as an independent reader.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::integrity::{self, keygen};
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

fn setup() -> Lf {
    let lf = Lf::new(CONFIG);
    keygen(&lf.path("sign.pem"));
    lf
}

fn verify(lf: &Lf) -> (Option<i32>, serde_json::Value) {
    integrity::verify(lf, "archive", &[])
}

/// The Python checker passes on the archive.
fn python_clean(lf: &Lf) {
    let py = python_check(lf);
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stdout)
    );
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

#[test]
fn verify_names_each_kind_of_tampering_on_a_directory_archive() {
    let lf = setup();
    let log = lf.path("logs/a.log");
    common::write_lines(&log, 0, 300);
    lf.run_once();
    common::write_lines(&log, 300, 150);
    lf.run_once();
    let (_, report) = verify(&lf);
    assert_eq!(report["digests"], 2, "{report:#}");
    assert_eq!(report["streams"][0]["first_seq"], 1);
    let next = std::cell::Cell::new(450);
    integrity::Suite {
        lf: &lf,
        sink: "archive",
        env: &[],
        archive: &integrity::Dir(lf.path("archive")),
        independent: &|| Some(python_check(&lf).status.success()),
        more: &|| {
            common::write_lines(&log, next.get(), 50);
            next.set(next.get() + 50);
            lf.run_once();
        },
    }
    .run();
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
    assert!(report["digests"].as_u64().unwrap() >= 2, "{report:#}");
    python_clean(&lf);
}

#[test]
fn a_kill_9_loop_archive_verifies_clean_with_its_replays_counted() {
    let lf = setup();
    let writer = common::Appender::start(&lf.path("logs/a.log"), 50, |i| {
        format!("{{\"id\":{i},\"account_id\":\"acct{}\"}}\n", i % 3)
    });
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..4 {
        let run = lf.spawn();
        // The scenario is "a crash at a random moment": the wait is the point, not a sync.
        std::thread::sleep(Duration::from_millis(rng.u64(300..1200)));
        run.kill9();
    }
    let n = writer.finish();
    lf.run_once();
    let records = common::archive_records(&lf.path("archive/jobs"));
    let dups = common::assert_all_present(&records, n);
    let (code, report) = verify(&lf);
    assert_eq!(code, Some(0), "{report:#}");
    // Every record sealed twice is reported as a replay, and nothing else is.
    assert_eq!(report["replayed_records"].as_u64().unwrap(), dups as u64);
    eprintln!("kill -9 x4: {n} records, {dups} sealed twice, reported as replays");
    python_clean(&lf);
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

#[test]
fn an_encrypted_archive_is_verified_by_its_stored_bytes_and_its_replays_counted_with_the_kek() {
    let lf = Lf::new(&format!(
        "[keks.main]\nprovider = \"local\"\nkey_file = \"{{dir}}/kek.hex\"\n{}",
        CONFIG.replace(
            "integrity = true",
            "integrity = true\nencryption = { kek = \"main\", tenant_field = \"account_id\" }"
        )
    ));
    common::write_key(&lf.path("kek.hex"), "5a".repeat(32));
    keygen(&lf.path("sign.pem"));
    common::write_lines(&lf.path("logs/a.log"), 0, 300);
    lf.run_once();
    let stored: Vec<PathBuf> = walk(&lf.path("archive/jobs"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".lfenc"))
        .collect();
    assert_eq!(stored.len(), 6);
    // Without the KEK (another key in its place) every stored byte is still checked.
    common::write_key(&lf.path("kek.hex"), "a5".repeat(32));
    let (code, report) = verify(&lf);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["objects_checked"], 6);
    assert_eq!(report["replays_not_counted"], 6);
    common::write_key(&lf.path("kek.hex"), "5a".repeat(32));
    let (code, report) = verify(&lf);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["replays_not_counted"], 0);
    // The digest lists the hash of the encrypted bytes as stored.
    let digest = std::fs::read_to_string(&walk(&lf.path("archive/_digests"))[0]).unwrap();
    let body: serde_json::Value = serde_json::from_str(digest.lines().next().unwrap()).unwrap();
    let listed: BTreeSet<String> = body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["sha256"].as_str().unwrap().to_string())
        .collect();
    let hashed: BTreeSet<String> = stored
        .iter()
        .map(|p| logferry_integrity::chain::sha256_hex(&std::fs::read(p).unwrap()))
        .collect();
    assert_eq!(listed, hashed);
    let original = std::fs::read(&stored[0]).unwrap();
    let mut b = original.clone();
    let last = b.len() - 1;
    b[last] ^= 1;
    std::fs::write(&stored[0], &b).unwrap();
    let (code, report) = verify(&lf);
    assert_eq!(code, Some(1));
    assert!(integrity::kinds(&report).contains("object_modified"));
    // A replacement larger than listed is refused by its size, before it is read.
    b.extend(vec![0u8; 1 << 20]);
    std::fs::write(&stored[0], &b).unwrap();
    let (code, report) = verify(&lf);
    assert_eq!(code, Some(1));
    let what = report["problems"][0]["what"].as_str().unwrap();
    assert!(what.contains("is larger than the"), "{report:#}");
    // Every record read again (its checkpoint gone) and sealed in new batches: replays,
    // counted inside the encrypted objects with the KEK at hand, and not tampering.
    std::fs::write(&stored[0], &original).unwrap();
    std::fs::remove_dir_all(lf.path("data/checkpoints")).unwrap();
    lf.run_once();
    let (code, report) = verify(&lf);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["replayed_records"], 300, "{report:#}");
    assert_eq!(report["replays_not_counted"], 0);
}

#[test]
fn verify_takes_an_auditors_public_key_and_a_period() {
    let lf = setup();
    common::write_lines(&lf.path("logs/a.log"), 0, 100);
    lf.run_once();
    keygen(&lf.path("other.pem"));
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(["verify", "--sink", "archive", "--config"])
            .arg(&lf.cfg)
            .args(args)
            .output()
            .unwrap()
    };
    let pubkey = lf.path("sign.pem.pub").display().to_string();
    let other = lf.path("other.pem.pub").display().to_string();
    let ok = run(&["--public-key", &pubkey]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("CLEAN"));
    let bad = run(&["--public-key", &other]);
    assert_eq!(bad.status.code(), Some(1));
    let text = String::from_utf8_lossy(&bad.stdout);
    assert!(text.contains("PROBLEM bad_signature"), "{text}");
    // A period after everything: no digest in it, nothing to find wrong.
    let later = run(&["--from", "2099-01-01T00:00:00Z", "--json"]);
    assert!(later.status.success());
    let report: serde_json::Value = serde_json::from_slice(&later.stdout).unwrap();
    assert_eq!(report["digests"], 0);
    let wrong = run(&["--from", "yesterday"]);
    assert_eq!(wrong.status.code(), Some(1));
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        err.contains("--from \"yesterday\" is not an RFC 3339 time"),
        "{err}"
    );
}

#[test]
fn digests_under_their_own_prefix_still_vouch_for_every_object_of_the_sink() {
    let lf = Lf::new(
        &CONFIG
            .replace("key = \"{source}/", "key = \"logs/{source}/")
            .replace("integrity = true", "integrity = { prefix = \"audit\" }"),
    );
    keygen(&lf.path("sign.pem"));
    common::write_lines(&lf.path("logs/a.log"), 0, 100);
    lf.run_once();
    assert!(!walk(&lf.path("archive/audit/_digests")).is_empty());
    assert_eq!(verify(&lf).0, Some(0));
    // Planted beside the sink's objects, older than the digest: found although the digests
    // live under another prefix.
    let p = lf.path("archive/logs/jobs/acct0/planted.ndjson.gz");
    std::fs::write(&p, b"not from logferry").unwrap();
    let f = std::fs::File::options().write(true).open(&p).unwrap();
    f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
    let (code, report) = verify(&lf);
    assert_eq!(code, Some(1));
    assert!(integrity::kinds(&report).contains("foreign"), "{report:#}");
}
