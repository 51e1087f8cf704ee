//! The spool stage's entry: collects a sealed batch's compressed blocks and makes it durable.
//!
//! A failure here (a full disk, a failed compression) is never a drop: the batch and its holds
//! stay with the writer, which tries again with backoff, counts each failure and reports the
//! spool as failing in `/readyz`. Meanwhile it takes no new batch, so the sources pause on the
//! bounded channel (back-pressure), and it resumes by itself once a write succeeds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use logferry_sink::{BatchMeta, Compression};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use super::{PushError, Spool};
use crate::ack::Hold;
use crate::backoff::Backoff;
use crate::batch::PendingBatch;
use crate::encode::{Block, BlockError};
use crate::ops::health::Health;
use crate::shutdown::Phase;

const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

pub struct Writer {
    pub sink: String,
    pub rx: mpsc::Receiver<PendingBatch>,
    pub spool: Arc<Spool>,
    /// Compressed/uncompressed ratio, shared with the batchers (f64 bits).
    pub ratio: Arc<AtomicU64>,
    pub level: Option<i32>,
    pub sealed: Counter,
    pub failures: Counter,
    pub health: Arc<Health>,
    /// The shutdown deadline: stop retrying, leave the records unacknowledged.
    pub shutdown: crate::shutdown::Shutdown,
    /// The integrity stream's head: each batch is linked to it as it is sealed.
    pub chain: Option<Arc<crate::integrity::Head>>,
}

/// The shutdown deadline passed while retrying.
struct Abandoned;

impl Writer {
    pub async fn run(mut self) {
        while let Some(pb) = self.rx.recv().await {
            if self.write(pb).await.is_err() {
                break;
            }
        }
        self.spool.close();
    }

    async fn write(&mut self, pb: PendingBatch) -> Result<(), Abandoned> {
        let PendingBatch {
            mut meta,
            blocks,
            holds,
        } = pb;
        let mut parts = Vec::with_capacity(blocks.len());
        for b in blocks {
            let bytes = match b.await {
                Ok(Ok(Block { bytes, payload })) => {
                    if let Some(p) = payload {
                        meta.sha256 = p.sha256;
                        meta.uncompressed_bytes = p.len;
                    }
                    bytes
                }
                Ok(Err(BlockError { error, .. })) if meta.encoding.is_whole() => {
                    // Not a passing failure: the holds stay unreleased, so the records are
                    // read again at the next start.
                    self.count(&error);
                    error!(sink = %self.sink, batch = %meta.id, %error, "cannot build a batch's payload; the batch is read again at the next start");
                    return Ok(());
                }
                Ok(Err(BlockError { error, raw })) => {
                    // Compressed again here, off the shared pool: only this sink pauses,
                    // and its health and failure count show it (docs/architecture.md).
                    self.failed(&meta.id, "cannot compress a block", &error);
                    self.compress_again(meta.compression, raw).await?
                }
                Err(_) => {
                    // Only a panicking compression thread drops its reply, and a panic ends
                    // the process; the holds stay unreleased, so the records are read again.
                    error!(sink = %self.sink, batch = %meta.id, "a compression thread stopped; the batch is read again at the next start");
                    return Ok(());
                }
            };
            parts.push(Bytes::from(bytes));
        }
        if meta.sha256.is_empty() {
            // The envelope's head was rendered at seal, after the records' digest began: take
            // the whole payload's digest from the blocks (off the runtime's threads).
            let (c, p) = (meta.compression, parts.clone());
            match tokio::task::spawn_blocking(move || payload_digest(c, &p)).await {
                Ok(Ok(d)) => meta.sha256 = d,
                Ok(Err(e)) => {
                    self.failed(&meta.id, "cannot read back a compressed block", &e);
                    return Ok(());
                }
                Err(_) => return Ok(()),
            }
        }
        let total: usize = parts.iter().map(Bytes::len).sum();
        if meta.uncompressed_bytes > 0 {
            let r = total as f64 / meta.uncompressed_bytes as f64;
            let old = f64::from_bits(self.ratio.load(Ordering::Relaxed));
            self.ratio
                .store((old * 0.5 + r * 0.5).to_bits(), Ordering::Relaxed);
        }
        if let Some(head) = &self.chain {
            // Once per batch, before the first write: a retried write keeps its link.
            match head.link(&meta, &parts).await {
                Ok(link) => meta.chain = Some(link),
                Err(e) => {
                    self.failed(&meta.id, "cannot hash a sealed batch", &e);
                    return Ok(());
                }
            }
        }
        self.sealed.inc();
        self.push(meta, parts, holds).await
    }

    async fn push(
        &mut self,
        mut meta: BatchMeta,
        mut parts: Vec<Bytes>,
        mut holds: Vec<Hold>,
    ) -> Result<(), Abandoned> {
        let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX, fastrand::Rng::new());
        let mut failures = 0u32;
        loop {
            let spool = self.spool.clone();
            let res = tokio::select! {
                r = spool.push_parts(meta, parts, holds) => r,
                _ = self.shutdown.wait(Phase::Abandon) => return Err(Abandoned),
            };
            match res {
                Ok(()) => {
                    if failures > 0 {
                        info!(sink = %self.sink, failures, "spool writes succeed again; resuming");
                        self.health.spool_ok(&self.sink);
                    }
                    return Ok(());
                }
                Err(PushError {
                    error,
                    meta: m,
                    parts: p,
                    holds: h,
                }) => {
                    (meta, parts, holds) = (m, p, h);
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(20) {
                        self.failed(&meta.id, "cannot write a batch to the spool", &error);
                    } else {
                        self.count(&error);
                    }
                    self.pause(backoff.next_delay()).await?;
                }
            }
        }
    }

    async fn compress_again(&mut self, c: Compression, raw: Vec<u8>) -> Result<Vec<u8>, Abandoned> {
        let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX, fastrand::Rng::new());
        let raw = Arc::new(raw);
        loop {
            self.pause(backoff.next_delay()).await?;
            let (input, level) = (raw.clone(), self.level);
            let out =
                tokio::task::spawn_blocking(move || crate::encode::compress(c, level, &input))
                    .await
                    .map_err(std::io::Error::other)
                    .and_then(|r| r);
            match out {
                Ok(b) => {
                    self.health.spool_ok(&self.sink);
                    return Ok(b);
                }
                Err(e) => self.count(&e),
            }
        }
    }

    fn count(&self, e: &std::io::Error) {
        self.failures.inc();
        self.health.spool_failing(&self.sink, &e.to_string());
    }

    fn failed(&self, batch: &str, what: &str, e: &std::io::Error) {
        self.count(e);
        warn!(sink = %self.sink, %batch, error = %e, "{what}; sources pause and the write is retried (logged on the first and every 20th failure, counted in spool_write_failures_total)");
    }

    async fn pause(&mut self, d: Duration) -> Result<(), Abandoned> {
        tokio::select! {
            _ = tokio::time::sleep(d) => Ok(()),
            _ = self.shutdown.wait(Phase::Abandon) => Err(Abandoned),
        }
    }
}

/// SHA-256 (hex) of the uncompressed payload whose compressed blocks are `parts`.
fn payload_digest(c: Compression, parts: &[Bytes]) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        if c == Compression::None {
            h.update(p);
        } else {
            h.update(crate::encode::decompress(c, p)?);
        }
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_digest_of_blocks_is_the_digest_of_the_whole_payload() {
        use sha2::{Digest, Sha256};
        let c = logferry_sink::Compression::Gzip;
        let parts: Vec<bytes::Bytes> = [&b"{\"head\":"[..], b"[1,2]", b"}"]
            .iter()
            .map(|p| bytes::Bytes::from(crate::encode::compress(c, None, p).unwrap()))
            .collect();
        assert_eq!(
            super::payload_digest(c, &parts).unwrap(),
            hex::encode(Sha256::digest(b"{\"head\":[1,2]}"))
        );
    }
}
