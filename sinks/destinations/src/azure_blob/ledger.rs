//! The key ledger of an `azure_blob` sink: small block blobs in its container, written with
//! `If-None-Match: *` so that concurrent instances agree on one key per tenant-hour.
//!
//! Entries get no immutability policy: a ledger entry must stay deletable, or no hour could be
//! shredded. Under a container-level immutability policy the ledger belongs in another
//! container.

use async_trait::async_trait;
use azure_core::http::{Etag, NoFormat, RequestContent, StatusCode};
use azure_storage_blob::models::{
    BlobContainerClientListBlobsOptions, BlockBlobClientUploadOptions, ListBlobsResponse,
};
use bytes::Bytes;
use futures::StreamExt;

use super::{classify, AzureBlobSink, BlobError};
use logferry_sink::store::{LedgerStore, StoreError};

/// The ledger beside an Azure Blob sink's data (a client of its own on the same options).
pub struct BlobStore {
    sink: AzureBlobSink,
}

impl BlobStore {
    pub fn new(o: super::AzureBlobOptions) -> Result<Self, BlobError> {
        Ok(BlobStore {
            sink: AzureBlobSink::new(o)?,
        })
    }

    fn why(&self, what: &str, key: &str, e: &azure_core::Error) -> StoreError {
        let reason = classify(&self.sink.o.container, e)
            .reason()
            .unwrap_or("unknown error")
            .to_string();
        StoreError::failed(
            format!("{what} {key:?} in container {:?}", self.sink.o.container),
            reason,
        )
    }
}

/// A request the sink could not make (a URL it cannot build, a container it cannot create) is
/// the store failing: not a name that holds something planted.
impl From<BlobError> for StoreError {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::Url { cause } => StoreError::failed("invalid blob URL", cause),
            BlobError::CreateContainer { container, cause } => {
                StoreError::failed(format!("cannot create container {container:?}"), cause)
            }
            e => StoreError::failed("cannot make a blob client", e),
        }
    }
}

#[async_trait]
impl LedgerStore for BlobStore {
    async fn get(&self, key: &str, max: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let client = self.sink.client(key)?;
        match client.download(None).await {
            Ok(res) => {
                let too_large = |_| StoreError::too_large(format!("{key:?}"), max);
                let len = res.properties.content_length.unwrap_or(0);
                logferry_sink::capped::check(len, max).map_err(too_large)?;
                let b = res
                    .body
                    .collect()
                    .await
                    .map_err(|e| self.why("cannot read", key, &e))?;
                logferry_sink::capped::check(b.len() as u64, max).map_err(too_large)?;
                Ok(Some(b.to_vec()))
            }
            Err(e) if e.http_status() == Some(StatusCode::NotFound) => Ok(None),
            Err(e) => Err(self.why("cannot read", key, &e)),
        }
    }

    async fn put_new(&self, key: &str, bytes: &[u8]) -> Result<bool, StoreError> {
        let client = self.sink.client(key)?;
        let options = BlockBlobClientUploadOptions {
            blob_content_type: Some("application/json".into()),
            if_none_match: Some(Etag::from("*")),
            ..Default::default()
        };
        let body: RequestContent<Bytes, NoFormat> = Bytes::copy_from_slice(bytes).into();
        match client.block_blob_client().upload(body, Some(options)).await {
            Ok(_) => Ok(true),
            Err(e) if e.http_status() == Some(StatusCode::Conflict) => Ok(false),
            Err(e) if super::is_container_missing(&e) && self.sink.o.create_container => {
                self.sink.create().await?;
                Err(StoreError::Created {
                    place: format!("container {:?}", self.sink.o.container),
                })
            }
            Err(e) => Err(self.why("cannot write", key, &e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let client = self.sink.client(key)?;
        match client.delete(None).await {
            Ok(_) => Ok(()),
            Err(e) if e.http_status() == Some(StatusCode::NotFound) => Ok(()),
            Err(e) => Err(self.why("cannot delete", key, &e)),
        }
    }

    async fn list_modified(
        &self,
        prefix: &str,
    ) -> Result<Vec<logferry_sink::store::Listed>, StoreError> {
        let c = self.sink.container_client(self.sink.token())?;
        let pager = c
            .list_blobs(Some(BlobContainerClientListBlobsOptions {
                prefix: Some(prefix.to_owned()),
                ..Default::default()
            }))
            .map_err(|e| self.why("cannot list", prefix, &e))?;
        let mut pages = pager.into_pages();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.why("cannot list", prefix, &e))?;
            let list: ListBlobsResponse = page
                .into_model()
                .map_err(|e| self.why("cannot list", prefix, &e))?;
            out.extend(list.blob_items.into_iter().filter_map(|i| {
                let modified = i.properties.and_then(|p| p.last_modified).and_then(|t| {
                    chrono::DateTime::from_timestamp(t.unix_timestamp(), t.nanosecond())
                });
                i.name.map(|n| (n, modified))
            }));
        }
        out.sort();
        Ok(out)
    }
}
