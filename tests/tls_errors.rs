//! TLS failures in words an operator can act on, the same for every sink stack (reqwest for
//! http, the Azure SDK over reqwest, the AWS SDK's own client): a self-signed CA served as
//! the server's certificate, a certificate for another name, an expired certificate.

mod common;

use common::tls::{HttpsServer, Req, Resp, ServerCert, TestCa};
use common::*;
use std::time::Duration;

/// The three sink stacks, each pointed at `port` and trusting `ca`.
fn config(port: u16, ca: &std::path::Path) -> String {
    let ca = ca.display();
    format!(
        r#"[sources.jobs]
include = ["{{dir}}/logs/*.log"]
sinks = ["web", "blob", "bucket"]
[sinks.web]
type = "http"
url = "https://127.0.0.1:{port}/in"
tls = {{ ca_file = "{ca}" }}
batch = {{ max_age = "100ms" }}
retry = {{ initial_backoff = "50ms", max_backoff = "100ms", max_attempts = 1 }}
[sinks.blob]
type = "azure_blob"
container = "archive"
account = "acct"
endpoint = "https://127.0.0.1:{port}/acct"
sas_token = "sv=2022-11-02&sp=racwl&sr=c&se=2099-01-01T00:00:00Z&sig=x"
tls = {{ ca_file = "{ca}" }}
[sinks.bucket]
type = "s3"
bucket = "b"
region = "us-east-1"
endpoint = "https://127.0.0.1:{port}"
force_path_style = true
tls = {{ ca_file = "{ca}" }}
"#
    )
}

fn serve(cert: &ServerCert) -> HttpsServer {
    HttpsServer::start(cert.config.clone(), |_: &Req| Resp::json(200, "{}".into()))
}

/// A sink's line in the "sink checks" part of `validate --check-sinks`.
fn check_line<'a>(out: &'a str, sink: &str) -> Option<&'a str> {
    out.split_once("sink checks")?
        .1
        .lines()
        .find(|l| l.trim_start().starts_with(sink))
}

/// Every sink's line of `validate --check-sinks` says `words`.
fn every_sink_says(cert: &ServerCert, ca: &std::path::Path, words: &str) {
    let srv = serve(cert);
    let lf = Lf::new(&config(srv.port, ca));
    let env = [
        ("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE"),
        ("AWS_SECRET_ACCESS_KEY", "secret-example"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    let (code, out) = lf.check_sinks(&env);
    assert_eq!(code, Some(1), "{out}");
    for sink in ["web", "blob", "bucket"] {
        let line = check_line(&out, sink).unwrap_or_else(|| panic!("no line for {sink}:\n{out}"));
        assert!(line.contains(words), "{sink}: {line}");
    }
}

#[test]
fn a_ca_certificate_served_as_the_server_s_own_is_named() {
    let ca = TestCa::new();
    let cert = ca.self_signed_ca_server("selfca", &["127.0.0.1"]);
    every_sink_says(&cert, &cert.cert_pem, "presents a CA certificate (CA:TRUE)");
}

#[test]
fn a_certificate_for_another_name_is_named_with_the_names_it_holds() {
    let ca = TestCa::new();
    let cert = ca.server("other", &["logs.example.com"]);
    every_sink_says(&cert, &ca.ca_pem, "does not name this host");
    // The names the certificate holds are in the message, with the option that fixes it.
    let srv = serve(&cert);
    let lf = Lf::new(&config(srv.port, &ca.ca_pem));
    let (_, out) = lf.check_sinks(&[]);
    let web = check_line(&out, "web").unwrap();
    assert!(
        web.contains("logs.example.com") && web.contains("tls.server_name"),
        "{web}"
    );
}

#[test]
fn an_expired_certificate_is_named_and_the_first_failed_attempt_says_so() {
    let ca = TestCa::new();
    let cert = ca.server_with("expired", &["127.0.0.1"], |p| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    every_sink_says(&cert, &ca.ca_pem, "has expired");
    let srv = serve(&cert);
    let lf = Lf::new(&config(srv.port, &ca.ca_pem).replace(
        "sinks = [\"web\", \"blob\", \"bucket\"]",
        "sinks = [\"web\"]",
    ));
    write_lines(&lf.path("logs/a.log"), 0, 5);
    let run = lf.spawn();
    wait_until(
        Duration::from_secs(20),
        "the failure logged in words",
        || run.logs().contains("the server's certificate has expired"),
    );
    run.term(Duration::from_secs(10));
}
