//! The timed half of `benches/feature_ab.sh`: the core (issue #2's last commit) and this tree's
//! plain, +ttl and +stats caches in one process, in rounds that take turns back to back, so a
//! noisy neighbour on a shared machine slows every variant of a round alike. Each variant's
//! throughput is divided by its reference's in the same round (plain by core, +ttl and +stats
//! by plain and by core, and a control, a second plain cache, by the first); the report is the
//! median of those per-round ratios, with the quartiles.
//!
//! Workload: the callgrind probe's (benches/feature_ab/): 2^16 keys resident in a cache of
//! 2^17, `get` over 2^18 skewed keys, every thread from its own offset. One cache per variant,
//! kept across rounds; a round starts its threads afresh (as the showdown does).
//!
//! Usage: feature-ab-timed [ROUNDS] [MS] [THREADS,...]   (defaults: 31 rounds, 100 ms, 1,2)
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

fn keys() -> Vec<u64> {
    let mut x = 0x1234_5678_9abc_def1u64;
    let n = 1 << 16;
    (0..1 << 18)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let r = x % n;
            (x >> 20) % (r + 1)
        })
        .collect()
}

/// A cache variant under test: `get` over a run of keys, counting hits.
trait Get: Sync {
    fn hits(&self, keys: &[u64]) -> usize;
}

impl Get for core_cl::Cache<u64, u64> {
    fn hits(&self, keys: &[u64]) -> usize {
        keys.iter().filter(|k| self.get(*k).is_some()).count()
    }
}

impl Get for clockline::Cache<u64, u64> {
    fn hits(&self, keys: &[u64]) -> usize {
        keys.iter().filter(|k| self.get(*k).is_some()).count()
    }
}

/// Operations per second of `c` over `time` with `threads` fresh threads.
fn round(c: &dyn Get, keys: &[u64], threads: usize, time: Duration) -> f64 {
    let stop = AtomicBool::new(false);
    let barrier = Barrier::new(threads + 1);
    let per: Vec<(u64, Duration)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let (stop, barrier) = (&stop, &barrier);
                s.spawn(move || {
                    let mut at = t * keys.len() / threads;
                    let (mut ops, mut hits) = (0u64, 0usize);
                    barrier.wait();
                    let start = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        let end = (at + 1024).min(keys.len());
                        hits += c.hits(&keys[at..end]);
                        ops += (end - at) as u64;
                        at = if end == keys.len() { 0 } else { end };
                    }
                    black_box(hits);
                    (ops, start.elapsed())
                })
            })
            .collect();
        barrier.wait();
        std::thread::sleep(time);
        stop.store(true, Ordering::Relaxed);
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ops: u64 = per.iter().map(|p| p.0).sum();
    let elapsed = per.iter().map(|p| p.1).max().unwrap();
    ops as f64 / elapsed.as_secs_f64()
}

fn quartiles(mut xs: Vec<f64>) -> (f64, f64, f64) {
    xs.sort_by(f64::total_cmp);
    let at = |q: f64| xs[((xs.len() - 1) as f64 * q).round() as usize];
    (at(0.25), at(0.5), at(0.75))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().map_or(31, |a| a.parse().expect("ROUNDS"));
    let ms: u64 = args.next().map_or(100, |a| a.parse().expect("MS"));
    let threads: Vec<usize> = args.next().map_or(vec![1, 2], |a| {
        a.split(',').map(|t| t.parse().expect("THREADS")).collect()
    });
    let keys = keys();
    let cap = 1 << 17;
    let core = core_cl::Cache::<u64, u64>::new(cap);
    let plain = clockline::Cache::<u64, u64>::new(cap);
    let ttl = clockline::Cache::<u64, u64>::builder()
        .max_capacity(cap)
        .time_to_live(Duration::from_secs(3600))
        .build()
        .unwrap();
    let stats = clockline::Cache::<u64, u64>::builder()
        .max_capacity(cap)
        .record_stats()
        .build()
        .unwrap();
    // A control: a second plain cache, whose ratio to the first shows what the harness itself
    // adds (its memory placement, its order); it should be 1.
    let plain2 = clockline::Cache::<u64, u64>::new(cap);
    // One cache after the other: filled in turns, the caches' nodes would interleave in
    // memory, and each would touch four times the lines per key (a cache filled alone ran 2
    // to 3 times faster than the same cache filled in turns with three others).
    for k in 0..1u64 << 16 {
        let _ = core.insert(k, k);
    }
    for c in [&plain, &ttl, &stats, &plain2] {
        for k in 0..1u64 << 16 {
            c.insert(k, k).unwrap();
        }
    }
    let variants: [&dyn Get; 5] = [&core, &plain, &ttl, &stats, &plain2];
    let time = Duration::from_millis(ms);
    println!("paired read-hit ratios, {rounds} rounds of {ms} ms per variant: median [quartiles]");
    for &t in &threads {
        for v in variants {
            round(v, &keys, t, time); // warm-up
        }
        let mut ops = vec![Vec::new(); 5];
        for r in 0..rounds {
            for i in 0..5 {
                let v = (r + i) % 5; // the first variant rotates
                ops[v].push(round(variants[v], &keys, t, time));
            }
        }
        let ratio = |a: usize, b: usize| {
            quartiles(ops[a].iter().zip(&ops[b]).map(|(x, y)| x / y).collect())
        };
        let show = |(q1, m, q3): (f64, f64, f64)| format!("{m:.3} [{q1:.3}, {q3:.3}]");
        let (_, core_med, _) = quartiles(ops[0].clone());
        println!(
            "{t}T  plain/core {}  ttl/plain {}  stats/plain {}  control {}  (core median {:.1} Mops/s)",
            show(ratio(1, 0)),
            show(ratio(2, 1)),
            show(ratio(3, 1)),
            show(ratio(4, 1)),
            core_med / 1e6
        );
        // The issue's own comparison: each variant against the core's read hit.
        println!(
            "{t}T  ttl/core {}  stats/core {}",
            show(ratio(2, 0)),
            show(ratio(3, 0)),
        );
    }
}
