//! Statistics: striped, cache-padded counters, switched on with
//! [`Builder::record_stats`](crate::Builder::record_stats).
//!
//! Each thread counts into one stripe (picked once per thread, round robin), so threads rarely
//! share a stripe and never share a line with the table; a read hit adds one to its own
//! stripe's `hits` with a Relaxed `fetch_add` and writes nothing another thread reads on its
//! hot path. [`Cache::stats`](crate::Cache::stats) sums the stripes: a snapshot that may miss
//! counts still in flight on other threads, never a torn number.

use std::time::Duration;

use crossbeam_utils::CachePadded;

use crate::listener::RemovalCause;
use crate::sync::{AtomicU64, Ordering};

#[derive(Clone, Copy)]
pub(crate) enum Counter {
    Hit = 0,
    Miss,
    Insert,
    Update,
    LoadOk,
    LoadErr,
    LoadNanos,
    /// Removals by cause, in [`RemovalCause::index`] order.
    Removed,
}

const REMOVED: usize = Counter::Removed as usize;
const COUNTERS: usize = REMOVED + RemovalCause::ALL.len();

pub(crate) struct Stats {
    stripes: Box<[CachePadded<[AtomicU64; COUNTERS]>]>,
}

impl Stats {
    pub(crate) fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
        let n = (cores * 2).next_power_of_two().clamp(4, 256);
        Self {
            stripes: (0..n)
                .map(|_| CachePadded::new(std::array::from_fn(|_| AtomicU64::new(0))))
                .collect(),
        }
    }

    #[inline]
    fn stripe(&self) -> &[AtomicU64; COUNTERS] {
        let i = crate::sync::thread_stripe();
        &self.stripes[i & (self.stripes.len() - 1)]
    }

    #[inline]
    pub(crate) fn add(&self, c: Counter, n: u64) {
        // Relaxed: counters publish nothing; sums are snapshots.
        self.stripe()[c as usize].fetch_add(n, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn removed(&self, cause: RemovalCause) {
        self.stripe()[REMOVED + cause.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> CacheStats {
        let mut sum = [0u64; COUNTERS];
        for s in self.stripes.iter() {
            for (acc, c) in sum.iter_mut().zip(s.iter()) {
                *acc = acc.wrapping_add(c.load(Ordering::Relaxed));
            }
        }
        let removed = |c: RemovalCause| sum[REMOVED + c.index()];
        CacheStats {
            hits: sum[Counter::Hit as usize],
            misses: sum[Counter::Miss as usize],
            inserts: sum[Counter::Insert as usize],
            updates: sum[Counter::Update as usize],
            evictions: removed(RemovalCause::Capacity),
            expirations: removed(RemovalCause::Expired),
            removals: removed(RemovalCause::Explicit),
            replacements: removed(RemovalCause::Replaced),
            cleared: removed(RemovalCause::Cleared),
            loads_ok: sum[Counter::LoadOk as usize],
            loads_failed: sum[Counter::LoadErr as usize],
            load_time: Duration::from_nanos(sum[Counter::LoadNanos as usize]),
        }
    }
}

/// A snapshot of a cache's counters, from [`Cache::stats`](crate::Cache::stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Lookups (`get`, the loaders) that found a live entry.
    pub hits: u64,
    /// Lookups that found nothing, or only an expired entry.
    pub misses: u64,
    /// Inserts of a key that was absent.
    pub inserts: u64,
    /// Inserts that replaced a present key.
    pub updates: u64,
    /// Entries evicted for room ([`RemovalCause::Capacity`]).
    pub evictions: u64,
    /// Entries removed because they expired ([`RemovalCause::Expired`]).
    pub expirations: u64,
    /// Entries removed by `remove` or `invalidate_versioned` ([`RemovalCause::Explicit`]).
    pub removals: u64,
    /// Entries replaced by an insert of the same key ([`RemovalCause::Replaced`]).
    pub replacements: u64,
    /// Entries removed by `clear` ([`RemovalCause::Cleared`]).
    pub cleared: u64,
    /// Loader calls that returned a value.
    pub loads_ok: u64,
    /// Loader calls that returned an error or panicked.
    pub loads_failed: u64,
    /// Time spent in loader calls: on the injected [`Clock`](crate::Clock) if the cache has
    /// one, else measured with `Instant`.
    pub load_time: Duration,
}

impl CacheStats {
    /// hits / (hits + misses), or 0 before the first lookup.
    pub fn hit_ratio(&self) -> f64 {
        let total = self.hits + self.misses;
        if total == 0 {
            0.0
        } else {
            self.hits as f64 / total as f64
        }
    }
}
