//! Tamper evidence: the chain link every sealed batch of an `integrity` sink carries, and the
//! entries and signed digests that list what reached the archive (`docs/verify.md`).
//!
//! A stream is one sink of one logferry instance. Its batches are numbered from 1 at seal time
//! and each names the hash of the one before, so a verifier finds gaps, reordering and edits
//! without trusting the storage. Digests are written per stream and UTC hour and signed with
//! Ed25519; each names the previous digest's hash and signature.

use chrono::{DateTime, SecondsFormat, Utc};
pub use logferry_sink::batch::{metadata, ChainLink, SIDECAR};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The `prev` of a stream's first batch.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// The first line of a chain entry's hashed text: its format version.
const ENTRY_TAG: &str = "logferry-chain/1";
/// Digests live under `<prefix>/_digests/`.
pub const DIGESTS: &str = "_digests";
/// The largest digest a reader takes: far above an hour of batches (an entry is ~700 bytes).
pub const MAX_DIGEST: u64 = 256 << 20;

/// A timestamp as the chain writes it: RFC 3339, UTC, nanoseconds.
pub fn time_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// The fields an entry's hash covers, in the order they are hashed.
pub struct Hashed<'a> {
    pub stream: &'a str,
    pub seq: u64,
    pub prev: &'a str,
    pub batch_id: &'a str,
    pub payload_sha256: &'a str,
    pub sealed_sha256: &'a str,
    pub records: u64,
    pub first_time: &'a str,
    pub last_time: &'a str,
}

/// SHA-256 (hex) of the entry's fields, one per line after [`ENTRY_TAG`]: text a short script
/// rebuilds exactly (no JSON canonical form needed).
pub fn entry_hash(h: &Hashed<'_>) -> String {
    let text = format!(
        "{ENTRY_TAG}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}",
        h.stream,
        h.seq,
        h.prev,
        h.batch_id,
        h.payload_sha256,
        h.sealed_sha256,
        h.records,
        h.first_time,
        h.last_time
    );
    sha256_hex(text.as_bytes())
}

/// One batch as a digest lists it: delivered to `key` with `sha256`, or dead-lettered.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub batch_id: String,
    /// The object's key as stored (with `.lfenc` when encrypted); empty for a dead letter.
    pub key: String,
    /// SHA-256 of the stored bytes; empty for a dead letter.
    pub sha256: String,
    pub bytes: u64,
    pub records: u64,
    pub first_time: String,
    pub last_time: String,
    pub payload_sha256: String,
    pub sealed_sha256: String,
    pub prev: String,
    pub hash: String,
    pub delivered_at: String,
    /// Why the batch is not in the archive: it was refused and kept as a dead letter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<String>,
}

impl Entry {
    /// The hash this entry's fields give (to compare with `hash`).
    pub fn expected_hash(&self, stream: &str) -> String {
        entry_hash(&Hashed {
            stream,
            seq: self.seq,
            prev: &self.prev,
            batch_id: &self.batch_id,
            payload_sha256: &self.payload_sha256,
            sealed_sha256: &self.sealed_sha256,
            records: self.records,
            first_time: &self.first_time,
            last_time: &self.last_time,
        })
    }
}

/// The previous digest, as the next one names it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PrevDigest {
    pub key: String,
    pub sha256: String,
    pub signature: String,
}

/// The signed part of a digest file (its first line).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DigestBody {
    pub version: u32,
    pub stream: String,
    pub sink: String,
    /// The period covered: batches delivered from `from` (inclusive) to `to` (exclusive).
    pub from: String,
    pub to: String,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub entries: Vec<Entry>,
    pub previous: Option<PrevDigest>,
    /// SHA-256 (hex) of the 32 public key bytes that verify the signature.
    pub public_key_sha256: String,
    pub created_at: String,
    /// What ended the period: `hour` (the hourly close) or `stop` (the process stopped: the
    /// stream is quiet on purpose). Absent in digests written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_by: Option<String>,
}

/// How many other names a digest may take when its own is squatted.
pub const MAX_DIGEST_SUFFIX: u32 = 16;

/// [`digest_key`] with a suffix `-n` before `.json` (none for `n` = 0): where a digest goes
/// when something it did not write holds its name.
pub fn digest_key_n(prefix: &str, stream: &str, from: DateTime<Utc>, n: u32) -> String {
    let key = digest_key(prefix, stream, from);
    match (n, key.strip_suffix(".json")) {
        (0, _) | (_, None) => key,
        (n, Some(stem)) => format!("{stem}-{n}.json"),
    }
}

/// The second line of a digest file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DigestSignature {
    pub signature: String,
    pub public_key_sha256: String,
}

/// A digest file as read back: its body, the exact bytes signed, and the signature line.
pub struct DigestFile {
    pub body: DigestBody,
    pub sha256: String,
    pub signed: Vec<u8>,
    pub signature: DigestSignature,
}

/// Why a digest cannot be written or read back. The cause is in the words, not behind
/// `source()`, so that a chain printed with `{:#}` says it once.
#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error("cannot write a digest: {0}")]
    Render(serde_json::Error),
    /// The first line is not a digest's body.
    #[error("not a digest ({0})")]
    NotDigest(serde_json::Error),
    /// The second line is not a signature.
    #[error("no signature line ({0})")]
    NoSignature(serde_json::Error),
}

/// The digest file for `body`: the body as one JSON line, then the signature line.
pub fn render_digest(
    body: &DigestBody,
    signer: &crate::signing::SigningKey,
) -> Result<(Vec<u8>, PrevDigest), DigestError> {
    let line = serde_json::to_vec(body).map_err(DigestError::Render)?;
    let signature = signer.sign(&line);
    let sig = DigestSignature {
        signature: signature.clone(),
        public_key_sha256: body.public_key_sha256.clone(),
    };
    let mut out = line.clone();
    out.push(b'\n');
    out.extend(serde_json::to_vec(&sig).map_err(DigestError::Render)?);
    out.push(b'\n');
    Ok((
        out,
        PrevDigest {
            key: String::new(),
            sha256: sha256_hex(&line),
            signature,
        },
    ))
}

/// Reads a digest file (not its signature's validity: see [`DigestFile::signed_by`]).
pub fn parse_digest(bytes: &[u8]) -> Result<DigestFile, DigestError> {
    let mut lines = bytes.split(|b| *b == b'\n');
    let line = lines.next().unwrap_or_default();
    let sig = lines.next().unwrap_or_default();
    let body: DigestBody = serde_json::from_slice(line).map_err(DigestError::NotDigest)?;
    let signature: DigestSignature =
        serde_json::from_slice(sig).map_err(DigestError::NoSignature)?;
    Ok(DigestFile {
        sha256: sha256_hex(line),
        signed: line.to_vec(),
        body,
        signature,
    })
}

impl DigestFile {
    /// Whether the signature is `public`'s over the body's exact bytes.
    pub fn signed_by(&self, public: &[u8]) -> bool {
        crate::signing::verify(public, &self.signed, &self.signature.signature)
    }
}

/// Where the digest of `stream` for the period starting at `from` goes: `HH.json` for a
/// period that starts on the hour, `HH-MM-SS.mmm.json` for one that starts after a shutdown.
pub fn digest_key(prefix: &str, stream: &str, from: DateTime<Utc>) -> String {
    let base = if prefix.is_empty() {
        String::new()
    } else {
        format!("{}/", prefix.trim_end_matches('/'))
    };
    let day = from.format("%Y/%m/%d");
    let name = if from.timestamp_subsec_nanos() == 0 && from.timestamp() % 3600 == 0 {
        from.format("%H.json").to_string()
    } else {
        from.format("%H-%M-%S%.3f.json").to_string()
    };
    format!("{base}{DIGESTS}/{stream}/{day}/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_keys_name_the_hour_or_the_start_of_a_partial_period() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert_eq!(
            digest_key("", "archive.abc", t("2026-12-03T10:00:00Z")),
            "_digests/archive.abc/2026/12/03/10.json"
        );
        assert_eq!(
            digest_key("logs/", "s", t("2026-12-03T10:23:05.123456Z")),
            "logs/_digests/s/2026/12/03/10-23-05.123.json"
        );
    }

    #[test]
    fn a_rendered_digest_parses_back_and_verifies_only_with_its_key() {
        let (pem, public) = crate::signing::SigningKey::generate().unwrap();
        let k = crate::signing::SigningKey::from_pem(&pem).unwrap();
        let body = DigestBody {
            version: 1,
            stream: "s".into(),
            sink: "archive".into(),
            from: "a".into(),
            to: "b".into(),
            first_seq: None,
            last_seq: None,
            entries: vec![],
            previous: None,
            public_key_sha256: "x".into(),
            created_at: "c".into(),
            closed_by: None,
        };
        let (bytes, prev) = render_digest(&body, &k).unwrap();
        let f = parse_digest(&bytes).unwrap();
        assert_eq!(f.body, body);
        assert_eq!(f.sha256, prev.sha256);
        let public = crate::signing::public_key_bytes(&public).unwrap();
        assert!(f.signed_by(&public));
        let mut tampered = bytes.clone();
        tampered[3] ^= 1;
        assert!(parse_digest(&tampered).map_or(true, |f| !f.signed_by(&public)));
    }
}
