//! The secret values a configuration holds, found by where they are written: options that
//! are credentials, the files that hold credentials, auth headers, and the secret parts of
//! URLs. The process registers them with [`logferry_sink::redact`] so that no message shows
//! them, whichever crate writes it.

use std::path::{Path, PathBuf};

/// Options whose value is a credential wherever they appear.
const SECRET_KEYS: &[&str] = &[
    "token",
    "bearer",
    "password",
    "sas_token",
    "account_key",
    "client_secret",
    "secret_access_key",
    "session_token",
    "connection_string",
];

/// Options whose value is a file holding a credential (certificates and CA bundles are
/// public, a private key never appears in a message: neither is read here).
const SECRET_FILES: &[&str] = &[
    "token_file",
    "password_file",
    "sas_token_file",
    "account_key_file",
    "client_secret_file",
    "secret_access_key_file",
    "connection_string_file",
    "federated_token_file",
    "key_file",
];

/// Options holding a URL.
const URL_KEYS: &[&str] = &["url", "endpoint", "authority_host"];

/// Options whose values are paths, names or URLs, never credentials: a `${VAR}` in them is
/// not registered for redaction whole (a log line naming the file or bucket stays useful; a
/// URL's secret parts are found by [`logferry_sink::redact::url_secrets`]).
const PLAIN_OPTIONS: &[&str] = &[
    "include",
    "exclude",
    "path",
    "data_dir",
    "listen",
    "bucket",
    "region",
    "container",
    "account",
    "key",
    "timestamp_field",
    "record_id",
    "url",
    "endpoint",
    "authority_host",
    "ca_file",
    "cert_file",
    "access_key_id_file",
    "server_name",
    "dcr_id",
    "stream",
    "tenant_id",
    "client_id",
];

/// Whether the option at `path` (`sinks.out.url`, `sources.jobs.include[0]`) is one of
/// [`PLAIN_OPTIONS`].
pub(super) fn plain_option(path: &str) -> bool {
    let last = path.rsplit('.').next().unwrap_or(path);
    let name = last.split('[').next().unwrap_or(last);
    // A credential file's path is not the credential.
    PLAIN_OPTIONS.contains(&name) || SECRET_FILES.contains(&name)
}

/// Header names that carry credentials.
pub(super) fn secret_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "auth",
        "token",
        "key",
        "secret",
        "signature",
        "cookie",
        "session",
        "password",
        "credential",
        // Honeycomb's X-Honeycomb-Team, Uptrace's uptrace-dsn: keys under other names.
        "team",
        "dsn",
        "license",
    ]
    .iter()
    .any(|w| n.contains(w))
}

/// Larger files are not credentials; they are not read.
const MAX_SECRET_FILE: u64 = 64 * 1024;

/// Environment variables naming credential files the SDK chains read.
pub(super) const ENV_FILES: &[&str] = &[
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AZURE_FEDERATED_TOKEN_FILE",
];

/// What a configuration holds that must never be shown or read as a log.
#[derive(Default)]
pub(super) struct Found {
    pub values: Vec<String>,
    /// Files holding credentials or keys.
    pub files: Vec<PathBuf>,
}

/// Where `key_env` options find their variables (the loader's environment).
pub(super) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Every secret value and credential or key file in the (expanded) configuration: the sink
/// and KEK tables (credentials by option name), `[signing]` (the receipt signing key) and the
/// HMAC keys of `[masking.*]` profiles. `env` resolves `key_env` options.
pub(super) fn collect(table: &toml::Table, base: &Path, env: Env<'_>) -> Found {
    let mut out = Found::default();
    // A KEK table is read like a sink's: client_secret (a string or a number),
    // client_secret_file, federated_token_file, key_file (a local KEK), key_env, tls.key_file.
    for section in ["sinks", "keks"] {
        if let Some(toml::Value::Table(named)) = table.get(section) {
            for item in named.values() {
                if let toml::Value::Table(t) = item {
                    walk(t, false, base, env, &mut out);
                }
            }
        }
    }
    // The Ed25519 key that signs receipts and digests.
    if let Some(toml::Value::Table(t)) = table.get("signing") {
        walk(t, false, base, env, &mut out);
    }
    // HMAC keys of masking rules and detector overrides, wherever they sit in a profile.
    if let Some(toml::Value::Table(profiles)) = table.get("masking") {
        for profile in profiles.values() {
            key_options(profile, base, env, &mut out);
        }
    }
    out
}

fn walk(t: &toml::Table, in_headers: bool, base: &Path, env: Env<'_>, found: &mut Found) {
    for (k, v) in t {
        match v {
            toml::Value::String(s) => {
                if in_headers {
                    if secret_header(k) {
                        found.values.push(s.clone());
                        // "Bearer <token>", "Basic <b64>": the credential alone too.
                        if let Some((_, cred)) = s.split_once(' ') {
                            found.values.push(cred.to_string());
                        }
                    }
                } else if SECRET_KEYS.contains(&k.as_str()) {
                    found.values.push(s.clone());
                    if k == "connection_string" {
                        found.values.extend(connection_string_parts(s));
                    }
                } else if SECRET_FILES.contains(&k.as_str()) {
                    secret_file(s, base, found);
                } else if k == "key_env" {
                    env_secret(s, env, found);
                } else if URL_KEYS.contains(&k.as_str()) {
                    found.values.extend(logferry_sink::redact::url_secrets(s));
                }
            }
            toml::Value::Table(inner) => walk(inner, k == "headers", base, env, found),
            // A credential written as a number (a PIN-like token) is as secret as a string:
            // a type error would quote it.
            toml::Value::Integer(_) | toml::Value::Float(_)
                if SECRET_KEYS.contains(&k.as_str()) || (in_headers && secret_header(k)) =>
            {
                found.values.push(v.to_string());
            }
            _ => {}
        }
    }
}

/// The `key_file` and `key_env` options anywhere in `v` (a masking profile: its rules are an
/// array of tables, its detector overrides tables of tables).
fn key_options(v: &toml::Value, base: &Path, env: Env<'_>, found: &mut Found) {
    match v {
        toml::Value::Table(t) => {
            for (k, item) in t {
                match (k.as_str(), item) {
                    ("key_file", toml::Value::String(f)) => secret_file(f, base, found),
                    ("key_env", toml::Value::String(var)) => env_secret(var, env, found),
                    _ => key_options(item, base, env, found),
                }
            }
        }
        toml::Value::Array(a) => {
            for item in a {
                key_options(item, base, env, found);
            }
        }
        _ => {}
    }
}

/// A file holding a credential or a key: never read as a log, and its text (when it is small
/// UTF-8) never shown, nor the base64 body of a PEM key in it.
fn secret_file(written: &str, base: &Path, found: &mut Found) {
    let path = super::resolve(base, written);
    if let Some(text) = read_secret_file(&path) {
        found.values.extend(pem_bodies(&text));
        found.values.push(text);
    }
    found.files.push(path);
}

/// The value of the environment variable a `key_env` names: the key itself.
fn env_secret(var: &str, env: Env<'_>, found: &mut Found) {
    if let Some(value) = env(var) {
        let value = value.trim();
        if !value.is_empty() {
            found.values.push(value.to_string());
        }
    }
}

/// The base64 bodies of the PEM blocks in `text`: each line and each whole body (a message
/// may quote either; the `-----BEGIN` lines are the same in every key and are not secret).
fn pem_bodies(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut body: Option<String> = None;
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with("-----BEGIN ") {
            body = Some(String::new());
        } else if l.starts_with("-----END ") {
            if let Some(b) = body.take() {
                if !b.is_empty() {
                    out.push(b);
                }
            }
        } else if let Some(b) = body.as_mut() {
            // Skips blank lines and RFC 1421 headers (`Proc-Type: 4,ENCRYPTED`).
            if !l.is_empty() && !l.contains(':') {
                b.push_str(l);
                out.push(l.to_string());
            }
        }
    }
    // A one-line body is both a line and the whole body.
    out.dedup();
    out
}

/// The key and signature of an Azure connection string (the account name is not secret).
fn connection_string_parts(s: &str) -> Vec<String> {
    s.split(';')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| {
            k.eq_ignore_ascii_case("AccountKey") || k.eq_ignore_ascii_case("SharedAccessSignature")
        })
        .map(|(_, v)| v.to_string())
        .collect()
}

/// A credential file's value (trailing newlines dropped), when it is a small regular file.
/// Problems with the file are reported by the option's own check.
fn read_secret_file(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() || meta.len() > MAX_SECRET_FILE {
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    Some(text.trim_end_matches(['\r', '\n']).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_credentials_by_where_they_are_written() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "file-password-1\n").unwrap();
        let t: toml::Table = format!(
            r#"
[sinks.h]
url = "https://h/in/a1b2c3d4e5f6g7h8i9j0?api_key=qk-123456"
auth = {{ basic = {{ user = "u", password_file = "{}/pw" }} }}
headers = {{ "X-Api-Key" = "hk-abcdef", "Accept" = "application/json" }}
[sinks.b]
connection_string = "AccountName=a;AccountKey=a2V5a2V5;EndpointSuffix=x"
[sinks.t]
auth = {{ bearer = "bt-999999" }}
"#,
            dir.path().display()
        )
        .parse()
        .unwrap();
        let f = collect(&t, dir.path(), &|_: &str| None::<String>);
        assert_eq!(f.files, vec![dir.path().join("pw")]);
        let s = f.values;
        for want in [
            "a1b2c3d4e5f6g7h8i9j0",
            "qk-123456",
            "file-password-1",
            "hk-abcdef",
            "a2V5a2V5",
            "bt-999999",
        ] {
            assert!(s.iter().any(|v| v == want), "{want} not in {s:?}");
        }
        assert!(
            !s.iter().any(|v| v == "application/json" || v == "u"),
            "{s:?}"
        );
    }

    #[test]
    fn finds_key_material_of_keks_signing_and_masking() {
        let dir = tempfile::tempdir().unwrap();
        let kek = "3c".repeat(32);
        std::fs::write(dir.path().join("kek.hex"), format!("{kek}\n")).unwrap();
        let body = "MC4CAQAwBQYDK2VwBCIEIPlantedSigningKeyBody0123456789abcdefghijk";
        std::fs::write(
            dir.path().join("sign.pem"),
            format!("-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n"),
        )
        .unwrap();
        std::fs::write(dir.path().join("hmac.key"), "hmac-file-key-0123456789\n").unwrap();
        let t: toml::Table = format!(
            r#"
[keks.v]
provider = "azure_key_vault"
client_secret = "kv-secret-77"
[keks.n]
client_secret = 918273645512
[keks.l]
provider = "local"
key_file = "{d}/kek.hex"
[keks.e]
provider = "local"
key_env = "KEKV"
[signing]
key_file = "{d}/sign.pem"
[masking.p]
rules = [{{ paths = ["user.id"], action = "hmac", key_file = "{d}/hmac.key" }}]
[masking.p.detector.email]
action = "hmac"
key_env = "HMACK"
"#,
            d = dir.path().display()
        )
        .parse()
        .unwrap();
        let env = |k: &str| match k {
            "KEKV" => Some("ZW52LWtlaw==\n".to_string()),
            "HMACK" => Some("hmac-env-key-9876543210".to_string()),
            _ => None,
        };
        let f = collect(&t, dir.path(), &env);
        for want in ["kek.hex", "sign.pem", "hmac.key"] {
            assert!(
                f.files.contains(&dir.path().join(want)),
                "{want} not in {:?}",
                f.files
            );
        }
        assert_eq!(f.files.len(), 3, "{:?}", f.files);
        let s = f.values;
        for want in [
            "kv-secret-77",
            "918273645512",
            kek.as_str(),
            "ZW52LWtlaw==",
            body,
            "hmac-file-key-0123456789",
            "hmac-env-key-9876543210",
        ] {
            assert!(s.iter().any(|v| v == want), "{want} not in {s:?}");
        }
        let plain = ["-----BEGIN PRIVATE KEY-----", "local", "KEKV"];
        assert!(!s.iter().any(|v| plain.contains(&v.as_str())), "{s:?}");
    }
}
