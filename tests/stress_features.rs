//! Issue #3's features under concurrency at once: four threads insert (plain, with a TTL,
//! versioned), invalidate, remove, read, purge and clear a small cache with expiry, versions,
//! statistics and a listener, while a fifth moves the injected clock. At the end every value
//! ever stored is either still cached or was reported to the listener exactly once, the table's
//! invariants hold, and the counters add up.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clockline::Cache;
use common::ManualClock;

/// Operations per thread: enough for the threads to overlap for a while in either profile.
const OPS: u64 = if cfg!(debug_assertions) {
    50_000
} else {
    500_000
};

#[test]
fn features_together_under_concurrency() {
    let clock = ManualClock::new();
    let reported: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let r = reported.clone();
    let cache: Arc<Cache<u64, u64>> = Arc::new(
        Cache::builder()
            .max_capacity(64)
            .time_to_live(Duration::from_millis(50))
            .clock(clock.clone())
            .versioned()
            .record_stats()
            .eviction_listener(move |_, v: &u64, _| *r.lock().unwrap().entry(*v).or_default() += 1)
            .build()
            .unwrap(),
    );
    let stored = Arc::new(Mutex::new(Vec::new()));
    let next_id = Arc::new(AtomicU64::new(1));
    let stop = Arc::new(AtomicBool::new(false));
    let ticker = {
        let (clock, stop) = (clock.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                clock.advance(Duration::from_millis(1));
                std::thread::yield_now();
            }
        })
    };
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let (cache, next_id, stored) = (cache.clone(), next_id.clone(), stored.clone());
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                let mut x = (t + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                for i in 0..OPS {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let key = x % 150;
                    let id = || next_id.fetch_add(1, Ordering::Relaxed);
                    match x % 100 {
                        0..=29 => {
                            let v = id();
                            cache.insert(key, v).unwrap();
                            mine.push(v);
                        }
                        30..=44 => {
                            let v = id();
                            cache
                                .insert_with_ttl(key, v, Duration::from_millis(x % 20))
                                .unwrap();
                            mine.push(v);
                        }
                        45..=59 => {
                            let v = id();
                            if cache.insert_versioned(key, v, x % 1000).is_ok() {
                                mine.push(v);
                            }
                        }
                        60..=64 => {
                            let _ = cache.invalidate_versioned(key, x % 1000);
                        }
                        65..=69 => {
                            cache.remove(&key);
                        }
                        70..=71 if i % 64 == 0 => {
                            cache.purge_expired();
                        }
                        72 if i % 1024 == 0 => cache.clear(),
                        _ => {
                            cache.get(&key);
                        }
                    }
                }
                stored.lock().unwrap().extend(mine);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    ticker.join().unwrap();

    assert_eq!(cache.check_invariants(), Ok(cache.len()));
    assert!(cache.len() <= 64);
    let reported = reported.lock().unwrap();
    if let Some((id, n)) = reported.iter().find(|(_, &n)| n != 1) {
        panic!("value {id} reported {n} times");
    }
    // Every stored value is reported once or still in the table (expired or not).
    let mut cached = Vec::new();
    let guard_clock_far_past = cache.pin();
    cached.extend(guard_clock_far_past.iter().map(|(_, v)| *v));
    drop(guard_clock_far_past);
    let expired_left = cache.len() - cached.len();
    let stored = stored.lock().unwrap();
    for v in &cached {
        assert!(
            !reported.contains_key(v),
            "value {v} is cached and was reported"
        );
    }
    assert_eq!(
        reported.len() + cache.len(),
        stored.len(),
        "stored {} = reported {} + held {} ({} of them expired)",
        stored.len(),
        reported.len(),
        cache.len(),
        expired_left
    );
    let s = cache.stats().unwrap();
    assert_eq!(
        s.evictions + s.expirations + s.removals + s.replacements + s.cleared,
        reported.len() as u64,
        "every report is counted once by cause: {s:?}"
    );
    assert_eq!(s.inserts + s.updates, stored.len() as u64);
}
