//! Latency percentiles of `get` and `insert` under contention (`--only latency`).
//!
//! Every thread runs the same mixed workload on one shared cache: Zipf 0.99 over cache-aside's
//! key space (2^20 keys), capacity 2^17 pre-filled with the hottest keys, 75 % `get` and 25 %
//! `insert` spread evenly through a pre-generated key array, so inserts both replace resident
//! keys and evict. Each thread times one `get` in [`SAMPLE_EVERY`] and one `insert` in
//! [`SAMPLE_EVERY`] (counted per kind, so both kinds are sampled whatever the mix) and records
//! the nanoseconds in an HDR histogram (3 significant digits); the other operations run
//! untimed, so the timer's cost is paid by a sixteenth of the work.
//!
//! The timer is `std::time::Instant` (on Linux `clock_gettime(CLOCK_MONOTONIC)` through the
//! vDSO: with the `tsc` clocksource a read is about 20 ns and the resolution 1 ns). Its cost is
//! inside every figure: the section first times an empty region the same way and prints that
//! floor beside the table. Contenders run in interleaved rounds (the first one rotates) after
//! one untimed warm-up round each, and each keeps its cache across rounds; the histograms of
//! all rounds are merged. The section runs at the largest count of `--threads`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::common::{hasher, select, Contender, Op, PerContender, Sizes, Spec, Workload};

/// One operation of each kind in this many is timed.
pub const SAMPLE_EVERY: u64 = 16;

/// Percent `get` of the workload; the rest `insert`.
const READ_PCT: u32 = 75;

/// Accesses between two looks at the stop flag.
const CHUNK: usize = 1024;

/// Highest latency the histograms hold (larger ones are recorded as this): 60 s in ns.
const MAX_NS: u64 = 60_000_000_000;

/// How the latency section runs.
#[derive(Debug, Clone)]
pub struct Config {
    pub sizes: Sizes,
    pub threads: usize,
    pub rounds: usize,
    pub round_time: Duration,
    /// Only these contenders (by name); all when `None`.
    pub contenders: Option<Vec<String>>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_NS, 3).expect("valid histogram bounds")
}

/// The workload every thread runs (see the module docs).
pub fn workload(sz: Sizes) -> Workload {
    let spec = Spec {
        zipf: crate::common::ZIPF_S,
        op: Op::reads(READ_PCT),
        key_space: sz.aside_keys,
        capacity: sz.aside_capacity,
    };
    let description = format!(
        "{READ_PCT}% get / {}% insert, {} keys, capacity {}, Zipf {}",
        100 - READ_PCT,
        spec.key_space,
        spec.capacity,
        spec.zipf
    );
    Workload::new("latency-mix", description, spec, sz.accesses, 5)
}

/// What one contender recorded over all its rounds.
struct Recorded {
    get: Histogram<u64>,
    insert: Histogram<u64>,
    /// Operations per second of each round, timed ones included.
    ops_per_sec: Vec<f64>,
}

/// A contender's cache and the threads' positions, kept across rounds.
trait Runner {
    fn round(&mut self, w: &Workload, time: Duration, rec: Option<&mut Recorded>);
}

struct State<C> {
    cache: C,
    cursors: Vec<usize>,
}

type Start = fn(&Workload, usize) -> Box<dyn Runner>;

fn start<C: Contender>(w: &Workload, threads: usize) -> Box<dyn Runner> {
    let cache = C::new(w.capacity, hasher());
    w.fill(&cache);
    Box::new(State {
        cache,
        cursors: (0..threads).map(|t| w.offset(t, threads)).collect(),
    })
}

/// Per-thread result of a round.
struct ThreadRun {
    ops: u64,
    elapsed: Duration,
    get: Histogram<u64>,
    insert: Histogram<u64>,
}

/// Walks `w` from `*at` until `stop`, timing one get and one insert in [`SAMPLE_EVERY`].
fn walk<C: Contender>(cache: &C, w: &Workload, at: &mut usize, stop: &AtomicBool) -> ThreadRun {
    let keys = &w.keys[..];
    let mask = keys.len() - 1;
    let write_percent = match w.op {
        Op::Mixed { write_percent } => write_percent,
        Op::Get => 0,
        Op::CacheAside => unreachable!("the latency workload is a get/insert mix"),
    };
    let (mut get, mut insert) = (histogram(), histogram());
    let (mut gets, mut inserts, mut ops) = (0u64, 0u64, 0u64);
    // Bresenham as in `common::run_ops`: exactly `write_percent` of every 100 accesses write.
    let mut acc = (*at as u64 * write_percent as u64 % 100) as u32;
    let start = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        for i in *at..*at + CHUNK {
            let k = keys[i & mask];
            acc += write_percent;
            if acc >= 100 {
                acc -= 100;
                inserts += 1;
                if inserts % SAMPLE_EVERY == 0 {
                    let t = Instant::now();
                    cache.insert(k, k);
                    insert.saturating_record(t.elapsed().as_nanos() as u64);
                } else {
                    cache.insert(k, k);
                }
            } else {
                gets += 1;
                if gets % SAMPLE_EVERY == 0 {
                    let t = Instant::now();
                    let hit = cache.get(&k);
                    get.saturating_record(t.elapsed().as_nanos() as u64);
                    std::hint::black_box(hit);
                } else {
                    std::hint::black_box(cache.get(&k));
                }
            }
        }
        *at = (*at + CHUNK) & mask;
        ops += CHUNK as u64;
    }
    ThreadRun {
        ops,
        elapsed: start.elapsed(),
        get,
        insert,
    }
}

impl<C: Contender> Runner for State<C> {
    fn round(&mut self, w: &Workload, time: Duration, rec: Option<&mut Recorded>) {
        let stop = AtomicBool::new(false);
        let barrier = Barrier::new(self.cursors.len() + 1);
        let cache = &self.cache;
        let runs: Vec<ThreadRun> = std::thread::scope(|s| {
            let handles: Vec<_> = self
                .cursors
                .iter_mut()
                .map(|at| {
                    let (stop, barrier) = (&stop, &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        walk(cache, w, at, stop)
                    })
                })
                .collect();
            barrier.wait();
            std::thread::sleep(time);
            stop.store(true, Ordering::Relaxed);
            handles
                .into_iter()
                .map(|h| h.join().expect("latency thread panicked"))
                .collect()
        });
        if let Some(rec) = rec {
            let ops: u64 = runs.iter().map(|r| r.ops).sum();
            let elapsed = runs.iter().map(|r| r.elapsed).max().unwrap_or_default();
            rec.ops_per_sec.push(ops as f64 / elapsed.as_secs_f64());
            for r in &runs {
                // Same bounds on both sides, so adding cannot fail.
                rec.get.add(&r.get).expect("same histogram bounds");
                rec.insert.add(&r.insert).expect("same histogram bounds");
            }
        }
    }
}

fn contenders(only: Option<&[String]>) -> Vec<(&'static str, Start)> {
    struct Starts;
    impl PerContender for Starts {
        type Out = Start;
        fn make<C: Contender>(&self) -> Start {
            start::<C>
        }
    }
    select(only, &Starts)
}

/// The timer's floor: an empty region timed as `walk` times an operation, 200,000 times after
/// 1,000 untimed ones.
fn timer_floor() -> Histogram<u64> {
    let mut h = histogram();
    for _ in 0..1_000 {
        std::hint::black_box(Instant::now().elapsed());
    }
    for _ in 0..200_000 {
        let t = Instant::now();
        std::hint::black_box(());
        h.saturating_record(t.elapsed().as_nanos() as u64);
    }
    h
}

/// The kernel's clocksource, which decides what `Instant::now` costs (Linux only).
fn clocksource() -> String {
    std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

/// One line of the table / CSV: p50, p99, p99.9 and max in ns.
fn quantiles(h: &Histogram<u64>) -> [u64; 4] {
    [
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max(),
    ]
}

/// Runs the latency section and prints its table; returns CSV lines
/// `machine,threads,contender,op,p50_ns,p99_ns,p999_ns,max_ns,samples,mops`.
pub fn run(cfg: &Config) -> Vec<String> {
    let t0 = Instant::now();
    let list = contenders(cfg.contenders.as_deref());
    let w = workload(cfg.sizes);
    let floor = quantiles(&timer_floor());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "== Latency under contention (ns): {} threads on {cores} cores, each running {}",
        cfg.threads, w.description
    );
    println!(
        "   1 get in {SAMPLE_EVERY} and 1 insert in {SAMPLE_EVERY} timed with std::time::Instant \
         (clocksource {}, 1 ns resolution); an empty timed region reads p50 {} / p99 {} / \
         p99.9 {} / max {} ns, included in every figure",
        clocksource(),
        floor[0],
        floor[1],
        floor[2],
        floor[3]
    );
    println!(
        "   {} interleaved rounds of {} ms per contender after one warm-up round, all rounds \
         merged; Mops/s = median round throughput with the timing on",
        cfg.rounds,
        cfg.round_time.as_millis()
    );
    if cfg.threads > cores {
        println!("   note: more threads than cores; the tail measures time slicing");
    }
    let mut runners: Vec<Box<dyn Runner>> = list
        .iter()
        .map(|(_, start)| start(&w, cfg.threads))
        .collect();
    for r in &mut runners {
        r.round(&w, cfg.round_time, None);
    }
    let mut recs: Vec<Recorded> = list
        .iter()
        .map(|_| Recorded {
            get: histogram(),
            insert: histogram(),
            ops_per_sec: Vec::new(),
        })
        .collect();
    for round in 0..cfg.rounds {
        for i in 0..list.len() {
            let c = (round + i) % list.len();
            runners[c].round(&w, cfg.round_time, Some(&mut recs[c]));
        }
    }
    drop(runners);
    println!(
        "{:<12} {:<6} {:>8} {:>8} {:>8} {:>10} {:>10} {:>8}",
        "contender", "op", "p50", "p99", "p99.9", "max", "samples", "Mops/s"
    );
    let machine = crate::csv::machine();
    let mut lines = Vec::new();
    for ((name, _), rec) in list.iter().zip(&mut recs) {
        let mops = crate::throughput::median(&mut rec.ops_per_sec) / 1e6;
        for (op, h) in [("get", &rec.get), ("insert", &rec.insert)] {
            let [p50, p99, p999, max] = quantiles(h);
            println!(
                "{name:<12} {op:<6} {p50:>8} {p99:>8} {p999:>8} {max:>10} {:>10} {mops:>8.2}",
                h.len()
            );
            lines.push(format!(
                "{machine},{},{name},{op},{p50},{p99},{p999},{max},{},{mops:.3}",
                cfg.threads,
                h.len()
            ));
        }
    }
    println!(
        "   papaya never evicts (the ceiling). Latency section took {:.0} s.",
        t0.elapsed().as_secs_f64()
    );
    lines
}

/// The header of the lines [`run`] returns.
pub const CSV_HEADER: &str =
    "machine,threads,contender,op,p50_ns,p99_ns,p999_ns,max_ns,samples,mops";
