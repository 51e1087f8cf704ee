//! The `http` sink: a batch per request to a customer's endpoint, with exact retry rules, an
//! `Idempotency-Key` (the batch id, the same on every attempt and after restarts), optional
//! HMAC signatures and mutual TLS.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::tls::{TlsError, TlsOptions};
use logferry_sink::response::error_chain;
use logferry_sink::{retry_after, CheckError, Outcome, SealedBatch, Sink};

/// Why a status list, the sink or a request cannot be made: the item, URL or file at fault and
/// the cause. The cause is in the words, not behind `source()`, so that a chain printed with
/// `{:#}` says it once.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// A status class other than 1xx to 5xx.
    #[error("{item:?}: a class is 1xx to 5xx")]
    Class { item: String },
    /// Neither a status code nor a class.
    #[error("{item:?}: not an HTTP status (100-599 or \"5xx\")")]
    Status { item: String },
    /// The configured URL does not parse.
    #[error("url {url:?}: {cause}")]
    Url { url: String, cause: String },
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A credential file that cannot be read (sending waits until it can).
    #[error("cannot read {path}: {cause}")]
    Secret {
        path: PathBuf,
        cause: std::io::Error,
    },
}

/// A set of HTTP statuses: exact codes and classes (`5xx`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Statuses {
    pub codes: Vec<u16>,
    pub classes: Vec<u16>,
}

impl Statuses {
    /// Parses `408`, `"429"` or `"5xx"`.
    pub fn add(&mut self, item: &str) -> Result<(), HttpError> {
        let t = item.trim();
        if let Some(c) = t.strip_suffix("xx") {
            match c.parse::<u16>() {
                Ok(c @ 1..=5) => {
                    self.classes.push(c);
                    Ok(())
                }
                _ => Err(HttpError::Class { item: item.into() }),
            }
        } else {
            match t.parse::<u16>() {
                Ok(c @ 100..=599) => {
                    self.codes.push(c);
                    Ok(())
                }
                _ => Err(HttpError::Status { item: item.into() }),
            }
        }
    }

    pub fn contains(&self, status: u16) -> bool {
        self.codes.contains(&status) || self.classes.contains(&(status / 100))
    }
}

#[derive(Clone, PartialEq, Eq)]
pub enum HttpAuth {
    None,
    Basic { user: String, password: Secretish },
    Bearer(Secretish),
}

/// A credential given inline or as a file. Files are read again when they change, so a
/// rotated token is picked up without a restart.
#[derive(Clone, PartialEq, Eq)]
pub enum Secretish {
    Inline(String),
    File(PathBuf),
}

impl std::fmt::Debug for HttpAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpAuth::None => f.write_str("None"),
            HttpAuth::Basic { user, .. } => write!(f, "Basic({user}, ***)"),
            HttpAuth::Bearer(_) => f.write_str("Bearer(***)"),
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct Signature {
    pub key: Vec<u8>,
    pub header: String,
}

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signature(header={}, key=***)", self.header)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckMethod {
    Head,
    Options,
    None,
}

#[derive(Debug, Clone)]
pub struct HttpOptions {
    pub url: String,
    /// POST or PUT.
    pub method: String,
    /// Sent with every request (values already expanded); ours win for the protocol headers.
    pub headers: Vec<(String, String)>,
    pub auth: HttpAuth,
    pub signature: Option<Signature>,
    pub tls: TlsOptions,
    pub retry_on: Statuses,
    pub success_on: Statuses,
    pub check: CheckMethod,
    /// The configuration allowed credentials over http:// (checked at load).
    pub allow_plaintext_credentials: bool,
}

pub struct HttpSink {
    o: HttpOptions,
    client: reqwest::Client,
    /// The URL requests go to (host replaced by `tls.server_name` when set).
    url: reqwest::Url,
    file_cache: Mutex<Option<(PathBuf, SystemTime, String)>>,
}

impl HttpSink {
    pub fn new(o: HttpOptions) -> Result<HttpSink, HttpError> {
        let mut url = reqwest::Url::parse(&o.url).map_err(|e| HttpError::Url {
            url: o.url.clone(),
            cause: e.to_string(),
        })?;
        let client = crate::tls::client_for(&o.tls, &mut url)?;
        if let HttpAuth::Basic {
            user,
            password: Secretish::Inline(pw),
        } = &o.auth
        {
            logferry_sink::redact::register([basic_credential(user, pw)]);
        }
        Ok(HttpSink {
            o,
            client,
            url,
            file_cache: Mutex::new(None),
        })
    }

    fn secret(&self, s: &Secretish) -> Result<String, HttpError> {
        let path = match s {
            Secretish::Inline(v) => return Ok(v.clone()),
            Secretish::File(p) => p,
        };
        let unreadable = |cause| HttpError::Secret {
            path: path.clone(),
            cause,
        };
        let mtime = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .map_err(unreadable)?;
        let mut cache = self.file_cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((p, t, v)) = &*cache {
            if p == path && *t == mtime {
                return Ok(v.clone());
            }
        }
        let v = std::fs::read_to_string(path)
            .map_err(unreadable)?
            .trim_end_matches(['\r', '\n'])
            .to_string();
        // A rotated secret is as secret as the first one, and so is the header made of it.
        logferry_sink::redact::register([&v]);
        if let HttpAuth::Basic { user, .. } = &self.o.auth {
            logferry_sink::redact::register([basic_credential(user, &v)]);
        }
        *cache = Some((path.clone(), mtime, v.clone()));
        Ok(v)
    }

    /// Whether requests present a client certificate (for the words of a TLS failure).
    pub(crate) fn client_cert(&self) -> bool {
        self.o.tls.cert_file.is_some()
    }

    /// A request to the sink's URL with its headers and credentials.
    pub(crate) fn request(
        &self,
        method: reqwest::Method,
    ) -> Result<reqwest::RequestBuilder, HttpError> {
        // No timer here: the delivery loop's per-attempt `timeout` is the only one.
        let mut r = self.client.request(method, self.url.clone());
        for (k, v) in &self.o.headers {
            r = r.header(k, v);
        }
        match &self.o.auth {
            HttpAuth::None => {}
            HttpAuth::Basic { user, password } => {
                r = r.basic_auth(user, Some(self.secret(password)?));
            }
            HttpAuth::Bearer(t) => r = r.bearer_auth(self.secret(t)?),
        }
        Ok(r)
    }
}

/// An answer's `Retry-After`, if it asks for a wait (see [`retry_after`]).
pub(crate) fn retry_after_of(resp: &reqwest::Response) -> Option<std::time::Duration> {
    resp.headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(retry_after)
}

/// Checks a configured URL as requests will use it: http or https, a host, a valid port.
pub fn check_url(url: &str) -> Result<(), String> {
    // As written, not as a parser repairs it: `http:u:p@host`, `http:\\host` or a leading
    // space would pass a parser as http:// while the plaintext rule reads the text.
    let starts = |p: &str| {
        url.get(..p.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(p))
    };
    if !(starts("http://") || starts("https://")) || url.trim() != url {
        return Err("must start with http:// or https:// (no spaces around it)".into());
    }
    let u = reqwest::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    if u.scheme() != "http" && u.scheme() != "https" {
        return Err("must be an http:// or https:// URL".into());
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err("names no host".into());
    }
    Ok(())
}

/// Whether a URL carries a user or password (sent as basic auth).
pub fn has_userinfo(url: &str) -> bool {
    reqwest::Url::parse(url).is_ok_and(|u| !u.username().is_empty() || u.password().is_some())
}

/// Checks a header as HTTP allows it (a token for the name; no line breaks in the value).
pub fn check_header(name: &str, value: &str) -> Result<(), String> {
    reqwest::header::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| "is not a valid header name".to_string())?;
    reqwest::header::HeaderValue::from_str(value).map_err(|_| {
        "has a value HTTP does not allow in a header (line breaks, control characters)".to_string()
    })?;
    Ok(())
}

/// What a basic-auth header carries: base64 of `user:password`.
fn basic_credential(user: &str, password: &str) -> String {
    base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{user}:{password}"),
    )
}

/// `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." followed by the body as sent>`.
pub fn sign(key: &[u8], t: u64, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        // HMAC takes keys of any length.
        Err(_) => return String::new(),
    };
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Says what a transport error means for an operator: TLS trust, names, client certificates,
/// refused connections and timeouts in plain words, the library's chain after it.
pub fn explain(e: &reqwest::Error, client_cert: bool) -> String {
    let chain = error_chain(e);
    let plain = if e.is_timeout() {
        "no answer within the timeout"
    } else if let Some(w) = crate::tls::words(&chain, client_cert) {
        w
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    format!("{plain}: {chain}")
}

#[async_trait]
impl Sink for HttpSink {
    async fn send(&self, batch: &SealedBatch) -> Outcome {
        let method = if self.o.method == "PUT" {
            reqwest::Method::PUT
        } else {
            reqwest::Method::POST
        };
        let mut r = match self.request(method) {
            Ok(r) => r,
            Err(e) => {
                return Outcome::Retry {
                    after: None,
                    reason: e.to_string(),
                }
            }
        };
        let has_content_type = self
            .o
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
        if !has_content_type {
            r = r.header("Content-Type", batch.content_type());
        }
        if let Some(enc) = batch.meta.compression.content_encoding() {
            r = r.header("Content-Encoding", enc);
        }
        r = r.header("Idempotency-Key", &batch.meta.id);
        if let Some(sig) = &self.o.signature {
            let t = chrono::Utc::now().timestamp().max(0) as u64;
            r = r.header(&sig.header, sign(&sig.key, t, &batch.payload));
        }
        let resp = match r.body(batch.payload.clone()).send().await {
            Ok(r) => r,
            Err(e) => {
                return Outcome::Retry {
                    after: None,
                    reason: explain(&e, self.o.tls.cert_file.is_some()),
                }
            }
        };
        let status = resp.status().as_u16();
        if self.o.success_on.contains(status) {
            return Outcome::Delivered;
        }
        let after = crate::http::retry_after_of(&resp);
        let body = resp.bytes().await.unwrap_or_default();
        let reason = format!("HTTP {status}: {}", logferry_sink::response::excerpt(&body));
        // `retry_on` decides what is retried (429 is counted as throttling); the rest follows
        // the common table, where an answer retried elsewhere is a refusal here.
        if self.o.retry_on.contains(status) {
            return if status == 429 {
                Outcome::Throttled { after, reason }
            } else {
                Outcome::Retry { after, reason }
            };
        }
        let o = logferry_sink::response::from_status(status, after, reason.clone());
        match o {
            Outcome::TooLarge { .. } | Outcome::Rejected { .. } => o,
            // A 2xx outside success_on, or an answer retried elsewhere: refused here.
            _ => Outcome::Rejected { reason },
        }
    }

    /// An empty HEAD or OPTIONS: any answer proves the address, TLS and (unless 401/403)
    /// the credentials.
    async fn check(&self) -> Result<(), CheckError> {
        let method = match self.o.check {
            CheckMethod::None => return Ok(()),
            CheckMethod::Head => reqwest::Method::HEAD,
            CheckMethod::Options => reqwest::Method::OPTIONS,
        };
        let resp = self
            .request(method.clone())
            .map_err(|e| CheckError::new(e.to_string()))?
            .send()
            .await
            .map_err(|e| CheckError::new(explain(&e, self.o.tls.cert_file.is_some())))?;
        match resp.status().as_u16() {
            s @ (401 | 403) => Err(CheckError::new(format!(
                "reachable, but {method} was refused with {s}: check auth"
            ))),
            s @ 500..=599 => Err(CheckError::new(format!(
                "reachable, but {method} answered {s}"
            ))),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_take_codes_and_classes() {
        let mut s = Statuses::default();
        for i in ["408", "429", "5xx"] {
            s.add(i).unwrap();
        }
        assert!(s.contains(408) && s.contains(503) && !s.contains(413) && !s.contains(400));
        assert!(s.add("6xx").is_err());
        assert!(s.add("abc").is_err());
    }

    #[test]
    fn signatures_follow_the_documented_form() {
        // python3 -c 'import hmac,hashlib;print(hmac.new(b"key", b"1700000000.{\"a\":1}", hashlib.sha256).hexdigest())'
        assert_eq!(
            sign(b"key", 1_700_000_000, b"{\"a\":1}"),
            "t=1700000000,v1=a438e398bfafc57e4396bb7fc2304422f0f768e965d073ca313cb52e22e6ad03"
        );
    }
}
