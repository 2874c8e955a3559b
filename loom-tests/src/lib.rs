//! Helpers shared by the loom models in `tests/`: a payload whose reads and drop go through loom,
//! per-payload drop counters, a deterministic hasher, and the end-of-model reclamation step.
//!
//! Everything here only makes sense inside `loom::model`; build with
//! `--cfg clockline_loom --cfg crossbeam_loom --cfg crossbeam_sanitize` (see `run.sh`).
#![cfg(clockline_loom)]

use std::hash::{BuildHasherDefault, Hasher};

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicUsize, Ordering};

/// A cache with the deterministic [`IdHasher`]: a model must run the same code on every
/// execution, and ahash's random keys would make tag collisions differ from run to run.
pub type Cache = clockline::Cache<u64, Payload, BuildHasherDefault<IdHasher>>;

/// A cache of at most `capacity` entries hashed with [`IdHasher`].
///
/// Under `clockline_loom` a bucket has two slots and the table keeps a fifth of its slots free:
/// capacities 1 and 2 give one bucket (all keys share one home, so all writers share one lock),
/// 3 gives two buckets (four slots), so writers of keys with different homes run concurrently.
///
/// Classic CLOCK (`Policy::Clock`): the table and CLOCK models check the hand as such. The
/// adaptive policy's models use [`adaptive_cache`].
pub fn cache(capacity: usize) -> Cache {
    clockline::Cache::builder()
        .max_capacity(capacity)
        .policy(clockline::Policy::Clock)
        .hasher(BuildHasherDefault::<IdHasher>::default())
        .build()
        .expect("valid capacity")
}

/// Like [`cache`], under the default adaptive policy (window, admission, ghost). Under
/// `clockline_loom` its window may hold up to two entries.
pub fn adaptive_cache(capacity: usize) -> Cache {
    clockline::Cache::builder()
        .max_capacity(capacity)
        .policy(clockline::Policy::Adaptive)
        .hasher(BuildHasherDefault::<IdHasher>::default())
        .build()
        .expect("valid capacity")
}

/// A weight-bounded cache without `max_capacity`: every entry weighs 1, the table starts with
/// room for one entry (`INITIAL_WEIGHTED_ENTRIES` is 1 under `clockline_loom`) and grows, by
/// doubling, up to `max_weight` entries, instead of evicting.
pub fn growable_cache(max_weight: u64) -> Cache {
    let cache = clockline::Cache::builder()
        .max_weight(max_weight)
        .weigher(|_: &u64, _: &Payload| 1)
        .hasher(BuildHasherDefault::<IdHasher>::default())
        .build()
        .expect("valid bounds");
    assert_eq!(cache.capacity(), clockline::INITIAL_WEIGHTED_ENTRIES);
    cache
}

/// Added to a small key, puts its home in the second bucket of a two-bucket table (capacity 3):
/// [`IdHasher`] hashes a key to itself and the table takes the home from the high bits.
pub const HOME_1: u64 = 1 << 63;

/// Two inserts that both must evict, at once, into a full cache of three whose first two
/// payloads are in place: `HOME_1 | 4` (payload 3, value 40) on a second thread, `5` (payload
/// 4, value 50) on this one, each checking the bound after its insert. Shared by the CLOCK
/// and the adaptive policy's models.
pub fn two_evicting_inserts(cache: &loom::sync::Arc<Cache>, drops: &Drops) {
    let other = {
        let cache = cache.clone();
        let value = drops.payload(3, 40);
        loom::thread::spawn(move || {
            cache.insert(HOME_1 | 4, value).unwrap();
            assert!(cache.len() <= 3);
        })
    };
    cache.insert(5, drops.payload(4, 50)).unwrap();
    assert!(cache.len() <= 3);
    other.join().unwrap();
}

/// Hashes a `u64` key to itself. The table takes the home bucket from the high bits and the tag
/// from the low seven, so small keys all live in bucket 0 with distinct tags, and setting bit 63
/// moves a key's home to the last bucket of a two-bucket table.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// What a dropped payload's cell holds: a reader that sees it read freed memory.
const FREED: u64 = u64::MAX;

/// A cache value whose contents live in a loom cell.
///
/// Reading it ([`Payload::get`]) is a tracked read and dropping it is a tracked write, so loom
/// reports a causality violation if a reader's access is not ordered before the drop: that is,
/// if epoch reclamation frees a value that a pinned reader can still reach. Clones (made by
/// `Cache::get` and `Cache::remove`) are not counted; originals count their drop into their own
/// counter of a [`Drops`].
pub struct Payload {
    cell: UnsafeCell<u64>,
    drops: Option<&'static AtomicUsize>,
}

// SAFETY: the cell is written only in `Drop`, with `&mut self`; shared references only read it.
unsafe impl Sync for Payload {}

impl Payload {
    /// A payload whose drop is not counted (values made by a closure that may run more than
    /// once, as `Cache::compute`'s).
    pub fn untracked(value: u64) -> Self {
        assert_ne!(value, FREED);
        Self {
            cell: UnsafeCell::new(value),
            drops: None,
        }
    }

    /// The value, read through loom. Panics if the payload was already dropped.
    pub fn get(&self) -> u64 {
        // SAFETY: only `Drop` writes the cell, and loom checks that no read races with it.
        let v = self.cell.with(|p| unsafe { *p });
        assert_ne!(v, FREED, "read a payload after it was dropped");
        v
    }
}

impl Clone for Payload {
    fn clone(&self) -> Self {
        Self {
            cell: UnsafeCell::new(self.get()),
            drops: None,
        }
    }
}

impl Drop for Payload {
    fn drop(&mut self) {
        self.cell.with_mut(|p| {
            // SAFETY: `&mut self`: no other reference exists, which loom checks as a write.
            let v = unsafe { &mut *p };
            assert_ne!(*v, FREED, "payload dropped twice");
            *v = FREED;
        });
        if let Some(d) = self.drops {
            d.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One drop counter per original payload of a model.
///
/// The counters are loom atomics created inside the current execution and leaked (a few bytes
/// per execution), so payloads can hold `&'static` references to them whichever thread or epoch
/// collection drops them, even the collector's own teardown at the end of the execution.
#[derive(Clone, Copy)]
pub struct Drops {
    counters: &'static [AtomicUsize],
}

impl Drops {
    /// `n` counters, all zero.
    pub fn new(n: usize) -> Self {
        let counters: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
        Self {
            counters: Box::leak(counters.into_boxed_slice()),
        }
    }

    /// The original payload number `i`, holding `value`.
    pub fn payload(&self, i: usize, value: u64) -> Payload {
        assert_ne!(value, FREED);
        Payload {
            cell: UnsafeCell::new(value),
            drops: Some(&self.counters[i]),
        }
    }

    /// How often payload `i` was dropped so far.
    pub fn count(&self, i: usize) -> usize {
        self.counters[i].load(Ordering::Relaxed)
    }

    /// Runs deferred destructions until payloads `ids` have all been dropped, or gives up after
    /// [`RECLAIM_ROUNDS`] rounds (the caller's assertion then reports the leak).
    ///
    /// Each round pins, flushes (seals this thread's garbage and tries to advance the global
    /// epoch and collect) and yields. The yield matters: loom's `JoinHandle::join` synchronizes
    /// with the end of the thread's closure, not with its thread-local destructors, so a joined
    /// thread's epoch participant may still be unregistering (and look pinned) when the joiner
    /// gets here; yielding lets it finish and makes loom stop returning the stale epoch.
    pub fn reclaim(&self, ids: impl IntoIterator<Item = usize> + Clone) {
        for _ in 0..RECLAIM_ROUNDS {
            if ids.clone().into_iter().all(|i| self.count(i) > 0) {
                return;
            }
            crossbeam_epoch::pin().flush();
            loom::thread::yield_now();
        }
    }

    /// Asserts that every payload was dropped exactly once. Call after the cache is dropped and
    /// the other threads are joined.
    pub fn assert_each_dropped_once(&self) {
        self.reclaim(0..self.counters.len());
        for i in 0..self.counters.len() {
            assert_eq!(
                self.count(i),
                1,
                "payload {i} dropped {} times",
                self.count(i)
            );
        }
    }

    /// Asserts that payloads `ids` were dropped exactly once and no other payload was dropped
    /// more than once (the others may still be cached).
    pub fn assert_dropped_once(&self, ids: &[usize]) {
        self.reclaim(ids.iter().copied());
        for i in 0..self.counters.len() {
            let n = self.count(i);
            if ids.contains(&i) {
                assert_eq!(n, 1, "payload {i} dropped {n} times");
            } else {
                assert!(n <= 1, "payload {i} dropped {n} times");
            }
        }
    }
}

/// Rounds of [`Drops::reclaim`]: garbage is freed two epoch advances after it is sealed, and a
/// joined thread may first need a round or two to unregister.
pub const RECLAIM_ROUNDS: usize = 6;

/// Tries to free garbage now, as a thread that just retired a node would: a few pinned flushes.
/// Called by writers in the models so that reclamation races with the other thread's reads.
pub fn collect_garbage() {
    for _ in 0..2 {
        crossbeam_epoch::pin().flush();
    }
}
