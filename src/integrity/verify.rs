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
use serde::Serialize;

/// The largest object read for its hash.
const MAX_OBJECT: u64 = 8 << 30;
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
    /// Digests are under `<prefix>/_digests/`.
    pub prefix: String,
    /// Where the sink's objects are (its key's static prefix): listed for foreign objects.
    pub data_prefix: String,
    pub compression: Compression,
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

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Problem {
    pub kind: &'static str,
    pub what: String,
}

#[derive(Debug, Serialize, Default)]
pub struct StreamSummary {
    pub stream: String,
    pub digests: usize,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub from: Option<String>,
    pub to: Option<String>,
    /// `running` (its newest digest is recent), `stopped` (closed by a stop) or `stale`.
    pub state: &'static str,
    /// The end of its newest digest.
    pub newest_to: Option<String>,
}

#[derive(Debug, Serialize, Default)]
pub struct Report {
    pub clean: bool,
    pub digests: usize,
    pub objects_checked: usize,
    pub streams: Vec<StreamSummary>,
    pub problems: Vec<Problem>,
    /// Objects no digest lists yet, newer than the last digest (a running stream's hour).
    pub pending: Vec<String>,
    pub replayed_records: u64,
    pub replay_batches: u64,
    /// Why replays were not counted in some objects (encrypted without the KEK at hand).
    pub replays_not_counted: usize,
    /// Judged as of a past time: digests written after it and objects modified after it were
    /// not there then, and are left out (how many).
    pub after_as_of: usize,
}

impl Report {
    fn problem(&mut self, kind: &'static str, what: String) {
        self.problems.push(Problem { kind, what });
    }

    pub fn text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} digests, {} objects checked",
            self.digests, self.objects_checked
        );
        for st in &self.streams {
            let _ = writeln!(
                s,
                "stream {}: {} digests, seq {}..{}, from {} to {}, {} (newest digest ends {})",
                st.stream,
                st.digests,
                st.first_seq.map_or("-".into(), |v| v.to_string()),
                st.last_seq.map_or("-".into(), |v| v.to_string()),
                st.from.as_deref().unwrap_or("-"),
                st.to.as_deref().unwrap_or("-"),
                st.state,
                st.newest_to.as_deref().unwrap_or("-")
            );
        }
        for p in &self.problems {
            let _ = writeln!(s, "PROBLEM {}: {}", p.kind, p.what);
        }
        for p in &self.pending {
            let _ = writeln!(s, "pending (newer than the last digest): {p}");
        }
        let _ = writeln!(
            s,
            "replays: {} records sealed again in {} batches after a crash (not tampering)",
            self.replayed_records, self.replay_batches
        );
        if self.after_as_of > 0 {
            let _ = writeln!(
                s,
                "{} digests and objects written after the time judged at were left out",
                self.after_as_of
            );
        }
        if self.replays_not_counted > 0 {
            let _ = writeln!(
                s,
                "replays not counted in {} encrypted objects",
                self.replays_not_counted
            );
        }
        let _ = writeln!(
            s,
            "{}",
            if self.clean {
                "CLEAN".to_string()
            } else {
                format!("NOT CLEAN: {} problems", self.problems.len())
            }
        );
        s
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

/// A file under the receipts' place: at a name `shred` gives (`<tenant>/<UTC
/// stamp>-<hex>.json`), a receipt of that tenant, signed by the public key. An unsigned one
/// (`shred --unsigned`) attests nothing and is named as such. Returns the key ids a valid
/// signed receipt erased.
async fn check_receipt(
    r: &mut Report,
    store: &Arc<dyn LedgerStore>,
    o: &Options,
    under: &str,
    key: &str,
) -> Vec<String> {
    use logferry_vault::shred::{Receipt, Stored, RECEIPT_FORMAT};
    let rest = key.strip_prefix(under).unwrap_or(key);
    let named = rest.split_once('/').and_then(|(t, file)| {
        let (stamp, hexpart) = file.strip_suffix(".json")?.split_once('-')?;
        let ok = stamp.len() == 16
            && chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%SZ").is_ok()
            && !hexpart.is_empty()
            && hexpart.bytes().all(|b| b.is_ascii_hexdigit())
            && logferry_sink::key::clean(t) == t;
        ok.then_some(t)
    });
    let Some(tenant) = named else {
        r.problem(
            "receipt_forged",
            format!("{key} is not at a name `logferry shred` gives a receipt"),
        );
        return Vec::new();
    };
    let stored: Option<Stored> = match store.get(key, 64 << 10).await {
        Ok(Some(b)) => serde_json::from_slice(&b).ok(),
        _ => None,
    };
    let Some(stored) = stored else {
        r.problem("receipt_forged", format!("{key} is not a receipt"));
        return Vec::new();
    };
    let receipt: Option<Receipt> = serde_json::from_str(&stored.receipt).ok();
    match (receipt, stored.signature.as_deref()) {
        (Some(rc), _) if rc.format != RECEIPT_FORMAT || rc.tenant != tenant => r.problem(
            "receipt_forged",
            format!("{key}: not a receipt of tenant {tenant:?}"),
        ),
        (Some(_), None) => r.problem(
            "receipt_unsigned",
            format!(
                "{key}: an unsigned shredding receipt (`shred --unsigned`): nothing attests it"
            ),
        ),
        (Some(rc), Some(sig))
            if logferry_integrity::signing::verify(
                &o.public_key,
                stored.receipt.as_bytes(),
                sig,
            ) =>
        {
            return rc.key_ids;
        }
        (Some(_), Some(_)) => r.problem(
            "receipt_forged",
            format!("{key}: the signature is not the public key's"),
        ),
        (None, _) => r.problem("receipt_forged", format!("{key} is not a receipt")),
    }
    Vec::new()
}

fn in_range(o: &Options, from: &str, to: &str) -> bool {
    let (Some(f), Some(t)) = (parse_time(from), parse_time(to)) else {
        return true;
    };
    o.from.is_none_or(|a| t > a) && o.to.is_none_or(|b| f < b)
}

pub async fn run(store: Arc<dyn LedgerStore>, o: &Options) -> Result<Report, String> {
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
        .map_err(|e| e.to_string())?
    {
        if plain_file(&mut r, &s) {
            digest_keys.push(s.key);
        }
    }
    // Only logferry's own names at the places it writes them are not data: digests under the
    // integrity prefix, the ledger and receipts under the ledger prefix (when the sink
    // encrypts), sidecars of listed objects. Everything else must be in a digest.
    let ledger = o.ledger_prefix.as_deref().map(with_slash);
    let own = |k: &str| {
        k.starts_with(&digest_prefix)
            || ledger.as_deref().is_some_and(|l| {
                k.starts_with(&format!("{l}{}/", "_keys"))
                    || k.starts_with(&format!("{l}{}/", "_receipts"))
            })
    };
    // The ledger's and receipts' places hold regular files only, and receipts are receipts.
    if let Some(l) = &ledger {
        let under = format!("{l}_receipts/");
        let mut shredded: HashSet<String> = HashSet::new();
        for s in store.list_all(&under).await.map_err(|e| e.to_string())? {
            if plain_file(&mut r, &s) {
                shredded.extend(check_receipt(&mut r, &store, o, &under, &s.key).await);
            }
        }
        // A key a signed receipt erased, back in the ledger: someone kept a copy and put it
        // back, and the erased hour reads again.
        for s in store
            .list_all(&format!("{l}_keys/"))
            .await
            .map_err(|e| e.to_string())?
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
            if shredded.contains(id) {
                r.problem(
                    "key_resurrected",
                    format!("{}: key {id} was erased (a signed shredding receipt lists it) and is in the ledger again: the erased hour can be read", s.key),
                );
            }
        }
    }
    let listed: Vec<logferry_sink::store::Stored> = store
        .list_all(&o.data_prefix)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|s| !own(&s.key))
        .collect();
    let mut streams: BTreeMap<String, Vec<(String, DigestFile)>> = BTreeMap::new();
    for key in &digest_keys {
        let Some(bytes) = store
            .get(key, chain::MAX_DIGEST)
            .await
            .map_err(|e| e.to_string())?
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
    check_objects(&mut r, &store, o, &all_entries).await?;
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

fn check_digest_chain(r: &mut Report, stream: &str, d: &[(String, DigestFile)], o: &Options) {
    let by_key: HashMap<&str, &DigestFile> = d.iter().map(|(k, f)| (k.as_str(), f)).collect();
    for (i, (key, f)) in d.iter().enumerate() {
        if f.body.stream != stream || !in_range(o, &f.body.from, &f.body.to) {
            continue;
        }
        match &f.body.previous {
            Some(p) => match by_key.get(p.key.as_str()) {
                Some(prev)
                    if prev.sha256 == p.sha256 && prev.signature.signature == p.signature => {}
                Some(_) => r.problem(
                    "digest_chain",
                    format!(
                        "{key} names {} with another hash or signature than it has",
                        p.key
                    ),
                ),
                None => r.problem(
                    "digest_missing",
                    format!(
                        "{} (named as the previous digest by {key}) is not in the archive",
                        p.key
                    ),
                ),
            },
            None if i > 0 => r.problem(
                "digest_chain",
                format!(
                    "{key} names no previous digest, but earlier digests of stream {stream} exist"
                ),
            ),
            None => {}
        }
        if i > 0 {
            let before = &d[i - 1].1.body;
            if before.to != f.body.from {
                r.problem(
                    "coverage_gap",
                    format!(
                        "stream {stream}: no digest covers {} to {}",
                        before.to, f.body.from
                    ),
                );
            }
        }
    }
}

fn check_sequence(r: &mut Report, stream: &str, entries: &mut Vec<Entry>, from_start: bool) {
    let mut expected = if from_start { Some(1u64) } else { None };
    let mut prev: Option<Entry> = None;
    let mut out: Vec<Entry> = Vec::with_capacity(entries.len());
    for e in entries.drain(..) {
        if let Some(p) = &prev {
            if p.seq == e.seq {
                if p.hash != e.hash || p.sha256 != e.sha256 {
                    r.problem(
                        "seq_conflict",
                        format!(
                            "stream {stream}: seq {} is listed twice with different contents",
                            e.seq
                        ),
                    );
                }
                continue;
            }
        }
        if e.hash != e.expected_hash(stream) {
            r.problem(
                "entry_hash",
                format!(
                    "stream {stream}: seq {}'s fields do not give its hash",
                    e.seq
                ),
            );
        }
        if let Some(x) = expected {
            if e.seq > x {
                r.problem(
                    "seq_gap",
                    format!(
                        "stream {stream}: seq {x}..{} missing from every digest",
                        e.seq - 1
                    ),
                );
            }
        }
        match &prev {
            Some(p) if p.seq + 1 == e.seq && e.prev != p.hash => r.problem(
                "chain_link",
                format!(
                    "stream {stream}: seq {} does not name seq {}'s hash",
                    e.seq, p.seq
                ),
            ),
            None if e.seq == 1 && e.prev != chain::GENESIS => r.problem(
                "chain_link",
                format!("stream {stream}: seq 1 does not start the chain"),
            ),
            _ => {}
        }
        if let Some(reason) = &e.dead_letter {
            r.problem(
                "dead_letter",
                format!("stream {stream}: seq {} (batch {}, {} records) was refused by the sink and kept as a dead letter: {reason}", e.seq, e.batch_id, e.records),
            );
        }
        expected = Some(e.seq + 1);
        prev = Some(e.clone());
        out.push(e);
    }
    *entries = out;
}

async fn check_objects(
    r: &mut Report,
    store: &Arc<dyn LedgerStore>,
    o: &Options,
    entries: &[(String, Entry)],
) -> Result<(), String> {
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
