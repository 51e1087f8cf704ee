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
pub mod writer;

pub use crypt::SpoolCrypt;

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

/// A batch taken for delivery.
pub struct Taken {
    pub key: SpoolKey,
    pub batch: SealedBatch,
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

    /// The oldest batch not already being delivered. `None` when closed and empty.
    pub async fn next(&self) -> Option<std::io::Result<Taken>> {
        self.next_where(&|_| false).await
    }

    /// The oldest batch not already being delivered for which `skip` is false (a batch of a
    /// parked scope is passed over). `None` when closed and empty; while only batches in flight
    /// or passed over are left it waits for a change or a [`Spool::poke`]. `skip` runs under the
    /// spool's lock: it must not call the spool.
    pub async fn next_where(
        &self,
        skip: &(dyn Fn(&BatchMeta) -> bool + Send + Sync),
    ) -> Option<std::io::Result<Taken>> {
        loop {
            let notified = self.changed.notified();
            let found = {
                let mut guard = lock(&self.state);
                let st = &mut *guard;
                let found = st
                    .entries
                    .iter()
                    .find(|(k, e)| !st.in_flight.contains(*k) && !skip(&e.meta))
                    .map(|(k, e)| (k.clone(), e.meta.clone(), payload_of(&e.body)));
                match found {
                    Some(f) => {
                        st.in_flight.insert(f.0.clone());
                        Some(f)
                    }
                    None if st.closed && st.entries.is_empty() => return None,
                    None => None,
                }
            };
            let Some((key, meta, body)) = found else {
                notified.await;
                continue;
            };
            return Some(self.load(key, meta, body).await);
        }
    }

    /// Takes the batch under `key` (to dead-letter it, say): `None` when it is no longer
    /// spooled or is being delivered.
    pub async fn take(&self, key: &SpoolKey) -> Option<std::io::Result<Taken>> {
        let (meta, body) = {
            let mut st = lock(&self.state);
            if st.in_flight.contains(key) {
                return None;
            }
            let found = {
                let e = st.entries.get(key)?;
                (e.meta.clone(), payload_of(&e.body))
            };
            st.in_flight.insert(key.clone());
            found
        };
        Some(self.load(key.clone(), meta, body).await)
    }

    /// Reads (disk mode) and opens (an encrypting spool) a batch just marked in flight; on an
    /// error it is given back.
    async fn load(
        &self,
        key: SpoolKey,
        mut meta: BatchMeta,
        body: Result<Bytes, PathBuf>,
    ) -> std::io::Result<Taken> {
        let payload = match body {
            Ok(b) => b,
            Err(path) => match tokio::task::spawn_blocking(move || read_file(&path)).await {
                Ok(Ok((_, p))) => p,
                Ok(Err(e)) => {
                    self.untake(&key);
                    return Err(e);
                }
                Err(e) => {
                    self.untake(&key);
                    return Err(std::io::Error::other(e));
                }
            },
        };
        let payload = if meta.spool_encrypted {
            let opened = match &self.crypt {
                Some(c) => c.open(payload).await,
                None => Err(std::io::Error::other(
                    "the spooled batch is encrypted and this sink no longer has encryption configured: restore its encryption settings to deliver it",
                )),
            };
            match opened {
                Ok(p) => {
                    meta.spool_encrypted = false;
                    p
                }
                Err(e) => {
                    self.untake(&key);
                    return Err(e);
                }
            }
        } else {
            payload
        };
        Ok(Taken {
            key,
            batch: SealedBatch { meta, payload },
        })
    }

    /// Puts a taken batch back without delivering it (shutdown during an attempt, a reload, a
    /// parked scope): it is offered again, and whoever waits for a batch looks again.
    pub fn untake(&self, key: &SpoolKey) {
        lock(&self.state).in_flight.remove(key);
        self.changed.notify_waiters();
    }

    /// Removes a delivered (or dead-lettered) batch; in memory mode releases its chunks.
    pub async fn complete(&self, key: &SpoolKey) -> std::io::Result<()> {
        let removed = {
            let mut st = lock(&self.state);
            st.in_flight.remove(key);
            let e = st.entries.remove(key);
            if let Some(e) = &e {
                st.bytes -= e.size;
                self.update_gauges(&st);
            }
            e
        };
        let Some(e) = removed else { return Ok(()) };
        self.changed.notify_waiters();
        match e.body {
            Body::Disk(path) => tokio::task::spawn_blocking(move || std::fs::remove_file(path))
                .await
                .map_err(std::io::Error::other)?,
            Body::Memory(_, holds) => {
                release_all(holds);
                Ok(())
            }
        }
    }

    /// Replaces a batch by the halves it was split into; they keep its place in the order.
    pub async fn replace(&self, key: &SpoolKey, halves: Vec<SealedBatch>) -> std::io::Result<()> {
        let holds = {
            let st = lock(&self.state);
            match st.entries.get(key).map(|e| &e.body) {
                Some(Body::Memory(_, h)) => h.clone(),
                _ => Vec::new(),
            }
        };
        let mut new = Vec::new();
        for (i, b) in halves.into_iter().enumerate() {
            let k = (key.0, format!("{}{}", key.1, (b'a' + i as u8) as char));
            let body = match &self.dir {
                Some(dir) => {
                    let path = dir.join(file_name(&k, &b.meta.id));
                    let mut half = b.clone();
                    if let Some(c) = &self.crypt {
                        half.payload = c.seal(&half.meta, &[half.payload.clone()]).await?;
                        half.meta.spool_encrypted = true;
                    }
                    let p = path.clone();
                    tokio::task::spawn_blocking(move || write_file(&p, &half))
                        .await
                        .map_err(std::io::Error::other)??;
                    Body::Disk(path)
                }
                None => Body::Memory(b.payload.clone(), holds.clone()),
            };
            new.push((
                k,
                Entry {
                    size: b.payload.len() as u64,
                    meta: b.meta,
                    body,
                },
            ));
        }
        release_all(holds);
        {
            let mut st = lock(&self.state);
            for (k, e) in new {
                st.bytes += e.size;
                st.entries.insert(k, e);
            }
        }
        // Written before the parent goes: a crash in between sends the parent again, which
        // is a duplicate at worst, never a loss.
        self.complete(key).await
    }
}

fn payload_of(body: &Body) -> Result<Bytes, PathBuf> {
    match body {
        Body::Memory(b, _) => Ok(b.clone()),
        Body::Disk(p) => Err(p.clone()),
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
