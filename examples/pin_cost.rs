//! What one epoch pin costs a read hit: the read-hit workload of the benchmarks, one thread,
//! `Cache::get` (a pin per lookup) against one `Cache::pin()` handle for all lookups, with
//! quick_cache's `get` beside them. Five rounds; nanoseconds per lookup.
//!
//! `cargo run --release --example pin_cost`

#[path = "../benches/common/mod.rs"]
#[allow(dead_code)]
mod common;

use common::{Clockline, Contender, QuickCache, Sizes, Workload};
use std::hint::black_box;
use std::time::Instant;

fn per_lookup(n: usize, f: impl FnOnce() -> usize) -> f64 {
    let t = Instant::now();
    black_box(f());
    t.elapsed().as_nanos() as f64 / n as f64
}

fn main() {
    let w = Workload::read_hit(Sizes::FULL);
    let cl = <Clockline as Contender>::new(w.capacity, common::hasher());
    w.fill(&cl);
    let qc = <QuickCache as Contender>::new(w.capacity, common::hasher());
    w.fill(&qc);
    let n = w.keys.len();
    println!(
        "ns per lookup, {n} Zipf 0.99 lookups over {} resident keys",
        w.prefill
    );
    println!("round  clockline get  clockline pinned get  quick_cache get");
    for round in 0..5 {
        let get = per_lookup(n, || w.keys.iter().filter(|k| cl.get(*k).is_some()).count());
        let pinned = per_lookup(n, || {
            let p = cl.pin();
            w.keys.iter().filter(|k| p.get(*k).is_some()).count()
        });
        let quick = per_lookup(n, || {
            w.keys.iter().filter(|k| Contender::get(&qc, k)).count()
        });
        println!("{round:>5}  {get:>13.1}  {pinned:>20.1}  {quick:>15.1}");
    }
}
