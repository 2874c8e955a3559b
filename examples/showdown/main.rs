//! clockline against quick_cache, moka, a `Mutex<lru::LruCache>` and papaya (a map without
//! eviction, the ceiling): throughput, hit ratio and memory, side by side.
//!
//! ```text
//! cargo run --release --example showdown                      # everything, 1-2 minutes
//! cargo run --release --example showdown -- --quick           # smoke run, a few seconds
//! cargo run --release --example showdown -- --threads 1,2,4,8,16 --only throughput
//! cargo run --release --example showdown -- --only latency --threads 16
//! cargo run --release --example showdown -- --only sweep --threads 1,2 --csv docs/data/throughput-2core.csv
//! ```
//!
//! Workloads are defined in `benches/common/mod.rs`, shared with `cargo bench --bench
//! throughput` (criterion); this example interleaves the contenders round by round and reports
//! medians, which is what a shared or noisy machine allows.

// Shared with the criterion bench; each target uses a different part of it.
#[allow(dead_code)]
#[path = "../../benches/common/mod.rs"]
mod common;
mod counters;
mod csv;
mod hit_ratio;
mod latency;
mod memory;
mod sweep;
mod throughput;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::Sizes;

// Counts live heap bytes for the memory section. It is installed for the whole run, so every
// allocation in the throughput section also pays its two shared atomic counters: a cost that
// falls on contenders that allocate per insert (clockline, moka, papaya), not on quick_cache.
#[global_allocator]
static ALLOC: memory::Counting = memory::Counting;

const USAGE: &str = "\
usage: showdown [--quick] [--only throughput|hit-ratio|memory|latency|sweep|counters]
                [--threads 1,2,...] [--rounds N] [--ms N] [--contenders a,b,...]
                [--zipf 0.8,...] [--reads 100,...] [--csv PATH]

  --quick       tiny sizes and short rounds: a smoke run of a few seconds
  --only S      run one section (default: all but sweep)
  --threads L   thread counts for throughput and sweep (default 1,2); latency runs at the
                largest
  --rounds N    interleaved rounds per contender (default 5, latency 3; 3 with --quick)
  --ms N        milliseconds per round (default 200, latency 400; 20 with --quick)
  --contenders  throughput, sweep and latency contenders to run, by name (default: all),
                e.g. clockline alone for an A/B of two builds of it
  --zipf L      sweep: Zipf exponents (default 0.8,0.99,1.2)
  --reads L     sweep: percent get (default 100,95,75,50,0)
  --csv PATH    with --only throughput, sweep, latency or memory: also write its results
                as CSV (for `cargo run --release --example plots`)";

static QUICK: AtomicBool = AtomicBool::new(false);

/// True under `--quick`; the hit-ratio and memory sections may read it to shrink themselves.
pub fn quick() -> bool {
    QUICK.load(Ordering::Relaxed)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Throughput,
    HitRatio,
    Memory,
    Latency,
    /// Hardware counters per operation (perf_event); n/a where the kernel refuses them.
    Counters,
    /// Not part of the default run.
    Sweep,
}

struct Args {
    quick: bool,
    only: Option<Section>,
    threads: Vec<usize>,
    rounds: Option<usize>,
    ms: Option<u64>,
    contenders: Option<Vec<String>>,
    zipfs: Option<Vec<f64>>,
    reads: Option<Vec<u32>>,
    csv: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        quick: false,
        only: None,
        threads: vec![1, 2],
        rounds: None,
        ms: None,
        contenders: None,
        zipfs: None,
        reads: None,
        csv: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--quick" => args.quick = true,
            "--only" => {
                args.only = Some(match value("--only")?.as_str() {
                    "throughput" => Section::Throughput,
                    "hit-ratio" => Section::HitRatio,
                    "memory" => Section::Memory,
                    "latency" => Section::Latency,
                    "sweep" => Section::Sweep,
                    "counters" => Section::Counters,
                    other => return Err(format!("unknown section {other:?}")),
                })
            }
            "--threads" => {
                let v = value("--threads")?;
                args.threads = common::parse_threads(&v).ok_or(format!("bad thread list {v:?}"))?;
            }
            "--rounds" => {
                let v = value("--rounds")?;
                args.rounds = Some(
                    v.parse()
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or(format!("bad round count {v:?}"))?,
                );
            }
            "--ms" => {
                let v = value("--ms")?;
                args.ms = Some(
                    v.parse()
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or(format!("bad round time {v:?}"))?,
                );
            }
            "--contenders" => {
                let v = value("--contenders")?;
                let names = common::contender_names();
                let list: Vec<String> = v.split(',').map(|n| n.trim().to_string()).collect();
                if let Some(bad) = list.iter().find(|n| !names.contains(&n.as_str())) {
                    return Err(format!(
                        "unknown contender {bad:?}; known: {}",
                        names.join(",")
                    ));
                }
                args.contenders = Some(list);
            }
            "--zipf" => {
                let v = value("--zipf")?;
                args.zipfs = Some(common::parse_zipfs(&v).ok_or(format!("bad Zipf list {v:?}"))?);
            }
            "--reads" => {
                let v = value("--reads")?;
                args.reads = Some(common::parse_reads(&v).ok_or(format!("bad read list {v:?}"))?);
            }
            "--csv" => args.csv = Some(PathBuf::from(value("--csv")?)),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let csv_sections = [
        Section::Throughput,
        Section::Sweep,
        Section::Latency,
        Section::Memory,
    ];
    if args.csv.is_some() && !args.only.is_some_and(|s| csv_sections.contains(&s)) {
        return Err("--csv needs --only throughput, sweep, latency or memory".to_string());
    }
    Ok(args)
}

/// Writes `lines` under `header` to the `--csv` path, if one was given.
fn write_csv(args: &Args, header: &str, lines: &[String]) {
    if let Some(path) = &args.csv {
        match csv::write_lines(path, header, lines) {
            Ok(()) => println!("   wrote {} rows to {}", lines.len(), path.display()),
            Err(e) => println!("   could not write {}: {e}", path.display()),
        }
    }
}

/// Writes throughput rows to the `--csv` path, if one was given.
fn write_throughput_csv(args: &Args, rows: &[csv::ThroughputRow]) {
    if let Some(path) = &args.csv {
        if let Err(e) = csv::write_throughput(path, rows) {
            println!("   could not write {}: {e}", path.display());
        }
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("showdown: {e}");
            }
            eprintln!("{USAGE}");
            return if e.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
    };
    QUICK.store(args.quick, Ordering::Relaxed);
    if cfg!(debug_assertions) {
        println!("warning: debug build; run with --release for meaningful numbers");
    }
    let wants = |s: Section| match args.only {
        None => s != Section::Sweep,
        Some(only) => only == s,
    };
    let start = Instant::now();
    if wants(Section::Throughput) {
        let rows = throughput::run(&throughput::Config {
            sizes: if quick() { Sizes::QUICK } else { Sizes::FULL },
            threads: args.threads.clone(),
            rounds: args.rounds.unwrap_or(if quick() { 3 } else { 5 }),
            round_time: Duration::from_millis(args.ms.unwrap_or(if quick() { 20 } else { 200 })),
            contenders: args.contenders.clone(),
        });
        write_throughput_csv(&args, &rows);
        println!();
    }
    if wants(Section::Latency) {
        let lines = latency::run(&latency::Config {
            sizes: if quick() { Sizes::QUICK } else { Sizes::FULL },
            threads: args.threads.iter().copied().max().unwrap_or(1),
            rounds: args.rounds.unwrap_or(3),
            round_time: Duration::from_millis(args.ms.unwrap_or(if quick() { 20 } else { 400 })),
            contenders: args.contenders.clone(),
        });
        write_csv(&args, latency::CSV_HEADER, &lines);
        println!();
    }
    if wants(Section::Sweep) {
        let rows = sweep::run(&sweep::Config {
            sizes: if quick() { Sizes::QUICK } else { Sizes::FULL },
            threads: args.threads.clone(),
            zipfs: args.zipfs.clone().unwrap_or(common::GRID_ZIPF.to_vec()),
            reads: args.reads.clone().unwrap_or(common::GRID_READS.to_vec()),
            rounds: args.rounds.unwrap_or(if quick() { 3 } else { 5 }),
            round_time: Duration::from_millis(args.ms.unwrap_or(if quick() { 20 } else { 200 })),
            contenders: args.contenders.clone(),
        });
        write_throughput_csv(&args, &rows);
        println!();
    }
    if wants(Section::Counters) {
        counters::run();
        println!();
    }
    if wants(Section::HitRatio) {
        hit_ratio::run();
        println!();
    }
    if wants(Section::Memory) {
        memory::run(args.csv.as_deref());
        println!();
    }
    println!(
        "showdown finished in {:.0} s",
        start.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}
