//! Tamper evidence at run time (`integrity` on an object sink): the chain head the spool
//! writer links each sealed batch to, the journal of deliveries, and the digester that signs
//! them into hourly digests in the archive. `logferry verify` checks the result (`verify`).
//!
//! The stream is `<sink>.<instance id>`; the instance id is made once per `data_dir`. State
//! lives in `data_dir/integrity/<sink>/`: `journal.jsonl` (delivered, not yet in a digest) and
//! `state.json` (the last digest and the chain head it covers).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
pub use journal::Journal;
use logferry_integrity::chain::{self, ChainLink, PrevDigest};
use logferry_sink::BatchMeta;
use serde::{Deserialize, Serialize};

mod digest;
pub mod journal;
pub mod verify;

pub use digest::{DigestError, Digester};

/// Payloads larger than this are hashed off the runtime's threads.
const INLINE_HASH: usize = 256 << 10;

/// The instance id of this `data_dir`: made on first use, kept for good.
pub fn instance_id(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("instance-id");
    match read_small(&path) {
        Ok(s) => {
            let id = String::from_utf8_lossy(&s).trim().to_string();
            if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                anyhow::bail!(
                    "{} does not hold an instance id (letters and digits, at most 64)",
                    path.display()
                );
            }
            Ok(id)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut b = [0u8; 8];
            logferry_vault::crypt::random(&mut b).map_err(|e| anyhow::anyhow!("{e}"))?;
            let id = hex::encode(b);
            std::fs::create_dir_all(data_dir)
                .with_context(|| format!("cannot create {}", data_dir.display()))?;
            let tmp = data_dir.join("instance-id.tmp");
            let _ = std::fs::remove_file(&tmp);
            crate::private_fs::write(&tmp, format!("{id}\n").as_bytes())
                .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            // Two processes on one data_dir are refused elsewhere; a link keeps the first id.
            match std::fs::hard_link(&tmp, &path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot write {}", path.display()))
                }
            }
            let _ = std::fs::remove_file(&tmp);
            std::fs::File::open(data_dir)
                .and_then(|d| d.sync_all())
                .with_context(|| format!("cannot sync {}", data_dir.display()))?;
            instance_id(data_dir)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// `data_dir/integrity/<sink>/state.json`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct State {
    pub stream: String,
    /// The end of the last digest's period (its start when none was written yet).
    pub covered_to: String,
    pub last: Option<PrevDigest>,
    /// The highest sequence number in a digest, and its entry's hash.
    pub head_seq: u64,
    pub head_hash: String,
}

pub fn state_dir(data_dir: &Path, sink: &str) -> PathBuf {
    data_dir.join("integrity").join(sink)
}

/// More than this in a small state file is not something logferry wrote.
const MAX_SMALL: u64 = 64 << 10;

/// A small file of `data_dir`, refused before it is read when a planted one is large.
fn read_small(path: &Path) -> std::io::Result<Vec<u8>> {
    let f = std::fs::File::open(path)?;
    logferry_sink::capped::read(f, MAX_SMALL, None).map_err(|e| match e {
        logferry_sink::capped::CapError::Io(e) => e,
        e => std::io::Error::other(format!("{e}: not something logferry wrote")),
    })
}

pub fn read_state(dir: &Path) -> anyhow::Result<Option<State>> {
    let path = dir.join("state.json");
    match read_small(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .with_context(|| format!("{} is not an integrity state", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

pub fn write_state(dir: &Path, s: &State) -> std::io::Result<()> {
    use std::io::Write;
    crate::private_fs::dir_all(dir)?;
    let tmp = dir.join("state.json.tmp");
    let mut f = crate::private_fs::create(&tmp)?;
    f.write_all(&serde_json::to_vec(s).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join("state.json"))?;
    std::fs::File::open(dir)?.sync_all()
}

/// The last link of a stream: what the next sealed batch names as `prev`.
pub struct Head {
    stream: String,
    last: std::sync::Mutex<(u64, String)>,
}

impl Head {
    /// The head after everything this stream ever sealed: the highest sequence number among
    /// the last digest, the journal and the spooled batches (a crash neither forks nor rewinds).
    pub fn recover(
        stream: &str,
        state: &State,
        journal: &[logferry_integrity::chain::Entry],
        spooled: &[ChainLink],
    ) -> Head {
        let mut last = (state.head_seq, state.head_hash.clone());
        if last.0 == 0 {
            last.1 = chain::GENESIS.to_string();
        }
        for (seq, hash) in journal.iter().map(|e| (e.seq, &e.hash)).chain(
            spooled
                .iter()
                .filter(|l| l.stream == stream)
                .map(|l| (l.seq, &l.hash)),
        ) {
            if seq > last.0 {
                last = (seq, hash.clone());
            }
        }
        Head {
            stream: stream.to_string(),
            last: std::sync::Mutex::new(last),
        }
    }

    pub fn seq(&self) -> u64 {
        self.lock().0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, String)> {
        self.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Links a sealed batch (its compressed `parts`) to the chain: the next sequence number.
    pub async fn link(&self, meta: &BatchMeta, parts: &[Bytes]) -> std::io::Result<ChainLink> {
        let total: usize = parts.iter().map(Bytes::len).sum();
        let sealed = if total <= INLINE_HASH {
            hash_parts(parts)
        } else {
            let p = parts.to_vec();
            tokio::task::spawn_blocking(move || hash_parts(&p))
                .await
                .map_err(std::io::Error::other)?
        };
        let (first, last) = (
            chain::time_text(meta.first_time),
            chain::time_text(meta.last_time),
        );
        let mut head = self.lock();
        let seq = head.0 + 1;
        let hash = chain::entry_hash(&chain::Hashed {
            stream: &self.stream,
            seq,
            prev: &head.1,
            batch_id: &meta.id,
            payload_sha256: &meta.sha256,
            sealed_sha256: &sealed,
            records: meta.record_count,
            first_time: &first,
            last_time: &last,
        });
        let link = ChainLink {
            stream: self.stream.clone(),
            seq,
            prev: head.1.clone(),
            sealed_sha256: sealed,
            hash: hash.clone(),
            object_sha256: None,
        };
        *head = (seq, hash);
        Ok(link)
    }
}

fn hash_parts(parts: &[Bytes]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    hex::encode(h.finalize())
}

/// Everything a sink's integrity stream needs at run time.
pub struct Stream {
    pub head: Arc<Head>,
    pub journal: Arc<Journal>,
    pub digester: Digester,
}

/// Sets up a sink's stream: reads its state and journal and the spool's links.
pub async fn open(
    data_dir: &Path,
    sink: &str,
    store: Arc<dyn logferry_sink::store::LedgerStore>,
    prefix: &str,
    signer: Arc<logferry_integrity::signing::SigningKey>,
    spooled: Vec<ChainLink>,
    counters: (
        prometheus_client::metrics::counter::Counter,
        prometheus_client::metrics::counter::Counter,
    ),
) -> anyhow::Result<Stream> {
    let stream = format!("{sink}.{}", instance_id(data_dir)?);
    let dir = state_dir(data_dir, sink);
    let state = match read_state(&dir)? {
        Some(s) if s.stream == stream => s,
        Some(s) => anyhow::bail!(
            "{}: state of stream {:?}, not {stream:?} (instance-id changed?)",
            dir.display(),
            s.stream
        ),
        None => {
            let s = State {
                stream: stream.clone(),
                covered_to: chain::time_text(chrono::Utc::now()),
                ..State::default()
            };
            let (d, s2) = (dir.clone(), s.clone());
            tokio::task::spawn_blocking(move || write_state(&d, &s2))
                .await?
                .with_context(|| format!("cannot write {}", dir.display()))?;
            s
        }
    };
    let from = logferry_integrity::chained::parse_time(&state.covered_to)
        .with_context(|| format!("{}: covered_to is not a time", dir.display()))?;
    let journal = Arc::new(Journal::new(dir.join("journal.jsonl"), from));
    let (entries, _) = journal
        .read()
        .await
        .map_err(|e| anyhow::anyhow!("sink {sink}: {e}"))?;
    let head = Arc::new(Head::recover(&stream, &state, &entries, &spooled));
    let digester = Digester {
        sink: sink.to_string(),
        stream,
        store,
        prefix: prefix.to_string(),
        signer,
        journal: journal.clone(),
        written: counters.0,
        failures: counters.1,
        gate: digest::gate(&dir),
        dir,
    };
    Ok(Stream {
        head,
        journal,
        digester,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn planted_giant_state_files_are_refused_before_they_are_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("state.json"), vec![b' '; 1 << 20]).unwrap();
        let err = format!("{:#}", super::read_state(dir.path()).unwrap_err());
        assert!(err.contains("larger than"), "{err}");
        std::fs::write(dir.path().join("instance-id"), vec![b'a'; 1 << 20]).unwrap();
        let err = format!("{:#}", super::instance_id(dir.path()).unwrap_err());
        assert!(err.contains("larger than"), "{err}");
        std::fs::write(dir.path().join("instance-id"), "../../etc\n").unwrap();
        assert!(super::instance_id(dir.path()).is_err());
    }
}
