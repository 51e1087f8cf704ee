//! The directory sink against someone who can write into the archive directory: links planted
//! there are refused and named, and nothing outside the archive is written or truncated.

mod common;

use std::os::unix::fs::symlink;
use std::time::Duration;

use common::*;

#[test]
fn links_planted_in_the_archive_are_never_written_through() {
    let lf = Lf::new(
        "[keks.main]\nprovider = \"local\"\nkey_file = \"{dir}/kek.hex\"\n\n[sources.jobs]\ninclude = [\"{dir}/logs/*.log\"]\nsinks = [\"archive\"]\ntimestamp_field = \"ts\"\n[sinks.archive]\ntype = \"directory\"\npath = \"{dir}/archive\"\nkey = \"{source}/{account_id}/{batch_id}.ndjson.gz\"\nencryption = { kek = \"main\", tenant_field = \"account_id\" }\n",
    );
    let kek = "7e".repeat(32);
    common::write_key(&lf.path("kek.hex"), &kek);
    let outside = lf.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::create_dir_all(lf.path("archive/jobs")).unwrap();
    // The probe's and the temp files' old fixed names, pointing at the KEK; a tenant's folder
    // pointing outside the archive.
    symlink(lf.path("kek.hex"), lf.path("archive/.logferry-tmp.check")).unwrap();
    symlink(lf.path("kek.hex"), lf.path("archive/.logferry-check")).unwrap();
    symlink(&outside, lf.path("archive/jobs/acct1")).unwrap();
    write_lines(&lf.path("logs/a.log"), 0, 300);
    let out = std::process::Command::new(BIN)
        .args(["run", "--once", "--config"])
        .arg(&lf.cfg)
        .output()
        .unwrap();
    // A batch was set aside: the run says it did not finish.
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(std::fs::read_to_string(lf.path("kek.hex")).unwrap(), kek);
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing lands outside the archive"
    );
    assert!(err.contains("symbolic link"), "{err}");
    assert!(err.contains("archive/jobs/acct1"), "{err}");
    // acct0's and acct2's records are delivered; acct1's batch is set aside, counted.
    for t in ["acct0", "acct2"] {
        let delivered = walk(&lf.path(&format!("archive/jobs/{t}")));
        assert_eq!(delivered.len(), 1, "{delivered:?}");
    }
    let dead: Vec<_> = walk(&lf.path("data/dead-letter/archive"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".batch"))
        .collect();
    assert_eq!(dead.len(), 1, "{dead:?}");
}

/// One tenant whose key cannot be written (a link planted at its ledger folder) is parked;
/// the other tenants' records are delivered, and the parked batch stays spooled.
#[test]
fn one_tenant_that_cannot_get_a_key_does_not_stop_the_others() {
    let lf = Lf::new(
        "shutdown_timeout = \"2s\"\n[keks.main]\nprovider = \"local\"\nkey_file = \"{dir}/kek.hex\"\n\n[sources.jobs]\ninclude = [\"{dir}/logs/*.log\"]\nsinks = [\"archive\"]\ntimestamp_field = \"ts\"\n[sinks.archive]\ntype = \"directory\"\npath = \"{dir}/archive\"\nkey = \"{source}/{account_id}/{batch_id}.ndjson.gz\"\nencryption = { kek = \"main\", tenant_field = \"account_id\" }\nbatch = { max_records = 20, max_age = \"100ms\" }\nretry = { initial_backoff = \"50ms\", max_backoff = \"200ms\" }\n",
    );
    write_key(&lf.path("kek.hex"), "7e".repeat(32));
    let outside = lf.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::create_dir_all(lf.path("archive/_keys")).unwrap();
    symlink(&outside, lf.path("archive/_keys/acct1")).unwrap();
    // An entry for acct0 that sorts first and that logferry did not write: passed over, counted.
    let planted = lf.path(&format!(
        "archive/_keys/acct0/2026-11-23T10/{}.key",
        "0".repeat(32)
    ));
    std::fs::create_dir_all(planted.parent().unwrap()).unwrap();
    std::fs::write(&planted, "{}").unwrap();
    write_lines(&lf.path("logs/a.log"), 0, 600);
    let run = lf.spawn();
    let delivered = |t: &str| walk(&lf.path(&format!("archive/jobs/{t}"))).len();
    // Every batch of the tenants that flow is delivered while acct1's stays parked.
    wait_until(Duration::from_secs(60), "acct0 and acct2 delivered", || {
        delivered("acct0") == 10 && delivered("acct2") == 10
    });
    wait_until(Duration::from_secs(30), "acct1 parked in /readyz", || {
        run.get("/readyz")
            .is_some_and(|(_, body)| body.contains("\"parked\"") && body.contains("acct1@"))
    });
    assert!(run.metric("logferry_batches_parked", "sink=\"archive\"") >= 1.0);
    assert!(run.metric("logferry_ledger_forged_entries_total", "sink=\"archive\"") >= 1.0);
    assert!(run.logs().contains("parked"));
    assert!(!lf.path("archive/jobs/acct1").exists());
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    // Cut short at the stop: acct1's batches stay spooled for the next run, not dead-lettered.
    let status = run.term(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1));
    let spooled = walk(&lf.path("data/spool/archive")).len();
    assert!(spooled >= 1, "{spooled}");
    assert!(!lf.path("data/dead-letter/archive").exists());
}

/// Everything logferry writes under data_dir and into the archive (keys, state, journal,
/// checkpoints, spool, dead letters, objects) is readable by its owner only.
#[test]
fn files_logferry_writes_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let lf = Lf::new(
        "[keks.main]\nprovider = \"local\"\nkey_file = \"{dir}/kek.hex\"\n[signing]\nkey_file = \"{dir}/sign.pem\"\n\n[sources.jobs]\ninclude = [\"{dir}/logs/*.log\"]\nsinks = [\"archive\"]\ntimestamp_field = \"ts\"\nmax_record_bytes = \"1KiB\"\noversize = \"dead_letter\"\n[sinks.archive]\ntype = \"directory\"\npath = \"{dir}/archive\"\nkey = \"{source}/{account_id}/{batch_id}.ndjson.gz\"\nencryption = { kek = \"main\", tenant_field = \"account_id\" }\nintegrity = true\n",
    );
    write_key(&lf.path("kek.hex"), "7e".repeat(32));
    common::integrity::keygen(&lf.path("sign.pem"));
    write_lines(&lf.path("logs/a.log"), 0, 30);
    std::fs::write(
        lf.path("logs/b.log"),
        format!(
            "{{\"id\":99,\"account_id\":\"acct0\",\"ts\":\"2026-11-23T10:00:00Z\",\"pad\":\"{}\"}}\n",
            "x".repeat(4096)
        ),
    )
    .unwrap();
    lf.run_once();
    let mut seen = 0;
    for root in ["data", "archive"] {
        for p in walk(&lf.path(root)) {
            let mode = std::fs::symlink_metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode & 0o077, 0, "{} is {mode:o}", p.display());
            seen += 1;
        }
    }
    // Keys, state, journal, checkpoints, the sealed spill, objects, sidecars, digests.
    assert!(seen >= 10, "{seen}");
    assert!(walk(&lf.path("data/dead-letter/sources"))
        .iter()
        .any(|p| p.to_string_lossy().ends_with(".json.sealed")));
}

/// The key ledger is never read as logs, even when an include pattern covers it, and verify
/// names a ledger entry logferry did not write.
#[test]
fn the_ledger_is_never_read_as_logs_and_a_forged_entry_is_named_by_verify() {
    let lf = Lf::new(
        "[keks.main]\nprovider = \"local\"\nkey_file = \"{dir}/kek.hex\"\n[signing]\nkey_file = \"{dir}/sign.pem\"\n\n[sources.jobs]\ninclude = [\"{dir}/logs/*.log\", \"{dir}/archive/_keys/**/*.key\"]\nformat = \"text\"\nsinks = [\"archive\"]\n[sinks.archive]\ntype = \"directory\"\npath = \"{dir}/archive\"\nkey = \"{source}/{batch_id}.ndjson.gz\"\nencryption = { kek = \"main\", tenant_field = \"account_id\" }\nintegrity = true\n",
    );
    write_key(&lf.path("kek.hex"), "7e".repeat(32));
    common::integrity::keygen(&lf.path("sign.pem"));
    write_lines(&lf.path("logs/a.log"), 0, 30);
    lf.run_once();
    // A second run sees the entries the first one wrote: refused, never shipped.
    write_lines(&lf.path("logs/a.log"), 30, 30);
    let out = lf.run_once();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.lines()
            .any(|l| l.contains("file not read") && l.contains("_keys")),
        "{err}"
    );
    let (code, report) = common::integrity::verify(&lf, "archive", &[]);
    assert_eq!(code, Some(0), "{report:#}");
    let entries = walk(&lf.path("archive/_keys"));
    let forged = entries[0].with_file_name(format!("{}.key", "ab".repeat(16)));
    std::fs::write(&forged, "{}").unwrap();
    let (code, report) = common::integrity::verify(&lf, "archive", &[]);
    assert_eq!(code, Some(1), "{report:#}");
    assert!(
        common::integrity::kinds(&report).contains("key_forged"),
        "{report:#}"
    );
    // A link in the ledger: named by verify and by `keys list`, which then fails.
    std::fs::remove_file(&forged).unwrap();
    symlink(lf.path("kek.hex"), entries[0].with_file_name("link.key")).unwrap();
    let (code, report) = common::integrity::verify(&lf, "archive", &[]);
    assert_eq!(code, Some(1), "{report:#}");
    assert!(
        common::integrity::kinds(&report).contains("symlink"),
        "{report:#}"
    );
    let out = std::process::Command::new(BIN)
        .args(["keys", "list", "--sink", "archive", "--config"])
        .arg(&lf.cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("FORGED"));
    // Something hidden under the receipts' place is named too.
    std::fs::create_dir_all(lf.path("archive/_receipts/acct0")).unwrap();
    std::fs::write(
        lf.path("archive/_receipts/acct0/stash.bin"),
        "x".repeat(1000),
    )
    .unwrap();
    let (_, report) = common::integrity::verify(&lf, "archive", &[]);
    assert!(
        common::integrity::kinds(&report).contains("receipt_forged"),
        "{report:#}"
    );
}

/// `run --once` that cannot deliver one tenant (parked for good) still ends at SIGTERM, within
/// the shutdown timeout, saying it was cut short; a file where a tenant's folder should be sets
/// that tenant's batch aside without holding the others.
#[test]
fn a_once_run_with_a_parked_tenant_ends_at_sigterm_and_a_file_in_a_tenants_path_holds_no_one() {
    let lf = Lf::new(
        "shutdown_timeout = \"2s\"\n[keks.main]\nprovider = \"local\"\nkey_file = \"{dir}/kek.hex\"\n\n[sources.jobs]\ninclude = [\"{dir}/logs/*.log\"]\nsinks = [\"archive\"]\ntimestamp_field = \"ts\"\n[sinks.archive]\ntype = \"directory\"\npath = \"{dir}/archive\"\nkey = \"{source}/{account_id}/{batch_id}.ndjson.gz\"\nencryption = { kek = \"main\", tenant_field = \"account_id\" }\nbatch = { max_records = 20, max_age = \"100ms\" }\nretry = { initial_backoff = \"50ms\", max_backoff = \"200ms\" }\n",
    );
    write_key(&lf.path("kek.hex"), "7e".repeat(32));
    std::fs::create_dir_all(lf.path("archive/_keys")).unwrap();
    symlink(lf.path("logs"), lf.path("archive/_keys/acct1")).unwrap();
    std::fs::create_dir_all(lf.path("archive/jobs")).unwrap();
    std::fs::write(lf.path("archive/jobs/acct2"), "a file, not a folder").unwrap();
    write_lines(&lf.path("logs/a.log"), 0, 600);
    let mut child = std::process::Command::new(BIN)
        .args(["run", "--once", "--config"])
        .arg(&lf.cfg)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(60), "acct0 delivered", || {
        walk(&lf.path("archive/jobs/acct0")).len() == 10
    });
    wait_until(Duration::from_secs(60), "acct2 set aside", || {
        walk(&lf.path("data/dead-letter/archive"))
            .iter()
            .filter(|p| p.to_string_lossy().ends_with(".batch"))
            .count()
            == 10
    });
    let sent = std::time::Instant::now();
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(20),
            "run --once did not end after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(1));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("parked"), "{err}");
    // acct1's batches wait in the spool for the next run.
    assert!(!walk(&lf.path("data/spool/archive")).is_empty());
}

/// A ledger entry copied aside before a shred and put back after it brings the erased hour
/// back: verify names it from the signed receipt.
#[test]
fn a_key_put_back_after_its_shredding_is_named_by_verify() {
    let lf = Lf::new(
        "[keks.main]\nprovider = \"local\"\nkey_file = \"{dir}/kek.hex\"\n[signing]\nkey_file = \"{dir}/sign.pem\"\n\n[sources.jobs]\ninclude = [\"{dir}/logs/*.log\"]\nsinks = [\"archive\"]\ntimestamp_field = \"ts\"\n[sinks.archive]\ntype = \"directory\"\npath = \"{dir}/archive\"\nkey = \"{source}/{account_id}/{batch_id}.ndjson.gz\"\nencryption = { kek = \"main\", tenant_field = \"account_id\" }\nintegrity = true\n",
    );
    write_key(&lf.path("kek.hex"), "7e".repeat(32));
    common::integrity::keygen(&lf.path("sign.pem"));
    write_lines(&lf.path("logs/a.log"), 0, 30);
    lf.run_once();
    let entries = walk(&lf.path("archive/_keys/acct0"));
    assert_eq!(entries.len(), 1);
    let kept = std::fs::read(&entries[0]).unwrap();
    let out = std::process::Command::new(BIN)
        .args([
            "shred",
            "--sink",
            "archive",
            "--tenant",
            "acct0",
            "--from",
            "2026-11-23T10",
            "--to",
            "2026-11-23T10",
            "--by",
            "test",
            "--config",
        ])
        .arg(&lf.cfg)
        .output()
        .unwrap();
    common::succeeded(&out);
    let (code, report) = common::integrity::verify(&lf, "archive", &[]);
    assert_eq!(code, Some(0), "{report:#}");
    std::fs::write(&entries[0], kept).unwrap();
    let (code, report) = common::integrity::verify(&lf, "archive", &[]);
    assert_eq!(code, Some(1), "{report:#}");
    assert!(
        common::integrity::kinds(&report).contains("key_resurrected"),
        "{report:#}"
    );
}
