//! Per-operation workloads: `get` hits, `get` misses and `insert`s on a full cache, one thread.
//! Shared by the hardware counters (`examples/showdown/counters.rs`, `benches/counters.rs`) and
//! the callgrind simulation (`examples/cachesim.rs`, `benches/cachesim.sh`).
//!
//! * The cache has capacity `entries` and is pre-filled with the keys of ranks `0..entries`
//!   (keys scattered by [`key_of_rank`]), then settled.
//! * get-hit: a Zipf(0.99) key array over those ranks (the read-hit workload's generator and
//!   seed), keeping only the accesses whose key the contender still holds (quick_cache's shards
//!   fill unevenly and evict a few keys early; moka may not admit all). [`PerOp::hit_keys`] finds
//!   them with one unmeasured pass of `get`s, which also warms the cache the way the hot keys of
//!   a running system are warm. Every measured `get` hits.
//! * get-miss: the keys of ranks `entries..entries + accesses`, never inserted.
//! * replace (callgrind only, `examples/cachesim.rs`): the get-hit keys inserted again, each
//!   replacing a resident entry, as the writes of write-50 do.
//! * insert: the get-miss keys, inserted after the get-miss pass (cache-aside: a key that just
//!   missed), into the full cache, so each insert into a cache with eviction evicts (or, for
//!   moka, may be refused by its admission filter); papaya, which never evicts, grows instead.

use super::{hasher, key_of_rank, zipf_keys, Contender, ZIPF_S};

/// The operations, in the order they run on one cache.
pub const OPS: [&str; 3] = ["get-hit", "get-miss", "insert"];

/// Key arrays for the three operations on a cache of `entries` entries.
#[derive(Debug, Clone)]
pub struct PerOp {
    pub entries: usize,
    /// Zipf(0.99) over the resident ranks; [`PerOp::hit_keys`] filters it per contender.
    pub zipf_keys: Vec<u64>,
    /// Keys never inserted before the insert pass.
    pub miss_keys: Vec<u64>,
}

impl PerOp {
    /// `accesses` accesses per operation on a cache of `entries` entries.
    pub fn new(entries: usize, accesses: usize) -> Self {
        Self {
            entries,
            zipf_keys: zipf_keys(entries, ZIPF_S, accesses, 1),
            miss_keys: (entries..entries + accesses).map(key_of_rank).collect(),
        }
    }

    /// A cache of contender `C` with capacity `entries`, filled with ranks `0..entries`, settled.
    pub fn build<C: Contender>(&self) -> C {
        let cache = C::new(self.entries, hasher());
        for rank in 0..self.entries {
            let k = key_of_rank(rank);
            cache.insert(k, k);
        }
        cache.settle();
        cache
    }

    /// The accesses of [`PerOp::zipf_keys`] that hit in `cache` (one pass of `get`s), then
    /// settles the cache.
    pub fn hit_keys<C: Contender>(&self, cache: &C) -> Vec<u64> {
        let keys = self
            .zipf_keys
            .iter()
            .copied()
            .filter(|k| cache.get(k))
            .collect();
        cache.settle();
        keys
    }
}

/// `get`s every key of `keys`; returns how many hit. Always inlined, so that the loop is part of
/// the caller: callgrind toggles collection on the entry and exit of `examples/cachesim.rs`'s
/// probes, and a probe that tail-called this would leave before the work.
#[inline(always)]
pub fn get_all<C: Contender>(cache: &C, keys: &[u64]) -> usize {
    let mut hits = 0;
    for k in keys {
        hits += usize::from(cache.get(k));
    }
    hits
}

/// Inserts every key of `keys` (value = key). Always inlined, as [`get_all`].
#[inline(always)]
pub fn insert_all<C: Contender>(cache: &C, keys: &[u64]) {
    for &k in keys {
        cache.insert(k, k);
    }
}
