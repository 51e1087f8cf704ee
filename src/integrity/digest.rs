//! The digester: turns a stream's journal into signed digests in the archive, one per UTC hour
//! (and one for the part of an hour before a shutdown), empty hours included, so that silence
//! is provable. Each digest names the previous one's hash and signature.
//!
//! Order of writes, so that a crash at any point repeats work instead of losing or forking it:
//! the digest object (create-new), then `state.json`, then the journal without its entries. A
//! digest found already at its name is adopted when this stream signed it for the same period.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use logferry_sinks::chain::{self, DigestBody, Entry};
use logferry_sinks::chained::{parse_time, Journal};
use logferry_sinks::ledger_store::LedgerStore;
use logferry_sinks::signing::SigningKey;
use tokio::sync::watch;
use tracing::{error, info};

use super::{read_state, write_state};

pub struct Digester {
    pub sink: String,
    pub stream: String,
    pub dir: PathBuf,
    pub store: Arc<dyn LedgerStore>,
    pub prefix: String,
    pub signer: Arc<SigningKey>,
    pub journal: Arc<Journal>,
}

fn hour_start(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::hours(1)).unwrap_or(t)
}

impl Digester {
    /// Writes the digests of everything from the end of the last one up to `to`, split at
    /// hour boundaries. Returns how many were written.
    pub async fn close(&self, to: DateTime<Utc>) -> Result<usize, String> {
        let dir = self.dir.clone();
        let mut state = tokio::task::spawn_blocking(move || read_state(&dir))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("{e:#}"))?
            .ok_or_else(|| format!("no integrity state in {}", self.dir.display()))?;
        let mut from = parse_time(&state.covered_to)
            .ok_or_else(|| format!("{}: covered_to is not a time", self.dir.display()))?;
        if to <= from {
            return Ok(0);
        }
        let (entries, bad) = self.journal.take(to).await?;
        if bad > 0 {
            // A torn last line: its batch is still spooled and is recorded when it is replayed.
            info!(sink = %self.sink, lines = bad, "skipped unreadable journal lines (a crash mid-write)");
        }
        let mut pending: Vec<(DateTime<Utc>, Entry)> = entries
            .into_iter()
            .filter_map(|e| parse_time(&e.delivered_at).map(|t| (t, e)))
            .filter(|(t, _)| *t >= from)
            .collect();
        let public = hex::decode(self.signer.public_hex()).map_err(|e| e.to_string())?;
        let key_id = chain::sha256_hex(&public);
        let mut written = 0;
        while from < to {
            let end = to.min(hour_start(from) + TimeDelta::hours(1));
            let mut these: Vec<Entry> = Vec::new();
            pending.retain(|(t, e)| {
                let inside = *t < end;
                if inside {
                    these.push(e.clone());
                }
                !inside
            });
            these.sort_by_key(|e| e.seq);
            // A replayed delivery recorded twice lists once.
            these.dedup_by_key(|e| e.seq);
            let body = DigestBody {
                version: 1,
                stream: self.stream.clone(),
                sink: self.sink.clone(),
                from: chain::time_text(from),
                to: chain::time_text(end),
                first_seq: these.first().map(|e| e.seq),
                last_seq: these.last().map(|e| e.seq),
                entries: these,
                previous: state.last.clone(),
                public_key_sha256: key_id.clone(),
                created_at: chain::time_text(Utc::now()),
            };
            let key = chain::digest_key(&self.prefix, &self.stream, from);
            let (bytes, mut prev) = chain::render_digest(&body, &self.signer)?;
            let mut covered = (end, body.entries);
            if !self.store.put_new(&key, &bytes).await? {
                covered = self.adopt(&key, &public, &body.from, &mut prev).await?;
            }
            prev.key = key;
            if let Some(e) = covered.1.iter().max_by_key(|e| e.seq) {
                if e.seq > state.head_seq {
                    (state.head_seq, state.head_hash) = (e.seq, e.hash.clone());
                }
            }
            state.last = Some(prev);
            state.covered_to = chain::time_text(covered.0);
            let (dir, s) = (self.dir.clone(), state.clone());
            tokio::task::spawn_blocking(move || write_state(&dir, &s))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("cannot write {}: {e}", self.dir.display()))?;
            from = covered.0;
            written += 1;
        }
        self.journal.drop_before(from).await?;
        Ok(written)
    }

    /// A digest is already at `key`: ours from an attempt that crashed before its state was
    /// written (same stream, same start, our signature), or not something to build on.
    async fn adopt(
        &self,
        key: &str,
        public: &[u8],
        from: &str,
        prev: &mut chain::PrevDigest,
    ) -> Result<(DateTime<Utc>, Vec<Entry>), String> {
        let bytes = self
            .store
            .get(key, chain::MAX_DIGEST)
            .await?
            .ok_or_else(|| format!("digest {key} vanished while being read"))?;
        let f = chain::parse_digest(&bytes).map_err(|e| format!("{key}: {e}"))?;
        if !f.signed_by(public) || f.body.stream != self.stream || f.body.from != from {
            return Err(format!(
                "{key} exists and is not this stream's digest for the period from {from}: not overwritten; move it away to continue"
            ));
        }
        let to = parse_time(&f.body.to).ok_or_else(|| format!("{key}: `to` is not a time"))?;
        *prev = chain::PrevDigest {
            key: String::new(),
            sha256: f.sha256,
            signature: f.signature.signature,
        };
        Ok((to, f.body.entries))
    }

    /// Closes each hour as it ends (and the hours that passed while logferry was stopped),
    /// until `stop` turns true or its sender goes.
    pub async fn run(self: Arc<Self>, limit: Duration, mut stop: watch::Receiver<bool>) {
        loop {
            let now = Utc::now();
            self.close_logged(hour_start(now), limit).await;
            let next = hour_start(now) + TimeDelta::hours(1);
            let wait = (next - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// `close`, given up after `limit` (a store that never answers), with the outcome logged.
    pub async fn close_logged(&self, to: DateTime<Utc>, limit: Duration) -> bool {
        let res = match tokio::time::timeout(limit, self.close(to)).await {
            Ok(r) => r,
            Err(_) => Err(format!("the archive did not answer within {limit:?}")),
        };
        match res {
            Ok(0) => true,
            Ok(n) => {
                info!(sink = %self.sink, stream = %self.stream, digests = n, "signed digests written");
                true
            }
            Err(e) => {
                error!(sink = %self.sink, stream = %self.stream, error = %e, "cannot write the integrity digests; trying again at the next hour");
                false
            }
        }
    }
}
