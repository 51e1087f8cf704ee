use super::*;
use logferry_sink::{Compression, Encoding};

fn env(k: &str) -> Option<String> {
    (k == "ARCHIVE").then(|| "/tmp/arch".to_string())
}

fn load(text: &str) -> Result<Config, Problems> {
    load_str(Path::new("/etc/lf/c.toml"), text, &env)
}

const GOOD: &str = r#"
data_dir = "./data"
[sources.jobs]
include = ["./logs/*.log"]
sinks = ["archive"]
[sinks.archive]
type = "directory"
path = "${ARCHIVE}"
batch = { max_bytes = "1MiB", max_age = "2s" }
"#;

#[test]
fn good_config_with_defaults_and_expansion() {
    let c = load(GOOD).unwrap();
    assert_eq!(c.data_dir, Path::new("/etc/lf/data"));
    assert_eq!(c.sources[0].include, ["/etc/lf/logs/*.log"]);
    assert_eq!(c.sources[0].max_line_bytes, 1 << 20);
    let s = &c.sinks[0];
    assert!(matches!(&s.kind, SinkKind::Directory { path } if path == Path::new("/tmp/arch")));
    assert_eq!(s.max_bytes, 1 << 20);
    assert_eq!(s.max_age, Duration::from_secs(2));
    assert_eq!(s.max_records, 50_000);
    assert_eq!(s.key.as_str(), DEFAULT_KEY);
}

#[test]
fn every_unknown_key_is_reported_with_line_and_suggestion() {
    let text = r#"
[sources.jobs]
includ = ["a"]
include = ["a"]
sinks = ["archive"]
formatt = "json"
[sinks.archive]
type = "directory"
path = "/x"
bacth = { max_bytes = "1MiB" }
"#;
    let e = load(text).unwrap_err();
    let shown = e.to_string();
    assert!(
        shown.contains(
            "/etc/lf/c.toml:3: sources.jobs.includ: unknown key `includ`; did you mean `include`?"
        ),
        "{shown}"
    );
    assert!(
        shown.contains(
            "/etc/lf/c.toml:6: sources.jobs.formatt: unknown key `formatt`; did you mean `format`?"
        ),
        "{shown}"
    );
    assert!(
        shown.contains(
            "/etc/lf/c.toml:10: sinks.archive.bacth: unknown key `bacth`; did you mean `batch`?"
        ),
        "{shown}"
    );
    assert_eq!(e.list.len(), 3, "{shown}");
}

#[test]
fn dangling_references_and_bad_values_are_all_listed() {
    let text = r#"
[sources.jobs]
include = ["a"]
sinks = ["archiv"]
masking = "pii"
[sinks.archive]
type = "directory"
path = "${UNSET_VAR}"
batch = { max_bytes = "8 parsecs", max_age = "soon" }
"#;
    let e = load(text).unwrap_err();
    let shown = e.to_string();
    assert!(
        shown.contains(":4: sources.jobs.sinks[0]: no sink named \"archiv\"")
            || shown.contains("sinks.archive.path"),
        "{shown}"
    );
    assert!(
        shown.contains(":8: sinks.archive.path: environment variable UNSET_VAR is not set"),
        "{shown}"
    );
    assert!(
        shown.contains("sinks.archive.batch.max_bytes: invalid size"),
        "{shown}"
    );
}

#[test]
fn a_missing_sink_is_named_with_a_suggestion() {
    let text = GOOD.replace("sinks = [\"archive\"]", "sinks = [\"archiv\"]");
    let shown = load(&text).unwrap_err().to_string();
    assert!(
        shown.contains(
            ":5: sources.jobs.sinks[0]: no sink named \"archiv\"; did you mean \"archive\"?"
        ),
        "{shown}"
    );
}

#[test]
fn missing_masking_profile_and_unknown_sink_type() {
    let text = GOOD
        .replace("type = \"directory\"", "type = \"ftp\"")
        .replace(
            "sinks = [\"archive\"]",
            "sinks = [\"archive\"]\nmasking = \"pii\"",
        );
    let shown = load(&text).unwrap_err().to_string();
    assert!(shown.contains("unknown sink type \"ftp\""), "{shown}");
}

#[test]
fn key_template_without_batch_id_is_refused() {
    let text = GOOD.replace(
        "path = \"${ARCHIVE}\"",
        "path = \"/a\"\nkey = \"{source}/x.gz\"",
    );
    let shown = load(&text).unwrap_err().to_string();
    assert!(
        shown.contains("sinks.archive.key: the key must contain `{batch_id}`"),
        "{shown}"
    );
}

#[test]
fn syntax_errors_name_the_line() {
    let e = load("[sources.jobs]\ninclude = [\"a\"\nsinks = 1\n").unwrap_err();
    assert_eq!(e.list.len(), 1);
    assert!(e.list[0].line.is_some());
    assert!(e.list[0].message.starts_with("not valid TOML"));
}

#[test]
fn envelope_needs_records_placeholder() {
    let text = GOOD.replace(
        "path = \"${ARCHIVE}\"",
        "path = \"/a\"\nenvelope = \"{\\\"x\\\":1}\"",
    );
    let shown = load(&text).unwrap_err().to_string();
    assert!(
        shown.contains("must contain `{{records}}` (or `{{records_str}}`) exactly once"),
        "{shown}"
    );
    let text = GOOD.replace(
        "path = \"${ARCHIVE}\"",
        "path = \"/a\"\nenvelope = \"{\\\"id\\\":\\\"{{batch}}\\\",\\\"r\\\":{{records}}}\"",
    );
    let shown = load(&text).unwrap_err().to_string();
    assert!(shown.contains("{{batch}} is not a placeholder"), "{shown}");
    let text = GOOD.replace(
        "path = \"${ARCHIVE}\"",
        "path = \"/a\"\nenvelope = \"{\\\"logEntries\\\":{{records}}}\"",
    );
    let c = load(&text).unwrap();
    assert_eq!(c.sinks[0].envelope.as_ref().unwrap().0, "{\"logEntries\":");
    assert_eq!(c.sinks[0].encoding, Encoding::JsonArray);
    let text = GOOD.replace(
        "path = \"${ARCHIVE}\"",
        "path = \"/a\"\nenvelope = '{\"n\":{{record_count}},\"lines\":{{records_str}}}'",
    );
    let c = load(&text).unwrap();
    assert!(
        c.sinks[0].envelope.as_ref().unwrap().2,
        "records as one string"
    );
}

const BLOB: &str = r#"
data_dir = "./data"
[sources.jobs]
include = ["./logs/*.log"]
sinks = ["blob"]
[sinks.blob]
type = "azure_blob"
container = "archive"
"#;

#[test]
fn azure_blob_credentials_are_checked_together() {
    use logferry_destinations::azure_blob::{BlobAuth, BlobType, Entra};
    let ok = load(&format!(
        "{BLOB}account = \"acme\"\nauth = \"client_secret\"\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret = \"s\"\nauthority_host = \"https://login.microsoftonline.us\"\nblob_type = \"append\"\nappend_roll = {{ max_bytes = \"64MiB\", max_age = \"30m\" }}\n"
    ))
    .unwrap();
    let SinkKind::AzureBlob(o) = &ok.sinks[0].kind else {
        panic!("not azure_blob")
    };
    assert_eq!(o.endpoint, "https://acme.blob.core.windows.net");
    assert!(
        matches!(&o.auth, BlobAuth::Entra(Entra::ClientSecret { tenant_id, .. }) if tenant_id == "t")
    );
    assert!(
        !format!("{o:?}").contains("\"s\""),
        "the secret stays out of Debug"
    );
    assert_eq!(o.blob_type, BlobType::Append);
    assert_eq!(o.append_roll.max_bytes, 64 << 20);
    assert_eq!(ok.sinks[0].key.as_str(), DEFAULT_APPEND_KEY);

    for (extra, expect) in [
        ("", "needs connection_string (or _file), or account"),
        ("account = \"a\"\n", "needs a credential with account"),
        ("account = \"a\"\naccount_key = \"a2V5\"\nsas_token = \"sv=1\"\n", "choose one credential"),
        ("account = \"a\"\nauth = \"client_secret\"\n", "sinks.blob.tenant_id: required with auth = \"client_secret\""),
        ("account = \"a\"\nauth = \"managed_identity\"\ntenant_id = \"t\"\n", "sinks.blob.tenant_id: not used with auth = \"managed_identity\""),
        ("account = \"a\"\nsas_token = \"x\"\nclient_id = \"c\"\n", "sinks.blob.client_id: is an Entra ID option"),
        ("account = \"a\"\nauth = \"workload_identity\"\nendpoint = \"http://127.0.0.1:1/a\"\n", "Entra ID auth sends bearer tokens, which needs https://"),
        ("account = \"a\"\nauth = \"kerberos\"\n", "\"kerberos\": one of workload_identity"),
        ("connection_string = \"UseDevelopmentStorage=true\"\nauth = \"managed_identity\"\n", "sinks.blob.auth: the connection string already says"),
        ("connection_string = \"UseDevelopmentStorage=true\"\nblob_type = \"append\"\naccess_tier = \"Cool\"\n", "access tiers apply to block blobs only"),
        ("connection_string = \"UseDevelopmentStorage=true\"\nappend_roll = { max_bytes = \"1GiB\" }\n", "only applies with blob_type = \"append\""),
        ("connection_string = \"UseDevelopmentStorage=true\"\nallow_plaintext_credentials = true\nblob_type = \"append\"\nkey = \"{source}/{batch_id}.gz\"\n", "append blobs are shared by the batches of a key"),
    ] {
        let shown = load(&format!("{BLOB}{extra}")).unwrap_err().to_string();
        assert!(shown.contains(expect), "{extra}\n=> {shown}");
    }
}

#[test]
fn credentials_over_plaintext_are_refused_unless_the_sink_opts_in() {
    let azurite = "connection_string = \"UseDevelopmentStorage=true\"\n";
    let shown = load(&format!("{BLOB}{azurite}")).unwrap_err().to_string();
    assert!(
        shown.contains("sinks.blob.connection_string: is http://, which would send SAS tokens signed with the account key in clear"),
        "{shown}"
    );
    let sas = "account = \"a\"\nendpoint = \"http://10.0.0.5/a\"\nsas_token = \"sv=1&sig=x\"\n";
    let shown = load(&format!("{BLOB}{sas}")).unwrap_err().to_string();
    assert!(
        shown.contains("sinks.blob.endpoint: is http://, which would send the SAS token"),
        "{shown}"
    );
    let ok = load(&format!(
        "{BLOB}{azurite}allow_plaintext_credentials = true\n"
    ))
    .unwrap();
    assert!(ok.sinks[0].plaintext_credentials(), "warned at start");

    let bearer = "auth = { bearer = { token = \"t0ken-value\" } }\n";
    let http = HTTP_BASE.replace("https://", "http://");
    let shown = load(&format!("{http}{bearer}")).unwrap_err().to_string();
    assert!(
        shown.contains("sinks.out.url: is http://, which would send a bearer token in clear"),
        "{shown}"
    );
    let shown = load(&format!("{http}headers = {{ X-Api-Key = \"k-123456\" }}\n"))
        .unwrap_err()
        .to_string();
    assert!(shown.contains("header X-Api-Key"), "{shown}");
    // Loopback is no exemption.
    let local = HTTP_BASE.replace("https://logs.example.com", "http://127.0.0.1:9");
    assert!(load(&format!("{local}{bearer}")).is_err());
    // No credential, no problem; https, no problem.
    assert!(!load(&http).unwrap().sinks[0].plaintext_credentials());
    assert!(load(&format!("{HTTP_BASE}{bearer}")).is_ok());
    let ok = load(&format!(
        "{http}{bearer}allow_plaintext_credentials = true\n"
    ))
    .unwrap();
    assert!(ok.sinks[0].plaintext_credentials());

    let s3 = "[sinks.s3]\ntype = \"s3\"\nbucket = \"b\"\nregion = \"us-east-1\"\nendpoint = \"http://minio:9000\"\n";
    let base = HTTP_BASE.replace("sinks = [\"out\"]", "sinks = [\"out\", \"s3\"]");
    let shown = load(&format!("{base}{s3}")).unwrap_err().to_string();
    assert!(
        shown.contains("sinks.s3.endpoint: is http://, which would send signed requests"),
        "{shown}"
    );
    assert!(load(&format!("{base}{s3}allow_plaintext_credentials = true\n")).is_ok());
}

/// One source into an HTTP sink named `out`; tests add the sink's options after it.
const HTTP_BASE: &str = r#"
data_dir = "./data"
[sources.jobs]
include = ["./logs/*.log"]
sinks = ["out"]
[sinks.out]
type = "http"
url = "https://logs.example.com/in"
"#;

#[test]
fn http_options_are_checked() {
    let base = HTTP_BASE;
    let ok = load(&format!(
        "{base}retry_on = [408, \"5xx\"]\nsuccess_on = [\"2xx\", 304]\ntimeout = \"5s\"\n"
    ))
    .unwrap();
    let SinkKind::Http(o) = &ok.sinks[0].kind else {
        panic!("not http")
    };
    assert!(o.retry_on.contains(503) && o.retry_on.contains(408) && !o.retry_on.contains(429));
    assert!(o.success_on.contains(304));
    assert_eq!(ok.sinks[0].timeout, Duration::from_secs(5));
    for (extra, expect) in [
        ("method = \"GET\"\n", "sinks.out.method: POST or PUT"),
        ("retry_on = [\"9xx\"]\n", "a class is 1xx to 5xx"),
        ("retry_on = [700]\n", "not an HTTP status"),
        (
            "auth = { basic = { user = \"u\" } }\n",
            "needs password or password_file",
        ),
        (
            "auth = { basic = { user = \"u\", password = \"p\" }, bearer = { token = \"t\" } }\n",
            "one of basic",
        ),
        (
            "signature = { key_env = \"LOGFERRY_NO_SUCH_VAR\" }\n",
            "LOGFERRY_NO_SUCH_VAR is not set",
        ),
        (
            "headers = { Idempotency-Key = \"x\" }\n",
            "is set by logferry",
        ),
        (
            "tls = { cert_file = \"/etc/hostname\" }\n",
            "cert_file and key_file go together",
        ),
        ("check = \"ping\"\n", "\"head\", \"options\" or \"none\""),
    ] {
        let shown = load(&format!("{base}{extra}")).unwrap_err().to_string();
        assert!(shown.contains(expect), "{extra}=> {shown}");
    }
}

#[test]
fn durations_and_sizes_over_their_bounds_are_refused_by_name() {
    // A duration this long once passed validate and then panicked the source thread.
    let text = format!("checkpoint_interval = \"300000000000y\"\n{GOOD}");
    let e = load(&text).unwrap_err().to_string();
    assert!(e.contains("checkpoint_interval"), "{e}");
    assert!(e.contains("longer than 30 days"), "{e}");
    let text = GOOD.replace("max_bytes = \"1MiB\"", "max_bytes = \"5TiB\"");
    let e = load(&text).unwrap_err().to_string();
    assert!(
        e.contains("max_bytes") && e.contains("larger than 1TiB"),
        "{e}"
    );
}

#[test]
fn names_that_could_leave_data_dir_are_refused() {
    for bad in ["../../../x", "a/b", "", "white space", &"x".repeat(65)] {
        let text = GOOD
            .replace("[sinks.archive]", &format!("[sinks.\"{bad}\"]"))
            .replace("sinks = [\"archive\"]", &format!("sinks = [\"{bad}\"]"));
        let e = load(&text).unwrap_err().to_string();
        assert!(e.contains("1 to 64 letters, digits"), "{bad:?}: {e}");
        let text = GOOD.replace("[sources.jobs]", &format!("[sources.\"{bad}\"]"));
        let e = load(&text).unwrap_err().to_string();
        assert!(e.contains("1 to 64 letters, digits"), "{bad:?}: {e}");
    }
    let ok = GOOD.replace("[sources.jobs]", "[sources.Jobs_2-eu]");
    assert!(load(&ok).is_ok());
}

#[test]
fn file_options_must_be_readable_regular_files() {
    let base = HTTP_BASE;
    for (extra, at) in [
        (
            "auth = { bearer = { token_file = \"/\" } }\n",
            "sinks.out.auth.bearer.token_file",
        ),
        ("tls = { ca_file = \"/\" }\n", "sinks.out.tls.ca_file"),
        (
            "tls = { ca_file = \"/nonexistent/ca.pem\" }\n",
            "sinks.out.tls.ca_file",
        ),
    ] {
        let e = load(&format!("{base}{extra}")).unwrap_err().to_string();
        assert!(e.contains(at), "{extra}: {e}");
        assert!(
            e.contains("is a directory") || e.contains("No such file"),
            "{extra}: {e}"
        );
    }
}

#[test]
fn errors_never_echo_a_value_from_the_environment() {
    let secret = "tok-8f2c9a7e51d34b6f";
    let cs = "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=c2VjcmV0a2V5LWJ5dGVz";
    let env = |k: &str| match k {
        "TOKEN" => Some(secret.to_string()),
        "CS" => Some(cs.to_string()),
        _ => None,
    };
    let text = r#"
[sources.jobs]
include = ["./logs/*.log"]
sinks = ["out", "blob"]
[sinks.out]
type = "http"
url = "https://logs.example.com/in"
auth = { bearer = "${TOKEN}" }
[sinks.blob]
type = "azure_blob"
container = "c"
auth = "${CS}"
"#;
    let e = load_str(Path::new("/etc/lf/c.toml"), text, &env)
        .unwrap_err()
        .to_string();
    assert!(!e.contains(secret), "{e}");
    assert!(!e.contains("c2VjcmV0a2V5"), "{e}");
    assert!(
        e.contains("${TOKEN}"),
        "says where the value came from: {e}"
    );
    assert!(e.contains("sinks.out.auth"), "{e}");
}

#[test]
fn certificate_and_key_files_are_read_at_load_and_named_in_words() {
    let d = tempfile::tempdir().unwrap();
    let w = |name: &str, text: &str| {
        let p = d.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let pair = |days: Option<(i32, i32)>| {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["client.example".into()]).unwrap();
        if let Some((from, to)) = days {
            params.not_before = rcgen::date_time_ymd(from, 1, 1);
            params.not_after = rcgen::date_time_ymd(to, 1, 1);
        }
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (cert, key) = pair(None);
    let (_, other_key) = pair(None);
    let (old_cert, old_key) = pair(Some((2019, 2020)));
    let tls = |ca: &str, cert: &str, key: &str| {
        format!("{HTTP_BASE}tls = {{ ca_file = \"{ca}\", cert_file = \"{cert}\", key_file = \"{key}\" }}\n")
    };
    let (ca, cert_f, key_f) = (w("ca.pem", &cert), w("c.pem", &cert), w("k.pem", &key));
    assert!(load(&tls(&ca, &cert_f, &key_f)).is_ok());

    let empty = w("empty.pem", "not a certificate\n");
    let shown = load(&tls(&empty, &cert_f, &key_f)).unwrap_err().to_string();
    assert!(
        shown.contains("sinks.out.tls.ca_file") && shown.contains("holds no certificate"),
        "{shown}"
    );

    let mismatch = w("other-key.pem", &other_key);
    let shown = load(&tls(&ca, &cert_f, &mismatch)).unwrap_err().to_string();
    assert!(
        shown.contains("sinks.out.tls.key_file")
            && shown.contains("does not match the certificate"),
        "{shown}"
    );
    assert!(
        !shown.contains("PRIVATE KEY"),
        "the key is never quoted: {shown}"
    );

    let (old_c, old_k) = (w("old.pem", &old_cert), w("old-key.pem", &old_key));
    let shown = load(&tls(&ca, &old_c, &old_k)).unwrap_err().to_string();
    assert!(
        shown.contains("sinks.out.tls.cert_file") && shown.contains("expired on 2020-01-01"),
        "{shown}"
    );
    let shown = load(&tls(&old_c, &cert_f, &key_f)).unwrap_err().to_string();
    assert!(
        shown.contains("sinks.out.tls.ca_file") && shown.contains("the CA certificate"),
        "{shown}"
    );

    let not_key = w("nokey.pem", &cert);
    let shown = load(&tls(&ca, &cert_f, &not_key)).unwrap_err().to_string();
    assert!(shown.contains("holds no PEM private key"), "{shown}");
}

#[test]
fn a_kek_credential_of_the_wrong_type_is_kept_for_redaction() {
    let text = format!(
        "{GOOD}[keks.vault]\nprovider = \"azure_key_vault\"\nvault_url = \"https://v.vault.azure.net\"\nkey_name = \"k\"\nauth = \"client_secret\"\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret = 918273645512\n"
    );
    let e = load(&text).unwrap_err();
    let shown = e.to_string();
    assert!(shown.contains("keks.vault.client_secret"), "{shown}");
    // serde quotes the value it refuses: the process's redaction must know it.
    assert!(
        e.secrets.iter().any(|s| s == "918273645512"),
        "{:?}",
        e.secrets
    );
}

#[test]
fn kek_and_signing_key_files_are_never_read_as_logs() {
    let d = tempfile::tempdir().unwrap();
    let kek = "3c".repeat(32);
    key_file(
        &d.path().join("kek.hex"),
        format!("{kek}\n").as_bytes(),
        0o600,
    );
    let (private, _) = logferry_integrity::signing::SigningKey::generate().unwrap();
    key_file(&d.path().join("sign.pem"), private.as_bytes(), 0o600);
    let text = format!(
        "{GOOD}[keks.main]\nprovider = \"local\"\nkey_file = \"{dir}/kek.hex\"\n[signing]\nkey_file = \"{dir}/sign.pem\"\n",
        dir = d.path().display()
    );
    let cfg = load(&text).unwrap();
    for name in ["kek.hex", "sign.pem"] {
        assert!(
            cfg.credential_files.contains(&d.path().join(name)),
            "{name} not in {:?}",
            cfg.credential_files
        );
    }
    assert!(cfg.secrets.contains(&kek), "{:?}", cfg.secrets);
}

/// Writes a key file with `mode` (`std::fs::write` leaves 0644 under the usual umask 022).
fn key_file(path: &Path, bytes: &[u8], mode: u32) {
    std::fs::write(path, bytes).unwrap();
    chmod(path, mode);
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Loads GOOD with a local KEK at `{dir}/kek.hex`, then `extra`.
fn load_kek(dir: &Path, extra: &str) -> Result<Config, Problems> {
    load(&format!(
        "{GOOD}[keks.main]\nprovider = \"local\"\nkey_file = \"{}/kek.hex\"\n{extra}",
        dir.display()
    ))
}

/// Loads GOOD with `[signing] key_file = "{dir}/sign.pem"`, then `extra`.
fn load_signing(dir: &Path, extra: &str) -> Result<Config, Problems> {
    load(&format!(
        "{GOOD}[signing]\nkey_file = \"{}/sign.pem\"\n{extra}",
        dir.display()
    ))
}

const TRUSTED: &str = "[security]\nkey_file_modes = \"trusted\"\n";
const GROUP: &str = "[security]\nkey_file_modes = \"group\"\n";

#[test]
fn a_kek_file_open_to_the_group_or_others_is_refused_with_what_to_do() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("kek.hex");
    key_file(&path, "3c".repeat(32).as_bytes(), 0o644);
    let e = load_kek(d.path(), "").unwrap_err().to_string();
    assert!(e.contains("keks.main.key_file"), "{e}");
    assert!(
        e.contains(&format!("{} is readable or writable by", path.display())),
        "{e}"
    );
    assert!(e.contains("(mode 0644)"), "{e}");
    assert!(
        e.contains("a KEK must be readable by its owner only"),
        "{e}"
    );
    assert!(e.contains(&format!("chmod 600 {}", path.display())), "{e}");
    assert!(e.contains("defaultMode: 0400"), "{e}");
    assert!(e.contains("key_file_modes = \"group\""), "{e}");
    // A mount said to be trusted is not checked.
    let cfg = load_kek(d.path(), TRUSTED).unwrap();
    assert_eq!(cfg.key_file_modes, KeyFileModes::Trusted);
    assert!(cfg.keks.contains_key("main"));
    // The group may read it only when the configuration says so.
    chmod(&path, 0o640);
    let e = load_kek(d.path(), "").unwrap_err().to_string();
    assert!(e.contains("keks.main.key_file"), "{e}");
    assert!(e.contains("by the group (mode 0640)"), "{e}");
    let cfg = load_kek(d.path(), GROUP).unwrap();
    assert_eq!(cfg.key_file_modes, KeyFileModes::Group);
    // Never written by the group, never opened by others.
    for mode in [0o660, 0o604] {
        chmod(&path, mode);
        let e = load_kek(d.path(), GROUP).unwrap_err().to_string();
        assert!(e.contains("keks.main.key_file"), "{mode:o}: {e}");
        assert!(e.contains(&format!("(mode 0{mode:o})")), "{mode:o}: {e}");
    }
    // Owner only passes by default.
    for mode in [0o600, 0o400] {
        chmod(&path, mode);
        let cfg = load_kek(d.path(), "").unwrap();
        assert_eq!(cfg.key_file_modes, KeyFileModes::Owner);
    }
}

#[test]
fn a_signing_key_file_open_to_the_group_or_others_is_refused_with_what_to_do() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("sign.pem");
    let (private, _) = logferry_integrity::signing::SigningKey::generate().unwrap();
    key_file(&path, private.as_bytes(), 0o644);
    let e = load_signing(d.path(), "").unwrap_err().to_string();
    assert!(e.contains("signing.key_file"), "{e}");
    assert!(
        e.contains(&format!("{} is readable", path.display())),
        "{e}"
    );
    assert!(e.contains("(mode 0644)"), "{e}");
    assert!(
        e.contains("a signing key must be readable by its owner only"),
        "{e}"
    );
    assert!(e.contains(&format!("chmod 600 {}", path.display())), "{e}");
    let cfg = load_signing(d.path(), TRUSTED).unwrap();
    assert_eq!(cfg.signing_key_file.as_deref(), Some(path.as_path()));
    chmod(&path, 0o640);
    let e = load_signing(d.path(), "").unwrap_err().to_string();
    assert!(e.contains("signing.key_file"), "{e}");
    assert!(e.contains("by the group (mode 0640)"), "{e}");
    let cfg = load_signing(d.path(), GROUP).unwrap();
    // The run-time read applies the same rule.
    assert!(crate::encryption::signer(&cfg).unwrap().is_some());
    let refused = crate::encryption::signer(&Config {
        key_file_modes: KeyFileModes::Owner,
        ..cfg
    });
    let e = format!("{:#}", refused.err().unwrap());
    assert!(e.contains("chmod 600"), "{e}");
    chmod(&path, 0o600);
    load_signing(d.path(), "").unwrap();
}

#[test]
fn key_file_modes_takes_three_values() {
    let e = load(&format!("{GOOD}[security]\nkey_file_modes = \"open\"\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("security.key_file_modes"), "{e}");
    let e = load(&format!("{GOOD}[security]\nkey_modes = \"group\"\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("did you mean `key_file_modes`"), "{e}");
    assert_eq!(load(GOOD).unwrap().key_file_modes, KeyFileModes::Owner);
}

#[test]
fn parquet_options_take_their_defaults_and_refuse_what_cannot_work() {
    let parquet = |extra: &str| {
        load(&format!(
            "data_dir = \"./data\"\n[sources.jobs]\ninclude = [\"./logs/*.log\"]\nsinks = [\"archive\"]\n[sinks.archive]\ntype = \"directory\"\npath = \"./a\"\nencoding = \"parquet\"\n{extra}"
        ))
    };
    let c = parquet("").unwrap();
    let s = &c.sinks[0];
    assert_eq!(s.max_bytes, 32 << 20);
    assert_eq!(
        s.compression,
        Compression::None,
        "the file is never wrapped"
    );
    assert!(s.key.as_str().starts_with("source={source}/year=%Y/"));
    let spec = s.parquet.as_ref().unwrap();
    assert_eq!(spec.codec, crate::parquet::schema::Codec::Zstd);
    let e = parquet("batch = { max_bytes = \"2GiB\" }")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("sinks.archive.batch.max_bytes") && e.contains("1GiB"),
        "{e}"
    );
    let e = parquet("key = \"{source}/{batch_id}.pq\"")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("sinks.archive.key") && e.contains(".parquet"),
        "{e}"
    );
    let e = parquet("compression_level = 5\ncompression = \"snappy\"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("sinks.archive.compression_level"), "{e}");
    let e = load(&format!("{GOOD}compression = \"snappy\"\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("snappy is a Parquet column codec"), "{e}");
}
