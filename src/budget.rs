//! The entry-count and weight budgets: one global pair of counters, strictly enforced.
//!
//! An insert of a new key *reserves* one entry and its weight before it publishes the node, and
//! an unlink releases them after the node is gone, so the number (and weight) of published
//! entries never exceeds the counters, and the counters never exceed their limits. The counters
//! are written only by inserts of new keys, evictions and removals, never by reads, and each sits
//! on its own cache line.

use crate::sync::{AtomicU64, AtomicUsize, Ordering};
use crossbeam_utils::CachePadded;

pub(crate) struct Budget {
    len: CachePadded<AtomicUsize>,
    weight: CachePadded<AtomicU64>,
    /// Raised (never lowered) when a growable table grows; fixed otherwise.
    max_len: AtomicUsize,
    max_weight: u64,
}

impl Budget {
    pub(crate) fn new(max_len: usize, max_weight: u64) -> Self {
        Self {
            len: CachePadded::new(AtomicUsize::new(0)),
            weight: CachePadded::new(AtomicU64::new(0)),
            max_len: AtomicUsize::new(max_len),
            max_weight,
        }
    }

    pub(crate) fn len(&self) -> usize {
        // Relaxed: a snapshot for callers; no data is published through the counter.
        self.len.load(Ordering::Relaxed)
    }

    pub(crate) fn weight(&self) -> u64 {
        self.weight.load(Ordering::Relaxed)
    }

    pub(crate) fn max_len(&self) -> usize {
        // Relaxed: raised only by a grower, before it publishes the grown table (Release).
        self.max_len.load(Ordering::Relaxed)
    }

    /// Raises the entry bound; called by the grower with every writer locked out.
    pub(crate) fn set_max_len(&self, max_len: usize) {
        // Relaxed: see `max_len`.
        self.max_len.store(max_len, Ordering::Relaxed);
    }

    pub(crate) fn max_weight(&self) -> u64 {
        self.max_weight
    }

    /// Takes one entry of the count budget, if any is left.
    pub(crate) fn try_reserve_entry(&self) -> bool {
        // Relaxed: the counter is a number, not a flag that publishes data; the strict bound
        // comes from the CAS itself, which is atomic whatever the ordering.
        let max_len = self.max_len();
        let mut cur = self.len.load(Ordering::Relaxed);
        loop {
            if cur >= max_len {
                return false;
            }
            match self
                .len
                .compare_exchange_weak(cur, cur + 1, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Takes `w` of the weight budget, if that much is left.
    pub(crate) fn try_reserve_weight(&self, w: u64) -> bool {
        if w == 0 {
            return true;
        }
        // Relaxed: as in `try_reserve_entry`.
        let mut cur = self.weight.load(Ordering::Relaxed);
        loop {
            if w > self.max_weight - cur {
                return false;
            }
            match self.weight.compare_exchange_weak(
                cur,
                cur + w,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }

    pub(crate) fn release_entry(&self) {
        // Relaxed: see `try_reserve_entry`. Runs after the node is unlinked.
        let prev = self.len.fetch_sub(1, Ordering::Relaxed);
        debug_assert!(prev > 0);
    }

    pub(crate) fn release_weight(&self, w: u64) {
        if w != 0 {
            let prev = self.weight.fetch_sub(w, Ordering::Relaxed);
            debug_assert!(prev >= w);
        }
    }
}

/// A reservation that is given back unless it is committed: an insert that unwinds from a panic
/// in user code releases what it took.
pub(crate) struct Reservation<'a> {
    budget: &'a Budget,
    entry: bool,
    weight: u64,
}

impl<'a> Reservation<'a> {
    pub(crate) fn new(budget: &'a Budget) -> Self {
        Self {
            budget,
            entry: false,
            weight: 0,
        }
    }

    pub(crate) fn has_entry(&self) -> bool {
        self.entry
    }

    pub(crate) fn set_entry(&mut self) {
        self.entry = true;
    }

    pub(crate) fn weight(&self) -> u64 {
        self.weight
    }

    /// Adds `w` that is already counted in the budget's weight: reserved just now, or the
    /// weight of a victim this thread evicted, passed on without going through the counter.
    pub(crate) fn take_weight(&mut self, w: u64) {
        self.weight += w;
    }

    /// Gives back the entry, if one is reserved.
    pub(crate) fn give_back_entry(&mut self) {
        if self.entry {
            self.budget.release_entry();
            self.entry = false;
        }
    }

    /// Gives back whatever is reserved beyond `target`.
    pub(crate) fn give_back_weight_above(&mut self, target: u64) {
        if self.weight > target {
            self.budget.release_weight(self.weight - target);
            self.weight = target;
        }
    }

    /// Keeps what was reserved: it now belongs to a published node.
    pub(crate) fn commit(mut self) {
        self.entry = false;
        self.weight = 0;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.entry {
            self.budget.release_entry();
        }
        self.budget.release_weight(self.weight);
    }
}
