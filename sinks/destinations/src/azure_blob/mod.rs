//! The `azure_blob` sink on Microsoft's `azure_storage_blob`: a block blob per batch (here) or
//! batches appended to numbered append blobs (`append`).
//!
//! Auth: Entra ID (`azure_auth`), a SAS token, or the account key, from which short-lived
//! service SAS tokens are minted (`sas`: the official crate has no Shared Key) and renewed
//! before they expire. The SDK's retries are off: the pipeline's delivery loop is the only one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use azure_core::http::{
    ClientOptions, Etag, NoFormat, RequestContent, RetryOptions, StatusCode, Transport, Url,
};
use azure_storage_blob::models::{
    AccessTier, BlobClientGetPropertiesResultHeaders, BlockBlobClientUploadOptions,
};
use azure_storage_blob::{
    BlobClient, BlobClientOptions, BlobContainerClient, BlobContainerClientOptions,
};
use bytes::Bytes;

mod append;
pub mod ledger;
mod options;
mod sas;
mod tails;

use crate::azure_auth::AuthError;
pub use crate::azure_auth::Entra;
use crate::tls::TlsError;
use append::AppendState;
use logferry_sink::{percent_encode, CheckError, Outcome, SealedBatch, Sink};
pub use options::{AppendRoll, AzureBlobOptions, BlobAuth, BlobType};
use sas::{account_sas_create, SAS_LIFETIME};
pub use sas::{mint_sas, ConnectionString, ConnectionStringError};

/// Why the sink cannot be set up or make a request: the option, URL or container at fault and
/// the cause, with secrets (SAS signatures, keys) masked. The cause is in the words, not behind
/// `source()`, so that a chain printed with `{:#}` says it once.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The configured endpoint is not a URL.
    #[error("endpoint {endpoint:?}: {cause}")]
    Endpoint { endpoint: String, cause: String },
    /// Entra ID auth on a plain http:// endpoint: bearer tokens are never sent in clear.
    #[error("auth = \"{auth}\" needs an https:// endpoint (bearer tokens are never sent over plain http), not {endpoint}")]
    NeedsHttps {
        auth: &'static str,
        endpoint: String,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// A blob URL that does not parse (a key or token it cannot hold).
    #[error("invalid blob URL: {cause}")]
    Url { cause: String },
    /// The SDK refused to make a client for the URL.
    #[error("{cause}")]
    Client { cause: String },
    /// `create_container`, and the container could not be created.
    #[error("cannot create container {container:?}: {cause}")]
    CreateContainer { container: String, cause: String },
}

pub struct AzureBlobSink {
    o: AzureBlobOptions,
    transport: Transport,
    credential: Option<Arc<dyn TokenCredential>>,
    /// The current minted token and when it expires.
    sas: Mutex<Option<(String, chrono::DateTime<chrono::Utc>)>>,
    /// Append mode: one serialised writer per rendered key.
    appends: Mutex<HashMap<String, Arc<tokio::sync::Mutex<AppendState>>>>,
    /// Append mode: batches whose last attempt may have landed, with the blob and offset.
    uncertain: Mutex<std::collections::BTreeMap<String, (String, u64)>>,
    /// Append mode: blob tails from before the start, bounded in bytes.
    tails: tails::Tails,
    /// When this sink was made (Unix ms): older batches are replays from a previous run.
    started_ms: u64,
}

impl AzureBlobSink {
    pub fn new(mut o: AzureBlobOptions) -> Result<AzureBlobSink, BlobError> {
        let mut endpoint = reqwest::Url::parse(&o.endpoint).map_err(|e| BlobError::Endpoint {
            endpoint: o.endpoint.clone(),
            cause: e.to_string(),
        })?;
        let http = crate::tls::client_for(&o.tls, &mut endpoint)?;
        // The same URL with the host `tls.server_name` names, when set.
        o.endpoint = endpoint.as_str().trim_end_matches('/').to_string();
        let credential = match &o.auth {
            BlobAuth::Entra(e) => {
                if !o.endpoint.starts_with("https://") {
                    return Err(BlobError::NeedsHttps {
                        auth: e.name(),
                        endpoint: o.endpoint.clone(),
                    });
                }
                Some(e.credential(&http)?)
            }
            _ => None,
        };
        Ok(AzureBlobSink {
            o,
            transport: Transport::new(Arc::new(http)),
            credential,
            sas: Mutex::new(None),
            appends: Mutex::new(HashMap::new()),
            uncertain: Mutex::new(std::collections::BTreeMap::new()),
            tails: tails::Tails::default(),
            started_ms: chrono::Utc::now().timestamp_millis().max(0) as u64,
        })
    }

    fn client_options(&self) -> ClientOptions {
        ClientOptions {
            transport: Some(self.transport.clone()),
            retry: RetryOptions::none(),
            ..Default::default()
        }
    }

    /// The query string that authenticates a request, if the auth is by SAS.
    fn token(&self) -> Option<String> {
        let key = match &self.o.auth {
            BlobAuth::Sas(s) => return Some(s.clone()),
            BlobAuth::Entra(_) => return None,
            BlobAuth::AccountKey(k) => k,
        };
        let now = chrono::Utc::now();
        let mut cur = self.sas.lock().unwrap_or_else(|p| p.into_inner());
        Some(match &*cur {
            Some((t, exp)) if *exp - now > SAS_LIFETIME / 2 => t.clone(),
            _ => {
                let exp = now + SAS_LIFETIME;
                let t = mint_sas(
                    &self.o.account,
                    key,
                    &self.o.container,
                    exp,
                    self.o.allow_plaintext_credentials,
                );
                *cur = Some((t.clone(), exp));
                t
            }
        })
    }

    fn url(&self, path: &str, query: Option<String>) -> Result<Url, BlobError> {
        let mut url = format!("{}/{}", self.o.endpoint, self.o.container);
        if !path.is_empty() {
            url.push('/');
            url.push_str(
                &path
                    .split('/')
                    .map(percent_encode)
                    .collect::<Vec<_>>()
                    .join("/"),
            );
        }
        if let Some(q) = query {
            url.push('?');
            url.push_str(&q);
        }
        Url::parse(&url).map_err(|e| BlobError::Url {
            cause: redacted(&e),
        })
    }

    fn client(&self, key: &str) -> Result<BlobClient, BlobError> {
        let url = self.url(key, self.token())?;
        let options = BlobClientOptions {
            client_options: self.client_options(),
            ..Default::default()
        };
        BlobClient::new(url, self.credential.clone(), Some(options)).map_err(|e| {
            BlobError::Client {
                cause: redacted(&e),
            }
        })
    }

    fn container_client(&self, query: Option<String>) -> Result<BlobContainerClient, BlobError> {
        let url = self.url("", query)?;
        let options = BlobContainerClientOptions {
            client_options: self.client_options(),
            ..Default::default()
        };
        BlobContainerClient::new(url, self.credential.clone(), Some(options)).map_err(|e| {
            BlobError::Client {
                cause: redacted(&e),
            }
        })
    }

    async fn create(&self) -> Result<(), BlobError> {
        let query = match &self.o.auth {
            BlobAuth::AccountKey(key) => Some(account_sas_create(
                &self.o.account,
                key,
                chrono::Utc::now() + SAS_LIFETIME,
                self.o.allow_plaintext_credentials,
            )),
            BlobAuth::Sas(s) => Some(s.clone()),
            BlobAuth::Entra(_) => None,
        };
        let c = self.container_client(query)?;
        match c.create(None).await {
            Ok(_) => {
                tracing::info!(container = %self.o.container, "created the container");
                Ok(())
            }
            Err(e) if e.http_status() == Some(StatusCode::Conflict) => Ok(()),
            Err(e) => Err(BlobError::CreateContainer {
                container: self.o.container.clone(),
                cause: redacted(&e),
            }),
        }
    }

    fn metadata(&self, batch: &SealedBatch) -> HashMap<String, String> {
        let mut metadata: HashMap<String, String> = self.o.metadata.iter().cloned().collect();
        metadata.insert("batch_id".into(), batch.meta.id.replace('-', "_"));
        metadata.insert("record_count".into(), batch.meta.record_count.to_string());
        metadata.insert("sha256".into(), batch.meta.sha256.clone());
        if let Some(k) = &batch.meta.key_id {
            metadata.insert("key_id".into(), k.clone());
        }
        if let Some(l) = &batch.meta.chain {
            for (k, v) in logferry_sink::batch::metadata(l) {
                metadata.insert(k.into(), v);
            }
        }
        metadata
    }

    /// After a 409 on upload: the blob at this key holds these bytes (same digest) when a first
    /// attempt landed and only its response was lost, or when a record is replayed.
    async fn already_there(&self, client: &BlobClient, batch: &SealedBatch) -> Outcome {
        match client.get_properties(None).await {
            Ok(resp) => {
                let meta = resp.metadata().unwrap_or_default();
                // The same bytes: this batch again, or (keys named by a record's fields) the
                // same record replayed after a crash.
                let same = meta.get("sha256") == Some(&batch.meta.sha256);
                if same {
                    Outcome::Delivered
                } else {
                    Outcome::Rejected {
                        reason: format!(
                            "a different blob already exists at {:?} in container {:?}; it is kept, this batch is set aside",
                            batch.meta.key, self.o.container
                        ),
                    }
                }
            }
            Err(e) => classify(&self.o.container, &e),
        }
    }

    async fn send_block(&self, batch: &SealedBatch) -> Outcome {
        let client = match self.client(&batch.meta.key) {
            Ok(c) => c,
            Err(e) => {
                return Outcome::Rejected {
                    reason: e.to_string(),
                }
            }
        };
        let options = BlockBlobClientUploadOptions {
            blob_content_type: Some(
                if batch.meta.key_id.is_some() {
                    "application/octet-stream"
                } else {
                    batch.content_type()
                }
                .to_string(),
            ),
            blob_content_encoding: batch.content_encoding().map(str::to_string),
            metadata: Some(self.metadata(batch)),
            tier: self
                .o
                .access_tier
                .as_deref()
                .and_then(|t| t.parse::<AccessTier>().ok()),
            // Never overwrite: an archive keeps what it has. A retry whose first attempt did
            // land finds its own blob (checked below) and counts as delivered. Above 4 MiB the
            // SDK stages blocks and the condition goes on the commit.
            if_none_match: Some(Etag::from("*")),
            ..Default::default()
        };
        let body: RequestContent<Bytes, NoFormat> = batch.payload.clone().into();
        let res = tokio::time::timeout(
            Duration::from_secs(300),
            client.block_blob_client().upload(body, Some(options)),
        )
        .await;
        match res {
            Ok(Ok(_)) => Outcome::Delivered,
            Ok(Err(e)) if e.http_status() == Some(StatusCode::Conflict) => {
                self.already_there(&client, batch).await
            }
            Ok(Err(e)) if self.o.create_container && is_container_missing(&e) => {
                self.created_retry().await
            }
            Ok(Err(e)) => classify(&self.o.container, &e),
            Err(_) => Outcome::Retry {
                after: None,
                reason: "Azure Blob upload timed out".into(),
            },
        }
    }

    async fn created_retry(&self) -> Outcome {
        match self.create().await {
            // Created: the batch goes again right away through the normal retry.
            Ok(()) => Outcome::Retry {
                after: Some(Duration::ZERO),
                reason: format!("created container {:?}", self.o.container),
            },
            Err(e) => Outcome::Rejected {
                reason: e.to_string(),
            },
        }
    }
}

/// An error's text with secrets (a SAS signature in a URL) masked.
fn redacted(e: &dyn std::fmt::Display) -> String {
    logferry_sink::redact::text(&e.to_string()).into_owned()
}

fn error_code(e: &azure_core::Error) -> &str {
    match e.kind() {
        azure_core::error::ErrorKind::HttpResponse {
            error_code: Some(c),
            ..
        } => c,
        _ => "",
    }
}

fn is_container_missing(e: &azure_core::Error) -> bool {
    error_code(e) == "ContainerNotFound"
}

fn classify(container: &str, e: &azure_core::Error) -> Outcome {
    let status = e.http_status();
    let (code, after) = match e.kind() {
        azure_core::error::ErrorKind::HttpResponse {
            error_code,
            raw_response,
            ..
        } => {
            let after = raw_response.as_ref().and_then(|r| {
                r.headers()
                    .iter()
                    .find(|(k, _)| k.as_str().eq_ignore_ascii_case("retry-after"))
                    .and_then(|(_, v)| logferry_sink::retry_after(v.as_str()))
            });
            (error_code.clone().unwrap_or_default(), after)
        }
        _ => (String::new(), None),
    };
    let reason = match status {
        Some(s) => format!("Azure Blob {} {code}", u16::from(s)),
        None => format!(
            "Azure Blob request failed: {}",
            crate::tls::explain_chain(
                &logferry_sink::redact::text(&logferry_sink::response::error_chain(e)),
                false
            )
        ),
    };
    match status {
        None => Outcome::Retry { after: None, reason },
        Some(StatusCode::ServiceUnavailable) if code == "ServerBusy" => Outcome::Throttled { after, reason },
        Some(StatusCode::NotFound) if code == "ContainerNotFound" => Outcome::Rejected {
            reason: format!("{reason}: container {container:?} does not exist (create it, or set create_container = true)"),
        },
        Some(StatusCode::Forbidden) => Outcome::Rejected {
            reason: format!("{reason}: grant the \"Storage Blob Data Contributor\" role on container {container:?}, or check the key or SAS"),
        },
        Some(s) => logferry_sink::response::from_status(u16::from(s), after, reason),
    }
}

#[async_trait]
impl Sink for AzureBlobSink {
    async fn send(&self, batch: &SealedBatch) -> Outcome {
        match self.o.blob_type {
            BlobType::Block => self.send_block(batch).await,
            BlobType::Append => self.send_append(batch).await,
        }
    }

    /// Writes and deletes an empty probe blob: the container exists and this identity may
    /// write to it. Each failure says what to create or grant.
    async fn check(&self) -> Result<(), CheckError> {
        let client = self
            .client(".logferry-check")
            .map_err(|e| CheckError::new(e.to_string()))?;
        let res = client
            .block_blob_client()
            .upload(RequestContent::from(Vec::new()), None)
            .await;
        if let Err(e) = res {
            return Err(CheckError::new(match classify(&self.o.container, &e) {
                Outcome::Rejected { reason }
                | Outcome::Retry { reason, .. }
                | Outcome::Throttled { reason, .. }
                | Outcome::Parked { reason, .. }
                | Outcome::TooLarge { reason } => reason,
                Outcome::Delivered => "unknown error".to_string(),
            }));
        }
        let _ = client.delete(None).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::TlsOptions;

    /// A sink with an account key (SAS tokens are minted from it); nothing is sent.
    fn sink() -> AzureBlobSink {
        AzureBlobSink::new(AzureBlobOptions {
            container: "c".into(),
            account: "a".into(),
            endpoint: "http://127.0.0.1:1/a".into(),
            auth: BlobAuth::AccountKey(b"key".to_vec()),
            tls: TlsOptions::default(),
            access_tier: None,
            metadata: vec![],
            create_container: false,
            blob_type: BlobType::Append,
            append_roll: AppendRoll::default(),
            allow_plaintext_credentials: true,
        })
        .unwrap()
    }

    #[test]
    fn may_have_landed_records_are_bounded_and_the_oldest_go_first() {
        let s = sink();
        // UUIDv7-like ids: ordered by time.
        let id = |n: usize| format!("019abc{n:06x}-0000-7000-8000-000000000000");
        for n in 0..append::MAX_UNCERTAIN + 10 {
            s.remember(&id(n), "b", n as u64);
        }
        assert_eq!(s.uncertain.lock().unwrap().len(), append::MAX_UNCERTAIN);
        assert_eq!(s.pending(&id(0)), None, "the oldest went");
        assert_eq!(s.pending(&id(9)), None);
        assert_eq!(s.pending(&id(10)), Some(("b".to_string(), 10)));
    }

    #[test]
    fn minted_sas_tokens_are_reused_then_renewed_at_half_life() {
        let sink = sink();
        let first = sink.token().unwrap();
        assert!(first.contains("sp=racwdl") && first.contains("sr=c"));
        assert_eq!(sink.token().unwrap(), first, "reused while fresh");
        // Past half its life (expiry 29 minutes away), the next request gets a new token.
        let soon = chrono::Utc::now() + chrono::Duration::minutes(29);
        *sink.sas.lock().unwrap() = Some((first.clone(), soon));
        // Minted within the same second it reads the same; what matters is the new expiry.
        sink.token().unwrap();
        assert!(
            sink.sas.lock().unwrap().as_ref().unwrap().1 > soon + chrono::Duration::minutes(30)
        );
    }
}
