//! Each stream's digests and entries in order: digests linked to the ones before and covering
//! every period, entries numbered without gaps and hash-chained.

use std::collections::HashMap;

use logferry_integrity::chain::{self, DigestFile, Entry};

use super::{in_range, Options, Report};

pub(super) fn check_digest_chain(
    r: &mut Report,
    stream: &str,
    d: &[(String, DigestFile)],
    o: &Options,
) {
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

pub(super) fn check_sequence(
    r: &mut Report,
    stream: &str,
    entries: &mut Vec<Entry>,
    from_start: bool,
) {
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
