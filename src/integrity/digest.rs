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

use crate::integrity::Journal;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use logferry_integrity::chain::{self, DigestBody, Entry};
use logferry_integrity::chained::parse_time;
use logferry_integrity::signing::SigningKey;
use logferry_sink::store::LedgerStore;
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::{read_state, write_state};

pub struct Digester {
    pub sink: String,
    pub stream: String,
    pub dir: PathBuf,
    pub store: Arc<dyn LedgerStore>,
    pub prefix: String,
    pub signer: Arc<SigningKey>,
    pub journal: Arc<Journal>,
    pub written: prometheus_client::metrics::counter::Counter,
    pub failures: prometheus_client::metrics::counter::Counter,
    /// One close at a time per stream, in the whole process: the hourly one and the one at
    /// stop can meet at an hour's end, and a reloaded pipeline's with the old one's ([`gate`]).
    pub gate: Arc<tokio::sync::Mutex<()>>,
}

/// The process-wide gate of the stream whose state is in `dir`.
pub fn gate(dir: &std::path::Path) -> Arc<tokio::sync::Mutex<()>> {
    static GATES: std::sync::Mutex<
        std::collections::BTreeMap<PathBuf, Arc<tokio::sync::Mutex<()>>>,
    > = std::sync::Mutex::new(std::collections::BTreeMap::new());
    let mut g = GATES.lock().unwrap_or_else(|p| p.into_inner());
    g.entry(dir.to_path_buf()).or_default().clone()
}

fn hour_start(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::hours(1)).unwrap_or(t)
}

impl Digester {
    /// Writes the digests of everything from the end of the last one up to `to`, split at
    /// hour boundaries; the last is marked closed by a stop when `stop`. Returns how many were
    /// written.
    pub async fn close(&self, to: DateTime<Utc>, stop: bool) -> Result<usize, String> {
        let _one = self.gate.lock().await;
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
                closed_by: Some(if stop && end == to { "stop" } else { "hour" }.into()),
            };
            let (bytes, mut prev) =
                chain::render_digest(&body, &self.signer).map_err(|e| e.to_string())?;
            let mut covered = None;
            let mut key = String::new();
            // Its own name, or the next free one when something else holds it: a name planted
            // in the archive cannot stop digests (verify reports the suffixed name).
            for n in 0..=chain::MAX_DIGEST_SUFFIX {
                key = chain::digest_key_n(&self.prefix, &self.stream, from, n);
                if self
                    .store
                    .put_new(&key, &bytes)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    covered = Some((end, body.entries.clone()));
                    break;
                }
                if let Some(ours) = self.adopt(&key, &public, &body.from, &mut prev).await? {
                    covered = Some(ours);
                    break;
                }
                warn!(sink = %self.sink, stream = %self.stream, key = %key, "a digest's name is taken by something logferry did not write; writing it under the next name");
            }
            let covered = covered.ok_or_else(|| {
                format!("{key} and every other name of this digest are taken by files logferry did not write: move them away to continue")
            })?;
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
    /// written (same stream, same start, our signature), or something else (`None`): not
    /// built on, not overwritten.
    async fn adopt(
        &self,
        key: &str,
        public: &[u8],
        from: &str,
        prev: &mut chain::PrevDigest,
    ) -> Result<Option<(DateTime<Utc>, Vec<Entry>)>, String> {
        let bytes = match self.store.get(key, chain::MAX_DIGEST).await {
            Ok(Some(b)) => b,
            // Gone again, too large, a link or a folder: not ours.
            Ok(None) | Err(_) => return Ok(None),
        };
        let Ok(f) = chain::parse_digest(&bytes) else {
            return Ok(None);
        };
        if !f.signed_by(public) || f.body.stream != self.stream || f.body.from != from {
            return Ok(None);
        }
        let to = parse_time(&f.body.to).ok_or_else(|| format!("{key}: `to` is not a time"))?;
        *prev = chain::PrevDigest {
            key: String::new(),
            sha256: f.sha256,
            signature: f.signature.signature,
        };
        Ok(Some((to, f.body.entries)))
    }

    /// Closes each hour as it ends (and the hours that passed while logferry was stopped),
    /// until `stop` turns true or its sender goes.
    pub async fn run(self: Arc<Self>, limit: Duration, mut stop: watch::Receiver<bool>) {
        loop {
            let now = Utc::now();
            self.close_logged(hour_start(now), limit, false).await;
            let next = hour_start(now) + TimeDelta::hours(1);
            let wait = (next - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// `close`, given up after `limit` (a store that never answers), with the outcome logged.
    pub async fn close_logged(&self, to: DateTime<Utc>, limit: Duration, stop: bool) -> bool {
        let res = match tokio::time::timeout(limit, self.close(to, stop)).await {
            Ok(r) => r,
            Err(_) => Err(format!("the archive did not answer within {limit:?}")),
        };
        match res {
            Ok(0) => true,
            Ok(n) => {
                self.written.inc_by(n as u64);
                info!(sink = %self.sink, stream = %self.stream, digests = n, "signed digests written");
                true
            }
            Err(e) => {
                self.failures.inc();
                error!(sink = %self.sink, stream = %self.stream, error = %e, "cannot write the integrity digests; trying again at the next hour");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use logferry_destinations::dir_store::DirectoryStore;

    fn t(s: &str) -> DateTime<Utc> {
        parse_time(s).unwrap()
    }

    fn entry(seq: u64, at: &str) -> Entry {
        Entry {
            seq,
            batch_id: format!("b{seq}"),
            key: format!("o{seq}"),
            sha256: "s".into(),
            bytes: 1,
            records: 1,
            first_time: at.into(),
            last_time: at.into(),
            payload_sha256: "p".into(),
            sealed_sha256: "c".into(),
            prev: "x".into(),
            hash: format!("h{seq}"),
            delivered_at: at.into(),
            dead_letter: None,
        }
    }

    #[tokio::test]
    async fn every_hour_gets_a_digest_empty_ones_too_and_a_crash_before_the_state_is_adopted() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        let start = super::super::State {
            stream: "s.1".into(),
            covered_to: "2026-12-03T10:30:00Z".into(),
            ..Default::default()
        };
        write_state(&state_dir, &start).unwrap();
        let lines: String = [
            entry(1, "2026-12-03T10:45:00Z"),
            entry(2, "2026-12-03T13:10:00Z"),
        ]
        .iter()
        .map(|e| serde_json::to_string(e).unwrap() + "\n")
        .collect();
        std::fs::write(state_dir.join("journal.jsonl"), lines).unwrap();
        let (pem, _) = SigningKey::generate().unwrap();
        let signer = Arc::new(SigningKey::from_pem(&pem).unwrap());
        let public = hex::decode(signer.public_hex()).unwrap();
        let d = Digester {
            sink: "archive".into(),
            stream: "s.1".into(),
            dir: state_dir.clone(),
            store: Arc::new(DirectoryStore::new(dir.path().join("archive"))),
            prefix: String::new(),
            signer,
            journal: Arc::new(Journal::new(
                state_dir.join("journal.jsonl"),
                t("2026-12-03T10:30:00Z"),
            )),
            written: Default::default(),
            failures: Default::default(),
            gate: Default::default(),
        };
        assert_eq!(d.close(t("2026-12-03T13:00:00Z"), false).await.unwrap(), 3);
        let keys = d.store.list("_digests/").await.unwrap();
        assert_eq!(
            keys,
            [
                "_digests/s.1/2026/12/03/10-30-00.000.json",
                "_digests/s.1/2026/12/03/11.json",
                "_digests/s.1/2026/12/03/12.json"
            ]
        );
        let mut prev: Option<chain::PrevDigest> = None;
        for k in &keys {
            let f = chain::parse_digest(&d.store.get(k, 1 << 20).await.unwrap().unwrap()).unwrap();
            assert!(f.signed_by(&public));
            assert_eq!(f.body.previous, prev);
            prev = Some(chain::PrevDigest {
                key: k.clone(),
                sha256: f.sha256.clone(),
                signature: f.signature.signature.clone(),
            });
        }
        let first = chain::parse_digest(&d.store.get(&keys[0], 1 << 20).await.unwrap().unwrap());
        assert_eq!(first.unwrap().body.last_seq, Some(1));
        // The entry of 13:10 stays in the journal for the next hour.
        let (left, _) = d.journal.read().await.unwrap();
        assert_eq!(left.iter().map(|e| e.seq).collect::<Vec<_>>(), [2]);
        let after = read_state(&state_dir).unwrap().unwrap();
        assert_eq!(
            (after.head_seq, after.covered_to.as_str()),
            (1, "2026-12-03T13:00:00.000000000Z")
        );
        // A crash after the digests, before the state: the next close adopts them as they are.
        write_state(&state_dir, &start).unwrap();
        d.close(t("2026-12-03T13:00:00Z"), false).await.unwrap();
        assert_eq!(d.store.list("_digests/").await.unwrap(), keys);
        assert_eq!(read_state(&state_dir).unwrap().unwrap().last, after.last);
        // A digest at the name that this stream did not sign is not built on.
        let other = tempfile::tempdir().unwrap();
        let planted = Digester {
            store: Arc::new(DirectoryStore::new(other.path())),
            gate: Default::default(),
            ..d
        };
        std::fs::create_dir_all(other.path().join("_digests/s.1/2026/12/03")).unwrap();
        std::fs::write(
            other.path().join("_digests/s.1/2026/12/03/13.json"),
            "{}\n{}\n",
        )
        .unwrap();
        // A file at the name that this stream did not sign: the digest goes beside it, and a
        // stop marks the last period.
        assert_eq!(
            planted
                .close(t("2026-12-03T14:30:00Z"), true)
                .await
                .unwrap(),
            2
        );
        let keys = planted.store.list("_digests/").await.unwrap();
        assert_eq!(
            keys,
            [
                "_digests/s.1/2026/12/03/13-1.json",
                "_digests/s.1/2026/12/03/13.json",
                "_digests/s.1/2026/12/03/14.json"
            ]
        );
        let body = |k: &str| {
            let store = planted.store.clone();
            let k = k.to_string();
            async move {
                chain::parse_digest(&store.get(&k, 1 << 20).await.unwrap().unwrap())
                    .unwrap()
                    .body
            }
        };
        assert_eq!(body(&keys[0]).await.closed_by.as_deref(), Some("hour"));
        assert_eq!(body(&keys[2]).await.closed_by.as_deref(), Some("stop"));
        assert_eq!(
            body(&keys[2]).await.previous.unwrap().key,
            "_digests/s.1/2026/12/03/13-1.json"
        );
    }
}
