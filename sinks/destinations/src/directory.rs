//! The `directory` sink: objects written under a local root with the same keys object stores use.

use std::io::ErrorKind;
use std::path::PathBuf;

use async_trait::async_trait;

use crate::beneath::{Root, Written};
use logferry_sink::{CheckError, Outcome, SealedBatch, Sink};

/// Prefix of the temporary files an object is written to before its rename. A crash can leave
/// one behind; they are never read as objects and are removed when the sink starts.
pub const TEMP_PREFIX: &str = ".logferry-tmp.";

/// Writes each batch to `root/key` atomically: a temp file of a random name in the target
/// directory (created exclusively, 0600), fsync, a hard link to the name, fsync of the directory.
/// A reader never sees a half-written object, a retry of the same batch finds identical bytes,
/// and nothing is written through a link planted in the root (`beneath`).
pub struct DirectorySink {
    root: PathBuf,
}

impl DirectorySink {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DirectorySink { root: root.into() }
    }

    /// Removes temp files left by a crash. Call once before the first `send`.
    pub fn remove_leftovers(&self) -> std::io::Result<usize> {
        if !self.root.exists() {
            return Ok(0);
        }
        let mut removed = 0;
        let mut dirs = vec![self.root.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                let ty = entry.file_type()?;
                if ty.is_dir() {
                    dirs.push(entry.path());
                } else if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                    std::fs::remove_file(entry.path())?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

/// The `.meta.json` beside a chained object: its metadata as the object stores keep it.
fn sidecar(link: &logferry_sink::ChainLink) -> String {
    let m: serde_json::Map<String, serde_json::Value> = logferry_sink::batch::metadata(link)
        .into_iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v)))
        .collect();
    serde_json::Value::Object(m).to_string()
}

#[async_trait]
impl Sink for DirectorySink {
    /// `Delivered` once the object is renamed into place and its directory synced. I/O errors
    /// are `Retry` (a full disk or a permission an operator fixes should not lose data); a key
    /// that would leave the root is `Rejected`.
    async fn send(&self, batch: &SealedBatch) -> Outcome {
        let root = self.root.clone();
        let key = batch.meta.key.clone();
        let payload = batch.payload.clone();
        let shown = self.root.join(&batch.meta.key).display().to_string();
        let sidecar = batch.meta.chain.as_ref().map(sidecar);
        let res = tokio::task::spawn_blocking(move || {
            let r = Root::open(&root, true)?;
            let w = r.write_new(&key, &payload)?;
            // The object's metadata, as object stores keep it: after the object, so that a
            // sidecar never names bytes that are not there. A replay writes the same text.
            if let (Written::New | Written::Same, Some(text)) = (&w, sidecar) {
                r.write_new(
                    &format!("{key}{}", logferry_sink::batch::SIDECAR),
                    text.as_bytes(),
                )?;
            }
            Ok::<_, std::io::Error>(w)
        })
        .await;
        match res {
            Ok(Ok(Written::New | Written::Same)) => Outcome::Delivered,
            Ok(Ok(Written::Taken)) => Outcome::Rejected {
                reason: format!("a different file already exists at {shown}; it is kept, this batch is set aside"),
            },
            // A link planted in the archive: never written through; the batch is set aside
            // (dead-lettered, counted) and the link named.
            Ok(Err(e)) if crate::beneath::is_link_refused(&e) => {
                tracing::error!(error = %e, "a symbolic link inside the directory sink's root was refused");
                Outcome::Rejected {
                    reason: format!("cannot write {shown}: {e}"),
                }
            }
            // A name the file system can never take (too long, invalid, not a relative
            // path, a file where a folder of the key should be): retrying cannot help, and
            // this batch must not hold the others.
            Ok(Err(e))
                if matches!(
                    e.kind(),
                    ErrorKind::InvalidInput
                        | ErrorKind::InvalidFilename
                        | ErrorKind::NotADirectory
                ) =>
            {
                Outcome::Rejected {
                    reason: format!("cannot write {shown}: {e}"),
                }
            }
            Ok(Err(e)) => Outcome::Retry {
                after: None,
                reason: format!("cannot write {shown}: {e}"),
            },
            Err(e) => Outcome::Retry {
                after: None,
                reason: format!("write task failed: {e}"),
            },
        }
    }

    async fn check(&self) -> Result<(), CheckError> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            Root::open(&root, true)
                .and_then(|r| r.probe())
                .map_err(|e| format!("directory {} is not writable: {e}", root.display()))
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(CheckError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use logferry_sink::{BatchMeta, Compression, Encoding};

    fn batch(key: &str) -> SealedBatch {
        let now = chrono::Utc::now();
        SealedBatch {
            meta: BatchMeta {
                id: "id1".into(),
                source: "s".into(),
                sink: "d".into(),
                key: key.into(),
                record_count: 1,
                first_time: now,
                last_time: now,
                sha256: String::new(),
                uncompressed_bytes: 3,
                encoding: Encoding::Ndjson,
                compression: Compression::None,
                head_len: 0,
                tail_len: 0,
                sealed_at: None,
                tenant: None,
                key_id: None,
                spool_encrypted: false,
                chain: None,
            },
            payload: Bytes::from_static(b"{}\n"),
        }
    }

    #[tokio::test]
    async fn writes_object_and_replaces_it_on_retry() {
        let dir = tempfile::tempdir().unwrap();
        let sink = DirectorySink::new(dir.path());
        assert_eq!(sink.send(&batch("a/b/c.ndjson")).await, Outcome::Delivered);
        assert_eq!(sink.send(&batch("a/b/c.ndjson")).await, Outcome::Delivered);
        assert_eq!(
            std::fs::read(dir.path().join("a/b/c.ndjson")).unwrap(),
            b"{}\n"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path().join("a/b")).unwrap().collect();
        assert_eq!(names.len(), 1, "no temp file left behind");
    }

    #[tokio::test]
    async fn rejects_a_key_outside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let sink = DirectorySink::new(dir.path());
        assert!(matches!(
            sink.send(&batch("../x")).await,
            Outcome::Rejected { .. }
        ));
        assert!(matches!(
            sink.send(&batch("/etc/x")).await,
            Outcome::Rejected { .. }
        ));
    }

    #[test]
    fn leftovers_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("x")).unwrap();
        std::fs::write(
            dir.path().join("x").join(format!("{TEMP_PREFIX}abc")),
            b"half",
        )
        .unwrap();
        std::fs::write(dir.path().join("x/keep.gz"), b"whole").unwrap();
        assert_eq!(
            DirectorySink::new(dir.path()).remove_leftovers().unwrap(),
            1
        );
        assert!(dir.path().join("x/keep.gz").exists());
    }
}
