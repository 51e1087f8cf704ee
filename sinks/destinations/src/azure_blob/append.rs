//! Append mode: batches of a rendered key appended to numbered append blobs, each as one Append
//! Block at the position the sink expects, so that no retry appends twice.

use std::sync::Arc;
use std::time::Duration;

use azure_core::http::request::options::ClientRequestId;
use azure_core::http::{Etag, NoFormat, RequestContent, StatusCode};
use azure_storage_blob::models::{
    AppendBlobClientAppendBlockOptions, AppendBlobClientCreateOptions, BlobClientDownloadOptions,
    BlobClientGetPropertiesResultHeaders, BlobContainerClientListBlobsOptions, ListBlobsResponse,
};
use azure_storage_blob::BlobClient;
use bytes::Bytes;
use futures::StreamExt;

use super::tails::{MAX_TAIL_BYTES, START_TAIL};
use super::{classify, error_code, is_container_missing, AzureBlobSink};
use logferry_sink::{Outcome, SealedBatch};

/// Azure's limit for one Append Block call (service versions 2022-11-02 and later).
const MAX_APPEND_BLOCK: u64 = 100 << 20;
/// Attempts remembered as "may have landed"; more and the oldest are let go.
pub(super) const MAX_UNCERTAIN: usize = 4096;
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
}

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
    /// No retry appends twice: before each append the blob and offset are recorded as "may
    /// have landed", so an attempt that the delivery loop cancels at its timeout, loses its
    /// response or gets a 5xx is checked at the next attempt by comparing the bytes there.
    /// Batches sealed before this process started may have been appended by the previous one
    /// just before a crash: they are looked up in the blob's tail as it was at start.
    ///
    /// Like every sink it makes one attempt and returns an [`Outcome`]: a moved end (412), a
    /// full blob or a blob that appeared meanwhile is a `Retry` with no wait, and the one
    /// delivery loop tries again; it sets no timer of its own.
    pub(super) async fn send_append(&self, batch: &SealedBatch) -> Outcome {
        let plen = batch.payload.len() as u64;
        if plen > MAX_APPEND_BLOCK {
            return Outcome::TooLarge {
                reason: format!("{plen} bytes is over Azure's 100 MiB append block limit"),
            };
        }
        let id = &batch.meta.id;
        let replay = sealed_before(id, self.started_ms);
        let state = self.append_state(&batch.meta.key);
        let mut st = state.lock().await;
        let (stem, ext) = split_ext(&batch.meta.key);
        if let Some((name, offset)) = self.pending(id) {
            match self.landed_at(&name, offset, &batch.payload).await {
                Ok(true) => {
                    self.settle(id);
                    return Outcome::Delivered;
                }
                Ok(false) => {}
                Err(o) => return o,
            }
        }
        let mut seq = match st.seq {
            Some(s) => s,
            None => match self.newest_seq(&stem, &ext).await {
                Ok(s) => *st.seq.insert(s.max(1)),
                Err(o) => return o,
            },
        };
        let (mut name, mut client, mut len) =
            match self.open_blob(&stem, &ext, seq, batch, &mut st).await {
                Ok(t) => t,
                Err(o) => return o,
            };
        if replay && self.tails.found(&batch.meta.key, &batch.payload) {
            tracing::info!(batch = %id, blob = %name, "batch from before the restart is already in the append blob");
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
            seq += 1;
            *st = AppendState {
                seq: Some(seq),
                ..Default::default()
            };
            (name, client, len) = match self.open_blob(&stem, &ext, seq, batch, &mut st).await {
                Ok(t) => t,
                Err(o) => return o,
            };
        }
        // Recorded before the call: if this attempt is cancelled (the delivery timeout, a
        // shutdown) after the request left, the next attempt looks here first.
        self.remember(id, &name, len);
        let mut options = AppendBlobClientAppendBlockOptions {
            append_position: Some(len as i64),
            ..Default::default()
        };
        // The batch id as the request id: Azure's storage logs then say which batch each
        // Append Block carried (and how often), which an audit of the archive can check.
        options
            .method_options
            .context
            .insert(ClientRequestId::new(format!("logferry-{id}")));
        let body: RequestContent<Bytes, NoFormat> = batch.payload.clone().into();
        let res = client
            .append_blob_client()
            .append_block(body, plen, Some(options))
            .await;
        let again = |reason: String| Outcome::Retry {
            after: Some(Duration::ZERO),
            reason,
        };
        match res {
            Ok(_) => {
                st.len = Some(len + plen);
                st.blocks += 1;
                if !replay {
                    // The backlog from before the start has been sent.
                    self.tails.forget(&batch.meta.key);
                }
                self.settle(id);
                Outcome::Delivered
            }
            // Not at the expected end (another writer, or an attempt of ours that landed
            // late): the next attempt reads the length back and looks at our offset first.
            Err(e) if e.http_status() == Some(StatusCode::PreconditionFailed) => {
                st.len = None;
                again(format!(
                    "the end of append blob {name:?} moved; reading it again"
                ))
            }
            Err(e) if error_code(&e) == "BlockCountExceedsLimit" => {
                self.settle(id);
                *st = AppendState {
                    seq: Some(seq + 1),
                    ..Default::default()
                };
                again(format!("append blob {name:?} is full; rolling over"))
            }
            Err(e) if error_code(&e) == "BlobNotFound" => {
                self.settle(id);
                st.len = None;
                again(format!("append blob {name:?} went away; creating it again"))
            }
            Err(e) => {
                let outcome = classify(&self.o.container, &e);
                if !matches!(outcome, Outcome::Retry { .. } | Outcome::Throttled { .. }) {
                    // Refused outright: nothing landed.
                    self.settle(id);
                }
                st.len = None;
                outcome
            }
        }
    }

    /// The client and known length of roll `seq` of a key, reading it back (or creating it)
    /// when the length is not known.
    async fn open_blob(
        &self,
        stem: &str,
        ext: &str,
        seq: u32,
        batch: &SealedBatch,
        st: &mut AppendState,
    ) -> Result<(String, BlobClient, u64), Outcome> {
        let name = format!("{stem}-{seq:05}{ext}");
        let client = self.client(&name).map_err(|e| Outcome::Rejected {
            reason: e.to_string(),
        })?;
        let len = match st.len {
            Some(l) => l,
            None => self.read_back(&client, &name, batch, st).await?,
        };
        Ok((name, client, len))
    }

    pub(super) fn pending(&self, id: &str) -> Option<(String, u64)> {
        self.uncertain
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    pub(super) fn remember(&self, id: &str, name: &str, offset: u64) {
        let mut u = self.uncertain.lock().unwrap_or_else(|p| p.into_inner());
        // The newest attempt replaces an older one: a new attempt is only made after the old
        // offset was found without the batch, and either the end was still there (same
        // offset) or something else took it (the old attempt can no longer land).
        u.insert(id.to_string(), (name.to_string(), offset));
        // Entries go when their batch settles; a batch dead-lettered after a failed attempt
        // never does. Batch ids are UUIDv7, so the smallest is the oldest: let those go first
        // (a batch still retrying after thousands of newer ones is long dead-lettered).
        while u.len() > MAX_UNCERTAIN {
            u.pop_first();
        }
    }

    fn settle(&self, id: &str) {
        self.uncertain
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// Whether `payload` sits at `offset` in blob `name`.
    async fn landed_at(&self, name: &str, offset: u64, payload: &Bytes) -> Result<bool, Outcome> {
        let client = self.client(name).map_err(|e| Outcome::Rejected {
            reason: e.to_string(),
        })?;
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
            .map_err(|e| Outcome::Rejected {
                reason: e.to_string(),
            })?;
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
                    let from = len.saturating_sub(START_TAIL.min(MAX_TAIL_BYTES));
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
                    self.tails.keep(&batch.meta.key, tail);
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
