//! clockline against quick_cache, moka, a `Mutex<lru::LruCache>` and papaya (a map without
//! eviction, the ceiling): throughput, hit ratio and memory, side by side.
//!
//! ```text
//! cargo run --release --example showdown                      # everything, 1-2 minutes
//! cargo run --release --example showdown -- --quick           # smoke run, a few seconds
//! cargo run --release --example showdown -- --threads 1,2,4,8,16 --only throughput
//! ```
//!
//! Workloads are defined in `benches/common/mod.rs`, shared with `cargo bench --bench
//! throughput` (criterion); this example interleaves the contenders round by round and reports
//! medians, which is what a shared or noisy machine allows.

// Shared with the criterion bench; each target uses a different part of it.
#[allow(dead_code)]
#[path = "../../benches/common/mod.rs"]
mod common;
mod hit_ratio;
mod memory;
mod throughput;

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
usage: showdown [--quick] [--only throughput|hit-ratio|memory] [--threads 1,2,...]
                [--rounds N] [--ms N] [--contenders a,b,...]

  --quick       tiny sizes and short rounds: a smoke run of a few seconds
  --only S      run one section (default: all three)
  --threads L   thread counts for the throughput section (default 1,2)
  --rounds N    interleaved rounds per contender (default 5; 3 with --quick)
  --ms N        milliseconds per round (default 200; 20 with --quick)
  --contenders  throughput contenders to run, by name (default: all), e.g. clockline
                alone for an A/B of two builds of it";

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
}

struct Args {
    quick: bool,
    only: Option<Section>,
    threads: Vec<usize>,
    rounds: Option<usize>,
    ms: Option<u64>,
    contenders: Option<Vec<String>>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        quick: false,
        only: None,
        threads: vec![1, 2],
        rounds: None,
        ms: None,
        contenders: None,
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
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
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
    let wants = |s: Section| args.only.is_none() || args.only == Some(s);
    let start = Instant::now();
    if wants(Section::Throughput) {
        throughput::run(&throughput::Config {
            sizes: if quick() { Sizes::QUICK } else { Sizes::FULL },
            threads: args.threads.clone(),
            rounds: args.rounds.unwrap_or(if quick() { 3 } else { 5 }),
            round_time: Duration::from_millis(args.ms.unwrap_or(if quick() { 20 } else { 200 })),
            contenders: args.contenders.clone(),
        });
        println!();
    }
    if wants(Section::HitRatio) {
        hit_ratio::run();
        println!();
    }
    if wants(Section::Memory) {
        memory::run();
        println!();
    }
    println!(
        "showdown finished in {:.0} s",
        start.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}
