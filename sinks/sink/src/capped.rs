//! The one capped read: logferry reads its own small files and objects (ledger entries,
//! receipts, digests, journals, key files) from places someone else can write to, so every
//! such read stops at a bound and refuses more, before allocating it.

use std::io::Read;

/// Why a capped read failed.
#[derive(Debug, thiserror::Error)]
pub enum CapError {
    /// More than the bound: not something logferry wrote there.
    #[error("larger than {max} bytes")]
    TooLarge { max: u64 },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// `len` (a size announced before reading: a file's metadata, a Content-Length) against `max`.
pub fn check(len: u64, max: u64) -> Result<(), CapError> {
    if len > max {
        return Err(CapError::TooLarge { max });
    }
    Ok(())
}

/// Reads `r` to its end, at most `max` bytes; `hint` (the announced size, if any) is checked
/// first and sizes the buffer.
pub fn read(r: impl Read, max: u64, hint: Option<u64>) -> Result<Vec<u8>, CapError> {
    if let Some(len) = hint {
        check(len, max)?;
    }
    let mut out = Vec::with_capacity(hint.unwrap_or(0).min(max) as usize);
    r.take(max.saturating_add(1)).read_to_end(&mut out)?;
    check(out.len() as u64, max)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_up_to_the_bound_succeeds_and_one_byte_more_is_refused() {
        assert_eq!(read(&b"abcd"[..], 4, None).unwrap(), b"abcd");
        assert!(matches!(
            read(&b"abcde"[..], 4, None),
            Err(CapError::TooLarge { max: 4 })
        ));
        // A file that grew after its size was read is refused too.
        assert!(matches!(
            read(&b"abcde"[..], 4, Some(3)),
            Err(CapError::TooLarge { max: 4 })
        ));
        // An announced size over the bound is refused before reading.
        assert!(matches!(
            read(std::io::repeat(0), 4, Some(1 << 40)),
            Err(CapError::TooLarge { max: 4 })
        ));
    }
}
