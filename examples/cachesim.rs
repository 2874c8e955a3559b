//! Deterministic per-operation cost of a read hit, for `benches/cachesim.sh`.
//!
//! Builds each contender with the read-hit workload of the benchmarks (2^16 `u64` keys, all
//! resident, Zipf 0.99 key array with scattered ranks, the same ahash seeds), then runs one
//! `#[inline(never)]`, `#[no_mangle]` probe function per contender over the same 2^18 accesses.
//! Under callgrind with `--toggle-collect=<probe>` only that function is measured; divide the
//! counts by the number of accesses, which this program prints.
//!
//! Run without valgrind it just checks that every access hits.

#[path = "../benches/common/mod.rs"]
#[allow(dead_code)]
mod common;

use common::{Clockline, Contender, MutexLru, Papaya, QuickCache, Sizes, Workload};
use std::hint::black_box;

/// Accesses measured per probe.
const ACCESSES: usize = 1 << 18;

macro_rules! probe {
    ($name:ident, $ty:ty) => {
        #[inline(never)]
        #[no_mangle]
        #[allow(clippy::no_mangle_with_rust_abi)]
        pub fn $name(cache: &$ty, keys: &[u64]) -> usize {
            keys.iter().filter(|&k| Contender::get(cache, k)).count()
        }
    };
}

probe!(cachesim_clockline, Clockline);
probe!(cachesim_quick_cache, QuickCache);
probe!(cachesim_papaya, Papaya);
probe!(cachesim_lru_mutex, MutexLru);

fn build<C: Contender>(w: &Workload) -> C {
    let c = C::new(w.capacity, common::hasher());
    w.fill(&c);
    c.settle();
    c
}

fn main() {
    let w = Workload::read_hit(Sizes::FULL);
    let keys = &w.keys[..ACCESSES];
    let cl: Clockline = build(&w);
    let qc: QuickCache = build(&w);
    let pa: Papaya = build(&w);
    let lr: MutexLru = build(&w);
    let hits = [
        black_box(cachesim_clockline(&cl, keys)),
        black_box(cachesim_quick_cache(&qc, keys)),
        black_box(cachesim_papaya(&pa, keys)),
        black_box(cachesim_lru_mutex(&lr, keys)),
    ];
    println!("accesses per probe: {ACCESSES}; hits: {hits:?}");
    assert!(hits.iter().all(|&h| h == ACCESSES), "every access must hit");
}
