//! The `http` sink's table.

use super::*;
use crate::config::files::readable_file;

/// `retry_on` / `success_on`: codes and classes.
fn statuses(
    p: &str,
    name: &str,
    v: Option<&Vec<raw::StatusItem>>,
    default: &[&str],
    c: &mut Collector,
) -> logferry_destinations::http::Statuses {
    let mut out = logferry_destinations::http::Statuses::default();
    let items: Vec<String> = match v {
        Some(list) => list
            .iter()
            .map(|i| match i {
                raw::StatusItem::Code(n) => n.to_string(),
                raw::StatusItem::Text(t) => t.clone(),
            })
            .collect(),
        None => default.iter().map(|s| s.to_string()).collect(),
    };
    for i in items {
        if let Err(e) = out.add(&i) {
            c.add(format!("{p}.{name}"), e.to_string());
        }
    }
    out
}

pub(super) fn http(
    p: &str,
    s: raw::Http,
    base: &Path,
    c: &mut Collector,
) -> Option<logferry_destinations::http::HttpOptions> {
    use logferry_destinations::http::{CheckMethod, HttpAuth, Secretish, Signature};
    let before = c.list.len();
    if let Err(e) = logferry_destinations::http::check_url(&s.url) {
        c.add(format!("{p}.url"), e);
    }
    let method = s
        .method
        .clone()
        .unwrap_or_else(|| "POST".into())
        .to_ascii_uppercase();
    if method != "POST" && method != "PUT" {
        c.add(format!("{p}.method"), "POST or PUT");
    }
    let mut secret =
        |name: &str, inline: &Option<String>, file: &Option<String>| match (inline, file) {
            (Some(_), Some(_)) => {
                c.add(
                    format!("{p}.{name}"),
                    format!("set either {name} or {name}_file, not both"),
                );
                None
            }
            (Some(v), None) => Some(Secretish::Inline(v.clone())),
            (None, Some(f)) => {
                let path = resolve(base, f);
                if let Err(e) = readable_file(&path) {
                    c.add(format!("{p}.{name}_file"), e);
                }
                Some(Secretish::File(path))
            }
            (None, None) => None,
        };
    let auth = match &s.auth {
        None => HttpAuth::None,
        Some(a) => match (&a.basic, &a.bearer) {
            (Some(b), None) => match secret("auth.basic.password", &b.password, &b.password_file) {
                Some(pw) => HttpAuth::Basic {
                    user: b.user.clone(),
                    password: pw,
                },
                None => {
                    c.add(format!("{p}.auth.basic"), "needs password or password_file");
                    HttpAuth::None
                }
            },
            (None, Some(b)) => match secret("auth.bearer.token", &b.token, &b.token_file) {
                Some(t) => HttpAuth::Bearer(t),
                None => {
                    c.add(format!("{p}.auth.bearer"), "needs token or token_file");
                    HttpAuth::None
                }
            },
            _ => {
                c.add(
                    format!("{p}.auth"),
                    "one of basic = {...} or bearer = {...}",
                );
                HttpAuth::None
            }
        },
    };
    let signature = match &s.signature {
        None => None,
        Some(sig) => {
            let key = match (&sig.key_env, &sig.key_file) {
                (Some(var), None) => std::env::var(var)
                    .map(String::into_bytes)
                    .map_err(|_| format!("environment variable {var} is not set")),
                (None, Some(f)) => {
                    let path = resolve(base, f);
                    std::fs::read(&path)
                        .map(|mut k| {
                            while k.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                                k.pop();
                            }
                            k
                        })
                        .map_err(|e| {
                            format!(
                                "cannot read key_file {}: {}",
                                path.display(),
                                crate::private_fs::why(&e)
                            )
                        })
                }
                _ => Err("set key_env or key_file (one of them)".to_string()),
            };
            match key {
                Ok(k) if k.len() >= 16 => Some(Signature {
                    key: k,
                    header: sig
                        .header
                        .clone()
                        .unwrap_or_else(|| "X-Logferry-Signature".into()),
                }),
                Ok(_) => {
                    c.add(
                        format!("{p}.signature"),
                        "the key must be at least 16 bytes",
                    );
                    None
                }
                Err(e) => {
                    c.add(format!("{p}.signature"), e);
                    None
                }
            }
        }
    };
    let mut seen: Vec<String> = Vec::new();
    for (k, v) in &s.headers {
        let lower = k.to_ascii_lowercase();
        if let Err(e) = logferry_destinations::http::check_header(k, v) {
            c.add(format!("{p}.headers.{k}"), e);
        }
        if seen.contains(&lower) {
            c.add(
                format!("{p}.headers.{k}"),
                "is set twice (header names ignore case)",
            );
        }
        seen.push(lower.clone());
        if lower == "authorization" && s.auth.is_some() {
            c.add(
                format!("{p}.headers.{k}"),
                "and auth would both send Authorization; keep one",
            );
        }
        if [
            "content-encoding",
            "idempotency-key",
            "content-length",
            "host",
        ]
        .contains(&lower.as_str())
        {
            c.add(
                format!("{p}.headers.{k}"),
                "is set by logferry for every request; remove it",
            );
        }
    }
    let retry_on = statuses(
        p,
        "retry_on",
        s.retry_on.as_ref(),
        &["408", "429", "5xx"],
        c,
    );
    let success_on = statuses(p, "success_on", s.success_on.as_ref(), &["2xx"], c);
    if retry_on.classes.iter().any(|c| *c <= 2) || retry_on.codes.iter().any(|c| *c < 300) {
        c.add(
            format!("{p}.retry_on"),
            "holds a success or informational status; retry_on lists failures (e.g. 429, \"5xx\")",
        );
    }
    let check = match s.check.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("head") => CheckMethod::Head,
        Some("options") => CheckMethod::Options,
        Some("none") => CheckMethod::None,
        Some(other) => {
            c.add(
                format!("{p}.check"),
                format!("{other:?}: \"head\", \"options\" or \"none\""),
            );
            CheckMethod::None
        }
    };
    let mut creds = Vec::new();
    if logferry_destinations::http::has_userinfo(&s.url) {
        creds.push("the user and password in the URL".to_string());
    }
    match &auth {
        HttpAuth::None => {}
        HttpAuth::Basic { .. } => creds.push("a basic-auth password".to_string()),
        HttpAuth::Bearer(_) => creds.push("a bearer token".to_string()),
    }
    for (k, v) in &s.headers {
        if crate::config::secrets::secret_header(k) || c.expanded.iter().any(|(e, _)| e == v) {
            creds.push(format!("header {k}"));
        }
    }
    if !creds.is_empty() {
        plaintext(
            p,
            "url",
            &s.url,
            &creds.join(" and "),
            s.allow_plaintext_credentials,
            c,
        );
    }
    if s.tls.is_some()
        && s.url
            .get(..7)
            .is_some_and(|x| x.eq_ignore_ascii_case("http://"))
    {
        c.add(
            format!("{p}.tls"),
            "applies to https:// only; this URL is http://",
        );
    }
    let tls = tls(p, s.tls.as_ref(), base, c);
    if c.list.len() > before {
        return None;
    }
    Some(logferry_destinations::http::HttpOptions {
        url: s.url,
        method,
        headers: s.headers.into_iter().collect(),
        auth,
        signature,
        tls,
        retry_on,
        success_on,
        check,
        allow_plaintext_credentials: s.allow_plaintext_credentials,
    })
}
