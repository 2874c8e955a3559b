//! Statistics (issue #3): every counter moves when it should, sums are exact under
//! concurrency, and a cache without `record_stats` has none.

mod common;

use std::sync::Arc;
use std::time::Duration;

use clockline::Cache;
use common::ManualClock;

#[test]
fn counters_follow_the_operations() {
    let clock = ManualClock::new();
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(4)
        .expiry()
        .clock(clock.clone())
        .record_stats()
        .build()
        .unwrap();
    cache.insert(1, 1).unwrap(); // insert
    cache.insert(1, 2).unwrap(); // update (replaced)
    assert_eq!(cache.get(&1), Some(2)); // hit
    assert_eq!(cache.get(&9), None); // miss
    cache.remove(&1); // removal
    cache.insert_with_ttl(2, 2, Duration::from_secs(1)).unwrap();
    clock.advance(Duration::from_secs(2));
    assert_eq!(cache.get(&2), None); // miss: expired
    assert_eq!(cache.purge_expired(), 1); // expiration
    for k in 10..16 {
        cache.insert(k, k).unwrap(); // 6 inserts, 2 evictions
    }
    cache.clear(); // 4 cleared
    let _ = cache.get_or_insert_with(20, || 20); // miss + load
    let _ = cache.try_get_or_insert_with(21, || Err::<u64, _>("no")); // miss + failed load
    let s = cache.stats().unwrap();
    assert_eq!((s.hits, s.misses), (1, 4));
    assert_eq!((s.inserts, s.updates), (9, 1));
    assert_eq!((s.replacements, s.removals, s.expirations), (1, 1, 1));
    assert_eq!((s.evictions, s.cleared), (2, 4));
    assert_eq!((s.loads_ok, s.loads_failed), (1, 1));
    assert!((s.hit_ratio() - 0.2).abs() < 1e-9);
}

#[test]
fn no_stats_unless_asked() {
    let cache: Cache<u64, u64> = Cache::new(10);
    cache.insert(1, 1).unwrap();
    cache.get(&1);
    assert_eq!(cache.stats(), None);
}

/// A cache of 1,000 with statistics, holding keys 0..500: a get of a key below 500 hits.
fn half_full_stats_cache() -> Arc<Cache<u64, u64>> {
    let cache: Arc<Cache<u64, u64>> = Arc::new(
        Cache::builder()
            .max_capacity(1000)
            .record_stats()
            .build()
            .unwrap(),
    );
    for k in 0..500 {
        cache.insert(k, k).unwrap();
    }
    cache
}

#[test]
fn striped_sums_are_exact_under_concurrency() {
    let cache = half_full_stats_cache();
    let threads: Vec<_> = (0..32)
        .map(|t| {
            let cache = cache.clone();
            std::thread::spawn(move || {
                for i in 0..2_500u64 {
                    cache.get(&((i * 7 + t) % 1000));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let s = cache.stats().unwrap();
    assert_eq!(s.hits + s.misses, 80_000);
    assert_eq!(s.hits, 41_084, "keys below 500 hit, the rest miss");
}

/// Threads end and new ones start while others count: a new thread takes an ended thread's
/// number, and with it the stripes that thread owned (src/stats.rs). Two live threads must
/// never hold one number (their plain, non-locked increments would lose counts), and no count
/// may be lost in the hand-over.
#[test]
fn counts_are_exact_while_threads_come_and_go() {
    let cache = half_full_stats_cache();
    // Eight lanes, each starting 40 short-lived threads one after another: 320 threads in all,
    // at most eight alive at once, so numbers are handed over all the time.
    let lanes: Vec<_> = (0..8u64)
        .map(|lane| {
            let cache = cache.clone();
            std::thread::spawn(move || {
                for round in 0..40u64 {
                    let cache = cache.clone();
                    std::thread::spawn(move || {
                        for i in 0..250u64 {
                            cache.get(&((i * 4 + lane + round) % 1000));
                        }
                    })
                    .join()
                    .unwrap();
                }
            })
        })
        .collect();
    for l in lanes {
        l.join().unwrap();
    }
    let s = cache.stats().unwrap();
    assert_eq!(s.hits + s.misses, 8 * 40 * 250, "no count lost");
    let hits: u64 = (0..8u64)
        .flat_map(|lane| (0..40u64).map(move |round| (lane, round)))
        .map(|(lane, round)| {
            (0..250u64)
                .filter(|i| (i * 4 + lane + round) % 1000 < 500)
                .count() as u64
        })
        .sum();
    assert_eq!(s.hits, hits, "keys below 500 hit, the rest miss");
}

/// A thread remembers the stripe of the last cache it counted in (src/stats.rs): switching
/// between caches, and a new cache where a dropped one was, must neither lose nor misplace a
/// count.
#[test]
fn a_thread_switching_caches_counts_into_each() {
    let build = || -> Cache<u64, u64> {
        Cache::builder()
            .max_capacity(16)
            .record_stats()
            .build()
            .unwrap()
    };
    for round in 0..4u64 {
        let (a, b) = (build(), build());
        a.insert(1, 1).unwrap();
        b.insert(1, 1).unwrap();
        for i in 0..100u64 {
            a.get(&1);
            if i % 3 == 0 {
                b.get(&2);
            }
            a.get(&1);
        }
        let (sa, sb) = (a.stats().unwrap(), b.stats().unwrap());
        assert_eq!(
            (sa.hits, sa.misses, sa.inserts),
            (200, 0, 1),
            "round {round}"
        );
        assert_eq!(
            (sb.hits, sb.misses, sb.inserts),
            (0, 34, 1),
            "round {round}"
        );
        drop(a); // the next round's caches may take its place in memory
    }
}

/// The hit ratio of counters near `u64::MAX` (they wrap, never saturate) is still a ratio:
/// `hits + misses` overflowed (0.0 in release builds, a panic in debug ones).
#[test]
fn the_hit_ratio_of_huge_counters_does_not_overflow() {
    let mut s = clockline::CacheStats::default();
    s.hits = u64::MAX;
    s.misses = 1;
    assert!(s.hit_ratio() > 0.99, "{}", s.hit_ratio());
    s.hits = 0;
    s.misses = u64::MAX;
    assert_eq!(s.hit_ratio(), 0.0);
}
