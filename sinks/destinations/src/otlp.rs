//! The `otlp` sink: each batch is one OTLP/HTTP `ExportLogsServiceRequest` (protobuf or
//! OTLP/JSON, built when the batch was sealed) POSTed to `<endpoint>/v1/logs`, with the
//! specification's answers: 429, 502, 503 and 504 retried (with `Retry-After`), 413 split,
//! other refusals final, and a partial success counted rather than retried.
//!
//! The transport (client, TLS, authentication, headers, credential files, redaction) is the
//! `http` sink's.

use std::sync::Arc;

use async_trait::async_trait;
use logferry_sink::{CheckError, Encoding, Outcome, SealedBatch, Sink};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use prost::Message;

use crate::http::{explain, HttpError, HttpOptions, HttpSink, Statuses};

/// How much of an answer is read: a partial success or an error status is a few hundred bytes;
/// a server that sends more is not waited for.
const MAX_ANSWER_BYTES: usize = 64 << 10;

/// Called with the number of records a destination refused in a partial success.
pub type RejectedHook = Arc<dyn Fn(u64) + Send + Sync>;

#[derive(Clone)]
pub struct OtlpOptions {
    /// The transport: `url` is the full logs URL (endpoint and path), `method` POST; its
    /// `retry_on` are the answers retried.
    pub http: HttpOptions,
    /// The largest request body before compression; a larger batch is answered `TooLarge`
    /// (and split) before it is sent.
    pub max_request_bytes: u64,
    pub rejected: Option<RejectedHook>,
    /// `OtlpProtobuf` or `OtlpJson`: what an empty request of [`Sink::check`] is written in.
    pub encoding: Encoding,
    /// How long a success's body is waited for (its partial success) once the status is in:
    /// the batch is delivered either way, so it must be well inside the attempt's timeout.
    pub answer_timeout: std::time::Duration,
}

impl std::fmt::Debug for OtlpOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpOptions")
            .field("http", &self.http)
            .field("max_request_bytes", &self.max_request_bytes)
            .finish_non_exhaustive()
    }
}

/// The statuses the OTLP specification says to retry.
pub fn default_retry_on() -> Statuses {
    Statuses {
        codes: vec![429, 502, 503, 504],
        classes: Vec::new(),
    }
}

pub struct OtlpSink {
    http: HttpSink,
    max_request_bytes: u64,
    retry_on: Statuses,
    rejected: Option<RejectedHook>,
    encoding: Encoding,
    answer_timeout: std::time::Duration,
}

/// `google.rpc.Status`, which OTLP/HTTP servers send with a refusal (only the fields read).
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// A partial success as OTLP/JSON writes it: the count as a string (int64) or a number.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct JsonAnswer {
    partial_success: Option<JsonPartial>,
    message: Option<String>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct JsonPartial {
    rejected_log_records: Option<serde_json::Value>,
    error_message: String,
}

/// What a 2xx answer says beyond success: how many records were refused (`None` when the
/// count is missing, negative or not a number), and the server's words.
#[derive(Debug, PartialEq, Eq)]
pub struct Partial {
    pub rejected: Option<u64>,
    pub message: String,
}

/// An answer's body as sent: gzip'd answers are inflated (at most [`MAX_ANSWER_BYTES`]).
fn inflated(body: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !body.starts_with(&[0x1f, 0x8b]) {
        return std::borrow::Cow::Borrowed(body);
    }
    let mut out = Vec::new();
    let mut r = std::io::Read::take(flate2::read::GzDecoder::new(body), MAX_ANSWER_BYTES as u64);
    match std::io::Read::read_to_end(&mut r, &mut out) {
        Ok(_) => std::borrow::Cow::Owned(out),
        Err(_) => std::borrow::Cow::Borrowed(body),
    }
}

fn json_count(v: &serde_json::Value) -> Option<u64> {
    match v {
        serde_json::Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| *f >= 0.0 && f.fract() == 0.0 && *f < u64::MAX as f64)
                .map(|f| f as u64)
        }),
        serde_json::Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    }
}

/// Reads a success answer's `partial_success`, in either encoding whatever the request's was
/// (a server may answer JSON to protobuf, or the reverse), gzip'd or not. `None` when the
/// answer says nothing beyond success (empty, unreadable, or an empty partial success).
pub fn partial_success(body: &[u8]) -> Option<Partial> {
    let body = inflated(body);
    // JSON when it parses as JSON: a protobuf answer can start with the same bytes (a tag,
    // then a length of 123, which is `{`).
    let json = body
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{')
        .then(|| serde_json::from_slice::<JsonAnswer>(&body).ok())
        .flatten();
    let (rejected, message) = if let Some(a) = json {
        let p = a.partial_success?;
        let n = match &p.rejected_log_records {
            None => Some(0),
            Some(v) => json_count(v),
        };
        (n, p.error_message)
    } else {
        let r = ExportLogsServiceResponse::decode(body.as_ref()).ok()?;
        let p = r.partial_success?;
        (u64::try_from(p.rejected_log_records).ok(), p.error_message)
    };
    (rejected != Some(0) || !message.is_empty()).then_some(Partial { rejected, message })
}

/// A refusal's reason: the `google.rpc.Status` message when the body holds one, else the
/// start of the body.
fn refusal(body: &[u8]) -> String {
    if let Ok(s) = RpcStatus::decode(body) {
        if !s.message.is_empty() && s.message.chars().all(|c| !c.is_control()) {
            return logferry_sink::response::excerpt(s.message.as_bytes());
        }
    }
    if let Ok(JsonAnswer {
        message: Some(m), ..
    }) = serde_json::from_slice::<JsonAnswer>(body)
    {
        return logferry_sink::response::excerpt(m.as_bytes());
    }
    logferry_sink::response::excerpt(body)
}

/// Reads at most [`MAX_ANSWER_BYTES`] of an answer.
async fn answer(mut resp: reqwest::Response) -> Vec<u8> {
    let mut out = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = MAX_ANSWER_BYTES - out.len();
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= MAX_ANSWER_BYTES {
            break;
        }
    }
    out
}

impl OtlpSink {
    /// Counts and logs a partial success: refused records are not sent again (the server
    /// said they are invalid), and the count is never above the batch's records.
    fn partial(&self, batch: &SealedBatch, body: &[u8]) {
        let Some(p) = partial_success(body) else {
            return;
        };
        let message =
            logferry_sink::redact::text(&logferry_sink::response::excerpt(p.message.as_bytes()))
                .into_owned();
        match p.rejected {
            Some(0) => {
                tracing::warn!(batch = %batch.meta.id, %message, "the destination accepted every record, with a message")
            }
            Some(n) => {
                let n = n.min(batch.meta.record_count);
                if let Some(hook) = &self.rejected {
                    hook(n);
                }
                tracing::warn!(batch = %batch.meta.id, records = batch.meta.record_count, rejected = n, %message, "the destination accepted the request but refused some records");
            }
            None => {
                tracing::warn!(batch = %batch.meta.id, records = batch.meta.record_count, %message, "the destination answered a partial success without a valid count of refused records")
            }
        }
    }

    pub fn new(o: OtlpOptions) -> Result<OtlpSink, HttpError> {
        let retry_on = o.http.retry_on.clone();
        Ok(OtlpSink {
            http: HttpSink::new(o.http)?,
            max_request_bytes: o.max_request_bytes,
            retry_on,
            rejected: o.rejected,
            encoding: o.encoding,
            answer_timeout: o.answer_timeout,
        })
    }
}

#[async_trait]
impl Sink for OtlpSink {
    async fn send(&self, batch: &SealedBatch) -> Outcome {
        if batch.meta.uncompressed_bytes > self.max_request_bytes {
            return Outcome::TooLarge {
                reason: format!(
                    "a request of {} bytes is over max_request_bytes ({})",
                    batch.meta.uncompressed_bytes, self.max_request_bytes
                ),
            };
        }
        let mut r = match self.http.request(reqwest::Method::POST) {
            Ok(r) => r,
            Err(e) => {
                return Outcome::Retry {
                    after: None,
                    reason: e.to_string(),
                }
            }
        };
        r = r.header("Content-Type", batch.content_type());
        if let Some(enc) = batch.meta.compression.content_encoding() {
            r = r.header("Content-Encoding", enc);
        }
        let resp = match r.body(batch.payload.clone()).send().await {
            Ok(r) => r,
            Err(e) => {
                return Outcome::Retry {
                    after: None,
                    reason: explain(&e, self.http.client_cert()),
                }
            }
        };
        let status = resp.status().as_u16();
        let after = crate::http::retry_after_of(&resp);
        if (200..300).contains(&status) {
            // Delivered now, whatever the body does: a body that never comes must not make
            // the batch look failed (it would be sent again).
            match tokio::time::timeout(self.answer_timeout, answer(resp)).await {
                Ok(body) => self.partial(batch, &body),
                Err(_) => {
                    tracing::debug!(batch = %batch.meta.id, "the success's body did not come in time; any partial success in it is not read")
                }
            }
            return Outcome::Delivered;
        }
        // A refusal's body is its reason, not a condition of it: not waited for past the
        // same bound (a stalled body would turn a final answer into a timeout, retried).
        let body = tokio::time::timeout(self.answer_timeout, answer(resp))
            .await
            .unwrap_or_default();
        let words = refusal(&body);
        let reason = if words.is_empty() {
            format!("HTTP {status} (no message)")
        } else {
            format!("HTTP {status}: {words}")
        };
        // 413 is a size, whatever retry_on says: split, never sent again as it is.
        if status != 413 && self.retry_on.contains(status) {
            return if status == 429 {
                Outcome::Throttled { after, reason }
            } else {
                Outcome::Retry { after, reason }
            };
        }
        match status {
            413 => Outcome::TooLarge { reason },
            _ => Outcome::Rejected { reason },
        }
    }

    /// Posts an empty request (no records): a 2xx proves the address, the path, TLS and the
    /// credentials without writing anything.
    async fn check(&self) -> Result<(), CheckError> {
        let (ct, body): (&str, &[u8]) = match self.encoding {
            Encoding::OtlpJson => ("application/json", b"{}"),
            _ => ("application/x-protobuf", b""),
        };
        let resp = self
            .http
            .request(reqwest::Method::POST)
            .map_err(|e| CheckError::new(e.to_string()))?
            .header("Content-Type", ct)
            .body(body)
            .send()
            .await
            .map_err(|e| CheckError::new(explain(&e, self.http.client_cert())))?;
        let status = resp.status().as_u16();
        let words = refusal(&answer(resp).await);
        match status {
            200..=299 => Ok(()),
            401 | 403 => Err(CheckError::new(format!(
                "reachable, but an empty export was refused with {status}: check auth ({words})"
            ))),
            404 | 405 => Err(CheckError::new(format!(
                "reachable, but {status} for the logs path: check endpoint and logs_path ({words})"
            ))),
            _ => Err(CheckError::new(format!(
                "reachable, but an empty export was answered {status} ({words})"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsPartialSuccess;

    #[test]
    fn partial_success_in_both_encodings() {
        let pb = ExportLogsServiceResponse {
            partial_success: Some(ExportLogsPartialSuccess {
                rejected_log_records: 3,
                error_message: "bad severity".into(),
            }),
        }
        .encode_to_vec();
        assert_eq!(
            partial_success(&pb),
            Some(Partial {
                rejected: Some(3),
                message: "bad severity".into()
            })
        );
        let js = br#"{"partialSuccess":{"rejectedLogRecords":"2","errorMessage":"x"}}"#;
        assert_eq!(partial_success(js).unwrap().rejected, Some(2));
        let js = br#" {"partialSuccess":{"rejectedLogRecords":5}}"#;
        assert_eq!(partial_success(js).unwrap().rejected, Some(5));
        let js = br#"{"partialSuccess":{"rejectedLogRecords":3.0}}"#;
        assert_eq!(partial_success(js).unwrap().rejected, Some(3));
        for bad in [r#""-3""#, "-3", r#""99999999999999999999""#, "[]"] {
            let js = format!(
                r#"{{"partialSuccess":{{"rejectedLogRecords":{bad},"errorMessage":"m"}}}}"#
            );
            assert_eq!(
                partial_success(js.as_bytes()).unwrap().rejected,
                None,
                "{bad}"
            );
        }
        let neg = ExportLogsServiceResponse {
            partial_success: Some(ExportLogsPartialSuccess {
                rejected_log_records: -5,
                error_message: "quota exceeded".into(),
            }),
        }
        .encode_to_vec();
        assert_eq!(
            partial_success(&neg),
            Some(Partial {
                rejected: None,
                message: "quota exceeded".into()
            })
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &pb).unwrap();
        assert_eq!(
            partial_success(&gz.finish().unwrap()).unwrap().rejected,
            Some(3)
        );
        // A protobuf answer whose second byte is `{` (a message of 123 bytes).
        let long = ExportLogsServiceResponse {
            partial_success: Some(ExportLogsPartialSuccess {
                rejected_log_records: 2,
                error_message: "m".repeat(119),
            }),
        }
        .encode_to_vec();
        assert_eq!(long[1], b'{');
        assert_eq!(partial_success(&long).unwrap().rejected, Some(2));
        assert_eq!(partial_success(b""), None);
        assert_eq!(partial_success(b"{}"), None);
        assert_eq!(partial_success(b"not json"), None);
    }

    #[test]
    fn refusals_say_the_status_message() {
        let s = RpcStatus {
            code: 3,
            message: "log record too old".into(),
        }
        .encode_to_vec();
        assert_eq!(refusal(&s), "log record too old");
        assert_eq!(refusal(br#"{"code":3,"message":"bad body"}"#), "bad body");
        assert_eq!(refusal(b"plain words"), "plain words");
    }
}
