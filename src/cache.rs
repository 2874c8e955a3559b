//! The public cache: lookups, inserts, removal and eviction over the raw table.

use std::fmt;
use std::hash::{BuildHasher, Hash};

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

use crossbeam_epoch::{self as epoch, Atomic, Guard, Owned, Shared};
use equivalent::Equivalent;

use crate::budget::{Budget, Reservation};
use crate::builder::{Builder, Weigher};
use crate::clock::Hand;
use crate::error::{BuildError, InsertError, InsertErrorKind};
use crate::sync::{spin_wait, AtomicBool, Ordering};
use crate::table::{retire, Found, Node, RawTable, MAX_WEIGHT, SLOTS};

/// The default hasher: [ahash](https://docs.rs/ahash) with random keys.
pub type DefaultHashBuilder = ahash::RandomState;

/// A concurrent cache bounded by entry count and, optionally, by total weight.
///
/// Reads take no lock, do no CAS and write no shared cache line once an entry is marked as
/// recently used. Writes never block reads. See the [crate docs](crate) for the guarantees.
pub struct Cache<K, V, S = DefaultHashBuilder> {
    /// The current table. Replaced only when a growable (weight-bounded, no `max_capacity`)
    /// cache grows; the old one is retired through epoch.
    table: Atomic<RawTable<K, V>>,
    hand: Hand,
    budget: Budget,
    hasher: S,
    weigher: Option<Weigher<K, V>>,
    /// The most entries a growable table may grow to; `None` for a fixed table.
    grow_limit: Option<usize>,
    /// Set when allocating a grown table failed: the table stays as it is and evicts instead,
    /// rather than retrying the allocation forever.
    grow_failed: AtomicBool,
}

// SAFETY: the table shares keys and values between threads (readers get `&K`/`&V`, and any
// thread may drop them during reclamation), which is sound exactly when both are Send + Sync.
// Everything else is atomics, or `S` and the weigher, which are shared by reference.
unsafe impl<K: Send + Sync, V: Send + Sync, S: Send> Send for Cache<K, V, S> {}
// SAFETY: as above; `&Cache` hands out `&S`, hence `S: Sync`.
unsafe impl<K: Send + Sync, V: Send + Sync, S: Sync> Sync for Cache<K, V, S> {}

impl<K, V> Cache<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// A cache of at most `capacity` entries, with the default hasher.
    ///
    /// # Panics
    /// If `capacity` is 0 or the table cannot be allocated; use [`Cache::builder`] to get these
    /// as a [`BuildError`] instead.
    pub fn new(capacity: usize) -> Self {
        match Self::builder().max_capacity(capacity).build() {
            Ok(cache) => cache,
            Err(e) => panic!("Cache::new({capacity}): {e}"),
        }
    }

    /// Starts a [`Builder`].
    pub fn builder() -> Builder<K, V> {
        Builder::new()
    }
}

impl<K, V, S> Cache<K, V, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
    S: BuildHasher,
{
    /// `grow_limit`: `Some(most entries)` makes the table start at `entries` and double when
    /// the entry count, not the weight, is what binds.
    pub(crate) fn from_parts(
        entries: usize,
        grow_limit: Option<usize>,
        max_weight: Option<u64>,
        weigher: Option<Weigher<K, V>>,
        hasher: S,
    ) -> Result<Self, BuildError> {
        let table = RawTable::try_with_entries(entries)
            .ok_or(BuildError::CapacityTooLarge { requested: entries })?;
        Ok(Self {
            table: Atomic::new(table),
            hand: Hand::new(),
            budget: Budget::new(entries, max_weight.unwrap_or(MAX_WEIGHT)),
            hasher,
            weigher,
            grow_limit,
            grow_failed: AtomicBool::new(false),
        })
    }

    #[inline(always)]
    fn hash<Q: ?Sized + Hash>(&self, key: &Q) -> u64 {
        self.hasher.hash_one(key)
    }

    /// True once `table` is no longer the current table (a grower replaced it).
    fn replaced(&self, table: &RawTable<K, V>, guard: &Guard) -> bool {
        // Relaxed: only decides whether to stop waiting; the caller reloads with Acquire.
        !std::ptr::eq(self.table.load(Ordering::Relaxed, guard).as_raw(), table)
    }

    /// Pins the current thread and returns a handle whose lookups lend references instead of
    /// cloning. Entries stay alive (not necessarily in the cache) while the handle lives, so keep
    /// it short-lived: a long-lived handle delays the reclamation of everything removed meanwhile.
    pub fn pin(&self) -> Pinned<'_, K, V, S> {
        Pinned {
            cache: self,
            guard: epoch::pin(),
        }
    }

    #[inline]
    fn find<'g, Q>(&self, key: &Q, guard: &'g Guard) -> Option<&'g Node<K, V>>
    where
        Q: ?Sized + Hash + Equivalent<K>,
    {
        let hash = self.hash(key);
        self.table(guard)
            .find(hash, |k| key.equivalent(k), guard)
            .map(|f| f.node())
    }

    /// Returns a clone of the value for `key` and marks the entry as recently used.
    #[inline]
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        Q: ?Sized + Hash + Equivalent<K>,
        V: Clone,
    {
        let guard = epoch::pin();
        let node = self.find(key, &guard)?;
        node.touch();
        Some(node.read(|_, v| v.clone()))
    }

    /// Like [`get`](Self::get), but leaves the entry's recency alone.
    pub fn peek<Q>(&self, key: &Q) -> Option<V>
    where
        Q: ?Sized + Hash + Equivalent<K>,
        V: Clone,
    {
        let guard = epoch::pin();
        self.find(key, &guard).map(|n| n.read(|_, v| v.clone()))
    }

    /// True if `key` is cached. Leaves recency alone.
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        Q: ?Sized + Hash + Equivalent<K>,
    {
        let guard = epoch::pin();
        self.find(key, &guard).is_some()
    }

    /// Inserts or replaces the entry for `key`, evicting others if the cache is full.
    ///
    /// The only refusal is an entry heavier than `max_weight` in a weighted cache
    /// ([`InsertErrorKind::TooHeavy`]); it evicts nothing and hands the pair back. In a cache
    /// without a weigher `insert` always succeeds.
    pub fn insert(&self, key: K, value: V) -> Result<(), InsertError<K, V>> {
        let guard = epoch::pin();
        self.insert_with_guard(key, value, &guard)
    }

    fn insert_with_guard(&self, key: K, value: V, guard: &Guard) -> Result<(), InsertError<K, V>> {
        let hash = self.hash(&key);
        let weight = match &self.weigher {
            Some(weigher) => weigher(&key, &value),
            None => 0,
        };
        if weight > self.budget.max_weight() {
            return Err(InsertError {
                key,
                value,
                kind: InsertErrorKind::TooHeavy {
                    weight,
                    max_weight: self.budget.max_weight(),
                },
            });
        }
        let mut node = Owned::new(Node::new(key, value, weight));
        if self.grow_limit.is_none() {
            match self.replace_unlocked(hash, node, guard) {
                Ok(()) => return Ok(()),
                Err(back) => node = back,
            }
        }
        loop {
            let table = self.table(guard);
            // Inserts of one key serialize on its home bucket's lock, so they leave one entry;
            // nothing else waits for it. `None`: the table grew meanwhile, start over.
            let Some(lock) = table.lock(hash, || self.replaced(table, guard)) else {
                continue;
            };
            match self.insert_locked(table, hash, node, weight, guard) {
                Ok(()) => return Ok(()),
                Err(back) => {
                    node = back;
                    drop(lock);
                    self.grow(table, guard);
                }
            }
        }
    }

    /// The fast path of an insert that replaces a present key with one no heavier: a single CAS
    /// of the slot, no lock. Gives the node back if the key is absent, the new value is
    /// heavier (it needs a reservation), or the CAS lost to a concurrent unlink or replace.
    ///
    /// Only for tables that never grow: a grower relies on every writer holding a lock. Without
    /// the lock this is still linearizable: a concurrent insert of the same key under the lock
    /// also replaces with a CAS on the same slot (one wins, the other retries), and a concurrent
    /// remove or eviction unlinks with a CAS on it (if the unlink wins, we retry under the lock
    /// and find the key absent). The slot, its tag and the home's spill bits do not change.
    #[inline]
    fn replace_unlocked(
        &self,
        hash: u64,
        node: Owned<Node<K, V>>,
        guard: &Guard,
    ) -> Result<(), Owned<Node<K, V>>> {
        let table = self.table(guard);
        let new_key = &node.kv().0;
        let Some(found) = table.find(hash, |k| k == new_key, guard) else {
            return Err(node);
        };
        if node.weight() > found.node().weight() {
            return Err(node);
        }
        self.swap_in(table, &found, node, guard)
    }

    /// Replaces the node at `found` by `node` with one CAS; on success retires the old node and
    /// gives back any weight the new one does not use. Any extra weight the new node needs must
    /// already be reserved (and is then committed by the caller).
    fn swap_in(
        &self,
        table: &RawTable<K, V>,
        found: &Found<'_, K, V>,
        node: Owned<Node<K, V>>,
        guard: &Guard,
    ) -> Result<(), Owned<Node<K, V>>> {
        let (old_weight, weight) = (found.node().weight(), node.weight());
        table.replace(found, node, guard)?;
        // SAFETY: our CAS replaced it, so we alone retire it.
        unsafe { retire(found.node, guard) };
        self.budget
            .release_weight(old_weight.saturating_sub(weight));
        Ok(())
    }

    /// The body of an insert, under the home bucket's lock. `Err` gives the node back when the
    /// table should grow first.
    fn insert_locked(
        &self,
        table: &RawTable<K, V>,
        hash: u64,
        mut node: Owned<Node<K, V>>,
        weight: u64,
        guard: &Guard,
    ) -> Result<(), Owned<Node<K, V>>> {
        let mut reservation = Reservation::new(&self.budget);
        let mut step = 0;
        loop {
            let new_key = &node.kv().0;
            match table.find(hash, |k| k == new_key, guard) {
                Some(found) => {
                    let extra = weight.saturating_sub(found.node().weight());
                    self.make_room(
                        table,
                        table.home(hash),
                        &mut reservation,
                        false,
                        extra,
                        guard,
                    );
                    match self.swap_in(table, &found, node, guard) {
                        Ok(()) => {
                            reservation.commit();
                            return Ok(());
                        }
                        // Evicted meanwhile (removals take this lock): look again. Give the
                        // extra weight back first: an insert must never wait for budget while
                        // holding part of it, or two such inserts can wait on each other
                        // forever (tests/stress.rs, weighted_replaces_...).
                        Err(back) => {
                            node = back;
                            reservation.give_back_weight_above(0);
                        }
                    }
                }
                None => {
                    if !self.make_room(
                        table,
                        table.home(hash),
                        &mut reservation,
                        true,
                        weight,
                        guard,
                    ) {
                        return Err(node);
                    }
                    let nslots = table.nslots();
                    match table.publish(
                        hash,
                        node,
                        |slot| self.hand.starts_marked(slot, nslots),
                        guard,
                    ) {
                        Ok(_) => {
                            reservation.commit();
                            return Ok(());
                        }
                        // The key's neighbourhood is full. A growable table that is at
                        // least a quarter full grows; otherwise one of the neighbourhood's
                        // entries is evicted (which also gives back budget) and we try again.
                        // A quarter: a good hash almost never fills 56 slots below that load,
                        // and a degenerate one must not make the table grow without end.
                        Err(back) => {
                            node = back;
                            let max_len = self.budget.max_len();
                            if self.can_grow() && self.budget.len() >= max_len / 4 {
                                return Err(node);
                            }
                            if let Some(victim) = self.hand.evict_near(table, hash, guard) {
                                self.retire_unlinked(victim, guard);
                            }
                        }
                    }
                }
            }
            spin_wait(step);
            step = step.saturating_add(1);
        }
    }

    /// Brings `reservation` to one entry (if `entry`) and exactly `weight`, evicting as needed.
    /// Returns false, having reserved nothing, when the table should grow instead of evicting.
    /// `held` is the home bucket whose lock the caller holds.
    fn make_room(
        &self,
        table: &RawTable<K, V>,
        held: usize,
        reservation: &mut Reservation<'_>,
        entry: bool,
        weight: u64,
        guard: &Guard,
    ) -> bool {
        let mut step = 0;
        if entry && !reservation.has_entry() {
            loop {
                if self.budget.try_reserve_entry() {
                    reservation.set_entry();
                    break;
                }
                if self.can_grow() {
                    return false;
                }
                // The victim's entry and weight pass straight to this reservation: the shared
                // counters are not written twice (release, then reserve) per eviction.
                if let Some(victim) = self.evict_one(table, held, &mut step, guard) {
                    reservation.set_entry();
                    reservation.take_weight(victim);
                    break;
                }
            }
        }
        while reservation.weight() < weight {
            let more = weight - reservation.weight();
            if self.budget.try_reserve_weight(more) {
                reservation.take_weight(more);
                break;
            }
            if let Some(victim) = self.evict_one(table, held, &mut step, guard) {
                self.budget.release_entry();
                reservation.take_weight(victim);
            }
        }
        reservation.give_back_weight_above(weight);
        true
    }

    /// True if the table may still grow.
    fn can_grow(&self) -> bool {
        // Relaxed: a flag that only ever turns on; a stale read costs one more failed attempt.
        self.grow_limit
            .is_some_and(|limit| self.budget.max_len() < limit)
            && !self.grow_failed.load(Ordering::Relaxed)
    }

    /// Lets the hand evict one entry and returns its weight: the caller now holds the victim's
    /// entry and weight in the budget. If the hand found none (every slot empty or in flight),
    /// waits a little for the writers that hold the budget and returns `None`.
    fn evict_one(
        &self,
        table: &RawTable<K, V>,
        held: usize,
        step: &mut u32,
        guard: &Guard,
    ) -> Option<u64> {
        match self.hand.evict(table, Some(held), guard) {
            Some(node) => Some(self.retire_owned(node, guard)),
            None => {
                spin_wait(*step);
                *step = step.saturating_add(1);
                None
            }
        }
    }

    /// Doubles a growable table (up to its limit), or returns at once if another thread grew
    /// `old` first.
    ///
    /// The grower takes every bucket lock of `old` in index order. Every writer (insert,
    /// remove, clear, and eviction, which only runs inside an insert) holds a lock of the table
    /// it writes and never waits for a second lock while holding one, so once the grower holds
    /// them all, `old` is frozen: it copies the node pointers into a new table, publishes it
    /// (Release), and retires `old` with its locks still held, so writers waiting on them give
    /// up and retry on the new table. Readers are never blocked: they see `old` (frozen, valid)
    /// or the new table.
    #[cold]
    fn grow(&self, old: &RawTable<K, V>, guard: &Guard) {
        let Some(limit) = self.grow_limit else { return };
        let mut locks = Vec::with_capacity(old.nbuckets());
        for b in 0..old.nbuckets() {
            match old.lock_bucket(b, || self.replaced(old, guard)) {
                Some(lock) => locks.push(lock),
                None => return,
            }
        }
        if self.replaced(old, guard) {
            return;
        }
        let current = self.budget.max_len();
        let entries = current.saturating_mul(2).min(limit);
        if entries <= current {
            return;
        }
        let Some(new) = RawTable::try_with_entries(entries) else {
            // Relaxed: see `can_grow`.
            self.grow_failed.store(true, Ordering::Relaxed);
            return;
        };
        // A panic in the user's `Hash` leaves `old` current and untouched; `new` holds copies
        // of pointers only, and a table never frees its nodes on drop.
        let mut homeless = Vec::new();
        let copied = catch_unwind(AssertUnwindSafe(|| {
            for s in 0..old.nslots() {
                let p = old.load_slot(s, guard);
                // SAFETY: loaded under `guard`; nodes are retired through epoch.
                if let Some(node) = unsafe { p.as_ref() } {
                    if !new.place(self.hash(&node.kv().0), p) {
                        homeless.push(p);
                    }
                }
            }
        }));
        if let Err(panic) = copied {
            drop(new);
            drop(locks);
            resume_unwind(panic);
        }
        self.budget.set_max_len(entries);
        // Release: publishes the new table's contents and the raised bound (pairs with the
        // Acquire in `table`).
        let old_ptr = self.table.swap(Owned::new(new), Ordering::Release, guard);
        for lock in locks {
            lock.leak();
        }
        // SAFETY: `old_ptr` is no longer reachable from the cache; threads that still hold it
        // are pinned, and epoch frees it (bucket array only: tables never free nodes on drop)
        // after they unpin.
        unsafe { guard.defer_destroy(old_ptr) };
        // Nodes whose neighbourhood in the new table was full (a degenerate hasher) are
        // evicted: they are in no current table, and this thread alone could unlink them.
        for node in homeless {
            self.retire_unlinked(node, guard);
        }
    }

    /// Retires a node this thread unlinked and returns its weight; its entry and weight stay
    /// counted in the budget, for the caller to pass on or give back.
    fn retire_owned(&self, node: Shared<'_, Node<K, V>>, guard: &Guard) -> u64 {
        // SAFETY: non-null: it was just unlinked from a slot.
        let weight = unsafe { node.deref() }.weight();
        // SAFETY: this thread's CAS unlinked it.
        unsafe { retire(node, guard) };
        weight
    }

    /// Gives back the budget of a node this thread unlinked and retires it.
    fn retire_unlinked(&self, node: Shared<'_, Node<K, V>>, guard: &Guard) {
        let weight = self.retire_owned(node, guard);
        self.budget.release_entry();
        self.budget.release_weight(weight);
    }

    fn remove_with_guard<'g, Q>(&self, key: &Q, guard: &'g Guard) -> Option<&'g Node<K, V>>
    where
        Q: ?Sized + Hash + Equivalent<K>,
    {
        let hash = self.hash(key);
        let mut step = 0;
        loop {
            let table = self.table(guard);
            // Writers hold a lock of the table they write (see `grow`).
            let Some(_lock) = table.lock(hash, || self.replaced(table, guard)) else {
                continue;
            };
            let found = table.find(hash, |k| key.equivalent(k), guard)?;
            if table.unlink(
                found.bucket,
                found.slot,
                found.node,
                Some(table.home(hash)),
                guard,
            ) {
                let node = found.node();
                self.retire_unlinked(found.node, guard);
                return Some(node);
            }
            // Evicted by another thread meanwhile: look again.
            spin_wait(step);
            step = step.saturating_add(1);
        }
    }

    /// Removes the entry for `key` and returns a clone of its value.
    pub fn remove<Q>(&self, key: &Q) -> Option<V>
    where
        Q: ?Sized + Hash + Equivalent<K>,
        V: Clone,
    {
        let guard = epoch::pin();
        self.remove_with_guard(key, &guard)
            .map(|n| n.read(|_, v| v.clone()))
    }

    /// Removes every entry. Inserts that run concurrently with `clear` may survive it.
    pub fn clear(&self) {
        let guard = epoch::pin();
        'restart: loop {
            let table = self.table(&guard);
            for b in 0..table.nbuckets() {
                // Writers hold a lock of the table they write (see `grow`).
                let Some(_lock) = table.lock_bucket(b, || self.replaced(table, &guard)) else {
                    continue 'restart;
                };
                for i in 0..SLOTS {
                    let p = table.load_slot(b * SLOTS + i, &guard);
                    if !p.is_null() && table.unlink(b, i, p, Some(b), &guard) {
                        self.retire_unlinked(p, &guard);
                    }
                }
            }
            return;
        }
    }
}

impl<K, V, S> Cache<K, V, S> {
    /// The current table.
    #[inline(always)]
    fn table<'g>(&self, guard: &'g Guard) -> &'g RawTable<K, V> {
        // Acquire: pairs with the Release store of a grown table, so its contents are visible.
        let t = self.table.load(Ordering::Acquire, guard);
        // SAFETY: never null (set in `from_parts`, swapped only for another table), and a
        // replaced table is retired through epoch, so it outlives `guard`.
        unsafe { t.deref() }
    }

    /// Entries in the cache now (including inserts in flight that already reserved room).
    pub fn len(&self) -> usize {
        self.budget.len()
    }

    /// True if [`len`](Self::len) is 0.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most entries the cache holds now. Fixed, except in a weight-bounded cache built
    /// without `max_capacity`, whose table grows (and this bound with it) as entries arrive.
    pub fn capacity(&self) -> usize {
        self.budget.max_len()
    }

    /// Total weight of the entries now; 0 in a cache without a weigher.
    pub fn weight(&self) -> u64 {
        self.budget.weight()
    }

    /// The weight budget, if the cache has a weigher.
    pub fn max_weight(&self) -> Option<u64> {
        self.weigher.as_ref().map(|_| self.budget.max_weight())
    }

    /// The key hasher.
    pub fn hasher(&self) -> &S {
        &self.hasher
    }

    /// (entries, total distance from home in buckets, spill bits set, buckets):
    /// a diagnostic of probe lengths.
    #[doc(hidden)]
    pub fn probe_stats(&self) -> [usize; 4] {
        let guard = epoch::pin();
        let table = self.table(&guard);
        let [a, b, c] = table.probe_stats(&guard);
        [a, b, c, table.nbuckets()]
    }

    /// Checks the table's invariants without concurrent writers: every published entry is
    /// reachable from its home bucket, no key appears twice, and the counters are at least the
    /// published totals. For tests.
    #[doc(hidden)]
    pub fn check_invariants(&self) -> Result<usize, String>
    where
        K: Hash + Eq,
        S: BuildHasher,
    {
        let guard = epoch::pin();
        let table = self.table(&guard);
        let mut count = 0usize;
        let mut weight = 0u64;
        for s in 0..table.nslots() {
            let p = table.load_slot(s, &guard);
            // SAFETY: loaded under `guard`.
            if let Some(node) = unsafe { p.as_ref() } {
                count += 1;
                weight += node.weight();
                let key = &node.kv().0;
                let hash = self.hasher.hash_one(key);
                match table.find(hash, |k| k == key, &guard) {
                    Some(f) if f.node == p => {}
                    Some(_) => return Err(format!("slot {s}: key found twice")),
                    None => return Err(format!("slot {s}: key not reachable")),
                }
            }
        }
        if count > self.budget.len() || count > self.budget.max_len() {
            return Err(format!("{count} entries, len {}", self.budget.len()));
        }
        if weight > self.budget.weight() || weight > self.budget.max_weight() {
            return Err(format!("weight {weight}, counter {}", self.budget.weight()));
        }
        Ok(count)
    }
}

impl<K, V, S> Drop for Cache<K, V, S> {
    fn drop(&mut self) {
        // SAFETY: `&mut self`: no thread is inside the cache, so the unprotected guard is
        // sound. The current table owns every live node (retired tables never free nodes and
        // only hold copies of pointers that are also here or already retired).
        unsafe {
            let guard = epoch::unprotected();
            let table = self.table.load(Ordering::Relaxed, guard);
            let mut table = table.into_owned();
            table.drop_nodes();
        }
    }
}

impl<K, V, S> fmt::Debug for Cache<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .field("weight", &self.weight())
            .field("max_weight", &self.max_weight())
            .finish_non_exhaustive()
    }
}

/// A pinned view of a [`Cache`]: lookups lend `&V` for as long as the handle lives.
///
/// Obtained with [`Cache::pin`]. The handle holds an epoch guard: nothing removed while it lives
/// is freed before it is dropped, so keep it for one request, not for the life of a thread.
pub struct Pinned<'c, K, V, S = DefaultHashBuilder> {
    cache: &'c Cache<K, V, S>,
    guard: Guard,
}

impl<'c, K, V, S> Pinned<'c, K, V, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
    S: BuildHasher,
{
    /// The value for `key`, lent for the life of this handle; marks the entry as recently used.
    #[inline]
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        Q: ?Sized + Hash + Equivalent<K>,
    {
        let node = self.cache.find(key, &self.guard)?;
        node.touch();
        Some(&node.kv().1)
    }

    /// Like [`get`](Self::get), but leaves recency alone.
    pub fn peek<Q>(&self, key: &Q) -> Option<&V>
    where
        Q: ?Sized + Hash + Equivalent<K>,
    {
        self.cache.find(key, &self.guard).map(|n| &n.kv().1)
    }

    /// True if `key` is cached.
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        Q: ?Sized + Hash + Equivalent<K>,
    {
        self.cache.find(key, &self.guard).is_some()
    }

    /// [`Cache::insert`] under this handle's guard.
    pub fn insert(&self, key: K, value: V) -> Result<(), InsertError<K, V>> {
        self.cache.insert_with_guard(key, value, &self.guard)
    }

    /// Removes the entry for `key` and lends its value for the life of this handle.
    pub fn remove<Q>(&self, key: &Q) -> Option<&V>
    where
        Q: ?Sized + Hash + Equivalent<K>,
    {
        self.cache
            .remove_with_guard(key, &self.guard)
            .map(|n| &n.kv().1)
    }

    /// Iterates over the entries in table order. Concurrent writes may or may not be seen; no
    /// entry is seen twice unless it was re-inserted during the walk.
    pub fn iter(&self) -> Iter<'_, K, V> {
        Iter {
            table: self.cache.table(&self.guard),
            guard: &self.guard,
            slot: 0,
        }
    }

    /// The cache this handle pins.
    pub fn cache(&self) -> &'c Cache<K, V, S> {
        self.cache
    }
}

impl<K, V, S> fmt::Debug for Pinned<'_, K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pinned").field("cache", self.cache).finish()
    }
}

/// Iterator over a [`Pinned`] cache's entries.
pub struct Iter<'g, K, V> {
    table: &'g RawTable<K, V>,
    guard: &'g Guard,
    slot: usize,
}

impl<'g, K, V> Iterator for Iter<'g, K, V> {
    type Item = (&'g K, &'g V);

    fn next(&mut self) -> Option<Self::Item> {
        while self.slot < self.table.nslots() {
            let p = self.table.load_slot(self.slot, self.guard);
            self.slot += 1;
            // SAFETY: loaded under the handle's guard, which outlives `'g`.
            if let Some(node) = unsafe { p.as_ref() } {
                let (k, v) = node.kv();
                return Some((k, v));
            }
        }
        None
    }
}

impl<K, V> fmt::Debug for Iter<'_, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iter").field("slot", &self.slot).finish()
    }
}
