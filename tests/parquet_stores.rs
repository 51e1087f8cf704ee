//! Parquet archives in S3 (moto, read back with boto3), Azure Blob (Azurite, read back with
//! Microsoft's Python SDK) and encrypted on a directory (decrypted, then read), each read by
//! pyarrow and DuckDB through scripts/read_parquet.py.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn reader(root: &Path) -> serde_json::Value {
    let out = Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/read_parquet.py"))
        .arg(root)
        .output()
        .unwrap();
    succeeded(&out);
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The `id` of every row's record, and every file's partitions checked against `_time`.
fn ids(got: &serde_json::Value) -> BTreeSet<u64> {
    let mut out = BTreeSet::new();
    for f in got["files"].as_array().unwrap() {
        for r in f["rows"].as_array().unwrap() {
            let t = r["_time"].as_str().unwrap();
            assert_eq!(f["partitions"]["year"], &t[..4], "{}", f["path"]);
            assert_eq!(f["partitions"]["hour"], &t[11..13], "{}", f["path"]);
            let v: serde_json::Value = serde_json::from_str(r["record"].as_str().unwrap()).unwrap();
            out.insert(v["id"].as_u64().unwrap());
        }
    }
    out
}

fn write_records(lf: &Lf, n: u64) {
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!(
            "{{\"ts\":\"2026-05-0{}T1{}:00:00Z\",\"id\":{i},\"account_id\":\"acct{}\",\"card\":\"PLANTED-{i}\"}}\n",
            1 + i % 2,
            i % 3,
            i % 2
        ));
    }
    std::fs::write(lf.path("logs/a.log"), text).unwrap();
}

#[test]
fn parquet_objects_in_s3_are_read_back_by_boto3_and_pyarrow() {
    let moto = Moto::start();
    let _bucket = moto.bucket("lake", false);
    let lf = Lf::new(&format!(
        r#"[sources.jobs]
include = ["{{dir}}/logs/*.log"]
sinks = ["s3"]
timestamp_field = "ts"
[sinks.s3]
type = "s3"
allow_plaintext_credentials = true
bucket = "lake"
region = "us-east-1"
endpoint = "{}"
force_path_style = true
encoding = "parquet"
compression = "snappy"
key = "jobs/year=%Y/month=%m/day=%d/hour=%H/{{batch_id}}.parquet"
"#,
        moto.endpoint
    ));
    write_records(&lf, 300);
    lf.run_once_env(&moto.env());
    let down = lf.path("down");
    let out = Command::new(python())
        .args([
            "-c",
            "import boto3,sys,os,json\n\
             c=boto3.client('s3',endpoint_url=sys.argv[1],region_name='us-east-1')\n\
             seen=[]\n\
             for o in c.list_objects_v2(Bucket='lake')['Contents']:\n\
             \x20 h=c.head_object(Bucket='lake',Key=o['Key'])\n\
             \x20 seen.append([h['ContentType'],h.get('ContentEncoding')])\n\
             \x20 p=os.path.join(sys.argv[2],o['Key']); os.makedirs(os.path.dirname(p),exist_ok=True)\n\
             \x20 c.download_file('lake',o['Key'],p)\n\
             print(json.dumps(seen))",
            &moto.endpoint,
        ])
        .arg(&down)
        .envs(moto.env())
        .output()
        .unwrap();
    succeeded(&out);
    let heads: Vec<(String, Option<String>)> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!heads.is_empty());
    for (ty, enc) in &heads {
        assert_eq!(ty, "application/vnd.apache.parquet");
        assert_eq!(enc, &None, "never wrapped in another compression");
    }
    let got = reader(&down.join("jobs"));
    assert_eq!(ids(&got), (0..300).collect());
    for f in got["files"].as_array().unwrap() {
        assert_eq!(f["codecs"], serde_json::json!(["SNAPPY"]));
    }
}

#[test]
fn parquet_blobs_in_azure_are_read_back_by_the_azure_sdk_and_pyarrow() {
    let az = Azurite::start();
    az.create_container("lake");
    let conn = az.connection_string();
    let lf = Lf::new(&format!(
        r#"[sources.jobs]
include = ["{{dir}}/logs/*.log"]
sinks = ["blob"]
timestamp_field = "ts"
[sinks.blob]
type = "azure_blob"
allow_plaintext_credentials = true
container = "lake"
connection_string = "{conn}"
encoding = "parquet"
"#
    ));
    write_records(&lf, 300);
    lf.run_once();
    let down = lf.path("down");
    let out = Command::new(python())
        .args([
            "-c",
            "import sys,os,json\n\
             from azure.storage.blob import BlobServiceClient\n\
             c=BlobServiceClient.from_connection_string(sys.argv[1]).get_container_client('lake')\n\
             seen=[]\n\
             for b in c.list_blobs():\n\
             \x20 seen.append([b.content_settings.content_type,b.content_settings.content_encoding])\n\
             \x20 p=os.path.join(sys.argv[2],b.name); os.makedirs(os.path.dirname(p),exist_ok=True)\n\
             \x20 open(p,'wb').write(c.download_blob(b.name).readall())\n\
             print(json.dumps(seen))",
            &conn,
        ])
        .arg(&down)
        .output()
        .unwrap();
    succeeded(&out);
    let heads: Vec<(String, Option<String>)> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!heads.is_empty());
    for (ty, enc) in &heads {
        assert_eq!(ty, "application/vnd.apache.parquet");
        assert_eq!(enc, &None);
    }
    // The default key: source={source}/year=/month=/day=/hour=/{batch_id}.parquet.
    let got = reader(&down.join("source=jobs"));
    assert_eq!(ids(&got), (0..300).collect());
}

#[test]
fn encrypted_parquet_is_sealed_and_decrypts_to_a_file_pyarrow_reads() {
    let lf = Lf::new(
        r#"[keks.main]
provider = "local"
key_file = "{dir}/kek.hex"
[signing]
key_file = "{dir}/sign.pem"
[sources.jobs]
include = ["{dir}/logs/*.log"]
sinks = ["archive"]
timestamp_field = "ts"
[sinks.archive]
type = "directory"
path = "{dir}/archive"
encoding = "parquet"
key = "jobs/tenant={account_id}/year=%Y/month=%m/day=%d/hour=%H/{batch_id}.parquet"
encryption = { kek = "main", tenant_field = "account_id" }
"#,
    );
    write_key(&lf.path("kek.hex"), format!("{}\n", "3c".repeat(32)));
    common::integrity::keygen(&lf.path("sign.pem"));
    write_records(&lf, 300);
    lf.run_once();
    let objects: Vec<_> = walk(&lf.path("archive/jobs"));
    assert!(!objects.is_empty());
    for o in &objects {
        assert!(o.to_string_lossy().ends_with(".parquet.lfenc"), "{o:?}");
        let bytes = std::fs::read(o).unwrap();
        assert!(bytes.starts_with(b"LFENC"));
        assert!(
            !bytes.windows(4).any(|w| w == b"PAR1"),
            "sealed: no Parquet magic"
        );
        assert!(!bytes.windows(8).any(|w| w == b"PLANTED-"));
    }
    let out_dir = lf.path("plain");
    let mut cmd = Command::new(BIN);
    cmd.args(["decrypt", "--sink", "archive", "--out"])
        .arg(&out_dir)
        .arg("--config")
        .arg(&lf.cfg);
    for o in &objects {
        cmd.arg(o);
    }
    succeeded(&cmd.output().unwrap());
    // decrypt writes each object under its name, whole: Parquet files again.
    let files = walk(&out_dir);
    assert_eq!(files.len(), objects.len());
    let mut seen = BTreeSet::new();
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        assert!(
            bytes.starts_with(b"PAR1") && bytes.ends_with(b"PAR1"),
            "{f:?}"
        );
        // Read one at a time, whatever name decrypt gave it.
        let one = lf.path("one");
        let _ = std::fs::remove_dir_all(&one);
        std::fs::create_dir_all(&one).unwrap();
        std::fs::copy(f, one.join("x.parquet")).unwrap();
        let got = reader(&one);
        for r in got["files"][0]["rows"].as_array().unwrap() {
            let v: serde_json::Value = serde_json::from_str(r["record"].as_str().unwrap()).unwrap();
            seen.insert(v["id"].as_u64().unwrap());
        }
    }
    assert_eq!(seen, (0..300).collect());
}

/// An integrity stream over Parquet objects: digests cover them and `verify` is clean (their
/// hashes checked; replays are not counted inside Parquet files), and a changed byte is
/// found.
#[test]
fn verify_checks_a_parquet_archive_and_finds_a_changed_byte() {
    let lf = Lf::new(
        r#"[signing]
key_file = "{dir}/sign.pem"
[sources.jobs]
include = ["{dir}/logs/*.log"]
sinks = ["archive"]
timestamp_field = "ts"
[sinks.archive]
type = "directory"
path = "{dir}/archive"
encoding = "parquet"
integrity = true
"#,
    );
    common::integrity::keygen(&lf.path("sign.pem"));
    write_records(&lf, 300);
    lf.run_once();
    let (code, report) = common::integrity::verify(&lf, "archive", &[]);
    assert_eq!(code, Some(0), "{report}");
    let files: Vec<_> = walk(&lf.path("archive/source=jobs"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".parquet"))
        .collect();
    assert!(!files.is_empty());
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&files[0], bytes).unwrap();
    let (code, report) = common::integrity::verify(&lf, "archive", &[]);
    assert_eq!(code, Some(1));
    assert!(
        common::integrity::kinds(&report).contains("object_modified"),
        "{report}"
    );
}
