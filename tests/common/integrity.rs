//! The tampering suite of the integrity tests, the same on every store: each kind of tampering
//! is done through the store's own API, `logferry verify` must name it and exit 1, and the
//! archive verifies clean again once it is undone.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use super::{Lf, BIN};

/// A store as the tests tamper with it: keys relative to the sink's root.
pub trait Archive {
    fn list(&self) -> Vec<String>;
    fn get(&self, key: &str) -> Vec<u8>;
    fn put(&self, key: &str, bytes: &[u8]);
    fn delete(&self, key: &str);
}

pub fn keygen(out: &Path) {
    let o = Command::new(BIN)
        .args(["keygen", "--out"])
        .arg(out)
        .output()
        .unwrap();
    super::succeeded(&o);
}

/// `logferry verify --json`: (exit code, report).
pub fn verify(lf: &Lf, sink: &str, env: &[(&str, &str)]) -> (Option<i32>, serde_json::Value) {
    verify_with(lf, sink, env, &[])
}

/// `verify --json` with more arguments: (exit code, report).
pub fn verify_with(
    lf: &Lf,
    sink: &str,
    env: &[(&str, &str)],
    args: &[&str],
) -> (Option<i32>, serde_json::Value) {
    let out = Command::new(BIN)
        .args(["verify", "--json", "--sink", sink, "--config"])
        .arg(&lf.cfg)
        .args(args)
        .envs(env.iter().copied())
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

pub fn kinds(report: &serde_json::Value) -> BTreeSet<String> {
    report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap().to_string())
        .collect()
}

/// Data objects: not digests, ledger entries, sidecars or probes.
pub fn data_keys(a: &dyn Archive) -> Vec<String> {
    let mut v: Vec<String> = a
        .list()
        .into_iter()
        .filter(|k| {
            !k.starts_with("_")
                && !k.ends_with(".meta.json")
                && !k.rsplit('/').next().unwrap_or("").starts_with('.')
        })
        .collect();
    v.sort();
    v
}

pub fn digest_keys(a: &dyn Archive) -> Vec<String> {
    let mut v: Vec<String> = a
        .list()
        .into_iter()
        .filter(|k| k.starts_with("_digests/"))
        .collect();
    v.sort();
    v
}

/// The digest `text` with its last entry dropped, signed with the key in `pem`.
pub fn resigned(text: &[u8], pem: &Path) -> Vec<u8> {
    let other =
        logferry_integrity::signing::SigningKey::from_pem(&std::fs::read_to_string(pem).unwrap())
            .unwrap();
    let text = String::from_utf8_lossy(text);
    let mut body: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    body["entries"].as_array_mut().unwrap().pop();
    let line = body.to_string();
    let sig =
        serde_json::json!({"signature": other.sign(line.as_bytes()), "public_key_sha256": "x"});
    format!("{line}\n{sig}\n").into_bytes()
}

pub struct Suite<'a> {
    pub lf: &'a Lf,
    pub sink: &'a str,
    pub env: &'a [(&'a str, &'a str)],
    pub archive: &'a dyn Archive,
    /// An independent checker: `Some(passed)` where one exists for this store.
    pub independent: &'a dyn Fn() -> Option<bool>,
    /// Delivers more batches (a later digest), for the foreign-object case.
    pub more: &'a dyn Fn(),
}

impl Suite<'_> {
    fn expect(&self, kind: &str, tamper: impl FnOnce(), undo: impl FnOnce()) {
        tamper();
        let (code, report) = verify(self.lf, self.sink, self.env);
        assert_eq!(code, Some(1), "{kind}: {report:#}");
        assert!(kinds(&report).contains(kind), "{kind}: {report:#}");
        assert_ne!(
            (self.independent)(),
            Some(true),
            "{kind}: the independent check passed"
        );
        undo();
        let (code, report) = verify(self.lf, self.sink, self.env);
        assert_eq!(code, Some(0), "after undoing {kind}: {report:#}");
    }

    /// Needs an archive of at least two digests and four objects, verified clean.
    pub fn run(&self) {
        let a = self.archive;
        let (code, report) = verify(self.lf, self.sink, self.env);
        assert_eq!(code, Some(0), "{report:#}");
        assert_ne!(
            (self.independent)(),
            Some(false),
            "the independent check failed"
        );
        let objs = data_keys(a);
        assert!(objs.len() >= 4, "{objs:?}");
        let (o0, o1) = (a.get(&objs[0]), a.get(&objs[1]));
        self.expect(
            "object_missing",
            || a.delete(&objs[0]),
            || a.put(&objs[0], &o0),
        );
        self.expect(
            "object_modified",
            || {
                let mut b = o1.clone();
                b[10] ^= 1;
                a.put(&objs[1], &b);
            },
            || a.put(&objs[1], &o1),
        );
        let (o2, o3) = (a.get(&objs[2]), a.get(&objs[3]));
        self.expect(
            "object_swapped",
            || {
                a.put(&objs[2], &o3);
                a.put(&objs[3], &o2);
            },
            || {
                a.put(&objs[2], &o2);
                a.put(&objs[3], &o3);
            },
        );
        let ds = digest_keys(a);
        assert!(ds.len() >= 2, "{ds:?}");
        let (d0, d1) = (a.get(&ds[0]), a.get(&ds[1]));
        self.expect("digest_missing", || a.delete(&ds[0]), || a.put(&ds[0], &d0));
        let other = self.lf.path("other.pem");
        keygen(&other);
        self.expect(
            "bad_signature",
            || a.put(&ds[1], &resigned(&d1, &other)),
            || a.put(&ds[1], &d1),
        );
        // Every digest deleted: nothing vouches for the objects any more.
        let all: Vec<(String, Vec<u8>)> = ds.iter().map(|k| (k.clone(), a.get(k))).collect();
        self.expect(
            "digest_missing",
            || all.iter().for_each(|(k, _)| a.delete(k)),
            || all.iter().for_each(|(k, b)| a.put(k, b)),
        );
        // A planted object is foreign once a later digest covers the time it appeared.
        let dir = objs[0].rsplit_once('/').map_or("", |p| p.0);
        let planted = format!("{dir}/planted.ndjson.gz");
        self.expect(
            "foreign",
            || {
                a.put(&planted, b"not from logferry");
                // Written more than verify's slack (2 s) before the next digest ends: not a
                // delivery that digest could still be missing.
                let at = std::time::Instant::now();
                super::wait_until(
                    std::time::Duration::from_secs(5),
                    "the slack to pass",
                    || at.elapsed() > std::time::Duration::from_millis(2500),
                );
                (self.more)();
            },
            || a.delete(&planted),
        );
    }
}

/// A directory archive as an [`Archive`].
pub struct Dir(pub std::path::PathBuf);

impl Archive for Dir {
    fn list(&self) -> Vec<String> {
        super::walk(&self.0)
            .into_iter()
            .map(|p| {
                p.strip_prefix(&self.0)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    }
    fn get(&self, key: &str) -> Vec<u8> {
        std::fs::read(self.0.join(key)).unwrap()
    }
    fn put(&self, key: &str, bytes: &[u8]) {
        std::fs::write(self.0.join(key), bytes).unwrap()
    }
    fn delete(&self, key: &str) {
        std::fs::remove_file(self.0.join(key)).unwrap()
    }
}

/// An S3 bucket as the tests tamper with it (through the SDK).
pub struct S3<'a> {
    pub rt: &'a tokio::runtime::Runtime,
    pub c: &'a aws_sdk_s3::Client,
    pub bucket: &'a str,
}

impl Archive for S3<'_> {
    fn list(&self) -> Vec<String> {
        let out = self
            .rt
            .block_on(self.c.list_objects_v2().bucket(self.bucket).send())
            .unwrap();
        assert_ne!(out.is_truncated(), Some(true));
        out.contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect()
    }
    fn get(&self, key: &str) -> Vec<u8> {
        let o = self
            .rt
            .block_on(self.c.get_object().bucket(self.bucket).key(key).send())
            .unwrap();
        self.rt.block_on(o.body.collect()).unwrap().to_vec()
    }
    fn put(&self, key: &str, bytes: &[u8]) {
        let req = self
            .c
            .put_object()
            .bucket(self.bucket)
            .key(key)
            .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
            .body(bytes.to_vec().into());
        self.rt.block_on(req.send()).unwrap();
    }
    fn delete(&self, key: &str) {
        let req = self.c.delete_object().bucket(self.bucket).key(key);
        self.rt.block_on(req.send()).unwrap();
    }
}

/// An Azure container as the tests tamper with it (REST with a SAS).
pub struct Blob<'a> {
    pub az: &'a super::Azurite,
    pub container: &'a str,
}

impl Blob<'_> {
    pub fn url(&self, key: &str) -> String {
        format!(
            "/devstoreaccount1/{}/{key}?{}",
            self.container,
            self.az.account_sas()
        )
    }
}

impl Archive for Blob<'_> {
    fn list(&self) -> Vec<String> {
        self.az.list(self.container)
    }
    fn get(&self, key: &str) -> Vec<u8> {
        self.az.get(self.container, key)
    }
    fn put(&self, key: &str, bytes: &[u8]) {
        let (st, _, body) = self.az.request_with(
            "PUT",
            &self.url(key),
            &[("x-ms-blob-type", "BlockBlob")],
            bytes,
        );
        assert_eq!(st, 201, "PUT {key}: {}", String::from_utf8_lossy(&body));
    }
    fn delete(&self, key: &str) {
        let (st, _, _) = self.az.request("DELETE", &self.url(key));
        assert_eq!(st, 202, "DELETE {key}");
    }
}
