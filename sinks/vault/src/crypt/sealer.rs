//! Sealing a stream: an object written one segment at a time, for a writer that does not
//! know the length up front (a record too long to hold, spilled to disk as it is read).

use std::io::Write;

use aws_lc_rs::aead::{Aad, LessSafeKey};
use zeroize::Zeroizing;

use super::{random, CryptError, DataKey, Header, SALT};

/// Encrypts a stream of unknown length as one version 2 object, one segment in memory at a
/// time: the same object [`encrypt`](super::encrypt) makes of the whole (a random salt,
/// counter nonces, the last segment flagged; an empty stream is one empty last segment, and a
/// stream of exactly `k` segments ends with a full one flagged last). Write
/// [`Sealer::header`] first, then what [`Sealer::write`] and [`Sealer::finish`] give out.
pub struct Sealer {
    aead: LessSafeKey,
    header: Header,
    aad: Vec<u8>,
    seg: usize,
    /// Plaintext not yet sealed: at most one segment, sealed once more follows (or at the end).
    buf: Zeroizing<Vec<u8>>,
    index: u64,
}

impl Sealer {
    pub fn new(key: &DataKey, batch_id: &str, segment_size: u32) -> Result<Self, CryptError> {
        let mut salt = [0u8; SALT];
        random(&mut salt)?;
        let header = Header::new_v2(key, batch_id, salt, segment_size)?;
        let aad = header.to_bytes();
        let aead = header.aead(key)?;
        Ok(Sealer {
            aead,
            header,
            aad,
            seg: segment_size as usize,
            buf: Zeroizing::new(Vec::new()),
            index: 0,
        })
    }

    /// The object's header: its first bytes.
    pub fn header(&self) -> &[u8] {
        &self.aad
    }

    /// Takes more plaintext; writes to `out` each segment that is known not to be the last.
    pub fn write(&mut self, mut data: &[u8], out: &mut impl Write) -> Result<(), CryptError> {
        while !data.is_empty() {
            if self.buf.len() == self.seg {
                // More follows: the segment held is not the last.
                self.seal_segment(false, out)?;
            }
            let take = (self.seg - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(())
    }

    /// Seals what is held as the last segment (empty when nothing was written).
    pub fn finish(mut self, out: &mut impl Write) -> Result<(), CryptError> {
        self.seal_segment(true, out)
    }

    fn seal_segment(&mut self, last: bool, out: &mut impl Write) -> Result<(), CryptError> {
        let nonce = self.header.nonce(self.index, last)?;
        let tag = self
            .aead
            .seal_in_place_separate_tag(nonce, Aad::from(&self.aad[..]), &mut self.buf[..])
            .map_err(|_| CryptError::Seal("AES-256-GCM failed"))?;
        let io = |e: std::io::Error| CryptError::Io(e.to_string());
        out.write_all(&self.buf[..]).map_err(io)?;
        out.write_all(tag.as_ref()).map_err(io)?;
        self.buf.clear();
        self.index += 1;
        Ok(())
    }
}
