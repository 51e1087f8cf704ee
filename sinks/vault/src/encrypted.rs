//! Client-side envelope encryption in front of an object sink.
//!
//! Each batch holds one tenant's records of one UTC hour (the batcher partitions by both). Its
//! stored bytes, already compressed, are encrypted under that tenant-hour's data key
//! (`crypt::encrypt_batch`), the key id goes into the object's metadata, and `.lfenc` is added
//! to its key. Each object gets a key of its own, derived from a salt that covers every byte
//! sealed: a retry of the same bytes writes the same object, and no two different objects
//! share a key and nonce. Like every sink it runs no retry loop: a data key it cannot have (a
//! ledger it cannot reach, a bad ledger entry, a KEK provider that refuses a tenant) is
//! `Parked` for the pipeline, which sets aside that tenant-hour's batches ([`Sink::scope`])
//! and goes on with the others.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::keys::{hour_of, KeyRing};
use logferry_sink::{BatchMeta, CheckError, Outcome, SealedBatch, Sink};

/// Added to an encrypted object's key.
pub const SUFFIX: &str = ".lfenc";
/// The tenant of records without the tenant field.
pub const NO_TENANT: &str = "_unknown";

pub struct EncryptedSink {
    inner: Arc<dyn Sink>,
    keys: Arc<KeyRing>,
    segment_size: u32,
}

impl EncryptedSink {
    pub fn new(inner: Arc<dyn Sink>, keys: Arc<KeyRing>, segment_size: u32) -> Self {
        EncryptedSink {
            inner,
            keys,
            segment_size,
        }
    }
}

#[async_trait]
impl Sink for EncryptedSink {
    async fn send(&self, batch: &SealedBatch) -> Outcome {
        let tenant = batch.meta.tenant.as_deref().unwrap_or(NO_TENANT);
        let hour = hour_of(batch.meta.first_time);
        let key = match self.keys.key_for(tenant, &hour).await {
            Ok(k) => k,
            // This tenant-hour's only: the others' batches go on meanwhile.
            Err(e) => {
                return Outcome::Parked {
                    after: None,
                    reason: format!("no data key for tenant {tenant:?} hour {hour}: {e}"),
                }
            }
        };
        let (k, id, payload, seg) = (
            key.clone(),
            batch.meta.id.clone(),
            batch.payload.clone(),
            self.segment_size,
        );
        let sealed = if payload.len() <= crate::crypt::INLINE_BYTES {
            Ok(crate::crypt::encrypt_batch(&k, &id, &payload, seg))
        } else {
            tokio::task::spawn_blocking(move || crate::crypt::encrypt_batch(&k, &id, &payload, seg))
                .await
        };
        let bytes = match sealed {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                return Outcome::Retry {
                    after: None,
                    reason: format!("cannot encrypt: {e}"),
                }
            }
            Err(e) => {
                return Outcome::Retry {
                    after: None,
                    reason: format!("encryption task failed: {e}"),
                }
            }
        };
        let mut meta = batch.meta.clone();
        meta.key.push_str(SUFFIX);
        meta.key_id = Some(key.id.clone());
        self.inner
            .send(&SealedBatch {
                meta,
                payload: Bytes::from(bytes),
            })
            .await
    }

    /// The tenant-hour whose data key the batch needs, as `send` computes it.
    fn scope(&self, meta: &BatchMeta) -> Option<String> {
        let tenant = meta.tenant.as_deref().unwrap_or(NO_TENANT);
        Some(format!("{}@{}", tenant, hour_of(meta.first_time)))
    }

    async fn check(&self) -> Result<(), CheckError> {
        self.inner.check().await?;
        self.keys
            .list(Some("_check"))
            .await
            .map(|_| ())
            .map_err(|e| CheckError::new(format!("the key ledger cannot be read: {e}")))
    }
}
