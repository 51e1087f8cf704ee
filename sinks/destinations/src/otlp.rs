//! The `otlp` sink: each batch is one OTLP/HTTP `ExportLogsServiceRequest` (protobuf or
//! OTLP/JSON, built when the batch was sealed) POSTed to `<endpoint>/v1/logs`, with the
//! specification's answers: 429, 502, 503 and 504 retried (with `Retry-After`), 413 split,
//! other refusals final, and a partial success counted rather than retried.
//!
//! The transport (client, TLS, authentication, headers, credential files, redaction) is the
//! `http` sink's.

use std::sync::Arc;

use async_trait::async_trait;
use logferry_sink::{retry_after, CheckError, Encoding, Outcome, SealedBatch, Sink};
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

/// What a 2xx answer says: how many records were refused, and the server's words.
#[derive(Debug, PartialEq, Eq)]
pub struct Partial {
    pub rejected: u64,
    pub message: String,
}

/// Reads a success answer's `partial_success`, in the encoding the request used (the
/// specification has the server answer in it). An empty or unreadable answer is a full
/// success: the records were accepted (2xx), and nothing says otherwise.
pub fn partial_success(encoding: Encoding, body: &[u8]) -> Option<Partial> {
    let json = encoding == Encoding::OtlpJson
        || body.first().is_some_and(|b| *b == b'{')
            && serde_json::from_slice::<serde_json::Value>(body).is_ok();
    let (rejected, message) = if json {
        let a: JsonAnswer = serde_json::from_slice(body).ok()?;
        let p = a.partial_success?;
        let n = match p.rejected_log_records? {
            serde_json::Value::Number(n) => n.as_u64()?,
            serde_json::Value::String(s) => s.trim().parse::<u64>().ok()?,
            _ => return None,
        };
        (n, p.error_message)
    } else {
        let r = ExportLogsServiceResponse::decode(body).ok()?;
        let p = r.partial_success?;
        (u64::try_from(p.rejected_log_records).ok()?, p.error_message)
    };
    (rejected > 0 || !message.is_empty()).then_some(Partial { rejected, message })
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
    pub fn new(o: OtlpOptions) -> Result<OtlpSink, HttpError> {
        let retry_on = o.http.retry_on.clone();
        Ok(OtlpSink {
            http: HttpSink::new(o.http)?,
            max_request_bytes: o.max_request_bytes,
            retry_on,
            rejected: o.rejected,
            encoding: o.encoding,
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
        let after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(retry_after);
        let body = answer(resp).await;
        if (200..300).contains(&status) {
            if let Some(p) = partial_success(batch.meta.encoding, &body) {
                // Refused records are not sent again: the server said they are invalid.
                if let Some(hook) = &self.rejected {
                    hook(p.rejected);
                }
                tracing::warn!(
                    batch = %batch.meta.id,
                    records = batch.meta.record_count,
                    rejected = p.rejected,
                    message = %logferry_sink::redact::text(&logferry_sink::response::excerpt(p.message.as_bytes())),
                    "the destination accepted the request but refused some records"
                );
            }
            return Outcome::Delivered;
        }
        let reason = format!("HTTP {status}: {}", refusal(&body));
        if self.retry_on.contains(status) {
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
            partial_success(Encoding::OtlpProtobuf, &pb),
            Some(Partial {
                rejected: 3,
                message: "bad severity".into()
            })
        );
        let js = br#"{"partialSuccess":{"rejectedLogRecords":"2","errorMessage":"x"}}"#;
        assert_eq!(partial_success(Encoding::OtlpJson, js).unwrap().rejected, 2);
        let js = br#"{"partialSuccess":{"rejectedLogRecords":5}}"#;
        assert_eq!(partial_success(Encoding::OtlpJson, js).unwrap().rejected, 5);
        assert_eq!(partial_success(Encoding::OtlpProtobuf, b""), None);
        assert_eq!(partial_success(Encoding::OtlpJson, b"{}"), None);
        assert_eq!(partial_success(Encoding::OtlpJson, b"not json"), None);
        // A server that answers JSON to a protobuf request is still read.
        assert_eq!(
            partial_success(Encoding::OtlpProtobuf, js)
                .unwrap()
                .rejected,
            5
        );
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
