//! Small scenarios that walk every `unsafe` path of the crate: node allocation and the
//! per-thread pool, publication, replacement, removal, eviction under both policies, growth,
//! expiry, versions, compute, the loaders, iteration, the listener, `clear`, `Drop` and
//! `flush_deferred`. Sized to run under Miri (`ci/miri.sh`, which checks them for undefined
//! behaviour and data races) and in well under a second natively, where they run with every
//! other suite.
//!
//! Values are heap strings and boxed counters, so a read of a freed or torn value, a double
//! drop or a lost drop is something Miri (and the drop counts here) can see.

mod common;

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use clockline::{Cache, Compute, Computed, InsertErrorKind, Policy, RemovalCause};
use common::ledger::{Ledger, Val};
use common::ManualClock;

fn exercise(cache: &Cache<u64, Val>, ledger: &Ledger, keys: u64) {
    for k in 0..keys {
        let _ = cache.insert(k, ledger.val(k));
    }
    for k in 0..keys {
        // Replace half, read all: the replaced node goes through the epoch and the pool.
        if k % 2 == 0 {
            let _ = cache.insert(k, ledger.val(k));
        }
        if let Some(v) = cache.get(&k) {
            v.check(k);
        }
    }
    {
        let pinned = cache.pin();
        let mut seen = 0;
        for (k, v) in pinned.iter() {
            v.check(*k);
            seen += 1;
        }
        assert!(seen <= cache.capacity());
        if let Some(v) = pinned.get(&1) {
            v.check(1);
        }
        if let Some(v) = pinned.remove(&1) {
            v.check(1);
        }
    }
    if let Some(v) = cache.remove(&2) {
        v.check(2);
    }
    cache.check_invariants().unwrap();
}

#[test]
fn both_policies_insert_replace_evict_iterate_and_drop_everything_once() {
    for policy in [Policy::Adaptive, Policy::Clock] {
        let ledger = Ledger::new();
        let cache = Cache::builder()
            .max_capacity(8)
            .policy(policy)
            .build()
            .unwrap();
        exercise(&cache, &ledger, 24);
        assert!(cache.len() <= 8);
        cache.clear();
        assert!(cache.is_empty());
        exercise(&cache, &ledger, 12);
        drop(cache);
        ledger.settle();
    }
}

#[test]
fn a_weighted_cache_grows_evicts_by_weight_and_refuses_the_too_heavy() {
    let ledger = Ledger::new();
    let cache = Cache::builder()
        .max_weight(64)
        .weigher(|_: &u64, v: &Val| 1 + (v.key % 3))
        .build()
        .unwrap();
    exercise(&cache, &ledger, 40);
    assert!(cache.weight() <= 64);
    let heavy = Cache::builder()
        .max_weight(4)
        .weigher(|_: &u64, _: &Val| 5)
        .build()
        .unwrap();
    let err = heavy.insert(1, ledger.val(1)).unwrap_err();
    assert!(matches!(err.kind, InsertErrorKind::TooHeavy { .. }));
    drop(err);
    drop((cache, heavy));
    ledger.settle();
}

#[test]
fn expiry_versions_compute_loaders_and_the_listener() {
    let ledger = Ledger::new();
    let clock = ManualClock::new();
    let heard = Arc::new(Mutex::new(Vec::new()));
    let log = heard.clone();
    let cache = Cache::builder()
        .max_capacity(8)
        .time_to_live(Duration::from_secs(10))
        .clock(clock.clone())
        .versioned()
        .record_stats()
        .eviction_listener(move |k: &u64, v: &Val, cause| {
            v.check(*k);
            log.lock().unwrap().push((*k, cause));
        })
        .build()
        .unwrap();

    cache.insert_versioned(1, ledger.val(1), 5).unwrap();
    let stale = cache.insert_versioned(1, ledger.val(1), 4).unwrap_err();
    assert!(matches!(stale.kind, InsertErrorKind::Stale { .. }));
    drop(stale);
    let _ = cache.invalidate_versioned(1, 6);
    assert!(cache.get(&1).is_none());

    cache
        .insert_with_ttl(2, ledger.val(2), Duration::from_secs(1))
        .unwrap();
    clock.advance(Duration::from_secs(2));
    assert!(cache.get(&2).is_none());
    assert_eq!(cache.purge_expired(), 1);

    cache.get_or_insert_with(3, || ledger.val(3)).check(3);
    cache
        .try_get_or_insert_with_by_ref(&3, || Err::<Val, ()>(()))
        .unwrap()
        .check(3);

    let bump = |old: Option<&Val>| match old {
        Some(v) => Compute::Put(v.clone()),
        None => Compute::Put(ledger.val(4)),
    };
    assert_eq!(cache.compute(4, bump).unwrap(), Computed::Inserted);
    assert_eq!(cache.compute(4, bump).unwrap(), Computed::Updated);
    assert_eq!(
        cache.compute(4, |_| Compute::Remove).unwrap(),
        Computed::Removed
    );

    for k in 10..30 {
        cache.insert(k, ledger.val(k)).unwrap();
    }
    cache.clear();
    drop(cache);
    ledger.settle();

    let heard = heard.lock().unwrap();
    for cause in [
        RemovalCause::Replaced,
        RemovalCause::Expired,
        RemovalCause::Explicit,
        RemovalCause::Capacity,
        RemovalCause::Cleared,
    ] {
        assert!(
            heard.iter().any(|&(_, c)| c == cause),
            "no {cause} heard in {heard:?}"
        );
    }
}

#[test]
fn two_threads_write_read_and_evict_one_small_cache() {
    let ledger = Arc::new(Ledger::new());
    let cache = Arc::new(Cache::builder().max_capacity(6).build().unwrap());
    thread::scope(|s| {
        for t in 0..2u64 {
            let (cache, ledger) = (&cache, &ledger);
            s.spawn(move || {
                for i in 0..60u64 {
                    let k = (i * 7 + t * 3) % 10;
                    match i % 5 {
                        0 | 1 => {
                            let _ = cache.insert(k, ledger.val(k));
                        }
                        2 => {
                            if let Some(v) = cache.remove(&k) {
                                v.check(k);
                            }
                        }
                        3 => {
                            let pinned = cache.pin();
                            for (k, v) in pinned.iter() {
                                v.check(*k);
                            }
                        }
                        _ => {
                            if let Some(v) = cache.get(&k) {
                                v.check(k);
                            }
                        }
                    }
                    assert!(cache.len() <= 6);
                }
                clockline::flush_deferred();
            });
        }
    });
    cache.check_invariants().unwrap();
    drop(cache);
    ledger.settle();
}

/// Under Miri this takes 8 minutes (1,088 inserts and a growth): `MIRI_FULL=1 ci/miri.sh`.
#[test]
#[cfg_attr(miri, ignore)]
fn a_reader_beside_a_growing_table() {
    let ledger = Ledger::new();
    let cache = Cache::builder()
        .max_weight(1 << 20)
        .weigher(|_: &u64, _: &Val| 1)
        .build()
        .unwrap();
    // Past the first table's size, so the writer grows it while the reader reads.
    let n = clockline::INITIAL_WEIGHTED_ENTRIES as u64 + 64;
    thread::scope(|s| {
        s.spawn(|| {
            for k in 0..n {
                cache.insert(k, ledger.val(k)).unwrap();
            }
        });
        s.spawn(|| {
            for round in 0..4 {
                for k in (round..n).step_by(97) {
                    if let Some(v) = cache.get(&k) {
                        v.check(k);
                    }
                }
            }
        });
    });
    assert_eq!(cache.len() as u64, n);
    for k in (0..n).step_by(31) {
        cache.pin().get(&k).unwrap().check(k);
    }
    drop(cache);
    ledger.settle();
}
