//! The spool's file format: a magic line, one JSON metadata line, the payload. Written under a
//! temp name, fsync'd, renamed into place and the directory fsync'd, so a crash leaves either
//! a whole file or a temp file that the next start removes.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use logferry_sink::{BatchMeta, SealedBatch};

use super::SpoolKey;

/// The first line of a spool, dead-letter or sealed-spill file.
pub const MAGIC: &[u8] = b"LFSPOOL1\n";
/// A metadata line longer than this is not one logferry wrote.
const MAX_HEADER: u64 = 1 << 20;

pub(super) fn file_name(key: &SpoolKey, id: &str) -> String {
    format!("{:020}{}-{id}.batch", key.0, key.1)
}

pub(super) fn parse_name(name: &str) -> Option<SpoolKey> {
    let stem = name.strip_suffix(".batch")?;
    let (head, _) = stem.split_once('-')?;
    let digits = head.get(..20)?;
    let suffix = head.get(20..)?;
    Some((digits.parse().ok()?, suffix.to_string()))
}

/// Writes a batch file: magic line, JSON metadata line, payload.
pub fn write_file(path: &Path, b: &SealedBatch) -> std::io::Result<()> {
    write_parts(path, &b.meta, std::slice::from_ref(&b.payload))
}

pub(super) fn write_parts(path: &Path, meta: &BatchMeta, parts: &[Bytes]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let header = serde_json::to_vec(meta).map_err(std::io::Error::other)?;
    let res = (|| {
        // Owner only (0600, no link followed): a batch holds records in clear unless sealed.
        let mut f = crate::private_fs::create(&tmp)?;
        f.write_all(MAGIC)?;
        f.write_all(&header)?;
        f.write_all(b"\n")?;
        for p in parts {
            f.write_all(p)?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if res.is_err() {
        // A full disk leaves no half file behind to take the room the retry needs.
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

fn bad(path: &Path, what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("{}: {what}", path.display()),
    )
}

pub fn read_file(path: &Path) -> std::io::Result<(BatchMeta, Bytes)> {
    let data = std::fs::read(path)?;
    let rest = data
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad(path, "not a spool file"))?;
    let nl = memchr::memchr(b'\n', rest).ok_or_else(|| bad(path, "no header"))?;
    let meta: BatchMeta =
        serde_json::from_slice(&rest[..nl]).map_err(|e| bad(path, &e.to_string()))?;
    let start = MAGIC.len() + nl + 1;
    Ok((meta, Bytes::from(data).slice(start..)))
}

/// The metadata and payload size, reading only the header: opening a spool of many large
/// batches must not read them all.
pub(super) fn read_header(path: &Path) -> std::io::Result<(BatchMeta, u64)> {
    let f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let mut r = std::io::BufReader::new(f).take(MAGIC.len() as u64 + MAX_HEADER);
    let mut magic = vec![0u8; MAGIC.len()];
    std::io::Read::read_exact(&mut r, &mut magic).map_err(|_| bad(path, "not a spool file"))?;
    if magic != MAGIC {
        return Err(bad(path, "not a spool file"));
    }
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)?;
    if line.pop() != Some(b'\n') {
        return Err(bad(path, "no header"));
    }
    let meta: BatchMeta = serde_json::from_slice(&line).map_err(|e| bad(path, &e.to_string()))?;
    let size = len.saturating_sub((MAGIC.len() + line.len() + 1) as u64);
    Ok((meta, size))
}

use std::io::Read as _;

/// The key id a sealed spool-format file (a dead letter, or its temp file) names in its
/// payload's header; `None` for a file that is not sealed. Reads the magic line, the metadata
/// line (at most [`MAX_HEADER`]) and the header only.
pub(crate) fn sealed_key_id(path: &Path) -> std::io::Result<Option<String>> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    let mut r = std::io::BufReader::new(f).take(MAGIC.len() as u64 + MAX_HEADER + 8192);
    let mut magic = vec![0u8; MAGIC.len()];
    if r.read_exact(&mut magic).is_err() || magic != MAGIC {
        return Ok(None);
    }
    let mut meta = Vec::new();
    r.read_until(b'\n', &mut meta)?;
    if meta.last() != Some(&b'\n') {
        return Ok(None);
    }
    Ok(logferry_vault::crypt::Header::read(&mut r)
        .ok()
        .map(|(h, _)| h.key_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let k = (42, "ab".to_string());
        assert_eq!(parse_name(&file_name(&k, "0190-uuid")), Some(k));
    }
}
