//! Writes the showdown's cache-aside keys as a trace the simulator reads, so that a policy's hit
//! ratio on Zipf can be compared with the other crates' in the same harness as the real traces
//! (docs/design.md, "Zipf, the showdown's cache-aside keys").
//!
//! ```text
//! cargo run --release --example zipf_trace -- /tmp/zipf.trace
//! cargo run --release --example simulator -- --trace /tmp/zipf.trace --format lirs \
//!     --capacities 131072 --policies clockline,clockline-clock,quick_cache,moka,lru
//! ```
//!
//! The keys are three rounds of the showdown's cache-aside workload: Zipf 0.99 over 2^20 ranks,
//! scattered over the key space (`benches/common`), 3 x 2^22 requests, seed 2, 864,334 distinct
//! keys. One key per line (the LIRS format).
use std::io::{BufWriter, Write};

#[path = "../benches/common/mod.rs"]
#[allow(dead_code)]
mod common;

fn main() -> std::io::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "zipf.trace".to_string());
    let keys = common::zipf_keys(1 << 20, common::ZIPF_S, 3 << 22, 2);
    let mut out = BufWriter::new(std::fs::File::create(&path)?);
    for k in &keys {
        writeln!(out, "{}", k)?;
    }
    out.flush()?;
    eprintln!("{} keys written to {path}", keys.len());
    Ok(())
}
