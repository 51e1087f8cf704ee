//! `logferry export` on an encrypted integrity archive of 3 tenants x 48 hours, in a directory,
//! in S3 (moto) and in Azure Blob Storage (Azurite): sub-ranges, tenants, `--where` and
//! `--where-hmac` give the records the same selection over the input gives; a modified, a
//! deleted and a shredded object are each reported as such and the rest is exported; every
//! export leaves a signed access receipt that `verify` (and, on a directory, the Python checker)
//! accepts.

mod common;

use common::integrity::{self, keygen, Archive};
use common::*;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const TENANTS: [&str; 3] = ["acme", "beta", "gamma"];
const HOURS: u64 = 48;
const PER_HOUR: u64 = 5;

const CONFIG: &str = r#"
[keks.main]
provider = "local"
key_file = "{dir}/kek.hex"
[signing]
key_file = "{dir}/sign.pem"
[sources.jobs]
include = ["{dir}/logs/*.log"]
sinks = ["archive"]
timestamp_field = "ts"
masking = "pii"
[masking.pii]
detectors = []
[[masking.pii.rules]]
name = "user_email"
paths = ["user_email"]
action = "hmac"
key_file = "{dir}/hmac.key"
[sinks.archive]
key = "{source}/{account_id}/%Y/%m/%d/%H/{batch_id}.ndjson.gz"
integrity = true
encryption = { kek = "main", tenant_field = "account_id" }
"#;

/// The input: (id, tenant, hour index, minute, status, recipe, e-mail) as records.
fn input() -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut id = 0u64;
    for h in 0..HOURS {
        for t in TENANTS {
            for k in 0..PER_HOUR {
                let (day, hour) = (3 + h / 24, h % 24);
                out.push(serde_json::json!({
                    "ts": format!("2026-03-{day:02}T{hour:02}:{:02}:00Z", k * 11),
                    "id": id,
                    "account_id": t,
                    "status": if id.is_multiple_of(5) { "failed" } else { "succeeded" },
                    "recipe_id": if id.is_multiple_of(7) { 4711 } else { 100 },
                    "user_email": format!("user{}@example.com", id % 13),
                }));
                id += 1;
            }
        }
    }
    out
}

fn setup(sink: &str) -> Lf {
    setup_with(CONFIG, sink)
}

fn setup_with(config: &str, sink: &str) -> Lf {
    let lf = Lf::new(&format!("{config}{sink}"));
    write_key(&lf.path("kek.hex"), format!("{}\n", "3c".repeat(32)));
    write_key(&lf.path("hmac.key"), "hmac-key-0123456789abcdef");
    keygen(&lf.path("sign.pem"));
    let text: String = input().iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(lf.path("logs/a.log"), text).unwrap();
    lf
}

/// `export --json --out FILE ARGS`: (exit code, summary, ids exported).
fn export(
    lf: &Lf,
    env: &[(&str, &str)],
    args: &[&str],
) -> (Option<i32>, serde_json::Value, BTreeSet<u64>) {
    let out = lf.path(&format!("out-{}.ndjson.gz", fastrand::u64(..)));
    let o = Command::new(BIN)
        .args([
            "export",
            "--sink",
            "archive",
            "--by",
            "auditor@example.com",
            "--json",
        ])
        .args(args)
        .arg("--out")
        .arg(&out)
        .arg("--config")
        .arg(&lf.cfg)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let summary: serde_json::Value = serde_json::from_slice(&o.stderr).unwrap_or_else(|_| {
        panic!(
            "export printed no summary: {}",
            String::from_utf8_lossy(&o.stderr)
        )
    });
    let text = String::from_utf8(decompress(&out)).unwrap();
    let ids = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert!(
                !l.contains("@example.com"),
                "only pseudonyms leave the archive: {l}"
            );
            v["id"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(
        summary["output_sha256"].as_str().unwrap(),
        sha256_file(&out),
        "the summary names the file's hash"
    );
    (o.status.code(), summary, ids)
}

fn sha256_file(p: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(p).unwrap()))
}

/// The same selection over the input, by plain code.
fn expected(keep: impl Fn(&serde_json::Value) -> bool) -> BTreeSet<u64> {
    input()
        .iter()
        .filter(|r| keep(r))
        .map(|r| r["id"].as_u64().unwrap())
        .collect()
}

fn ts(r: &serde_json::Value) -> &str {
    r["ts"].as_str().unwrap()
}

/// The one key-ledger entry under `prefix`.
fn keys_of(archive: &dyn Archive, prefix: &str) -> String {
    let keys: Vec<String> = archive
        .list()
        .into_iter()
        .filter(|k| k.starts_with(prefix))
        .collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    keys[0].clone()
}

/// The exports every store must answer, then tampering with `archive`.
fn scenario(lf: &Lf, env: &[(&str, &str)], archive: &dyn Archive) {
    lf.run_once_env(env);
    let exports = std::cell::Cell::new(0);
    let run = |args: &[&str]| {
        exports.set(exports.get() + 1);
        export(lf, env, args)
    };

    // Everything.
    let (code, s, ids) = run(&["--from", "2026-03-03", "--to", "2026-03-05"]);
    assert_eq!(code, Some(0), "{s}");
    assert_eq!(ids, expected(|_| true));
    assert_eq!(s["complete"], true);
    assert_eq!(s["objects_read"], HOURS * 3);

    // A sub-range starting inside an hour: records by their own time.
    let (code, s, ids) = run(&["--from", "2026-03-03T10:30:00Z", "--to", "2026-03-04T02"]);
    assert_eq!(code, Some(0), "{s}");
    assert_eq!(
        ids,
        expected(|r| ts(r) >= "2026-03-03T10:30:00Z" && ts(r) < "2026-03-04T02")
    );
    // The tenants' folders were listed, then each tenant's 16 hours.
    assert_eq!(s["prefixes"], 3 * 16, "{s}");
    assert_eq!(s["objects_read"], 3 * 16, "{s}");

    // One tenant, one day: only its hours' prefixes are listed.
    let (code, s, ids) = run(&[
        "--from",
        "2026-03-04",
        "--to",
        "2026-03-05",
        "--tenant",
        "beta",
    ]);
    assert_eq!(code, Some(0), "{s}");
    assert_eq!(
        ids,
        expected(|r| r["account_id"] == "beta" && ts(r) >= "2026-03-04")
    );
    assert_eq!(s["prefixes"], 24, "{s}");
    assert_eq!(s["objects_read"], 24, "{s}");

    // Conditions, and a person found by the pseudonym of their address.
    let (code, s, ids) = run(&[
        "--from",
        "2026-03-03",
        "--to",
        "2026-03-05",
        "--where",
        "status=failed",
        "--where",
        "recipe_id!=4711",
        "--where-hmac",
        "user_email=user3@example.com",
    ]);
    assert_eq!(code, Some(0), "{s}");
    let want = expected(|r| {
        r["status"] == "failed" && r["recipe_id"] != 4711 && r["user_email"] == "user3@example.com"
    });
    assert!(!want.is_empty());
    assert_eq!(ids, want);

    // Every export so far is on record, signed.
    let (code, report) = integrity::verify(lf, "archive", env);
    assert_eq!(code, Some(0), "{report}");
    let access = report["access"].as_array().unwrap();
    assert_eq!(access.len(), exports.get(), "{report}");
    assert!(access.iter().all(|a| a["by"] == "auditor@example.com"));

    // One object modified (acme 05h), one deleted (beta 06h), one tenant-hour shredded
    // (gamma 07h).
    let keys = integrity::data_keys(archive);
    let find = |t: &str, h: &str| {
        keys.iter()
            .find(|k| k.contains(&format!("/{t}/2026/03/03/{h}/")))
            .unwrap()
            .clone()
    };
    let (modified, deleted, shredded) =
        (find("acme", "05"), find("beta", "06"), find("gamma", "07"));
    let mut bytes = archive.get(&modified);
    let at = bytes.len() - 5;
    bytes[at] ^= 1;
    archive.put(&modified, &bytes);
    archive.delete(&deleted);
    // A data key deleted without a shredding receipt (acme 08h): not an erasure.
    let unkeyed = find("acme", "08");
    let key_entry = keys_of(archive, "_keys/acme/2026-03-03T08/");
    archive.delete(&key_entry);
    let o = Command::new(BIN)
        .args([
            "shred",
            "--sink",
            "archive",
            "--tenant",
            "gamma",
            "--from",
            "2026-03-03T07",
            "--to",
            "2026-03-03T07",
            "--by",
            "dpo",
            "--config",
        ])
        .arg(&lf.cfg)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    succeeded(&o);
    let (code, s, ids) = run(&["--from", "2026-03-03T04", "--to", "2026-03-03T09"]);
    assert_eq!(code, Some(1), "{s}");
    assert_eq!(s["complete"], false);
    let hour = |r: &serde_json::Value| ts(r)[11..13].to_string();
    assert_eq!(
        ids,
        expected(|r| {
            let (t, h) = (r["account_id"].as_str().unwrap(), hour(r));
            ts(r) >= "2026-03-03T04"
                && ts(r) < "2026-03-03T09"
                && !(t == "acme" && h == "05")
                && !(t == "beta" && h == "06")
                && !(t == "gamma" && h == "07")
                && !(t == "acme" && h == "08")
        }),
        "the rest is exported"
    );
    let problems: Vec<(String, String)> = s["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["kind"].as_str().unwrap().into(),
                p["key"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        problems.iter().cloned().collect::<BTreeSet<_>>(),
        BTreeSet::from([
            ("modified".into(), modified.clone()),
            ("missing".into(), deleted.clone()),
            ("key_missing".into(), unkeyed.clone()),
        ]),
        "{s}"
    );
    assert!(s["problems"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["batch_id"].is_string()));
    let erased = s["erased"].as_array().unwrap();
    assert_eq!(erased.len(), 1, "{s}");
    assert_eq!(erased[0]["key"], shredded.as_str());
    assert_eq!(erased[0]["tenant"], "gamma");
    assert_eq!(erased[0]["hour"], "2026-03-03T07");

    // verify names the key deleted without a receipt too (the shredded hour's key is erased
    // by a signed receipt: not a problem).
    let (code, report) = integrity::verify(lf, "archive", env);
    assert_eq!(code, Some(1));
    let missing_keys: Vec<&str> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"] == "key_missing")
        .map(|p| p["what"].as_str().unwrap())
        .collect();
    assert_eq!(missing_keys.len(), 1, "{report}");
    assert!(missing_keys[0].starts_with(&unkeyed), "{report}");

    // A range the tampering does not touch is complete.
    let (code, s, _) = run(&["--from", "2026-03-04", "--to", "2026-03-04T06"]);
    assert_eq!(code, Some(0), "{s}");
}

#[test]
fn export_from_a_directory_archive_selects_verifies_decrypts_and_leaves_signed_receipts() {
    let lf = setup("type = \"directory\"\npath = \"{dir}/archive\"\n");
    scenario(&lf, &[], &integrity::Dir(lf.path("archive")));
    // The receipts, checked without logferry.
    let o = Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/verify_digests.py"))
        .arg(lf.path("archive"))
        .arg(lf.path("sign.pem.pub"))
        .arg("--ledger")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("access receipts: 6 signed"), "{text}");
    assert!(!text.contains("access receipt not signed"), "{text}");

    // As one Parquet file that pyarrow and DuckDB read: the same records, times in micros.
    std::fs::create_dir_all(lf.path("pq")).unwrap();
    let o = Command::new(BIN)
        .args([
            "export", "--sink", "archive", "--by", "analyst", "--format", "parquet",
        ])
        .args([
            "--from",
            "2026-03-04",
            "--to",
            "2026-03-04T12",
            "--tenant",
            "acme",
        ])
        .arg("--out")
        .arg(lf.path("pq/acme.parquet"))
        .arg("--config")
        .arg(&lf.cfg)
        .output()
        .unwrap();
    succeeded(&o);
    let got = Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/read_parquet.py"))
        .arg(lf.path("pq"))
        .output()
        .unwrap();
    succeeded(&got);
    let got: serde_json::Value = serde_json::from_slice(&got.stdout).unwrap();
    let file = &got["files"][0];
    let ids: BTreeSet<u64> = file["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let rec: serde_json::Value =
                serde_json::from_str(r["record"].as_str().unwrap()).unwrap();
            // `_time` is the record's own time.
            assert_eq!(
                r["_time"].as_str().unwrap()[..16],
                rec["ts"].as_str().unwrap()[..16]
            );
            assert_eq!(r["account_id"], "acme", "the key's field is a column");
            rec["id"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(
        ids,
        expected(|r| r["account_id"] == "acme" && ts(r) >= "2026-03-04" && ts(r) < "2026-03-04T12")
    );
    assert_eq!(got["duckdb_rows"], ids.len());
    let types: Vec<(String, String)> = file["schema"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().into(),
                f["type"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(types[0], ("_time".into(), "timestamp[us, tz=UTC]".into()));
}

#[test]
fn export_from_s3() {
    let moto = Moto::start();
    let (rt, c) = moto.bucket("audit", false);
    // zstd frames here (gzip members elsewhere).
    let lf = setup_with(
        &CONFIG.replace(".ndjson.gz", ".ndjson.zst"),
        &format!(
            "type = \"s3\"\nallow_plaintext_credentials = true\nbucket = \"audit\"\nregion = \"us-east-1\"\nendpoint = \"{}\"\nforce_path_style = true\ncompression = \"zstd\"\n",
            moto.endpoint
        ),
    );
    let s3 = integrity::S3 {
        rt: &rt,
        c: &c,
        bucket: "audit",
    };
    scenario(&lf, &moto.env(), &s3);
}

#[test]
fn export_from_azure_blob_storage() {
    let az = Azurite::start();
    az.create_container("audit");
    let lf = setup(&format!(
        "type = \"azure_blob\"\nallow_plaintext_credentials = true\ncontainer = \"audit\"\nconnection_string = \"{}\"\n",
        az.connection_string()
    ));
    let blob = integrity::Blob {
        az: &az,
        container: "audit",
    };
    scenario(&lf, &[], &blob);
}

#[test]
fn replay_into_an_http_receiver_survives_kill_9_and_delivers_every_selected_record() {
    let rx = common::receiver::Receiver::start(None);
    let lf = setup(&format!(
        "type = \"directory\"\npath = \"{{dir}}/archive\"\n\
         [sinks.web]\ntype = \"http\"\nurl = \"{}\"\n\
         batch = {{ max_records = 10, max_age = \"100ms\" }}\n\
         rate_limit = {{ requests_per_second = 10 }}\n",
        rx.url("/ingest")
    ));
    lf.run_once();
    let replay = |lf: &Lf| {
        let mut c = Command::new(BIN);
        c.args([
            "replay",
            "--from-sink",
            "archive",
            "--to-sink",
            "web",
            "--by",
            "ops",
        ])
        .args([
            "--from",
            "2026-03-03T06",
            "--to",
            "2026-03-04T06",
            "--where",
            "status=succeeded",
        ])
        .arg("--config")
        .arg(&lf.cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
        c
    };
    let want = expected(|r| {
        ts(r) >= "2026-03-03T06" && ts(r) < "2026-03-04T06" && r["status"] == "succeeded"
    });
    // Killed half way (the rate limit makes shipping take seconds): started afresh rather
    // than resumed, it would send that half again.
    let mut child = replay(&lf)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(
        std::time::Duration::from_secs(60),
        "half the records at the receiver",
        || rx.records().len() >= want.len() / 2,
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let before = rx.records().len();
    assert!(
        before < want.len(),
        "killed before the end ({before} of {})",
        want.len()
    );
    // Run again: it continues from its checkpoint.
    let o = replay(&lf).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("resuming"), "{err}");
    let got: Vec<u64> = rx
        .records()
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    let distinct: BTreeSet<u64> = got.iter().copied().collect();
    assert_eq!(distinct, want, "every selected record, nothing else");
    // Duplicates: the batches delivered and not yet acknowledged at the kill (in flight: the
    // http sink's concurrency, 4) and those read but not yet durable (the channel's 2, the
    // writer's and the compression queue's, one open batch), 10 records each.
    let dups = got.len() - distinct.len();
    assert!(dups <= (4 + 2 + 1 + 1 + 1) * 10, "{dups} duplicates");
    assert!(
        !lf.path("data/replay").read_dir().unwrap().any(|_| true),
        "the copy is removed"
    );
    // On record, with where it went.
    let (_, report) = integrity::verify(&lf, "archive", &[]);
    let access = report["access"].as_array().unwrap();
    assert_eq!(access.len(), 1, "{report}");
    assert_eq!(access[0]["action"], "replay");
    assert_eq!(access[0]["records"], want.len());
}

/// What the outsider tried: a plaintext object planted in an encrypting archive, `--out` at a
/// FIFO, a reader that goes away; each is refused or on record, none passes as a clean export.
#[test]
fn planted_plaintext_special_outputs_and_failed_outputs_are_never_a_clean_export() {
    let lf = setup(
        "type = \"directory\"\npath = \"{dir}/archive\"\n\
         [sinks.copy]\ntype = \"directory\"\npath = \"{dir}/copy\"\n\
         key = \"{source}/{account_id}/%Y/%m/%d/%H/{batch_id}.ndjson.gz\"\n\
         encryption = { kek = \"main\", tenant_field = \"account_id\" }\n\
         [sinks.mirror]\ntype = \"directory\"\npath = \"{dir}\"\n",
    );
    lf.run_once();
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(["export", "--sink", "archive", "--by", "t"])
            .args(args)
            .arg("--config")
            .arg(&lf.cfg)
            .output()
            .unwrap()
    };
    // Plaintext where the sink only writes sealed objects: read (allowed unverified), refused.
    let dir = lf.path("archive/jobs/acme/2026/03/03/04");
    let planted = dir.join("01a24eb9-0000-7000-8000-000000000000.ndjson.gz");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(
        &mut gz,
        b"{\"ts\":\"2026-03-03T04:30:00Z\",\"account_id\":\"acme\",\"status\":\"PLANTED\"}\n",
    )
    .unwrap();
    std::fs::write(&planted, gz.finish().unwrap()).unwrap();
    let o = run(&[
        "--from",
        "2026-03-03T04",
        "--to",
        "2026-03-03T05",
        "--allow-unverified",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&o.stdout).contains("PLANTED"));
    let s: serde_json::Value = serde_json::from_slice(&o.stderr).unwrap();
    let kinds: Vec<&str> = s["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["key"]
                .as_str()
                .unwrap()
                .ends_with("000000000000.ndjson.gz")
        })
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["unverified", "unreadable"], "{s}");
    assert!(s.to_string().contains("not encrypted"), "{s}");
    std::fs::remove_file(&planted).unwrap();

    // Another sink's shredding receipt (same signing key) erases nothing here: a key deleted
    // with such a receipt copied beside it is still a key deleted without a trace.
    let copy = |from: &Path, to: &Path| {
        assert!(Command::new("cp")
            .arg("-r")
            .arg(from)
            .arg(to)
            .status()
            .unwrap()
            .success());
    };
    std::fs::create_dir_all(lf.path("copy")).unwrap();
    copy(&lf.path("archive/_keys"), &lf.path("copy/_keys"));
    let o = Command::new(BIN)
        .args([
            "shred",
            "--sink",
            "copy",
            "--tenant",
            "beta",
            "--from",
            "2026-03-03T05",
            "--to",
            "2026-03-03T05",
            "--by",
            "x",
            "--config",
        ])
        .arg(&lf.cfg)
        .output()
        .unwrap();
    succeeded(&o);
    std::fs::remove_dir_all(lf.path("archive/_keys/beta/2026-03-03T05")).unwrap();
    copy(&lf.path("copy/_receipts"), &lf.path("archive/_receipts"));
    let o = run(&[
        "--from",
        "2026-03-03T05",
        "--to",
        "2026-03-03T06",
        "--tenant",
        "beta",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let s: serde_json::Value = serde_json::from_slice(&o.stderr).unwrap();
    assert_eq!(s["problems"][0]["kind"], "key_missing", "{s}");
    assert_eq!(s["objects_erased"], 0, "{s}");

    // Replay into a sink that writes in the archive's parent folder: refused.
    let o = Command::new(BIN)
        .args([
            "replay",
            "--from-sink",
            "archive",
            "--to-sink",
            "mirror",
            "--by",
            "x",
            "--from",
            "2026-03-03T05",
            "--to",
            "2026-03-03T06",
            "--config",
        ])
        .arg(&lf.cfg)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not replayed into itself"));

    // A clear value asked for in a pseudonymised field: refused before anything is read (it
    // would match nothing, and stay in the signed receipt for good).
    let o = run(&[
        "--from",
        "2026-03-03T04",
        "--to",
        "2026-03-03T05",
        "--where",
        "user_email=user3@example.com",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("use --where-hmac user_email=VALUE"), "{err}");

    // --out at a FIFO (as at a device): refused, the FIFO left as it is.
    let fifo = lf.path("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let o = run(&[
        "--from",
        "2026-03-03T04",
        "--to",
        "2026-03-03T05",
        "--out",
        fifo.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a regular file"));
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());

    // A reader that goes away: exit 1, and the access is on record all the same.
    let mut child = Command::new(BIN)
        .args([
            "export",
            "--sink",
            "archive",
            "--by",
            "gone",
            "--from",
            "2026-03-03",
            "--to",
            "2026-03-05",
            "--config",
        ])
        .arg(&lf.cfg)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("the output failed"), "{err}");
    let (_, report) = integrity::verify(&lf, "archive", &[]);
    let access = report["access"].as_array().unwrap();
    let gone: Vec<&serde_json::Value> = access.iter().filter(|a| a["by"] == "gone").collect();
    assert_eq!(gone.len(), 1, "{report}");
    assert!(
        gone[0]["outcome"]
            .as_str()
            .unwrap()
            .starts_with("output failed"),
        "{report}"
    );
}

#[test]
fn a_replay_whose_records_are_refused_keeps_them_and_never_says_complete() {
    let rx = common::receiver::Receiver::start(None);
    rx.script(common::receiver::Fault::Status {
        status: 400,
        headers: vec![],
        body: "no".into(),
    });
    let lf = setup(&format!(
        "type = \"directory\"\npath = \"{{dir}}/archive\"\n[sinks.web]\ntype = \"http\"\nurl = \"{}\"\n",
        rx.url("/ingest")
    ));
    lf.run_once();
    let replay = || {
        Command::new(BIN)
            .args([
                "replay",
                "--from-sink",
                "archive",
                "--to-sink",
                "web",
                "--by",
                "ops",
            ])
            .args([
                "--from",
                "2026-03-03T05",
                "--to",
                "2026-03-03T07",
                "--config",
            ])
            .arg(&lf.cfg)
            .output()
            .unwrap()
    };
    for attempt in 0..2 {
        let o = replay();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "attempt {attempt}: {err}");
        assert!(
            err.contains("the replay is not complete"),
            "attempt {attempt}: {err}"
        );
    }
    let dead = walk(&lf.path("data/replay"));
    assert!(
        dead.iter()
            .any(|p| p.to_string_lossy().contains("dead-letter")),
        "the refused batches are kept: {dead:?}"
    );
}
