//! Whole-table sweeps, timed: `purge_expired` with nothing expired and with everything
//! expired, iteration over a full cache (summing values) and its `Drop`, on 2^20 entries (an injected clock moves time). Five
//! repetitions, medians in milliseconds.
//!
//! `cargo run --release --example sweep_probe`
//!
//! Used for the sweeps' prefetch (docs/benchmarks.md section 10(c)): build it at two commits and
//! run the two binaries in turn.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Manual(AtomicU64);

impl clockline::Clock for Manual {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::Relaxed))
    }
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let n = 1usize << 20;
    let (mut none, mut all, mut dropped, mut iterated) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..5 {
        let clock = Arc::new(Manual(AtomicU64::new(1)));
        let cache: clockline::Cache<u64, u64> = clockline::Cache::builder()
            .max_capacity(n)
            .time_to_live(Duration::from_secs(10))
            .clock(clock.clone())
            .build()
            .expect("cache");
        let mut x = 1u64;
        for _ in 0..n {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            cache.insert(x >> 1, 1).expect("no weigher");
        }
        let t = Instant::now();
        assert_eq!(cache.purge_expired(), 0);
        none.push(ms(t));
        clock.0.store(20_000_000_000, Ordering::Relaxed);
        let t = Instant::now();
        assert!(cache.purge_expired() > 0);
        all.push(ms(t));

        let full: clockline::Cache<u64, u64> = clockline::Cache::new(n);
        for i in 0..n as u64 {
            full.insert(i.wrapping_mul(0x9e37_79b9_7f4a_7c15), 1)
                .expect("no weigher");
        }
        let t = Instant::now();
        let sum: u64 = full.pin().iter().map(|(_, v)| *v).sum();
        iterated.push(ms(t));
        assert_eq!(sum, full.len() as u64);
        let t = Instant::now();
        drop(full);
        dropped.push(ms(t));
    }
    println!(
        "purge_expired, nothing expired: {:.1} ms; everything expired: {:.1} ms; iteration of a \
         full cache: {:.1} ms; its drop: {:.1} ms (medians of 5, {n} entries)",
        median(none),
        median(all),
        median(iterated),
        median(dropped)
    );
}
