//! The window's queue: the slots of the nodes in the probationary window, oldest first.
//!
//! A ring of slot indices with a head and a tail counter. `push` takes a ticket from the tail
//! and swaps its slot index into the ring; `pop` advances the head (never past the tail) and
//! swaps the entry there out. Entries are hints, not owners: a node is in the window exactly
//! while its [`WINDOW`](crate::table::WINDOW) bit is set, and whoever pops an entry checks
//! that bit on the node it finds in that slot. So an entry whose node was removed, replaced
//! or evicted meanwhile is skipped, and an entry whose slot now holds a newer window node
//! lets that node leave a little early; neither breaks a bound.
//!
//! If the ring is full (the window grew faster than it was drained, or shrank), `push` swaps
//! out the entry it overwrites and hands it back, so no window node is ever forgotten with
//! its bit set.
//!
//! Every ring operation runs while the caller holds a bucket lock of the current table, so a
//! growing table (which holds them all) can rebuild the ring for its new slot numbers
//! ([`Ring::clear`] then `push`) with no operation in flight.
//!
//! # Orderings
//!
//! Relaxed throughout. The counters only hand out positions; the entries are slot numbers,
//! not pointers: a popper reads the node through the table (an Acquire load under its epoch
//! guard), which is what makes that read safe, whatever the ring says.

use crate::sync::{AtomicU32, AtomicUsize, Ordering};
use crossbeam_utils::CachePadded;

/// An empty ring entry; a slot `s` is stored as `s + 1`.
const EMPTY: u32 = 0;

/// The slot an entry holds, if any.
#[inline]
fn slot_of(entry: u32) -> Option<usize> {
    (entry != EMPTY).then(|| entry as usize - 1)
}

pub(crate) struct Ring {
    entries: Box<[AtomicU32]>,
    head: CachePadded<AtomicUsize>,
    tail: CachePadded<AtomicUsize>,
}

impl Ring {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            entries: (0..capacity.max(1))
                .map(|_| AtomicU32::new(EMPTY))
                .collect(),
            head: CachePadded::new(AtomicUsize::new(0)),
            tail: CachePadded::new(AtomicUsize::new(0)),
        }
    }

    /// The entry at position `i` (a head or tail count, taken modulo the ring's size).
    #[inline]
    fn entry(&self, i: usize) -> &AtomicU32 {
        &self.entries[i % self.entries.len()]
    }

    /// Most entries the ring holds: the window's largest size.
    pub(crate) fn capacity(&self) -> usize {
        self.entries.len()
    }

    /// Appends `slot` (below `u32::MAX`); returns the slot it overwrote, if the ring was full
    /// there.
    pub(crate) fn push(&self, slot: usize) -> Option<usize> {
        debug_assert!(slot < u32::MAX as usize);
        // Relaxed: see `# Orderings`.
        let t = self.tail.fetch_add(1, Ordering::Relaxed);
        slot_of(self.entry(t).swap(slot as u32 + 1, Ordering::Relaxed))
    }

    /// The slot in the entry that the push `ahead` pushes from now (0: the next one) would
    /// overwrite: `None` while the ring has room there. A hint for prefetching.
    pub(crate) fn peek_overwrite(&self, ahead: usize) -> Option<usize> {
        // Relaxed: see `# Orderings`; a stale answer only costs a useless prefetch.
        let t = self.tail.load(Ordering::Relaxed) + ahead;
        slot_of(self.entry(t).load(Ordering::Relaxed))
    }

    /// The slot in the entry that the pop `ahead` pops from now (0: the next one) would
    /// take, if the ring holds that many. A hint for prefetching.
    pub(crate) fn peek_pop(&self, ahead: usize) -> Option<usize> {
        // Relaxed: see `# Orderings`; a stale answer only costs a useless prefetch.
        let h = self.head.load(Ordering::Relaxed) + ahead;
        if h >= self.tail.load(Ordering::Relaxed) {
            return None;
        }
        slot_of(self.entry(h).load(Ordering::Relaxed))
    }

    /// Takes the oldest entry, if the ring has one that its pusher has finished writing.
    pub(crate) fn pop(&self) -> Option<usize> {
        // Relaxed: see `# Orderings`.
        let mut h = self.head.load(Ordering::Relaxed);
        loop {
            if h >= self.tail.load(Ordering::Relaxed) {
                return None;
            }
            match self
                .head
                .compare_exchange_weak(h, h + 1, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => h = now,
            }
        }
        slot_of(self.entry(h).swap(EMPTY, Ordering::Relaxed))
    }

    /// Forgets every entry. Only while no other ring operation can run (see the module docs).
    pub(crate) fn clear(&self) {
        for e in self.entries.iter() {
            // Relaxed: the caller excludes every other user of the ring.
            e.store(EMPTY, Ordering::Relaxed);
        }
        // Relaxed: as above.
        self.head.store(0, Ordering::Relaxed);
        self.tail.store(0, Ordering::Relaxed);
    }
}

#[cfg(all(test, not(clockline_loom)))]
mod tests {
    use super::*;

    #[test]
    fn fifo_and_overflow_hands_back_the_oldest() {
        let r = Ring::new(3);
        assert_eq!(r.pop(), None);
        assert_eq!(r.peek_pop(0), None);
        for s in [10, 11, 12] {
            assert_eq!(r.push(s), None);
        }
        assert_eq!(r.peek_pop(0), Some(10), "the next pop takes 10");
        assert_eq!(r.peek_pop(2), Some(12));
        assert_eq!(r.peek_pop(3), None, "only three entries");
        assert_eq!(r.peek_overwrite(0), Some(10), "the next push overwrites 10");
        assert_eq!(r.peek_overwrite(1), Some(11));
        assert_eq!(r.push(13), Some(10), "full: the oldest comes back");
        // The head still points at the overwritten position: that entry is now 13, which
        // leaves first. A hint, not an order: see the module docs.
        assert_eq!(r.pop(), Some(13));
        assert_eq!(r.pop(), Some(11));
        assert_eq!(r.pop(), Some(12));
        assert_eq!(r.pop(), None, "the head never passes the tail");
        assert_eq!(r.peek_overwrite(0), None, "room: nothing to overwrite");
        r.push(5);
        r.clear();
        assert_eq!(r.pop(), None);
    }
}
