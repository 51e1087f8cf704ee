//! The `azure_blob` sink (block blobs): one blob per batch, on Microsoft's `azure_storage_blob`.
//!
//! This first part authenticates with the account key of a connection string by minting
//! short-lived service SAS tokens (the official crate has no Shared Key), renewed before they
//! expire. The SDK's retries are off: the pipeline's delivery loop is the only one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use azure_core::http::{
    ClientOptions, Etag, NoFormat, RequestContent, RetryOptions, StatusCode, Transport, Url,
};
use azure_storage_blob::models::{
    AccessTier, AppendBlobClientAppendBlockOptions, AppendBlobClientCreateOptions,
    BlobClientDownloadOptions, BlobClientGetPropertiesResultHeaders,
    BlobContainerClientListBlobsOptions, BlockBlobClientUploadOptions, ListBlobsResponse,
};
use azure_storage_blob::{
    BlobClient, BlobClientOptions, BlobContainerClient, BlobContainerClientOptions,
};
use base64::Engine;
use bytes::Bytes;
use futures::StreamExt;
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub use crate::azure_auth::Entra;
use crate::tls::TlsOptions;
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

/// A container-scoped service SAS signed with the account key: read (properties, a blob's
/// tail), add (append blocks), create, write, delete (the check's probe), list (append roll
/// numbers).
pub fn mint_sas(
    account: &str,
    key: &[u8],
    container: &str,
    expiry: chrono::DateTime<chrono::Utc>,
) -> String {
    let se = expiry.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    // In the canonical order the service requires.
    let sp = "racwdl";
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

/// How the sink authenticates to the storage account.
#[derive(Clone, PartialEq, Eq)]
pub enum BlobAuth {
    /// The account key: container-scoped service SAS tokens are minted from it and renewed.
    AccountKey(Vec<u8>),
    /// A SAS token given by the user (without the leading `?`).
    Sas(String),
    /// Microsoft Entra ID (bearer tokens; HTTPS only).
    Entra(Entra),
}

impl std::fmt::Debug for BlobAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlobAuth::AccountKey(_) => f.write_str("AccountKey(***)"),
            BlobAuth::Sas(_) => f.write_str("Sas(***)"),
            BlobAuth::Entra(e) => write!(f, "Entra({e:?})"),
        }
    }
}

impl ConnectionString {
    /// The account, blob endpoint and credential it names; the key wins over a SAS.
    pub fn into_parts(self) -> (String, String, BlobAuth) {
        let auth = match (self.key, self.sas) {
            (Some(k), _) => BlobAuth::AccountKey(k),
            (None, Some(s)) => BlobAuth::Sas(s.trim_start_matches('?').to_string()),
            // `parse` refuses a string with neither.
            (None, None) => BlobAuth::Sas(String::new()),
        };
        (self.account, self.blob_endpoint, auth)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BlobType {
    /// One blob per batch.
    #[default]
    Block,
    /// Batches appended to a blob per rendered key, rolled over by size and age.
    Append,
}

/// When append mode starts the next blob of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendRoll {
    pub max_bytes: u64,
    pub max_age: Duration,
}

impl Default for AppendRoll {
    fn default() -> Self {
        AppendRoll {
            max_bytes: 256 << 20,
            max_age: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AzureBlobOptions {
    pub container: String,
    pub account: String,
    /// The account's blob endpoint, without a trailing `/`.
    pub endpoint: String,
    pub auth: BlobAuth,
    pub tls: TlsOptions,
    pub access_tier: Option<String>,
    pub metadata: Vec<(String, String)>,
    /// Create the container when it is missing (needs the account key: an account SAS is
    /// minted for it). Off by default: a typo should not create a new container.
    pub create_container: bool,
    pub blob_type: BlobType,
    pub append_roll: AppendRoll,
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

/// Azure's limit for one Append Block call (service versions 2022-11-02 and later).
const MAX_APPEND_BLOCK: u64 = 100 << 20;
/// Azure's limit of committed blocks in an append blob.
const MAX_APPEND_BLOCKS: u64 = 50_000;
/// Append blob series kept in memory; idle ones beyond this are forgotten (and found again
/// by listing if a key comes back).
const MAX_APPEND_KEYS: usize = 1024;

pub struct AzureBlobSink {
    o: AzureBlobOptions,
    transport: Transport,
    credential: Option<Arc<dyn TokenCredential>>,
    /// The current minted token and when it expires.
    sas: Mutex<Option<(String, chrono::DateTime<chrono::Utc>)>>,
    /// Append mode: one serialised writer per rendered key.
    appends: Mutex<HashMap<String, Arc<tokio::sync::Mutex<AppendState>>>>,
    /// Append mode: batches whose last attempt may have landed, with the blob and offset.
    uncertain: Mutex<HashMap<String, (String, u64)>>,
    /// When this sink was made (Unix ms): older batches are replays from a previous run.
    started_ms: u64,
}

/// What the sink knows of the newest append blob of a key. `None` fields are unknown (after a
/// start, a roll-over or an ambiguous failure) and are read back before the next append.
#[derive(Default)]
struct AppendState {
    seq: Option<u32>,
    len: Option<u64>,
    blocks: u64,
    created: Option<chrono::DateTime<chrono::Utc>>,
    /// The blob has been read back once by this process.
    seen: bool,
    /// The blob's last bytes when this process first read it back, kept until the batches
    /// sealed before the start have gone.
    start_tail: Option<Bytes>,
}

/// How much of an append blob's end is kept at start to find a crashed predecessor's batches
/// (the few that were in flight; batches are at most a few MiB compressed).
const START_TAIL: u64 = 32 << 20;

impl AzureBlobSink {
    pub fn new(o: AzureBlobOptions) -> Result<AzureBlobSink, String> {
        let http = crate::tls::client(&o.tls)?;
        let credential = match &o.auth {
            BlobAuth::Entra(e) => {
                if !o.endpoint.starts_with("https://") {
                    return Err(format!(
                        "auth = \"{}\" needs an https:// endpoint (bearer tokens are never sent over plain http), not {}",
                        e.name(),
                        o.endpoint
                    ));
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
            uncertain: Mutex::new(HashMap::new()),
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
                let t = mint_sas(&self.o.account, key, &self.o.container, exp);
                *cur = Some((t.clone(), exp));
                t
            }
        })
    }

    fn url(&self, path: &str, query: Option<String>) -> Result<Url, String> {
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
        Url::parse(&url).map_err(|e| format!("invalid blob URL: {}", redact_sas(&e.to_string())))
    }

    fn client(&self, key: &str) -> Result<BlobClient, String> {
        let url = self.url(key, self.token())?;
        let options = BlobClientOptions {
            client_options: self.client_options(),
            ..Default::default()
        };
        BlobClient::new(url, self.credential.clone(), Some(options))
            .map_err(|e| redact_sas(&e.to_string()))
    }

    fn container_client(&self, query: Option<String>) -> Result<BlobContainerClient, String> {
        let url = self.url("", query)?;
        let options = BlobContainerClientOptions {
            client_options: self.client_options(),
            ..Default::default()
        };
        BlobContainerClient::new(url, self.credential.clone(), Some(options))
            .map_err(|e| redact_sas(&e.to_string()))
    }

    async fn create(&self) -> Result<(), String> {
        let query = match &self.o.auth {
            BlobAuth::AccountKey(key) => Some(account_sas_create(
                &self.o.account,
                key,
                chrono::Utc::now() + SAS_LIFETIME,
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
            Err(e) => Err(format!(
                "cannot create container {:?}: {}",
                self.o.container,
                redact_sas(&e.to_string())
            )),
        }
    }

    fn metadata(&self, batch: &SealedBatch) -> HashMap<String, String> {
        let mut metadata: HashMap<String, String> = self.o.metadata.iter().cloned().collect();
        metadata.insert("batch_id".into(), batch.meta.id.replace('-', "_"));
        metadata.insert("record_count".into(), batch.meta.record_count.to_string());
        metadata.insert("sha256".into(), batch.meta.sha256.clone());
        metadata
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

    async fn send_block(&self, batch: &SealedBatch) -> Outcome {
        let client = match self.client(&batch.meta.key) {
            Ok(c) => c,
            Err(reason) => return Outcome::Rejected { reason },
        };
        let options = BlockBlobClientUploadOptions {
            blob_content_type: Some(batch.content_type().to_string()),
            blob_content_encoding: batch
                .meta
                .compression
                .content_encoding()
                .map(str::to_string),
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
            Err(reason) => Outcome::Rejected { reason },
        }
    }

    fn append_state(&self, key: &str) -> Arc<tokio::sync::Mutex<AppendState>> {
        let mut map = self.appends.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_APPEND_KEYS && !map.contains_key(key) {
            // Forget idle series (no writer holds them); the next use lists again.
            map.retain(|_, s| Arc::strong_count(s) > 1);
        }
        map.entry(key.to_string()).or_default().clone()
    }

    /// Append mode: the batch becomes one Append Block at the position the sink expects
    /// (`x-ms-blob-condition-appendpos`), so two writers can never both land at one place.
    ///
    /// No retry appends twice: an attempt that may have landed (lost response, timeout, 5xx)
    /// is remembered with its blob and offset, and the retry first compares the bytes there.
    /// Batches sealed before this process started may have been appended by the previous
    /// one just before a crash: they are looked up in the blob's tail as it was at start.
    async fn send_append(&self, batch: &SealedBatch) -> Outcome {
        let plen = batch.payload.len() as u64;
        if plen > MAX_APPEND_BLOCK {
            return Outcome::TooLarge {
                reason: format!("{plen} bytes is over Azure's 100 MiB append block limit"),
            };
        }
        let replay = sealed_before(&batch.meta.id, self.started_ms);
        let state = self.append_state(&batch.meta.key);
        let mut st = state.lock().await;
        let (stem, ext) = split_ext(&batch.meta.key);
        // A few rounds: roll-overs and 412s each take one.
        for _ in 0..4 {
            let pending = self.pending(&batch.meta.id);
            if let Some((name, offset)) = &pending {
                match self.landed_at(name, *offset, &batch.payload).await {
                    Ok(true) => {
                        self.settle(&batch.meta.id);
                        return Outcome::Delivered;
                    }
                    Ok(false) => {}
                    Err(o) => return o,
                }
            }
            let seq = match st.seq {
                Some(s) => s,
                None => match self.newest_seq(&stem, &ext).await {
                    Ok(s) => {
                        st.seq = Some(s.max(1));
                        s.max(1)
                    }
                    Err(o) => return o,
                },
            };
            let name = format!("{stem}-{seq:05}{ext}");
            let client = match self.client(&name) {
                Ok(c) => c,
                Err(reason) => return Outcome::Rejected { reason },
            };
            let len = match st.len {
                Some(l) => l,
                None => match self.read_back(&client, &name, batch, &mut st).await {
                    Ok(l) => l,
                    Err(o) => return o,
                },
            };
            if replay
                && st
                    .start_tail
                    .as_ref()
                    .is_some_and(|t| memchr::memmem::find(t, &batch.payload).is_some())
            {
                tracing::info!(batch = %batch.meta.id, blob = %name, "batch from before the restart is already in the append blob");
                return Outcome::Delivered;
            }
            let old = st.created.is_some_and(|c| {
                (chrono::Utc::now() - c).to_std().unwrap_or_default() > self.o.append_roll.max_age
            });
            if len > 0
                && (len + plen > self.o.append_roll.max_bytes
                    || st.blocks + 1 > MAX_APPEND_BLOCKS
                    || old)
            {
                *st = AppendState {
                    seq: Some(seq + 1),
                    ..Default::default()
                };
                continue;
            }
            let options = AppendBlobClientAppendBlockOptions {
                append_position: Some(len as i64),
                ..Default::default()
            };
            let body: RequestContent<Bytes, NoFormat> = batch.payload.clone().into();
            let res = tokio::time::timeout(
                Duration::from_secs(300),
                client
                    .append_blob_client()
                    .append_block(body, plen, Some(options)),
            )
            .await;
            match res {
                Ok(Ok(_)) => {
                    st.len = Some(len + plen);
                    st.blocks += 1;
                    if !replay {
                        // The backlog from before the start has been sent.
                        st.start_tail = None;
                    }
                    self.settle(&batch.meta.id);
                    return Outcome::Delivered;
                }
                // Not at the expected end (another writer, or an attempt of ours that landed
                // late): read the length back and look again.
                Ok(Err(e)) if e.http_status() == Some(StatusCode::PreconditionFailed) => {
                    st.len = None;
                }
                Ok(Err(e)) if error_code(&e) == "BlockCountExceedsLimit" => {
                    *st = AppendState {
                        seq: Some(seq + 1),
                        ..Default::default()
                    };
                }
                Ok(Err(e)) if error_code(&e) == "BlobNotFound" => st.len = None,
                Ok(Err(e)) => {
                    let outcome = classify(&self.o.container, &e);
                    if matches!(outcome, Outcome::Retry { .. }) {
                        // A 5xx or a dropped connection may still have appended.
                        self.remember(&batch.meta.id, &name, len);
                    }
                    st.len = None;
                    return outcome;
                }
                Err(_) => {
                    self.remember(&batch.meta.id, &name, len);
                    st.len = None;
                    return Outcome::Retry {
                        after: None,
                        reason: "Azure Blob append timed out".into(),
                    };
                }
            }
        }
        Outcome::Retry {
            after: None,
            reason: format!(
                "the append blob for {:?} kept changing under this writer",
                batch.meta.key
            ),
        }
    }

    fn pending(&self, id: &str) -> Option<(String, u64)> {
        self.uncertain
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    fn remember(&self, id: &str, name: &str, offset: u64) {
        let mut u = self.uncertain.lock().unwrap_or_else(|p| p.into_inner());
        // The newest attempt replaces an older one: a new attempt is only made after the old
        // offset was found without the batch, and either the end was still there (same
        // offset) or something else took it (the old attempt can no longer land).
        u.insert(id.to_string(), (name.to_string(), offset));
    }

    fn settle(&self, id: &str) {
        self.uncertain
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// Whether `payload` sits at `offset` in blob `name`.
    async fn landed_at(&self, name: &str, offset: u64, payload: &Bytes) -> Result<bool, Outcome> {
        let client = self
            .client(name)
            .map_err(|reason| Outcome::Rejected { reason })?;
        let plen = payload.len() as u64;
        let options = BlobClientDownloadOptions {
            range: Some((offset..offset + plen).into()),
            ..Default::default()
        };
        match client.download(Some(options)).await {
            Ok(res) => {
                let got = res
                    .body
                    .collect()
                    .await
                    .map_err(|e| classify(&self.o.container, &e))?;
                Ok(got == *payload)
            }
            // Range not satisfiable: the blob ends before that offset, nothing landed there.
            Err(e) if e.http_status() == Some(StatusCode::RequestedRangeNotSatisfiable) => {
                Ok(false)
            }
            Err(e) if e.http_status() == Some(StatusCode::NotFound) => Ok(false),
            Err(e) => Err(classify(&self.o.container, &e)),
        }
    }

    /// The highest roll number of a key's append blobs in the container (0: none yet).
    async fn newest_seq(&self, stem: &str, ext: &str) -> Result<u32, Outcome> {
        let c = self
            .container_client(self.token())
            .map_err(|reason| Outcome::Rejected { reason })?;
        let prefix = format!("{stem}-");
        let pager = c
            .list_blobs(Some(BlobContainerClientListBlobsOptions {
                prefix: Some(prefix.clone()),
                ..Default::default()
            }))
            .map_err(|e| classify(&self.o.container, &e))?;
        let mut pages = pager.into_pages();
        let mut best = 0u32;
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify(&self.o.container, &e))?;
            let list: ListBlobsResponse = page
                .into_model()
                .map_err(|e| classify(&self.o.container, &e))?;
            for item in list.blob_items {
                let Some(name) = item.name else { continue };
                let n = name
                    .strip_prefix(&prefix)
                    .and_then(|r| r.strip_suffix(ext))
                    .filter(|d| d.len() >= 5 && d.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|d| d.parse::<u32>().ok());
                if let Some(n) = n {
                    best = best.max(n);
                }
            }
        }
        Ok(best)
    }

    /// Reads the blob's length, block count and age back, creating the blob when missing.
    /// The first time this process meets an existing blob it also keeps its last bytes, where
    /// batches of a crashed predecessor would be.
    async fn read_back(
        &self,
        client: &BlobClient,
        name: &str,
        batch: &SealedBatch,
        st: &mut AppendState,
    ) -> Result<u64, Outcome> {
        match client.get_properties(None).await {
            Ok(p) => {
                if let Ok(Some(t)) = p.blob_type() {
                    if t != azure_storage_blob::models::BlobType::AppendBlob {
                        return Err(Outcome::Rejected {
                            reason: format!(
                                "{name:?} in container {:?} is a {t:?}, not an append blob; it is kept, this batch is set aside",
                                self.o.container
                            ),
                        });
                    }
                }
                let len = p.content_length().ok().flatten().unwrap_or(0);
                st.blocks = p
                    .blob_committed_block_count()
                    .ok()
                    .flatten()
                    .unwrap_or(0)
                    .max(0) as u64;
                st.created = p
                    .creation_time()
                    .ok()
                    .flatten()
                    .and_then(|t| chrono::DateTime::from_timestamp(t.unix_timestamp(), 0));
                if !st.seen && len > 0 {
                    let from = len.saturating_sub(START_TAIL);
                    let options = BlobClientDownloadOptions {
                        range: Some((from..len).into()),
                        ..Default::default()
                    };
                    let res = client
                        .download(Some(options))
                        .await
                        .map_err(|e| classify(&self.o.container, &e))?;
                    let tail = res
                        .body
                        .collect()
                        .await
                        .map_err(|e| classify(&self.o.container, &e))?;
                    st.start_tail = Some(tail);
                }
                st.seen = true;
                st.len = Some(len);
                Ok(len)
            }
            Err(e)
                if e.http_status() == Some(StatusCode::NotFound) && !is_container_missing(&e) =>
            {
                let options = AppendBlobClientCreateOptions {
                    blob_content_type: Some(batch.content_type().to_string()),
                    blob_content_encoding: batch
                        .meta
                        .compression
                        .content_encoding()
                        .map(str::to_string),
                    metadata: Some(self.o.metadata.iter().cloned().collect()),
                    if_none_match: Some(Etag::from("*")),
                    ..Default::default()
                };
                match client.append_blob_client().create(Some(options)).await {
                    Ok(_) => {
                        st.seen = true;
                        st.len = Some(0);
                        st.blocks = 0;
                        st.created = Some(chrono::Utc::now());
                        Ok(0)
                    }
                    // Created meanwhile (a lost response): read it back next round.
                    Err(e) if e.http_status() == Some(StatusCode::Conflict) => {
                        Err(Outcome::Retry {
                            after: Some(Duration::ZERO),
                            reason: format!("append blob {name:?} appeared meanwhile"),
                        })
                    }
                    Err(e) => Err(classify(&self.o.container, &e)),
                }
            }
            Err(e) if self.o.create_container && is_container_missing(&e) => {
                Err(self.created_retry().await)
            }
            Err(e) => Err(classify(&self.o.container, &e)),
        }
    }
}

/// Whether a batch was sealed before `started_ms`: its id is a UUIDv7 (or a split half of
/// one, `<uuid>-a`), whose first 48 bits are the sealing time in Unix milliseconds. An id
/// that does not parse counts as old, which only costs a lookup.
fn sealed_before(id: &str, started_ms: u64) -> bool {
    let hex: String = id.chars().filter(|c| *c != '-').take(12).collect();
    match u64::from_str_radix(&hex, 16) {
        Ok(ms) if hex.len() == 12 => ms < started_ms,
        _ => true,
    }
}

/// Splits a key into the part before its file extensions and the extensions, so that roll
/// numbers go before them: `a/host.ndjson.gz` -> (`a/host`, `.ndjson.gz`).
fn split_ext(key: &str) -> (String, String) {
    const EXTS: &[&str] = &[".gz", ".zst", ".ndjson", ".jsonl", ".json", ".log", ".txt"];
    let mut stem = key;
    loop {
        let name_start = stem.rfind('/').map_or(0, |i| i + 1);
        match EXTS
            .iter()
            .find(|e| stem.ends_with(*e) && stem.len() - e.len() > name_start)
        {
            Some(e) => stem = &stem[..stem.len() - e.len()],
            None => break,
        }
    }
    (stem.to_string(), key[stem.len()..].to_string())
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
        Some(StatusCode::TooManyRequests) => Outcome::Throttled { after, reason },
        Some(StatusCode::ServiceUnavailable) if code == "ServerBusy" => Outcome::Throttled { after, reason },
        Some(StatusCode::RequestTimeout) => Outcome::Retry { after, reason },
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
        match self.o.blob_type {
            BlobType::Block => self.send_block(batch).await,
            BlobType::Append => self.send_append(batch).await,
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
                | Outcome::Throttled { reason, .. }
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
    fn minted_sas_tokens_are_reused_then_renewed_at_half_life() {
        let sink = AzureBlobSink::new(AzureBlobOptions {
            container: "c".into(),
            account: "a".into(),
            endpoint: "http://127.0.0.1:1/a".into(),
            auth: BlobAuth::AccountKey(b"key".to_vec()),
            tls: TlsOptions::default(),
            access_tier: None,
            metadata: vec![],
            create_container: false,
            blob_type: BlobType::Block,
            append_roll: AppendRoll::default(),
        })
        .unwrap();
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

    #[test]
    fn batches_sealed_before_the_start_are_known_by_their_uuid_v7() {
        // 0x019abc000000 ms.
        let id = "019abc00-0000-7000-8000-000000000000";
        assert!(sealed_before(id, 0x019abc000001));
        assert!(!sealed_before(id, 0x019abc000000));
        assert!(sealed_before(&format!("{id}-a-b"), 0x019abc000001));
        assert!(sealed_before("not-a-uuid", 0));
    }

    #[test]
    fn roll_numbers_go_before_the_extensions() {
        assert_eq!(
            split_ext("a/host.ndjson.gz"),
            ("a/host".into(), ".ndjson.gz".into())
        );
        assert_eq!(
            split_ext("a/ip-10.0.0.1.log"),
            ("a/ip-10.0.0.1".into(), ".log".into())
        );
        assert_eq!(split_ext("a/.gz"), ("a/.gz".into(), String::new()));
        assert_eq!(split_ext("plain"), ("plain".into(), String::new()));
    }

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
