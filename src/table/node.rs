//! An entry: key, value and one metadata word, in one heap allocation reclaimed by epoch.
//!
//! ```text
//! Node<u64, u64> (24 bytes):
//!   meta: AtomicU64   bit 0       CLOCK reference bit (set by reads, cleared by the hand)
//!                     bit 1       reserved
//!                     bits 2..18  distance: buckets between the home bucket and this node's
//!                                 bucket (below `NEIGHBOURHOOD`)
//!                     bits 18..64 weight (at most MAX_WEIGHT)
//!   kv:   (K, V)      immutable after publication; replaced as a whole by a new node
//! ```

use crate::sync::{AtomicU64, Ordering, UnsafeCell};

const REF: u64 = 1;
const DIST_SHIFT: u32 = 2;
const DIST_MAX: u64 = 0xffff;
const WEIGHT_SHIFT: u32 = 18;
/// The largest weight one entry, and so the whole cache, can have: 2^46 - 1.
pub const MAX_WEIGHT: u64 = (1 << (64 - WEIGHT_SHIFT)) - 1;

pub(crate) struct Node<K, V> {
    meta: AtomicU64,
    kv: UnsafeCell<(K, V)>,
}

impl<K, V> Node<K, V> {
    pub(crate) fn new(key: K, value: V, weight: u64) -> Self {
        debug_assert!(weight <= MAX_WEIGHT);
        Self {
            meta: AtomicU64::new(weight << WEIGHT_SHIFT),
            kv: UnsafeCell::new((key, value)),
        }
    }

    /// The key and value. Shared references are all anyone ever takes after publication.
    #[inline(always)]
    pub(crate) fn kv(&self) -> &(K, V) {
        // SAFETY: the pair is written once, in `new`, before the node is published with a
        // Release store; afterwards it is only read, until the node is reclaimed, which epoch
        // delays until no guard that could reach it is alive (the caller holds one).
        self.kv.with(|p| unsafe { &*p })
    }

    /// Reads the pair through loom's tracked cell (so a model sees the access) and maps it.
    #[inline(always)]
    pub(crate) fn read<R>(&self, f: impl FnOnce(&K, &V) -> R) -> R {
        // SAFETY: as in `kv`.
        self.kv.with(|p| unsafe { f(&(*p).0, &(*p).1) })
    }

    #[inline(always)]
    pub(crate) fn weight(&self) -> u64 {
        // Relaxed: the weight bits never change after `new`.
        self.meta.load(Ordering::Relaxed) >> WEIGHT_SHIFT
    }

    /// Distance from the home bucket recorded at publication.
    #[inline(always)]
    pub(crate) fn dist(&self) -> usize {
        // Relaxed: written before the Release publish (or the grown table's), and read only by
        // writers, which are ordered after it.
        ((self.meta.load(Ordering::Relaxed) >> DIST_SHIFT) & DIST_MAX) as usize
    }

    /// Sets the reference bit of a node that is not yet published.
    pub(crate) fn set_ref(&self) {
        // Relaxed: the node is still private to this thread; the publish is the Release.
        self.meta.fetch_or(REF, Ordering::Relaxed);
    }

    /// Records the probe distance: before the node is published, or while a table grows (with
    /// every writer locked out, but readers may set the reference bit meanwhile).
    pub(crate) fn set_dist(&self, dist: usize) {
        debug_assert!(dist as u64 <= DIST_MAX);
        let d = dist as u64 & DIST_MAX;
        // Relaxed: the distance is read only by writers, which are ordered after this by the
        // Release publish of the node or of the grown table. A CAS, because a concurrent reader
        // may set the reference bit in the same word.
        let mut cur = self.meta.load(Ordering::Relaxed);
        loop {
            let new = (cur & !(DIST_MAX << DIST_SHIFT)) | (d << DIST_SHIFT);
            match self
                .meta
                .compare_exchange_weak(cur, new, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Marks the node as recently used. Writes only when the bit is clear, so a hot entry's
    /// line stays shared in every reader's cache.
    #[inline(always)]
    pub(crate) fn touch(&self) {
        // Relaxed: the bit is a hint for the hand and publishes no data.
        if self.meta.load(Ordering::Relaxed) & REF == 0 {
            self.meta.fetch_or(REF, Ordering::Relaxed);
        }
    }

    /// True if the reference bit is set.
    #[inline]
    pub(crate) fn is_marked(&self) -> bool {
        // Relaxed: a hint, as in `touch`.
        self.meta.load(Ordering::Relaxed) & REF != 0
    }

    /// The hand's test-and-clear: true if the node was referenced since the last pass.
    #[inline]
    pub(crate) fn take_ref(&self) -> bool {
        // Relaxed: a hint, as in `touch`; a race only costs one more round for this node.
        if self.meta.load(Ordering::Relaxed) & REF != 0 {
            self.meta.fetch_and(!REF, Ordering::Relaxed);
            true
        } else {
            false
        }
    }
}

#[cfg(all(test, not(clockline_loom)))]
mod tests {
    use super::*;

    #[test]
    fn node_u64_u64_is_24_bytes() {
        assert_eq!(std::mem::size_of::<Node<u64, u64>>(), 24);
    }

    #[test]
    fn meta_fields_do_not_overlap() {
        let n = Node::new(1u64, 2u64, MAX_WEIGHT);
        n.set_dist(12345);
        assert!(!n.take_ref(), "new nodes start unreferenced");
        n.touch();
        assert_eq!(n.weight(), MAX_WEIGHT);
        assert_eq!(n.dist(), 12345);
        assert!(n.take_ref());
        assert!(!n.take_ref());
        n.set_dist(3);
        assert_eq!(n.dist(), 3);
        assert_eq!(n.weight(), MAX_WEIGHT);
        assert_eq!(n.kv(), &(1, 2));
    }
}
