//! Eviction policies: classic CLOCK, and the default, an adaptive, scan-resistant CLOCK in the
//! shape of W-TinyLFU whose hits stay what CLOCK's are (read a bit, set it only when clear).
//!
//! # The adaptive policy
//!
//! * **Window.** A new entry enters a small probationary *window* (its node's `WINDOW` bit
//!   set, its slot appended to a `window::Ring`: one queue, or, in caches built with 32,768
//!   entries and more, the queue of its bucket, see `Adaptive`). It leaves, oldest first, when the
//!   window is over its target size. One that was read while in the window gets a second turn
//!   (its reference bit cleared, appended again), as in an LRU window.
//! * **Admission.** An entry leaving the window while the cache is full competes with the
//!   victim the CLOCK hand would evict from the main region: the one with the higher
//!   estimated frequency (`sketch::Sketch`, TinyLFU) stays, the other goes. The newcomer
//!   must beat the victim by more than one count: with a plain "greater than", estimates
//!   that differ by the timing of the last halving churn a loop-shaped workload (measured:
//!   loop at 250 entries, 13.8 % against 24.4 %; docs/design.md).
//! * **Main region.** CLOCK over the table, with a saturating frequency count per node (0 or
//!   1): the hand clears a set reference bit and raises the count; it lowers the count of a
//!   node it finds unreferenced; it evicts a node it finds unreferenced with a zero count. A
//!   node hit once gets two turns, not one (generalized CLOCK, which protects frequent
//!   entries a little better than one bit; a count up to 2 cost twice the hand's travel). Window nodes are
//!   the window's business: the hand passes them by.
//! * **Weights.** A new entry that would need more than one entry evicted to fit (a heavy
//!   one, in a cache with a weigher) is admitted only if its estimated frequency beats that
//!   of the most frequent entry it would displace; otherwise the insert returns
//!   [`InsertErrorKind::Rejected`](crate::InsertErrorKind::Rejected) and evicts nothing.
//! * **Hits** only set the reference bit when it is clear, as under CLOCK. What a hit means
//!   for the frequency estimate is collected by the hand: each time it clears a reference
//!   bit it counts one event for that key in the sketch. So the read path writes nothing
//!   more than CLOCK's, and the sketch is written only by inserts and the hand.
//! * **Ghost and adaptation.** Evicted keys leave a fingerprint in the `ghost::Ghost`, with
//!   the region and the time. When a new key arrives that the ghost saw leave the window a
//!   short while ago (within a tenth of the main region's size, in window evictions), a
//!   larger window would have kept it: the window's target grows by a step. When it saw the
//!   key leave main a short while ago (within a tenth of the window's size), a larger main
//!   region would have kept it: the target shrinks by a step, and the key skips the window:
//!   it goes straight to main with no contest (S3-FIFO's rule for a ghost hit, kept to
//!   main's recent evictions). Recency-shaped workloads grow
//!   the window (an LRU); loops and frequency-skewed ones keep it small (TinyLFU).
//!
//! The numbers behind every choice, and the alternatives measured, are in docs/design.md.
//!
//! # Orderings
//!
//! The policy's state is hints: the sketch, the ghost, the ring and the window's target are
//! read and written Relaxed (see each module). Two things are exact. A node is in the
//! window exactly while its `WINDOW` bit is set, and the window's count is decremented by
//! whoever clears that bit with an RMW (`Node::take_window`: a promotion, or the thread that
//! unlinked the node), so each node leaves the count once. And every eviction is an unlink
//! (a CAS of the slot pointer, see the table's `# Orderings`), so the entry bound holds
//! exactly as under CLOCK whatever the policy decided.

pub(crate) mod ghost;
pub(crate) mod sketch;
pub(crate) mod window;

use crate::sync::{AtomicUsize, Ordering};
use crossbeam_utils::CachePadded;
use ghost::{Ghost, Region};
use sketch::Sketch;
use window::Ring;

use crate::table::{window_bits, RINGS_MAX};

/// Which eviction policy a cache uses; see [`crate::Builder::policy`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Policy {
    /// The default: CLOCK with a probationary window, frequency-based admission (TinyLFU)
    /// and a window size that adapts to the workload. At or near the best of LRU, TinyLFU
    /// and CLOCK-Pro-like policies on recency, frequency and loop traces (docs/benchmarks.md).
    /// Costs about 2.5 bytes per entry (sketch, ghost, window queue) and some work per
    /// insert; a read hit costs what it costs under [`Policy::Clock`].
    #[default]
    Adaptive,
    /// Classic CLOCK, an approximation of LRU: one reference bit per entry, no admission
    /// filter. LRU's hit ratio and LRU's failures (a loop one entry longer than the cache
    /// hits nothing).
    Clock,
}

/// The window's size bounds: at most a quarter of the cache, except that small caches may
/// give it up to 80 % (a recency workload wants it large; 4096 window slots cost 16 KiB).
fn max_window(capacity: usize) -> usize {
    #[cfg(not(clockline_loom))]
    const SMALL: usize = 4096;
    #[cfg(clockline_loom)]
    const SMALL: usize = 2;
    if capacity / 4 >= SMALL {
        capacity / 4
    } else {
        SMALL.min(capacity * 4 / 5).max(1)
    }
}

/// Window slots per queue, at the window's largest: the window has one queue (`window::Ring`)
/// per this many, rounded up to a power of two (a mask, not a division, finds a bucket's
/// queue), at most [`RINGS_MAX`]. Loom's sizes make one queue, as in every cache below
/// 32,768 entries: each queue is the same locked ring with its own count, and a node's queue
/// is fixed before it is published, so two queues share no word for a model to interleave.
/// What striping adds (a node counted in and out of its own queue, every window node queued in
/// its own) is checked by `check_invariants` after the multi-queue stress test
/// (`tests/stress.rs`, `a_striped_window_keeps_every_node_queued_and_counted`).
const RING_SLOTS: usize = 4096;

/// The adaptive policy's shared state.
///
/// The window's queue is striped: a new node goes into the queue of its bucket (`bucket &
/// (rings - 1)`, recorded in the node's metadata), and an insert that must make room takes its
/// candidate from the queue of its key's home bucket, when that queue is over its share of the
/// target. So each queue is an exact FIFO of its share of the keys, and two inserts meet on a
/// queue's lock only when their keys share it. Why: at 16 threads one queue's lock, taken
/// twice by every insert of a new key, capped the showdown's cache-aside (docs/benchmarks.md
/// section 3.0). Caches whose window can hold fewer than 8,192 entries (below 32,768 entries
/// when built; growable caches) keep one queue, and with it the exact FIFO: on the frequency
/// trace P3 at 25,000 entries any striping cost 2.5 points (docs/design.md, *Eviction without
/// shared writes*, has the hit ratios).
pub(crate) struct Adaptive {
    sketch: Sketch,
    rings: Box<[Ring]>,
    /// The number of queues, minus one (a power of two).
    mask: usize,
    ghost: Ghost,
    /// The window's largest size, in entries (every queue's capacity together).
    most: usize,
    /// The window's target size, in entries.
    target: CachePadded<AtomicUsize>,
}

impl Adaptive {
    /// State sized for `capacity` entries, with the window's target starting at 1 % of
    /// `initial` entries (the entry capacity now; less than `capacity` for a table that grows).
    ///
    /// The queues are counted from `initial`, not `capacity`: a growable (weight-bounded)
    /// cache keeps the queue count it started with, since a node's queue is fixed for its
    /// life. Counted from `capacity`, every weight-bounded cache of 32,768 or more units of
    /// weight was striped however few entries it held (found in review).
    pub(crate) fn new(capacity: usize, initial: usize) -> Self {
        let capacity = capacity.max(1);
        let most = max_window(capacity);
        let n = ((max_window(initial.max(1)) / RING_SLOTS).clamp(1, RINGS_MAX))
            .next_power_of_two()
            .min(RINGS_MAX);
        Self {
            sketch: Sketch::new(capacity),
            rings: (0..n).map(|_| Ring::new(most.div_ceil(n))).collect(),
            mask: n - 1,
            ghost: Ghost::new(capacity),
            most,
            target: CachePadded::new(AtomicUsize::new((initial / 100).clamp(1, most))),
        }
    }

    /// The queue of the nodes of `bucket`.
    #[inline]
    pub(crate) fn ring_of(&self, bucket: usize) -> usize {
        bucket & self.mask
    }

    /// The metadata bits of a new node published in `bucket`: in the window, in its queue.
    #[inline]
    pub(crate) fn window_bits(&self, bucket: usize) -> u64 {
        window_bits(self.ring_of(bucket))
    }

    /// True while queue `ring` holds more nodes than its share of the target.
    ///
    /// A count may read below zero for a moment (wrapped): a node is published before its
    /// insert counts it in, and a thread that unlinks it meanwhile counts it out first. Such a
    /// count is not over anything. (Multiplied as it stood, it overflowed: a debug build
    /// panicked with a bucket lock held, and the other writers waited for good;
    /// `tests/stress.rs` `same_new_key_races` under AddressSanitizer, CI.)
    pub(crate) fn over_target(&self, ring: usize) -> bool {
        // Relaxed: both are hints for when to drain the window.
        let nodes = self.rings[ring].nodes();
        nodes <= isize::MAX as usize
            && nodes.saturating_mul(self.rings.len()) > self.target.load(Ordering::Relaxed)
    }

    /// A new key arrived (a miss that inserts): counts it and lets the ghost adapt the window.
    /// `entries`: the cache's size in entries, which the window's size and steps are fractions
    /// of (the capacity of a count-bounded cache; the current count of a weighted one, whose
    /// entry count follows the weights). True if the key should skip the window and go straight
    /// to main: the ghost saw main evict it a short while ago (the same check that shrinks the
    /// window), so main let it go too early and a window turn would only lose it again (the
    /// S3-FIFO rule, restricted to main's recent evictions; docs/design.md).
    pub(crate) fn arrived(&self, hash: u64, entries: usize) -> bool {
        self.sketch.increment(hash);
        let Some((region, age)) = self.ghost.take(hash) else {
            return false;
        };
        let entries = entries.max(1);
        let most = max_window(entries).min(self.most);
        let step = (entries / 500).max(1);
        // Relaxed: the target is a hint; racing adjustments may lose a step.
        let w = self.target.load(Ordering::Relaxed);
        let (next, to_main) = match region {
            Region::Window if age * 10 <= entries.saturating_sub(w) => {
                ((w + step).min(most), false)
            }
            Region::Main if age * 10 <= w => (w.saturating_sub(step).clamp(1, most), true),
            _ => return false,
        };
        self.target.store(next, Ordering::Relaxed);
        to_main
    }

    /// The node in `slot` entered the window (its `WINDOW` bit is set, with the queue of its
    /// bucket, `ring`). Returns a slot whose entry the queue had to overwrite: its node, if
    /// still in the window, must leave it.
    pub(crate) fn entered(&self, ring: usize, slot: usize) -> Option<usize> {
        let ring = &self.rings[ring];
        ring.node_in();
        ring.push(slot)
    }

    /// The slots whose window entries the next two pushes into queue `ring` would overwrite
    /// (the queue is full there), for the caller to prefetch: the window's target often sits
    /// at its largest size, and then nearly every new entry pushes out the oldest, a node not
    /// touched since it arrived (docs/benchmarks.md section 10(c)).
    ///
    /// Nothing under loom: the prefetch is compiled out there, and the peeks would only add
    /// interleavings to the models (they made the policy models several times slower).
    pub(crate) fn next_overwrites(&self, ring: usize) -> (Option<usize>, Option<usize>) {
        if cfg!(clockline_loom) {
            return (None, None);
        }
        let r = &self.rings[ring];
        (r.peek_overwrite(0), r.peek_overwrite(1))
    }

    /// The slots of queue `ring`'s next two oldest entries, for the caller to prefetch: the
    /// next candidates, nodes not touched since they entered the window.
    /// Nothing under loom, as for [`Self::next_overwrites`].
    pub(crate) fn next_oldest(&self, ring: usize) -> (Option<usize>, Option<usize>) {
        if cfg!(clockline_loom) {
            return (None, None);
        }
        let r = &self.rings[ring];
        (r.peek_pop(0), r.peek_pop(1))
    }

    /// A new node that goes straight to main entered the count of its queue, `ring` (its
    /// `WINDOW` bit is set), but not the queue: the caller takes the bit at once, which
    /// decrements the count.
    pub(crate) fn entered_unqueued(&self, ring: usize) {
        self.rings[ring].node_in();
    }

    /// A window node of queue `ring` left the window (the caller cleared its `WINDOW` bit).
    pub(crate) fn left(&self, ring: usize) {
        self.rings[ring].node_out();
    }

    /// Puts a window node's slot back at the end of its queue, `ring` (its second turn).
    /// Returns a slot the queue overwrote, as [`Self::entered`] does.
    pub(crate) fn requeue(&self, ring: usize, slot: usize) -> Option<usize> {
        self.rings[ring].push(slot)
    }

    /// The oldest slot in queue `ring`, if any.
    pub(crate) fn oldest(&self, ring: usize) -> Option<usize> {
        self.rings[ring].pop()
    }

    /// The oldest slot in queue `ring`, or, if it has no window node, in the next queue that
    /// has. A queue with no window node is passed by without its lock (a plain read of its
    /// count): every window node is queued, so such a queue holds stale entries at most.
    pub(crate) fn oldest_of_any(&self, ring: usize) -> Option<usize> {
        let n = self.rings.len();
        (0..n)
            .map(|i| &self.rings[(ring + i) & self.mask])
            .filter(|r| n == 1 || r.nodes() > 0)
            .find_map(Ring::pop)
    }

    /// Forgets every queue, for a table that is being rebuilt (see [`window`]'s docs).
    pub(crate) fn clear_queue(&self) {
        for r in self.rings.iter() {
            r.clear();
        }
    }

    /// One event for a key the hand found referenced (a hit since its last pass).
    pub(crate) fn harvest(&self, hash: u64) {
        self.sketch.increment(hash);
    }

    /// The sketch's estimate for `hash` (0..=15).
    pub(crate) fn frequency(&self, hash: u64) -> u64 {
        self.sketch.frequency(hash)
    }

    /// Whether a candidate leaving the window should replace the main region's victim.
    pub(crate) fn admit(&self, candidate: u64, victim: u64) -> bool {
        self.sketch.frequency(candidate) > self.sketch.frequency(victim) + 1
    }

    /// Records an eviction in the ghost.
    pub(crate) fn evicted(&self, hash: u64, from_window: bool) {
        let region = if from_window {
            Region::Window
        } else {
            Region::Main
        };
        self.ghost.record(hash, region);
    }

    /// The slots the window's queues name now, each with its queue. Only without concurrent
    /// writers (for `check_invariants`).
    pub(crate) fn queued(&self) -> Vec<(usize, usize)> {
        self.rings
            .iter()
            .enumerate()
            .flat_map(|(i, r)| r.queued().into_iter().map(move |s| (i, s)))
            .collect()
    }

    /// How many queues the window is striped into.
    pub(crate) fn queues(&self) -> usize {
        self.rings.len()
    }

    /// Each queue's count of window nodes, for `check_invariants`.
    pub(crate) fn nodes_per_ring(&self) -> Vec<usize> {
        self.rings.iter().map(Ring::nodes).collect()
    }

    /// The window's current size, target and largest target, for diagnostics and tests.
    pub(crate) fn window(&self) -> (usize, usize, usize) {
        // Relaxed: a snapshot for diagnostics.
        (
            // Wrapping: a count may read below zero for a moment (see `over_target`).
            self.rings
                .iter()
                .map(Ring::nodes)
                .fold(0usize, usize::wrapping_add),
            self.target.load(Ordering::Relaxed),
            self.most,
        )
    }
}

#[cfg(all(test, not(clockline_loom)))]
mod tests {
    use super::*;

    /// A node counted out before it was counted in (an unlink racing the insert that
    /// published it) leaves its queue's count below zero for a moment: not over the target,
    /// and no overflow (a debug build panicked there with a bucket lock held).
    #[test]
    fn a_count_below_zero_for_a_moment_is_not_over_the_target() {
        let a = Adaptive::new(1 << 17, 1 << 17);
        assert!(a.rings.len() > 1, "striped at 131,072 entries");
        a.left(1);
        assert!(!a.over_target(1));
        assert_eq!(a.window().0, usize::MAX);
        a.entered_unqueued(1);
        assert!(!a.over_target(1));
        assert_eq!(a.window().0, 0);
    }
}
