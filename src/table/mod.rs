//! The raw table: cache-line buckets, neighbourhoods, and the publish / unlink / reclaim
//! protocol.
//!
//! The table is a fixed array of [`Bucket`]s, each one 64-byte line holding a control word and
//! seven slot pointers. A key's *home* bucket is chosen by its hash, and the key lives in its
//! home or in one of the next `NEIGHBOURHOOD - 1` buckets (its *neighbourhood*). The home keeps
//! one *spill bit* per neighbour, set while a key of this home may live there, so a lookup reads
//! the home line and only the neighbours whose bits are set (usually none or one), hit or miss.
//! Keys never move after they are published, so nothing needs tombstones. If a new key's
//! neighbourhood is full, the caller evicts an entry of that neighbourhood (see
//! `Hand::evict_near`).
//!
//! Why bounded: an earlier version let keys probe any distance, with counts of keys passing each
//! bucket. With evictions and inserts in steady state, keys stayed displaced after the slots
//! before them were freed, displacement grew to 2.6 buckets on average, 99.6 % of buckets had
//! a key passing them, and every miss probed hundreds of lines (measured on the cache-aside
//! workload: about 2 µs per operation).
//!
//! Readers take no lock and write nothing shared. Writers of a key serialize on its home bucket's
//! lock bit (that is what makes two inserts of one key leave one entry); slots are claimed with a
//! CAS on the tag byte, and every unlink (remove, evict, clear) is a CAS of the slot pointer to
//! null, so the thread whose CAS succeeds owns the node and is the only one to retire it.
//!
//! # Orderings
//!
//! *Publish.* An insert (1) claims a slot by setting its tag byte (CAS, AcqRel), (2) if the slot
//! is `d` buckets past the home, sets the home's spill bit `d` (**Release**), and (3) stores the
//! node pointer with **Release**. A reader loads the slot pointer with **Acquire**; it pairs with (3),
//! so the reader sees the node fully built. Tags and counts are hints read Relaxed: a stale tag
//! only costs a key comparison, and a stale count only makes the lookup miss an insert that is
//! concurrent with it (the lookup is ordered before that insert).
//!
//! *Replace* swaps the slot pointer old -> new with a CAS (**AcqRel**: Release publishes the new
//! node; the Acquire half, which orders the swap after the publish of the old one it retires, is
//! already given by the Acquire load that found the old node, and is kept as insurance).
//!
//! *Unlink* (remove, evict, clear) CASes the pointer node -> null (**AcqRel**, more than needed:
//! the Acquire load that found the node and the tag's Release below do the work; see the
//! comment in `unlink` and the mutation table in loom-tests/README.md), then clears the tag
//! byte (**Release**, pairing with the Acquire of the next claim, so a claimant never sees the
//! pointer non-null). If the node was `d` buckets from home, the unlinker then clears the home's
//! spill bit `d` unless the bucket still holds a node `d` buckets from home, and only while it
//! holds the home's lock (its own, or taken with a try-lock; if another writer holds it, the bit
//! stays). Spill bits are set only under the home's lock too, by the claim of a slot for a key
//! of that home, so the check and the clear cannot race with a new claim. So a spill bit is set
//! whenever a published key needs it, which is all a reader relies on. (A lock-free version,
//! clearing with a CAS, was tried first and was wrong: setting a bit that is already set does
//! not change the word, so the CAS could not see a claim that raced with it. The loom model
//! `unlink_spilled_vs_insert_spilling` found that interleaving.) A bit may stay set with no key
//! behind it; that costs lookups of that home one extra line until a later unlink clears it.
//!
//! *Reclaim.* The owner of an unlinked or replaced node hands it to crossbeam-epoch with
//! `defer`: it is dropped only after every guard pinned before the unlink is gone, so a reader
//! that found the node before the unlink may keep using it for as long as its guard lives.

mod bucket;
mod node;
mod pool;

pub(crate) use bucket::SLOTS;

/// Buckets a key may live in: its home and the next seven (56 slots), one spill bit each.
/// Under loom, two.
#[cfg(not(clockline_loom))]
pub(crate) const NEIGHBOURHOOD: usize = 8;
#[cfg(clockline_loom)]
pub(crate) const NEIGHBOURHOOD: usize = 2;
pub use node::MAX_WEIGHT;
pub(crate) use node::{window_bits, Node, NodeBox, REF, RINGS_MAX};

use bucket::{lowest, match_tag, spill_mask, tag_of, Bucket, LockGuard};
use crossbeam_epoch::{Guard, Shared};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::sync::Ordering;

/// Where a node was found: its bucket, slot and pointer.
pub(crate) struct Found<'g, K, V> {
    pub(crate) bucket: usize,
    pub(crate) slot: usize,
    pub(crate) node: Shared<'g, Node<K, V>>,
}

impl<'g, K, V> Found<'g, K, V> {
    #[inline(always)]
    pub(crate) fn node(&self) -> &'g Node<K, V> {
        // SAFETY: `find` only returns non-null pointers loaded under the guard `'g`, and nodes
        // are retired through epoch, so the node outlives the guard.
        unsafe { self.node.deref() }
    }
}

pub(crate) struct RawTable<K, V> {
    buckets: Box<[Bucket<K, V>]>,
    /// The hand visits buckets in the order `k -> k * stride mod nbuckets` (a bijection, as
    /// `stride` is coprime with the bucket count), not in memory order: see [`Self::hand_slot`].
    stride: usize,
    /// The inverse of `stride` modulo the bucket count.
    stride_inv: usize,
}

impl<K, V> RawTable<K, V> {
    /// A table with room for `entries` entries, or `None` if it cannot be allocated.
    pub(crate) fn try_with_entries(entries: usize) -> Option<Self> {
        let nbuckets = Self::buckets_for(entries);
        let mut buckets = Vec::new();
        buckets.try_reserve_exact(nbuckets).ok()?;
        buckets.extend((0..nbuckets).map(|_| Bucket::new()));
        let (stride, stride_inv) = scatter_stride(nbuckets);
        Some(Self {
            buckets: buckets.into_boxed_slice(),
            // Reduced (the same visit order: `k * stride mod n` only depends on it modulo n),
            // so that `hand_next_bucket` can step with one addition and `wrap`.
            stride: stride % nbuckets,
            stride_inv,
        })
    }

    /// The slot at position `pos` (below `nslots`) of the hand's turn.
    ///
    /// The hand visits the seven slots of a bucket together (one line), but visits buckets in
    /// a scattered order. Evictions free slots where the hand is; if the hand walked memory in
    /// order, free slots would gather in the band it just swept, the rest of the table would
    /// fill up, and new keys would probe across the whole full region to reach the band (that
    /// was measured: lookups slowed to the cost of a full-table scan at 15,000 entries).
    /// Scattering the visit order keeps free slots spread evenly, so probes stay short.
    #[inline]
    pub(crate) fn hand_slot(&self, pos: usize) -> (usize, usize) {
        let k = pos / SLOTS;
        (mul_mod(k, self.stride, self.buckets.len()), pos % SLOTS)
    }

    /// The bucket the hand visits after bucket `b`: `hand_slot`'s bucket for the next `k`
    /// (`(k + 1) * stride mod n`, and bucket 0 after the last `k` of a turn, as
    /// `n * stride mod n = 0`), by one addition where `hand_slot` takes a multiplication and a
    /// division.
    #[inline(always)]
    pub(crate) fn hand_next_bucket(&self, b: usize) -> usize {
        wrap(b + self.stride, self.buckets.len())
    }

    /// The position of slot (`b`, `i`) in the hand's turn: the inverse of [`Self::hand_slot`].
    #[inline]
    pub(crate) fn hand_pos(&self, b: usize, i: usize) -> usize {
        mul_mod(b, self.stride_inv, self.buckets.len()) * SLOTS + i
    }

    /// Buckets for `entries` entries at 1.4 slots per entry (a load of at most 0.71): filling a
    /// cache to capacity then evicts about 0.02 % of keys early for a full neighbourhood, where
    /// 1.25 slots per entry evicted 0.2 % (docs/design.md).
    pub(crate) fn buckets_for(entries: usize) -> usize {
        let slots = entries.saturating_add(entries / 5 * 2).max(1);
        slots.div_ceil(SLOTS)
    }

    #[inline(always)]
    pub(crate) fn nslots(&self) -> usize {
        self.buckets.len() * SLOTS
    }

    /// The home bucket of `hash`: a multiply-shift range reduction, so the bucket count need
    /// not be a power of two (the memory budget per entry depends on it). Uses the high bits;
    /// tags use the low bits.
    #[inline(always)]
    pub(crate) fn home(&self, hash: u64) -> usize {
        ((hash as u128 * self.buckets.len() as u128) >> 64) as usize
    }

    /// Buckets in a neighbourhood: fewer than `NEIGHBOURHOOD` in a tiny table.
    #[inline(always)]
    fn reach(&self) -> usize {
        NEIGHBOURHOOD.min(self.buckets.len())
    }

    /// Finds the node whose key satisfies `eq` in the neighbourhood of `hash`: the home bucket,
    /// then only the buckets its spill bits name. Always inlined: it is the read path, and
    /// since it is called from several places LLVM no longer inlined it on its own, which cost
    /// a read hit a call and five register saves (docs/benchmarks.md).
    #[inline(always)]
    pub(crate) fn find<'g>(
        &self,
        hash: u64,
        mut eq: impl FnMut(&K) -> bool,
        guard: &'g Guard,
    ) -> Option<Found<'g, K, V>> {
        let tag = tag_of(hash);
        let home = self.home(hash);
        // Relaxed: tags and spill bits are hints (see `# Orderings`); the node is validated
        // through the Acquire pointer load and a key comparison.
        let ctrl = self.buckets[home].ctrl.load(Ordering::Relaxed);
        if let Some(found) = self.find_in(home, ctrl, tag, &mut eq, guard) {
            return Some(found);
        }
        let mut spill = spill_mask(ctrl);
        while spill != 0 {
            let d = spill.trailing_zeros() as usize + 1;
            spill &= spill - 1;
            if d >= self.reach() {
                break;
            }
            let b = wrap(home + d, self.buckets.len());
            let ctrl = self.buckets[b].ctrl.load(Ordering::Relaxed);
            if let Some(found) = self.find_in(b, ctrl, tag, &mut eq, guard) {
                return Some(found);
            }
        }
        None
    }

    #[inline(always)]
    fn find_in<'g>(
        &self,
        b: usize,
        ctrl: u64,
        tag: u8,
        eq: &mut impl FnMut(&K) -> bool,
        guard: &'g Guard,
    ) -> Option<Found<'g, K, V>> {
        let bucket = &self.buckets[b];
        let mut m = match_tag(ctrl, tag);
        while m != 0 {
            let i = lowest(m);
            m &= m - 1;
            // Acquire: pairs with the Release publish, so the node is fully visible.
            let p = bucket.slots[i].load(Ordering::Acquire, guard);
            // SAFETY: loaded under `guard`; nodes are retired through epoch.
            if let Some(node) = unsafe { p.as_ref() } {
                if node.read(|k, _| eq(k)) {
                    return Some(Found {
                        bucket: b,
                        slot: i,
                        node: p,
                    });
                }
            }
        }
        None
    }

    /// Takes the writer lock of the home bucket of `hash` (see [`Bucket::lock`]).
    pub(crate) fn lock(
        &self,
        hash: u64,
        abandon: impl Fn() -> bool,
    ) -> Option<LockGuard<'_, K, V>> {
        self.lock_bucket(self.home(hash), abandon)
    }

    /// Takes the writer lock of bucket `b` (see [`Bucket::lock`]).
    pub(crate) fn lock_bucket(
        &self,
        b: usize,
        abandon: impl Fn() -> bool,
    ) -> Option<LockGuard<'_, K, V>> {
        self.buckets[b].lock(abandon)
    }

    #[inline(always)]
    pub(crate) fn nbuckets(&self) -> usize {
        self.buckets.len()
    }

    /// Places an already published node into this table while it grows: the table is private
    /// to the grower (published later with a Release store), and every writer of the old table
    /// is locked out, so plain stores suffice. Returns false if the node's neighbourhood is full
    /// (only possible with a degenerate hasher); the grower then evicts it.
    pub(crate) fn place(&self, hash: u64, node: Shared<'_, Node<K, V>>) -> bool {
        let Some((b, i, dist)) = self.claim(hash) else {
            return false;
        };
        // SAFETY: the node is live: it was loaded from the old table, whose writers are all
        // locked out, under the grower's guard.
        unsafe { node.deref() }.set_dist(dist);
        // Relaxed: the whole table is published later by a Release store.
        self.buckets[b].slots[i].store(node, Ordering::Relaxed);
        true
    }

    /// Claims a free slot in the neighbourhood of `hash`, or `None` if it is full.
    fn claim(&self, hash: u64) -> Option<(usize, usize, usize)> {
        let tag = tag_of(hash);
        let home = self.home(hash);
        for (dist, b) in self.neighbourhood(hash).enumerate() {
            if let Some(i) = self.buckets[b].claim(tag) {
                if dist > 0 {
                    self.buckets[home].spill_set(dist);
                }
                return Some((b, i, dist));
            }
        }
        None
    }

    /// Claims a free slot for a new key of `hash` and publishes `node` there, or gives `node`
    /// back if the key's neighbourhood is full. The caller holds the home bucket's lock and has
    /// checked that the key is absent. `initial_bits` is told the slot's bucket and its position in
    /// the hand's turn, as a closure (computing it takes a division, and only `Policy::Clock` asks for
    /// it), and says which of the reference and window bits the node starts with. Returns the
    /// slot's index (see [`Self::load_slot`]).
    pub(crate) fn publish(
        &self,
        hash: u64,
        mut node: NodeBox<K, V>,
        initial_bits: impl FnOnce(usize, &dyn Fn() -> usize) -> u64,
    ) -> Result<usize, NodeBox<K, V>> {
        let Some((b, i, dist)) = self.claim(hash) else {
            return Err(node);
        };
        let bits = initial_bits(b, &|| self.hand_pos(b, i));
        node.place(dist, bits);
        let node = Shared::from(node.into_raw() as *const Node<K, V>);
        // Release: publishes the node's contents and the displaced count to readers (pairs with
        // the Acquire load in `find`).
        self.buckets[b].slots[i].store(node, Ordering::Release);
        Ok(b * SLOTS + i)
    }

    /// Swaps `new` in for the node found at `at`. On failure (the old node was unlinked in the
    /// meantime) gives `new` back.
    #[inline]
    pub(crate) fn replace<'g>(
        &self,
        at: &Found<'g, K, V>,
        mut new: NodeBox<K, V>,
        guard: &'g Guard,
    ) -> Result<(), NodeBox<K, V>> {
        // A write of a present key is a use of it, as in an LRU (and in moka and Caffeine):
        // the new node starts referenced, so a key kept current by writes alone (a counter
        // updated with `compute`) gets the hand's second chance like one kept by reads.
        new.place(at.node().dist(), REF);
        // AcqRel: Release publishes `new` (loom: Acquire alone fails
        // `remove_vs_insert_same_key`). The Acquire half is redundant: `at` came from `find`'s
        // Acquire load of this very slot (and `dist()` above already relies on it); kept as a
        // guard for callers to come, at no cost on x86.
        match self.buckets[at.bucket].slots[at.slot].compare_exchange(
            at.node,
            Shared::from(new.as_ptr()),
            Ordering::AcqRel,
            Ordering::Relaxed,
            guard,
        ) {
            Ok(_) => {
                // The table owns it now.
                new.into_raw();
                Ok(())
            }
            // Handed back with the reference bit set above: a publication as a new key
            // gives it the bits that publication says (`NodeBox::place`). (It kept the bit,
            // and a key nobody had read started referenced; test
            // `a_node_a_failed_replace_hands_back_is_published_unreferenced`.)
            Err(_) => Err(new),
        }
    }

    /// Unlinks the node at (`b`, `i`) if the slot still holds `node`. Returns true if this
    /// thread unlinked it and so owns it (and must retire it). `held` is the bucket whose lock
    /// the caller holds, if any.
    pub(crate) fn unlink<'g>(
        &self,
        b: usize,
        i: usize,
        node: Shared<'g, Node<K, V>>,
        held: Option<usize>,
        guard: &'g Guard,
    ) -> bool {
        // SAFETY: the caller loaded `node` from this slot under `guard`.
        let dist = unsafe { node.deref() }.dist();
        let bucket = &self.buckets[b];
        // AcqRel, more than strictly needed (every loom model passes with Relaxed here): the
        // node's publish is already ordered before this by the Acquire load the caller took
        // `node` from (and `dist()` above relies on it), and the next claimant of the slot is
        // ordered after it by `release`'s Release, which follows in this thread. Kept as
        // insurance for a lock-free tombstone path (see `insert_locked`'s fence), at no cost on
        // x86. Success makes this thread the owner.
        if bucket.slots[i]
            .compare_exchange(
                node,
                Shared::null(),
                Ordering::AcqRel,
                Ordering::Relaxed,
                guard,
            )
            .is_err()
        {
            return false;
        }
        bucket.release(i);
        if dist > 0 {
            let n = self.buckets.len();
            self.unspill(wrap(b + n - dist, n), b, dist, held, guard);
        }
        true
    }

    /// After a key of home `home` living in bucket `b` (`dist` on) was unlinked: clears the
    /// home's spill bit `dist` if no other key of that home lives in `b`. This needs the home's
    /// lock, which excludes every claim for a key of that home: held by the caller, or taken
    /// if free. If another writer holds it, the bit stays set; a stale bit only costs lookups
    /// of that home one more line, until a later unlink there clears it.
    fn unspill(&self, home: usize, b: usize, dist: usize, held: Option<usize>, guard: &Guard) {
        let _lock = if held == Some(home) {
            None
        } else {
            match self.buckets[home].try_lock() {
                Some(lock) => Some(lock),
                None => return,
            }
        };
        if !self.holds_spill(b, dist, guard) {
            self.buckets[home].spill_clear(dist);
        }
    }

    /// True if bucket `b` holds a published node `dist` buckets from its home (all such nodes
    /// have the same home). Slots claimed but not yet published are not that home's: the
    /// caller holds its lock.
    fn holds_spill(&self, b: usize, dist: usize, guard: &Guard) -> bool {
        let mut used = self.buckets[b].used();
        while used != 0 {
            let i = lowest(used);
            used &= used - 1;
            // SAFETY: loaded under `guard`.
            if let Some(node) = unsafe { self.load(b, i, guard).as_ref() } {
                if node.dist() == dist {
                    return true;
                }
            }
        }
        false
    }

    /// The buckets of the neighbourhood of `hash`, home first.
    pub(crate) fn neighbourhood(&self, hash: u64) -> impl Iterator<Item = usize> + '_ {
        let home = self.home(hash);
        (0..self.reach()).map(move |d| wrap(home + d, self.buckets.len()))
    }

    /// (published nodes, sum of their distances from home, spill bits set): for diagnostics
    /// and tests.
    pub(crate) fn probe_stats(&self, guard: &Guard) -> [usize; 3] {
        let mut st = [0; 3];
        for (b, bucket) in self.buckets.iter().enumerate() {
            st[2] += spill_mask(bucket.ctrl.load(Ordering::Relaxed)).count_ones() as usize;
            for i in 0..SLOTS {
                // SAFETY: loaded under `guard`.
                if let Some(n) = unsafe { self.load(b, i, guard).as_ref() } {
                    st[0] += 1;
                    st[1] += n.dist();
                }
            }
        }
        st
    }

    /// Loads slot `s` (a flat index over all slots, in memory order).
    #[inline]
    pub(crate) fn load_slot<'g>(&self, s: usize, guard: &'g Guard) -> Shared<'g, Node<K, V>> {
        self.load(s / SLOTS, s % SLOTS, guard)
    }

    /// Loads slot `i` of bucket `b`.
    #[inline]
    pub(crate) fn load<'g>(&self, b: usize, i: usize, guard: &'g Guard) -> Shared<'g, Node<K, V>> {
        // Acquire: as in `find`; callers read the node and may unlink it.
        self.buckets[b].slots[i].load(Ordering::Acquire, guard)
    }

    /// Asks the CPU to start loading the nodes of bucket `b` and the line of bucket `next`,
    /// which a walk over the table (a hand, a sweep, iteration, `Drop`) visits next. Only a
    /// hint: nothing is read through the pointers here. Nothing under loom, whose models
    /// would only gain interleavings from the slot loads.
    #[inline]
    pub(crate) fn prefetch_ahead(&self, b: usize, next: usize, guard: &Guard) {
        if cfg!(clockline_loom) {
            return;
        }
        for i in 0..SLOTS {
            prefetch(self.load(b, i, guard).as_raw());
        }
        prefetch(&self.buckets[next]);
    }

    /// [`Self::prefetch_ahead`] for a walk over the buckets in index order (a sweep,
    /// iteration, `Drop`) that is working on bucket `b`: the next bucket's nodes and the line
    /// of the one after, so their loads overlap with this bucket's work.
    #[inline]
    pub(crate) fn prefetch_walk(&self, b: usize, guard: &Guard) {
        let n = self.buckets.len();
        self.prefetch_ahead((b + 1) % n, (b + 2) % n, guard);
    }

    /// Prefetches for a walk of slots known ahead (the window queue's next overwrites): the
    /// node in slot `next` (whose bucket line an earlier call prefetched) and the bucket line
    /// of slot `after`, so that two calls in a row have both lines in cache. (Under loom the
    /// callers' slots come from `Adaptive::next_overwrites` and `next_oldest`, which give none.)
    #[inline]
    pub(crate) fn prefetch_slots(&self, next: Option<usize>, after: Option<usize>, guard: &Guard) {
        if let Some(s) = after {
            prefetch(&self.buckets[s / SLOTS]);
        }
        if let Some(s) = next {
            prefetch(self.load_slot(s, guard).as_raw());
        }
    }
}

/// A hint to the CPU to bring the line at `p` into the cache; nothing else happens. Any
/// address will do, freed or null: a prefetch never faults.
#[inline(always)]
pub(crate) fn prefetch<T>(p: *const T) {
    #[cfg(all(target_arch = "x86_64", not(clockline_loom)))]
    // SAFETY: `_mm_prefetch` only hints the cache; it reads nothing architecturally and does
    // not fault on any address (SSE, part of the x86-64 baseline).
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(all(target_arch = "x86_64", not(clockline_loom))))]
    let _ = p;
}

/// `x mod n` for `x < 2 * n`: a bucket index a neighbourhood step past another (`home + d` or
/// `b + n - d`, with `d` below the reach, at most `n`). A compare and a subtraction where `%`
/// is a division, which a claim paid once per bucket it tried and a lookup once per spill bit.
#[inline(always)]
fn wrap(x: usize, n: usize) -> usize {
    debug_assert!(x < 2 * n);
    if x >= n {
        x - n
    } else {
        x
    }
}

/// `a * b mod n` for `a, b < n`: one hardware division while the product fits in 64 bits (any
/// table below 2^32 buckets), instead of the software 128-bit remainder.
#[inline(always)]
fn mul_mod(a: usize, b: usize, n: usize) -> usize {
    let (a, b, n) = (a as u64, b as u64, n as u64);
    match a.checked_mul(b) {
        Some(p) => (p % n) as usize,
        None => ((a as u128 * b as u128) % n as u128) as usize,
    }
}

/// A stride near `n / phi` that is coprime with `n`, and its inverse modulo `n`.
fn scatter_stride(n: usize) -> (usize, usize) {
    if n <= 1 {
        return (0, 0);
    }
    let mut stride = ((n as f64 * 0.618_033_988_75) as usize).max(1);
    while gcd(stride, n) != 1 {
        stride += 1;
    }
    (stride, mod_inverse(stride, n))
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// `a^-1 mod n` for `a` coprime with `n` (extended Euclid).
fn mod_inverse(a: usize, n: usize) -> usize {
    let (mut t, mut new_t) = (0i128, 1i128);
    let (mut r, mut new_r) = (n as i128, a as i128);
    while new_r != 0 {
        let q = r / new_r;
        (t, new_t) = (new_t, t - q * new_t);
        (r, new_r) = (new_r, r - q * new_r);
    }
    debug_assert_eq!(r, 1);
    t.rem_euclid(n as i128) as usize
}

#[cfg(all(test, not(clockline_loom)))]
mod tests {
    use super::*;

    #[test]
    fn hand_order_is_a_bijection() {
        for entries in [1, 2, 5, 6, 7, 100, 1000, 4321] {
            let t = RawTable::<u64, u64>::try_with_entries(entries).unwrap();
            let mut seen = vec![false; t.nslots()];
            for pos in 0..t.nslots() {
                let (b, i) = t.hand_slot(pos);
                assert_eq!(t.hand_pos(b, i), pos);
                let s = b * SLOTS + i;
                assert!(!seen[s], "slot {s} visited twice");
                seen[s] = true;
                // The next bucket of the turn (the hand's step without a division).
                let next = t.hand_slot((pos / SLOTS + 1) % t.nbuckets() * SLOTS).0;
                assert_eq!(
                    t.hand_next_bucket(b),
                    next,
                    "{entries} entries, position {pos}"
                );
            }
            assert!(seen.iter().all(|&v| v));
        }
    }

    /// A replace that loses its CAS (the old node was evicted or removed meanwhile) hands the
    /// new node back, and the insert then publishes it as a new key: it must start with the
    /// bits `publish` gives it, not with the reference bit the failed replace set (it started
    /// referenced, so the hand gave a key nobody had read a second chance, and the adaptive
    /// policy counted a hit for it in the sketch).
    #[test]
    fn a_node_a_failed_replace_hands_back_is_published_unreferenced() {
        let t = RawTable::<u64, u64>::try_with_entries(100).unwrap();
        let guard = crossbeam_epoch::pin();
        let hash = 0x1234_5678_9abc_def0;
        t.publish(hash, NodeBox::new(1, 10, 0, &[], None), |_, _| 0)
            .ok()
            .unwrap();
        let found = t.find(hash, |k| *k == 1, &guard).unwrap();
        // Another writer (an eviction) unlinks the old node before the replace's CAS.
        assert!(t.unlink(found.bucket, found.slot, found.node, None, &guard));
        let back = t
            .replace(&found, NodeBox::new(1, 11, 0, &[], None), &guard)
            .expect_err("the old node is gone: the replace fails");
        t.publish(hash, back, |_, _| 0).ok().unwrap();
        let new = t.find(hash, |k| *k == 1, &guard).unwrap();
        assert_eq!(new.node().kv().1, 11);
        assert!(
            !new.node().is_marked(),
            "a new key starts unreferenced unless `initial_bits` marks it"
        );
        // SAFETY: unlinked above by this thread; the table holds the new node only, which
        // `drop_nodes` frees; no other thread uses the table.
        unsafe {
            drop(NodeBox::from_raw(found.node.as_raw() as *mut Node<u64, u64>));
            let mut t = t;
            t.drop_nodes();
        }
    }
}

/// Retires a node that this thread unlinked: it is dropped once no guard can reach it.
///
/// # Safety
/// The caller must have unlinked `node` (or replaced it) itself, with a successful CAS, so no
/// other thread retires it, and no new reference to it can be created.
pub(crate) unsafe fn retire<K, V>(node: Shared<'_, Node<K, V>>, guard: &Guard) {
    let raw = node.as_raw() as usize;
    crate::sync::note_retired();
    // SAFETY: by the caller's contract the node is unreachable for new readers and retired
    // once; epoch runs the closure after every guard that could still see it is dropped.
    // `K: Send, V: Send` is required by every public constructor, so the drop may run on
    // another thread. A panicking `Drop` of a key or value runs on whichever thread collects
    // garbage; it is caught so the collector's state stays intact, and the allocation is still
    // freed (the panic hook reports it as usual). A node without drop glue (keys and values
    // such as `u64`) runs no user code when freed, so it skips the `catch_unwind` and the
    // call to `NodeBox::drop` (decided at compile time).
    unsafe {
        guard.defer_unchecked(move || {
            let node = NodeBox::from_raw(raw as *mut Node<K, V>);
            if std::mem::needs_drop::<Node<K, V>>() {
                let _ = catch_unwind(AssertUnwindSafe(|| drop(node)));
            } else {
                node.free_plain();
            }
            crate::sync::note_freed();
        });
    }
}

impl<K, V> RawTable<K, V> {
    /// Frees every node still in the table.
    ///
    /// # Safety
    /// The table must be the nodes' only owner: no other table (a grown successor or a retired
    /// predecessor) may still be freed with its nodes, and no thread may be inside it.
    /// A panicking `Drop` of one value does not leak the others: the first panic is re-raised
    /// after all nodes are freed.
    pub(crate) unsafe fn drop_nodes(&mut self) {
        let mut first_panic = None;
        for (b, bucket) in self.buckets.iter().enumerate() {
            // SAFETY: no thread is inside the table (the caller's contract), so the
            // unprotected guard is sound.
            let guard = unsafe { crossbeam_epoch::unprotected() };
            // The next bucket's nodes: their loads (the free reads each node's allocation
            // header) overlap with this bucket's frees.
            self.prefetch_walk(b, guard);
            for slot in &bucket.slots {
                let p = slot.swap(Shared::null(), Ordering::Relaxed, guard);
                if !p.is_null() {
                    // SAFETY: the table is the node's only owner (the caller's contract).
                    let owned = unsafe { NodeBox::from_raw(p.as_raw() as *mut Node<K, V>) };
                    if let Err(e) = catch_unwind(AssertUnwindSafe(|| drop(owned))) {
                        first_panic.get_or_insert(e);
                    }
                }
            }
        }
        if let Some(e) = first_panic {
            std::panic::resume_unwind(e);
        }
    }
}
