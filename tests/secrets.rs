//! Secrets never leave in clear: planted credentials for every sink type, destinations that
//! fail (a refusal echoing the whole request back, a server error, a closed port), and a grep
//! of every channel an operator or an attacker could read: logs (text and JSON, dependencies
//! at INFO), `validate --check-sinks`, `/readyz`, `/metrics` and every file under `data_dir`.

mod common;

use common::tls::{HttpsServer, Req, Resp, TestCa};
use common::*;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Planted values: each shaped like the real thing, each unique in the whole run.
const PATH_TOKEN: &str = "pathTok3n9f8e7d6c5b4a3";
const QUERY_TOKEN: &str = "qryT0ken-77aa88bb99cc";
const BEARER: &str = "bearerT0ken.Zx81Lq93Mv";
const API_KEY: &str = "apiKey-5d4c3b2a1f0e9d8c";
const PASSWORD: &str = "basicPassw0rd-Yu72Kd";
const LITERAL_PATH: &str = "1itera1PathSegment9000abc";
// Base64, as an account key is; never sent (requests are signed with SAS tokens from it).
const ACCOUNT_KEY: &str = "cGxhbnRlZC1hY2NvdW50LWtleS1mb3ItbG9nZmVycnk=";
const SAS_SIG: &str = "sAsS1gnature0123456789abcdefXYZ";
const AWS_SECRET: &str = "awsSecretKey/Plant3d+0123456789abcdefgh";
const AWS_SESSION: &str = "awsSessionT0ken-FwoGZXIvYXdzEJr-planted";
const CLIENT_SECRET: &str = "entraCl1entSecret~Planted.42";

/// What the basic-auth header carries.
fn basic() -> String {
    base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("ingest:{PASSWORD}"),
    )
}

fn planted() -> Vec<String> {
    let mut v: Vec<String> = PLANTED.iter().map(|s| s.to_string()).collect();
    v.push(basic());
    v
}

const PLANTED: &[&str] = &[
    PATH_TOKEN,
    QUERY_TOKEN,
    BEARER,
    API_KEY,
    PASSWORD,
    LITERAL_PATH,
    ACCOUNT_KEY,
    SAS_SIG,
    AWS_SECRET,
    AWS_SESSION,
    CLIENT_SECRET,
];

/// A server that answers every request with `status` and, like a careless proxy, echoes the
/// whole request (target, headers, body) back in its error message.
fn echo_server(ca: &TestCa, status: u16, seen: Arc<Mutex<Vec<String>>>) -> HttpsServer {
    let cert = ca.server("echo", &["127.0.0.1", "localhost"]);
    HttpsServer::start(cert.config.clone(), move |r: &Req| {
        let whole = format!(
            "{} {} {:?} {}",
            r.method,
            r.target,
            r.headers,
            String::from_utf8_lossy(&r.body)
        );
        seen.lock().unwrap().push(whole.clone());
        let esc = whole.replace(['"', '\\', '<', '>', '&'], " ");
        let body = if r.target.contains("x-id=") || r.target.contains("/bucket") {
            format!("<Error><Code>AccessDenied</Code><Message>{esc}</Message></Error>")
        } else {
            format!("{{\"error\":{{\"code\":\"Denied\",\"message\":\"{esc}\"}},\"error_description\":\"{esc}\"}}")
        };
        Resp {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.into_bytes(),
        }
    })
}

/// Every sink type, all pointing at `port`, with every kind of credential.
fn config(ca: &TestCa, port: u16, dir: &std::path::Path, log_format: &str) -> String {
    let token_file = dir.join("bearer");
    std::fs::write(&token_file, format!("{BEARER}\n")).unwrap();
    let pw_file = dir.join("password");
    std::fs::write(&pw_file, format!("{PASSWORD}\n")).unwrap();
    let ca_pem = ca.ca_pem.display();
    let base = format!("https://127.0.0.1:{port}");
    let sinks = ["h1", "h2", "blob_key", "blob_sas", "s3", "monitor"];
    format!(
        r#"log_format = "{log_format}"
[api]
unready_after = "1s"
[sources.jobs]
include = ["{{dir}}/logs/*.log"]
sinks = {sinks:?}
[sinks.h1]
type = "http"
url = "{base}/receiver/v1/http/${{LF_PATH_TOKEN}}?api_key=${{LF_QUERY_TOKEN}}"
auth = {{ bearer = {{ token_file = "{token}" }} }}
headers = {{ X-Api-Key = "{API_KEY}" }}
tls = {{ ca_file = "{ca_pem}" }}
retry = {{ initial_backoff = "50ms", max_backoff = "100ms", max_attempts = 2 }}
batch = {{ max_age = "100ms" }}
[sinks.h2]
type = "http"
url = "{base}/in/{LITERAL_PATH}"
auth = {{ basic = {{ user = "ingest", password_file = "{pw}" }} }}
tls = {{ ca_file = "{ca_pem}" }}
retry = {{ initial_backoff = "50ms", max_backoff = "100ms", max_attempts = 2 }}
batch = {{ max_age = "100ms" }}
[sinks.blob_key]
type = "azure_blob"
container = "archive"
account = "acct"
endpoint = "{base}/acct"
account_key = "${{LF_ACCOUNT_KEY}}"
tls = {{ ca_file = "{ca_pem}" }}
retry = {{ initial_backoff = "50ms", max_backoff = "100ms", max_attempts = 2 }}
batch = {{ max_age = "100ms" }}
[sinks.blob_sas]
type = "azure_blob"
container = "archive"
account = "acct"
endpoint = "{base}/acct"
sas_token = "sv=2022-11-02&sp=racwl&sr=c&se=2099-01-01T00:00:00Z&sig={SAS_SIG}"
tls = {{ ca_file = "{ca_pem}" }}
retry = {{ initial_backoff = "50ms", max_backoff = "100ms", max_attempts = 2 }}
batch = {{ max_age = "100ms" }}
[sinks.s3]
type = "s3"
bucket = "bucket"
region = "us-east-1"
endpoint = "{base}"
force_path_style = true
tls = {{ ca_file = "{ca_pem}" }}
retry = {{ initial_backoff = "50ms", max_backoff = "100ms", max_attempts = 2 }}
batch = {{ max_age = "100ms" }}
[sinks.monitor]
type = "azure_monitor"
endpoint = "{base}"
dcr_id = "dcr-00000000000000000000000000000000"
stream = "Custom-Jobs_CL"
auth = "client_secret"
tenant_id = "72f988bf-86f1-41af-91ab-2d7cd011db47"
client_id = "0b5e3f4e-1c1a-4b8e-9a3e-5d6f7a8b9c0d"
client_secret = "${{LF_CLIENT_SECRET}}"
authority_host = "{base}/"
tls = {{ ca_file = "{ca_pem}" }}
retry = {{ initial_backoff = "50ms", max_backoff = "100ms", max_attempts = 2 }}
batch = {{ max_age = "100ms" }}
"#,
        token = token_file.display(),
        pw = pw_file.display(),
    )
}

fn env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("LF_PATH_TOKEN", PATH_TOKEN),
        ("LF_QUERY_TOKEN", QUERY_TOKEN),
        ("LF_ACCOUNT_KEY", ACCOUNT_KEY),
        ("LF_CLIENT_SECRET", CLIENT_SECRET),
        ("AWS_ACCESS_KEY_ID", "AKIAPLANTEDEXAMPLE01"),
        ("AWS_SECRET_ACCESS_KEY", AWS_SECRET),
        ("AWS_SESSION_TOKEN", AWS_SESSION),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
}

/// A GET to the local API: the whole answer.
fn get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Every planted value that appears in `text`, by name of the channel.
fn leaks(channel: &str, text: &str, found: &mut Vec<String>) {
    for p in planted() {
        if logferry_sink::redact::encodings(&p)
            .iter()
            .any(|e| text.contains(e.as_str()))
        {
            found.push(format!("{p} in {channel}"));
        }
    }
}

/// Runs every sink against a destination that fails one way, and greps every channel.
fn nothing_leaks(status: Option<u16>, log_format: &str) {
    let ca = TestCa::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (_server, port) = match status {
        Some(s) => {
            let srv = echo_server(&ca, s, seen.clone());
            let port = srv.port;
            (Some(srv), port)
        }
        None => (None, free_port()),
    };
    let files = tempfile::tempdir().unwrap();
    let lf = Lf::new(&config(&ca, port, files.path(), log_format));
    let env = env();
    let mut found = Vec::new();

    let (_, checked) = lf.check_sinks(&env);
    leaks("validate --check-sinks", &checked, &mut found);

    write_lines(&lf.path("logs/a.log"), 0, 20);
    let run = lf.spawn_env(&env);
    wait_until(Duration::from_secs(60), "every sink failing", || {
        ["h1", "h2", "blob_key", "blob_sas", "s3", "monitor"]
            .iter()
            .all(|s| {
                run.metric(
                    "logferry_dead_letter_batches_total",
                    &format!("sink=\"{s}\""),
                ) >= 1.0
            })
    });
    let readyz = get(lf.port, "/readyz");
    assert!(readyz.contains("last_error"), "{readyz}");
    leaks("/readyz", &readyz, &mut found);
    let metrics = get(lf.port, "/metrics");
    leaks("/metrics", &metrics, &mut found);
    let log = run.log.clone();
    run.term(Duration::from_secs(10));
    let logs = std::fs::read_to_string(&log).unwrap();
    leaks("the logs", &logs, &mut found);
    // Signatures minted from the account key are credentials too.
    for (i, _) in logs.match_indices("sig=") {
        if !logs[i + 4..].starts_with("***") {
            found.push(format!(
                "a SAS signature in the logs: {}",
                &logs[i..(i + 40).min(logs.len())]
            ));
        }
    }
    for f in walk(&lf.path("data")) {
        let bytes = std::fs::read(&f).unwrap_or_default();
        leaks(
            &format!("{}", f.display()),
            &String::from_utf8_lossy(&bytes),
            &mut found,
        );
    }
    // The test means something only if the failures were reported and the credentials did
    // reach the server that echoed them.
    assert!(
        logs.contains("dead-letter") || logs.contains("dead_letter"),
        "{logs}"
    );
    if status.is_some() {
        let seen = seen.lock().unwrap().join("\n");
        for p in [
            BEARER,
            &basic(),
            API_KEY,
            QUERY_TOKEN,
            AWS_SESSION,
            CLIENT_SECRET,
        ] {
            assert!(
                logferry_sink::redact::encodings(p)
                    .iter()
                    .any(|e| seen.contains(e.as_str())),
                "{p} never sent: the test would not see a leak"
            );
        }
    }
    assert!(
        found.is_empty(),
        "leaked:\n{}\n\nlogs:\n{logs}",
        found.join("\n")
    );
}

#[test]
fn no_secret_leaks_when_the_destination_refuses_and_echoes_the_request() {
    nothing_leaks(Some(401), "json");
}

#[test]
fn no_secret_leaks_when_the_destination_fails() {
    nothing_leaks(Some(500), "text");
}

#[test]
fn no_secret_leaks_when_the_destination_is_not_there() {
    nothing_leaks(None, "text");
}

#[test]
fn credentials_over_http_are_refused_naming_the_sink_and_allowed_only_on_request() {
    let lf = Lf::new(
        r#"[sources.jobs]
include = ["{dir}/logs/*.log"]
sinks = ["out"]
[sinks.out]
type = "http"
url = "http://127.0.0.1:9/in"
auth = { bearer = { token = "bearer-over-http" } }
"#,
    );
    let out = Command::new(BIN)
        .args(["validate", "--config"])
        .arg(&lf.cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("sinks.out.url: is http://") && err.contains("allow_plaintext_credentials"),
        "{err}"
    );
    assert!(!err.contains("bearer-over-http"), "{err}");
    // The same for the other sinks that carry credentials.
    for (sink, at) in [
        (
            "type = \"azure_blob\"\ncontainer = \"archive\"\naccount = \"a\"\nendpoint = \"http://127.0.0.1:9/a\"\naccount_key = \"a2V5a2V5\"",
            "sinks.out.endpoint: is http://",
        ),
        (
            "type = \"s3\"\nbucket = \"b\"\nregion = \"us-east-1\"\nendpoint = \"http://127.0.0.1:9\"",
            "sinks.out.endpoint: is http://",
        ),
    ] {
        let other = Lf::new(&format!(
            "[sources.jobs]\ninclude = [\"{{dir}}/logs/*.log\"]\nsinks = [\"out\"]\n[sinks.out]\n{sink}\n"
        ));
        let out = Command::new(BIN)
            .args(["validate", "--config"])
            .arg(&other.cfg)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(at), "{err}");
        let opted = std::fs::read_to_string(&other.cfg)
            .unwrap()
            .replace("[sinks.out]\n", "[sinks.out]\nallow_plaintext_credentials = true\n");
        std::fs::write(&other.cfg, opted).unwrap();
        let ok = Command::new(BIN)
            .args(["validate", "--config"])
            .arg(&other.cfg)
            .output()
            .unwrap();
        assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    }
    // Opted in: runs, and says so at every start.
    let text = std::fs::read_to_string(&lf.cfg).unwrap().replace(
        "[sinks.out]\n",
        "[sinks.out]\nallow_plaintext_credentials = true\ncheck = \"none\"\n",
    );
    std::fs::write(&lf.cfg, text).unwrap();
    let run = lf.spawn();
    wait_until(Duration::from_secs(10), "the warning", || {
        run.logs()
            .contains("sends its credentials over http:// in clear")
    });
    assert!(run.term(Duration::from_secs(10)).success());
}

#[test]
fn config_errors_name_the_option_never_the_secret_value() {
    let lf = Lf::new(
        r#"[sources.jobs]
include = ["{dir}/logs/*.log"]
sinks = ["out", "blob"]
[sinks.out]
type = "http"
url = "https://logs.example.com/in"
auth = { bearer = "inline-bearer-Zq81x" }
headers = { X-Api-Key = 918273645512 }
[sinks.blob]
type = "azure_blob"
container = "archive"
auth = "${CS}"
[keks.vault]
provider = "azure_key_vault"
vault_url = "https://vault.example.net"
key_name = "wrap"
auth = "client_secret"
tenant_id = "72f988bf-86f1-41af-91ab-2d7cd011db47"
client_id = "0b5e3f4e-1c1a-4b8e-9a3e-5d6f7a8b9c0d"
client_secret = 553719264880
"#,
    );
    let cs = "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=c2VjcmV0LWtleS12YWx1ZQ==";
    let out = Command::new(BIN)
        .args(["validate", "--config"])
        .arg(&lf.cfg)
        .env("CS", cs)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("sinks.out.auth.bearer"), "{err}");
    assert!(
        err.contains("sinks.blob.auth") && err.contains("${CS}"),
        "{err}"
    );
    assert!(err.contains("sinks.out.headers.X-Api-Key"), "{err}");
    // A KEK's credential is one too (another number than the header's, so that the
    // header's redaction cannot hide it).
    assert!(err.contains("keks.vault.client_secret"), "{err}");
    for secret in [
        "inline-bearer-Zq81x",
        "918273645512",
        "553719264880",
        "c2VjcmV0LWtleS12YWx1ZQ==",
        cs,
    ] {
        assert!(!err.contains(secret), "{secret} in:\n{err}");
    }
}

#[test]
fn key_files_an_include_glob_covers_are_never_shipped() {
    let lf = Lf::new(
        r#"
[keks.main]
provider = "local"
key_file = "{dir}/logs/kek.hex"
[signing]
key_file = "{dir}/logs/sign.pem"
[sources.jobs]
include = ["{dir}/logs/*"]
format = "text"
sinks = ["archive"]
[sinks.archive]
type = "directory"
path = "{dir}/archive"
batch = { max_age = "200ms" }
"#,
    );
    // The key files sit in the log directory itself: the glob matches them directly, no link
    // is involved (follow_symlinks is the default).
    let kek = "3c".repeat(32);
    common::write_key(&lf.path("logs/kek.hex"), format!("{kek}\n"));
    let out = Command::new(BIN)
        .args(["keygen", "--out"])
        .arg(lf.path("logs/sign.pem"))
        .output()
        .unwrap();
    succeeded(&out);
    let pem = std::fs::read_to_string(lf.path("logs/sign.pem")).unwrap();
    let body: Vec<&str> = pem
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with("-----"))
        .collect();
    assert!(!body.is_empty(), "{pem}");
    std::fs::write(lf.path("logs/app.log"), "app started ok\n").unwrap();

    let out = lf.run_once();
    let logs = String::from_utf8_lossy(&out.stderr);
    let shipped = lf
        .final_archive("archive")
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        shipped.contains("app started ok"),
        "the log itself is read: {shipped}"
    );
    assert!(!shipped.contains(&kek), "the KEK was shipped: {shipped}");
    assert!(
        !shipped.contains("PRIVATE KEY") && !body.iter().any(|b| shipped.contains(b)),
        "the signing key was shipped: {shipped}"
    );
    // Each refused by name, as one of logferry's own key files.
    let refused = |name: &str| {
        logs.lines()
            .any(|l| l.contains("file not read") && l.contains("credential") && l.contains(name))
    };
    for name in ["logs/kek.hex", "logs/sign.pem"] {
        assert!(refused(name), "{name} not refused as a key file:\n{logs}");
    }
    assert!(!logs.contains(&kek), "{logs}");
    assert!(!body.iter().any(|b| logs.contains(b)), "{logs}");
}
