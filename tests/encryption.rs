//! Client-side encryption on a directory sink, end to end with the real binary: per
//! tenant-hour data keys, `decrypt`, `keys list`, `shred` with a signed receipt, retention,
//! and Python's `cryptography` as an independent reader of objects and receipts.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{python, walk, Lf, BIN};

const CONFIG: &str = r#"
[keks.main]
provider = "local"
key_file = "{dir}/kek.hex"

[signing]
key_file = "{dir}/sign.pem"

[sources.jobs]
include = ["{dir}/logs/*.log"]
sinks = ["archive"]
timestamp_field = "time"

[sinks.archive]
type = "directory"
path = "{dir}/archive"
key = "{source}/%Y/%m/%d/%H/{batch_id}.ndjson.gz"
encryption = { kek = "main", tenant_field = "account_id" RETENTION }
"#;

/// A configured encrypted archive with its KEK and signing key in place.
fn setup(retention: &str) -> Lf {
    let lf = Lf::new(&CONFIG.replace("RETENTION", retention));
    common::write_key(&lf.path("kek.hex"), format!("{}\n", "3c".repeat(32)));
    common::integrity::keygen(&lf.path("sign.pem"));
    lf
}

fn write_records(lf: &Lf, name: &str, records: &[(&str, String, u32)]) {
    let mut text = String::new();
    for (tenant, time, n) in records {
        text.push_str(&format!(
            "{{\"account_id\":\"{tenant}\",\"time\":\"{time}\",\"job\":{n},\"card\":\"PLANTED-{tenant}-{n}\"}}\n"
        ));
    }
    std::fs::write(lf.path(&format!("logs/{name}")), text).unwrap();
}

fn lf_cmd(lf: &Lf, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(&lf.cfg)
        .output()
        .expect("run logferry")
}

fn objects(lf: &Lf) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = walk(&lf.path("archive/jobs"));
    v.sort();
    v
}

/// The tenant and hour an object's header names, read as the Python script does.
fn header(path: &Path) -> (String, String) {
    let bytes = std::fs::read(path).unwrap();
    let (h, _) = logferry_vault::crypt::Header::read(&mut &bytes[..]).unwrap();
    (h.tenant, h.hour)
}

fn decrypt(lf: &Lf, obj: &Path) -> Output {
    lf_cmd(lf, &["decrypt", "--sink", "archive", obj.to_str().unwrap()])
}

/// `logferry ARGS` whose reader takes one byte of its output and closes the pipe.
fn read_one_byte(lf: &Lf, args: &[String]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(&lf.cfg)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 1];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut first).unwrap();
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

fn decrypt_py(lf: &Lf, obj: &Path) -> Output {
    Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/decrypt.py"))
        .arg("--kek-file")
        .arg(lf.path("kek.hex"))
        .arg("--root")
        .arg(lf.path("archive"))
        .arg(obj)
        .output()
        .expect("python3 runs")
}

fn jobs(stdout: &[u8]) -> BTreeSet<u64> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["job"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

fn no_plaintext_under(root: &Path) {
    for f in walk(root) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !bytes.windows(8).any(|w| w == b"PLANTED-"),
            "{} holds a planted value in clear",
            f.display()
        );
    }
}

#[test]
fn each_tenant_hour_has_its_key_and_shredding_one_erases_exactly_it() {
    let lf = setup("");
    let recs: Vec<(&str, String, u32)> = (0..40)
        .map(|i| {
            let tenant = if i % 2 == 0 { "acme" } else { "beta" };
            let hour = 10 + (i / 2) % 2;
            (tenant, format!("2026-12-03T{hour}:{:02}:00Z", i % 60), i)
        })
        .collect();
    write_records(&lf, "jobs.log", &recs);
    lf.run_once();

    let objs = objects(&lf);
    assert!(objs
        .iter()
        .all(|o| o.to_string_lossy().ends_with(".ndjson.gz.lfenc")));
    let hours: BTreeSet<(String, String)> = objs.iter().map(|o| header(o)).collect();
    let want: BTreeSet<(String, String)> = ["acme", "beta"]
        .iter()
        .flat_map(|t| ["2026-12-03T10", "2026-12-03T11"].map(|h| (t.to_string(), h.to_string())))
        .collect();
    assert_eq!(hours, want, "one partition per tenant and hour");
    no_plaintext_under(&lf.path("archive"));
    no_plaintext_under(&lf.path("data"));

    // A reader that stops early (`decrypt ... | head`): decrypt stops quietly, exit 0 (before,
    // "Broken pipe" for each object left and exit 1). Enough objects to fill the pipe.
    let mut args = vec!["decrypt".to_string(), "--sink".into(), "archive".into()];
    for _ in 0..60 {
        args.extend(objs.iter().map(|o| o.display().to_string()));
    }
    let out = read_one_byte(&lf, &args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!((out.status.code(), err.as_ref()), (Some(0), ""));
    // An object that failed before the reader stopped still fails the run.
    args.insert(
        3,
        lf.path("archive/jobs/missing.lfenc").display().to_string(),
    );
    let out = read_one_byte(&lf, &args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("missing.lfenc"), "{err}");

    // Both readers give back every record.
    let mut all = BTreeSet::new();
    for o in &objs {
        let out = decrypt(&lf, o);
        common::succeeded(&out);
        let py = decrypt_py(&lf, o);
        common::succeeded(&py);
        assert_eq!(jobs(&out.stdout), jobs(&py.stdout));
        all.extend(jobs(&out.stdout));
    }
    assert_eq!(all, (0..40).collect());

    let listed = lf_cmd(
        &lf,
        &["keys", "list", "--sink", "archive", "--tenant", "acme"],
    );
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(text.contains("2 keys"), "{text}");

    let out = lf_cmd(
        &lf,
        &[
            "shred",
            "--sink",
            "archive",
            "--tenant",
            "acme",
            "--from",
            "2026-12-03T10",
            "--to",
            "2026-12-03T10",
            "--by",
            "dpo@example.com",
        ],
    );
    common::succeeded(&out);

    for o in &objs {
        let shredded = header(o) == ("acme".to_string(), "2026-12-03T10".to_string());
        let (rs, py) = (decrypt(&lf, o), decrypt_py(&lf, o));
        assert_eq!(rs.status.success(), !shredded, "{}", o.display());
        assert_eq!(py.status.success(), !shredded, "{}", o.display());
        if shredded {
            assert!(String::from_utf8_lossy(&rs.stderr).contains("key shredded"));
            assert!(String::from_utf8_lossy(&py.stderr).contains("key shredded"));
        }
    }

    // The receipt names what went, and its signature checks out with the public key alone.
    let receipts = walk(&lf.path("archive/_receipts/acme"));
    assert_eq!(receipts.len(), 1);
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&receipts[0]).unwrap()).unwrap();
    let receipt: serde_json::Value =
        serde_json::from_str(stored["receipt"].as_str().unwrap()).unwrap();
    assert_eq!(receipt["tenant"], "acme");
    assert_eq!(receipt["hours"], serde_json::json!(["2026-12-03T10"]));
    assert_eq!(receipt["by"], "dpo@example.com");
    let check = Command::new(python())
        .args(["-c", VERIFY_PY])
        .arg(lf.path("sign.pem.pub"))
        .arg(&receipts[0])
        .output()
        .unwrap();
    common::succeeded(&check);
    // A changed receipt does not verify.
    let forged = lf.path("forged.json");
    let mut s = stored.clone();
    s["receipt"] =
        serde_json::Value::String(stored["receipt"].as_str().unwrap().replace("acme", "acmf"));
    std::fs::write(&forged, serde_json::to_vec(&s).unwrap()).unwrap();
    let check = Command::new(python())
        .args(["-c", VERIFY_PY])
        .arg(lf.path("sign.pem.pub"))
        .arg(&forged)
        .output()
        .unwrap();
    assert!(!check.status.success());
}

/// Verifies a stored receipt with Python's `cryptography` only.
const VERIFY_PY: &str = r#"
import json, sys, base64
from cryptography.hazmat.primitives.serialization import load_pem_public_key
pub = load_pem_public_key(open(sys.argv[1], "rb").read())
stored = json.load(open(sys.argv[2]))
pub.verify(base64.b64decode(stored["signature"]), stored["receipt"].encode())
"#;

#[test]
fn retention_shreds_only_hours_past_it_once_across_restarts() {
    let lf = setup(", retention = \"30d\"");
    let now = chrono::Utc::now();
    let old = (now - chrono::Duration::days(40)).to_rfc3339();
    let new = (now - chrono::Duration::minutes(5)).to_rfc3339();
    write_records(
        &lf,
        "a.log",
        &[
            ("acme", old.clone(), 1),
            ("acme", new.clone(), 2),
            ("beta", old, 3),
            ("beta", new, 4),
        ],
    );
    // The first run writes every hour (the pass at its start found nothing yet).
    lf.run_once();
    assert_eq!(walk(&lf.path("archive/_keys")).len(), 4);
    // The next start shreds the two old hours and signs a receipt per tenant.
    lf.run_once();
    assert_eq!(walk(&lf.path("archive/_keys")).len(), 2);
    assert_eq!(walk(&lf.path("archive/_receipts")).len(), 2);
    let mut readable = BTreeSet::new();
    for o in objects(&lf) {
        let out = decrypt(&lf, &o);
        if out.status.success() {
            readable.extend(jobs(&out.stdout));
        } else {
            assert!(String::from_utf8_lossy(&out.stderr).contains("key shredded"));
        }
    }
    assert_eq!(readable, BTreeSet::from([2, 4]));
    // Idempotent: nothing more to shred, no new receipt.
    lf.run_once();
    assert_eq!(walk(&lf.path("archive/_receipts")).len(), 2);
    assert_eq!(walk(&lf.path("archive/_keys")).len(), 2);
}

#[test]
fn a_running_process_shreds_at_start_and_counts_it() {
    let lf = setup(", retention = \"30d\"");
    let old = (chrono::Utc::now() - chrono::Duration::days(40)).to_rfc3339();
    write_records(&lf, "a.log", &[("acme", old.clone(), 1), ("beta", old, 2)]);
    lf.run_once();
    assert_eq!(walk(&lf.path("archive/_keys")).len(), 2);
    // Follow mode runs its first pass at start, then hourly.
    let running = lf.spawn();
    common::wait_until(
        std::time::Duration::from_secs(30),
        "two keys shredded",
        || running.metric("logferry_keys_shredded_total", "sink=\"archive\"") == 2.0,
    );
    assert!(walk(&lf.path("archive/_keys")).is_empty());
    assert_eq!(walk(&lf.path("archive/_receipts")).len(), 2);
    assert_eq!(
        running.metric("logferry_retention_failures_total", "sink=\"archive\""),
        0.0
    );
}

#[test]
fn a_changed_or_cut_object_is_refused_and_out_keeps_nothing_of_it() {
    let lf = setup(", segment_size = \"4KiB\"");
    // Incompressible values, so that the object spans several segments (whatever the gzip).
    let recs: Vec<(&str, String, u32)> = (0..600)
        .map(|i| ("acme", "2026-12-03T10:00:00Z".to_string(), i))
        .collect();
    let mut text = String::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for (t, time, n) in &recs {
        let noise: String = (0..32)
            .map(|_| {
                // xorshift: bytes gzip cannot shrink.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                format!("{:02x}", x as u8)
            })
            .collect();
        text.push_str(&format!(
            "{{\"account_id\":\"{t}\",\"time\":\"{time}\",\"job\":{n},\"noise\":\"{noise}\"}}\n"
        ));
    }
    std::fs::write(lf.path("logs/n.log"), text).unwrap();
    lf.run_once();
    let objs = objects(&lf);
    assert_eq!(objs.len(), 1);
    let good = std::fs::read(&objs[0]).unwrap();
    assert!(good.len() > 3 * 4096, "several segments: {}", good.len());

    let out_dir = lf.path("out");
    let mut flipped = good.clone();
    let at = good.len() / 2;
    flipped[at] ^= 1;
    // Cut right after the second segment: what is left authenticates, but its end is missing.
    let (_, aad) = logferry_vault::crypt::Header::read(&mut &good[..]).unwrap();
    let mut cut = good.clone();
    cut.truncate(aad.len() + 2 * (4096 + 16));
    let decrypt_to = |obj: &Path| {
        lf_cmd(
            &lf,
            &[
                "decrypt",
                "--sink",
                "archive",
                "--out",
                out_dir.to_str().unwrap(),
                obj.to_str().unwrap(),
            ],
        )
    };
    for (bytes, reason) in [(flipped, "failed authentication"), (cut, "truncated")] {
        std::fs::write(&objs[0], &bytes).unwrap();
        let out = decrypt_to(&objs[0]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains(reason), "{err}");
        assert!(
            walk(&out_dir).is_empty(),
            "nothing is left of a refused object"
        );
    }
    std::fs::write(&objs[0], &good).unwrap();
    let out = decrypt_to(&objs[0]);
    common::succeeded(&out);
    let written = walk(&out_dir);
    assert_eq!(written.len(), 1);
    assert_eq!(jobs(&std::fs::read(&written[0]).unwrap()).len(), recs.len());
}

#[test]
fn encryption_settings_are_checked_without_showing_the_key() {
    let lf = setup("");
    // `validate` refuses the file: its message.
    let refused = |text: Option<&str>| {
        if let Some(t) = text {
            std::fs::write(&lf.cfg, t).unwrap();
        }
        let out = lf_cmd(&lf, &["validate"]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{err}");
        err
    };
    common::write_key(&lf.path("kek.hex"), "hunter2-not-a-key\n");
    let err = refused(None);
    assert!(
        err.contains("keks.main") && err.contains("not 32 bytes"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");

    let text = std::fs::read_to_string(&lf.cfg).unwrap();
    common::write_key(&lf.path("kek.hex"), "3c".repeat(32));
    for (from, to, problem) in [
        ("kek = \"main\"", "kek = \"mian\"", "did you mean \"main\""),
        (
            "tenant_field = \"account_id\"",
            "tenant_field = \"\"",
            "tenant_field",
        ),
        (
            "tenant_field = \"account_id\"",
            "tenant_field = \"a\", retention = \"10m\"",
            "at least 1h",
        ),
        (
            "type = \"directory\"",
            "type = \"http\"\nurl = \"https://example.com\"",
            "is for object sinks",
        ),
    ] {
        let err = refused(Some(&text.replace(from, to)));
        assert!(err.contains(problem), "{to}: {err}");
    }
    // Retention writes signed receipts: it needs the signing key.
    let no_signing = text.replace("[signing]\nkey_file = \"", "#").replace(
        "tenant_field = \"account_id\"",
        "tenant_field = \"account_id\", retention = \"30d\"",
    );
    let err = refused(Some(&no_signing));
    assert!(err.contains("[signing] key_file"), "{err}");
}

#[test]
fn a_kill_9_with_batches_spooled_leaves_nothing_readable_and_loses_nothing() {
    let lf = setup("");
    let recs: Vec<(&str, String, u32)> = (0..400)
        .map(|i| {
            let tenant = if i % 2 == 0 { "acme" } else { "beta" };
            (tenant, format!("2026-12-03T{}:00:00Z", 10 + (i / 2) % 2), i)
        })
        .collect();
    write_records(&lf, "jobs.log", &recs);
    // The archive cannot be written (its path is a file): batches wait in the spool. Not
    // compressed, so that only encryption keeps the planted values out of sight.
    std::fs::write(lf.path("archive"), "not a directory").unwrap();
    let text = std::fs::read_to_string(&lf.cfg).unwrap();
    std::fs::write(&lf.cfg, text.replace("[sinks.archive]", "[sinks.archive]\ncompression = \"none\"\nbatch = { max_age = \"100ms\" }\nretry = { initial_backoff = \"50ms\", max_backoff = \"100ms\" }")).unwrap();
    let running = lf.spawn();
    let spooled = || {
        walk(&lf.path("data/spool/archive"))
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "batch"))
            .count()
    };
    let start = std::time::Instant::now();
    while spooled() < 4 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "batches in the spool: {}\n{}",
            spooled(),
            running.logs()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    running.kill9();
    no_plaintext_under(&lf.path("data"));
    assert!(
        !walk(&lf.path("data/spool-keys/archive")).is_empty(),
        "spool keys beside the spool"
    );

    // With the archive writable again, everything arrives.
    std::fs::remove_file(lf.path("archive")).unwrap();
    lf.run_once();
    let mut all = BTreeSet::new();
    for o in objects(&lf) {
        let out = decrypt(&lf, &o);
        common::succeeded(&out);
        all.extend(jobs(&out.stdout));
    }
    assert_eq!(all, (0..400).collect());
}

#[test]
fn memory_mode_writes_only_checkpoints_under_data_dir() {
    let lf = setup("");
    let text = std::fs::read_to_string(&lf.cfg).unwrap();
    std::fs::write(
        &lf.cfg,
        text.replace("[sinks.archive]", "[sinks.archive]\nbuffer = \"memory\""),
    )
    .unwrap();
    let recs: Vec<(&str, String, u32)> = (0..50)
        .map(|i| ("acme", "2026-12-03T10:00:00Z".to_string(), i))
        .collect();
    write_records(&lf, "jobs.log", &recs);
    lf.run_once();
    let under: Vec<String> = walk(&lf.path("data"))
        .iter()
        .map(|p| {
            p.strip_prefix(lf.path("data"))
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert!(
        under.iter().all(|p| p.starts_with("checkpoints/")),
        "{under:?}"
    );
    assert_eq!(walk(&lf.path("archive/_keys")).len(), 1);
    assert_eq!(objects(&lf).len(), 1);
}

#[test]
fn a_dead_letter_of_an_encrypted_sink_is_sealed_and_decrypt_reads_it() {
    let lf = setup("");
    let dead = dead_letter_of_twenty(&lf);
    no_plaintext_under(&lf.path("data"));
    let out = decrypt(&lf, &dead);
    common::succeeded(&out);
    assert_eq!(jobs(&out.stdout), (0..20).collect());
}

#[test]
fn spool_kek_seals_the_spool_of_a_sink_that_does_not_encrypt() {
    let dead = common::free_port();
    let lf = Lf::new(&format!(
        "[keks.main]\nprovider = \"local\"\nkey_file = \"{{dir}}/kek.hex\"\n\n[spool]\nkek = \"main\"\n\n[sources.jobs]\ninclude = [\"{{dir}}/logs/*.log\"]\nsinks = [\"endpoint\"]\n[sinks.endpoint]\ntype = \"http\"\nurl = \"http://127.0.0.1:{dead}/ingest\"\ncompression = \"none\"\nbatch = {{ max_age = \"100ms\" }}\nretry = {{ initial_backoff = \"50ms\", max_backoff = \"100ms\" }}\n"
    ));
    common::write_key(&lf.path("kek.hex"), "3c".repeat(32));
    let recs: Vec<(&str, String, u32)> = (0..50)
        .map(|i| ("acme", "2026-12-03T10:00:00Z".to_string(), i))
        .collect();
    write_records(&lf, "jobs.log", &recs);
    // Nothing listens: the batch waits in the spool, sealed.
    let running = lf.spawn();
    let spooled = || {
        walk(&lf.path("data/spool/endpoint"))
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "batch"))
            .collect::<Vec<_>>()
    };
    common::wait_until(
        std::time::Duration::from_secs(30),
        "a spooled batch",
        || !spooled().is_empty(),
    );
    running.kill9();
    no_plaintext_under(&lf.path("data"));
    let out = lf_cmd(
        &lf,
        &[
            "decrypt",
            "--sink",
            "endpoint",
            spooled()[0].to_str().unwrap(),
        ],
    );
    common::succeeded(&out);
    assert_eq!(jobs(&out.stdout), (0..50).collect());

    // Delivered in clear to the endpoint once it listens.
    let rx = common::receiver::Receiver::start(None);
    let text = std::fs::read_to_string(&lf.cfg).unwrap();
    std::fs::write(
        &lf.cfg,
        text.replace(
            &format!("http://127.0.0.1:{dead}/ingest"),
            &rx.url("/ingest"),
        ),
    )
    .unwrap();
    lf.run_once();
    let got: BTreeSet<u64> = rx
        .records()
        .iter()
        .map(|r| r["job"].as_u64().unwrap())
        .collect();
    assert_eq!(got, (0..50).collect());
}

/// libfaketime's preload library (Debian's faketime), for runs at a later hour.
fn libfaketime() -> PathBuf {
    let mut candidates = vec![PathBuf::from("/usr/lib/faketime/libfaketime.so.1")];
    if let Ok(rd) = std::fs::read_dir("/usr/lib") {
        for e in rd.flatten() {
            candidates.push(e.path().join("faketime/libfaketime.so.1"));
        }
    }
    candidates.into_iter().find(|p| p.is_file()).unwrap_or_else(|| {
        panic!("libfaketime is not installed: run scripts/test.sh once (it installs Debian's faketime)")
    })
}

/// `run --once` with the wall clock `offset` ahead (libfaketime's form: "+3h"); the monotonic
/// clock, which timers use, is left alone.
fn run_once_later(lf: &Lf, offset: &str) -> Output {
    let lib = libfaketime();
    lf.run_once_env(&[
        ("LD_PRELOAD", lib.to_str().unwrap()),
        ("FAKETIME", offset),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ])
}

/// A sink whose keys the file system refuses (names over 255 bytes, without compression): the
/// batch of jobs 0..20 is dead-lettered, sealed. Returns the dead letter.
fn dead_letter_of_twenty(lf: &Lf) -> PathBuf {
    let text = std::fs::read_to_string(&lf.cfg).unwrap();
    std::fs::write(
        &lf.cfg,
        text.replace(
            "key = \"{source}/%Y/%m/%d/%H/{batch_id}.ndjson.gz\"",
            "key = \"{account_id}{account_id}/{batch_id}.ndjson.gz\"\ncompression = \"none\"",
        ),
    )
    .unwrap();
    let tenant = "t".repeat(128);
    let recs: Vec<(&str, String, u32)> = (0..20)
        .map(|i| (tenant.as_str(), "2026-12-03T10:00:00Z".to_string(), i))
        .collect();
    write_records(lf, "jobs.log", &recs);
    lf.run_once_incomplete();
    let mut dead: Vec<PathBuf> = walk(&lf.path("data/dead-letter/archive"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "batch"))
        .collect();
    assert_eq!(dead.len(), 1, "{dead:?}");
    dead.pop().unwrap()
}

/// The header of the object in a spool-format file (magic line, metadata line, object).
fn sealed_header(path: &Path) -> logferry_vault::crypt::Header {
    let bytes = std::fs::read(path).unwrap();
    let rest = bytes
        .strip_prefix(b"LFSPOOL1\n".as_slice())
        .unwrap_or_else(|| panic!("{} is not in the spool's format", path.display()));
    let nl = rest.iter().position(|&b| b == b'\n').unwrap();
    logferry_vault::crypt::Header::read(&mut &rest[nl + 1..])
        .unwrap()
        .0
}

/// The spool keys of sink `archive`: (hour, key id).
fn spool_keys(lf: &Lf) -> Vec<(String, String)> {
    walk(&lf.path("data/spool-keys/archive/_keys/_spool"))
        .iter()
        .filter_map(|p| {
            let id = p.file_name()?.to_str()?.strip_suffix(".key")?.to_string();
            let hour = p.parent()?.file_name()?.to_str()?.to_string();
            Some((hour, id))
        })
        .collect()
}

#[test]
fn a_dead_letter_keeps_its_spool_key_while_later_runs_prune_the_others() {
    let lf = setup("");
    let dead = dead_letter_of_twenty(&lf);
    let dead_key = sealed_header(&dead).key_id;
    let hour_of = logferry_vault::keys::hour_of;
    // Runs 3 hours and 2 days ahead, each with a record to spool: the first spool write of a
    // run prunes the keys of hours no spooled batch needs.
    let mut later_hours = Vec::new();
    for (i, (offset, hours)) in [("+3h", 3), ("+48h", 48)].into_iter().enumerate() {
        let before = chrono::Utc::now() + chrono::Duration::hours(hours);
        write_records(
            &lf,
            &format!("later-{i}.log"),
            &[("acme", "2026-12-03T10:00:00Z".to_string(), 100 + i as u32)],
        );
        run_once_later(&lf, offset);
        let keys = spool_keys(&lf);
        // The run sealed its batch under a key of its own (faked) hour.
        assert!(
            keys.iter()
                .any(|(h, _)| h.as_str() >= hour_of(before).as_str()),
            "no spool key of {offset}: {keys:?}"
        );
        later_hours.push(hour_of(before));
        // Pruning never takes the dead letter's key.
        assert!(
            keys.iter().any(|(_, id)| *id == dead_key),
            "the dead letter's spool key was pruned at {offset}: {keys:?}"
        );
    }
    // Two days on, the key of the run 3 hours ahead was pruned: pruning ran.
    let keys = spool_keys(&lf);
    assert!(
        keys.iter()
            .all(|(h, id)| *id == dead_key || h.as_str() > later_hours[0].as_str()),
        "{keys:?}"
    );
    let out = decrypt(&lf, &dead);
    common::succeeded(&out);
    assert_eq!(jobs(&out.stdout), (0..20).collect());
}

#[test]
fn an_oversize_record_of_an_encrypted_sink_is_spilled_sealed_and_decrypt_reads_it() {
    let lf = setup("");
    let text = std::fs::read_to_string(&lf.cfg).unwrap();
    std::fs::write(
        &lf.cfg,
        text.replace(
            "timestamp_field = \"time\"\n",
            "timestamp_field = \"time\"\nmax_record_bytes = \"4KiB\"\noversize = \"dead_letter\"\n",
        ),
    )
    .unwrap();
    // Over several segments of the sealed file, planted values all along it.
    let pad = "PLANTED-pad-".repeat(15_000);
    let big = format!(
        "{{\"account_id\":\"acme\",\"time\":\"2026-12-03T10:00:00Z\",\"job\":99,\"card\":\"PLANTED-acme-99\",\"pad\":\"{pad}\"}}"
    );
    let recs: Vec<(&str, String, u32)> = (0..3)
        .map(|i| ("acme", "2026-12-03T10:00:00Z".to_string(), i))
        .collect();
    write_records(&lf, "jobs.log", &recs);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(lf.path("logs/jobs.log"))
        .unwrap();
    std::io::Write::write_all(&mut f, format!("{big}\n").as_bytes()).unwrap();
    drop(f);
    lf.run_once();

    no_plaintext_under(&lf.path("data"));
    no_plaintext_under(&lf.path("archive"));
    let spilled = walk(&lf.path("data/dead-letter/sources/jobs"));
    let sealed: Vec<&PathBuf> = spilled
        .iter()
        .filter(|p| p.to_string_lossy().ends_with(".json.sealed"))
        .collect();
    assert_eq!(sealed.len(), 1, "{spilled:?}");
    assert!(
        !spilled
            .iter()
            .any(|p| p.to_string_lossy().ends_with(".json")
                && !p.to_string_lossy().ends_with(".reason.json")),
        "a spill in clear: {spilled:?}"
    );
    let out = decrypt(&lf, sealed[0]);
    common::succeeded(&out);
    assert!(
        out.stdout == big.as_bytes(),
        "not the record, byte for byte: {} bytes",
        out.stdout.len()
    );
    // The record is not in the archive; the others are.
    let mut archived = BTreeSet::new();
    for o in objects(&lf) {
        let out = decrypt(&lf, &o);
        common::succeeded(&out);
        archived.extend(jobs(&out.stdout));
    }
    assert_eq!(archived, BTreeSet::from([0, 1, 2]));
}

#[test]
fn an_object_copied_over_another_tenants_object_is_refused() {
    let lf = setup("");
    let text = std::fs::read_to_string(&lf.cfg).unwrap();
    std::fs::write(
        &lf.cfg,
        text.replace(
            "key = \"{source}/%Y/%m/%d/%H/{batch_id}.ndjson.gz\"",
            "key = \"{source}/{account_id}/%Y/%m/%d/%H/{batch_id}.ndjson.gz\"",
        ),
    )
    .unwrap();
    let recs: Vec<(&str, String, u32)> = (0..20)
        .map(|i| {
            let tenant = if i < 10 { "acme" } else { "beta" };
            (tenant, "2026-12-03T10:00:00Z".to_string(), i)
        })
        .collect();
    write_records(&lf, "jobs.log", &recs);
    lf.run_once();
    let objs = objects(&lf);
    assert_eq!(objs.len(), 2, "{objs:?}");
    let of = |t: &str| {
        objs.iter()
            .find(|o| header(o).0 == t)
            .unwrap_or_else(|| panic!("no object of {t}: {objs:?}"))
            .clone()
    };
    let (acme, beta) = (of("acme"), of("beta"));
    let beta_bytes = std::fs::read(&beta).unwrap();
    let refused = |path: &Path| {
        let out = decrypt(&lf, path);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}: {err}", path.display());
        assert!(
            out.stdout.is_empty(),
            "{}: something was shown",
            path.display()
        );
        assert!(err.contains("refused"), "{err}");
        assert!(err.contains("tenant acme"), "{err}");
    };
    // Over beta's object.
    std::fs::copy(&acme, &beta).unwrap();
    refused(&beta);
    // Into beta's folder under its own name.
    let moved = beta.parent().unwrap().join(acme.file_name().unwrap());
    std::fs::copy(&acme, &moved).unwrap();
    refused(&moved);
    std::fs::remove_file(&moved).unwrap();
    // The originals, each in its place, are shown.
    std::fs::write(&beta, &beta_bytes).unwrap();
    for (o, want) in [
        (&acme, (0..10).collect::<BTreeSet<u64>>()),
        (&beta, (10..20).collect()),
    ] {
        let out = decrypt(&lf, o);
        common::succeeded(&out);
        assert_eq!(jobs(&out.stdout), want, "{}", o.display());
    }
}
