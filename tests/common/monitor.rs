//! A Logs Ingestion API stand-in that enforces the contract Microsoft documents: bearer token
//! audience and expiry, api-version, gzip, a JSON array of objects with `TimeGenerated`, 1 MB
//! per call, 64 KB per field, 403 for a rule the identity may not write, and scripted answers
//! (429 bursts, 5xx, 400) in front of it.

use std::collections::VecDeque;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;

use super::tls::{HttpsServer, Req, Resp, TestCa};

pub const DCR: &str = "dcr-7a0f3c9e1b2d4e5f8a9b0c1d2e3f4a5b";
pub const STREAM: &str = "Custom-PlatformAudit_CL";
pub const MB: usize = 1_048_576;

#[derive(Debug, Clone)]
pub struct Call {
    pub at: Instant,
    pub status: u16,
    pub compressed: usize,
    pub uncompressed: usize,
    pub token: String,
    pub request_id: String,
}

#[derive(Default)]
pub struct State {
    pub records: Vec<serde_json::Value>,
    pub calls: Vec<Call>,
    /// Answered in order before a request is looked at (after its token is checked).
    pub script: VecDeque<Resp>,
    /// Largest body, compressed or not.
    pub max_body: usize,
    /// Tokens older than this are refused as expired (the service's clock ahead of ours).
    pub max_token_age: Option<Duration>,
}

pub struct Monitor {
    pub server: HttpsServer,
    pub state: Arc<Mutex<State>>,
}

impl Monitor {
    pub fn start(ca: &TestCa) -> Monitor {
        Self::start_named(ca, &["127.0.0.1", "localhost"])
    }

    /// With a certificate for `names` only (to test `tls.server_name`).
    pub fn start_named(ca: &TestCa, names: &[&str]) -> Monitor {
        let state = Arc::new(Mutex::new(State {
            max_body: MB,
            ..Default::default()
        }));
        let st = state.clone();
        let cert = ca.server("ingest", names);
        let server = HttpsServer::start(cert.config, move |req| {
            let (resp, call) = handle(&st, req);
            if let Some(mut call) = call {
                call.status = resp.status;
                st.lock().unwrap().calls.push(call);
            }
            resp
        });
        Monitor { server, state }
    }

    pub fn endpoint(&self) -> String {
        self.server.url()
    }

    pub fn records(&self) -> Vec<serde_json::Value> {
        self.state.lock().unwrap().records.clone()
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    /// The calls but the start-up check's (an empty array, 2 bytes).
    pub fn batch_calls(&self) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.uncompressed != 2)
            .collect()
    }

    pub fn script(&self, resp: Resp) {
        self.state.lock().unwrap().script.push_back(resp);
    }
}

fn error(status: u16, code: &str, message: &str) -> Resp {
    Resp::json(
        status,
        serde_json::json!({"error": {"code": code, "message": message}}).to_string(),
    )
}

fn claims(token: &str) -> Option<serde_json::Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn handle(st: &Arc<Mutex<State>>, req: &Req) -> (Resp, Option<Call>) {
    let path = req.target.split('?').next().unwrap_or_default();
    let Some(rest) = path.strip_prefix("/dataCollectionRules/") else {
        return (error(404, "NotFound", "unknown path"), None);
    };
    let Some((dcr, stream)) = rest.split_once("/streams/") else {
        return (error(404, "NotFound", "unknown path"), None);
    };
    let token = req
        .header("authorization")
        .and_then(|a| a.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_string();
    let mut call = Call {
        at: Instant::now(),
        status: 0,
        compressed: req.body.len(),
        uncompressed: 0,
        token: token.clone(),
        request_id: req
            .header("x-ms-client-request-id")
            .unwrap_or_default()
            .to_string(),
    };
    if req.method != "POST" {
        return (error(405, "MethodNotAllowed", "POST only"), Some(call));
    }
    let Some(c) = claims(&token) else {
        return (error(401, "InvalidToken", "no bearer token"), Some(call));
    };
    let now = chrono::Utc::now().timestamp();
    let aud = c["aud"].as_str().unwrap_or_default().trim_end_matches('/');
    if aud != "https://monitor.azure.com" {
        return (
            error(401, "InvalidAudience", &format!("audience {aud}")),
            Some(call),
        );
    }
    let max_age = st.lock().unwrap().max_token_age;
    let issued = c["iat"].as_i64().unwrap_or(0);
    let too_old = max_age.is_some_and(|a| now - issued > a.as_secs() as i64);
    if c["exp"].as_i64().unwrap_or(0) <= now || too_old {
        return (
            error(401, "TokenExpired", "The access token is expired."),
            Some(call),
        );
    }
    if dcr != DCR {
        return (
            error(
                403,
                "OperationFailed",
                &format!("The authentication token provided does not have access to ingest data for the data collection rule with immutable Id '{dcr}'."),
            ),
            Some(call),
        );
    }
    if stream != STREAM {
        return (
            error(404, "InvalidStream", &format!("stream {stream}")),
            Some(call),
        );
    }
    if !req.target.contains("api-version=2023-01-01") {
        return (error(400, "InvalidApiVersion", "api-version"), Some(call));
    }
    if call.request_id.is_empty() {
        return (
            error(400, "MissingRequestId", "x-ms-client-request-id"),
            Some(call),
        );
    }
    if let Some(mut r) = st.lock().unwrap().script.pop_front() {
        for (_, v) in r.headers.iter_mut() {
            *v = super::tls::expand_date(v);
        }
        return (r, Some(call));
    }
    if req.header("content-encoding") != Some("gzip")
        || req.header("content-type") != Some("application/json")
    {
        return (
            error(400, "InvalidContentType", "gzip'd application/json"),
            Some(call),
        );
    }
    let max_body = st.lock().unwrap().max_body;
    if req.body.len() > max_body {
        return (
            error(413, "ContentLengthLimitExceeded", "over 1 MB"),
            Some(call),
        );
    }
    let mut raw = Vec::new();
    if flate2::read::MultiGzDecoder::new(&req.body[..])
        .read_to_end(&mut raw)
        .is_err()
    {
        return (error(400, "InvalidPayload", "not gzip"), Some(call));
    }
    call.uncompressed = raw.len();
    if raw.len() > max_body {
        return (
            error(413, "ContentLengthLimitExceeded", "over 1 MB uncompressed"),
            Some(call),
        );
    }
    let Ok(serde_json::Value::Array(items)) = serde_json::from_slice::<serde_json::Value>(&raw)
    else {
        return (
            error(400, "InvalidPayload", "the body must be a JSON array"),
            Some(call),
        );
    };
    for item in &items {
        let Some(obj) = item.as_object() else {
            return (
                error(400, "InvalidPayload", "array items must be objects"),
                Some(call),
            );
        };
        let ok_time = obj
            .get("TimeGenerated")
            .and_then(|t| t.as_str())
            .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok());
        if !ok_time {
            return (
                error(
                    400,
                    "InvalidPayload",
                    "TimeGenerated missing or not ISO 8601",
                ),
                Some(call),
            );
        }
        for (k, v) in obj {
            let len = match v {
                serde_json::Value::String(s) => s.len(),
                other => other.to_string().len(),
            };
            if len > 64 << 10 {
                return (
                    error(400, "InvalidPayload", &format!("field {k} over 64 KB")),
                    Some(call),
                );
            }
        }
    }
    st.lock().unwrap().records.extend(items);
    (
        Resp {
            status: 204,
            headers: vec![],
            body: vec![],
        },
        Some(call),
    )
}
