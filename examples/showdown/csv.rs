//! CSV output of the showdown (`--csv PATH`), read by `cargo run --release --example plots`.
//!
//! Throughput rows, from `--only throughput` and `--only sweep`:
//! `machine,workload,zipf,read_pct,threads,contender,mops`, where `read_pct` is empty for
//! cache-aside (its inserts follow its misses) and `mops` is the median of the interleaved
//! rounds in millions of operations per second, all threads together. Fields never contain
//! commas or quotes; `machine` says where the row was measured (see [`machine`]).

use std::fmt::Write as _;
use std::io;
use std::path::Path;

/// One median of the throughput section or the sweep.
#[derive(Debug, Clone)]
pub struct ThroughputRow {
    pub workload: String,
    pub zipf: f64,
    /// `None` for cache-aside.
    pub read_pct: Option<u32>,
    pub threads: usize,
    pub contender: &'static str,
    pub mops: f64,
}

/// A short name for this machine: `$CLOCKLINE_MACHINE` if set, else "<cores>-core <CPU model>"
/// from `/proc/cpuinfo` (Linux), with anything that could break a CSV field or a title removed.
pub fn machine() -> String {
    if let Ok(m) = std::env::var("CLOCKLINE_MACHINE") {
        if !m.trim().is_empty() {
            return clean(&m);
        }
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    clean(&format!("{cores}-core {model}"))
}

/// Drops commas, quotes and line breaks, and squeezes runs of spaces.
fn clean(s: &str) -> String {
    s.replace([',', '"', '\n', '\r'], " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Writes `header` and `lines` (each without its line break) to `path`, creating its folder.
pub fn write_lines(path: &Path, header: &str, lines: &[String]) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut out = String::with_capacity(64 * (lines.len() + 1));
    out += header;
    out.push('\n');
    for l in lines {
        out += l;
        out.push('\n');
    }
    std::fs::write(path, out)
}

/// Writes throughput rows to `path` (see the module docs) and says so.
pub fn write_throughput(path: &Path, rows: &[ThroughputRow]) -> io::Result<()> {
    let machine = machine();
    let lines: Vec<String> = rows
        .iter()
        .map(|r| {
            let mut l = String::new();
            let read = r.read_pct.map(|p| p.to_string()).unwrap_or_default();
            // Writing to a String cannot fail.
            let _ = write!(
                l,
                "{machine},{},{},{read},{},{},{:.3}",
                r.workload, r.zipf, r.threads, r.contender, r.mops
            );
            l
        })
        .collect();
    write_lines(
        path,
        "machine,workload,zipf,read_pct,threads,contender,mops",
        &lines,
    )?;
    println!("   wrote {} rows to {}", rows.len(), path.display());
    Ok(())
}
