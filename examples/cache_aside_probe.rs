//! A one-file cache-aside probe: `get`, and `insert` on a miss, over 4,000,000 skewed keys
//! drawn from 2^20 (rank = 2^(20 u) for uniform u: a log-uniform popularity, close to Zipf 1),
//! on a cache of 2^17 entries, one thread, three rounds (the cache is kept; round 0 warms it).
//! Prints nanoseconds per operation and the hit ratio of each round. About 80 % hits, so one
//! operation in five inserts and evicts: the cost of the eviction path shows.
//!
//! `cargo run --release --example cache_aside_probe -- [adaptive|clock] [zipf]`
//!
//! With `zipf`, the keys are the showdown's cache-aside keys instead (Zipf 0.99 over 2^20,
//! 2^22 of them, `benches/common`). The adaptive window grows to its largest size on these too
//! (docs/design.md, "Zipf, the showdown's cache-aside keys").
//!
//! Used for the hands' prefetch (docs/benchmarks.md section 10(c)): build it at two commits and
//! run the two binaries in turn.
use std::time::Instant;

#[path = "../benches/common/mod.rs"]
#[allow(dead_code)]
mod common;

fn main() {
    let mut args = std::env::args().skip(1);
    let (policy, cache) = common::probe_cache(args.next().as_deref());
    let n: u64 = 1 << 20;
    let keys: Vec<u64> = if args.next().as_deref() == Some("zipf") {
        common::probe_zipf_keys()
    } else {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        (0..4_000_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let u = (x >> 11) as f64 / (1u64 << 53) as f64;
                ((n as f64).powf(u) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            })
            .collect()
    };
    for round in 0..3 {
        let t = Instant::now();
        let mut hits = 0usize;
        for &k in &keys {
            if cache.get(&k).is_some() {
                hits += 1;
            } else {
                // Never refused: no weigher.
                let _ = cache.insert(k, k);
            }
        }
        println!(
            "{policy:?} round {round}: {:.1} ns/op, hit {:.1} %",
            t.elapsed().as_nanos() as f64 / keys.len() as f64,
            100.0 * hits as f64 / keys.len() as f64
        );
    }
}
