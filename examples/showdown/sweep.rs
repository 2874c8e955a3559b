//! The get/put grid (`--only sweep`, not part of the default run): thread counts x Zipf
//! exponents x read shares x contenders, each cell measured as the throughput section measures
//! its workloads (one cache per contender kept across rounds, one warm-up round, interleaved
//! rounds, medians; see `throughput.rs`).
//!
//! A cell is [`Workload::getput`]: read-hit's key space (2^16 keys) and capacity (2^17), all
//! keys resident, `read %` of the accesses `get` and the rest `insert` (a replacement, never an
//! eviction), spread evenly; Zipf `z` over the keys. `--csv PATH` writes the medians as
//! `machine,workload,zipf,read_pct,threads,contender,mops` for `cargo run --example plots`.

use std::time::{Duration, Instant};

use crate::common::{Clockline, Contender, QuickCache, Sizes, Workload};
use crate::csv::ThroughputRow;
use crate::throughput::{contenders, measure, Measured};

/// Seconds to build and fill one cache of every contender for one cell at full size, measured
/// on the 2-core build VM (generous: moka's pending tasks dominate); for the time estimate.
const FILL_SECS_PER_CELL: f64 = 0.3;

/// How the sweep runs.
#[derive(Debug, Clone)]
pub struct Config {
    pub sizes: Sizes,
    pub threads: Vec<usize>,
    pub zipfs: Vec<f64>,
    /// Percent `get`.
    pub reads: Vec<u32>,
    pub rounds: usize,
    pub round_time: Duration,
    /// Only these contenders (by name); all when `None`.
    pub contenders: Option<Vec<String>>,
}

/// Seconds the sweep should take with `cfg`: every measured cell runs `rounds + 1` rounds per
/// contender, plus filling the caches.
pub fn estimate_secs(cfg: &Config) -> f64 {
    let n = contenders(cfg.contenders.as_deref()).len();
    let cells = cfg.zipfs.len() * cfg.reads.len() * cfg.threads.len();
    let fill = if cfg.sizes.accesses >= Sizes::FULL.accesses {
        FILL_SECS_PER_CELL
    } else {
        0.01
    };
    cells as f64 * (n as f64 * (cfg.rounds + 1) as f64 * cfg.round_time.as_secs_f64() + fill)
}

/// Runs the sweep, prints a table per cell and returns the medians.
pub fn run(cfg: &Config) -> Vec<ThroughputRow> {
    let list = contenders(cfg.contenders.as_deref());
    let index = |name: &str| list.iter().position(|c| c.0 == name);
    let (cl, qc) = (index(Clockline::NAME), index(QuickCache::NAME));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("== Sweep: the get/put grid (Mops/s, all threads together)");
    println!(
        "   threads {:?} x Zipf {:?} x reads {:?} % x {} contenders; median of {} interleaved \
         rounds of {} ms after one warm-up round; {cores} cores here; {}",
        cfg.threads,
        cfg.zipfs,
        cfg.reads,
        list.len(),
        cfg.rounds,
        cfg.round_time.as_millis(),
        crate::csv::machine(),
    );
    println!("   estimated time: {:.0} s", estimate_secs(cfg));
    let t0 = Instant::now();
    let mut rows = Vec::new();
    for &z in &cfg.zipfs {
        for &r in &cfg.reads {
            let w = Workload::getput(cfg.sizes, z, r);
            println!();
            println!("getput z{z} r{r}: {}", w.description);
            let mut header = format!("{:>7}", "threads");
            for (name, _) in &list {
                header += &format!(" {name:>11}");
            }
            header += &format!(" {:>8} {:>7}", "cl/qc", "spread");
            println!("{header}");
            for &threads in &cfg.threads {
                let Measured {
                    ops,
                    spread,
                    missing,
                    ..
                } = measure(&w, threads, &list, cfg.rounds, cfg.round_time);
                let mut line = format!("{threads:>7}");
                for o in &ops {
                    line += &format!(" {:>11.2}", o / 1e6);
                }
                match (cl, qc) {
                    (Some(a), Some(b)) => line += &format!(" {:>7.2}x", ops[a] / ops[b]),
                    _ => line += &format!(" {:>8}", "-"),
                }
                line += &format!(" {:>6.0}%", spread * 100.0);
                println!("{line}");
                for (&m, (name, _)) in missing.iter().zip(&list) {
                    if m > 0 {
                        println!("        warning: {name} lost {m} of {} keys", w.prefill);
                    }
                }
                for ((name, _), o) in list.iter().zip(&ops) {
                    rows.push(ThroughputRow {
                        workload: w.name.to_string(),
                        zipf: z,
                        read_pct: Some(r),
                        threads,
                        contender: name,
                        mops: o / 1e6,
                    });
                }
            }
        }
    }
    println!();
    println!(
        "   cl/qc = clockline / quick_cache; spread = widest (max - min) / median of any \
         contender in the row. Sweep took {:.0} s.",
        t0.elapsed().as_secs_f64()
    );
    rows
}
