//! A store of small objects (a key ledger, shredding receipts, digests) in the same
//! directory, bucket or container as a sink's data. The destinations implement it; the vault
//! and integrity crates use it without knowing which.
//!
//! Entries are written create-new, so two logferry instances that start the same tenant-hour
//! at once end up with one key: the second finds the first's entry and uses it.

use async_trait::async_trait;

#[async_trait]
pub trait LedgerStore: Send + Sync {
    /// The bytes at `key`, or `None` when nothing is there. More than `max` bytes is an error,
    /// found before they are read: a planted giant file cannot make the reader allocate it.
    async fn get(&self, key: &str, max: u64) -> Result<Option<Vec<u8>>, String>;
    /// Writes `bytes` at `key` unless the name is taken: `Ok(true)` when written, `Ok(false)`
    /// when something was there already (it is kept).
    async fn put_new(&self, key: &str, bytes: &[u8]) -> Result<bool, String>;
    /// Removes `key`; nothing there is not an error.
    async fn delete(&self, key: &str) -> Result<(), String>;
    /// Every key under `prefix`, sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, String> {
        Ok(self
            .list_modified(prefix)
            .await?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }
    /// Every key under `prefix`, sorted, with its last-modified time where the store gives one.
    async fn list_modified(&self, prefix: &str) -> Result<Vec<Listed>, String>;
    /// Everything under `prefix` as it is stored: links, temp files and special files too
    /// (an object store holds only objects). For `verify`, which must see every name.
    async fn list_all(&self, prefix: &str) -> Result<Vec<Stored>, String> {
        Ok(self
            .list_modified(prefix)
            .await?
            .into_iter()
            .map(|(key, modified)| Stored {
                key,
                modified,
                kind: Kind::File,
            })
            .collect())
    }
}

/// What a listed name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    /// A symbolic link (never followed).
    Symlink,
    /// A FIFO, socket or device.
    Other,
}

/// A name under a prefix, as [`LedgerStore::list_all`] finds it.
#[derive(Debug, Clone)]
pub struct Stored {
    pub key: String,
    pub modified: Option<chrono::DateTime<chrono::Utc>>,
    pub kind: Kind,
}

/// A listed key and when it was last written.
pub type Listed = (String, Option<chrono::DateTime<chrono::Utc>>);

/// The error for an object larger than its reader takes.
pub fn too_large(what: &str, max: u64) -> String {
    format!("{what} is larger than {max} bytes: {TOO_LARGE}")
}

const TOO_LARGE: &str = "not something logferry wrote there";

/// Whether a `get` failed on what is at the name, not on the store: larger than logferry
/// writes, a link, not a regular file. Such a name holds nothing logferry wrote.
pub fn is_planted(error: &str) -> bool {
    is_too_large(error)
        || error.contains("is a symbolic link inside")
        || error.contains("is not a regular file")
        || error.contains("Is a directory")
}

/// Whether a `get` failed because the object is larger than asked for.
pub fn is_too_large(error: &str) -> bool {
    error.ends_with(TOO_LARGE)
}
