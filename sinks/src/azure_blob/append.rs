//! Append mode: batches of a rendered key appended to numbered append blobs, each as one Append
//! Block at the position the sink expects, so that no retry appends twice.

use std::sync::Arc;
use std::time::Duration;

use azure_core::http::{Etag, NoFormat, RequestContent, StatusCode};
use azure_storage_blob::models::{
    AppendBlobClientAppendBlockOptions, AppendBlobClientCreateOptions, BlobClientDownloadOptions,
    BlobClientGetPropertiesResultHeaders, BlobContainerClientListBlobsOptions, ListBlobsResponse,
};
use azure_storage_blob::BlobClient;
use bytes::Bytes;
use futures::StreamExt;

use super::{classify, error_code, is_container_missing, AzureBlobSink};
use crate::{Outcome, SealedBatch};

/// Azure's limit for one Append Block call (service versions 2022-11-02 and later).
const MAX_APPEND_BLOCK: u64 = 100 << 20;
/// Azure's limit of committed blocks in an append blob.
const MAX_APPEND_BLOCKS: u64 = 50_000;
/// Append blob series kept in memory; idle ones beyond this are forgotten (and found again
/// by listing if a key comes back).
const MAX_APPEND_KEYS: usize = 1024;

/// What the sink knows of the newest append blob of a key. `None` fields are unknown (after a
/// start, a roll-over or an ambiguous failure) and are read back before the next append.
#[derive(Default)]
pub(super) struct AppendState {
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
    pub(super) async fn send_append(&self, batch: &SealedBatch) -> Outcome {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
