//! The `s3` sink against moto's S3 server, through aws-sdk-s3 on both sides.

mod common;

use common::*;
use std::io::Read;

fn config(bucket: &str, endpoint: &str, extra: &str) -> String {
    format!(
        r#"[sources.jobs]
include = ["{{dir}}/logs/*.log"]
sinks = ["s3"]
timestamp_field = "ts"
[sinks.s3]
type = "s3"
allow_plaintext_credentials = true
bucket = "{bucket}"
region = "us-east-1"
endpoint = "{endpoint}"
force_path_style = true
key = "{{source}}/{{account_id}}/%Y/%m/%d/{{batch_id}}.ndjson.gz"
retry = {{ initial_backoff = "50ms", max_backoff = "200ms" }}
{extra}
"#
    )
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn objects(c: &aws_sdk_s3::Client, bucket: &str) -> Vec<String> {
    let out = c.list_objects_v2().bucket(bucket).send().await.unwrap();
    let mut keys: Vec<String> = out
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .collect();
    keys.sort();
    keys
}

async fn records(c: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Vec<serde_json::Value> {
    let body = c
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    let mut raw = Vec::new();
    flate2::read::MultiGzDecoder::new(&body[..])
        .read_to_end(&mut raw)
        .unwrap();
    raw.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect()
}

#[test]
fn objects_carry_keys_content_encryption_class_tags_and_metadata() {
    let moto = Moto::start();
    let rt = rt();
    let c = rt.block_on(moto.client());
    rt.block_on(c.create_bucket().bucket("archive").send())
        .unwrap();
    let lf = Lf::new(&config(
        "archive",
        &moto.endpoint,
        "server_side_encryption = \"AES256\"\nstorage_class = \"STANDARD_IA\"\ntags = { team = \"sec ops\", retention = \"7y\" }\nmetadata = { origin = \"platform\" }",
    ));
    write_lines(&lf.path("logs/a.log"), 0, 3000);
    lf.run_once_env(&moto.env());
    let keys = rt.block_on(objects(&c, "archive"));
    assert_eq!(keys.len(), 3, "{keys:?}");
    let mut all = Vec::new();
    for k in &keys {
        assert!(
            k.starts_with("jobs/acct") && k.contains("/2026/11/23/") && k.ends_with(".ndjson.gz"),
            "{k}"
        );
        let recs = rt.block_on(records(&c, "archive", k));
        let acct = k.split('/').nth(1).unwrap();
        assert!(recs.iter().all(|r| r["account_id"] == acct));
        let head = rt
            .block_on(c.head_object().bucket("archive").key(k).send())
            .unwrap();
        assert_eq!(
            head.server_side_encryption().map(|s| s.as_str()),
            Some("AES256")
        );
        assert_eq!(
            head.storage_class().map(|s| s.as_str()),
            Some("STANDARD_IA")
        );
        assert_eq!(head.content_type(), Some("application/x-ndjson"));
        assert_eq!(head.content_encoding(), Some("gzip"));
        let meta = head.metadata().unwrap();
        assert_eq!(meta["origin"], "platform");
        assert_eq!(meta["record-count"], recs.len().to_string());
        assert!(k.contains(&meta["batch-id"]));
        assert_eq!(meta["sha256"].len(), 64);
        let tags = rt
            .block_on(c.get_object_tagging().bucket("archive").key(k).send())
            .unwrap();
        let mut t: Vec<(String, String)> = tags
            .tag_set()
            .iter()
            .map(|t| (t.key().to_string(), t.value().to_string()))
            .collect();
        t.sort();
        assert_eq!(
            t,
            vec![
                ("retention".into(), "7y".into()),
                ("team".into(), "sec ops".into())
            ]
        );
        all.extend(recs);
    }
    assert_eq!(assert_all_present(&all, 3000), 0);
    assert_eq!(all.len(), 3000);
}

#[test]
fn kms_encryption_headers_are_stored() {
    let moto = Moto::start();
    let rt = rt();
    let c = rt.block_on(moto.client());
    rt.block_on(c.create_bucket().bucket("kms").send()).unwrap();
    let lf = Lf::new(&config(
        "kms",
        &moto.endpoint,
        "server_side_encryption = \"aws:kms\"\nkms_key_id = \"arn:aws:kms:us-east-1:123456789012:key/test-key\"\nbucket_key_enabled = true\ncontent_type = \"application/jsonl\"",
    ));
    write_lines(&lf.path("logs/a.log"), 0, 10);
    lf.run_once_env(&moto.env());
    let k = rt.block_on(objects(&c, "kms"))[0].clone();
    let head = rt
        .block_on(c.head_object().bucket("kms").key(&k).send())
        .unwrap();
    assert_eq!(head.content_type(), Some("application/jsonl"));
    assert_eq!(
        head.server_side_encryption().map(|s| s.as_str()),
        Some("aws:kms")
    );
    assert_eq!(
        head.ssekms_key_id(),
        Some("arn:aws:kms:us-east-1:123456789012:key/test-key")
    );
}

#[test]
fn object_lock_retention_and_checksum_on_a_locked_bucket() {
    let moto = Moto::start();
    let rt = rt();
    let c = rt.block_on(moto.client());
    rt.block_on(
        c.create_bucket()
            .bucket("locked")
            .object_lock_enabled_for_bucket(true)
            .send(),
    )
    .unwrap();
    let lf = Lf::new(&config(
        "locked",
        &moto.endpoint,
        "object_lock = { mode = \"GOVERNANCE\", retain_days = 30 }",
    ));
    write_lines(&lf.path("logs/a.log"), 0, 10);
    lf.run_once_env(&moto.env());
    let k = rt.block_on(objects(&c, "locked"))[0].clone();
    let head = rt
        .block_on(
            c.head_object()
                .bucket("locked")
                .key(&k)
                .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
                .send(),
        )
        .unwrap();
    assert_eq!(
        head.object_lock_mode().map(|m| m.as_str()),
        Some("GOVERNANCE")
    );
    let until = head.object_lock_retain_until_date().unwrap().secs();
    let days = (until - chrono::Utc::now().timestamp()) as f64 / 86_400.0;
    assert!((29.0..=30.1).contains(&days), "retained {days} days");
    assert!(
        head.checksum_sha256().is_some(),
        "object lock writes carry a checksum"
    );
}

#[test]
fn large_batches_go_up_in_parts() {
    let moto = Moto::start();
    let rt = rt();
    let c = rt.block_on(moto.client());
    rt.block_on(c.create_bucket().bucket("big").send()).unwrap();
    let lf = Lf::new(&config(
        "big",
        &moto.endpoint,
        "compression = \"none\"\nmultipart_threshold = \"6MiB\"\npart_size = \"5MiB\"\nbatch = { max_bytes = \"64MiB\", max_records = 1000000 }",
    ).replace("{account_id}/", "").replace(".ndjson.gz", ".ndjson"));
    write_lines(&lf.path("logs/a.log"), 0, 80_000);
    lf.run_once_env(&moto.env());
    let keys = rt.block_on(objects(&c, "big"));
    assert_eq!(keys.len(), 1);
    let head = rt
        .block_on(c.head_object().bucket("big").key(&keys[0]).send())
        .unwrap();
    assert!(head.content_length().unwrap() > 6 << 20);
    assert!(
        head.e_tag().unwrap().contains("-2"),
        "multipart ETag: {:?}",
        head.e_tag()
    );
    let body = rt.block_on(async {
        c.get_object()
            .bucket("big")
            .key(&keys[0])
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes()
    });
    let recs: Vec<serde_json::Value> = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(assert_all_present(&recs, 80_000), 0);
    let uploads = rt
        .block_on(c.list_multipart_uploads().bucket("big").send())
        .unwrap();
    assert!(uploads.uploads().is_empty(), "no upload left open");
}

#[test]
fn a_missing_bucket_goes_to_dead_letter_with_the_reason() {
    let moto = Moto::start();
    let lf = Lf::new(&config("no-such-bucket", &moto.endpoint, ""));
    write_lines(&lf.path("logs/a.log"), 0, 5);
    let out = lf.run_once_incomplete_env(&moto.env());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("NoSuchBucket"), "{stderr}");
    let note = lf.dead_letter_note("s3");
    assert!(
        note["reason"].as_str().unwrap().contains("NoSuchBucket"),
        "{note}"
    );
    assert!(
        note["reason"].as_str().unwrap().contains("no-such-bucket"),
        "{note}"
    );
}

#[test]
fn throttling_is_retried_and_retry_after_honoured() {
    let moto = Moto::start();
    let rt = rt();
    let c = rt.block_on(moto.client());
    rt.block_on(c.create_bucket().bucket("slow").send())
        .unwrap();
    let upstream = moto.port();
    let proxy = FaultProxy::start(
        upstream,
        Fault {
            drop_response: false,
            method: "PUT",
            path_contains: "",
            count: 2,
            status: "503 Slow Down",
            headers: vec![("Retry-After", "1".into()), ("Content-Type", "application/xml".into())],
            body: "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>".into(),
        },
    );
    let lf = Lf::new(
        &config("slow", &format!("http://127.0.0.1:{}", proxy.port), "")
            .replace("{account_id}/", ""),
    );
    write_lines(&lf.path("logs/a.log"), 0, 100);
    let out = lf.run_once_env(&moto.env());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("SlowDown"), "{stderr}");
    let keys = rt.block_on(objects(&c, "slow"));
    assert_eq!(keys.len(), 1, "one object, however many attempts");
    assert_eq!(rt.block_on(records(&c, "slow", &keys[0])).len(), 100);
    let hits = proxy.hits.lock().unwrap().clone();
    assert_eq!(
        hits.len(),
        3,
        "two refused attempts and one that went through: {hits:?}"
    );
    assert!(
        hits.iter().all(|(_, line)| line == &hits[0].1),
        "every attempt used the same key"
    );
    for w in hits.windows(2) {
        let gap = w[1].0 - w[0].0;
        assert!(
            gap >= std::time::Duration::from_millis(950),
            "waited {gap:?}, Retry-After asked for 1s"
        );
    }
}

#[test]
fn validate_check_sinks_reports_reachability_and_missing_buckets() {
    let moto = Moto::start();
    let rt = rt();
    let c = rt.block_on(moto.client());
    rt.block_on(c.create_bucket().bucket("present").send())
        .unwrap();
    for (bucket, code, expect) in [
        ("present", 0, "ok"),
        ("absent", 1, "bucket \"absent\" does not exist"),
    ] {
        let lf = Lf::new(&config(bucket, &moto.endpoint, ""));
        let (status, stdout) = lf.check_sinks(&moto.env());
        assert_eq!(status, Some(code), "{stdout}");
        assert!(
            stdout.contains("sink checks") && stdout.contains(expect),
            "{stdout}"
        );
    }
    // The probe object is cleaned up.
    assert!(rt.block_on(objects(&c, "present")).is_empty());
}

#[test]
fn static_keys_from_files_and_a_crc32c_checksum() {
    let moto = Moto::start();
    let rt = rt();
    let c = rt.block_on(moto.client());
    rt.block_on(c.create_bucket().bucket("keys").send())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("id"), "testing\n").unwrap();
    std::fs::write(dir.path().join("secret"), "testing\n").unwrap();
    let lf = Lf::new(&config(
        "keys",
        &moto.endpoint,
        &format!(
            "checksum = \"crc32c\"\naccess_key_id_file = \"{}\"\nsecret_access_key_file = \"{}\"",
            dir.path().join("id").display(),
            dir.path().join("secret").display()
        ),
    ));
    write_lines(&lf.path("logs/a.log"), 0, 10);
    // No credentials in the environment: only the files can sign.
    let out = std::process::Command::new(BIN)
        .args(["run", "--once", "--config"])
        .arg(&lf.cfg)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let keys = rt.block_on(objects(&c, "keys"));
    assert_eq!(keys.len(), 3, "one object per account");
    for k in &keys {
        let head = rt
            .block_on(
                c.head_object()
                    .bucket("keys")
                    .key(k)
                    .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
                    .send(),
            )
            .unwrap();
        assert!(head.checksum_crc32_c().is_some());
    }
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("testing"),
        "no key in the logs"
    );
}

#[test]
fn role_arn_is_assumed_through_sts() {
    let moto = Moto::start();
    let rt = rt();
    let c = rt.block_on(moto.client());
    rt.block_on(c.create_bucket().bucket("role").send())
        .unwrap();
    let upstream = moto.port();
    // STS calls go through a counting proxy (no faults) to moto's STS.
    let sts = FaultProxy::start(
        upstream,
        Fault {
            drop_response: false,
            method: "POST",
            path_contains: "",
            count: 0,
            status: "200 OK",
            headers: vec![],
            body: String::new(),
        },
    );
    let lf = Lf::new(&config(
        "role",
        &moto.endpoint,
        "role_arn = \"arn:aws:iam::123456789012:role/logferry-writer\"\nexternal_id = \"ext-1\"\nsession_name = \"logferry-test\"",
    ));
    write_lines(&lf.path("logs/a.log"), 0, 10);
    let sts_url = format!("http://127.0.0.1:{}", sts.port);
    let mut env = moto.env();
    env.push(("AWS_ENDPOINT_URL_STS", &sts_url));
    lf.run_once_env(&env);
    assert_eq!(rt.block_on(objects(&c, "role")).len(), 3);
    let hits = sts.hits.lock().unwrap().clone();
    assert!(!hits.is_empty(), "AssumeRole went to STS");
}

#[test]
fn a_failed_multipart_upload_is_aborted() {
    let moto = Moto::start();
    let rt = rt();
    let c = rt.block_on(moto.client());
    rt.block_on(c.create_bucket().bucket("abort").send())
        .unwrap();
    let upstream = moto.port();
    // CompleteMultipartUpload (POST ...?uploadId=) is refused once, permanently.
    let proxy = FaultProxy::start(
        upstream,
        Fault {
            drop_response: false,
            method: "POST",
            path_contains: "uploadId=",
            count: 1,
            status: "400 Bad Request",
            headers: vec![("Content-Type", "application/xml".into())],
            body: "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>InvalidPart</Code><Message>One or more of the specified parts could not be found.</Message></Error>".into(),
        },
    );
    let lf = Lf::new(
        &config(
            "abort",
            &format!("http://127.0.0.1:{}", proxy.port),
            "compression = \"none\"\nmultipart_threshold = \"6MiB\"\npart_size = \"5MiB\"\nbatch = { max_bytes = \"64MiB\", max_records = 1000000 }",
        )
        .replace("{account_id}/", ""),
    );
    write_lines(&lf.path("logs/a.log"), 0, 80_000);
    lf.run_once_incomplete_env(&moto.env());
    let uploads = rt
        .block_on(c.list_multipart_uploads().bucket("abort").send())
        .unwrap();
    assert!(
        uploads.uploads().is_empty(),
        "the failed upload was aborted"
    );
    assert!(rt.block_on(objects(&c, "abort")).is_empty());
    let dead = lf.files("data/dead-letter/s3");
    assert!(dead.iter().any(|f| f.ends_with(".reason.json")), "{dead:?}");
}

/// Creates (through moto's IAM, with boto3 from the test venv) a user that may list the bucket
/// but not write to it, and returns its access key and secret. (AWS authorises HeadBucket with
/// s3:ListBucket; moto asks for an action of its own, so the policy names both.)
fn read_only_user(endpoint: &str, bucket: &str) -> (String, String) {
    let script = format!(
        r#"
import boto3, json
kw = dict(endpoint_url="{endpoint}", region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
iam = boto3.client("iam", **kw)
s3 = boto3.client("s3", **kw)
s3.create_bucket(Bucket="{bucket}")
iam.create_user(UserName="reader")
iam.put_user_policy(UserName="reader", PolicyName="list-only", PolicyDocument=json.dumps({{
    "Version": "2012-10-17",
    "Statement": [{{"Effect": "Allow", "Action": ["s3:ListBucket", "s3:HeadBucket"], "Resource": "arn:aws:s3:::{bucket}"}}]}}))
k = iam.create_access_key(UserName="reader")["AccessKey"]
print(k["AccessKeyId"], k["SecretAccessKey"])
"#
    );
    let out = std::process::Command::new(tool("python"))
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut it = text.split_whitespace();
    (
        it.next().unwrap().to_string(),
        it.next().unwrap().to_string(),
    )
}

#[test]
fn access_denied_is_permanent_and_names_the_permission() {
    // Authentication on after the set-up calls (create bucket, user, policy, key).
    let moto = Moto::start_env(&[("INITIAL_NO_AUTH_ACTION_COUNT", "4")]);
    let (id, secret) = read_only_user(&moto.endpoint, "guarded");
    let lf = Lf::new(&config("guarded", &moto.endpoint, ""));
    write_lines(&lf.path("logs/a.log"), 0, 5);
    let env = [
        ("AWS_ACCESS_KEY_ID", id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    let (status, stdout) = lf.check_sinks(&env);
    assert_eq!(status, Some(1), "{stdout}");
    assert!(
        stdout.contains("grant s3:PutObject on arn:aws:s3:::guarded/*"),
        "{stdout}"
    );
    let out = lf.run_once_incomplete_env(&env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("AccessDenied"), "{stderr}");
    assert!(!stderr.contains(&secret), "the secret key is never logged");
    let note = lf.dead_letter_note("s3");
    assert!(
        note["reason"].as_str().unwrap().contains("s3:PutObject"),
        "{note}"
    );
}

/// A raw HTTPS request to moto, which wants an Authorization header but checks no signature
/// unless told to.
fn https(ca: &tls::TestCa, port: u16, method: &str, path: &str) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = tls::connect(&ca.client_config(), port);
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: AWS4-HMAC-SHA256 Credential=testing/20261123/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let (status, _, body) = parse_response(&raw);
    (status, body)
}

#[test]
fn a_private_ca_for_an_s3_compatible_store() {
    let ca = tls::TestCa::new();
    let moto = Moto::start_https(&ca);
    let port = moto.port();
    assert_eq!(https(&ca, port, "PUT", "/private").0, 200);
    let lf = Lf::new(&config(
        "private",
        &moto.endpoint,
        &format!("tls = {{ ca_file = \"{}\" }}", ca.ca_pem.display()),
    ));
    write_lines(&lf.path("logs/a.log"), 0, 300);
    lf.run_once_env(&moto.env());
    let (st, list) = https(&ca, port, "GET", "/private?list-type=2");
    assert_eq!(st, 200);
    let list = String::from_utf8_lossy(&list).into_owned();
    let keys: Vec<&str> = list
        .split("<Key>")
        .skip(1)
        .filter_map(|s| s.split("</Key>").next())
        .collect();
    assert_eq!(keys.len(), 3, "{list}");
    let mut all = Vec::new();
    for k in keys {
        let (st, body) = https(&ca, port, "GET", &format!("/private/{k}"));
        assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&body[..]), &mut raw)
            .unwrap();
        all.extend(
            raw.split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| serde_json::from_slice::<serde_json::Value>(l).unwrap()),
        );
    }
    assert_eq!(assert_all_present(&all, 300), 0);

    // Without the CA the store's certificate is not trusted: nothing is written.
    let lf = Lf::new(&config("private", &moto.endpoint, ""));
    let (status, stdout) = lf.check_sinks(&moto.env());
    assert_eq!(status, Some(1), "{stdout}");
}
