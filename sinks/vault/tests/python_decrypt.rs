//! The encrypted object format read by an independent reader: `scripts/decrypt.py`, Python's
//! `cryptography` and nothing of logferry.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use logferry_vault::crypt::{encrypt, DataKey};
use logferry_vault::ledger::{entry_key, LocalKek};

fn python() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let venv = root.join("target/test-tools/venv/bin/python3");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// Writes an object for `tenant`/`hour` and its ledger entry under `root`; returns its path
/// and its entry's.
fn archive(
    root: &Path,
    kek: &LocalKek,
    tenant: &str,
    hour: &str,
    records: &[u8],
) -> (PathBuf, PathBuf) {
    let dk = DataKey::generate(tenant, hour).unwrap();
    let entry = root.join(entry_key(tenant, hour, &dk.id));
    std::fs::create_dir_all(entry.parent().unwrap()).unwrap();
    std::fs::write(&entry, serde_json::to_vec(&kek.wrap(&dk).unwrap()).unwrap()).unwrap();
    // A small segment size so that the reader walks several segments.
    let obj = encrypt(&dk, &format!("batch-{tenant}-{hour}"), &gzip(records), 4096).unwrap();
    let path = root.join(format!("{tenant}-{hour}.ndjson.gz.lfenc"));
    std::fs::write(&path, obj).unwrap();
    (path, entry)
}

fn decrypt_py(kek_file: &Path, root: &Path, object: &Path) -> std::process::Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/decrypt.py");
    Command::new(python())
        .arg(script)
        .arg("--kek-file")
        .arg(kek_file)
        .arg("--root")
        .arg(root)
        .arg(object)
        .output()
        .expect("python3 runs")
}

#[test]
fn the_python_reader_decrypts_every_hour_but_the_shredded_one() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("archive");
    let kek_file = dir.path().join("kek.hex");
    std::fs::write(&kek_file, format!("{}\n", "5a".repeat(32))).unwrap();
    let kek = LocalKek::from_material("main", &std::fs::read(&kek_file).unwrap()).unwrap();

    let records: Vec<u8> = (0..20_000)
        .flat_map(|i| format!("{{\"job_id\":{i},\"account_id\":\"a\"}}\n").into_bytes())
        .collect();
    let (a10, a10_entry) = archive(&root, &kek, "a", "2026-12-03T10", &records);
    let (a11, _) = archive(&root, &kek, "a", "2026-12-03T11", &records);
    let (b10, _) = archive(&root, &kek, "b", "2026-12-03T10", b"{\"x\":1}\n");

    // Erase tenant a's hour 10 by deleting its ledger entry.
    std::fs::remove_file(a10_entry).unwrap();

    let out = decrypt_py(&kek_file, &root, &a10);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("key shredded: tenant a hour 2026-12-03T10"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = decrypt_py(&kek_file, &root, &a11);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, records);
    let out = decrypt_py(&kek_file, &root, &b10);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"{\"x\":1}\n");
}

#[test]
fn the_python_reader_refuses_a_changed_byte() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("archive");
    let kek_file = dir.path().join("kek.hex");
    std::fs::write(&kek_file, "5a".repeat(32)).unwrap();
    let kek = LocalKek::from_material("main", &std::fs::read(&kek_file).unwrap()).unwrap();
    let (obj, _) = archive(
        &root,
        &kek,
        "a",
        "2026-12-03T10",
        b"{\"secret\":\"s3cr3t\"}\n",
    );
    let mut bytes = std::fs::read(&obj).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&obj, bytes).unwrap();
    let out = decrypt_py(&kek_file, &root, &obj);
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("s3cr3t"));
}
