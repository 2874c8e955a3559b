//! Throughput of clockline and its contenders (criterion): the three standard workloads and the
//! get/put grid (Zipf 0.8 / 0.99 / 1.2 x 100 / 95 / 75 / 50 / 0 % reads), at 1, 2, 4, ... threads
//! up to the machine's cores.
//!
//! ```text
//! cargo bench --bench throughput                   # everything; 2 cores: 180 benchmarks, ~5 min
//! cargo bench --bench throughput -- '^(read-hit|cache-aside|write-50)/'   # standard ones only
//! cargo bench --bench throughput -- 'getput-z0.99-r95/clockline'          # criterion's regex
//! CLOCKLINE_BENCH_THREADS=1,4,16 CLOCKLINE_BENCH_ZIPF=0.99 CLOCKLINE_BENCH_READS=100,50 \
//!     cargo bench --bench throughput               # a smaller grid
//! CLOCKLINE_BENCH_QUICK=1 cargo bench --bench throughput -- --quick       # smoke run
//! cargo bench --bench throughput -- --measurement-time 3 --warm-up-time 1 # longer samples
//! ```
//!
//! Environment: `CLOCKLINE_BENCH_THREADS` (default 1, 2, 4, ... below the core count, then the
//! core count), `CLOCKLINE_BENCH_ZIPF` (default 0.8,0.99,1.2), `CLOCKLINE_BENCH_READS` (percent
//! `get`, default 100,95,75,50,0), `CLOCKLINE_BENCH_QUICK` (tiny key arrays and caches).
//!
//! Benchmark ids are `<workload>/<contender>/<threads>t`; the grid's workloads are named
//! `getput-z<zipf>-r<read %>`. One criterion iteration is one operation (of all threads
//! together), so the reported throughput is operations per second across threads. Each sample
//! spawns the threads, lines them up on a barrier, and times from the first thread's start to
//! the last thread's end; each thread walks the pre-generated key array from where its previous
//! sample stopped. The cache is built and pre-filled once per benchmark, and only for the
//! benchmarks the filter selects. Contenders of one workload and thread count run one after
//! another, so they see about the same machine. The workloads are described in
//! `benches/common/mod.rs`; `examples/showdown` runs the same ones as interleaved rounds
//! (`--only throughput`, `--only sweep`), which is what a noisy machine needs.

// Shared with the showdown example; each target uses a different part of it.
#[allow(dead_code)]
mod common;

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use common::{for_each_contender, hasher, run_ops, Contender, Op, Sizes, Visit, Workload};
use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};

/// A list from the environment variable `var`, parsed by `parse`, or `default`.
fn env_list<T>(var: &str, parse: fn(&str) -> Option<Vec<T>>, default: Vec<T>) -> Vec<T> {
    match std::env::var(var) {
        Ok(s) => parse(&s).unwrap_or_else(|| panic!("{var}={s:?}: expected a list like 1,2,4")),
        Err(_) => default,
    }
}

/// Runs `iters` operations split over the threads, each starting at its cursor; advances the
/// cursors and returns the time from the first start to the last end.
fn timed<C: Contender>(cache: &C, w: &Workload, cursors: &mut [usize], iters: u64) -> Duration {
    let threads = cursors.len() as u64;
    let barrier = Barrier::new(cursors.len());
    let mask = w.keys.len() - 1;
    let spans: Vec<(Instant, Instant)> = std::thread::scope(|s| {
        let handles: Vec<_> = cursors
            .iter_mut()
            .enumerate()
            .map(|(t, cursor)| {
                let n = (iters / threads + u64::from((t as u64) < iters % threads)) as usize;
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    black_box(run_ops(cache, w, *cursor, n));
                    let end = Instant::now();
                    *cursor = (*cursor + n) & mask;
                    (start, end)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("benchmark thread panicked"))
            .collect()
    });
    let first = spans
        .iter()
        .map(|s| s.0)
        .min()
        .expect("at least one thread");
    let last = spans
        .iter()
        .map(|s| s.1)
        .max()
        .expect("at least one thread");
    last - first
}

struct Bench<'a, 'c> {
    group: &'a mut BenchmarkGroup<'c, WallTime>,
    workload: &'a Workload,
    threads: usize,
}

impl Visit for Bench<'_, '_> {
    fn visit<C: Contender>(&mut self) {
        let (w, threads) = (self.workload, self.threads);
        let id = BenchmarkId::new(C::NAME, format!("{threads}t"));
        // Criterion calls this closure only for benchmarks its filter selects, so the cache is
        // built and filled only for those.
        self.group.bench_function(id, |b| {
            let cache = C::new(w.capacity, hasher());
            w.fill(&cache);
            if w.op == Op::Get {
                let missing = w.check_resident(&cache);
                if missing > 0 {
                    eprintln!("warning: {} lost {missing} of {} keys", C::NAME, w.prefill);
                }
            }
            let mut cursors: Vec<usize> = (0..threads).map(|t| w.offset(t, threads)).collect();
            b.iter_custom(|iters| timed(&cache, w, &mut cursors, iters))
        });
    }
}

/// Every contender on `w` at every thread count, in one criterion group named `group`.
fn bench_workload(c: &mut Criterion, group: &str, w: &Workload, threads: &[usize]) {
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(1));
    for &t in threads {
        for_each_contender(&mut Bench {
            group: &mut g,
            workload: w,
            threads: t,
        });
    }
    g.finish();
}

fn throughput(c: &mut Criterion) {
    let sizes = if std::env::var_os("CLOCKLINE_BENCH_QUICK").is_some() {
        Sizes::QUICK
    } else {
        Sizes::FULL
    };
    let threads = env_list(
        "CLOCKLINE_BENCH_THREADS",
        common::parse_threads,
        common::sweep_threads(),
    );
    let zipfs = env_list(
        "CLOCKLINE_BENCH_ZIPF",
        common::parse_zipfs,
        common::GRID_ZIPF.to_vec(),
    );
    let reads = env_list(
        "CLOCKLINE_BENCH_READS",
        common::parse_reads,
        common::GRID_READS.to_vec(),
    );
    for w in Workload::standard(sizes) {
        bench_workload(c, w.name, &w, &threads);
    }
    // One key array at a time: each is 8 MiB at full size.
    for &z in &zipfs {
        for &r in &reads {
            let w = Workload::getput(sizes, z, r);
            bench_workload(c, &format!("getput-z{z}-r{r}"), &w, &threads);
        }
    }
}

criterion_group! {
    name = benches;
    // On 2 cores: (3 standard + 15 grid workloads) x 2 thread counts x 5 contenders = 180
    // benchmarks of 1-2 s each (0.2 s warm-up, 0.5 s measuring, filling the cache, and the
    // analysis, kept short by 10,000 bootstrap resamples instead of 100,000): 5 min 18 s on the
    // 2-core build VM at load 3.
    // `--warm-up-time` / `--measurement-time` / `--nresamples` override these.
    config = Criterion::default()
        .sample_size(10)
        .nresamples(10_000)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(500));
    targets = throughput
}
criterion_main!(benches);
