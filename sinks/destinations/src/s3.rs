//! The `s3` sink: one object per batch in Amazon S3 or an S3-compatible store.
//!
//! The SDK's own retries are switched off: the pipeline's delivery loop is the only one, so
//! backoff, `Retry-After`, dead letters and metrics behave the same for every sink.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, ObjectLockMode,
    ServerSideEncryption, StorageClass,
};
use aws_smithy_types::retry::RetryConfig;

use crate::s3_answers::{classify, status_of};
use crate::tls::TlsError;
use logferry_sink::{percent_encode, CheckError, Outcome, SealedBatch, Sink};

/// Options of an `s3` sink, already checked by the configuration loader.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    pub bucket: String,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub force_path_style: bool,
    pub content_type: Option<String>,
    pub server_side_encryption: Option<String>,
    pub kms_key_id: Option<String>,
    pub bucket_key_enabled: Option<bool>,
    pub storage_class: Option<String>,
    pub tags: Vec<(String, String)>,
    /// (mode, retain days).
    pub object_lock: Option<(String, u32)>,
    pub checksum: Option<String>,
    pub metadata: Vec<(String, String)>,
    pub multipart_threshold: u64,
    pub part_size: u64,
    /// The configuration allowed an http:// endpoint (checked at load).
    pub allow_plaintext_credentials: bool,
    /// Keys name one object per record (no `{batch_id}`): never overwrite (If-None-Match).
    pub never_overwrite: bool,
    pub role_arn: Option<String>,
    pub external_id: Option<String>,
    pub session_name: Option<String>,
    /// Static keys, only from `*_file` options (or the environment, through the default chain).
    pub static_keys: Option<StaticKeys>,
    /// A private CA for S3-compatible stores (only `ca_file` applies to S3).
    pub tls: crate::tls::TlsOptions,
}

/// An access key pair; its `Debug` never shows the secret.
#[derive(Clone, Default)]
pub struct StaticKeys {
    pub id: String,
    pub secret: String,
}

impl std::fmt::Debug for StaticKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StaticKeys({}, ***)", self.id)
    }
}

/// Sets the options every new object gets, on PutObject and CreateMultipartUpload alike (two
/// builder types with the same setters, hence a macro).
macro_rules! object_options {
    ($sink:expr, $batch:expr, $req:expr) => {{
        let mut req = $req
            .content_type($sink.content_type($batch))
            .set_content_encoding($batch.content_encoding().map(str::to_string))
            .set_metadata(Some($sink.metadata($batch)))
            .set_server_side_encryption(
                $sink
                    .o
                    .server_side_encryption
                    .as_deref()
                    .map(ServerSideEncryption::from),
            )
            .set_ssekms_key_id($sink.o.kms_key_id.clone())
            .set_bucket_key_enabled($sink.o.bucket_key_enabled)
            .set_storage_class($sink.o.storage_class.as_deref().map(StorageClass::from))
            .set_tagging($sink.tagging())
            .set_checksum_algorithm($sink.checksum());
        if let Some((mode, until)) = $sink.lock_until() {
            req = req
                .object_lock_mode(mode)
                .object_lock_retain_until_date(until);
        }
        req
    }};
}

pub struct S3Sink {
    client: aws_sdk_s3::Client,
    o: S3Options,
}

impl S3Sink {
    /// Only `tls.ca_file` can fail here: credentials are looked up when first used.
    pub async fn new(o: S3Options) -> Result<S3Sink, TlsError> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(path) = &o.tls.ca_file {
            use aws_smithy_http_client::tls;
            let pem = crate::tls::read("tls.ca_file", path)?;
            // The platform's roots and the private CA, like the other sinks.
            let ctx = tls::TlsContext::builder()
                .with_trust_store(tls::TrustStore::default().with_pem_certificate(pem))
                .build()
                .map_err(|e| TlsError::Invalid {
                    option: "tls.ca_file",
                    path: path.clone(),
                    problem: e.to_string(),
                })?;
            let http = aws_smithy_http_client::Builder::new()
                .tls_provider(tls::Provider::Rustls(
                    tls::rustls_provider::CryptoMode::AwsLc,
                ))
                .tls_context(ctx)
                .build_https();
            loader = loader.http_client(http);
        }
        if let Some(r) = &o.region {
            loader = loader.region(aws_config::Region::new(r.clone()));
        }
        if let Some(StaticKeys { id, secret }) = &o.static_keys {
            loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
                id.clone(),
                secret.clone(),
                None,
                None,
                "logferry-config-file",
            ));
        }
        let base = loader.load().await;
        let mut b = aws_sdk_s3::config::Builder::from(&base)
            .retry_config(RetryConfig::disabled())
            .force_path_style(o.force_path_style);
        if let Some(e) = &o.endpoint {
            b = b.endpoint_url(e.clone());
        }
        if let Some(role) = &o.role_arn {
            let mut p = aws_config::sts::AssumeRoleProvider::builder(role.clone())
                .session_name(o.session_name.clone().unwrap_or_else(|| "logferry".into()));
            if let Some(x) = &o.external_id {
                p = p.external_id(x.clone());
            }
            b = b.credentials_provider(p.configure(&base).build().await);
        }
        Ok(S3Sink {
            client: aws_sdk_s3::Client::from_conf(b.build()),
            o,
        })
    }

    fn metadata(&self, batch: &SealedBatch) -> HashMap<String, String> {
        let mut m: HashMap<String, String> = self.o.metadata.iter().cloned().collect();
        m.insert("batch-id".into(), batch.meta.id.clone());
        m.insert("record-count".into(), batch.meta.record_count.to_string());
        m.insert("sha256".into(), batch.meta.sha256.clone());
        m.insert("first-time".into(), batch.meta.first_time.to_rfc3339());
        m.insert("last-time".into(), batch.meta.last_time.to_rfc3339());
        if let Some(k) = &batch.meta.key_id {
            m.insert("key-id".into(), k.clone());
        }
        if let Some(l) = &batch.meta.chain {
            for (k, v) in logferry_sink::batch::metadata(l) {
                m.insert(k.replace('_', "-"), v);
            }
        }
        m
    }

    /// The key ledger in this sink's bucket, on the same client.
    pub fn ledger_store(&self) -> crate::s3_ledger::S3Store {
        crate::s3_ledger::S3Store {
            client: self.client.clone(),
            bucket: self.o.bucket.clone(),
            lock: None,
        }
    }

    /// Where this sink's integrity digests go: its bucket, with the data's Object Lock
    /// retention (a digest must outlive nothing it vouches for).
    pub fn digest_store(&self) -> crate::s3_ledger::S3Store {
        crate::s3_ledger::S3Store {
            lock: self.o.object_lock.clone(),
            ..self.ledger_store()
        }
    }

    fn tagging(&self) -> Option<String> {
        if self.o.tags.is_empty() {
            return None;
        }
        Some(
            self.o
                .tags
                .iter()
                .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
                .collect::<Vec<_>>()
                .join("&"),
        )
    }

    fn checksum(&self) -> Option<ChecksumAlgorithm> {
        match self.o.checksum.as_deref() {
            Some("crc32c") => Some(ChecksumAlgorithm::Crc32C),
            Some("sha256") => Some(ChecksumAlgorithm::Sha256),
            // Object Lock requires an integrity checksum on every write.
            _ if self.o.object_lock.is_some() => Some(ChecksumAlgorithm::Sha256),
            _ => None,
        }
    }

    fn lock_until(&self) -> Option<(ObjectLockMode, aws_smithy_types::DateTime)> {
        let (mode, days) = self.o.object_lock.as_ref()?;
        let until = chrono::Utc::now() + chrono::Duration::days(*days as i64);
        Some((
            ObjectLockMode::from(mode.as_str()),
            aws_smithy_types::DateTime::from_secs(until.timestamp()),
        ))
    }

    fn content_type<'a>(&'a self, batch: &'a SealedBatch) -> &'a str {
        if batch.meta.key_id.is_some() {
            return "application/octet-stream";
        }
        self.o
            .content_type
            .as_deref()
            .unwrap_or(batch.content_type())
    }

    async fn put(&self, batch: &SealedBatch) -> Result<(), Outcome> {
        let mut req = self
            .client
            .put_object()
            .bucket(&self.o.bucket)
            .key(&batch.meta.key)
            .body(ByteStream::from(batch.payload.clone()));
        req = object_options!(self, batch, req);
        if self.o.never_overwrite {
            req = req.if_none_match("*");
        }
        self.written(batch, req.send().await).await
    }

    /// The answer to a write: with If-None-Match, 412 means the key is taken.
    async fn written<T, E: ProvideErrorMetadata + std::fmt::Debug>(
        &self,
        batch: &SealedBatch,
        res: Result<T, SdkError<E, aws_sdk_s3::config::http::HttpResponse>>,
    ) -> Result<(), Outcome> {
        match res {
            Ok(_) => Ok(()),
            Err(e) if status_of(&e) == Some(412) => Err(self.already_there(batch).await),
            Err(e) => Err(classify(&self.o.bucket, e)),
        }
    }

    /// The key was taken (If-None-Match): the same bytes there are this record again (a
    /// replay after a crash, a retry whose answer was lost); anything else is a collision.
    async fn already_there(&self, batch: &SealedBatch) -> Outcome {
        match self
            .client
            .head_object()
            .bucket(&self.o.bucket)
            .key(&batch.meta.key)
            .send()
            .await
        {
            Ok(h) => {
                let same = h
                    .metadata()
                    .and_then(|m| m.get("sha256"))
                    .is_some_and(|v| *v == batch.meta.sha256);
                if same {
                    Outcome::Delivered
                } else {
                    Outcome::Rejected {
                        reason: format!(
                            "a different object already exists at {:?} in bucket {:?}; it is kept, this record is set aside",
                            batch.meta.key, self.o.bucket
                        ),
                    }
                }
            }
            Err(e) => classify(&self.o.bucket, e),
        }
    }

    async fn multipart(&self, batch: &SealedBatch) -> Result<(), Outcome> {
        let mut req = self
            .client
            .create_multipart_upload()
            .bucket(&self.o.bucket)
            .key(&batch.meta.key);
        req = object_options!(self, batch, req);
        let created = req.send().await.map_err(|e| classify(&self.o.bucket, e))?;
        let Some(upload_id) = created.upload_id().map(str::to_string) else {
            return Err(Outcome::Retry {
                after: None,
                reason: "CreateMultipartUpload returned no upload id".into(),
            });
        };
        let res = self.upload_parts(batch, &upload_id).await;
        if res.is_err() {
            // Incomplete uploads are billed until aborted: clean up now, not by lifecycle rule.
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.o.bucket)
                .key(&batch.meta.key)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        res
    }

    async fn upload_parts(&self, batch: &SealedBatch, upload_id: &str) -> Result<(), Outcome> {
        let mut parts = Vec::new();
        let size = self.o.part_size.max(5 << 20) as usize;
        for (i, chunk) in batch.payload.chunks(size).enumerate() {
            let n = i as i32 + 1;
            let out = self
                .client
                .upload_part()
                .bucket(&self.o.bucket)
                .key(&batch.meta.key)
                .upload_id(upload_id)
                .part_number(n)
                .body(ByteStream::from(batch.payload.slice_ref(chunk)))
                .set_checksum_algorithm(self.checksum())
                .send()
                .await
                .map_err(|e| classify(&self.o.bucket, e))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(n)
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .set_checksum_crc32_c(out.checksum_crc32_c().map(str::to_string))
                    .set_checksum_sha256(out.checksum_sha256().map(str::to_string))
                    .build(),
            );
        }
        let mut req = self
            .client
            .complete_multipart_upload()
            .bucket(&self.o.bucket)
            .key(&batch.meta.key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            );
        if self.o.never_overwrite {
            req = req.if_none_match("*");
        }
        self.written(batch, req.send().await).await
    }
}

#[async_trait]
impl Sink for S3Sink {
    /// One object per batch at `batch.meta.key`. Multipart above `multipart_threshold`, with the
    /// upload aborted on any failure.
    async fn send(&self, batch: &SealedBatch) -> Outcome {
        let res = if batch.payload.len() as u64 > self.o.multipart_threshold {
            self.multipart(batch).await
        } else {
            self.put(batch).await
        };
        match res {
            Ok(()) => Outcome::Delivered,
            Err(o) => o,
        }
    }

    /// HeadBucket (reachable, exists, s3:ListBucket), then a tiny probe object written and
    /// deleted (s3:PutObject). Each failure names the permission or the missing bucket.
    async fn check(&self) -> Result<(), CheckError> {
        let bucket = &self.o.bucket;
        if let Err(e) = self.client.head_bucket().bucket(bucket).send().await {
            let status = e.raw_response().map(|r| r.status().as_u16());
            return Err(CheckError::new(match status {
                Some(404) => format!("bucket {bucket:?} does not exist (or is in another account)"),
                Some(403) => format!(
                    "access denied on HeadBucket: grant s3:ListBucket on arn:aws:s3:::{bucket}"
                ),
                _ => classify(bucket, e)
                    .reason()
                    .unwrap_or("unknown error")
                    .to_string(),
            }));
        }
        let probe = ".logferry-check";
        let put = self
            .client
            .put_object()
            .bucket(bucket)
            .key(probe)
            .body(ByteStream::from_static(b""))
            .set_checksum_algorithm(self.checksum())
            .send()
            .await;
        if let Err(e) = put {
            return Err(CheckError::new(match classify(bucket, e) {
                Outcome::Rejected { reason } if reason.contains("AccessDenied") => {
                    format!("cannot write: grant s3:PutObject on arn:aws:s3:::{bucket}/*")
                }
                o => format!(
                    "cannot write a probe object: {}",
                    o.reason().unwrap_or("unknown error")
                ),
            }));
        }
        // Best effort: a bucket with default retention keeps the (empty) probe.
        let _ = self
            .client
            .delete_object()
            .bucket(bucket)
            .key(probe)
            .send()
            .await;
        Ok(())
    }
}
