//! Taking spooled batches for delivery and settling them: completed (delivered or
//! dead-lettered), given back, or replaced by the halves they were split into.

use std::path::PathBuf;

use bytes::Bytes;
use logferry_sink::{BatchMeta, SealedBatch};

use super::file::{file_name, read_file, write_file};
use super::{lock, Body, Entry, Spool, SpoolKey};
use crate::ack::release_all;

/// A batch taken for delivery.
pub struct Taken {
    pub key: SpoolKey,
    pub batch: SealedBatch,
}

impl Spool {
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
