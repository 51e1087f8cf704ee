//! The objects the digests list: their bytes against the listed hashes, and the records
//! sealed again after a crash (replays), counted while each object streams past.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use logferry_integrity::chain::{self, Entry};
use logferry_sink::store::LedgerStore;
use logferry_sink::Compression;

use super::{Options, Report, VerifyError};

/// The largest object read for its hash.
const MAX_OBJECT: u64 = 8 << 30;

/// What the key ledger holds, and what signed receipts erased: an encrypted object's key
/// must be in one of them.
#[derive(Default)]
pub(super) struct LedgerKeys {
    ids: HashSet<String>,
    /// Entries named `<tenant>/<hour>.key` (written before key ids were in names).
    legacy: HashSet<(String, String)>,
    pub(super) erased: HashSet<String>,
}

impl LedgerKeys {
    /// A name under `_keys/`: `<tenant>/<hour>/<id>.key` or `<tenant>/<hour>.key`.
    pub(super) fn note(&mut self, rel: &str) {
        let parts: Vec<&str> = rel.split('/').collect();
        match parts[..] {
            [_, _, file] => {
                if let Some(id) = file.strip_suffix(".key") {
                    self.ids.insert(id.to_string());
                }
            }
            [t, file] => {
                if let Some(h) = file.strip_suffix(".key") {
                    self.legacy.insert((t.to_string(), h.to_string()));
                }
            }
            _ => {}
        }
    }

    fn holds(&self, h: &logferry_vault::crypt::Header) -> bool {
        self.ids.contains(&h.key_id)
            || self.erased.contains(&h.key_id)
            || self.legacy.contains(&(h.tenant.clone(), h.hour.clone()))
    }
}

pub(super) async fn check_objects(
    r: &mut Report,
    store: &Arc<dyn LedgerStore>,
    o: &Options,
    entries: &[(String, Entry)],
    ledger: Option<&LedgerKeys>,
) -> Result<(), VerifyError> {
    let by_hash: HashMap<&str, &str> = entries
        .iter()
        .map(|(_, e)| (e.sha256.as_str(), e.key.as_str()))
        .collect();
    let mut seen: HashSet<[u8; 16]> = HashSet::new();
    for (_, e) in entries.iter().filter(|(_, e)| e.dead_letter.is_none()) {
        // Never more than the digest lists: a giant replacement is found without reading it.
        let bytes = match store.get(&e.key, e.bytes.min(MAX_OBJECT)).await {
            Err(m) if m.is_too_large() => {
                r.problem(
                    "object_modified",
                    format!(
                        "{} (seq {}) is larger than the {} bytes listed",
                        e.key, e.seq, e.bytes
                    ),
                );
                continue;
            }
            // A link, a folder or a FIFO at its name, or a store that fails on it.
            Err(m) => {
                r.problem(
                    "object_unreadable",
                    format!("{} (seq {}): {m}", e.key, e.seq),
                );
                continue;
            }
            Ok(b) => b,
        };
        let Some(bytes) = bytes else {
            r.problem(
                "object_missing",
                format!(
                    "{} (seq {}) is listed in a digest and not in the archive",
                    e.key, e.seq
                ),
            );
            continue;
        };
        r.objects_checked += 1;
        let sha = chain::sha256_hex(&bytes);
        if sha != e.sha256 {
            match by_hash.get(sha.as_str()) {
                Some(other) => r.problem(
                    "object_swapped",
                    format!(
                        "{} (seq {}) holds the bytes listed for {other}",
                        e.key, e.seq
                    ),
                ),
                None => r.problem(
                    "object_modified",
                    format!(
                        "{} (seq {}): its bytes are not the ones listed (sha256 {sha}, listed {})",
                        e.key, e.seq, e.sha256
                    ),
                ),
            }
            continue;
        }
        // A sealed object whose key is neither in the ledger nor erased by a signed receipt:
        // its key was deleted without a trace, and its records can no longer be read.
        if let (Some(l), true) = (ledger, e.key.ends_with(logferry_vault::encrypted::SUFFIX)) {
            if let Ok((h, _)) = logferry_vault::crypt::Header::read(&mut &bytes[..]) {
                if !l.holds(&h) {
                    r.problem(
                        "key_missing",
                        format!(
                            "{} (seq {}): its key (tenant {:?}, hour {}) is not in the ledger and no signed shredding receipt erased it",
                            e.key, e.seq, h.tenant, h.hour
                        ),
                    );
                }
            }
        }
        if o.parquet {
            // Records are in a column, not lines: only the hashes above are checked.
            r.replays_not_counted += 1;
            continue;
        }
        if e.key.ends_with(logferry_vault::encrypted::SUFFIX) {
            match decrypted(o.keys.as_deref(), &bytes).await {
                Some(plain) => count_replays(r, o, e, &plain, &mut seen),
                None => r.replays_not_counted += 1,
            }
            continue;
        }
        count_replays(r, o, e, &bytes, &mut seen);
    }
    Ok(())
}

/// An encrypted object's compressed plaintext, when its key can be had (not shredded, the
/// KEK at hand).
async fn decrypted(keys: Option<&logferry_vault::keys::KeyRing>, bytes: &[u8]) -> Option<Vec<u8>> {
    let keys = keys?;
    let (h, _) = logferry_vault::crypt::Header::read(&mut &bytes[..]).ok()?;
    let key = keys.open(&h.tenant, &h.hour, &h.key_id).await.ok()?;
    let mut out = Vec::new();
    logferry_vault::crypt::decrypt(&mut &bytes[..], &mut out, |_| Ok(key)).ok()?;
    Some(out)
}

/// Counts the records of this batch already seen in an earlier one (in sequence order). The
/// object is inflated as a stream and each line hashed as it passes: memory stays a buffer
/// and a hash per record the digest lists, whatever the object inflates to; past
/// `max_inflated` bytes, or more lines than the records listed, it is a reported problem.
fn count_replays(
    r: &mut Report,
    o: &Options,
    e: &Entry,
    bytes: &[u8],
    seen: &mut HashSet<[u8; 16]>,
) {
    use sha2::{Digest, Sha256};
    let key = e.key.as_str();
    // A signed count: a batch never holds more lines than records (and an empty last one).
    let max_lines = e.records.saturating_add(2);
    use std::io::{BufRead, Read};
    let inflate: Box<dyn Read + '_> = match o.compression {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(bytes)),
        Compression::Zstd => match zstd::stream::read::Decoder::new(bytes) {
            Ok(d) => Box::new(d),
            Err(e) => {
                r.problem("undecodable", format!("{key}: {e}; replays not counted"));
                return;
            }
        },
        Compression::None => Box::new(bytes),
    };
    let mut reader = std::io::BufReader::with_capacity(1 << 16, inflate.take(o.max_inflated + 1));
    let mut mine = HashSet::new();
    let (mut line, mut len, mut total, mut lines) = (Sha256::new(), 0u64, 0u64, 0u64);
    fn finish(mine: &mut HashSet<[u8; 16]>, line: &mut Sha256, len: &mut u64) {
        let d = std::mem::take(line).finalize();
        if *len > 2 {
            let mut k = [0u8; 16];
            k.copy_from_slice(&d[..16]);
            mine.insert(k);
        }
        *len = 0;
    }
    loop {
        let buf = match reader.fill_buf() {
            Ok([]) => break,
            Ok(b) => b,
            Err(e) => {
                r.problem("undecodable", format!("{key}: {e}; replays not counted"));
                return;
            }
        };
        let n = buf.len();
        total += n as u64;
        for (i, part) in buf.split(|b| *b == b'\n').enumerate() {
            if i > 0 {
                finish(&mut mine, &mut line, &mut len);
                lines += 1;
            }
            line.update(part);
            len += part.len() as u64;
        }
        reader.consume(n);
        if lines > max_lines {
            r.problem(
                "inflate_cap",
                format!(
                    "{key} holds more lines than the {} records its digest lists; replays not counted",
                    e.records
                ),
            );
            return;
        }
    }
    finish(&mut mine, &mut line, &mut len);
    if total > o.max_inflated {
        r.problem(
            "inflate_cap",
            format!(
                "{key} inflates past {} bytes (--max-inflated); replays not counted",
                o.max_inflated
            ),
        );
        return;
    }
    // Repeats inside one batch are the source's own; only an earlier batch's are replays.
    let replayed = mine.iter().filter(|k| seen.contains(*k)).count() as u64;
    seen.extend(mine);
    if replayed > 0 {
        r.replayed_records += replayed;
        r.replay_batches += 1;
    }
}
