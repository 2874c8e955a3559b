//! Hardware counters per operation: instructions, cycles, L1D, LLC and dTLB read misses per
//! `get` hit, `get` miss and `insert`, for every contender, on one thread, next to the wall time
//! per operation.
//!
//! The workloads are those of `benches/common/per_op.rs` (also simulated by
//! `benches/cachesim.sh`): a cache of 2^20 entries (2^14 with `--quick`), filled; 2^18 Zipf 0.99
//! `get`s of resident keys; as many `get`s of keys never inserted; then a quarter as many
//! `insert`s of those keys into the full cache. All counters are one perf_event group, enabled
//! only around each measured loop, counting this thread in user space.
//!
//! Where the kernel refuses a counter (a VM without a PMU refuses all of them with ENOENT), one
//! line names the counter and the errno, the table shows "n/a" in its column, and the wall time
//! is still measured. `benches/cachesim.sh` gives deterministic simulated counts instead.

use std::collections::BTreeSet;
use std::hint::black_box;

use crate::common::counters::{self, Counters, Event, Row, FALLBACK};
use crate::common::per_op::{get_all, insert_all, PerOp, OPS};
use crate::common::{for_each_contender, Contender, Visit};

struct Measure<'a> {
    w: &'a PerOp,
    counters: &'a mut Counters,
    rows: Vec<(usize, Row)>,
}

impl Visit for Measure<'_> {
    fn visit<C: Contender>(&mut self) {
        let w = self.w;
        let cache: C = w.build();
        let hit_keys = w.hit_keys(&cache);
        let inserts = &w.miss_keys[..(w.miss_keys.len() / 4).max(1)];
        let (hits, hit) = self.counters.measure(|| get_all(&cache, &hit_keys));
        cache.settle();
        let (miss_hits, miss) = self.counters.measure(|| get_all(&cache, &w.miss_keys));
        cache.settle();
        let ((), insert) = self.counters.measure(|| insert_all(&cache, inserts));
        black_box((hits, miss_hits));
        if hits != hit_keys.len() || miss_hits != 0 {
            println!(
                "warning: {}: {hits} of {} measured hits hit, {miss_hits} misses hit",
                C::NAME,
                hit_keys.len()
            );
        }
        for (op, (reading, ops)) in [
            (hit, hit_keys.len()),
            (miss, w.miss_keys.len()),
            (insert, inserts.len()),
        ]
        .into_iter()
        .enumerate()
        {
            self.rows.push((
                op,
                Row {
                    labels: vec![OPS[op].to_string(), C::NAME.to_string()],
                    ops: ops as u64,
                    reading,
                },
            ));
        }
    }
}

pub fn run() {
    let (entries, accesses) = if crate::quick() {
        (1 << 14, 1 << 14)
    } else {
        (1 << 20, 1 << 18)
    };
    println!(
        "== hardware counters per operation: one thread, {entries} entries, {accesses} Zipf 0.99 \
         get-hits, {accesses} get-misses, {} inserts into the full cache ==",
        accesses / 4
    );
    let mut c = Counters::open(&Event::ALL);
    for u in c.unavailable() {
        println!("{u}");
    }
    if c.opened().is_empty() {
        println!("no hardware counter opened: wall time only; {FALLBACK}");
    } else if !c.unavailable().is_empty() {
        println!("{FALLBACK}");
    }
    let w = PerOp::new(entries, accesses);
    let mut m = Measure {
        w: &w,
        counters: &mut c,
        rows: Vec::new(),
    };
    for_each_contender(&mut m);
    let mut rows = m.rows;
    rows.sort_by_key(|r| r.0);
    let rows: Vec<Row> = rows.into_iter().map(|r| r.1).collect();
    // Failures that showed up only while measuring (a group never scheduled, a failed read),
    // once each: the ones from opening were printed above.
    let late: BTreeSet<String> = rows
        .iter()
        .flat_map(|r| r.reading.counts.iter())
        .filter_map(|(_, c)| c.as_ref().err())
        .filter(|u| !c.unavailable().contains(u))
        .map(|u| u.to_string())
        .collect();
    for u in &late {
        println!("{u}");
    }
    print!(
        "{}",
        counters::render(&["op", "contender"], &Event::ALL, &rows)
    );
}
