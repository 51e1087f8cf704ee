//! `logferry verify`: checks an integrity sink's archive against its signed digests, trusting
//! neither logferry's state nor the storage: every digest's signature and link to the one
//! before, the periods they cover, each stream's sequence numbers and hash chain, each listed
//! object's bytes, and objects that no digest lists. Crash replays (records sealed twice) are
//! counted apart: they are not tampering.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use logferry_integrity::chain::{self, DigestFile, Entry};
use logferry_integrity::chained::parse_time;
use logferry_sink::store::LedgerStore;
use logferry_sink::Compression;

mod objects;
mod receipts;
mod report;
mod sequence;

use objects::check_objects;
use receipts::{check_access, check_receipt};
pub use report::{Problem, Report, StreamSummary};
use sequence::{check_digest_chain, check_sequence};

/// How far in the future a modification time may be before it is an anomaly (clocks differ).
const CLOCK_SLACK: chrono::TimeDelta = chrono::TimeDelta::minutes(5);
/// A stream's period, and how late its next digest may be before the stream is stale.
const PERIOD: chrono::TimeDelta = chrono::TimeDelta::hours(1);
const STALE_SLACK: chrono::TimeDelta = chrono::TimeDelta::minutes(15);
/// What an object may inflate to unless told otherwise (`--max-inflated`).
pub const DEFAULT_MAX_INFLATED: u64 = 4 << 30;
/// An object written later than this before the last digest's end is pending, not foreign:
/// S3 gives last-modified times in whole seconds, and clocks differ a little.
pub const PENDING_SLACK: chrono::TimeDelta = chrono::TimeDelta::seconds(2);

pub struct Options {
    /// The sink judged: a digest of another sink (signed with the same key) is foreign.
    pub sink: String,
    /// Digests are under `<prefix>/_digests/`.
    pub prefix: String,
    /// Where the sink's objects are (its key's static prefix): listed for foreign objects.
    pub data_prefix: String,
    pub compression: Compression,
    /// The sink writes Parquet: its objects' hashes are checked, replays are not counted.
    pub parquet: bool,
    pub public_key: Vec<u8>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// The sink's key ring, when its KEK is at hand: encrypted objects are then decrypted to
    /// count replays (hashes never need it).
    pub keys: Option<Arc<logferry_vault::keys::KeyRing>>,
    /// Where the sink keeps `_keys/` and `_receipts/` when it encrypts (else those names are
    /// data like any other).
    pub ledger_prefix: Option<String>,
    /// The instant the archive is judged at: now, or a past one for an audit (`--as-of`).
    pub as_of: DateTime<Utc>,
    /// An object that inflates past this is reported and its replays are not counted.
    pub max_inflated: u64,
}

/// Why the archive could not be judged at all (what is wrong in it goes in the [`Report`]).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Listing or reading the store failed (its words).
    #[error("{0}")]
    Store(String),
}

impl VerifyError {
    /// Whatever error type the store gives, by its words.
    fn store(e: impl std::fmt::Display) -> VerifyError {
        VerifyError::Store(e.to_string())
    }
}

fn with_slash(prefix: &str) -> String {
    match prefix.trim_matches('/') {
        "" => String::new(),
        p => format!("{p}/"),
    }
}

/// Whether a digest closed its stream on purpose: marked so, or (written before the mark
/// existed) ending off the hour, which only a stop's close does.
fn closed_by_stop(body: &chain::DigestBody) -> bool {
    match body.closed_by.as_deref() {
        Some(c) => c == "stop",
        None => parse_time(&body.to)
            .is_some_and(|t| t.timestamp() % 3600 != 0 || t.timestamp_subsec_nanos() != 0),
    }
}

/// Reports a listed name that is not a regular file; true when it was one.
fn plain_file(r: &mut Report, s: &logferry_sink::store::Stored) -> bool {
    use logferry_sink::store::Kind;
    match s.kind {
        Kind::File => true,
        Kind::Symlink => {
            r.problem(
                "symlink",
                format!(
                    "{} is a symbolic link in the archive (logferry writes none)",
                    s.key
                ),
            );
            false
        }
        Kind::Other => {
            r.problem(
                "not_a_file",
                format!("{} is a FIFO, socket or device in the archive", s.key),
            );
            false
        }
    }
}

fn in_range(o: &Options, from: &str, to: &str) -> bool {
    let (Some(f), Some(t)) = (parse_time(from), parse_time(to)) else {
        return true;
    };
    o.from.is_none_or(|a| t > a) && o.to.is_none_or(|b| f < b)
}

pub async fn run(store: Arc<dyn LedgerStore>, o: &Options) -> Result<Report, VerifyError> {
    let mut r = Report::default();
    let base = if o.prefix.is_empty() {
        String::new()
    } else {
        format!("{}/", o.prefix)
    };
    let digest_prefix = format!("{base}{}/", chain::DIGESTS);
    let mut digest_keys = Vec::new();
    for s in store
        .list_all(&digest_prefix)
        .await
        .map_err(VerifyError::store)?
    {
        if plain_file(&mut r, &s) {
            digest_keys.push(s.key);
        }
    }
    // Only logferry's own names at the places it writes them are not data: digests under the
    // integrity prefix, the ledger and receipts under the ledger prefix (when the sink
    // encrypts), sidecars of listed objects. Everything else must be in a digest.
    let ledger = o.ledger_prefix.as_deref().map(with_slash);
    // Access receipts (`export`, `replay`): beside the ledger, else beside the digests.
    let access_under = format!(
        "{}{}",
        ledger.clone().unwrap_or_else(|| with_slash(&o.prefix)),
        crate::export::receipt::ACCESS_DIR
    );
    let own = |k: &str| {
        k.starts_with(&digest_prefix)
            || k.starts_with(&access_under)
            || ledger.as_deref().is_some_and(|l| {
                k.starts_with(&format!("{l}{}/", "_keys"))
                    || k.starts_with(&format!("{l}{}/", "_receipts"))
            })
    };
    // The ledger's and receipts' places hold regular files only, and receipts are receipts.
    let mut ledger_keys: Option<objects::LedgerKeys> = None;
    if let Some(l) = &ledger {
        let under = format!("{l}_receipts/");
        let mut shredded: HashSet<String> = HashSet::new();
        let mut held = objects::LedgerKeys::default();
        for s in store.list_all(&under).await.map_err(VerifyError::store)? {
            if !plain_file(&mut r, &s) {
                continue;
            }
            if s.key.starts_with(&access_under) && check_access(&mut r, &store, o, &s.key).await {
                continue;
            }
            shredded.extend(check_receipt(&mut r, &store, o, &under, &s.key).await);
        }
        // A key a signed receipt erased, back in the ledger: someone kept a copy and put it
        // back, and the erased hour reads again.
        for s in store
            .list_all(&format!("{l}_keys/"))
            .await
            .map_err(VerifyError::store)?
        {
            if !plain_file(&mut r, &s) {
                continue;
            }
            let id = s
                .key
                .rsplit('/')
                .next()
                .and_then(|n| n.strip_suffix(".key"))
                .unwrap_or("");
            held.note(&s.key[l.len() + "_keys/".len()..]);
            if shredded.contains(id) {
                r.problem(
                    "key_resurrected",
                    format!("{}: key {id} was erased (a signed shredding receipt lists it) and is in the ledger again: the erased hour can be read", s.key),
                );
            }
        }
        held.erased = shredded;
        ledger_keys = Some(held);
    }
    if ledger.is_none() {
        for s in store
            .list_all(&access_under)
            .await
            .map_err(VerifyError::store)?
        {
            if plain_file(&mut r, &s) && !check_access(&mut r, &store, o, &s.key).await {
                r.problem(
                    "receipt_forged",
                    format!("{} is not an access receipt", s.key),
                );
            }
        }
    }
    let listed: Vec<logferry_sink::store::Stored> = store
        .list_all(&o.data_prefix)
        .await
        .map_err(VerifyError::store)?
        .into_iter()
        .filter(|s| !own(&s.key))
        .collect();
    let mut streams: BTreeMap<String, Vec<(String, DigestFile)>> = BTreeMap::new();
    for key in &digest_keys {
        let Some(bytes) = store
            .get(key, chain::MAX_DIGEST)
            .await
            .map_err(VerifyError::store)?
        else {
            r.problem("digest_missing", format!("{key} was listed and is gone"));
            continue;
        };
        let f = match chain::parse_digest(&bytes) {
            Ok(f) => f,
            Err(e) => {
                r.problem("digest_unreadable", format!("{key}: {e}"));
                continue;
            }
        };
        if f.signed_by(&o.public_key) && !o.sink.is_empty() && f.body.sink != o.sink {
            r.problem(
                "digest_foreign_sink",
                format!(
                    "{key}: a digest of sink {:?}, not of {:?}: copied from another archive",
                    f.body.sink, o.sink
                ),
            );
            continue;
        }
        if !f.signed_by(&o.public_key) {
            r.problem(
                "bad_signature",
                format!("{key}: the signature is not the given public key's (altered, or signed with another key)"),
            );
            continue;
        }
        // A digest of a period that ends after the time judged at was written after it.
        if parse_time(&f.body.to).is_some_and(|t| t > o.as_of + CLOCK_SLACK) {
            r.after_as_of += 1;
            continue;
        }
        // Its name is recomputed from what it signs: the period's start, or a suffixed name
        // taken because something else held that one.
        match parse_time(&f.body.from) {
            Some(from) if *key == chain::digest_key(&o.prefix, &f.body.stream, from) => {}
            Some(from)
                if (1..=chain::MAX_DIGEST_SUFFIX)
                    .any(|n| *key == chain::digest_key_n(&o.prefix, &f.body.stream, from, n)) =>
            {
                r.problem(
                    "digest_name_taken",
                    format!("{key}: written under another name because a file logferry did not write held {}", chain::digest_key(&o.prefix, &f.body.stream, from)),
                );
            }
            _ => {
                r.problem(
                    "digest_misplaced",
                    format!("{key}: a signed digest, but not at the name its period gives"),
                );
                continue;
            }
        }
        streams
            .entry(f.body.stream.clone())
            .or_default()
            .push((key.clone(), f));
    }
    let mut listed_entries: HashMap<String, (String, Entry)> = HashMap::new();
    let mut newest_to: Option<DateTime<Utc>> = None;
    let mut all_entries: Vec<(String, Entry)> = Vec::new();
    let horizon = o.to.map_or(o.as_of, |t| t.min(o.as_of));
    // Objects newer than the last digest are pending only while a stream may still be writing
    // them: a stopped or stale archive has no pending objects, only foreign ones.
    let mut any_running = false;
    for (stream, mut digests) in streams {
        digests.sort_by(|a, b| a.1.body.from.cmp(&b.1.body.from));
        // A stream whose newest digest is older than a period and a slack, and that no stop
        // closed, went quiet without saying so: its tail may have been cut off.
        let newest = digests.last().map(|(_, f)| &f.body);
        let newest_end = newest.and_then(|b| parse_time(&b.to));
        let state = match (newest, newest_end) {
            (Some(b), _) if closed_by_stop(b) => "stopped",
            (Some(_), Some(end)) if end + PERIOD + STALE_SLACK < horizon => {
                r.problem(
                    "stale",
                    format!("stream {stream}: its newest digest ends at {}, more than an hour before {}, and no stop closed it: digests or objects after it may have been removed", chain::time_text(end), chain::time_text(horizon)),
                );
                "stale"
            }
            _ => {
                any_running = true;
                "running"
            }
        };
        for (_, f) in &digests {
            for e in &f.body.entries {
                listed_entries.insert(e.key.clone(), (stream.clone(), e.clone()));
            }
            newest_to = newest_to.max(parse_time(&f.body.to));
        }
        check_digest_chain(&mut r, &stream, &digests, o);
        let chosen: Vec<&(String, DigestFile)> = digests
            .iter()
            .filter(|(_, f)| in_range(o, &f.body.from, &f.body.to))
            .collect();
        let mut entries: Vec<Entry> = chosen
            .iter()
            .flat_map(|(_, f)| f.body.entries.iter().cloned())
            .collect();
        entries.sort_by_key(|e| e.seq);
        check_sequence(&mut r, &stream, &mut entries, o.from.is_none());
        r.digests += chosen.len();
        r.streams.push(StreamSummary {
            stream: stream.clone(),
            digests: chosen.len(),
            first_seq: entries.first().map(|e| e.seq),
            last_seq: entries.last().map(|e| e.seq),
            from: chosen.first().map(|(_, f)| f.body.from.clone()),
            to: chosen.last().map(|(_, f)| f.body.to.clone()),
            state,
            newest_to: newest_end.map(chain::time_text),
        });
        all_entries.extend(entries.into_iter().map(|e| (stream.clone(), e)));
    }
    check_objects(&mut r, &store, o, &all_entries, ledger_keys.as_ref()).await?;
    // Key ledger entries logferry did not write (its KEK or signing key at hand to tell).
    // When no entry at all unwraps, the KEK at hand is another one, not every entry forged.
    if let Some(keys) = &o.keys {
        match keys.list(None).await {
            Ok(listed) => {
                let unwraps = |why: &str| !why.contains("does not unwrap");
                let any_opens = listed
                    .iter()
                    .any(|l| l.forged.as_deref().is_none_or(unwraps));
                for l in listed {
                    match l.forged {
                        Some(why) if any_opens || unwraps(&why) => {
                            r.problem("key_forged", format!("{}: {why}; it is never used", l.path))
                        }
                        _ => {}
                    }
                }
            }
            Err(e) => r.problem("ledger_unreadable", format!("the key ledger: {e}")),
        }
    }
    // Objects no digest lists: pending when newer than the last digest, foreign otherwise.
    // With no digest at all there is nothing to be newer than: all of them deleted, or never
    // written, and either way the archive vouches for nothing.
    let data = listed.len();
    if r.digests == 0 && data > 0 && o.from.is_none() && o.to.is_none() {
        r.problem(
            "digest_missing",
            format!("{data} objects and no signed digest in the archive"),
        );
    }
    if o.from.is_none() && o.to.is_none() {
        let now = Utc::now();
        for s in &listed {
            if !plain_file(&mut r, s) || listed_entries.contains_key(&s.key) {
                continue;
            }
            // A listed object's sidecar (directory sink).
            if s.key
                .strip_suffix(chain::SIDECAR)
                .is_some_and(|k| listed_entries.contains_key(k))
            {
                continue;
            }
            let key = &s.key;
            // Judging the past: what was written after that time was not there.
            if o.as_of + CLOCK_SLACK < now && s.modified.is_some_and(|m| m > o.as_of + CLOCK_SLACK)
            {
                r.after_as_of += 1;
                continue;
            }
            match (newest_to, s.modified) {
                (_, Some(m)) if m > now + CLOCK_SLACK => r.problem(
                    "future_mtime",
                    format!("{key} is in no digest and was modified in the future ({}): an anomaly, not a pending object", chain::time_text(m)),
                ),
                (Some(t), Some(m)) if any_running && m + PENDING_SLACK >= t => {
                    r.pending.push(key.clone())
                }
                _ => r.problem(
                    "foreign",
                    format!("{key} is in the archive and in no digest"),
                ),
            }
        }
    }
    r.clean = r.problems.is_empty();
    Ok(r)
}
