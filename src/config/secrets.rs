//! The secret values a configuration holds, found by where they are written: options that
//! are credentials, the files that hold credentials, auth headers, and the secret parts of
//! URLs. The process registers them with [`logferry_sinks::redact`] so that no message shows
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
/// URL's secret parts are found by [`logferry_sinks::redact::url_secrets`]).
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

/// Every secret value and credential file in the (expanded) sink tables.
pub(super) fn collect(table: &toml::Table, base: &Path) -> Found {
    let mut out = Found::default();
    if let Some(toml::Value::Table(sinks)) = table.get("sinks") {
        for sink in sinks.values() {
            if let toml::Value::Table(t) = sink {
                walk(t, false, base, &mut out);
            }
        }
    }
    out
}

fn walk(t: &toml::Table, in_headers: bool, base: &Path, found: &mut Found) {
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
                    let path = super::resolve(base, s);
                    found.values.extend(read_secret_file(&path));
                    found.files.push(path);
                } else if URL_KEYS.contains(&k.as_str()) {
                    found.values.extend(logferry_sinks::redact::url_secrets(s));
                }
            }
            toml::Value::Table(inner) => walk(inner, k == "headers", base, found),
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
        let f = collect(&t, dir.path());
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
}
