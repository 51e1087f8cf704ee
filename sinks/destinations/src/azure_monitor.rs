//! The `azure_monitor` sink: Azure Monitor's Logs Ingestion API (data collection rules).
//!
//! One request per batch: `POST {endpoint}/dataCollectionRules/{dcr}/streams/{stream}` with a
//! gzip'd JSON array. The pipeline cuts batches under the 1 MB limit and shapes records
//! (`TimeGenerated`, renamed and truncated fields) before batching, so the body is the spooled
//! payload as is, the same bytes on every attempt.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use sha2::{Digest, Sha256};

use crate::azure_auth::{AuthError, Entra};
use crate::tls::{TlsError, TlsOptions};
use logferry_sink::response::{error_chain, from_status};
use logferry_sink::{CheckError, Outcome, SealedBatch, Sink};

pub const API_VERSION: &str = "2023-01-01";
pub const DEFAULT_SCOPE: &str = "https://monitor.azure.com/.default";
/// The service takes 1 MB per call; batches stay under 1,000,000 bytes uncompressed, which
/// holds whichever way "MB" is read.
pub const MAX_REQUEST_BYTES: u64 = 1_000_000;

#[derive(Debug, Clone)]
pub struct AzureMonitorOptions {
    /// The data collection endpoint (or the DCR's own ingestion endpoint), without a `/` at
    /// the end.
    pub endpoint: String,
    pub dcr_id: String,
    pub stream: String,
    pub auth: Entra,
    pub scope: String,
    pub tls: TlsOptions,
}

/// Why the sink cannot be set up: the endpoint at fault, or its TLS or credential.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// Bearer tokens need https.
    #[error("endpoint must be https:// (bearer tokens are never sent over plain http), not {0}")]
    NotHttps(String),
    /// The ingestion URL built from the endpoint does not parse.
    #[error("endpoint {endpoint:?}: {cause}")]
    Endpoint { endpoint: String, cause: String },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Auth(#[from] AuthError),
}

pub struct AzureMonitorSink {
    o: AzureMonitorOptions,
    url: String,
    http: reqwest::Client,
    /// Rebuilt (with an empty token cache) when the service answers 401: the only way to
    /// make the SDK's credentials fetch a new token before the cached one nears expiry. With
    /// the generation it was built in and when a 401 last caused a rebuild.
    credential: Mutex<Cred>,
}

struct Cred {
    current: Arc<dyn TokenCredential>,
    generation: u64,
    renewed: Option<Instant>,
}

impl AzureMonitorSink {
    pub fn new(o: AzureMonitorOptions) -> Result<AzureMonitorSink, MonitorError> {
        if !o.endpoint.starts_with("https://") {
            return Err(MonitorError::NotHttps(o.endpoint.clone()));
        }
        let url = format!(
            "{}/dataCollectionRules/{}/streams/{}?api-version={API_VERSION}",
            o.endpoint.trim_end_matches('/'),
            logferry_sink::percent_encode(&o.dcr_id),
            logferry_sink::percent_encode(&o.stream)
        );
        let mut url = reqwest::Url::parse(&url).map_err(|e| MonitorError::Endpoint {
            endpoint: o.endpoint.clone(),
            cause: e.to_string(),
        })?;
        let http = crate::tls::client_for(&o.tls, &mut url)?;
        let credential = o.auth.credential(&http)?;
        let url = url.to_string();
        Ok(AzureMonitorSink {
            o,
            url,
            http,
            credential: Mutex::new(Cred {
                current: credential,
                generation: 0,
                renewed: None,
            }),
        })
    }

    fn credential(&self) -> (Arc<dyn TokenCredential>, u64) {
        let c = self.credential.lock().unwrap_or_else(|p| p.into_inner());
        (c.current.clone(), c.generation)
    }

    /// After a 401: a new credential, so the next attempt carries a new token. Once a minute
    /// at most: a token refused right after it was fetched is not fixed by fetching another,
    /// and those retries back off instead.
    fn renew_credential(&self, used: u64) -> bool {
        let mut c = self.credential.lock().unwrap_or_else(|p| p.into_inner());
        if c.generation != used {
            // Another request renewed it meanwhile.
            return true;
        }
        if c.renewed
            .is_some_and(|t| t.elapsed() < Duration::from_secs(60))
        {
            return false;
        }
        match self.o.auth.credential(&self.http) {
            Ok(new) => {
                c.current = new;
                c.generation += 1;
                c.renewed = Some(Instant::now());
                true
            }
            Err(_) => false,
        }
    }

    async fn post(&self, body: bytes::Bytes, request_id: &str) -> Outcome {
        let (credential, made) = self.credential();
        let token = match credential.get_token(&[self.o.scope.as_str()], None).await {
            Ok(t) => t,
            Err(e) => {
                return Outcome::Retry {
                    after: None,
                    reason: format!("cannot get an Entra ID token ({}): {e}", self.o.auth.name()),
                }
            }
        };
        let res = self
            .http
            .post(&self.url)
            .bearer_auth(token.token.secret())
            .header("Content-Type", "application/json")
            .header("Content-Encoding", "gzip")
            .header("x-ms-client-request-id", request_id)
            // No timer here: the delivery loop's per-attempt `timeout` is the only one.
            .body(body)
            .send()
            .await;
        let resp = match res {
            Ok(r) => r,
            Err(e) => {
                return Outcome::Retry {
                    after: None,
                    reason: format!(
                        "Logs Ingestion request failed: {}",
                        crate::tls::explain_chain(&error_chain(&e), self.o.tls.cert_file.is_some())
                    ),
                }
            }
        };
        let status = resp.status().as_u16();
        let after = crate::http::retry_after_of(&resp);
        if (200..300).contains(&status) {
            return Outcome::Delivered;
        }
        let text = body_text(resp).await;
        let dcr = &self.o.dcr_id;
        // The service's own cases first, then the common table.
        match status {
            401 => {
                let renewed = self.renew_credential(made);
                Outcome::Retry {
                    after: renewed.then_some(Duration::ZERO),
                    reason: format!("Logs Ingestion 401 (token refused{}): {text}", if renewed { "; fetching a new one" } else { "" }),
                }
            }
            403 => Outcome::Rejected {
                reason: format!("Logs Ingestion 403: grant the \"Monitoring Metrics Publisher\" role on data collection rule {dcr} to this identity: {text}"),
            },
            404 => Outcome::Rejected {
                reason: format!("Logs Ingestion 404: no data collection rule {dcr} with stream {:?} at {}: {text}", self.o.stream, self.o.endpoint),
            },
            400 => Outcome::Rejected {
                reason: format!("Logs Ingestion 400 (the body does not match stream {:?} of data collection rule {dcr}): {text}", self.o.stream),
            },
            _ => from_status(status, after, format!("Logs Ingestion {status}: {text}")),
        }
    }
}

/// The first 4 KiB of an error body, for the dead-letter note and the log.
async fn body_text(resp: reqwest::Response) -> String {
    logferry_sink::response::excerpt(&resp.bytes().await.unwrap_or_default())
}

/// A request id in GUID form derived from the batch id: the same on every attempt, so the
/// service's logs and ours line up.
fn request_id(batch_id: &str) -> String {
    let d = Sha256::digest(batch_id.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x80; // version 8: custom
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[async_trait]
impl Sink for AzureMonitorSink {
    async fn send(&self, batch: &SealedBatch) -> Outcome {
        if batch.meta.compression != logferry_sink::Compression::Gzip {
            return Outcome::Rejected {
                reason: "Logs Ingestion batches must be gzip".into(),
            };
        }
        self.post(batch.payload.clone(), &request_id(&batch.meta.id))
            .await
    }

    fn max_request_bytes(&self) -> Option<u64> {
        Some(MAX_REQUEST_BYTES)
    }

    /// Gets a token and posts an empty array: 204 means the endpoint, the rule, the stream and
    /// the role are all right.
    async fn check(&self) -> Result<(), CheckError> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, b"[]").map_err(|e| CheckError::new(e.to_string()))?;
        let body = gz.finish().map_err(|e| CheckError::new(e.to_string()))?;
        match self.post(body.into(), &request_id("logferry-check")).await {
            Outcome::Delivered => Ok(()),
            o => Err(CheckError::new(o.reason().unwrap_or_default())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_stable_guids() {
        let a = request_id("019abc00-0000-7000-8000-000000000000-a");
        assert_eq!(a, request_id("019abc00-0000-7000-8000-000000000000-a"));
        assert_ne!(a, request_id("019abc00-0000-7000-8000-000000000000-b"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8");
    }
}
