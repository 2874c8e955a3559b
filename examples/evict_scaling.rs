//! The eviction path under many threads: the showdown's cache-aside workload (`get`, and
//! `insert` on a miss; Zipf 0.99 over 2^20 keys, capacity 2^17, about 80 % hits) at each
//! thread count given, for one policy. One cache per thread count, one warm-up round, then
//! `rounds` rounds; prints the median Mops/s (all threads together) and each round's figure.
//!
//! `cargo run --release --example evict_scaling -- [adaptive|clock] [threads=1,2] [rounds=3] [ms=200]`
//!
//! Written for the 16-core scaling of issue #2 (docs/benchmarks.md section 3.0): the showdown's
//! cache-aside fell from 7.7 Mops/s at one thread to 4.6 at sixteen, where every insert of a new
//! key goes through the policy's shared words. Build it at two commits and run the binaries in
//! turn, one thread count at a time, to see what a change to those words did.
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

#[path = "../benches/common/mod.rs"]
#[allow(dead_code)]
mod common;

fn main() {
    let mut args = std::env::args().skip(1);
    let policy_arg = args.next();
    let threads = args
        .next()
        .and_then(|t| common::parse_threads(&t))
        .unwrap_or_else(|| vec![1, 2]);
    let rounds: usize = args.next().and_then(|r| r.parse().ok()).unwrap_or(3).max(1);
    let ms: u64 = args.next().and_then(|m| m.parse().ok()).unwrap_or(200);
    let keys = common::probe_zipf_keys();
    for &t in &threads {
        let (policy, cache) = common::probe_cache(policy_arg.as_deref());
        let mut mops: Vec<f64> = (0..=rounds)
            .map(|_| round(&cache, &keys, t, Duration::from_millis(ms)))
            .skip(1) // the warm-up round
            .collect();
        let shown: Vec<String> = mops.iter().map(|m| format!("{m:.2}")).collect();
        mops.sort_by(f64::total_cmp);
        println!(
            "{policy:?} threads {t:>2}: median {:>7.2} Mops/s  (rounds {})",
            mops[mops.len() / 2],
            shown.join(" ")
        );
    }
}

/// One round of `time` on `threads` threads, each starting at its own offset in `keys`.
fn round(
    cache: &clockline::Cache<u64, u64, ahash::RandomState>,
    keys: &[u64],
    threads: usize,
    time: Duration,
) -> f64 {
    let stop = AtomicBool::new(false);
    let ops = AtomicUsize::new(0);
    let barrier = Barrier::new(threads + 1);
    let t0 = std::thread::scope(|s| {
        for t in 0..threads {
            let (stop, ops, barrier) = (&stop, &ops, &barrier);
            s.spawn(move || {
                let mut i = t * keys.len() / threads;
                let mut n = 0usize;
                barrier.wait();
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..256 {
                        let k = keys[i];
                        i = if i + 1 == keys.len() { 0 } else { i + 1 };
                        if cache.get(&k).is_none() {
                            // Never refused: no weigher.
                            let _ = cache.insert(k, k);
                        }
                    }
                    n += 256;
                }
                ops.fetch_add(n, Ordering::Relaxed);
            });
        }
        barrier.wait();
        let t0 = Instant::now();
        std::thread::sleep(time);
        stop.store(true, Ordering::Relaxed);
        t0
    });
    ops.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64() / 1e6
}
