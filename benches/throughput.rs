//! Throughput of clockline and its contenders under the standard workloads (criterion).
//!
//! ```text
//! cargo bench --bench throughput                         # threads 1 and 2, 3-4 minutes
//! CLOCKLINE_BENCH_THREADS=1,2,4,8,16 cargo bench --bench throughput
//! cargo bench --bench throughput -- cache-aside/clockline   # one workload, one contender
//! CLOCKLINE_BENCH_QUICK=1 cargo bench --bench throughput -- --quick  # smoke run
//! ```
//!
//! One criterion iteration is one operation (of all threads together), so the reported
//! throughput is operations per second across threads. Each sample spawns the threads, lines
//! them up on a barrier, and times from the first thread's start to the last thread's end; each
//! thread walks the pre-generated key array from where its previous sample stopped. The cache
//! is built and pre-filled once per benchmark. Contenders of one workload and thread count run
//! one after another, so they see about the same machine. The workloads are described in
//! `benches/common/mod.rs`; `examples/showdown` runs the same ones as interleaved rounds.

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

/// Thread counts from `CLOCKLINE_BENCH_THREADS` ("1,2,4,8,16"), default 1 and 2.
fn thread_counts() -> Vec<usize> {
    match std::env::var("CLOCKLINE_BENCH_THREADS") {
        Ok(s) => common::parse_threads(&s)
            .unwrap_or_else(|| panic!("CLOCKLINE_BENCH_THREADS={s:?}: expected e.g. 1,2,4")),
        Err(_) => vec![1, 2],
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
        let w = self.workload;
        let cache = C::new(w.capacity, hasher());
        w.fill(&cache);
        if w.op == Op::Get {
            let missing = w.check_resident(&cache);
            if missing > 0 {
                eprintln!("warning: {} lost {missing} of {} keys", C::NAME, w.prefill);
            }
        }
        let mut cursors: Vec<usize> = (0..self.threads)
            .map(|t| w.offset(t, self.threads))
            .collect();
        let id = BenchmarkId::new(C::NAME, format!("{}t", self.threads));
        self.group.bench_function(id, |b| {
            b.iter_custom(|iters| timed(&cache, w, &mut cursors, iters))
        });
    }
}

fn throughput(c: &mut Criterion) {
    let sizes = if std::env::var_os("CLOCKLINE_BENCH_QUICK").is_some() {
        Sizes::QUICK
    } else {
        Sizes::FULL
    };
    let threads = thread_counts();
    for w in Workload::standard(sizes) {
        let mut group = c.benchmark_group(w.name);
        group.throughput(Throughput::Elements(1));
        for &t in &threads {
            for_each_contender(&mut Bench {
                group: &mut group,
                workload: &w,
                threads: t,
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    // 3 workloads x 2 thread counts x 5 contenders = 30 benchmarks of about 5 s each.
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = throughput
}
criterion_main!(benches);
