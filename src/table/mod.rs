//! The raw table: cache-line buckets, probing, and the publish / unlink / reclaim protocol.
//!
//! The table is a fixed array of [`Bucket`]s, each one 64-byte line holding a control word and
//! seven slot pointers. A key's *home* bucket is chosen by its hash; if the home is full the key
//! lives in the next bucket with a free slot (linear probing over buckets), and every bucket it
//! passed counts it in its *overflow* count, so a lookup stops at the first bucket whose count is
//! zero. Keys never move after they are published, and no tombstones are needed: removing a key
//! decrements the counts it incremented.
//!
//! Readers take no lock and write nothing shared. Writers of a key serialize on its home bucket's
//! lock bit, which only guarantees that two inserts of one key leave one entry; slots are claimed
//! with a CAS on the tag byte, and every unlink (remove, evict, clear) is a CAS of the slot pointer
//! to null, so the thread whose CAS succeeds owns the node and is the only one to retire it.
//!
//! # Orderings
//!
//! *Publish.* An insert (1) claims a slot by setting its tag byte (CAS, AcqRel), (2) increments
//! the overflow count of every bucket from the home up to the slot's bucket (CAS), and (3) stores
//! the node pointer with **Release**. A reader loads the slot pointer with **Acquire**; it pairs
//! with (3), so the reader sees the node fully built. Tags and counts are hints read Relaxed: a
//! stale tag only costs a key comparison, and a stale count only makes the lookup miss an insert
//! that is concurrent with it (the lookup is ordered before that insert).
//!
//! *Replace* swaps the slot pointer old -> new with a CAS (**AcqRel**: Release publishes the new
//! node; Acquire orders the swap after the publish of the old one, which it then retires).
//!
//! *Unlink* (remove, evict, clear) CASes the pointer node -> null (**AcqRel**), then clears the tag
//! byte (**Release**, pairing with the Acquire of the next claim, so a claimant never sees the
//! pointer non-null), then decrements the overflow counts. Counts are therefore never lower than
//! the number of published keys that passed a bucket, which is all a reader relies on.
//!
//! *Reclaim.* The owner of an unlinked or replaced node hands it to crossbeam-epoch with
//! `defer`: it is dropped only after every guard pinned before the unlink is gone, so a reader
//! that found the node before the unlink may keep using it for as long as its guard lives.

mod bucket;
mod node;

pub(crate) use bucket::SLOTS;
pub use node::MAX_WEIGHT;
pub(crate) use node::Node;

use bucket::{lowest, match_tag, overflow, tag_of, Bucket, LockGuard};
use crossbeam_epoch::{Guard, Owned, Shared};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::sync::{spin_wait, Ordering};

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
}

impl<K, V> RawTable<K, V> {
    /// A table with room for `entries` entries, or `None` if it cannot be allocated.
    pub(crate) fn try_with_entries(entries: usize) -> Option<Self> {
        let nbuckets = Self::buckets_for(entries);
        let mut buckets = Vec::new();
        buckets.try_reserve_exact(nbuckets).ok()?;
        buckets.extend((0..nbuckets).map(|_| Bucket::new()));
        Some(Self {
            buckets: buckets.into_boxed_slice(),
        })
    }

    /// Buckets for `entries` entries at a load factor of at most 0.8.
    pub(crate) fn buckets_for(entries: usize) -> usize {
        let slots = entries.saturating_add(entries / 4).max(1);
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

    #[inline(always)]
    fn next(&self, b: usize) -> usize {
        if b + 1 == self.buckets.len() {
            0
        } else {
            b + 1
        }
    }

    /// Finds the node whose key satisfies `eq`, probing from the home bucket of `hash`.
    #[inline]
    pub(crate) fn find<'g>(
        &self,
        hash: u64,
        mut eq: impl FnMut(&K) -> bool,
        guard: &'g Guard,
    ) -> Option<Found<'g, K, V>> {
        let tag = tag_of(hash);
        let mut b = self.home(hash);
        for _ in 0..self.buckets.len() {
            let bucket = &self.buckets[b];
            // Relaxed: tags and counts are hints (see `# Orderings`); the node is validated
            // through the Acquire pointer load and a key comparison.
            let ctrl = bucket.ctrl.load(Ordering::Relaxed);
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
            if overflow(ctrl) == 0 {
                return None;
            }
            b = self.next(b);
        }
        None
    }

    /// Takes the writer lock of the home bucket of `hash` (see [`Bucket::lock`]).
    pub(crate) fn lock(&self, hash: u64, abandon: impl Fn() -> bool) -> Option<LockGuard<'_, K, V>> {
        self.buckets[self.home(hash)].lock(abandon)
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
    /// is locked out, so no CAS is needed.
    pub(crate) fn place(&self, hash: u64, node: Shared<'_, Node<K, V>>) {
        let tag = tag_of(hash);
        let home = self.home(hash);
        let mut b = home;
        for dist in 0..self.buckets.len() {
            if let Some(i) = self.buckets[b].claim(tag) {
                let mut p = home;
                for _ in 0..dist {
                    self.buckets[p].overflow_inc();
                    p = self.next(p);
                }
                // SAFETY: the node is live: it was loaded from the old table, whose writers are
                // all locked out, under the grower's guard.
                unsafe { node.deref() }.set_dist(dist);
                // Relaxed: the whole table is published later by a Release store.
                self.buckets[b].slots[i].store(node, Ordering::Relaxed);
                return;
            }
            b = self.next(b);
        }
        unreachable!("a grown table has more free slots than the old one had entries");
    }

    /// Claims a free slot for a new key of `hash` and publishes `node` there. The caller holds
    /// the home bucket's lock and has checked that the key is absent. `start_marked` is told
    /// the flat index of the slot and says whether the node starts with its reference bit set.
    pub(crate) fn publish<'g>(
        &self,
        hash: u64,
        node: Owned<Node<K, V>>,
        start_marked: impl FnOnce(usize) -> bool,
        guard: &'g Guard,
    ) -> Shared<'g, Node<K, V>> {
        let tag = tag_of(hash);
        let home = self.home(hash);
        let mut step = 0;
        let (b, i, dist) = 'claim: loop {
            let mut b = home;
            for dist in 0..self.buckets.len() {
                if let Some(i) = self.buckets[b].claim(tag) {
                    break 'claim (b, i, dist);
                }
                b = self.next(b);
            }
            // Every slot is claimed: only possible for an instant, while unlinked slots wait
            // for their tags to clear (the entry bound keeps a fifth of the slots free).
            spin_wait(step);
            step = step.saturating_add(1);
        };
        let mut p = home;
        for _ in 0..dist {
            self.buckets[p].overflow_inc();
            p = self.next(p);
        }
        node.set_dist(dist);
        if start_marked(b * SLOTS + i) {
            node.set_ref();
        }
        let node = node.into_shared(guard);
        // Release: publishes the node's contents and the overflow counts above to readers
        // (pairs with the Acquire load in `find`).
        self.buckets[b].slots[i].store(node, Ordering::Release);
        node
    }

    /// Swaps `new` in for the node found at `at`. On failure (the old node was unlinked in the
    /// meantime) gives `new` back.
    pub(crate) fn replace<'g>(
        &self,
        at: &Found<'g, K, V>,
        new: Owned<Node<K, V>>,
        guard: &'g Guard,
    ) -> Result<(), Owned<Node<K, V>>> {
        new.set_dist(at.node().dist().unwrap_or(usize::MAX));
        // AcqRel: Release publishes `new`; Acquire orders this after the old node's publish.
        match self.buckets[at.bucket].slots[at.slot].compare_exchange(
            at.node,
            new,
            Ordering::AcqRel,
            Ordering::Relaxed,
            guard,
        ) {
            Ok(_) => Ok(()),
            Err(e) => Err(e.new),
        }
    }

    /// Unlinks the node at (`b`, `i`) if the slot still holds `node`. Returns true if this
    /// thread unlinked it and so owns it (and must retire it). `rehash` gives the key's hash
    /// when the node's recorded probe distance saturated.
    pub(crate) fn unlink<'g>(
        &self,
        b: usize,
        i: usize,
        node: Shared<'g, Node<K, V>>,
        rehash: impl FnOnce(&K) -> u64,
        guard: &'g Guard,
    ) -> bool {
        // SAFETY: the caller loaded `node` from this slot under `guard`.
        let n = unsafe { node.deref() };
        // Find how far the key travelled before it is unlinked: a panic in the user's `Hash`
        // then leaves everything as it was.
        let dist = match n.dist() {
            Some(d) => d,
            None => {
                let home = self.home(n.read(|k, _| rehash(k)));
                (b + self.buckets.len() - home) % self.buckets.len()
            }
        };
        let bucket = &self.buckets[b];
        // AcqRel: Acquire orders this after the node's publish; Release orders it before the
        // tag release below for the next claimant. Success makes this thread the owner.
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
        let mut p = (b + self.buckets.len() - dist) % self.buckets.len();
        for _ in 0..dist {
            self.buckets[p].overflow_dec();
            p = self.next(p);
        }
        true
    }

    /// Loads slot `s` (a flat index over all slots) for the hand.
    #[inline]
    pub(crate) fn load_slot<'g>(&self, s: usize, guard: &'g Guard) -> Shared<'g, Node<K, V>> {
        // Acquire: as in `find`; the hand reads the node's metadata and may unlink it.
        self.buckets[s / SLOTS].slots[s % SLOTS].load(Ordering::Acquire, guard)
    }
}

/// Retires a node that this thread unlinked: it is dropped once no guard can reach it.
///
/// # Safety
/// The caller must have unlinked `node` (or replaced it) itself, with a successful CAS, so no
/// other thread retires it, and no new reference to it can be created.
pub(crate) unsafe fn retire<K, V>(node: Shared<'_, Node<K, V>>, guard: &Guard) {
    let raw = node.as_raw() as usize;
    // SAFETY: by the caller's contract the node is unreachable for new readers and retired
    // once; epoch runs the closure after every guard that could still see it is dropped.
    // `K: Send, V: Send` is required by every public constructor, so the drop may run on
    // another thread. A panicking `Drop` of a key or value runs on whichever thread collects
    // garbage; it is caught so the collector's state stays intact, and the allocation is still
    // freed (the panic hook reports it as usual).
    unsafe {
        guard.defer_unchecked(move || {
            let _ = catch_unwind(AssertUnwindSafe(|| {
                drop(Owned::from_raw(raw as *mut Node<K, V>));
            }));
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
        for bucket in self.buckets.iter() {
            for slot in &bucket.slots {
                // SAFETY: no thread is inside the table (the caller's contract), so the
                // unprotected guard is sound.
                let guard = unsafe { crossbeam_epoch::unprotected() };
                let p = slot.swap(Shared::null(), Ordering::Relaxed, guard);
                if !p.is_null() {
                    // SAFETY: the table is the node's only owner (the caller's contract).
                    let owned = unsafe { p.into_owned() };
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
