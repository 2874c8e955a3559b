//! Throughput side by side: every contender on every standard workload, in interleaved rounds.
//!
//! For each workload and thread count, every contender gets one cache, built and pre-filled
//! once, and kept for all its rounds, so the numbers are for the steady state the workload
//! drives the cache into, not for a freshly filled one. Then an untimed warm-up round each,
//! then `rounds` rounds in which the contenders take turns (the starting contender rotates from
//! round to round). In a round, `threads` threads walk the workload's key array for a fixed
//! time, each from where it stopped in the previous round. A contender's number is the median of
//! its rounds, so a burst of noise on a shared machine lands in one round of one contender, not
//! in one contender's whole result. Absolute numbers move from run to run; ratios inside one
//! run are what to read.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use crate::common::{
    gets_in, hasher, run_ops, select, Clockline, Contender, Op, Papaya, PerContender, QuickCache,
    Sizes, Workload,
};
use crate::csv::ThroughputRow;

/// Accesses between two looks at the stop flag.
const CHUNK: usize = 1024;

/// How the throughput section runs.
#[derive(Debug, Clone)]
pub struct Config {
    pub sizes: Sizes,
    pub threads: Vec<usize>,
    pub rounds: usize,
    pub round_time: Duration,
    /// Only these contenders (by name); all when `None`.
    pub contenders: Option<Vec<String>>,
}

/// One contender, one round.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub ops_per_sec: f64,
    /// Hits over `get`s.
    pub hit_ratio: f64,
}

/// A contender's cache and the threads' positions in the key array, kept across rounds.
pub trait Runner {
    /// Runs the workload on the cache for about `time`.
    fn round(&mut self, w: &Workload, time: Duration) -> Sample;
    /// read-hit only: pre-filled keys the contender did not keep.
    fn missing(&self) -> usize;
}

struct State<C> {
    cache: C,
    cursors: Vec<usize>,
    missing: usize,
}

/// Builds a contender's [`Runner`] for a workload and a thread count.
pub type Start = fn(&Workload, usize) -> Box<dyn Runner>;

/// Builds and pre-fills a cache of contender `C` for `threads` threads.
fn start<C: Contender>(w: &Workload, threads: usize) -> Box<dyn Runner> {
    let cache = C::new(w.capacity, hasher());
    w.fill(&cache);
    let missing = if w.op == Op::Get {
        w.check_resident(&cache)
    } else {
        0
    };
    Box::new(State {
        cache,
        cursors: (0..threads).map(|t| w.offset(t, threads)).collect(),
        missing,
    })
}

impl<C: Contender> Runner for State<C> {
    fn round(&mut self, w: &Workload, time: Duration) -> Sample {
        let mask = w.keys.len() - 1;
        let stop = AtomicBool::new(false);
        let barrier = Barrier::new(self.cursors.len() + 1);
        let cache = &self.cache;
        let per_thread: Vec<(u64, u64, Duration)> = std::thread::scope(|s| {
            let handles: Vec<_> = self
                .cursors
                .iter_mut()
                .map(|at| {
                    let (stop, barrier) = (&stop, &barrier);
                    s.spawn(move || {
                        let (mut ops, mut hits) = (0u64, 0u64);
                        barrier.wait();
                        let start = Instant::now();
                        while !stop.load(Ordering::Relaxed) {
                            hits += run_ops(cache, w, *at, CHUNK);
                            *at = (*at + CHUNK) & mask;
                            ops += CHUNK as u64;
                        }
                        (ops, hits, start.elapsed())
                    })
                })
                .collect();
            barrier.wait();
            std::thread::sleep(time);
            stop.store(true, Ordering::Relaxed);
            handles
                .into_iter()
                .map(|h| h.join().expect("benchmark thread panicked"))
                .collect()
        });
        let ops: u64 = per_thread.iter().map(|r| r.0).sum();
        let hits: u64 = per_thread.iter().map(|r| r.1).sum();
        let elapsed = per_thread.iter().map(|r| r.2).max().unwrap_or_default();
        Sample {
            ops_per_sec: ops as f64 / elapsed.as_secs_f64(),
            hit_ratio: hits as f64 / gets_in(w.op, ops).max(1) as f64,
        }
    }

    fn missing(&self) -> usize {
        self.missing
    }
}

/// Every contender, or those named in `only`, in report order.
pub fn contenders(only: Option<&[String]>) -> Vec<(&'static str, Start)> {
    struct Starts;
    impl PerContender for Starts {
        type Out = Start;
        fn make<C: Contender>(&self) -> Start {
            start::<C>
        }
    }
    select(only, &Starts)
}

/// Medians of one workload at one thread count, in the order of the contender list.
pub struct Measured {
    /// Operations per second.
    pub ops: Vec<f64>,
    /// Hits over `get`s.
    pub hits: Vec<f64>,
    /// The widest (max - min) / median of any contender.
    pub spread: f64,
    /// Pre-filled keys each contender did not keep (read-only workloads; else 0).
    pub missing: Vec<usize>,
    /// Each contender's throughput over the first contender's in the same round, median over
    /// the rounds: the two samples of a round are taken back to back, so a noisy neighbour
    /// slows both, and this ratio varies less than the ratio of the medians.
    pub paired: Vec<f64>,
}

/// Builds and pre-fills one cache per contender, runs one untimed warm-up round each, then
/// `rounds` rounds of `round_time` in which the contenders take turns (the first one rotates),
/// and returns each contender's medians. See the module docs.
pub fn measure(
    w: &Workload,
    threads: usize,
    list: &[(&'static str, Start)],
    rounds: usize,
    round_time: Duration,
) -> Measured {
    let mut runners: Vec<Box<dyn Runner>> =
        list.iter().map(|(_, start)| start(w, threads)).collect();
    for r in &mut runners {
        r.round(w, round_time); // warm-up, not counted
    }
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); list.len()];
    for round in 0..rounds {
        for i in 0..list.len() {
            let c = (round + i) % list.len();
            samples[c].push(runners[c].round(w, round_time));
        }
    }
    let mut m = Measured {
        ops: Vec::new(),
        hits: Vec::new(),
        spread: 0.0,
        missing: runners.iter().map(|r| r.missing()).collect(),
        paired: Vec::new(),
    };
    for s in &samples {
        let mut xs: Vec<f64> = s.iter().map(|x| x.ops_per_sec).collect();
        let med = median(&mut xs);
        m.spread = m.spread.max((xs[xs.len() - 1] - xs[0]) / med);
        m.ops.push(med);
        let mut hs: Vec<f64> = s.iter().map(|x| x.hit_ratio).collect();
        m.hits.push(median(&mut hs));
        let mut rs: Vec<f64> = s
            .iter()
            .zip(&samples[0])
            .map(|(x, first)| x.ops_per_sec / first.ops_per_sec)
            .collect();
        m.paired.push(median(&mut rs));
    }
    m
}

/// The median of `xs` (sorted in place); `xs` must not be empty.
pub fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// Runs the throughput section, prints its tables and returns its medians.
pub fn run(cfg: &Config) -> Vec<ThroughputRow> {
    let list = contenders(cfg.contenders.as_deref());
    let mut rows = Vec::new();
    let index = |name: &str| list.iter().position(|c| c.0 == name);
    let (cl, qc, pa) = (
        index(Clockline::NAME),
        index(QuickCache::NAME),
        index(Papaya::NAME),
    );
    let ratio = |a: Option<usize>, b: Option<usize>, ops: &[f64]| match (a, b) {
        (Some(a), Some(b)) => format!("{:>7.2}x", ops[a] / ops[b]),
        _ => format!("{:>8}", "-"),
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("== Throughput (Mops/s: millions of operations per second, all threads together)");
    println!(
        "   median of {} interleaved rounds of {} ms after one warm-up round, one cache per \
         contender kept across rounds; ahash with fixed seeds for all; {cores} cores here",
        cfg.rounds,
        cfg.round_time.as_millis()
    );
    println!("   papaya is a map that never evicts: the ceiling, not a cache");
    if cfg!(clockline_padded_slots) {
        println!("   clockline built with --cfg clockline_padded_slots (control word and every slot CachePadded)");
    }
    if cfg.threads.iter().any(|&t| t > cores) {
        println!("   note: more threads than cores; those rows measure time slicing");
    }
    let t0 = Instant::now();
    let workloads = Workload::standard(cfg.sizes);
    println!(
        "   (key arrays of {} accesses, cache-aside's of {}, generated in {:.1} s)",
        cfg.sizes.accesses,
        workloads
            .iter()
            .find(|w| w.name == "cache-aside")
            .map_or(0, |w| w.keys.len()),
        t0.elapsed().as_secs_f64()
    );
    for w in &workloads {
        println!();
        println!("{}: {}", w.name, w.description);
        let mut header = format!("{:>7}", "threads");
        for (name, _) in &list {
            header += &format!(" {name:>11}");
        }
        header += &format!(" {:>8} {:>10} {:>7}", "cl/qc", "cl/papaya", "spread");
        println!("{header}");
        let mut hit_rows = Vec::new();
        for &threads in &cfg.threads {
            let Measured {
                ops,
                hits,
                spread,
                missing,
                paired,
            } = measure(w, threads, &list, cfg.rounds, cfg.round_time);
            for ((name, _), o) in list.iter().zip(&ops) {
                rows.push(ThroughputRow {
                    workload: w.name.to_string(),
                    zipf: w.zipf,
                    read_pct: w.op.read_pct(),
                    threads,
                    contender: name,
                    mops: o / 1e6,
                });
            }
            let mut row = format!("{threads:>7}");
            for o in &ops {
                row += &format!(" {:>11.2}", o / 1e6);
            }
            row += &format!(
                " {} {:>10} {:>6.0}%",
                ratio(cl, qc, &ops),
                ratio(cl, pa, &ops),
                spread * 100.0
            );
            println!("{row}");
            if std::env::var_os("CLOCKLINE_PAIRED").is_some() {
                let mut row = format!("{:>7}", "paired");
                for r in &paired {
                    row += &format!(" {r:>10.3}x");
                }
                println!("{row}   (median per-round ratio to {})", list[0].0);
            }
            for (&missing, (name, _)) in missing.iter().zip(&list) {
                if missing > 0 {
                    println!(
                        "        warning: {name} lost {missing} of {} keys",
                        w.prefill
                    );
                }
            }
            hit_rows.push((threads, hits));
        }
        if w.op != Op::Get {
            println!("  hit ratio of the gets (median round):");
            for (threads, hits) in hit_rows {
                let mut row = format!("{threads:>7}");
                for h in hits {
                    row += &format!(" {:>10.1}%", h * 100.0);
                }
                println!("{row}");
            }
        }
    }
    println!();
    println!(
        "   cl/qc = clockline / quick_cache, cl/papaya = clockline / papaya; spread = widest \
         (max - min) / median of any contender in the row. Throughput section took {:.0} s.",
        t0.elapsed().as_secs_f64()
    );
    rows
}
