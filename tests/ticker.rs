//! The default clock's ticker thread (`src/expiry.rs`, `ticker`): alone in its test binary,
//! because every cache with expiry on the default clock in the process shares it.
#![cfg(target_os = "linux")]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use clockline::Cache;

/// Thread ids of this process's threads named `clockline-ticker`.
fn tickers() -> HashSet<String> {
    let mut ids = HashSet::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        // `comm` keeps 15 bytes of the name.
        if "clockline-ticker".starts_with(comm.trim_end()) && comm.trim_end().len() == 15 {
            ids.insert(task.file_name().to_string_lossy().into_owned());
        }
    }
    ids
}

fn ttl_cache() -> Cache<u64, u64> {
    Cache::builder()
        .max_capacity(10)
        .time_to_live(Duration::from_secs(1))
        .build()
        .unwrap()
}

/// Short-lived caches built and dropped one after another share one ticker thread (it started
/// one for nearly each: 779 for 1,000 caches 2 ms apart, in the thread-churn dry run), and the
/// thread still stops once no cache needs it.
#[test]
fn the_ticker_outlives_short_gaps_and_stops_when_idle() {
    let mut seen = HashSet::new();
    for _ in 0..50 {
        let cache = ttl_cache();
        cache.insert(1, 1).unwrap();
        seen.extend(tickers());
        drop(cache);
        std::thread::sleep(Duration::from_millis(3));
    }
    assert_eq!(seen.len(), 1, "ticker threads started: {seen:?}");
    let start = Instant::now();
    while !tickers().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the ticker did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
