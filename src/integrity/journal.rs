//! The journal of an `integrity` stream in `data_dir`: entries of batches delivered (or
//! dead-lettered) and not yet in a digest, appended and fdatasync'd before the spool lets the
//! batch go.

use std::io::Write;
use std::path::PathBuf;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use logferry_integrity::chain::{time_text, Entry};
use logferry_integrity::chained::{parse_time, RecordError, Recorder};
use logferry_sink::store::StoreError;

use crate::private_fs;

/// A journal holds at most an hour of entries; more than this is not something logferry wrote.
const MAX_JOURNAL: u64 = 256 << 20;

/// Entries of batches delivered (or dead-lettered) but not yet in a digest.
pub struct Journal {
    path: PathBuf,
    /// No entry is recorded before this time: the end of the last period taken for a digest,
    /// so that a clock stepping back cannot put an entry into a period already signed.
    floor: tokio::sync::Mutex<DateTime<Utc>>,
}

impl Journal {
    pub fn new(path: PathBuf, floor: DateTime<Utc>) -> Journal {
        Journal {
            path,
            floor: tokio::sync::Mutex::new(floor),
        }
    }

    /// Records `entry` as delivered now, durably.
    pub async fn append(&self, mut entry: Entry) -> Result<(), String> {
        let floor = self.floor.lock().await;
        entry.delivered_at = time_text(Utc::now().max(*floor));
        let mut line = serde_json::to_vec(&entry).map_err(|e| e.to_string())?;
        line.push(b'\n');
        let path = self.path.clone();
        let res = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            if let Some(d) = path.parent() {
                private_fs::dir_all(d)?;
            }
            let mut f = private_fs::append(&path)?;
            f.write_all(&line)?;
            f.sync_data()
        })
        .await;
        drop(floor);
        match res {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("cannot write {}: {e}", self.path.display())),
            Err(e) => Err(format!("journal task failed: {e}")),
        }
    }

    /// The entries recorded before `to`, with the number of unreadable lines skipped (a torn
    /// last line after a crash: its batch is still spooled). From now on nothing is recorded
    /// before `to`.
    pub async fn take(&self, to: DateTime<Utc>) -> Result<(Vec<Entry>, usize), String> {
        let mut floor = self.floor.lock().await;
        *floor = (*floor).max(to);
        let (all, bad) = self.read().await?;
        let before = all
            .into_iter()
            .filter(|e| parse_time(&e.delivered_at).is_some_and(|t| t < to))
            .collect();
        Ok((before, bad))
    }

    /// Every entry in the journal (for the chain head at start).
    pub async fn read(&self) -> Result<(Vec<Entry>, usize), String> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || read_entries(&path))
            .await
            .map_err(|e| format!("journal task failed: {e}"))?
    }

    /// Removes the entries recorded before `to` (they are in a digest now).
    pub async fn drop_before(&self, to: DateTime<Utc>) -> Result<(), String> {
        let _floor = self.floor.lock().await;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            let (all, _) = read_entries(&path)?;
            let mut out = Vec::new();
            for e in all {
                if parse_time(&e.delivered_at).is_some_and(|t| t >= to) {
                    out.extend(serde_json::to_vec(&e).map_err(|e| e.to_string())?);
                    out.push(b'\n');
                }
            }
            let tmp = path.with_extension("tmp");
            let write = || -> std::io::Result<()> {
                let mut f = private_fs::create(&tmp)?;
                f.write_all(&out)?;
                f.sync_all()?;
                std::fs::rename(&tmp, &path)?;
                if let Some(d) = path.parent() {
                    std::fs::File::open(d)?.sync_all()?;
                }
                Ok(())
            };
            write().map_err(|e| format!("cannot rewrite {}: {e}", path.display()))
        })
        .await
        .map_err(|e| format!("journal task failed: {e}"))?
    }
}

#[async_trait]
impl Recorder for Journal {
    async fn append(&self, entry: Entry) -> Result<(), RecordError> {
        Journal::append(self, entry)
            .await
            .map_err(RecordError::from)
    }
}

fn read_entries(path: &std::path::Path) -> Result<(Vec<Entry>, usize), String> {
    use std::io::Read;
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let mut text = Vec::new();
    f.take(MAX_JOURNAL + 1)
        .read_to_end(&mut text)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if text.len() as u64 > MAX_JOURNAL {
        return Err(StoreError::too_large(path.display().to_string(), MAX_JOURNAL).to_string());
    }
    let (mut out, mut bad) = (Vec::new(), 0);
    for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        match serde_json::from_slice::<Entry>(line) {
            Ok(e) => out.push(e),
            Err(_) => bad += 1,
        }
    }
    Ok((out, bad))
}
