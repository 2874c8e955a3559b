//! A byte-bounded blob cache, as the dry run of `examples/blob_sim.rs` (2026-11-27) used it:
//! deterministic checks of its updates, refusals, growth and iteration.

use std::sync::{Arc, Mutex};

use clockline::{Cache, InsertErrorKind, Policy, RemovalCause};

type Log = Arc<Mutex<Vec<(u64, RemovalCause)>>>;

fn blob_cache(max_weight: u64, policy: Policy, log: &Log) -> Cache<u64, Vec<u8>> {
    let log = log.clone();
    Cache::builder()
        .max_weight(max_weight)
        .weigher(|_k: &u64, v: &Vec<u8>| v.len() as u64)
        .eviction_listener(move |k: &u64, _v: &Vec<u8>, c| log.lock().unwrap().push((*k, c)))
        .policy(policy)
        .record_stats()
        .build()
        .unwrap()
}

/// README, Guarantees: "An entry heavier than `max_weight` is refused with
/// `InsertErrorKind::TooHeavy` and evicts nothing", also for an update of a present key.
#[test]
fn an_entry_heavier_than_the_budget_is_too_heavy_and_evicts_nothing() {
    for policy in [Policy::Adaptive, Policy::Clock] {
        let log: Log = Arc::default();
        let cache = blob_cache(1000, policy, &log);
        for k in 0..10 {
            cache.insert(k, vec![k as u8; 100]).unwrap();
        }
        let e = cache.insert(99, vec![0; 1001]).unwrap_err();
        assert_eq!(
            e.kind,
            InsertErrorKind::TooHeavy {
                weight: 1001,
                max_weight: 1000
            }
        );
        let e = cache.insert(3, vec![0; 1001]).unwrap_err();
        assert!(matches!(e.kind, InsertErrorKind::TooHeavy { .. }));
        assert_eq!((cache.len(), cache.weight()), (10, 1000));
        assert_eq!(
            cache.get(&3),
            Some(vec![3; 100]),
            "the old value of an updated key stays"
        );
        assert!(log.lock().unwrap().is_empty(), "{:?}", log.lock().unwrap());
    }
}

/// README: "(an update of a present key never is [Rejected])": an update to the whole budget
/// of a cold key, in a cache of hot entries.
#[test]
fn an_update_to_the_whole_budget_evicts_the_others_and_replaces_its_key() {
    let log: Log = Arc::default();
    let cache = blob_cache(100, Policy::Adaptive, &log);
    for k in 0..10 {
        cache.insert(k, vec![0; 10]).unwrap();
    }
    for _ in 0..50 {
        for k in 1..10 {
            cache.get(&k);
        }
    }
    cache.insert(0, vec![0; 100]).unwrap();
    assert_eq!(cache.weight(), 100);
    assert_eq!(cache.len(), 1);
    let log = log.lock().unwrap();
    eprintln!("{log:?}");
    assert_eq!(
        log.iter()
            .filter(|(_, c)| *c == RemovalCause::Capacity)
            .count(),
        9
    );
    assert_eq!(
        log.iter()
            .filter(|(_, c)| *c == RemovalCause::Replaced)
            .count(),
        1
    );
}

/// A byte-bounded cache without `max_capacity`: `capacity()` is the table's current entry
/// bound (1024 at first), not a limit the user chose; it only grows.
#[test]
fn capacity_of_a_byte_bounded_cache_is_the_growing_table() {
    let log: Log = Arc::default();
    let cache = blob_cache(1 << 20, Policy::Clock, &log);
    assert_eq!(cache.capacity(), clockline::INITIAL_WEIGHTED_ENTRIES);
    for k in 0..5000 {
        cache.insert(k, vec![0; 100]).unwrap();
    }
    assert!(cache.capacity() >= 5000, "{}", cache.capacity());
    assert_eq!(cache.len(), 5000);
    cache.clear();
    assert!(
        cache.capacity() >= 5000,
        "never shrinks: {}",
        cache.capacity()
    );
}

/// Iteration keeps working while the same thread grows the table under it: the pass sees the
/// table it started on (frozen once replaced), every value intact, no entry twice.
#[test]
fn iteration_while_the_table_grows_under_it() {
    let log: Log = Arc::default();
    let cache = blob_cache(1 << 30, Policy::Clock, &log);
    for k in 0..1000u64 {
        cache.insert(k, vec![k as u8; 64]).unwrap();
    }
    let cap = cache.capacity();
    let p = cache.pin();
    let mut seen = std::collections::HashSet::new();
    let mut next = 1_000_000u64;
    for (k, v) in p.iter() {
        assert!(v.iter().all(|&b| b == *k as u8), "torn value for {k}");
        assert!(seen.insert(*k), "key {k} twice");
        for _ in 0..8 {
            p.insert(next, vec![next as u8; 64]).unwrap();
            next += 1;
        }
    }
    assert!(cache.capacity() > cap, "the table grew during the pass");
    assert!(
        seen.len() >= 1000,
        "a pass over the old table sees all it held"
    );
    assert!((0..1000).all(|k| seen.contains(&k)));
}

/// An update of a present key that needs the budget freed: the key's own old value is
/// evicted by the update's room-making and reported as `Capacity`, and the statistics count
/// the write as an insert of an absent key, where a user expects `Replaced` / `updates`
/// (`CacheStats::updates`: "Inserts that replaced a present key").
#[test]
fn an_update_that_needs_room_reports_its_old_value_as_replaced() {
    for policy in [Policy::Clock, Policy::Adaptive] {
        let log: Log = Arc::default();
        let cache = blob_cache(100, policy, &log);
        cache.insert(0, vec![0; 50]).unwrap();
        cache.insert(1, vec![1; 50]).unwrap();
        cache.insert(0, vec![0; 100]).unwrap();
        let log = log.lock().unwrap().clone();
        let st = cache.stats().unwrap();
        eprintln!(
            "{policy:?}: {log:?} inserts {} updates {}",
            st.inserts, st.updates
        );
        assert!(log.contains(&(1, RemovalCause::Capacity)), "{log:?}");
        assert!(
            log.contains(&(0, RemovalCause::Replaced)),
            "{policy:?}: {log:?}"
        );
        assert_eq!((st.inserts, st.updates), (2, 1), "{policy:?}");
    }
}

/// The same at scale, single-threaded: a full blob cache whose keys are rewritten with new
/// sizes. Counts the updates of a present key whose own old value the update evicted
/// (reported as `Capacity` to the listener during that very insert).
#[test]
fn rewrites_of_present_keys_do_not_evict_their_own_old_value() {
    let mut bad = Vec::new();
    for policy in [Policy::Clock, Policy::Adaptive] {
        let log: Log = Arc::default();
        let cache = blob_cache(1 << 20, policy, &log);
        let mut x = 88172645463325252u64;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let (mut updates, mut self_evicted) = (0, 0);
        for _ in 0..20_000 {
            let k = rnd() % 200;
            let len = 100 + (rnd() % 16_000) as usize;
            let present = cache.contains_key(&k);
            log.lock().unwrap().clear();
            let _ = cache.insert(k, vec![0; len]);
            if present {
                updates += 1;
                if log.lock().unwrap().contains(&(k, RemovalCause::Capacity)) {
                    self_evicted += 1;
                }
            }
        }
        let st = cache.stats().unwrap();
        eprintln!(
            "{policy:?}: {self_evicted} of {updates} updates of a present key evicted its own old value; stats updates {}",
            st.updates
        );
        bad.push((policy, self_evicted, updates));
    }
    assert!(bad.iter().all(|b| b.1 == 0), "{bad:?}");
}
