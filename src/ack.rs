//! Acknowledgement of read progress.
//!
//! A source cuts what it reads into chunks, each with a [`Ticket`]. Every batch that takes records
//! of a chunk holds a [`Hold`] on it, and releases it only once the batch is durable: spooled to
//! disk, or acknowledged by the sink in memory mode. A chunk is done when no hold is left, and a
//! checkpoint only moves past chunks that are done. A hold that is dropped without `release`
//! (a batch abandoned at shutdown, a failed spool write) keeps its chunk pending, so the safe
//! outcome, reading it again after a restart, is also the default one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Debug)]
pub struct Ticket(Arc<AtomicUsize>);

impl Default for Ticket {
    fn default() -> Self {
        Ticket::new()
    }
}

impl Ticket {
    /// A new ticket, held once by its creator until [`Ticket::seal`].
    pub fn new() -> Ticket {
        Ticket(Arc::new(AtomicUsize::new(1)))
    }

    pub fn hold(&self) -> Hold {
        self.0.fetch_add(1, Ordering::AcqRel);
        Hold(self.0.clone())
    }

    /// Releases the creator's own hold: the chunk will take no more records.
    pub fn seal(&self) -> Hold {
        Hold(self.0.clone())
    }

    /// Another handle on the same chunk for the source's queue of pending chunks; it adds no
    /// hold, it only watches.
    pub fn clone_for_queue(t: &Ticket) -> Ticket {
        Ticket(t.0.clone())
    }

    pub fn is_done(&self) -> bool {
        self.0.load(Ordering::Acquire) == 0
    }

    pub fn same(&self, h: &Hold) -> bool {
        Arc::ptr_eq(&self.0, &h.0)
    }
}

/// One batch's claim on a chunk. Cloning adds a claim (a split batch's halves each hold one).
#[derive(Debug)]
pub struct Hold(Arc<AtomicUsize>);

impl Hold {
    pub fn release(self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Clone for Hold {
    fn clone(&self) -> Hold {
        self.0.fetch_add(1, Ordering::AcqRel);
        Hold(self.0.clone())
    }
}

/// Releases every hold of a batch.
pub fn release_all(holds: Vec<Hold>) {
    holds.into_iter().for_each(Hold::release);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn done_only_after_every_hold_is_released() {
        let t = Ticket::new();
        let a = t.hold();
        let b = a.clone();
        t.seal().release();
        assert!(!t.is_done());
        a.release();
        assert!(!t.is_done());
        b.release();
        assert!(t.is_done());
    }

    #[test]
    fn a_dropped_hold_keeps_the_chunk_pending() {
        let t = Ticket::new();
        let h = t.hold();
        t.seal().release();
        drop(h);
        assert!(!t.is_done());
    }
}
