//! The window's queue: the slots of the nodes in the probationary window, oldest first.
//!
//! A ring of slot indices with a head and a tail, changed only under the ring's own spin lock
//! (held for a few instructions; no other lock is taken and no user code runs under it).
//! Entries are hints, not owners: a node is in the window exactly while its
//! `WINDOW` bit is set, and whoever pops an entry checks that bit on
//! the node it finds in that slot. So an entry whose node was removed, replaced or evicted
//! meanwhile is skipped, and an entry whose slot now holds a newer window node lets that node
//! leave a little early; neither breaks a bound. What the queue must never do is lose the
//! entry of a node still in the window: the hand passes window nodes by, so such a node could
//! not be evicted, and an insert waiting for room could wait for good. `check_invariants`
//! checks that every window node is queued.
//!
//! If the ring is full (the window grew faster than it was drained, or shrank), `push`
//! overwrites the entry in its cell and hands it back, so no window node is forgotten with its
//! bit set. The head stays where it was: once the tail is a whole ring ahead, the head's cell
//! holds the entry just pushed, which leaves first, and a pop may find a cell already taken
//! (`None`). Every entry is still taken once, by a pop or by the push that overwrites it: a
//! push writes its cell before the tail passes it, and the head visits each cell once per turn.
//! (Keeping the queue strictly in order here, by moving the head past the overwritten entry,
//! was measured: 19 of 73 simulator points moved, P3 at 100,000 and 200,000 entries lost 2.7
//! and 2.0 points, P3 at 25,000 gained 1.8; sum -0.62. docs/design.md.)
//!
//! Why a lock: the ring was lock-free (a ticket from the tail, then a swap into the entry; a
//! pop advanced the head, then swapped the entry out). A pop that came between a push's
//! ticket and its write advanced the head past an entry not yet written, and that push's node
//! was then in no queue until the ring came round again, never if no other key arrived. Found
//! by a weighted stress test that hung (`tests/stress.rs`,
//! `weighted_inserts_of_new_keys_make_progress`) and by the loom model
//! `concurrent_arrivals_promote_without_contest` once `check_invariants` looked for it. Telling
//! an entry not yet written from one already taken needs a lap number in every entry (twice
//! the memory, over the 40-byte budget per entry) or a lock; the lock costs one atomic
//! read-modify-write per push or pop, where the lock-free ring took two. Under the lock the
//! ring does exactly what the lock-free one did when no push and pop overlapped, so hit ratios
//! are unchanged (the simulator is single-threaded).
//!
//! Every ring operation also runs while the caller holds a bucket lock of the current table,
//! so a growing table (which holds them all) can rebuild the ring for its new slot numbers
//! ([`Ring::clear`] then `push`) with no operation in flight.
//!
//! # Orderings
//!
//! The lock is taken with an Acquire CAS and released with a Release store, which orders every
//! change of the head, the tail and the entries made under it (all Relaxed) before the next
//! holder's. The entries are slot numbers, not pointers: a popper reads the node through the
//! table (an Acquire load under its epoch guard), which is what makes that read safe, whatever
//! the ring says. The `peek_*` hints read without the lock and may be stale.

use crate::sync::{spin_wait, AtomicBool, AtomicU32, AtomicUsize, Ordering};
use crossbeam_utils::CachePadded;

/// An empty ring entry; a slot `s` is stored as `s + 1`.
const EMPTY: u32 = 0;

/// The slot an entry holds, if any.
#[inline]
fn slot_of(entry: u32) -> Option<usize> {
    (entry != EMPTY).then(|| entry as usize - 1)
}

/// The ring's control words, in one line: every operation takes the lock and reads both
/// counters. The window's node count sits here too: it is changed right beside a push (a new
/// entry) or a pop (its promotion or eviction), so the thread that changes it usually holds
/// the line already; on a line of its own it was one more shared line written twice per
/// new key (docs/benchmarks.md section 3.0).
struct Control {
    lock: AtomicBool,
    /// Nodes with the `WINDOW` bit set (see the policy's `# Orderings`): not the ring's
    /// length, which also counts stale entries.
    nodes: AtomicUsize,
    /// Position of the oldest entry (positions count up; an entry is at position % size).
    head: AtomicUsize,
    /// Position the next push writes.
    tail: AtomicUsize,
}

pub(crate) struct Ring {
    entries: Box<[AtomicU32]>,
    control: CachePadded<Control>,
}

/// Holds the ring's lock; releases it on drop.
struct Locked<'a>(&'a Control);

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // Release: publishes this holder's changes to the next one (see `# Orderings`).
        self.0.lock.store(false, Ordering::Release);
    }
}

impl Ring {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            entries: (0..capacity.max(1))
                .map(|_| AtomicU32::new(EMPTY))
                .collect(),
            control: CachePadded::new(Control {
                lock: AtomicBool::new(false),
                nodes: AtomicUsize::new(0),
                head: AtomicUsize::new(0),
                tail: AtomicUsize::new(0),
            }),
        }
    }

    fn lock(&self) -> Locked<'_> {
        let c = &*self.control;
        let mut step = 0;
        // Test, then test-and-set: a waiter reads the word (its cached copy, shared) until
        // it sees the lock free, and only then tries the CAS. Every failed CAS took the line
        // exclusive, so with many waiters the holder's own release waited behind their tries.
        // Relaxed peek: a hint; the CAS decides. Acquire CAS: sees the previous holder's
        // changes (see `# Orderings`). Not under loom: the peek only doubles a waiting
        // thread's steps there (`concurrent_adaptation_steps` ran out of loom's branches), and
        // the lock's semantics are the CAS's either way.
        while (!cfg!(clockline_loom) && c.lock.load(Ordering::Relaxed))
            || c.lock
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            spin_wait(step);
            step = step.saturating_add(1);
        }
        Locked(c)
    }

    /// One more node in the window.
    pub(crate) fn node_in(&self) {
        // Relaxed: a count; see the policy's `# Orderings` for who decrements.
        self.control.nodes.fetch_add(1, Ordering::Relaxed);
    }

    /// One node fewer in the window.
    pub(crate) fn node_out(&self) {
        // Relaxed: as in `node_in`.
        self.control.nodes.fetch_sub(1, Ordering::Relaxed);
    }

    /// Nodes in the window.
    pub(crate) fn nodes(&self) -> usize {
        // Relaxed: a hint for when to drain the window.
        self.control.nodes.load(Ordering::Relaxed)
    }

    /// The entry at position `i` (a head or tail count, taken modulo the ring's size).
    #[inline]
    fn entry(&self, i: usize) -> &AtomicU32 {
        &self.entries[i % self.entries.len()]
    }

    /// Appends `slot` (below `u32::MAX`); returns the slot it overwrote, if the ring was full
    /// there.
    pub(crate) fn push(&self, slot: usize) -> Option<usize> {
        debug_assert!(slot < u32::MAX as usize);
        let _locked = self.lock();
        let c = &*self.control;
        // Relaxed, under the lock: see `# Orderings`.
        let t = c.tail.load(Ordering::Relaxed);
        let e = self.entry(t);
        let old = e.load(Ordering::Relaxed);
        e.store(slot as u32 + 1, Ordering::Relaxed);
        c.tail.store(t + 1, Ordering::Relaxed);
        slot_of(old)
    }

    /// The slot in the entry that the push `ahead` pushes from now (0: the next one) would
    /// overwrite: `None` while the ring has room there. A hint for prefetching.
    pub(crate) fn peek_overwrite(&self, ahead: usize) -> Option<usize> {
        // Relaxed, without the lock: a stale answer only costs a useless prefetch.
        let t = self.control.tail.load(Ordering::Relaxed) + ahead;
        slot_of(self.entry(t).load(Ordering::Relaxed))
    }

    /// The slot in the entry that the pop `ahead` pops from now (0: the next one) would
    /// take, if the ring holds that many. A hint for prefetching.
    pub(crate) fn peek_pop(&self, ahead: usize) -> Option<usize> {
        let c = &*self.control;
        // Relaxed, without the lock: a stale answer only costs a useless prefetch.
        let h = c.head.load(Ordering::Relaxed) + ahead;
        if h >= c.tail.load(Ordering::Relaxed) {
            return None;
        }
        slot_of(self.entry(h).load(Ordering::Relaxed))
    }

    /// Takes the entry at the head, if the head is behind the tail (`None` also for an entry
    /// already taken: see the module docs).
    pub(crate) fn pop(&self) -> Option<usize> {
        let _locked = self.lock();
        let c = &*self.control;
        // Relaxed, under the lock: see `# Orderings`.
        let h = c.head.load(Ordering::Relaxed);
        if h >= c.tail.load(Ordering::Relaxed) {
            return None;
        }
        c.head.store(h + 1, Ordering::Relaxed);
        let e = self.entry(h);
        let slot = e.load(Ordering::Relaxed);
        e.store(EMPTY, Ordering::Relaxed);
        slot_of(slot)
    }

    /// The slots of the entries a pop can still reach: those at the positions from the head
    /// (or a whole ring before the tail, if the head is further behind) to the tail. Every entry
    /// the ring holds is among them (see the module docs); the lock-free ring broke that. Only
    /// while no other ring operation runs (`check_invariants`).
    pub(crate) fn queued(&self) -> Vec<usize> {
        let _locked = self.lock();
        let c = &*self.control;
        // Relaxed, under the lock.
        let (h, t) = (
            c.head.load(Ordering::Relaxed),
            c.tail.load(Ordering::Relaxed),
        );
        (h.max(t.saturating_sub(self.entries.len()))..t)
            .filter_map(|i| slot_of(self.entry(i).load(Ordering::Relaxed)))
            .collect()
    }

    /// Forgets every entry. Only while no other ring operation can run (see the module docs).
    pub(crate) fn clear(&self) {
        let _locked = self.lock();
        let c = &*self.control;
        for e in self.entries.iter() {
            // Relaxed, under the lock.
            e.store(EMPTY, Ordering::Relaxed);
        }
        c.head.store(0, Ordering::Relaxed);
        c.tail.store(0, Ordering::Relaxed);
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
        assert_eq!(
            r.queued(),
            vec![11, 12, 13],
            "by position: 11, 12, then 13 in 10's cell"
        );
        // The head still points at the overwritten cell: its entry is now 13, which leaves
        // first. A hint, not an order: see the module docs.
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
