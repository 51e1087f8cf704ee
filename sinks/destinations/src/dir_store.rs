//! The ledger of a `directory` sink: files under its root, read and written beneath it.

use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;
use logferry_sink::store::{Found, Kind, LedgerStore, Listed, StoreError, Stored};

use crate::beneath::{LinkRefused, NotRegular};

/// The ledger of a `directory` sink: files under its root.
pub struct DirectoryStore {
    root: PathBuf,
}

impl DirectoryStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DirectoryStore { root: root.into() }
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        let rel = Path::new(key);
        if key.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(StoreError::InvalidKey {
                key: key.to_owned(),
            });
        }
        Ok(self.root.join(rel))
    }
}

/// A failed read of `path` as the store reports it: what the name holds when that is why (too
/// large, a link, not a regular file: nothing logferry wrote), else the I/O error.
fn read_error(path: &Path, e: std::io::Error) -> StoreError {
    let shown = path.display().to_string();
    let planted = |found| StoreError::Planted {
        path: shown.clone(),
        found,
    };
    if let Some(inner) = e.get_ref() {
        if let Some(s) = inner.downcast_ref::<StoreError>() {
            return s.clone();
        }
        if let Some(LinkRefused(link)) = inner.downcast_ref::<LinkRefused>() {
            return planted(Found::Link(link.display().to_string()));
        }
        if let Some(NotRegular(p)) = inner.downcast_ref::<NotRegular>() {
            return planted(Found::NotRegular(p.display().to_string()));
        }
    }
    if e.kind() == ErrorKind::IsADirectory {
        return planted(Found::NotRegular(shown.clone()));
    }
    StoreError::failed(format!("cannot read {shown}"), e)
}

/// A store that failed doing `what` at `path`.
fn failed(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::failed(format!("{what} {}", path.display()), e)
}

/// A file's modification time, if it is one chrono can hold (a time planted far in the future
/// or before 1970 is none, never a panic).
fn modified(meta: &std::fs::Metadata) -> Option<chrono::DateTime<chrono::Utc>> {
    let t = meta.modified().ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    chrono::DateTime::from_timestamp(i64::try_from(d.as_secs()).ok()?, d.subsec_nanos())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::failed("ledger task failed", e))?
}

#[async_trait]
impl LedgerStore for DirectoryStore {
    async fn get(&self, key: &str, max: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.path(key)?;
        let (root, key) = (self.root.clone(), key.to_owned());
        blocking(move || {
            let r = match crate::beneath::Root::open(&root, false) {
                Ok(r) => r,
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(failed("cannot read", &root, e)),
            };
            r.read(&key, max)
                .map_err(|e| read_error(&root.join(&key), e))
        })
        .await
    }

    async fn put_new(&self, key: &str, bytes: &[u8]) -> Result<bool, StoreError> {
        self.path(key)?;
        let (root, key, bytes) = (self.root.clone(), key.to_owned(), bytes.to_vec());
        blocking(move || {
            let written = crate::beneath::Root::open(&root, true)
                .and_then(|r| r.write_new(&key, &bytes))
                .map_err(|e| failed("cannot write", &root.join(&key), e))?;
            Ok(matches!(written, crate::beneath::Written::New))
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.path(key)?;
        let (root, key) = (self.root.clone(), key.to_owned());
        blocking(move || {
            // The removal is what erases the data: `remove` syncs the directory before it is
            // reported.
            match crate::beneath::Root::open(&root, false) {
                Ok(r) => r
                    .remove(&key)
                    .map_err(|e| failed("cannot remove", &root.join(&key), e)),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
                Err(e) => Err(failed("cannot remove", &root, e)),
            }
        })
        .await
    }

    async fn folders(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let start = if prefix.trim_end_matches('/').is_empty() {
            self.root.clone()
        } else {
            self.path(prefix.trim_end_matches('/'))?
        };
        blocking(move || {
            let rd = match std::fs::read_dir(&start) {
                Ok(rd) => rd,
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(failed("cannot list", &start, e)),
            };
            let mut out = Vec::new();
            for entry in rd.flatten() {
                // Real folders only: a link is never followed.
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    out.push(entry.file_name().to_string_lossy().into_owned());
                }
            }
            out.sort();
            Ok(out)
        })
        .await
    }

    async fn list_all(&self, prefix: &str) -> Result<Vec<Stored>, StoreError> {
        let start = if prefix.trim_end_matches('/').is_empty() {
            self.root.clone()
        } else {
            self.path(prefix.trim_end_matches('/'))?
        };
        let root = self.root.clone();
        blocking(move || {
            let mut out = Vec::new();
            let rel = |p: &Path| {
                p.strip_prefix(&root)
                    .ok()
                    .map(|r| r.to_string_lossy().into_owned())
            };
            let mut dirs = vec![start.clone()];
            while let Some(dir) = dirs.pop() {
                let rd = match std::fs::read_dir(&dir) {
                    Ok(rd) => rd,
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) if dir == start => return Err(failed("cannot list", &dir, e)),
                    // A folder below that cannot be read (a path too long, no permission) is
                    // listed as something that is not a file, not an end to the listing: a
                    // tree planted in the archive cannot stop a listing of everything else.
                    Err(_) => {
                        if let Some(key) = rel(&dir) {
                            out.push(Stored {
                                key,
                                modified: None,
                                kind: Kind::Other,
                            });
                        }
                        continue;
                    }
                };
                for entry in rd.flatten() {
                    let path = entry.path();
                    // Not followed: a link is listed as a link.
                    let Ok(meta) = path.symlink_metadata() else {
                        if let Some(key) = rel(&path) {
                            out.push(Stored {
                                key,
                                modified: None,
                                kind: Kind::Other,
                            });
                        }
                        continue;
                    };
                    let ty = meta.file_type();
                    if ty.is_dir() {
                        dirs.push(path);
                        continue;
                    }
                    let kind = if ty.is_file() {
                        Kind::File
                    } else if ty.is_symlink() {
                        Kind::Symlink
                    } else {
                        Kind::Other
                    };
                    if let Some(key) = rel(&path) {
                        out.push(Stored {
                            key,
                            modified: modified(&meta),
                            kind,
                        });
                    }
                }
            }
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
    }

    async fn list_modified(&self, prefix: &str) -> Result<Vec<Listed>, StoreError> {
        // Regular files only, temp files of writes under way left out.
        Ok(self
            .list_all(prefix)
            .await?
            .into_iter()
            .filter(|s| {
                s.kind == Kind::File
                    && !s
                        .key
                        .rsplit('/')
                        .next()
                        .is_some_and(|n| n.starts_with(crate::directory::TEMP_PREFIX))
            })
            .map(|s| (s.key, s.modified))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_are_created_once_listed_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let s = DirectoryStore::new(dir.path());
        assert_eq!(s.get("_keys/a/h.key", 1024).await.unwrap(), None);
        assert!(s.put_new("_keys/a/h.key", b"one").await.unwrap());
        assert!(!s.put_new("_keys/a/h.key", b"two").await.unwrap());
        assert_eq!(s.get("_keys/a/h.key", 1024).await.unwrap().unwrap(), b"one");
        assert!(s.put_new("_keys/b/h.key", b"x").await.unwrap());
        assert_eq!(
            s.list("_keys/").await.unwrap(),
            vec!["_keys/a/h.key".to_string(), "_keys/b/h.key".to_string()]
        );
        s.delete("_keys/a/h.key").await.unwrap();
        s.delete("_keys/a/h.key").await.unwrap();
        assert_eq!(s.list("_keys/a").await.unwrap(), Vec::<String>::new());
        assert!(s.get("../x", 1024).await.is_err());
        // A planted giant entry is refused without being read whole.
        std::fs::write(dir.path().join("_keys/b/big.key"), vec![b'x'; 4096]).unwrap();
        let err = s.get("_keys/b/big.key", 1024).await.unwrap_err();
        assert!(err.to_string().contains("larger than 1024 bytes"), "{err}");
    }
}

#[cfg(test)]
mod listing_tests {
    use super::*;

    /// tmpfs keeps times chrono cannot hold: such a file is listed without a time, never a
    /// panic.
    #[tokio::test]
    async fn a_time_far_in_the_future_is_listed_without_one() {
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        let s = DirectoryStore::new(dir.path());
        std::fs::create_dir_all(dir.path().join("a")).unwrap();
        let f = dir.path().join("a/far");
        std::fs::write(&f, "x").unwrap();
        let far = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1 << 62);
        std::fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(far)
            .unwrap();
        let listed = s.list_all("a/").await.unwrap();
        let far_entry = listed.iter().find(|e| e.key == "a/far").unwrap();
        assert_eq!(far_entry.modified, None);
        assert_eq!(far_entry.kind, Kind::File);
    }
}
