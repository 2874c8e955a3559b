//! Single-threaded behaviour of the public API.

use clockline::{BuildError, Cache, InsertErrorKind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[test]
fn insert_get_replace_remove() {
    let cache: Cache<u64, String> = Cache::new(100);
    assert!(cache.is_empty());
    cache.insert(1, "a".into()).unwrap();
    assert_eq!(cache.get(&1).as_deref(), Some("a"));
    cache.insert(1, "b".into()).unwrap();
    assert_eq!(cache.get(&1).as_deref(), Some("b"));
    assert_eq!(cache.len(), 1);
    assert!(cache.contains_key(&1));
    assert_eq!(cache.peek(&1).as_deref(), Some("b"));
    assert_eq!(cache.remove(&1).as_deref(), Some("b"));
    assert_eq!(cache.remove(&1), None);
    assert_eq!(cache.get(&1), None);
    assert_eq!(cache.len(), 0);
    cache.check_invariants().unwrap();
}

#[test]
fn borrowed_lookups() {
    let cache: Cache<String, u32> = Cache::new(10);
    cache.insert("key".to_string(), 5).unwrap();
    assert_eq!(cache.get("key"), Some(5));
    let pinned = cache.pin();
    assert_eq!(pinned.get("key"), Some(&5));
    assert_eq!(pinned.iter().count(), 1);
    assert_eq!(pinned.remove("key"), Some(&5));
    assert_eq!(pinned.get("key"), None);
}

/// A fixed hasher seed: with the random default, 1 in 1,000 seeds (20 of 20,000) lets the
/// adaptive default evict a hot key of this 100-entry cache (read every 20 inserts), which made
/// this test fail at random (CI, 2026-11-28, under ThreadSanitizer; the build before the day's
/// changes fails as often: 6 of 6,000 runs each). In a table of ~140 slots at load 0.71, two of
/// five failing seeds studied lost the key to a full neighbourhood's eviction (the first
/// unmarked entry goes, which can be a hot entry whose mark the hand has just cleared);
/// ranking that eviction (newcomers first) left 13 of 20,000 seeds failing and cost 0.72 points
/// summed over the simulator's points, so it was not kept (docs/design.md, *Neighbourhoods
/// and spill bits*).
#[test]
fn count_bound_holds_and_hot_entries_survive() {
    let cache: Cache<u64, u64, ahash::RandomState> = Cache::builder()
        .max_capacity(100)
        .hasher(ahash::RandomState::with_seeds(1, 2, 3, 4))
        .build()
        .unwrap();
    for i in 0..100 {
        cache.insert(i, i).unwrap();
    }
    // While everything is marked, CLOCK is FIFO for one turn of the hand (as LRU is not);
    // after that turn, keys read between evictions must stay.
    for k in 200..300 {
        cache.insert(k, k).unwrap();
    }
    // Each hot key is read right after its insert: a new entry may start unmarked, and the
    // next insert's eviction may reach it before any read marks it.
    for k in 0..10 {
        cache.insert(k, k).unwrap();
        assert_eq!(cache.get(&k), Some(k));
    }
    for round in 0..50u64 {
        // Keep 0..10 hot while a stream of one-off keys passes through.
        for k in 0..10 {
            assert_eq!(
                cache.get(&k),
                Some(k),
                "hot key {k} evicted in round {round}"
            );
        }
        for j in 0..20 {
            let k = 1000 + round * 20 + j;
            cache.insert(k, k).unwrap();
            assert!(cache.len() <= 100);
        }
    }
    // At most 100; an insert whose 28-slot neighbourhood is full evicts there even when the
    // cache is below capacity, which is common in a table this small.
    let n = cache.check_invariants().unwrap();
    assert!((80..=100).contains(&n), "{n} entries");
}

#[test]
fn weight_bound_and_too_heavy() {
    // CLOCK admits whatever fits; the adaptive policy may refuse a heavy newcomer that would
    // displace many entries (InsertErrorKind::Rejected, tests/policy.rs).
    let cache: Cache<u32, Vec<u8>> = Cache::builder()
        .max_weight(100)
        .weigher(|_, v: &Vec<u8>| v.len() as u64)
        .policy(clockline::Policy::Clock)
        .build()
        .unwrap();
    for i in 0..50 {
        cache.insert(i, vec![0; 7]).unwrap();
        assert!(cache.weight() <= 100);
    }
    let before = cache.len();
    let err = cache.insert(999, vec![0; 101]).unwrap_err();
    assert_eq!(
        err.kind,
        InsertErrorKind::TooHeavy {
            weight: 101,
            max_weight: 100
        }
    );
    assert_eq!(err.key, 999);
    assert_eq!(cache.len(), before, "a refused entry evicts nothing");
    // Exactly the whole budget fits, after evicting everything else.
    cache.insert(1000, vec![0; 100]).unwrap();
    assert_eq!(cache.weight(), 100);
    assert_eq!(cache.len(), 1);
    // Replacing with a lighter value gives weight back.
    cache.insert(1000, vec![0; 10]).unwrap();
    assert_eq!(cache.weight(), 10);
    cache.check_invariants().unwrap();
}

#[test]
fn builder_errors() {
    let e = Cache::<u8, u8>::builder()
        .max_capacity(0)
        .build()
        .unwrap_err();
    assert_eq!(e, BuildError::ZeroCapacity);
    assert!(e.to_string().contains("at least 1"));
    let e = Cache::<u8, u8>::builder()
        .max_weight(0)
        .weigher(|_, _| 1)
        .build()
        .unwrap_err();
    assert_eq!(e, BuildError::ZeroWeight);
    assert_eq!(
        Cache::<u8, u8>::builder().build().unwrap_err(),
        BuildError::NoBound
    );
    assert_eq!(
        Cache::<u8, u8>::builder()
            .max_weight(5)
            .build()
            .unwrap_err(),
        BuildError::WeigherMismatch
    );
    assert!(matches!(
        Cache::<u8, u8>::builder().max_capacity(usize::MAX).build(),
        Err(BuildError::CapacityTooLarge { .. })
    ));
    assert!(matches!(
        Cache::<u8, u8>::builder()
            .max_weight(u64::MAX)
            .weigher(|_, _| 1)
            .build(),
        Err(BuildError::WeightTooLarge { .. })
    ));
}

#[test]
#[should_panic(expected = "max_capacity must be at least 1")]
fn new_zero_panics_with_message() {
    let _ = Cache::<u8, u8>::new(0);
}

struct Counted(Arc<AtomicUsize>);
impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Deferred drops run when the global epoch advances, which other tests' pinned threads can
/// hold back for a moment: flush until `done` or a minute has passed.
fn settle(done: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    while !done() && start.elapsed() < std::time::Duration::from_secs(60) {
        clockline::flush_deferred();
        std::thread::yield_now();
    }
}

#[test]
fn every_value_dropped_once() {
    let drops = Arc::new(AtomicUsize::new(0));
    let cache: Cache<u64, Counted> = Cache::new(50);
    for i in 0..200 {
        cache.insert(i % 80, Counted(drops.clone())).unwrap();
    }
    cache.pin().remove(&3);
    cache.clear();
    assert_eq!(cache.len(), 0);
    for i in 0..30 {
        cache.insert(i, Counted(drops.clone())).unwrap();
    }
    drop(cache);
    settle(|| drops.load(Ordering::SeqCst) >= 230);
    assert_eq!(drops.load(Ordering::SeqCst), 230);
}

#[test]
fn debug_and_send_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Cache<String, Vec<u8>>>();
    let cache: Cache<u8, u8> = Cache::new(3);
    let s = format!("{cache:?}");
    assert!(s.contains("capacity: 3"), "{s}");
}

#[test]
fn weighted_cache_without_capacity_grows_instead_of_evicting() {
    let cache: Cache<u64, u64> = Cache::builder()
        .max_weight(300_000)
        .weigher(|_, _| 10)
        .build()
        .unwrap();
    let initial = cache.capacity();
    for i in 0..20_000 {
        cache.insert(i, i).unwrap();
    }
    assert!(cache.capacity() >= 20_000, "capacity {}", cache.capacity());
    assert!(cache.capacity() > initial);
    assert_eq!(cache.len(), 20_000, "nothing evicted while the weight fits");
    for i in 0..20_000 {
        assert_eq!(cache.peek(&i), Some(i));
    }
    // Now the weight binds: 30_000 entries of weight 10 fill the budget exactly.
    for i in 20_000..50_000 {
        cache.insert(i, i).unwrap();
        assert!(cache.weight() <= 300_000);
    }
    assert_eq!(cache.weight(), 300_000);
    assert_eq!(cache.check_invariants().unwrap(), 30_000);
}

#[test]
fn readers_never_miss_while_the_table_grows() {
    use std::sync::atomic::AtomicU64;
    let cache: Arc<Cache<u64, u64>> = Arc::new(
        Cache::builder()
            .max_weight(1 << 40)
            .weigher(|_, _| 1)
            .build()
            .unwrap(),
    );
    let published = Arc::new(AtomicU64::new(0));
    let reader = {
        let (cache, published) = (cache.clone(), published.clone());
        std::thread::spawn(move || {
            let mut checks = 0u64;
            loop {
                let n = published.load(Ordering::Acquire);
                if n == u64::MAX {
                    return checks;
                }
                for k in n.saturating_sub(64)..n {
                    assert_eq!(cache.get(&k), Some(k * 3), "key {k} of {n} lost");
                    checks += 1;
                }
            }
        })
    };
    for k in 0..50_000u64 {
        cache.insert(k, k * 3).unwrap();
        published.store(k + 1, Ordering::Release);
    }
    published.store(u64::MAX, Ordering::Release);
    assert!(reader.join().unwrap() > 0);
    assert_eq!(cache.check_invariants().unwrap(), 50_000);
}

/// A regression test for the probing disaster in the history of design.md: after heavy churn at
/// capacity, keys must stay near their homes. With unbounded probing and a hand that swept
/// memory in order, nearly every bucket ended up passed by displaced keys and a miss read
/// hundreds of lines. Now a lookup reads the home line plus one line per spill bit, and keys
/// live within 8 buckets of home by construction.
#[test]
fn probes_stay_short_after_churn() {
    let cap = 20_000;
    let cache: Cache<u64, u64> = Cache::new(cap);
    for k in 0..(5 * cap as u64) {
        cache
            .insert(k.wrapping_mul(0x9E37_79B9_7F4A_7C15), k)
            .unwrap();
    }
    let [entries, total_dist, spill_bits, buckets] = cache.probe_stats();
    assert_eq!(entries, cache.len());
    assert!(entries >= cap * 99 / 100, "{entries} entries");
    let lines_per_miss = 1.0 + spill_bits as f64 / buckets as f64;
    let mean_dist = total_dist as f64 / entries as f64;
    // Measured: 2.4 lines per miss and 0.9 buckets from home at 10^6 entries.
    assert!(
        lines_per_miss < 4.0,
        "a miss reads {lines_per_miss:.2} lines"
    );
    assert!(
        mean_dist < 2.0,
        "keys live {mean_dist:.2} buckets from home"
    );
}
