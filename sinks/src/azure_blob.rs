//! The `azure_blob` sink (block blobs): one blob per batch, on Microsoft's `azure_storage_blob`.
//!
//! This first part authenticates with the account key of a connection string by minting
//! short-lived service SAS tokens (the official crate has no Shared Key), renewed before they
//! expire. The SDK's retries are off: the pipeline's delivery loop is the only one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::http::{ClientOptions, Etag, RequestContent, RetryOptions, StatusCode, Url};
use azure_storage_blob::models::{
    AccessTier, BlobClientGetPropertiesResultHeaders, BlockBlobClientUploadOptions,
};
use azure_storage_blob::{BlobClient, BlobClientOptions};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{percent_encode, Outcome, SealedBatch, Sink};

const SAS_VERSION: &str = "2022-11-02";
/// Minted tokens live this long and are renewed when half used.
const SAS_LIFETIME: chrono::Duration = chrono::Duration::hours(1);

/// The parts of a connection string logferry uses.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionString {
    pub account: String,
    pub key: Option<Vec<u8>>,
    pub blob_endpoint: String,
    pub sas: Option<String>,
}

impl std::fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ConnectionString({}, {})",
            self.account, self.blob_endpoint
        )
    }
}

/// Azurite's well-known development account (public, documented by Microsoft).
const DEV_ACCOUNT: &str = "devstoreaccount1";
const DEV_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

impl ConnectionString {
    /// Parses `Key=Value;...` as the portal and Azurite write it. The error names the part that
    /// is wrong, never the key.
    pub fn parse(s: &str) -> Result<ConnectionString, String> {
        let mut m: HashMap<String, String> = HashMap::new();
        for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| "connection_string: each part must be Key=Value".to_string())?;
            m.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
        if m.get("usedevelopmentstorage")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            m.entry("accountname".into())
                .or_insert_with(|| DEV_ACCOUNT.into());
            m.entry("accountkey".into())
                .or_insert_with(|| DEV_KEY.into());
            m.entry("blobendpoint".into())
                .or_insert_with(|| format!("http://127.0.0.1:10000/{DEV_ACCOUNT}"));
        }
        let account = m
            .get("accountname")
            .cloned()
            .ok_or_else(|| "connection_string: AccountName is missing".to_string())?;
        let key = match m.get("accountkey") {
            Some(k) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(k)
                    .map_err(|_| "connection_string: AccountKey is not base64".to_string())?,
            ),
            None => None,
        };
        let blob_endpoint = match m.get("blobendpoint") {
            Some(e) => e.trim_end_matches('/').to_string(),
            None => {
                let proto = m
                    .get("defaultendpointsprotocol")
                    .map_or("https", String::as_str);
                let suffix = m
                    .get("endpointsuffix")
                    .map_or("core.windows.net", String::as_str);
                format!("{proto}://{account}.blob.{suffix}")
            }
        };
        let sas = m.get("sharedaccesssignature").cloned();
        if key.is_none() && sas.is_none() {
            return Err("connection_string: needs an AccountKey or a SharedAccessSignature".into());
        }
        Ok(ConnectionString {
            account,
            key,
            blob_endpoint,
            sas,
        })
    }
}

/// A container-scoped service SAS signed with the account key (read, create, write, delete).
pub fn mint_sas(
    account: &str,
    key: &[u8],
    container: &str,
    expiry: chrono::DateTime<chrono::Utc>,
) -> String {
    let se = expiry.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    // Read (properties), create, write, and delete (the check's probe).
    let sp = "rcwd";
    let resource = format!("/blob/{account}/{container}");
    // Field order of the service SAS string-to-sign for versions 2020-12-06 and later.
    let to_sign =
        format!("{sp}\n\n{se}\n{resource}\n\n\nhttps,http\n{SAS_VERSION}\nc\n\n\n\n\n\n\n");
    let sig = sign(key, &to_sign);
    format!(
        "sv={SAS_VERSION}&sp={sp}&se={}&spr=https,http&sr=c&sig={}",
        percent_encode(&se),
        percent_encode(&sig)
    )
}

#[derive(Debug, Clone)]
pub struct AzureBlobOptions {
    pub container: String,
    pub connection: ConnectionString,
    pub access_tier: Option<String>,
    pub metadata: Vec<(String, String)>,
    /// Create the container when it is missing (needs the account key: an account SAS is
    /// minted for it). Off by default: a typo should not create a new container.
    pub create_container: bool,
}

/// An account SAS allowing only the creation of containers, for `create_container`.
fn account_sas_create(account: &str, key: &[u8], expiry: chrono::DateTime<chrono::Utc>) -> String {
    let se = expiry.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let to_sign = format!("{account}\nc\nb\nc\n\n{se}\n\nhttps,http\n{SAS_VERSION}\n\n");
    let sig = sign(key, &to_sign);
    format!(
        "sv={SAS_VERSION}&ss=b&srt=c&sp=c&se={}&spr=https,http&sig={}",
        percent_encode(&se),
        percent_encode(&sig)
    )
}

/// Removes SAS signatures from a message: transport errors quote the request URL, and a
/// token in a log is a credential in a log.
pub fn redact_sas(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.find("sig=") {
        out.push_str(&rest[..i + 4]);
        out.push_str("***");
        let tail = &rest[i + 4..];
        let end = tail
            .find(|c: char| c == '&' || c == '"' || c == '\'' || c.is_whitespace() || c == ')')
            .unwrap_or(tail.len());
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Base64 HMAC-SHA256 of a SAS string-to-sign with the account key.
fn sign(key: &[u8], to_sign: &str) -> String {
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(to_sign.as_bytes());
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        }
        // HMAC takes keys of any length: not reachable.
        Err(_) => String::new(),
    }
}

pub struct AzureBlobSink {
    o: AzureBlobOptions,
    /// The current minted token and when it expires.
    sas: Mutex<Option<(String, chrono::DateTime<chrono::Utc>)>>,
}

impl AzureBlobSink {
    pub fn new(o: AzureBlobOptions) -> AzureBlobSink {
        AzureBlobSink {
            o,
            sas: Mutex::new(None),
        }
    }

    fn token(&self) -> String {
        if let Some(s) = &self.o.connection.sas {
            return s.trim_start_matches('?').to_string();
        }
        let Some(key) = &self.o.connection.key else {
            return String::new();
        };
        let now = chrono::Utc::now();
        let mut cur = self.sas.lock().unwrap_or_else(|p| p.into_inner());
        match &*cur {
            Some((t, exp)) if *exp - now > SAS_LIFETIME / 2 => t.clone(),
            _ => {
                let exp = now + SAS_LIFETIME;
                let t = mint_sas(&self.o.connection.account, key, &self.o.container, exp);
                *cur = Some((t.clone(), exp));
                t
            }
        }
    }

    async fn create(&self) -> Result<(), String> {
        let Some(key) = &self.o.connection.key else {
            return Err(
                "create_container needs the account key (a connection string with AccountKey)"
                    .into(),
            );
        };
        let sas = account_sas_create(
            &self.o.connection.account,
            key,
            chrono::Utc::now() + SAS_LIFETIME,
        );
        let url = format!(
            "{}/{}?{sas}",
            self.o.connection.blob_endpoint, self.o.container
        );
        let url = Url::parse(&url).map_err(|e| format!("invalid container URL: {e}"))?;
        let options = azure_storage_blob::BlobContainerClientOptions {
            client_options: ClientOptions {
                retry: RetryOptions::none(),
                ..Default::default()
            },
            ..Default::default()
        };
        let c = azure_storage_blob::BlobContainerClient::new(url, None, Some(options))
            .map_err(|e| redact_sas(&e.to_string()))?;
        match c.create(None).await {
            Ok(_) => {
                tracing::info!(container = %self.o.container, "created the container");
                Ok(())
            }
            Err(e) if e.http_status() == Some(StatusCode::Conflict) => Ok(()),
            Err(e) => Err(format!(
                "cannot create container {:?}: {}",
                self.o.container,
                redact_sas(&e.to_string())
            )),
        }
    }

    /// After a 409 on upload: the blob at this key is ours (same batch id and digest) when a
    /// first attempt landed and only its response was lost.
    async fn already_there(&self, client: &BlobClient, batch: &SealedBatch) -> Outcome {
        match client.get_properties(None).await {
            Ok(resp) => {
                let meta = resp.metadata().unwrap_or_default();
                let same = meta.get("batch_id") == Some(&batch.meta.id.replace('-', "_"))
                    && meta.get("sha256") == Some(&batch.meta.sha256);
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

    fn client(&self, key: &str) -> Result<BlobClient, String> {
        let path: String = key
            .split('/')
            .map(percent_encode)
            .collect::<Vec<_>>()
            .join("/");
        let url = format!(
            "{}/{}/{path}?{}",
            self.o.connection.blob_endpoint,
            self.o.container,
            self.token()
        );
        let url = Url::parse(&url).map_err(|e| format!("invalid blob URL: {e}"))?;
        let options = BlobClientOptions {
            client_options: ClientOptions {
                retry: RetryOptions::none(),
                ..Default::default()
            },
            ..Default::default()
        };
        BlobClient::new(url, None, Some(options)).map_err(|e| redact_sas(&e.to_string()))
    }
}

fn is_container_missing(e: &azure_core::Error) -> bool {
    matches!(e.kind(), azure_core::error::ErrorKind::HttpResponse { error_code: Some(c), .. } if c == "ContainerNotFound")
}

fn classify(container: &str, e: &azure_core::Error) -> Outcome {
    let status = e.http_status();
    let (code, after) = match e.kind() {
        azure_core::error::ErrorKind::HttpResponse {
            error_code,
            raw_response,
            ..
        } => {
            // Retry-After in seconds (what Storage sends when it throttles).
            let after = raw_response.as_ref().and_then(|r| {
                r.headers()
                    .iter()
                    .find(|(k, _)| k.as_str().eq_ignore_ascii_case("retry-after"))
                    .and_then(|(_, v)| v.as_str().trim().parse::<u64>().ok())
                    .map(Duration::from_secs)
            });
            (error_code.clone().unwrap_or_default(), after)
        }
        _ => (String::new(), None),
    };
    let reason = match status {
        Some(s) => format!("Azure Blob {} {code}", u16::from(s)),
        None => format!("Azure Blob request failed: {}", redact_sas(&e.to_string())),
    };
    match status {
        None => Outcome::Retry { after: None, reason },
        Some(StatusCode::TooManyRequests | StatusCode::RequestTimeout) => Outcome::Retry { after, reason },
        Some(s) if u16::from(s) >= 500 => Outcome::Retry { after, reason },
        Some(StatusCode::PayloadTooLarge) => Outcome::TooLarge { reason },
        Some(StatusCode::NotFound) if code == "ContainerNotFound" => Outcome::Rejected {
            reason: format!("{reason}: container {container:?} does not exist (create it, or set create_container = true)"),
        },
        Some(StatusCode::Forbidden) => Outcome::Rejected {
            reason: format!("{reason}: grant the \"Storage Blob Data Contributor\" role on container {container:?}, or check the key or SAS"),
        },
        Some(_) => Outcome::Rejected { reason },
    }
}

#[async_trait]
impl Sink for AzureBlobSink {
    async fn send(&self, batch: &SealedBatch) -> Outcome {
        let client = match self.client(&batch.meta.key) {
            Ok(c) => c,
            Err(reason) => return Outcome::Rejected { reason },
        };
        let mut metadata: HashMap<String, String> = self.o.metadata.iter().cloned().collect();
        metadata.insert("batch_id".into(), batch.meta.id.replace('-', "_"));
        metadata.insert("record_count".into(), batch.meta.record_count.to_string());
        metadata.insert("sha256".into(), batch.meta.sha256.clone());
        let options = BlockBlobClientUploadOptions {
            blob_content_type: Some(batch.content_type().to_string()),
            blob_content_encoding: batch
                .meta
                .compression
                .content_encoding()
                .map(str::to_string),
            metadata: Some(metadata),
            tier: self
                .o
                .access_tier
                .as_deref()
                .and_then(|t| t.parse::<AccessTier>().ok()),
            // Never overwrite: an archive keeps what it has. A retry whose first attempt did
            // land finds its own blob (checked below) and counts as delivered.
            if_none_match: Some(Etag::from("*")),
            ..Default::default()
        };
        let res = tokio::time::timeout(
            Duration::from_secs(300),
            client
                .block_blob_client()
                .upload(RequestContent::from(batch.payload.to_vec()), Some(options)),
        )
        .await;
        match res {
            Ok(Ok(_)) => Outcome::Delivered,
            Ok(Err(e)) if e.http_status() == Some(StatusCode::Conflict) => {
                self.already_there(&client, batch).await
            }
            Ok(Err(e)) if self.o.create_container && is_container_missing(&e) => {
                match self.create().await {
                    // Created: the batch goes again right away through the normal retry.
                    Ok(()) => Outcome::Retry {
                        after: Some(Duration::ZERO),
                        reason: format!("created container {:?}", self.o.container),
                    },
                    Err(reason) => Outcome::Rejected { reason },
                }
            }
            Ok(Err(e)) => classify(&self.o.container, &e),
            Err(_) => Outcome::Retry {
                after: None,
                reason: "Azure Blob upload timed out".into(),
            },
        }
    }

    /// Writes and deletes an empty probe blob: the container exists and this identity may
    /// write to it. Each failure says what to create or grant.
    async fn check(&self) -> Result<(), String> {
        let client = self.client(".logferry-check")?;
        let res = client
            .block_blob_client()
            .upload(RequestContent::from(Vec::new()), None)
            .await;
        if let Err(e) = res {
            return Err(match classify(&self.o.container, &e) {
                Outcome::Rejected { reason }
                | Outcome::Retry { reason, .. }
                | Outcome::TooLarge { reason } => reason,
                Outcome::Delivered => "unknown error".into(),
            });
        }
        let _ = client.delete(None).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_never_reach_a_message() {
        let m = "error sending request for url (http://h/c/b?sv=1&sig=abc%2Bdef&se=x): refused";
        assert_eq!(
            redact_sas(m),
            "error sending request for url (http://h/c/b?sv=1&sig=***&se=x): refused"
        );
        assert_eq!(redact_sas("sig=zzz"), "sig=***");
    }

    #[test]
    fn connection_strings_in_their_usual_forms() {
        let c = ConnectionString::parse("UseDevelopmentStorage=true").unwrap();
        assert_eq!(c.account, "devstoreaccount1");
        assert_eq!(c.blob_endpoint, "http://127.0.0.1:10000/devstoreaccount1");
        let c = ConnectionString::parse(
            "DefaultEndpointsProtocol=https;AccountName=acme;AccountKey=a2V5;EndpointSuffix=core.windows.net",
        )
        .unwrap();
        assert_eq!(c.blob_endpoint, "https://acme.blob.core.windows.net");
        assert_eq!(c.key.as_deref(), Some(&b"key"[..]));
        assert!(!format!("{c:?}").contains("a2V5"));
        assert!(ConnectionString::parse("AccountName=x")
            .unwrap_err()
            .contains("AccountKey"));
        assert!(ConnectionString::parse("AccountName=x;AccountKey=!!")
            .unwrap_err()
            .contains("base64"));
    }
}
