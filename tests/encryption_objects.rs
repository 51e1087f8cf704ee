//! Client-side encryption on the object stores: moto's S3 and Azurite. What is stored is read
//! back through each service's own API (the S3 SDK, Azurite's REST); `logferry decrypt` gets
//! the records back, and shredding a tenant's hour erases exactly its objects.

mod common;

use common::{keyvault, tls};

use std::collections::BTreeSet;
use std::process::{Command, Output};

use common::*;

const KEK: &str = r#"
[keks.main]
provider = "local"
key_file = "{dir}/kek.hex"
"#;

fn setup(sink: &str) -> Lf {
    let lf = Lf::new(&format!(
        "{KEK}\n[sources.jobs]\ninclude = [\"{{dir}}/logs/*.log\"]\nsinks = [\"store\"]\ntimestamp_field = \"ts\"\n{sink}"
    ));
    common::write_key(&lf.path("kek.hex"), "7e".repeat(32));
    write_lines(&lf.path("logs/a.log"), 0, 3000);
    lf
}

/// The one ledger entry of `tenant`'s hour 2026-11-23T10 in a directory archive.
fn entry_of(lf: &Lf, tenant: &str) -> std::path::PathBuf {
    let dir = lf.path(&format!("archive/_keys/{tenant}/2026-11-23T10"));
    let mut found: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found.pop().unwrap()
}

/// A signing key for a KMS or Key Vault KEK's entries, at `{dir}/sign.pem`.
fn keygen(lf: &Lf) {
    common::integrity::keygen(&lf.path("sign.pem"));
}

fn decrypt(lf: &Lf, key: &str, env: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .args(["decrypt", "--sink", "store", key, "--config"])
        .arg(&lf.cfg)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn shred(lf: &Lf, tenant: &str, env: &[(&str, &str)]) {
    let out = Command::new(BIN)
        .args([
            "shred",
            "--sink",
            "store",
            "--tenant",
            tenant,
            "--from",
            "2026-11-23T10",
            "--to",
            "2026-11-23T10",
            "--unsigned",
            "--config",
        ])
        .arg(&lf.cfg)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    common::succeeded(&out);
}

fn ids(out: &Output) -> Vec<u64> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

fn header(bytes: &[u8]) -> logferry_vault::crypt::Header {
    logferry_vault::crypt::Header::read(&mut &bytes[..])
        .unwrap()
        .0
}

/// Checks the decrypted records and that shredding acct0 leaves acct1 and acct2 readable.
fn read_all_then_shred(
    lf: &Lf,
    data: &[String],
    env: &[(&str, &str)],
    after: impl Fn(&str) -> Output,
) {
    let mut seen = BTreeSet::new();
    for k in data {
        let out = decrypt(lf, k, env);
        assert!(
            out.status.success(),
            "{k}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        seen.extend(ids(&out));
    }
    assert_eq!(seen, (0..3000).collect());
    shred(lf, "acct0", env);
    for k in data {
        let out = after(k);
        let acct0 = k.contains("/acct0/");
        assert_eq!(out.status.success(), !acct0, "{k}");
        if acct0 {
            assert!(String::from_utf8_lossy(&out.stderr).contains("key shredded"));
        }
    }
}

#[test]
fn s3_objects_are_encrypted_per_tenant_hour_with_the_key_id_in_their_metadata() {
    let moto = Moto::start();
    let (rt, c) = moto.bucket("vault", false);
    let lf = setup(&format!(
        "[sinks.store]\ntype = \"s3\"\nallow_plaintext_credentials = true\nbucket = \"vault\"\nregion = \"us-east-1\"\nendpoint = \"{}\"\nforce_path_style = true\nkey = \"{{source}}/{{account_id}}/%Y/%m/%d/{{batch_id}}.ndjson.gz\"\nencryption = {{ kek = \"main\", tenant_field = \"account_id\" }}\n",
        moto.endpoint
    ));
    let env = moto.env();
    lf.run_once_env(&env);
    let listed = rt
        .block_on(c.list_objects_v2().bucket("vault").send())
        .unwrap();
    let keys: Vec<String> = listed
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .collect();
    let data: Vec<String> = keys
        .iter()
        .filter(|k| k.starts_with("jobs/"))
        .cloned()
        .collect();
    // One entry per tenant-hour, named by its key id.
    let ledger: BTreeSet<&str> = keys
        .iter()
        .filter(|k| k.starts_with("_keys/"))
        .map(|k| k.rsplit_once('/').unwrap().0)
        .collect();
    assert_eq!(data.len(), 3, "{keys:?}");
    assert_eq!(
        ledger,
        BTreeSet::from([
            "_keys/acct0/2026-11-23T10",
            "_keys/acct1/2026-11-23T10",
            "_keys/acct2/2026-11-23T10"
        ])
    );
    for k in &data {
        assert!(k.ends_with(".ndjson.gz.lfenc"), "{k}");
        let got = rt
            .block_on(c.get_object().bucket("vault").key(k).send())
            .unwrap();
        assert_eq!(
            got.content_encoding(),
            None,
            "the stored bytes are not gzip"
        );
        let key_id = got.metadata().unwrap()["key-id"].clone();
        let body = rt.block_on(got.body.collect()).unwrap().into_bytes();
        let h = header(&body);
        assert_eq!(h.key_id, key_id);
        assert_eq!(
            (h.tenant.as_str(), h.hour.as_str()),
            (k.split('/').nth(1).unwrap(), "2026-11-23T10")
        );
        assert!(!body.windows(17).any(|w| w == b"job step finished"));
    }
    read_all_then_shred(&lf, &data, &env, |k| decrypt(&lf, k, &env));
}

#[test]
fn azure_blobs_are_encrypted_per_tenant_hour_with_the_key_id_in_their_metadata() {
    let az = Azurite::start();
    az.create_container("vault");
    let lf = setup(&format!(
        "[sinks.store]\ntype = \"azure_blob\"\nallow_plaintext_credentials = true\ncontainer = \"vault\"\nconnection_string = \"{}\"\nkey = \"{{source}}/{{account_id}}/{{batch_id}}.ndjson.gz\"\nencryption = {{ kek = \"main\", tenant_field = \"account_id\" }}\n",
        az.connection_string()
    ));
    lf.run_once();
    let names = az.list("vault");
    let data: Vec<String> = names
        .iter()
        .filter(|k| k.starts_with("jobs/"))
        .cloned()
        .collect();
    let ledger: Vec<&String> = names.iter().filter(|k| k.starts_with("_keys/")).collect();
    assert_eq!(data.len(), 3, "{names:?}");
    assert_eq!(ledger.len(), 3, "{names:?}");
    for k in &data {
        assert!(k.ends_with(".ndjson.gz.lfenc"), "{k}");
        let (st, headers, body) = az.request(
            "GET",
            &format!("/devstoreaccount1/vault/{k}?{}", az.account_sas()),
        );
        assert_eq!(st, 200);
        let h = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(h("content-encoding"), None, "the stored bytes are not gzip");
        assert_eq!(h("x-ms-meta-key_id"), Some(header(&body).key_id));
        assert!(!body.windows(17).any(|w| w == b"job step finished"));
    }
    read_all_then_shred(&lf, &data, &[], |k| decrypt(&lf, k, &[]));
}

/// Makes a KMS key in moto with boto3 and returns its id.
fn kms_key(moto: &Moto) -> String {
    let out = Command::new(tool("python3"))
        .args([
            "-c",
            "import boto3,sys; print(boto3.client('kms', endpoint_url=sys.argv[1]).create_key()['KeyMetadata']['KeyId'])",
            &moto.endpoint,
        ])
        .envs(moto.env())
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .output()
        .unwrap();
    common::succeeded(&out);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn aws_kms_data_keys_are_bound_to_their_tenant_hour_and_read_back_by_boto3() {
    let moto = Moto::start();
    let env = moto.env();
    let key = kms_key(&moto);
    let lf = Lf::new(&format!(
        "[keks.kms]\nprovider = \"aws_kms\"\nkey_id = \"{key}\"\nregion = \"us-east-1\"\nendpoint = \"{}\"\nallow_plaintext_credentials = true\n[signing]\nkey_file = \"{{dir}}/sign.pem\"\n\n[sources.jobs]\ninclude = [\"{{dir}}/logs/*.log\"]\nsinks = [\"store\"]\ntimestamp_field = \"ts\"\n[sinks.store]\ntype = \"directory\"\npath = \"{{dir}}/archive\"\nkey = \"{{source}}/{{account_id}}/{{batch_id}}.ndjson.gz\"\nencryption = {{ kek = \"kms\", tenant_field = \"account_id\" }}\n",
        moto.endpoint
    ));
    write_lines(&lf.path("logs/a.log"), 0, 3000);
    keygen(&lf);
    lf.run_once_env(&env);
    let entry: serde_json::Value =
        serde_json::from_slice(&std::fs::read(entry_of(&lf, "acct1")).unwrap()).unwrap();
    assert_eq!(entry["provider"], "aws_kms");
    assert!(entry["signature"].is_string(), "{entry}");
    let data: Vec<String> = walk(&lf.path("archive/jobs"))
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    assert_eq!(data.len(), 3);
    let py = |obj: &str| {
        Command::new(tool("python3"))
            .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/decrypt.py"))
            .args(["--kms-endpoint", &moto.endpoint, "--public-key"])
            .arg(lf.path("sign.pem.pub"))
            .arg("--root")
            .arg(lf.path("archive"))
            .arg(obj)
            .envs(moto.env())
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .output()
            .unwrap()
    };
    // boto3 and Python's cryptography read every object without logferry.
    let mut seen = BTreeSet::new();
    for k in &data {
        let out = py(k);
        common::succeeded(&out);
        seen.extend(ids(&out));
    }
    assert_eq!(seen, (0..3000).collect());
    // An entry moved to another tenant is refused: its name and its fields disagree, and with
    // its fields rewritten its signature (and KMS's context) no longer match.
    let moved = entry_of(&lf, "acct0");
    let original = std::fs::read(&moved).unwrap();
    std::fs::copy(entry_of(&lf, "acct1"), &moved).unwrap();
    let acct0 = data.iter().find(|k| k.contains("/acct0/")).unwrap();
    let out = decrypt(&lf, acct0, &env);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("forged"));
    std::fs::write(&moved, original).unwrap();
    read_all_then_shred(&lf, &data, &env, |k| py(k));
}

/// A directory archive encrypted under the Key Vault stand-in's key, with a signing key.
fn vault_archive(ca: &tls::TestCa, login: &tls::TokenServer, vault: &keyvault::KeyVault) -> Lf {
    let secret_file = ca.dir.path().join("client-secret");
    std::fs::write(&secret_file, tls::CLIENT_SECRET).unwrap();
    let lf = Lf::new(&format!(
        "[keks.vault]\nprovider = \"azure_key_vault\"\nvault_url = \"{}\"\nkey_name = \"{}\"\nauth = \"client_secret\"\ntenant_id = \"{}\"\nclient_id = \"{}\"\nclient_secret_file = \"{}\"\nauthority_host = \"{}\"\ntls = {{ ca_file = \"{}\" }}\n[signing]\nkey_file = \"{{dir}}/sign.pem\"\n\n[sources.jobs]\ninclude = [\"{{dir}}/logs/*.log\"]\nsinks = [\"store\"]\ntimestamp_field = \"ts\"\n[sinks.store]\ntype = \"directory\"\npath = \"{{dir}}/archive\"\nkey = \"{{source}}/{{account_id}}/{{batch_id}}.ndjson.gz\"\nencryption = {{ kek = \"vault\", tenant_field = \"account_id\" }}\n",
        vault.url(),
        keyvault::KEY_NAME,
        tls::TENANT,
        tls::CLIENT_ID,
        secret_file.display(),
        login.authority_host(),
        ca.ca_pem.display(),
    ));
    keygen(&lf);
    lf
}

/// Someone with the vault key's public half (and write access to the archive, not to the
/// vault) plants entries for a key they chose, before logferry writes its own: at the name
/// earlier versions used, and at a new-layout name. None is used, and an object they encrypt
/// under their key is refused by `decrypt`.
#[test]
fn a_key_planted_with_the_vaults_public_key_is_never_used() {
    use base64::Engine as _;
    let ca = tls::TestCa::new();
    let login = tls::TokenServer::start(&ca);
    let vault = keyvault::KeyVault::start(&ca);
    let lf = vault_archive(&ca, &login, &vault);
    let theirs = logferry_vault::crypt::DataKey::generate("acct1", "2026-11-23T10").unwrap();
    let entry = serde_json::json!({
        "format": "logferry-key-1", "key_id": theirs.id, "tenant": "acct1",
        "hour": "2026-11-23T10", "kek": "vault", "provider": "azure_key_vault",
        "wrapped": base64::engine::general_purpose::STANDARD
            .encode(vault.wrap_with_public_key(&theirs.bytes[..])),
        "kek_version": keyvault::VERSION,
        // The binding is an HMAC under the data key: they can compute it too.
        "bind": "",
    });
    for at in [
        "archive/_keys/acct1/2026-11-23T10.key".to_string(),
        format!("archive/_keys/acct1/2026-11-23T10/{}.key", theirs.id),
    ] {
        std::fs::create_dir_all(lf.path(&at).parent().unwrap()).unwrap();
        std::fs::write(lf.path(&at), entry.to_string()).unwrap();
    }
    write_lines(&lf.path("logs/a.log"), 0, 3000);
    lf.run_once();
    let data: Vec<std::path::PathBuf> = walk(&lf.path("archive/jobs"));
    assert_eq!(data.len(), 3);
    for p in &data {
        let h = header(&std::fs::read(p).unwrap());
        assert_ne!(h.key_id, theirs.id, "{p:?} is under the planted key");
    }
    // An object the attacker encrypts under their key, named by their entry, is refused.
    let acct1 = data
        .iter()
        .find(|p| p.to_string_lossy().contains("/acct1/"))
        .unwrap();
    let forged =
        logferry_vault::crypt::encrypt(&theirs, "forged", b"{\"id\":1}\n", 1 << 20).unwrap();
    std::fs::write(acct1, forged).unwrap();
    let out = decrypt(&lf, &acct1.to_string_lossy(), &[]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("forged") && err.contains("not signed"),
        "{err}"
    );
    // `keys list` names the planted entries as forged.
    let out = Command::new(BIN)
        .args(["keys", "list", "--sink", "store", "--config"])
        .arg(&lf.cfg)
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(listed.matches("FORGED").count(), 2, "{listed}");
}

#[test]
fn azure_key_vault_wraps_each_tenant_hour_key_and_refuses_a_moved_entry() {
    let ca = tls::TestCa::new();
    let login = tls::TokenServer::start(&ca);
    let vault = keyvault::KeyVault::start(&ca);
    let lf = vault_archive(&ca, &login, &vault);
    write_lines(&lf.path("logs/a.log"), 0, 3000);
    let out = lf.run_once();
    assert!(!String::from_utf8_lossy(&out.stderr).contains(tls::CLIENT_SECRET));
    let wraps: Vec<keyvault::Call> = vault
        .calls()
        .into_iter()
        .filter(|c| c.op == "wrapkey")
        .collect();
    // One wrap per tenant-hour, and one for the spool's key of this hour.
    assert_eq!(wraps.len(), 4, "{wraps:?}");
    assert!(login
        .requests()
        .iter()
        .all(|r| r.scope == "https://vault.azure.net/.default"));
    let entry_path = entry_of(&lf, "acct1");
    let entry: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&entry_path).unwrap()).unwrap();
    assert_eq!(entry["provider"], "azure_key_vault");
    assert_eq!(entry["kek_version"], keyvault::VERSION);
    let data: Vec<String> = walk(&lf.path("archive/jobs"))
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    assert_eq!(data.len(), 3);

    // An entry moved to another tenant is refused before the vault is asked: its name and
    // fields disagree.
    let moved = entry_of(&lf, "acct0");
    let original = std::fs::read(&moved).unwrap();
    std::fs::copy(&entry_path, &moved).unwrap();
    let acct0 = data.iter().find(|k| k.contains("/acct0/")).unwrap().clone();
    let out = decrypt(&lf, &acct0, &[]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("forged"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A version that is not one is refused before any request is made with it.
    let mut forged: serde_json::Value = serde_json::from_slice(&original).unwrap();
    forged["kek_version"] = "../../../evil".into();
    std::fs::write(&moved, serde_json::to_vec(&forged).unwrap()).unwrap();
    let before = vault.calls().len();
    assert!(!decrypt(&lf, &acct0, &[]).status.success());
    assert_eq!(vault.calls().len(), before, "no call for a forged version");
    std::fs::write(&moved, original).unwrap();

    read_all_then_shred(&lf, &data, &[], |k| decrypt(&lf, k, &[]));
}

#[test]
fn on_an_object_lock_bucket_shredding_erases_every_version_of_the_key_and_the_data_stays_locked() {
    let moto = Moto::start();
    let env = moto.env();
    let (rt, c) = moto.bucket("vault", true);
    let lf = setup(&format!(
        "[sinks.store]\ntype = \"s3\"\nallow_plaintext_credentials = true\nbucket = \"vault\"\nregion = \"us-east-1\"\nendpoint = \"{}\"\nforce_path_style = true\nobject_lock = {{ mode = \"GOVERNANCE\", retain_days = 30 }}\nkey = \"{{source}}/{{account_id}}/{{batch_id}}.ndjson.gz\"\nencryption = {{ kek = \"main\", tenant_field = \"account_id\" }}\n",
        moto.endpoint
    ));
    lf.run_once_env(&env);
    let versions = |prefix: &str| -> Vec<(String, Option<String>)> {
        let out = rt
            .block_on(
                c.list_object_versions()
                    .bucket("vault")
                    .prefix(prefix)
                    .send(),
            )
            .unwrap();
        out.versions()
            .iter()
            .map(|v| {
                (
                    v.key().unwrap().to_string(),
                    v.version_id().map(str::to_string),
                )
            })
            .chain(out.delete_markers().iter().map(|m| {
                (
                    m.key().unwrap().to_string(),
                    m.version_id().map(str::to_string),
                )
            }))
            .collect()
    };
    assert_eq!(versions("_keys/acct0/").len(), 1);
    let data: Vec<String> = versions("jobs/").into_iter().map(|(k, _)| k).collect();
    assert_eq!(data.len(), 3);
    shred(&lf, "acct0", &env);
    assert!(
        versions("_keys/acct0/").is_empty(),
        "no version of the key is left"
    );
    // The data objects are all still there, locked, and acct0's cannot be read any more.
    assert_eq!(versions("jobs/").len(), 3);
    for k in &data {
        let out = decrypt(&lf, k, &env);
        assert_eq!(out.status.success(), !k.contains("/acct0/"), "{k}");
    }
}

#[test]
fn a_ledger_that_never_answers_cannot_hold_a_once_run_at_its_retention_pass() {
    // A peer that accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in silent.incoming().flatten() {
            held.push(c);
        }
    });
    let lf = Lf::new(&format!(
        "{KEK}\n[signing]\nkey_file = \"{{dir}}/sign.pem\"\n\n[sources.jobs]\ninclude = [\"{{dir}}/logs/*.log\"]\nsinks = [\"store\"]\n[sinks.store]\ntype = \"s3\"\nallow_plaintext_credentials = true\nbucket = \"vault\"\nregion = \"us-east-1\"\nendpoint = \"http://127.0.0.1:{port}\"\nforce_path_style = true\ntimeout = \"1s\"\nencryption = {{ kek = \"main\", tenant_field = \"account_id\", retention = \"30d\" }}\n"
    ));
    common::write_key(&lf.path("kek.hex"), "7e".repeat(32));
    let key = Command::new(BIN)
        .args(["keygen", "--out"])
        .arg(lf.path("sign.pem"))
        .output()
        .unwrap();
    assert!(key.status.success());
    let log = std::fs::File::create(lf.path("once.log")).unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--once", "--config"])
        .arg(&lf.cfg)
        .envs([
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ])
        .stderr(log)
        .spawn()
        .unwrap();
    wait_until(
        std::time::Duration::from_secs(60),
        "run --once to end",
        || child.try_wait().unwrap().is_some(),
    );
    let logs = std::fs::read_to_string(lf.path("once.log")).unwrap();
    assert!(logs.contains("did not answer within 4s"), "{logs}");
}

#[test]
fn under_a_default_retention_the_ledger_lives_in_its_own_bucket_and_shredding_works() {
    use aws_sdk_s3::types::{
        DefaultRetention, ObjectLockConfiguration, ObjectLockEnabled, ObjectLockRetentionMode,
        ObjectLockRule,
    };
    let moto = Moto::start();
    let (rt, c) = moto.bucket("vault", true);
    rt.block_on(c.create_bucket().bucket("vault-keys").send())
        .unwrap();
    // Every object of the data bucket is locked for a day, whoever writes it.
    let rule = ObjectLockRule::builder()
        .default_retention(
            DefaultRetention::builder()
                .mode(ObjectLockRetentionMode::Governance)
                .days(1)
                .build(),
        )
        .build();
    rt.block_on(
        c.put_object_lock_configuration()
            .bucket("vault")
            .object_lock_configuration(
                ObjectLockConfiguration::builder()
                    .object_lock_enabled(ObjectLockEnabled::Enabled)
                    .rule(rule)
                    .build(),
            )
            .send(),
    )
    .unwrap();
    let lf = setup(&format!(
        "[sinks.store]\ntype = \"s3\"\nallow_plaintext_credentials = true\nbucket = \"vault\"\nregion = \"us-east-1\"\nendpoint = \"{}\"\nforce_path_style = true\nkey = \"{{source}}/{{account_id}}/{{batch_id}}.ndjson.gz\"\nencryption = {{ kek = \"main\", tenant_field = \"account_id\", ledger_bucket = \"vault-keys\" }}\n",
        moto.endpoint
    ));
    let env = moto.env();
    lf.run_once_env(&env);
    let keys = |bucket: &str| -> Vec<String> {
        rt.block_on(c.list_objects_v2().bucket(bucket).send())
            .unwrap()
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect()
    };
    let data = keys("vault");
    assert_eq!(data.len(), 3, "{data:?}");
    assert!(data.iter().all(|k| k.starts_with("jobs/")), "{data:?}");
    let ledger = keys("vault-keys");
    assert_eq!(ledger.len(), 3, "{ledger:?}");
    assert!(ledger.iter().all(|k| k.starts_with("_keys/")), "{ledger:?}");
    read_all_then_shred(&lf, &data, &env, |k| decrypt(&lf, k, &env));
}
