//! CLOCK eviction: a hand sweeps the table's slots in order and evicts the first entry whose
//! reference bit is clear, clearing the bits it passes.
//!
//! The clock order is the table's slot order. New entries start with their bit set (they may
//! land just ahead of the hand), reads set the bit only when it is clear, and the hand is the only
//! writer that clears it. The hand is one `CachePadded` counter advanced with `fetch_add`; it is
//! touched only by inserts that must make room, never by reads.
//!
//! # Orderings
//!
//! The hand index is Relaxed: two evicting threads may look at neighbouring slots in any order;
//! each slot is unlinked by at most one of them, because unlinking is a CAS of the slot pointer
//! (see the table's `# Orderings`). Reference bits are Relaxed hints: a read that races with the
//! hand may lose its mark, which costs the entry one round, never memory safety.

use crate::sync::{AtomicUsize, Ordering};
use crate::table::{Node, RawTable};
use crossbeam_epoch::{Guard, Shared};
use crossbeam_utils::CachePadded;

pub(crate) struct Hand {
    pos: CachePadded<AtomicUsize>,
}

impl Hand {
    pub(crate) fn new() -> Self {
        Self {
            pos: CachePadded::new(AtomicUsize::new(0)),
        }
    }

    #[allow(dead_code)]
    pub(crate) fn position(&self) -> usize {
        self.pos.load(Ordering::Relaxed)
    }

    /// Whether a new entry in flat slot `slot` starts referenced. Classic CLOCK puts a new page
    /// right behind the hand, which gives it one full turn before the hand considers it. Here a
    /// node lands where its hash puts it, so it gets the same grace on average: a node ahead of
    /// the hand starts marked (the hand clears it this turn and considers it the next), a node
    /// behind the hand starts clear (the hand considers it when it next comes round).
    pub(crate) fn starts_marked(&self, slot: usize, nslots: usize) -> bool {
        // Relaxed: a hint; an out-of-date position only moves the grace by a few slots.
        slot >= self.pos.load(Ordering::Relaxed) % nslots
    }

    /// Sweeps until it unlinks one entry and returns it; the caller owns it and must release
    /// its budget and retire it. Returns `None` after two full turns found nothing to evict
    /// (every slot empty or being written), so a caller never spins here forever.
    pub(crate) fn evict<'g, K, V>(
        &self,
        table: &RawTable<K, V>,
        rehash: &dyn Fn(&K) -> u64,
        guard: &'g Guard,
    ) -> Option<Shared<'g, Node<K, V>>> {
        let nslots = table.nslots();
        for _ in 0..2 * nslots + 1 {
            // Relaxed: see `# Orderings`.
            let s = self.pos.fetch_add(1, Ordering::Relaxed) % nslots;
            let p = table.load_slot(s, guard);
            // SAFETY: loaded under `guard`; nodes are retired through epoch.
            let Some(node) = (unsafe { p.as_ref() }) else {
                continue;
            };
            if node.take_ref() {
                continue;
            }
            let (b, i) = (s / crate::table::SLOTS, s % crate::table::SLOTS);
            if table.unlink(b, i, p, rehash, guard) {
                return Some(p);
            }
        }
        None
    }
}
