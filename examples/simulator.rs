//! Hit-ratio simulator: replays cache traces through clockline, quick_cache, moka, an exact LRU
//! and Belady's OPT, at the capacities of `../shared/traces/README.md` or any others, and prints
//! a table (and, with `--csv`, writes `trace,capacity,policy,hit_pct` rows).
//!
//! ```text
//! cargo run --release --example simulator                    # every trace, README capacities
//! cargo run --release --example simulator -- --trace lirs-gli --trace arc-OLTP
//! cargo run --release --example simulator -- --trace ../shared/traces/arc-P3.lis.zst \
//!     --capacities 25000,100000
//! cargo run --release --example simulator -- --original --policies clockline,lru,opt
//! cargo run --release --example simulator -- --csv docs/data/hit_ratio.csv
//! cargo run --release --example simulator -- --sizes 64-65536 --trace arc-OLTP
//! ```
//!
//! Every run is one (trace, capacity, policy), replayed single-threaded and deterministically
//! (clockline and the crates hash with ahash under fixed seeds): `get`, and on a miss `insert`;
//! hit ratio = hits / requests over the whole trace, no warm-up. Different runs go to different
//! threads, so the numbers do not depend on `--threads`. The models, contenders and decoders are
//! the showdown's (`examples/showdown/hit_ratio.rs`, `examples/showdown/trace_formats.rs`); see
//! `docs/_draft_simulator.md`.

#[allow(dead_code)]
#[path = "showdown/hit_ratio.rs"]
mod hit_ratio;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use hit_ratio::trace_formats::{self, Format};
use hit_ratio::{Cell, Job, Policy, Reference, Sizes, Trace};

const USAGE: &str = "\
usage: simulator [--trace NAME|PATH...]... [--original] [--format F] [--capacities A,B,...]
                 [--policies P,...] [--csv PATH] [--threads N] [--seed S] [--sizes MIN-MAX]

  --trace T...    traces: names from the traces folder (arc-P3, lirs-gli, ...) or file paths;
                  several after one --trace, or repeat it (default: every trace in the folder)
  --original      read a named trace from its original file (arc-P3.lis.zst, ...) instead of
                  its normalized/ copy; both give the same keys
  --format F      the format of the --trace paths: normalized, lirs, arc, corda, cache2k
                  (default: from the file name)
  --capacities L  capacities for every trace (default: those of the README's table for the
                  trace, or 1/5/10/25 % of its distinct keys); bytes under --sizes
  --policies L    clockline, clockline-clock, lru, opt, quick_cache, moka (default: all
                  but clockline-clock)
  --csv PATH      also write one row per run: trace,capacity,policy,hit_pct
  --threads N     runs replayed at once (default: all CPUs)
  --seed S        clockline's hasher seed (default 0, the benchmarks' hasher)
  --sizes MIN-MAX give every key a size, log-uniform in MIN..=MAX bytes from a hash of the key,
                  and bound caches by bytes (default capacities: the README's entry counts times
                  the mean size of the trace's keys); LRU is then size-aware, OPT does not run

Traces are looked up in $CLOCKLINE_TRACES or <crate>/../shared/traces.";

struct Args {
    traces: Vec<String>,
    original: bool,
    format: Option<Format>,
    capacities: Option<Vec<u64>>,
    policies: Vec<Policy>,
    csv: Option<PathBuf>,
    threads: usize,
    seed: u64,
    sizes: Option<Sizes>,
}

fn parse_list<T: std::str::FromStr>(s: &str, what: &str) -> Result<Vec<T>, String> {
    s.split(',')
        .filter(|x| !x.trim().is_empty())
        .map(|x| {
            x.trim()
                .replace('_', "")
                .parse()
                .map_err(|_| format!("{what}: cannot read {x:?}"))
        })
        .collect()
}

fn parse_policy(name: &str, seed: u64) -> Result<Policy, String> {
    Ok(match name.trim().to_ascii_lowercase().as_str() {
        "clockline" => Policy::Clockline(seed),
        "clockline-clock" | "clock" => Policy::ClocklineClock(seed),
        "lru" => Policy::Lru,
        "opt" | "belady" => Policy::Opt,
        "quick_cache" | "quick-cache" | "quickcache" => Policy::QuickCache,
        "moka" => Policy::Moka,
        other => return Err(format!("unknown policy {other:?}")),
    })
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        traces: Vec::new(),
        original: false,
        format: None,
        capacities: None,
        policies: Vec::new(),
        csv: None,
        threads: hit_ratio::all_threads(),
        seed: 0,
        sizes: None,
    };
    let mut policies: Option<String> = None;
    let mut it = std::env::args().skip(1).peekable();
    while let Some(a) = it.next() {
        if a == "--trace" {
            // One value or more: `--trace a --trace b` and `--trace a b` both work.
            args.traces.push(it.next().ok_or("--trace needs a value")?);
            while let Some(more) = it.next_if(|x| !x.starts_with("--")) {
                args.traces.push(more);
            }
            continue;
        }
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--original" => args.original = true,
            "--format" => {
                let f = value("--format")?;
                args.format = Some(Format::from_name(&f).ok_or(format!("unknown format {f:?}"))?);
            }
            "--capacities" => {
                let caps: Vec<u64> = parse_list(&value("--capacities")?, "--capacities")?;
                if caps.is_empty() || caps.contains(&0) {
                    return Err("--capacities: give positive numbers".into());
                }
                args.capacities = Some(caps);
            }
            "--policies" => policies = Some(value("--policies")?),
            "--csv" => args.csv = Some(PathBuf::from(value("--csv")?)),
            "--threads" => {
                args.threads = value("--threads")?
                    .parse()
                    .map_err(|_| "--threads: a number")?
            }
            "--seed" => args.seed = value("--seed")?.parse().map_err(|_| "--seed: a number")?,
            "--sizes" => {
                let v = value("--sizes")?;
                let (min, max) = v
                    .split_once('-')
                    .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
                    .filter(|&(a, b): &(u64, u64)| 0 < a && a <= b)
                    .ok_or(format!("--sizes: MIN-MAX with 0 < MIN <= MAX, not {v:?}"))?;
                args.sizes = Some(Sizes { min, max, seed: 0 });
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    args.policies = match policies {
        Some(list) => list
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(|p| parse_policy(p, args.seed))
            .collect::<Result<_, _>>()?,
        None => ["clockline", "lru", "opt", "quick_cache", "moka"]
            .iter()
            .map(|p| parse_policy(p, args.seed))
            .collect::<Result<_, _>>()?,
    };
    if args.policies.is_empty() {
        return Err("--policies: name at least one".into());
    }
    if args.sizes.is_some() && args.policies.contains(&Policy::Opt) {
        args.policies.retain(|&p| p != Policy::Opt);
        eprintln!("note: --sizes: OPT left out (Belady's MIN is optimal only for equal sizes)");
    }
    Ok(args)
}

/// The traces folder (originals) and its `normalized/` copies, either of which may be absent.
fn folders() -> (Option<PathBuf>, Option<PathBuf>) {
    let Some(normalized) = hit_ratio::traces_dir() else {
        return (None, None);
    };
    if normalized.file_name().is_some_and(|n| n == "normalized") {
        let originals = normalized.parent().map(Path::to_path_buf);
        (originals, Some(normalized))
    } else {
        (Some(normalized.clone()), Some(normalized))
    }
}

/// The original-format file of trace `name` in `dir`: a file whose name without its suffixes
/// is `name` and whose format is not `normalized`.
fn original_file(dir: &Path, name: &str) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && trace_formats::trace_name(p) == name)
        .filter(|p| Format::detect(p).is_some_and(|f| f != Format::Normalized))
        .collect();
    found.sort();
    found.into_iter().next()
}

/// Where each trace of the command line (or every trace) is, and in which format.
fn resolve(args: &Args) -> Result<Vec<(String, PathBuf, Option<Format>)>, String> {
    let (originals, normalized) = folders();
    let named = |name: &str| -> Option<PathBuf> {
        let norm = normalized
            .as_ref()
            .map(|d| d.join(format!("{name}.keys.bin.gz")))
            .filter(|p| p.is_file());
        let orig = originals.as_ref().and_then(|d| original_file(d, name));
        if args.original {
            orig.or(norm)
        } else {
            norm.or(orig)
        }
    };
    let mut out = Vec::new();
    if args.traces.is_empty() {
        let Some(dir) = &normalized else {
            return Ok(out);
        };
        let mut names: Vec<String> = hit_ratio::REFERENCES
            .iter()
            .map(|(n, _)| n.to_string())
            .collect();
        let mut extra: Vec<String> = std::fs::read_dir(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let f = e.file_name().to_string_lossy().into_owned();
                f.strip_suffix(".keys.bin.gz").map(str::to_owned)
            })
            .filter(|n| !names.contains(n))
            .collect();
        extra.sort();
        names.extend(extra);
        for name in names {
            match named(&name) {
                Some(path) => out.push((name, path, None)),
                None => println!("  {name}: not found, skipped"),
            }
        }
        return Ok(out);
    }
    for t in &args.traces {
        let as_path = Path::new(t);
        if as_path.is_file() {
            let format = args.format.or_else(|| Format::detect(as_path));
            if format.is_none() {
                return Err(format!(
                    "{t}: cannot tell the format from the name; give --format"
                ));
            }
            out.push((trace_formats::trace_name(as_path), as_path.into(), format));
        } else if t.contains('/') {
            return Err(format!("{t}: no such file"));
        } else {
            let path = named(t).ok_or_else(|| match (&originals, &normalized) {
                (None, None) => {
                    format!("{t}: no traces folder (set CLOCKLINE_TRACES, or give a path)")
                }
                _ => format!("{t}: no such trace in the traces folder"),
            })?;
            out.push((t.clone(), path, None));
        }
    }
    Ok(out)
}

/// The capacities to replay `keys` at, with the README's values where it has a row for them.
fn rows(name: &str, keys: &[u64], args: &Args) -> Vec<Reference> {
    let readme = hit_ratio::references(name);
    let entry_rows = || match readme {
        Some(rows) => rows.to_vec(),
        None => hit_ratio::default_rows(keys),
    };
    match (&args.capacities, args.sizes) {
        (Some(caps), None) => caps
            .iter()
            .map(|&c| {
                let c = c as usize;
                readme
                    .and_then(|rows| rows.iter().find(|r| r.capacity == c).copied())
                    .unwrap_or(Reference::bare(c))
            })
            .collect(),
        (Some(caps), Some(_)) => caps.iter().map(|&c| Reference::bare(c as usize)).collect(),
        (None, None) => entry_rows(),
        (None, Some(sizes)) => {
            let mean = sizes.mean(keys);
            entry_rows()
                .iter()
                .map(|r| Reference::bare((r.capacity as f64 * mean).round() as usize))
                .collect()
        }
    }
}

fn distinct(keys: &[u64]) -> usize {
    keys.iter().collect::<HashSet<_>>().len()
}

fn short(name: &str) -> &str {
    match name {
        "corda-trace_vaultservice" => "corda",
        n => n,
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let sources = match resolve(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if sources.is_empty() {
        println!(
            "simulator: no traces (looked in $CLOCKLINE_TRACES or {}/../shared/traces)",
            env!("CARGO_MANIFEST_DIR")
        );
        return ExitCode::SUCCESS;
    }

    let t0 = Instant::now();
    let mut traces = Vec::new();
    for (name, path, format) in sources {
        let format = format.or_else(|| Format::detect(&path));
        let keys = match trace_formats::load_trace(&path, format) {
            Ok(k) => k,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        println!(
            "{name}: {} requests, {} distinct keys, from {} ({}){}",
            keys.len(),
            distinct(&keys),
            path.display(),
            format.map_or("?", Format::name),
            match args.sizes {
                Some(s) => format!("; mean size {:.0} bytes", s.mean(&keys)),
                None => String::new(),
            }
        );
        let rows = rows(&name, &keys, &args);
        traces.push(Trace::new(name, keys, rows));
    }
    let load_time = t0.elapsed();

    let mut jobs = Vec::new();
    for (t, trace) in traces.iter().enumerate() {
        for row in &trace.rows {
            for &policy in &args.policies {
                jobs.push(Job {
                    trace: t,
                    capacity: row.capacity,
                    policy,
                });
            }
        }
    }
    println!(
        "{} runs on {} threads{}",
        jobs.len(),
        args.threads,
        match args.sizes {
            Some(s) => format!(
                "; sizes log-uniform {}..={} bytes by key hash, capacities in bytes",
                s.min, s.max
            ),
            None => String::new(),
        }
    );
    let t1 = Instant::now();
    let results = hit_ratio::run_jobs(&traces, &jobs, None, args.threads, args.sizes);
    let wall = t1.elapsed();
    let cell = |t: usize, capacity: usize, policy: Policy| {
        jobs.iter()
            .position(|j| j.trace == t && j.capacity == capacity && j.policy == policy)
            .map(|i| results[i].0)
    };

    print_table(&traces, &args, &cell);

    if let Some(path) = &args.csv {
        let mut csv = String::from("trace,capacity,policy,hit_pct\n");
        for (t, trace) in traces.iter().enumerate() {
            for row in &trace.rows {
                for &p in &args.policies {
                    if let Some(Cell::Done(x)) = cell(t, row.capacity, p) {
                        let _ =
                            writeln!(csv, "{},{},{},{x:.4}", trace.name, row.capacity, p.name());
                    }
                }
            }
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Err(e) = std::fs::create_dir_all(dir) {
                eprintln!("error: {}: {e}", dir.display());
                return ExitCode::FAILURE;
            }
        }
        if let Err(e) = std::fs::write(path, csv) {
            eprintln!("error: {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", path.display());
    }

    let mut per_policy: Vec<(&str, Duration)> = Vec::new();
    for (job, (_, d)) in jobs.iter().zip(&results) {
        match per_policy.iter_mut().find(|(n, _)| *n == job.policy.name()) {
            Some((_, sum)) => *sum += *d,
            None => per_policy.push((job.policy.name(), *d)),
        }
    }
    let times: Vec<String> = per_policy
        .iter()
        .map(|(n, d)| format!("{n} {:.1}s", d.as_secs_f64()))
        .collect();
    println!(
        "time: load {:.1}s; replay, summed over runs: {}; replay wall {:.1}s on {} threads",
        load_time.as_secs_f64(),
        times.join(", "),
        wall.as_secs_f64(),
        args.threads,
    );
    ExitCode::SUCCESS
}

/// One row per (trace, capacity), one column per policy, hit ratios in percent. A `!` after LRU
/// or OPT: differs by more than 0.005 from the README's computed baseline for that row.
fn print_table(traces: &[Trace], args: &Args, cell: &dyn Fn(usize, usize, Policy) -> Option<Cell>) {
    let mut header = format!(
        "{:<14} {:>9}",
        "trace",
        if args.sizes.is_some() { "bytes" } else { "cap" }
    );
    for p in &args.policies {
        let _ = write!(header, " {:>12}", p.name());
    }
    let margin = args
        .policies
        .iter()
        .any(|p| matches!(p, Policy::Clockline(_)))
        && args.policies.contains(&Policy::Lru);
    if margin {
        let _ = write!(header, " {:>9}", "cl - LRU");
    }
    println!("{header}");
    let mut flagged = false;
    for (t, trace) in traces.iter().enumerate() {
        let n = trace.keys.len();
        for row in &trace.rows {
            let mut line = format!("{:<14} {:>9}", short(&trace.name), row.capacity);
            for &p in &args.policies {
                let c = cell(t, row.capacity, p).unwrap_or(Cell::NotRun);
                let baseline = match p {
                    Policy::Lru => row.lru_baseline,
                    Policy::Opt => row.opt_baseline,
                    _ => f64::NAN,
                };
                let off = !baseline.is_nan()
                    && args.sizes.is_none()
                    && (c.ratio() - baseline).abs() > 0.005 + 1e-9;
                flagged |= off;
                let _ = write!(line, " {:>11}{}", c.show(n), if off { "!" } else { " " });
            }
            if margin {
                let get = |p| cell(t, row.capacity, p).map_or(f64::NAN, Cell::ratio);
                let d = get(Policy::Clockline(args.seed)) - get(Policy::Lru);
                let _ = write!(
                    line,
                    " {:>9}",
                    if d.is_nan() {
                        "-".into()
                    } else {
                        format!("{d:+.2}")
                    }
                );
            }
            println!("{line}");
        }
    }
    if flagged {
        println!("!: differs from the README's computed baseline for this row");
    }
}
