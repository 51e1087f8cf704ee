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

/// Why the journal could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot {doing} {}: {error}", path.display())]
    Io {
        doing: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{0}")]
    TooLarge(StoreError),
    #[error("journal task failed: {0}")]
    Task(String),
    #[error("{0}")]
    Encode(#[from] serde_json::Error),
}

fn io(doing: &'static str, path: &std::path::Path) -> impl FnOnce(std::io::Error) -> JournalError {
    let path = path.to_path_buf();
    move |error| JournalError::Io { doing, path, error }
}

fn task(e: tokio::task::JoinError) -> JournalError {
    JournalError::Task(e.to_string())
}

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
    pub async fn append(&self, mut entry: Entry) -> Result<(), JournalError> {
        let floor = self.floor.lock().await;
        entry.delivered_at = time_text(Utc::now().max(*floor));
        let mut line = serde_json::to_vec(&entry)?;
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
        res.map_err(task)?.map_err(io("write", &self.path))
    }

    /// The entries recorded before `to`, with the number of unreadable lines skipped (a torn
    /// last line after a crash: its batch is still spooled). From now on nothing is recorded
    /// before `to`.
    pub async fn take(&self, to: DateTime<Utc>) -> Result<(Vec<Entry>, usize), JournalError> {
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
    pub async fn read(&self) -> Result<(Vec<Entry>, usize), JournalError> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || read_entries(&path))
            .await
            .map_err(task)?
    }

    /// Removes the entries recorded before `to` (they are in a digest now).
    pub async fn drop_before(&self, to: DateTime<Utc>) -> Result<(), JournalError> {
        let _floor = self.floor.lock().await;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || -> Result<(), JournalError> {
            let (all, _) = read_entries(&path)?;
            let mut out = Vec::new();
            for e in all {
                if parse_time(&e.delivered_at).is_some_and(|t| t >= to) {
                    out.extend(serde_json::to_vec(&e)?);
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
            write().map_err(io("rewrite", &path))
        })
        .await
        .map_err(task)?
    }
}

#[async_trait]
impl Recorder for Journal {
    async fn append(&self, entry: Entry) -> Result<(), RecordError> {
        Journal::append(self, entry)
            .await
            .map_err(|e| RecordError::from(e.to_string()))
    }
}

fn read_entries(path: &std::path::Path) -> Result<(Vec<Entry>, usize), JournalError> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(io("read", path)(e)),
    };
    let text = match logferry_sink::capped::read(f, MAX_JOURNAL, None) {
        Ok(t) => t,
        Err(logferry_sink::capped::CapError::Io(e)) => return Err(io("read", path)(e)),
        Err(logferry_sink::capped::CapError::TooLarge { .. }) => {
            return Err(JournalError::TooLarge(StoreError::too_large(
                path.display().to_string(),
                MAX_JOURNAL,
            )))
        }
    };
    let (mut out, mut bad) = (Vec::new(), 0);
    for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        match serde_json::from_slice::<Entry>(line) {
            Ok(e) => out.push(e),
            Err(_) => bad += 1,
        }
    }
    Ok((out, bad))
}
