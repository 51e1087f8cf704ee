//! Tamper evidence on the object stores: the same tampering suite as on a directory, done
//! through moto's S3 API and Azurite's REST API; digests under the data's Object Lock.

mod common;

use common::integrity::{self, keygen, Archive};
use common::*;

const SOURCE: &str = r#"
[signing]
key_file = "{dir}/sign.pem"

[sources.jobs]
include = ["{dir}/logs/*.log"]
sinks = ["store"]
"#;

fn setup(sink: &str) -> Lf {
    let lf = Lf::new(&format!(
        "{SOURCE}\n[sinks.store]\nkey = \"{{source}}/{{account_id}}/{{batch_id}}.ndjson.gz\"\nintegrity = true\nbatch = {{ max_records = 50 }}\n{sink}"
    ));
    keygen(&lf.path("sign.pem"));
    lf
}

/// Two `--once` runs (two digests), then the suite; `more` delivers one batch more each time.
fn suite(lf: &Lf, env: &[(&str, &str)], archive: &dyn Archive) {
    let log = lf.path("logs/a.log");
    write_lines(&log, 0, 300);
    lf.run_once_env(env);
    write_lines(&log, 300, 150);
    lf.run_once_env(env);
    let next = std::cell::Cell::new(450);
    integrity::Suite {
        lf,
        sink: "store",
        env,
        archive,
        independent: &|| None,
        more: &|| {
            write_lines(&log, next.get(), 50);
            next.set(next.get() + 50);
            lf.run_once_env(env);
        },
    }
    .run();
}

#[test]
fn verify_names_each_kind_of_tampering_in_s3_and_digests_keep_the_object_lock() {
    let moto = Moto::start();
    let (rt, c) = moto.bucket("audit", true);
    let lf = setup(&format!(
        "type = \"s3\"\nallow_plaintext_credentials = true\nbucket = \"audit\"\nregion = \"us-east-1\"\nendpoint = \"{}\"\nforce_path_style = true\nobject_lock = {{ mode = \"GOVERNANCE\", retain_days = 1 }}\n",
        moto.endpoint
    ));
    let s3 = integrity::S3 {
        rt: &rt,
        c: &c,
        bucket: "audit",
    };
    suite(&lf, &moto.env(), &s3);
    // Digests are as immutable as the data they vouch for (the last one: the suite rewrote
    // two earlier ones through the API, without a lock).
    if let Some(d) = integrity::digest_keys(&s3).last() {
        let head = rt
            .block_on(c.head_object().bucket("audit").key(d).send())
            .unwrap();
        assert_eq!(
            head.object_lock_mode().map(|m| m.as_str()),
            Some("GOVERNANCE"),
            "{d}"
        );
        assert!(head.object_lock_retain_until_date().is_some(), "{d}");
    }
    // Objects carry their place in the chain (the last: one the suite did not rewrite).
    let o = integrity::data_keys(&s3).last().unwrap().clone();
    let head = rt
        .block_on(c.head_object().bucket("audit").key(&o).send())
        .unwrap();
    let meta = head.metadata().unwrap();
    assert!(meta.contains_key("chain-seq"), "{meta:?}");
    assert_eq!(meta["object-sha256"].len(), 64);
}

#[test]
fn verify_names_each_kind_of_tampering_in_azure_blob_storage() {
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
    suite(&lf, &[], &blob);
    let o = integrity::data_keys(&blob).last().unwrap().clone();
    let (_, headers, _) = az.request("HEAD", &blob.url(&o));
    assert!(
        headers.iter().any(|(n, _)| n == "x-ms-meta-chain_seq"),
        "{headers:?}"
    );
}
