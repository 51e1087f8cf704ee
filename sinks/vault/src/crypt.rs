//! The encrypted object format: a header, then the payload in AES-256-GCM segments.
//!
//! Written down for other readers in `docs/encryption.md`. In short (integers big-endian):
//!
//! ```text
//! magic "LFENC" | version u8 = 2 | segment_size u32 | salt [32]
//! | key_id (u16 len + UTF-8) | tenant (u16 len + UTF-8) | hour "YYYY-MM-DDTHH" (u16 len + UTF-8)
//! | batch_id (u16 len + UTF-8)
//! then segments: ciphertext of segment_size plaintext bytes (the last one shorter or empty) + tag [16]
//! ```
//!
//! Every object is encrypted under a key of its own: HKDF-SHA256 of the tenant-hour's data key
//! with the object's salt (the construction of Tink's AES-GCM-HKDF streaming AEAD). Segment `i`
//! uses nonce `0 (7 bytes) || i as u32 || last` (last = 1 on the final segment, else 0) and the
//! whole header as its associated data. So a changed byte anywhere, a segment moved, dropped or
//! repeated, an object cut at a segment boundary, or a header naming another key, tenant, hour
//! or batch all fail authentication; and an object decrypts as a stream, one segment in memory
//! at a time.
//!
//! The salt of a sealed batch is an HMAC, under the data key, of everything that determines the
//! ciphertext: the header's fields, the segment size and the SHA-256 of the exact bytes sealed.
//! A retry of the same bytes yields the same object; anything else that changed between two
//! attempts (segment size, compression, envelope, a split) yields another salt and so another
//! key: one (key, nonce) pair never covers two different ciphertexts. The salt is a PRF output,
//! so it tells nothing about the plaintext to someone without the data key.
//!
//! Version 1 objects (a 7-byte nonce prefix in place of the salt, no subkey) are still read.

use std::io::{Read, Write};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use zeroize::Zeroizing;

mod sealer;

pub use sealer::Sealer;

pub const MAGIC: &[u8; 5] = b"LFENC";
/// The version this logferry writes; [`VERSION_1`] is still read.
pub const VERSION: u8 = 2;
pub const VERSION_1: u8 = 1;
/// Payloads up to this are encrypted on the calling (async) thread: AES-GCM runs at gigabytes
/// a second, so that is tens of microseconds, less than handing the work to another thread.
pub const INLINE_BYTES: usize = 256 << 10;
/// Plaintext bytes per segment unless configured: large enough that the 16-byte tag costs
/// nothing, small enough that a reader holds little.
pub const DEFAULT_SEGMENT: u32 = 1 << 20;
const TAG: usize = 16;
const PREFIX: usize = 7;
const SALT: usize = 32;
/// A header field may not exceed this, so a crafted header cannot make a reader allocate much.
const MAX_FIELD: usize = 1024;
const MAX_SEGMENT: u32 = 64 << 20;
/// HKDF's info for an object's subkey.
const SUBKEY_INFO: &[u8] = b"logferry object key v2";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptError {
    #[error("not a logferry encrypted object (no LFENC header)")]
    NotEncrypted,
    #[error(
        "encrypted object version {0} is not supported (this logferry reads versions 1 and 2)"
    )]
    Version(u8),
    #[error("the header is cut short or malformed: {0}")]
    Header(&'static str),
    #[error("the object is encrypted under key {found}, not {expected}")]
    WrongKey { expected: String, found: String },
    #[error("segment {0} failed authentication: the object was modified, its segments reordered, or its header changed")]
    Tampered(u64),
    #[error("the object ends after segment {0} without its final segment: it was truncated")]
    Truncated(u64),
    #[error("cannot encrypt: {0}")]
    Seal(&'static str),
    #[error("{0}")]
    Io(String),
}

/// A data key: 32 bytes for one tenant and hour, wiped from memory when dropped.
pub struct DataKey {
    pub id: String,
    pub tenant: String,
    /// The UTC hour as `YYYY-MM-DDTHH`.
    pub hour: String,
    pub bytes: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for DataKey {
    // Never the key bytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey")
            .field("id", &self.id)
            .field("tenant", &self.tenant)
            .field("hour", &self.hour)
            .finish_non_exhaustive()
    }
}

impl DataKey {
    /// A fresh random key with a random id.
    pub fn generate(tenant: &str, hour: &str) -> Result<Self, CryptError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        random(&mut bytes[..])?;
        let mut id = [0u8; 16];
        random(&mut id)?;
        Ok(DataKey {
            id: hex::encode(id),
            tenant: tenant.to_owned(),
            hour: hour.to_owned(),
            bytes,
        })
    }

    /// The AEAD of a version 1 object: the data key itself.
    fn aead_v1(&self) -> Result<LessSafeKey, CryptError> {
        UnboundKey::new(&AES_256_GCM, &self.bytes[..])
            .map(LessSafeKey::new)
            .map_err(|_| CryptError::Seal("AES-256-GCM key rejected"))
    }

    /// The AEAD of the version 2 object with `salt`: HKDF-SHA256(salt, data key, info).
    fn subkey(&self, salt: &[u8; SALT]) -> Result<LessSafeKey, CryptError> {
        use aws_lc_rs::hkdf::{Salt, HKDF_SHA256};
        let info = [SUBKEY_INFO];
        let prk = Salt::new(HKDF_SHA256, salt).extract(&self.bytes[..]);
        let okm = prk
            .expand(&info, &AES_256_GCM)
            .map_err(|_| CryptError::Seal("cannot derive the object key"))?;
        Ok(LessSafeKey::new(UnboundKey::from(okm)))
    }
}

pub fn random(buf: &mut [u8]) -> Result<(), CryptError> {
    aws_lc_rs::rand::fill(buf).map_err(|_| CryptError::Seal("no randomness from the system"))
}

/// What an object's header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// [`VERSION`], or [`VERSION_1`] for an object written before subkeys.
    pub version: u8,
    pub segment_size: u32,
    /// Version 1: the nonce prefix; zero in version 2.
    pub nonce_prefix: [u8; PREFIX],
    /// Version 2: the salt of the object's key; zero in version 1.
    pub salt: [u8; SALT],
    pub key_id: String,
    pub tenant: String,
    pub hour: String,
    pub batch_id: String,
}

impl Header {
    /// The header of a version 2 object, its sizes checked.
    fn new_v2(
        key: &DataKey,
        batch_id: &str,
        salt: [u8; SALT],
        segment_size: u32,
    ) -> Result<Header, CryptError> {
        if segment_size == 0 || segment_size > MAX_SEGMENT {
            return Err(CryptError::Seal("segment size out of range"));
        }
        for field in [key.id.as_str(), &key.tenant, &key.hour, batch_id] {
            if field.len() > MAX_FIELD {
                return Err(CryptError::Seal("a header field is longer than 1024 bytes"));
            }
        }
        Ok(Header {
            version: VERSION,
            segment_size,
            nonce_prefix: [0u8; PREFIX],
            salt,
            key_id: key.id.clone(),
            tenant: key.tenant.clone(),
            hour: key.hour.clone(),
            batch_id: batch_id.to_owned(),
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(96 + self.key_id.len() + self.batch_id.len());
        out.extend_from_slice(MAGIC);
        out.push(self.version);
        out.extend_from_slice(&self.segment_size.to_be_bytes());
        if self.version == VERSION_1 {
            out.extend_from_slice(&self.nonce_prefix);
        } else {
            out.extend_from_slice(&self.salt);
        }
        for field in [&self.key_id, &self.tenant, &self.hour, &self.batch_id] {
            out.extend_from_slice(&(field.len() as u16).to_be_bytes());
            out.extend_from_slice(field.as_bytes());
        }
        out
    }

    /// Reads a header from the start of `r`; returns it with its exact bytes (the AAD).
    pub fn read(r: &mut impl Read) -> Result<(Header, Vec<u8>), CryptError> {
        let mut raw = vec![0u8; MAGIC.len() + 1 + 4];
        read_exact(r, &mut raw).map_err(|_| CryptError::NotEncrypted)?;
        if &raw[..MAGIC.len()] != MAGIC {
            return Err(CryptError::NotEncrypted);
        }
        let version = raw[5];
        if version != VERSION && version != VERSION_1 {
            return Err(CryptError::Version(version));
        }
        let segment_size = u32::from_be_bytes([raw[6], raw[7], raw[8], raw[9]]);
        if segment_size == 0 || segment_size > MAX_SEGMENT {
            return Err(CryptError::Header("segment size out of range"));
        }
        let mut nonce_prefix = [0u8; PREFIX];
        let mut salt = [0u8; SALT];
        let iv: &mut [u8] = if version == VERSION_1 {
            &mut nonce_prefix
        } else {
            &mut salt
        };
        read_exact(r, iv).map_err(|_| CryptError::Header("ends inside the salt"))?;
        raw.extend_from_slice(iv);
        let mut fields = Vec::with_capacity(4);
        for _ in 0..4 {
            let mut len = [0u8; 2];
            read_exact(r, &mut len).map_err(|_| CryptError::Header("ends inside a field"))?;
            let len = u16::from_be_bytes(len) as usize;
            if len > MAX_FIELD {
                return Err(CryptError::Header("a field is longer than 1024 bytes"));
            }
            let mut value = vec![0u8; len];
            read_exact(r, &mut value).map_err(|_| CryptError::Header("ends inside a field"))?;
            raw.extend_from_slice(&(len as u16).to_be_bytes());
            raw.extend_from_slice(&value);
            fields.push(String::from_utf8(value).map_err(|_| CryptError::Header("not UTF-8"))?);
        }
        let mut it = fields.into_iter();
        let mut next = || it.next().unwrap_or_default();
        let header = Header {
            version,
            segment_size,
            nonce_prefix,
            salt,
            key_id: next(),
            tenant: next(),
            hour: next(),
            batch_id: next(),
        };
        Ok((header, raw))
    }

    /// The AEAD that opens this object's segments under `key`.
    fn aead(&self, key: &DataKey) -> Result<LessSafeKey, CryptError> {
        if self.version == VERSION_1 {
            key.aead_v1()
        } else {
            key.subkey(&self.salt)
        }
    }

    /// The nonce of segment `index`.
    fn nonce(&self, index: u64, last: bool) -> Result<Nonce, CryptError> {
        let prefix = if self.version == VERSION_1 {
            self.nonce_prefix
        } else {
            [0u8; PREFIX]
        };
        nonce(&prefix, index, last)
    }
}

fn nonce(prefix: &[u8; PREFIX], index: u64, last: bool) -> Result<Nonce, CryptError> {
    let counter = u32::try_from(index).map_err(|_| CryptError::Seal("too many segments"))?;
    let mut n = [0u8; 12];
    n[..PREFIX].copy_from_slice(prefix);
    n[PREFIX..11].copy_from_slice(&counter.to_be_bytes());
    n[11] = u8::from(last);
    Ok(Nonce::assume_unique_for_key(n))
}

/// Encrypts `plaintext` for `batch_id` under `key` with a random salt: an object key of its own.
pub fn encrypt(
    key: &DataKey,
    batch_id: &str,
    plaintext: &[u8],
    segment_size: u32,
) -> Result<Vec<u8>, CryptError> {
    let mut salt = [0u8; SALT];
    random(&mut salt)?;
    encrypt_with(key, batch_id, salt, plaintext, segment_size)
}

/// Encrypts a sealed batch so that every attempt with the same bytes yields the same object (a
/// retry or a replay from the spool rewrites an object identically): the salt is the HMAC,
/// under the data key, of the header's fields, the segment size and the SHA-256 of
/// `plaintext`. Any change to what is sealed gives another salt, so another object key.
pub fn encrypt_batch(
    key: &DataKey,
    batch_id: &str,
    plaintext: &[u8],
    segment_size: u32,
) -> Result<Vec<u8>, CryptError> {
    let salt = synthetic_salt(key, batch_id, plaintext, segment_size);
    encrypt_with(key, batch_id, salt, plaintext, segment_size)
}

/// The salt of [`encrypt_batch`].
fn synthetic_salt(
    key: &DataKey,
    batch_id: &str,
    plaintext: &[u8],
    segment_size: u32,
) -> [u8; SALT] {
    use aws_lc_rs::{digest, hmac};
    let body = digest::digest(&digest::SHA256, plaintext);
    let mac_key = hmac::Key::new(hmac::HMAC_SHA256, &key.bytes[..]);
    let mut ctx = hmac::Context::with_key(&mac_key);
    ctx.update(b"logferry object salt v2");
    for part in [&key.id, &key.tenant, &key.hour, batch_id] {
        ctx.update(&(part.len() as u32).to_be_bytes());
        ctx.update(part.as_bytes());
    }
    ctx.update(&segment_size.to_be_bytes());
    ctx.update(&(plaintext.len() as u64).to_be_bytes());
    ctx.update(body.as_ref());
    let mut salt = [0u8; SALT];
    salt.copy_from_slice(ctx.sign().as_ref());
    salt
}

fn encrypt_with(
    key: &DataKey,
    batch_id: &str,
    salt: [u8; SALT],
    plaintext: &[u8],
    segment_size: u32,
) -> Result<Vec<u8>, CryptError> {
    let header = Header::new_v2(key, batch_id, salt, segment_size)?;
    let aad = header.to_bytes();
    let aead = header.aead(key)?;
    let seg = segment_size as usize;
    let segments = plaintext.len().div_ceil(seg).max(1);
    let mut out = Vec::with_capacity(aad.len() + plaintext.len() + segments * TAG);
    out.extend_from_slice(&aad);
    for i in 0..segments {
        let chunk =
            &plaintext[(i * seg).min(plaintext.len())..((i + 1) * seg).min(plaintext.len())];
        let start = out.len();
        out.extend_from_slice(chunk);
        let tag = aead
            .seal_in_place_separate_tag(
                header.nonce(i as u64, i + 1 == segments)?,
                Aad::from(&aad[..]),
                &mut out[start..],
            )
            .map_err(|_| CryptError::Seal("AES-256-GCM failed"))?;
        out.extend_from_slice(tag.as_ref());
    }
    Ok(out)
}

/// Decrypts an object from `r` to `w` one segment at a time. `key_for` is given the header and
/// returns the data key it names (or an error: unknown, shredded); `w` receives only
/// authenticated bytes, though a later segment can still fail, so a caller writing to a file
/// must discard it on error.
pub fn decrypt<K: std::borrow::Borrow<DataKey>>(
    r: &mut impl Read,
    w: &mut impl Write,
    key_for: impl FnOnce(&Header) -> Result<K, CryptError>,
) -> Result<Header, CryptError> {
    let (header, aad) = Header::read(r)?;
    let key = key_for(&header)?;
    let key: &DataKey = key.borrow();
    if key.id != header.key_id {
        return Err(CryptError::WrongKey {
            expected: key.id.clone(),
            found: header.key_id.clone(),
        });
    }
    let aead = header.aead(key)?;
    let full = header.segment_size as usize + TAG;
    // One byte of look-ahead tells a full segment that is the last from one that is not. The
    // buffer grows with what is read (not zeroed to a segment up front: most batches are far
    // smaller than one).
    let mut buf: Vec<u8> = Vec::new();
    let mut have = fill(r, &mut buf, full + 1)?;
    let mut index = 0u64;
    loop {
        let last = have <= full;
        let len = have.min(full);
        if len < TAG {
            return Err(if index == 0 {
                CryptError::Header("no segment follows the header")
            } else {
                CryptError::Truncated(index - 1)
            });
        }
        let mut seg = buf[..len].to_vec();
        match aead.open_in_place(header.nonce(index, last)?, Aad::from(&aad[..]), &mut seg) {
            Ok(plain) => w
                .write_all(plain)
                .map_err(|e| CryptError::Io(e.to_string()))?,
            Err(_) => {
                // A segment that opens as a middle one where a last one was due: the rest is gone.
                let mut again = buf[..len].to_vec();
                let cut = last
                    && aead
                        .open_in_place(header.nonce(index, false)?, Aad::from(&aad[..]), &mut again)
                        .is_ok();
                return Err(if cut {
                    CryptError::Truncated(index)
                } else {
                    CryptError::Tampered(index)
                });
            }
        }
        if last {
            return Ok(header);
        }
        buf.copy_within(full..have, 0);
        buf.truncate(have - full);
        have = fill(r, &mut buf, full + 1)?;
        index += 1;
    }
}

fn read_exact(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<()> {
    r.read_exact(buf)
}

/// Reads until `buf` holds `want` bytes or the input ends; returns how many it holds.
fn fill(r: &mut impl Read, buf: &mut Vec<u8>, want: usize) -> Result<usize, CryptError> {
    let more = want.saturating_sub(buf.len()) as u64;
    r.take(more)
        .read_to_end(buf)
        .map_err(|e| CryptError::Io(e.to_string()))?;
    Ok(buf.len())
}

#[cfg(test)]
#[path = "crypt_tests.rs"]
mod tests;
