//! The per-sink spool: sealed batches waiting for delivery.
//!
//! Disk mode writes each batch to `data_dir/spool/<sink>/<seq>-<id>.batch` (temp name, fsync,
//! rename, fsync of the directory) before its records count as durable, and replays the
//! directory in order at start. Memory mode (zero retention) keeps batches in memory and holds
//! their chunks until the sink acknowledges them. Either way the spool is bounded: `push` waits
//! for room, which pauses the sources feeding it.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;

use bytes::Bytes;
use logferry_sink::{BatchMeta, SealedBatch};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;

use crate::ack::{release_all, Hold};

mod crypt;
mod file;
mod take;
pub mod writer;

pub use crypt::SpoolCrypt;
pub use take::Taken;

pub(crate) use crypt::SPOOL_TENANT;
pub use file::MAGIC;
use file::{file_name, parse_name, read_header, write_parts};
pub use file::{read_file, write_file};

/// Order of a batch in the spool: sealing sequence, then split suffix (`a`, `ab`, ...).
pub type SpoolKey = (u64, String);

enum Body {
    Disk(PathBuf),
    Memory(Bytes, Vec<Hold>),
}

struct Entry {
    meta: BatchMeta,
    size: u64,
    body: Body,
}

#[derive(Default)]
struct State {
    entries: BTreeMap<SpoolKey, Entry>,
    in_flight: HashSet<SpoolKey>,
    bytes: u64,
    next_seq: u64,
    closed: bool,
}

pub struct Spool {
    dir: Option<PathBuf>,
    max_bytes: u64,
    max_entries: usize,
    state: Mutex<State>,
    changed: Notify,
    bytes_gauge: Gauge,
    count_gauge: Gauge,
    /// Disk mode for an encrypting sink: payloads are written encrypted.
    crypt: Option<std::sync::Arc<SpoolCrypt>>,
}

/// A batch the spool could not write, with its holds: nothing is acknowledged yet.
pub struct PushError {
    pub error: std::io::Error,
    pub meta: BatchMeta,
    pub parts: Vec<Bytes>,
    pub holds: Vec<Hold>,
}

/// A spooled batch as [`Spool::scan`] reports it.
pub struct Scanned<T> {
    pub key: SpoolKey,
    /// Bytes it takes in the spool (what counts against `max_bytes`).
    pub size: u64,
    /// Taken for delivery and neither completed nor given back yet.
    pub in_flight: bool,
    /// What the scan's `pick` gave for it.
    pub value: T,
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    // A panic while holding the lock cannot leave the map half-updated in a way that loses
    // batches (files stay on disk), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Spool {
    /// Opens a disk spool, removing temp files a crash left and indexing the batches found.
    pub fn open_disk(
        dir: PathBuf,
        max_bytes: u64,
        gauges: (Gauge, Gauge),
    ) -> std::io::Result<Spool> {
        crate::private_fs::dir_all(&dir)?;
        let mut st = State::default();
        for de in std::fs::read_dir(&dir)? {
            let de = de?;
            let name = de.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                std::fs::remove_file(de.path())?;
                continue;
            }
            let Some(key) = parse_name(&name) else {
                continue;
            };
            match read_header(&de.path()) {
                Ok((meta, size)) => {
                    st.next_seq = st.next_seq.max(key.0 + 1);
                    st.bytes += size;
                    st.entries.insert(
                        key,
                        Entry {
                            meta,
                            size,
                            body: Body::Disk(de.path()),
                        },
                    );
                }
                // Another user's file (a run as root in this data_dir) is not corrupt: setting
                // it aside would leave its records unsent. The start stops and says whose.
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    return Err(std::io::Error::new(
                        e.kind(),
                        format!(
                            "spool file {} cannot be read by this process, {}: {e}; give data_dir back to this user (chown -R)",
                            de.path().display(),
                            crate::private_fs::identity()
                        ),
                    ));
                }
                Err(e) => {
                    let aside = de.path().with_extension("corrupt");
                    tracing::error!(file = %de.path().display(), error = %e, "unreadable spool file moved aside");
                    std::fs::rename(de.path(), aside)?;
                }
            }
        }
        let s = Spool {
            dir: Some(dir),
            max_bytes,
            max_entries: usize::MAX,
            state: Mutex::new(st),
            changed: Notify::new(),
            bytes_gauge: gauges.0,
            count_gauge: gauges.1,
            crypt: None,
        };
        s.update_gauges(&lock(&s.state));
        Ok(s)
    }

    pub fn memory(max_entries: usize, max_bytes: u64, gauges: (Gauge, Gauge)) -> Spool {
        Spool {
            dir: None,
            max_bytes,
            max_entries: max_entries.max(1),
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            bytes_gauge: gauges.0,
            count_gauge: gauges.1,
            crypt: None,
        }
    }

    /// Payloads written from now on are encrypted (disk mode; memory mode writes none).
    pub fn with_crypt(mut self, crypt: std::sync::Arc<SpoolCrypt>) -> Spool {
        if self.dir.is_some() {
            self.crypt = Some(crypt);
        }
        self
    }

    /// `batch` as this spool would keep it on disk: sealed when the spool encrypts (for a dead
    /// letter, which must not be readable without the KEK either).
    pub async fn sealed_copy(&self, batch: &SealedBatch) -> std::io::Result<SealedBatch> {
        let mut b = batch.clone();
        if let Some(c) = &self.crypt {
            if !b.meta.spool_encrypted {
                b.payload = c.seal(&b.meta, std::slice::from_ref(&b.payload)).await?;
                b.meta.spool_encrypted = true;
            }
        }
        Ok(b)
    }

    /// The integrity links of the spooled batches (for the chain head at start).
    pub fn chain_links(&self) -> Vec<logferry_integrity::chain::ChainLink> {
        lock(&self.state)
            .entries
            .values()
            .filter_map(|e| e.meta.chain.clone())
            .collect()
    }

    pub fn is_memory(&self) -> bool {
        self.dir.is_none()
    }

    pub fn len(&self) -> usize {
        lock(&self.state).entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The spool's cap in bytes (`spool_max_bytes`).
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The spooled batches (in flight or not) that `pick` gives a value for, oldest first.
    /// `pick` runs under the spool's lock: it must not call the spool.
    pub fn scan<T>(&self, mut pick: impl FnMut(&BatchMeta) -> Option<T>) -> Vec<Scanned<T>> {
        let st = lock(&self.state);
        st.entries
            .iter()
            .filter_map(|(k, e)| {
                pick(&e.meta).map(|value| Scanned {
                    key: k.clone(),
                    size: e.size,
                    in_flight: st.in_flight.contains(k),
                    value,
                })
            })
            .collect()
    }

    /// Wakes whoever waits for a batch (or for room) to look again: a batch passed over by
    /// [`Spool::next_where`] may be taken now (its scope's park is over).
    pub fn poke(&self) {
        self.changed.notify_waiters();
    }

    fn update_gauges(&self, st: &State) {
        self.bytes_gauge.set(st.bytes as i64);
        self.count_gauge.set(st.entries.len() as i64);
    }

    fn has_room(&self, st: &State, size: u64) -> bool {
        st.entries.is_empty()
            || (st.bytes + size <= self.max_bytes && st.entries.len() < self.max_entries)
    }

    /// Adds a sealed batch, waiting for room. In disk mode the batch is durable when this
    /// returns and its holds are released; in memory mode the holds travel with it.
    pub async fn push(&self, batch: SealedBatch, holds: Vec<Hold>) -> std::io::Result<()> {
        self.push_parts(batch.meta, vec![batch.payload], holds)
            .await
            .map_err(|e| e.error)
    }

    /// As [`Spool::push`], with the payload in parts (compressed blocks): in disk mode they are
    /// written one after the other, never assembled in memory. A failed write gives the holds
    /// back, so that the caller can try again (the records stay unacknowledged meanwhile).
    pub async fn push_parts(
        &self,
        mut meta: BatchMeta,
        mut parts: Vec<Bytes>,
        holds: Vec<Hold>,
    ) -> Result<(), PushError> {
        if let Some(c) = &self.crypt {
            if c.prune_due() {
                let oldest = lock(&self.state)
                    .entries
                    .values()
                    .filter_map(|e| e.meta.sealed_at)
                    .min();
                c.prune(oldest).await;
            }
            // Once: a retry after a failed write gets back what was sealed.
            if !meta.spool_encrypted {
                match c.seal(&meta, &parts).await {
                    Ok(sealed) => {
                        parts = vec![sealed];
                        meta.spool_encrypted = true;
                    }
                    Err(error) => {
                        return Err(PushError {
                            error,
                            meta,
                            parts,
                            holds,
                        })
                    }
                }
            }
        }
        let size: u64 = parts.iter().map(|p| p.len() as u64).sum();
        let seq = loop {
            let notified = self.changed.notified();
            {
                let mut st = lock(&self.state);
                if self.has_room(&st, size) {
                    let seq = st.next_seq;
                    st.next_seq += 1;
                    // Reserve the room now; the entry is filled in below.
                    st.bytes += size;
                    break seq;
                }
            }
            notified.await;
        };
        let key = (seq, String::new());
        let body = match &self.dir {
            Some(dir) => {
                let path = dir.join(file_name(&key, &meta.id));
                // Clones per batch (the parts are reference-counted), kept for a retry.
                let (p, m, ps) = (path.clone(), meta.clone(), parts.clone());
                let res = tokio::task::spawn_blocking(move || write_parts(&p, &m, &ps))
                    .await
                    .map_err(std::io::Error::other)
                    .and_then(|r| r);
                if let Err(error) = res {
                    lock(&self.state).bytes -= size;
                    self.changed.notify_waiters();
                    return Err(PushError {
                        error,
                        meta,
                        parts,
                        holds,
                    });
                }
                release_all(holds);
                Body::Disk(path)
            }
            None => {
                let payload = match parts.len() {
                    1 => parts.into_iter().next().unwrap_or_default(),
                    _ => {
                        let mut all = bytes::BytesMut::with_capacity(size as usize);
                        parts.iter().for_each(|p| all.extend_from_slice(p));
                        all.freeze()
                    }
                };
                Body::Memory(payload, holds)
            }
        };
        let mut st = lock(&self.state);
        st.entries.insert(key, Entry { meta, size, body });
        self.update_gauges(&st);
        drop(st);
        self.changed.notify_waiters();
        Ok(())
    }

    /// No more batches will be pushed; `next` returns `None` once the spool is empty.
    pub fn close(&self) {
        lock(&self.state).closed = true;
        self.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ack::Ticket;

    fn batch(id: &str, n: usize) -> SealedBatch {
        let now = chrono::Utc::now();
        SealedBatch {
            meta: BatchMeta {
                id: id.into(),
                source: "s".into(),
                sink: "k".into(),
                key: format!("k/{id}"),
                record_count: 1,
                first_time: now,
                last_time: now,
                sha256: String::new(),
                uncompressed_bytes: n as u64,
                encoding: logferry_sink::Encoding::Ndjson,
                compression: logferry_sink::Compression::None,
                head_len: 0,
                tail_len: 0,
                sealed_at: None,
                tenant: None,
                key_id: None,
                spool_encrypted: false,
                chain: None,
            },
            payload: Bytes::from(vec![b'x'; n]),
        }
    }

    fn gauges() -> (Gauge, Gauge) {
        (Gauge::default(), Gauge::default())
    }

    #[tokio::test]
    async fn disk_spool_replays_in_order_after_restart() {
        let d = tempfile::tempdir().unwrap();
        let s = Spool::open_disk(d.path().into(), 1 << 20, gauges()).unwrap();
        let t = Ticket::new();
        s.push(batch("one", 10), vec![t.hold()]).await.unwrap();
        s.push(batch("two", 10), vec![]).await.unwrap();
        t.seal().release();
        assert!(
            t.is_done(),
            "disk mode releases holds once the file is synced"
        );
        std::fs::write(d.path().join("00000000000000000009-x.batch.tmp"), b"half").unwrap();
        drop(s);
        let s = Spool::open_disk(d.path().into(), 1 << 20, gauges()).unwrap();
        s.close();
        let a = s.next().await.unwrap().unwrap();
        assert_eq!(a.batch.meta.id, "one");
        assert_eq!(a.batch.payload.len(), 10);
        s.complete(&a.key).await.unwrap();
        let b = s.next().await.unwrap().unwrap();
        assert_eq!(b.batch.meta.id, "two");
        s.complete(&b.key).await.unwrap();
        assert!(s.next().await.is_none());
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }

    /// Memory mode: no write runs on a blocking thread, so under paused time "still waiting"
    /// is exact, not a race with a file write.
    #[tokio::test(start_paused = true)]
    async fn push_waits_for_room_when_full() {
        let s = std::sync::Arc::new(Spool::memory(8, 15, gauges()));
        s.push(batch("one", 10), vec![]).await.unwrap();
        let s2 = s.clone();
        let mut pushing = tokio::spawn(async move { s2.push(batch("two", 10), vec![]).await });
        let waited = tokio::time::timeout(std::time::Duration::from_secs(60), &mut pushing).await;
        assert!(waited.is_err(), "a push over max_bytes must wait for room");
        assert_eq!(s.len(), 1);
        let a = s.next().await.unwrap().unwrap();
        s.complete(&a.key).await.unwrap();
        pushing.await.unwrap().unwrap();
        assert_eq!(s.len(), 1);
        let b = s.next().await.unwrap().unwrap();
        assert_eq!(b.batch.meta.id, "two");
    }

    #[tokio::test]
    async fn memory_mode_holds_until_complete_and_halves_keep_holds() {
        let s = Spool::memory(4, 1 << 20, gauges());
        let t = Ticket::new();
        s.push(batch("p", 10), vec![t.hold()]).await.unwrap();
        t.seal().release();
        assert!(!t.is_done());
        let p = s.next().await.unwrap().unwrap();
        s.replace(&p.key, vec![batch("p-a", 5), batch("p-b", 5)])
            .await
            .unwrap();
        assert!(!t.is_done());
        let a = s.next().await.unwrap().unwrap();
        assert_eq!(a.batch.meta.id, "p-a");
        s.complete(&a.key).await.unwrap();
        assert!(!t.is_done());
        let b = s.next().await.unwrap().unwrap();
        s.complete(&b.key).await.unwrap();
        assert!(t.is_done());
    }
}
