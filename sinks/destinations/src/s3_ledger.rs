//! The key ledger of an `s3` sink: small objects in its bucket, written with
//! `If-None-Match: *` so that concurrent instances agree on one key per tenant-hour.
//!
//! Entries get no Object Lock settings even when the data does: a ledger entry must stay
//! deletable, or no hour could ever be shredded. Under a bucket whose *default* retention locks
//! every object, the ledger belongs in another bucket.

use async_trait::async_trait;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;

use logferry_sink::capped;
use logferry_sink::store::{LedgerStore, StoreError};

pub struct S3Store {
    pub(crate) client: aws_sdk_s3::Client,
    pub(crate) bucket: String,
    /// Object Lock (mode, days) for what is written: digests get the data's, ledger entries none.
    pub(crate) lock: Option<(String, u32)>,
}

/// What a 403 on the ledger means: a permission the identity lacks.
const DENIED: &str = "access denied (the ledger needs s3:GetObject, s3:PutObject, s3:DeleteObject, s3:DeleteObjectVersion, s3:ListBucket and s3:ListBucketVersions)";

fn explain<E: ProvideErrorMetadata + std::fmt::Debug>(
    what: &str,
    key: &str,
    bucket: &str,
    e: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> StoreError {
    let status = e.raw_response().map(|r| r.status().as_u16());
    let code = e.code().unwrap_or("");
    let what = format!("{what} {key:?} in bucket {bucket:?}");
    match status {
        Some(403) => StoreError::failed(what, DENIED),
        Some(s) => StoreError::failed(what, format!("S3 {s} {code}")),
        None => StoreError::failed(what, e),
    }
}

impl S3Store {
    /// Every page of a listing under `prefix` (with `delimiter`, folders come as common
    /// prefixes), handed to `each` in order.
    async fn pages(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        mut each: impl FnMut(&aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output),
    ) -> Result<(), StoreError> {
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_delimiter(delimiter.map(str::to_owned))
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| explain("cannot list", prefix, &self.bucket, &e))?;
            each(&page);
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_owned()),
                _ => return Ok(()),
            }
        }
    }
}

#[async_trait]
impl LedgerStore for S3Store {
    async fn get(&self, key: &str, max: u64) -> Result<Option<Vec<u8>>, StoreError> {
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(o) => {
                use tokio::io::AsyncReadExt;
                let too_large = |_| StoreError::too_large(format!("{key:?}"), max);
                let len = o.content_length().unwrap_or(0).max(0) as u64;
                capped::check(len, max).map_err(too_large)?;
                // Read to the bound and no further, whatever the length announced.
                let mut b = Vec::with_capacity(len as usize);
                o.body
                    .into_async_read()
                    .take(max.saturating_add(1))
                    .read_to_end(&mut b)
                    .await
                    .map_err(|e| StoreError::failed(format!("cannot read {key:?}"), e))?;
                capped::check(b.len() as u64, max).map_err(too_large)?;
                Ok(Some(b))
            }
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(None),
            Err(e) => Err(explain("cannot read", key, &self.bucket, &e)),
        }
    }

    async fn put_new(&self, key: &str, bytes: &[u8]) -> Result<bool, StoreError> {
        let res = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/json")
            .if_none_match("*")
            .body(ByteStream::from(bytes.to_vec()));
        let res = match &self.lock {
            Some((mode, days)) => {
                let until = chrono::Utc::now() + chrono::Duration::days(i64::from(*days));
                res.object_lock_mode(aws_sdk_s3::types::ObjectLockMode::from(mode.as_str()))
                    .object_lock_retain_until_date(aws_smithy_types::DateTime::from_secs(
                        until.timestamp(),
                    ))
                    .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
            }
            None => res,
        };
        let res = res.send().await;
        match res {
            Ok(_) => Ok(true),
            // 412: the name is taken; 409: a concurrent conditional write is in progress.
            Err(e)
                if e.raw_response()
                    .is_some_and(|r| matches!(r.status().as_u16(), 409 | 412)) =>
            {
                Ok(false)
            }
            Err(e) => Err(explain("cannot write", key, &self.bucket, &e)),
        }
    }

    /// Every version of the entry goes, delete markers too: in a versioned bucket (which
    /// Object Lock requires) a plain delete only hides the entry, and the key would stay
    /// readable by its version id.
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let mut versions: Vec<String> = Vec::new();
        let (mut key_marker, mut version_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let page = self
                .client
                .list_object_versions()
                .bucket(&self.bucket)
                .prefix(key)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
                .map_err(|e| explain("cannot list the versions of", key, &self.bucket, &e))?;
            let ours = |k: Option<&str>| k == Some(key);
            versions.extend(
                page.versions()
                    .iter()
                    .filter(|v| ours(v.key()))
                    .filter_map(|v| v.version_id().map(str::to_owned)),
            );
            versions.extend(
                page.delete_markers()
                    .iter()
                    .filter(|m| ours(m.key()))
                    .filter_map(|m| m.version_id().map(str::to_owned)),
            );
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            version_marker = page.next_version_id_marker().map(str::to_owned);
        }
        if versions.is_empty() {
            versions.push(String::new());
        }
        for v in versions {
            let mut req = self.client.delete_object().bucket(&self.bucket).key(key);
            if !v.is_empty() {
                req = req.version_id(v);
            }
            req.send()
                .await
                .map_err(|e| explain("cannot delete", key, &self.bucket, &e))?;
        }
        Ok(())
    }

    async fn folders(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        self.pages(prefix, Some("/"), |page| {
            out.extend(page.common_prefixes().iter().filter_map(|p| {
                let f = p.prefix()?.strip_prefix(prefix)?.strip_suffix('/')?;
                (!f.is_empty()).then(|| f.to_owned())
            }));
        })
        .await?;
        out.sort();
        Ok(out)
    }

    async fn list_modified(
        &self,
        prefix: &str,
    ) -> Result<Vec<logferry_sink::store::Listed>, StoreError> {
        let mut out = Vec::new();
        self.pages(prefix, None, |page| {
            out.extend(page.contents().iter().filter_map(|o| {
                let modified = o
                    .last_modified()
                    .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos()));
                o.key().map(|k| (k.to_owned(), modified))
            }));
        })
        .await?;
        out.sort();
        Ok(out)
    }
}
