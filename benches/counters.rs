//! Hardware counters per operation under criterion: a custom `Measurement` over one perf_event
//! counter, one criterion run per counter.
//!
//! ```text
//! cargo bench --bench counters                    # instructions and L1D read misses, ~1 minute
//! CLOCKLINE_COUNTERS=all cargo bench --bench counters
//! CLOCKLINE_COUNTERS=cycles,dTLB-read-miss cargo bench --bench counters -- get-hit/clockline
//! CLOCKLINE_BENCH_QUICK=1 cargo bench --bench counters -- --quick   # smoke run
//! ```
//!
//! Counters: instructions, cycles, L1D-read-miss, LLC-read-miss, dTLB-read-miss (or `all`).
//! Benchmarks are named `<counter>/<op>/<contender>` and criterion reports the counter's events
//! per operation (one iteration is one operation, on this thread, in user space). The workloads
//! are those of `benches/common/per_op.rs`, as in `showdown --only counters` and
//! `benches/cachesim.sh`: a cache of 2^20 entries (2^14 with `CLOCKLINE_BENCH_QUICK`), filled;
//! `get`s of resident keys in Zipf 0.99 order; `get`s of keys never inserted; then `insert`s of
//! fresh keys into the full cache. The insert keys cycle through 4 x capacity distinct keys, so
//! each one has long been evicted when it comes back; papaya, which never evicts, grows to 5 x
//! capacity and then updates. Each insert computes its key (a few instructions, counted).
//!
//! Where the kernel refuses a counter, one line names it with the errno and its benchmarks are
//! skipped. If none opens (a VM without a PMU: ENOENT), the same benchmarks run under wall time,
//! as `wall-time/<op>/<contender>`, and `benches/cachesim.sh` gives simulated counts.

// Shared with the showdown example; each target uses a different part of it.
#[allow(dead_code)]
mod common;

use std::cell::{OnceCell, RefCell};
use std::time::Duration;

use common::counters::{Event, Single, Snapshot, FALLBACK};
use common::per_op::{PerOp, OPS};
use common::{for_each_contender, key_of_rank, Contender, Visit};
use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{BenchmarkId, Criterion, Throughput};

/// Counters measured by default: the instruction count and the L1D misses the target is about.
const DEFAULT_EVENTS: [Event; 2] = [Event::Instructions, Event::L1dReadMiss];

/// A criterion measurement that counts one hardware event on the benchmarking thread.
struct Perf {
    counter: RefCell<Single>,
    unit: Unit,
}

/// Formats counts with the event's name as the unit, unscaled.
struct Unit(&'static str);

impl Perf {
    fn new(counter: Single) -> Self {
        let unit = Unit(counter.event().name());
        Self {
            counter: RefCell::new(counter),
            unit,
        }
    }

    fn snapshot(&self) -> Snapshot {
        let mut counter = self.counter.borrow_mut();
        counter.snapshot().unwrap_or_else(|u| fail(&u.to_string()))
    }
}

/// A counter that opened and read fine once and then fails: the results would be wrong, so stop
/// (without a panic, and without printing counts that were not measured).
fn fail(why: &str) -> ! {
    eprintln!("counters bench: {why}; stopping, the results would be wrong");
    std::process::exit(1)
}

impl Measurement for Perf {
    type Intermediate = Snapshot;
    type Value = u64;

    fn start(&self) -> Snapshot {
        self.snapshot()
    }

    fn end(&self, start: Snapshot) -> u64 {
        let end = self.snapshot();
        let counter = self.counter.borrow();
        counter
            .between(start, end)
            .unwrap_or_else(|u| fail(&u.to_string()))
    }

    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }

    fn zero(&self) -> u64 {
        0
    }

    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        &self.unit
    }
}

impl ValueFormatter for Unit {
    fn scale_values(&self, _typical: f64, _values: &mut [f64]) -> &'static str {
        self.0
    }

    fn scale_throughputs(
        &self,
        _typical: f64,
        throughput: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        // Events per element (or byte): this bench sets no throughput, but stays correct if one
        // is added.
        let n = match *throughput {
            Throughput::Elements(n)
            | Throughput::Bytes(n)
            | Throughput::BytesDecimal(n)
            | Throughput::Bits(n)
            | Throughput::ElementsAndBytes { elements: n, .. } => n,
        };
        for v in values {
            *v /= n.max(1) as f64;
        }
        self.0
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        self.0
    }
}

/// Runs the three operations of every contender under measurement `M`, as `<group>/<op>/<name>`.
struct Bench<'a, M: Measurement> {
    c: &'a mut Criterion<M>,
    group: &'a str,
    w: &'a PerOp,
}

impl<M: Measurement> Visit for Bench<'_, M> {
    fn visit<C: Contender>(&mut self) {
        let w = self.w;
        // Built by the first benchmark of this contender that runs: none when a filter on the
        // command line leaves all of them out.
        let state: OnceCell<(C, Vec<u64>)> = OnceCell::new();
        let init = || {
            let cache: C = w.build();
            let hit_keys = w.hit_keys(&cache);
            (cache, hit_keys)
        };
        let mut g = self.c.benchmark_group(self.group);
        let mut i = 0;
        g.bench_function(BenchmarkId::new(OPS[0], C::NAME), |b| {
            let (cache, hit_keys) = state.get_or_init(init);
            b.iter(|| {
                i = if i + 1 < hit_keys.len() { i + 1 } else { 0 };
                cache.get(&hit_keys[i])
            })
        });
        let mut i = 0;
        g.bench_function(BenchmarkId::new(OPS[1], C::NAME), |b| {
            let (cache, _) = state.get_or_init(init);
            cache.settle();
            b.iter(|| {
                i = if i + 1 < w.miss_keys.len() { i + 1 } else { 0 };
                cache.get(&w.miss_keys[i])
            })
        });
        let ring = 4 * w.entries;
        let mut i = 0;
        g.bench_function(BenchmarkId::new(OPS[2], C::NAME), |b| {
            let (cache, _) = state.get_or_init(init);
            cache.settle();
            b.iter(|| {
                i = if i + 1 < ring { i + 1 } else { 0 };
                let k = key_of_rank(w.entries + i);
                cache.insert(k, k)
            })
        });
        g.finish();
    }
}

fn configure<M: Measurement>(c: Criterion<M>) -> Criterion<M> {
    c.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(1))
        .configure_from_args()
}

/// The counters to measure, from `CLOCKLINE_COUNTERS` ("instructions,cycles" or "all").
fn selected_events() -> Vec<Event> {
    let Ok(list) = std::env::var("CLOCKLINE_COUNTERS") else {
        return DEFAULT_EVENTS.to_vec();
    };
    if list.trim().eq_ignore_ascii_case("all") {
        return Event::ALL.to_vec();
    }
    list.split(',')
        .filter_map(|name| {
            let e = Event::from_name(name);
            if e.is_none() {
                let known: Vec<_> = Event::ALL.iter().map(|e| e.name()).collect();
                eprintln!(
                    "counters bench: unknown counter {name:?} ignored; known: {}, all",
                    known.join(", ")
                );
            }
            e
        })
        .collect()
}

fn main() {
    let (entries, accesses) = if std::env::var_os("CLOCKLINE_BENCH_QUICK").is_some() {
        (1 << 14, 1 << 14)
    } else {
        (1 << 20, 1 << 18)
    };
    let w = PerOp::new(entries, accesses);
    let mut measured = false;
    for event in selected_events() {
        match Single::open(event) {
            Ok(counter) => {
                measured = true;
                let mut c = configure(Criterion::default().with_measurement(Perf::new(counter)));
                for_each_contender(&mut Bench {
                    c: &mut c,
                    group: event.name(),
                    w: &w,
                });
                c.final_summary();
            }
            Err(u) => eprintln!("counters bench: {u}; its benchmarks are skipped"),
        }
    }
    if !measured {
        eprintln!(
            "counters bench: no hardware counter opened; running the same benchmarks under wall \
             time instead (wall-time/<op>/<contender>). {FALLBACK}"
        );
        let mut c: Criterion<WallTime> = configure(Criterion::default());
        for_each_contender(&mut Bench {
            c: &mut c,
            group: "wall-time",
            w: &w,
        });
        c.final_summary();
    }
}
