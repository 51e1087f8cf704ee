//! The `azure_blob` sink against Azurite (Microsoft's emulator).

mod common;

use common::*;
use std::io::Read;
use std::time::Duration;

fn config(container: &str, conn: &str, extra: &str) -> String {
    format!(
        r#"[sources.jobs]
include = ["{{dir}}/logs/*.log"]
sinks = ["blob"]
[sinks.blob]
type = "azure_blob"
allow_plaintext_credentials = true
container = "{container}"
connection_string = "{conn}"
key = "{{source}}/{{account_id}}/{{batch_id}}.ndjson.gz"
retry = {{ initial_backoff = "50ms", max_backoff = "200ms" }}
{extra}
"#
    )
}

#[test]
fn block_blobs_with_a_minted_sas_carry_records_metadata_and_tier() {
    let az = Azurite::start();
    az.create_container("archive");
    let lf = Lf::new(&config(
        "archive",
        &az.connection_string(),
        "access_tier = \"Cool\"\nmetadata = { origin = \"platform\" }",
    ));
    write_lines(&lf.path("logs/a.log"), 0, 3000);
    lf.run_once();
    let names = az.list("archive");
    assert_eq!(names.len(), 3, "{names:?}");
    let mut all = Vec::new();
    for n in &names {
        assert!(
            n.starts_with("jobs/acct") && n.ends_with(".ndjson.gz"),
            "{n}"
        );
        let (st, _, body) = az.request(
            "GET",
            &format!("/devstoreaccount1/archive/{n}?{}", az.account_sas()),
        );
        assert_eq!(st, 200);
        // Get Blob Properties (HEAD) tells the access tier as well.
        let (_, headers, _) = az.request(
            "HEAD",
            &format!("/devstoreaccount1/archive/{n}?{}", az.account_sas()),
        );
        let h = |k: &str| {
            headers
                .iter()
                .find(|(hk, _)| hk == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(h("content-encoding").as_deref(), Some("gzip"));
        assert_eq!(h("x-ms-access-tier").as_deref(), Some("Cool"));
        assert_eq!(h("x-ms-meta-origin").as_deref(), Some("platform"));
        assert_eq!(h("x-ms-meta-sha256").map(|s| s.len()), Some(64));
        let mut raw = Vec::new();
        flate2::read::MultiGzDecoder::new(&body[..])
            .read_to_end(&mut raw)
            .unwrap();
        let recs: Vec<serde_json::Value> = raw
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(h("x-ms-meta-record_count"), Some(recs.len().to_string()));
        all.extend(recs);
    }
    assert_eq!(assert_all_present(&all, 3000), 0);
}

#[test]
fn a_missing_container_goes_to_dead_letter_with_a_clear_reason() {
    let az = Azurite::start();
    let lf = Lf::new(&config("nowhere", &az.connection_string(), ""));
    write_lines(&lf.path("logs/a.log"), 0, 5);
    lf.run_once_incomplete();
    let note = lf.dead_letter_note("blob");
    let r = note["reason"].as_str().unwrap();
    assert!(
        r.contains("ContainerNotFound") && r.contains("\"nowhere\" does not exist"),
        "{r}"
    );
}

#[test]
fn a_sas_token_from_a_file() {
    let az = Azurite::start();
    az.create_container("sas");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sas"), format!("?{}\n", az.account_sas())).unwrap();
    let lf = Lf::new(&format!(
        "[sources.jobs]\ninclude = [\"{{dir}}/logs/*.log\"]\nsinks = [\"blob\"]\n[sinks.blob]\ntype = \"azure_blob\"\nallow_plaintext_credentials = true\ncontainer = \"sas\"\naccount = \"devstoreaccount1\"\nendpoint = \"http://127.0.0.1:{}/devstoreaccount1\"\nsas_token_file = \"{}\"\n",
        az.port,
        dir.path().join("sas").display()
    ));
    write_lines(&lf.path("logs/a.log"), 0, 10);
    lf.run_once();
    assert_eq!(az.list("sas").len(), 1);
}

fn proxied(az: &Azurite, fault: Fault) -> (FaultProxy, String) {
    let proxy = FaultProxy::start(az.port, fault);
    let conn = az
        .connection_string()
        .replace(&format!(":{}/", az.port), &format!(":{}/", proxy.port));
    (proxy, conn)
}

#[test]
fn a_lost_response_is_retried_without_a_duplicate() {
    let az = Azurite::start();
    az.create_container("lost");
    let (proxy, conn) = proxied(
        &az,
        Fault {
            drop_response: true,
            method: "PUT",
            path_contains: "",
            count: 1,
            status: "",
            headers: vec![],
            body: String::new(),
        },
    );
    let lf = Lf::new(&config("lost", &conn, "").replace("{account_id}/", ""));
    write_lines(&lf.path("logs/a.log"), 0, 100);
    lf.run_once();
    assert_eq!(
        proxy.hits.lock().unwrap().len(),
        2,
        "the upload was sent twice"
    );
    // The retry met the blob its first attempt wrote (409 with If-None-Match: *), saw its own
    // batch id and digest, and counted it delivered: nothing was set aside.
    assert!(
        lf.files("data/dead-letter/blob").is_empty(),
        "{:?}",
        lf.files("data/dead-letter/blob")
    );
    let names = az.list("lost");
    assert_eq!(names.len(), 1, "one blob, not two: {names:?}");
    let (_, _, body) = az.request(
        "GET",
        &format!("/devstoreaccount1/lost/{}?{}", names[0], az.account_sas()),
    );
    let mut raw = Vec::new();
    flate2::read::MultiGzDecoder::new(&body[..])
        .read_to_end(&mut raw)
        .unwrap();
    assert_eq!(
        raw.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count(),
        100
    );
}

#[test]
fn server_busy_is_retried_after_the_wait_it_asks_for() {
    let az = Azurite::start();
    az.create_container("busy");
    let (proxy, conn) = proxied(
        &az,
        Fault {
            drop_response: false,
            method: "PUT",
            path_contains: "",
            count: 2,
            status: "503 Server Busy",
            headers: vec![
                ("Retry-After", "1".into()),
                ("x-ms-error-code", "ServerBusy".into()),
            ],
            body: String::new(),
        },
    );
    let lf = Lf::new(&config("busy", &conn, "").replace("{account_id}/", ""));
    write_lines(&lf.path("logs/a.log"), 0, 10);
    lf.run_once();
    assert_eq!(az.list("busy").len(), 1);
    let hits = proxy.hits.lock().unwrap().clone();
    assert_eq!(hits.len(), 3);
    for w in hits.windows(2) {
        assert!(
            w[1].0 - w[0].0 >= std::time::Duration::from_millis(950),
            "Retry-After: 1 was honoured"
        );
    }
}

#[test]
fn validate_check_sinks_names_a_missing_container() {
    let az = Azurite::start();
    az.create_container("present");
    for (container, code, expect) in [
        ("present", 0, "ok"),
        ("absent", 1, "container \"absent\" does not exist"),
    ] {
        let lf = Lf::new(&config(container, &az.connection_string(), ""));
        let (status, stdout) = lf.check_sinks(&[]);
        assert_eq!(status, Some(code), "{stdout}");
        assert!(stdout.contains(expect), "{stdout}");
    }
    assert!(az.list("present").is_empty(), "the probe blob is deleted");
}

#[test]
fn create_container_makes_a_missing_container() {
    let az = Azurite::start();
    let lf = Lf::new(&config(
        "made-on-demand",
        &az.connection_string(),
        "create_container = true",
    ));
    write_lines(&lf.path("logs/a.log"), 0, 10);
    lf.run_once();
    assert_eq!(az.list("made-on-demand").len(), 3);
    assert!(lf.files("data/dead-letter/blob").is_empty());
}

/// A sink section for Entra ID auth against HTTPS Azurite, trusting the test CA.
fn entra_config(az: &Azurite, ca: &tls::TestCa, container: &str, auth: &str) -> String {
    format!(
        r#"[sources.jobs]
include = ["{{dir}}/logs/*.log"]
sinks = ["blob"]
[sinks.blob]
type = "azure_blob"
allow_plaintext_credentials = true
container = "{container}"
account = "devstoreaccount1"
endpoint = "{}"
tls = {{ ca_file = "{}" }}
batch = {{ max_age = "200ms" }}
retry = {{ initial_backoff = "50ms", max_backoff = "200ms" }}
{auth}
"#,
        az.endpoint(),
        ca.ca_pem.display()
    )
}

#[test]
fn client_secret_auth_reuses_one_token_across_uploads() {
    let ca = tls::TestCa::new();
    let login = tls::TokenServer::start(&ca);
    let az = Azurite::start_https(&ca);
    az.create_container("entra");
    let secret_file = ca.dir.path().join("client-secret");
    std::fs::write(&secret_file, format!("{}\n", tls::CLIENT_SECRET)).unwrap();
    let lf = Lf::new(&entra_config(
        &az,
        &ca,
        "entra",
        &format!(
            "auth = \"client_secret\"\ntenant_id = \"{}\"\nclient_id = \"{}\"\nclient_secret_file = \"{}\"\nauthority_host = \"{}\"\nkey = \"{{source}}/{{account_id}}/{{batch_id}}.ndjson.gz\"",
            tls::TENANT,
            tls::CLIENT_ID,
            secret_file.display(),
            login.authority_host()
        ),
    ));
    write_lines(&lf.path("logs/a.log"), 0, 3000);
    let out = lf.run_once();
    assert_eq!(az.list("entra").len(), 3, "a blob per account partition");
    assert_eq!(assert_all_present(&az.records("entra"), 3000), 0);
    let reqs = login.requests();
    assert_eq!(reqs.len(), 1, "one token for three uploads: {reqs:?}");
    assert_eq!(reqs[0].kind, "client_secret");
    assert_eq!(reqs[0].scope, "https://storage.azure.com/.default");
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(!logs.contains(tls::CLIENT_SECRET), "{logs}");

    // The same credential passes the sink check; a wrong secret fails it, naming the cause.
    let (status, stdout) = lf.check_sinks(&[]);
    assert_eq!(status, Some(0), "{stdout}");
    std::fs::write(&secret_file, "not-the-secret").unwrap();
    let (status, stdout) = lf.check_sinks(&[]);
    assert_eq!(status, Some(1), "{stdout}");
    assert!(stdout.contains("AADSTS7000215"), "{stdout}");
    assert!(!stdout.contains("not-the-secret"), "{stdout}");
}

#[test]
fn workload_identity_rereads_the_token_file_when_it_refreshes() {
    let ca = tls::TestCa::new();
    let login = tls::TokenServer::start(&ca);
    // The SDK renews a token five minutes before it expires: 302 s tokens are renewed after
    // about two seconds, so the test sees a refresh without waiting an hour.
    login
        .lifetime_secs
        .store(302, std::sync::atomic::Ordering::SeqCst);
    let az = Azurite::start_https(&ca);
    az.create_container("wi-archive");
    let token_file = ca.dir.path().join("sa-token");
    std::fs::write(&token_file, "service-account-token-1").unwrap();
    let lf = Lf::new(&entra_config(
        &az,
        &ca,
        "wi-archive",
        "auth = \"workload_identity\"\nkey = \"{source}/{batch_id}.ndjson.gz\"",
    ));
    let host = login.authority_host();
    let file = token_file.display().to_string();
    // What the AKS webhook injects.
    let run = lf.spawn_env(&[
        ("AZURE_TENANT_ID", tls::TENANT),
        ("AZURE_CLIENT_ID", tls::CLIENT_ID),
        ("AZURE_FEDERATED_TOKEN_FILE", &file),
        ("AZURE_AUTHORITY_HOST", &host),
    ]);
    let log = lf.path("logs/a.log");
    write_lines(&log, 0, 100);
    wait_until(Duration::from_secs(30), "the first 100 records", || {
        az.list("wi-archive").len() == 1
    });
    // The kubelet rotates the projected token; the next token request must carry the new one.
    std::fs::write(&token_file, "service-account-token-2").unwrap();
    let mut next = 100;
    wait_until(
        Duration::from_secs(30),
        "a token request with the rotated file",
        || {
            write_lines(&log, next, 1);
            next += 1;
            std::thread::sleep(Duration::from_millis(100));
            login
                .requests()
                .iter()
                .any(|r| r.assertion.as_deref() == Some("service-account-token-2"))
        },
    );
    assert_eq!(run.term(Duration::from_secs(20)).code(), Some(0));
    let reqs = login.requests();
    assert!(reqs
        .iter()
        .all(|r| r.kind == "client_assertion" && r.client_id == tls::CLIENT_ID));
    assert_eq!(
        reqs[0].assertion.as_deref(),
        Some("service-account-token-1")
    );
    assert_eq!(assert_all_present(&az.records("wi-archive"), next), 0);
}

#[test]
fn managed_identity_from_the_app_service_endpoint() {
    let ca = tls::TestCa::new();
    let login = tls::TokenServer::start(&ca);
    let az = Azurite::start_https(&ca);
    az.create_container("mi-archive");
    let lf = Lf::new(&entra_config(
        &az,
        &ca,
        "mi-archive",
        &format!(
            "auth = \"managed_identity\"\nclient_id = \"{}\"\nkey = \"{{source}}/{{batch_id}}.ndjson.gz\"",
            tls::CLIENT_ID
        ),
    ));
    write_lines(&lf.path("logs/a.log"), 0, 500);
    let endpoint = format!("{}/msi/token", login.authority_host());
    lf.run_once_env(&[
        ("IDENTITY_ENDPOINT", &endpoint),
        ("IDENTITY_HEADER", tls::IDENTITY_HEADER),
    ]);
    assert_eq!(assert_all_present(&az.records("mi-archive"), 500), 0);
    let reqs = login.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].kind, "managed_identity");
    assert_eq!(
        reqs[0].client_id,
        tls::CLIENT_ID,
        "the user-assigned identity"
    );
    assert_eq!(reqs[0].scope, "https://storage.azure.com");
}

fn header(headers: &[(String, String)], k: &str) -> Option<String> {
    headers
        .iter()
        .find(|(hk, _)| hk == k)
        .map(|(_, v)| v.clone())
}

fn append_config(az: &Azurite, endpoint_port: u16, container: &str, extra: &str) -> String {
    format!(
        r#"[sources.jobs]
include = ["{{dir}}/logs/*.log"]
sinks = ["blob"]
[sinks.blob]
type = "azure_blob"
allow_plaintext_credentials = true
container = "{container}"
account = "devstoreaccount1"
endpoint = "http://127.0.0.1:{endpoint_port}/devstoreaccount1"
account_key = "{AZURITE_KEY}"
blob_type = "append"
key = "{{source}}/day.ndjson"
compression = "none"
retry = {{ initial_backoff = "50ms", max_backoff = "200ms" }}
{extra}
"#
    )
    .replace("{port}", &az.port.to_string())
}

#[test]
fn append_blobs_take_every_batch_and_roll_over_by_size() {
    let az = Azurite::start();
    az.create_container("appends");
    let lf = Lf::new(&append_config(
        &az,
        az.port,
        "appends",
        "batch = { max_bytes = \"256KiB\" }\nappend_roll = { max_bytes = \"1MiB\" }",
    ));
    write_lines(&lf.path("logs/a.log"), 0, 50_000);
    lf.run_once();
    let names = az.list("appends");
    assert!(names.len() >= 4, "rolled over by size: {names:?}");
    let mut blocks = 0;
    for (i, n) in names.iter().enumerate() {
        assert_eq!(n, &format!("jobs/day-{:05}.ndjson", i + 1));
        let (_, h, _) = az.request(
            "HEAD",
            &format!("/devstoreaccount1/appends/{n}?{}", az.account_sas()),
        );
        assert_eq!(header(&h, "x-ms-blob-type").as_deref(), Some("AppendBlob"));
        let len: u64 = header(&h, "content-length").unwrap().parse().unwrap();
        assert!(
            len <= 1 << 20,
            "{n} is {len} bytes, over the 1 MiB roll size"
        );
        blocks += header(&h, "x-ms-blob-committed-block-count")
            .unwrap()
            .parse::<u64>()
            .unwrap();
    }
    assert!(blocks >= 16, "a block per batch: {blocks}");
    let recs = az.records("appends");
    assert_eq!(recs.len(), 50_000, "every record exactly once");
    assert_eq!(assert_all_present(&recs, 50_000), 0);
}

/// The first Append Block reaches Azurite and its answer is lost (`""`) or held (`"hold"`).
fn append_fault(status: &'static str) -> Fault {
    Fault {
        drop_response: true,
        method: "PUT",
        path_contains: "comp=appendblock",
        count: 1,
        status,
        headers: vec![],
        body: String::new(),
    }
}

/// The delivery loop's attempt timeout cancels an append whose request landed: the attempt
/// was recorded as "may have landed" before it left, so the retry finds it and does not
/// append it again (before, the record was made only by the append path's own, longer timer).
#[test]
fn an_append_cut_by_the_attempt_timeout_after_it_landed_is_not_appended_again() {
    let az = Azurite::start();
    az.create_container("appendheld");
    let proxy = FaultProxy::start(az.port, append_fault("hold"));
    let lf = Lf::new(&append_config(
        &az,
        proxy.port,
        "appendheld",
        "timeout = \"2s\"\nbatch = { max_age = \"200ms\" }",
    ));
    write_lines(&lf.path("logs/a.log"), 0, 100);
    let run = lf.spawn();
    wait_until(Duration::from_secs(30), "a retry after the timeout", || {
        run.metric("logferry_retries_total", "sink=\"blob\"") >= 1.0
            && run.metric("logferry_batches_sent_total", "sink=\"blob\"") >= 1.0
    });
    assert!(run.term(Duration::from_secs(20)).success());
    let recs = az.records("appendheld");
    assert_eq!(assert_all_present(&recs, 100), 0, "appended once");
    assert_eq!(
        proxy.hits.lock().unwrap().len(),
        1,
        "no second Append Block"
    );
}

#[test]
fn append_retries_never_append_twice() {
    let az = Azurite::start();
    az.create_container("appendlost");
    // The first Append Block is applied but its answer is lost.
    let proxy = FaultProxy::start(az.port, append_fault(""));
    let lf = Lf::new(&append_config(
        &az,
        proxy.port,
        "appendlost",
        "batch = { max_age = \"200ms\" }",
    ));
    // Written before the start: read in one go, they make one batch.
    write_lines(&lf.path("logs/a.log"), 0, 100);
    let run = lf.spawn();
    wait_until(Duration::from_secs(30), "100 records appended", || {
        az.records("appendlost").len() >= 100
    });
    // The retry compared the bytes at the offset it had tried, found its batch there and did
    // not append it again.
    assert_eq!(proxy.hits.lock().unwrap().len(), 1);
    write_lines(&lf.path("logs/a.log"), 100, 10);
    wait_until(Duration::from_secs(30), "110 records appended", || {
        az.records("appendlost").len() >= 110
    });
    assert_eq!(proxy.hits.lock().unwrap().len(), 2);
    // Another writer appends meanwhile: the next batch meets 412 (not at the expected
    // position), reads the blob back and appends after the foreign block.
    let name = "jobs/day-00001.ndjson";
    let (_, h, _) = az.request(
        "HEAD",
        &format!("/devstoreaccount1/appendlost/{name}?{}", az.account_sas()),
    );
    let len = header(&h, "content-length").unwrap();
    let foreign = b"{\"foreign\":true}\n";
    let (st, _, body) = az.request_with(
        "PUT",
        &format!(
            "/devstoreaccount1/appendlost/{name}?comp=appendblock&{}",
            az.account_sas()
        ),
        &[("x-ms-blob-condition-appendpos", &len)],
        foreign,
    );
    assert_eq!(st, 201, "{}", String::from_utf8_lossy(&body));
    write_lines(&lf.path("logs/a.log"), 110, 40);
    wait_until(Duration::from_secs(30), "150 records appended", || {
        az.records("appendlost").len() >= 151
    });
    assert_eq!(run.term(Duration::from_secs(20)).code(), Some(0));
    let hits = proxy.hits.lock().unwrap().len();
    assert_eq!(
        hits, 4,
        "lost, appended, then 412 and the append after the foreign block"
    );
    let recs = az.records("appendlost");
    assert_eq!(recs.len(), 151, "no batch twice");
    assert!(
        recs[110]["foreign"].as_bool().unwrap(),
        "the foreign block is kept in place"
    );
    let ours: Vec<_> = recs
        .into_iter()
        .filter(|r| r.get("foreign").is_none())
        .collect();
    assert_eq!(assert_all_present(&ours, 150), 0);
    assert!(lf.files("data/dead-letter/blob").is_empty());
}

#[test]
fn append_blobs_roll_over_by_age() {
    let az = Azurite::start();
    az.create_container("appendage");
    let lf = Lf::new(&append_config(
        &az,
        az.port,
        "appendage",
        "batch = { max_age = \"100ms\" }\nappend_roll = { max_age = \"1s\" }",
    ));
    let run = lf.spawn();
    write_lines(&lf.path("logs/a.log"), 0, 10);
    wait_until(Duration::from_secs(30), "the first blob", || {
        az.records("appendage").len() == 10
    });
    let first = std::time::Instant::now();
    // Time itself is the condition here: the blob must be older than max_age.
    wait_until(Duration::from_secs(5), "max_age to pass", || {
        first.elapsed() > Duration::from_millis(1500)
    });
    write_lines(&lf.path("logs/a.log"), 10, 10);
    wait_until(Duration::from_secs(30), "a second blob", || {
        az.records("appendage").len() == 20
    });
    assert_eq!(run.term(Duration::from_secs(20)).code(), Some(0));
    assert_eq!(
        az.list("appendage"),
        ["jobs/day-00001.ndjson", "jobs/day-00002.ndjson"]
    );
}

#[test]
fn block_blobs_above_four_mib_are_staged_and_committed() {
    let az = Azurite::start();
    az.create_container("staged");
    let lf = Lf::new(
        &config(
            "staged",
            &az.connection_string(),
            "compression = \"none\"\nbatch = { max_bytes = \"16MiB\", max_records = 200000 }",
        )
        .replace("{account_id}/", "")
        .replace(".ndjson.gz", ".ndjson"),
    );
    // About 10 MiB of records: one batch, staged in 4 MiB blocks.
    write_lines(&lf.path("logs/a.log"), 0, 120_000);
    lf.run_once();
    let names = az.list("staged");
    assert_eq!(names.len(), 1, "{names:?}");
    let (st, _, body) = az.request(
        "GET",
        &format!(
            "/devstoreaccount1/staged/{}?comp=blocklist&{}",
            names[0],
            az.account_sas()
        ),
    );
    assert_eq!(st, 200);
    let list = String::from_utf8_lossy(&body);
    assert!(list.matches("<Block>").count() >= 2, "{list}");
    assert_eq!(assert_all_present(&az.records("staged"), 120_000), 0);
}

#[test]
fn append_batches_replayed_after_a_crash_are_not_appended_again() {
    let az = Azurite::start();
    az.create_container("appendcrash");
    let proxy = FaultProxy::start(az.port, append_fault(""));
    // A long backoff keeps the batch waiting in the spool after its answer was lost.
    let lf = Lf::new(
        &append_config(
            &az,
            proxy.port,
            "appendcrash",
            "batch = { max_age = \"200ms\" }",
        )
        .replace("initial_backoff = \"50ms\"", "initial_backoff = \"60s\"")
        .replace("max_backoff = \"200ms\"", "max_backoff = \"60s\""),
    );
    let log = lf.path("logs/a.log");
    write_lines(&log, 0, 100);
    let size = std::fs::metadata(&log).unwrap().len();
    let run = lf.spawn();
    wait_until(
        Duration::from_secs(30),
        "the append to land unanswered",
        || proxy.hits.lock().unwrap().len() == 1 && az.records("appendcrash").len() == 100,
    );
    // The file is checkpointed once the batch is spooled: after the crash only the spool
    // brings the batch back, under its old id.
    wait_until(
        Duration::from_secs(30),
        "the checkpoint to cover the file",
        || {
            std::fs::read(lf.path("data/checkpoints/jobs.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .is_some_and(|c| c.to_string().contains(&format!("\"offset\":{size}")))
        },
    );
    run.kill9();
    let run = lf.spawn();
    wait_until(Duration::from_secs(30), "the spool to drain", || {
        walk(&lf.path("data/spool/blob")).is_empty()
    });
    assert_eq!(run.term(Duration::from_secs(20)).code(), Some(0));
    assert_eq!(
        proxy.hits.lock().unwrap().len(),
        1,
        "the replayed batch was found in the blob, not appended again"
    );
    let recs = az.records("appendcrash");
    assert_eq!(recs.len(), 100);
    assert_eq!(assert_all_present(&recs, 100), 0);
}

#[test]
fn a_read_only_sas_is_refused_with_the_role_to_grant() {
    let az = Azurite::start();
    az.create_container("readonly");
    let lf = Lf::new(&format!(
        "[sources.jobs]\ninclude = [\"{{dir}}/logs/*.log\"]\nsinks = [\"blob\"]\n[sinks.blob]\ntype = \"azure_blob\"\nallow_plaintext_credentials = true\ncontainer = \"readonly\"\naccount = \"devstoreaccount1\"\nendpoint = \"{}\"\nsas_token = \"{}\"\n",
        az.endpoint(),
        az.account_sas_with("rl")
    ));
    write_lines(&lf.path("logs/a.log"), 0, 5);
    let out = lf.run_once_incomplete();
    let note = lf.dead_letter_note("blob");
    let r = note["reason"].as_str().unwrap();
    assert!(
        r.contains("403")
            && r.contains("Storage Blob Data Contributor")
            && r.contains("\"readonly\""),
        "{r}"
    );
    assert!(az.list("readonly").is_empty());
    // The token's signature never reaches the logs.
    let sig = az.account_sas_with("rl");
    let sig = sig.split("sig=").nth(1).unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).contains(sig));
}
