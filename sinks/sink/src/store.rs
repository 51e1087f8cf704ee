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
    async fn get(&self, key: &str, max: u64) -> Result<Option<Vec<u8>>, StoreError>;
    /// Writes `bytes` at `key` unless the name is taken: `Ok(true)` when written, `Ok(false)`
    /// when something was there already (it is kept).
    async fn put_new(&self, key: &str, bytes: &[u8]) -> Result<bool, StoreError>;
    /// Removes `key`; nothing there is not an error.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// Every key under `prefix`, sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .list_modified(prefix)
            .await?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }
    /// Every key under `prefix`, sorted, with its last-modified time where the store gives one.
    async fn list_modified(&self, prefix: &str) -> Result<Vec<Listed>, StoreError>;
    /// The folder names right under `prefix` (which ends in `/` or is empty), sorted: what a
    /// listing with a `/` delimiter gives. Stores that cannot list that way derive it from a
    /// full listing.
    async fn folders(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut out: Vec<String> = self
            .list_modified(prefix)
            .await?
            .into_iter()
            .filter_map(|(k, _)| {
                let rest = k.strip_prefix(prefix)?;
                rest.split_once('/').map(|(f, _)| f.to_string())
            })
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }
    /// Everything under `prefix` as it is stored: links, temp files and special files too
    /// (an object store holds only objects). For `verify`, which must see every name.
    async fn list_all(&self, prefix: &str) -> Result<Vec<Stored>, StoreError> {
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

/// Why a [`LedgerStore`] call failed. The variants are what a caller decides on: a name that
/// holds something logferry never wrote ([`StoreError::is_planted`]) is passed over, a store
/// that fails is an error (a key made beside the one a replay needs would fork the ledger).
/// `Display` is the sentence for a log line or a `verify` report; a cause is in its words, not
/// behind `source()`, so that a chain printed with `{:#}` says it once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// More bytes at the name than the reader takes, found before they are read: a planted
    /// giant file cannot make the reader allocate it. `what` names the object (a quoted key,
    /// or a path).
    #[error("{what} is larger than {max} bytes: not something logferry wrote there")]
    TooLarge { what: String, max: u64 },
    /// Something at the name that logferry never writes there: what it holds is not ours.
    /// `path` is where it was read.
    #[error("cannot read {path}: {found}")]
    Planted { path: String, found: Found },
    /// A key that is not a relative path of plain names: it can name nothing in the store.
    #[error("ledger key {key:?} is not a relative path")]
    InvalidKey { key: String },
    /// The place the store writes to was missing and has just been made (a container): the
    /// same call again finds it.
    #[error("{place} was just created; trying again")]
    Created { place: String },
    /// The store failed or refused: I/O, the network, a permission to grant. `what` is what
    /// was being done where (an operation and a key, path, bucket or container; never a
    /// secret), `cause` why.
    #[error("{what}: {cause}")]
    Failed { what: String, cause: String },
}

/// What was found at a name in place of a file logferry wrote, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Found {
    /// A symbolic link (never followed): the name itself or a folder on the way to it.
    #[error("{0} is a symbolic link inside the sink's root: refused (logferry never writes or reads through a link it did not make)")]
    Link(String),
    /// Not a regular file: a folder, a FIFO, a socket or a device.
    #[error("{0} is not a regular file")]
    NotRegular(String),
}

impl StoreError {
    /// The error for an object larger than its reader takes.
    pub fn too_large(what: impl Into<String>, max: u64) -> Self {
        StoreError::TooLarge {
            what: what.into(),
            max,
        }
    }

    /// A store that failed doing `what`, because of `cause`.
    pub fn failed(what: impl Into<String>, cause: impl std::fmt::Display) -> Self {
        StoreError::Failed {
            what: what.into(),
            cause: cause.to_string(),
        }
    }

    /// Whether a `get` failed on what is at the name, not on the store: larger than logferry
    /// writes, a link, not a regular file. Such a name holds nothing logferry wrote.
    pub fn is_planted(&self) -> bool {
        matches!(
            self,
            StoreError::TooLarge { .. } | StoreError::Planted { .. }
        )
    }

    /// Whether a `get` failed because the object is larger than asked for.
    pub fn is_too_large(&self) -> bool {
        matches!(self, StoreError::TooLarge { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_what_the_strings_said_and_classify_by_kind() {
        let big = StoreError::too_large("\"k\"", 10);
        let text = "\"k\" is larger than 10 bytes: not something logferry wrote there";
        assert_eq!(big.to_string(), text);
        assert!(big.is_too_large() && big.is_planted());
        let link = StoreError::Planted {
            path: "/r/t/k".into(),
            found: Found::Link("/r/t".into()),
        };
        let text = link.to_string();
        assert!(text.starts_with("cannot read /r/t/k: /r/t is a symbolic link inside"));
        assert!(link.is_planted() && !link.is_too_large());
        let fifo = StoreError::Planted {
            path: "/r/k".into(),
            found: Found::NotRegular("/r/k".into()),
        };
        let text = "cannot read /r/k: /r/k is not a regular file";
        assert_eq!(fifo.to_string(), text);
        let down = StoreError::failed("cannot read \"k\" in bucket \"b\"", "S3 503 SlowDown");
        let text = "cannot read \"k\" in bucket \"b\": S3 503 SlowDown";
        assert_eq!(down.to_string(), text);
        assert!(!down.is_planted());
    }
}
