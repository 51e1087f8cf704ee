//! The ends of append blobs as this process first read them: where a crashed predecessor's
//! last batches would be, so that a batch replayed after the crash is not appended again.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;

/// How much of an append blob's end is kept at start to find a crashed predecessor's batches
/// (the few that were in flight; batches are at most a few MiB compressed).
pub(super) const START_TAIL: u64 = 16 << 20;
/// All start tails together: more and the oldest are let go. A batch replayed after a crash
/// whose key's tail was let go may then be appended a second time (a duplicate, never a loss);
/// this needs more than four keys with batches in flight at the crash.
pub(super) const MAX_TAIL_BYTES: u64 = 64 << 20;

/// The blobs' last bytes when this process first read them back, per key, kept until the
/// batches sealed before the start have gone; bounded in bytes, the oldest let go first.
#[derive(Default)]
pub(super) struct Tails {
    inner: Mutex<(VecDeque<(String, Bytes)>, u64)>,
}

impl Tails {
    pub(super) fn keep(&self, key: &str, tail: Bytes) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (list, total) = &mut *g;
        if let Some(i) = list.iter().position(|(k, _)| k == key) {
            if let Some((_, old)) = list.remove(i) {
                *total -= old.len() as u64;
            }
        }
        *total += tail.len() as u64;
        list.push_back((key.to_string(), tail));
        while *total > MAX_TAIL_BYTES {
            let Some((k, old)) = list.pop_front() else {
                break;
            };
            *total -= old.len() as u64;
            tracing::warn!(key = %k, "append blob tail from before the restart let go (over 64 MiB of tails); a replayed batch of this key may be appended again");
        }
    }

    pub(super) fn found(&self, key: &str, payload: &[u8]) -> bool {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0.iter()
            .any(|(k, t)| k == key && memchr::memmem::find(t, payload).is_some())
    }

    pub(super) fn forget(&self, key: &str) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (list, total) = &mut *g;
        if let Some(i) = list.iter().position(|(k, _)| k == key) {
            if let Some((_, old)) = list.remove(i) {
                *total -= old.len() as u64;
            }
        }
    }

    #[cfg(test)]
    fn total(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_tails_are_bounded_in_bytes_and_the_oldest_go_first() {
        let t = Tails::default();
        let mib = |n: u64| Bytes::from(vec![b'x'; (n << 20) as usize]);
        for k in 0..5 {
            t.keep(&format!("k{k}"), mib(16));
        }
        assert_eq!(t.total(), MAX_TAIL_BYTES);
        assert!(!t.found("k0", b"x"), "the oldest went first");
        assert!(t.found("k4", b"xx"));
        t.keep("k4", mib(1));
        assert_eq!(t.total(), 49 << 20, "a key's new tail replaces its old one");
        t.forget("k1");
        assert_eq!(t.total(), 33 << 20);
    }
}
