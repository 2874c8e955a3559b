//! Version-guarded updates (issue #3): a late, older update never overwrites a newer one, an
//! invalidation leaves a tombstone that refuses older inserts, tombstones are bounded, and the
//! T1/T2 and load/invalidate/stale-put races hold under concurrency.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};

use clockline::{BuildError, Cache, InsertErrorKind, Invalidation};

fn versioned(cap: usize) -> Cache<u64, u64> {
    Cache::builder()
        .max_capacity(cap)
        .versioned()
        .build()
        .unwrap()
}

#[test]
fn newer_wins_older_and_equal_are_stale() {
    let cache = versioned(10);
    cache.insert_versioned(1, 20, 2).unwrap();
    let e = cache.insert_versioned(1, 10, 1).unwrap_err();
    assert_eq!(
        e.kind,
        InsertErrorKind::Stale {
            version: 1,
            current: 2
        }
    );
    assert_eq!((e.key, e.value), (1, 10), "the pair comes back");
    let e = cache.insert_versioned(1, 21, 2).unwrap_err();
    assert_eq!(
        e.kind,
        InsertErrorKind::Stale {
            version: 2,
            current: 2
        }
    );
    cache.insert_versioned(1, 30, 3).unwrap();
    assert_eq!((cache.get(&1), cache.version_of(&1)), (Some(30), Some(3)));
}

#[test]
fn version_zero_and_max() {
    let cache = versioned(10);
    cache.insert_versioned(1, 1, 0).unwrap();
    assert!(
        cache.insert_versioned(1, 2, 0).is_err(),
        "0 is only for unknown keys"
    );
    cache.insert_versioned(1, 3, u64::MAX).unwrap();
    assert!(cache.insert_versioned(1, 4, u64::MAX).is_err());
    // A plain insert is unversioned (version 0) and any versioned insert replaces it.
    cache.insert(2, 5).unwrap();
    assert_eq!(cache.version_of(&2), Some(0));
    cache.insert_versioned(2, 6, 1).unwrap();
    assert_eq!(cache.get(&2), Some(6));
}

#[test]
fn invalidation_leaves_a_tombstone() {
    let cache = versioned(10);
    cache.insert_versioned(1, 10, 1).unwrap();
    assert_eq!(cache.invalidate_versioned(1, 2), Invalidation::Removed);
    assert_eq!(cache.get(&1), None);
    let e = cache.insert_versioned(1, 11, 1).unwrap_err();
    assert_eq!(
        e.kind,
        InsertErrorKind::Stale {
            version: 1,
            current: 2
        }
    );
    assert!(
        cache.insert_versioned(1, 12, 2).is_err(),
        "equal to the tombstone"
    );
    cache.insert_versioned(1, 13, 3).unwrap();
    assert_eq!(
        cache.invalidate_versioned(1, 3),
        Invalidation::Stale { current: 3 }
    );
    assert_eq!(
        cache.get(&1),
        Some(13),
        "an older invalidation leaves a newer entry"
    );
    assert_eq!(cache.invalidate_versioned(7, 5), Invalidation::Absent);
    assert!(cache.insert_versioned(7, 1, 4).is_err());
}

#[test]
fn unversioned_caches_say_so() {
    let cache: Cache<u64, u64> = Cache::new(10);
    let e = cache.insert_versioned(1, 1, 1).unwrap_err();
    assert_eq!(e.kind, InsertErrorKind::NotVersioned);
    assert_eq!(cache.invalidate_versioned(1, 1), Invalidation::NotVersioned);
    assert_eq!(cache.version_of(&1), None);
    let b = || Cache::<u64, u64>::builder().max_capacity(10);
    assert_eq!(
        b().max_tombstones(5).build().unwrap_err(),
        BuildError::TombstonesWithoutVersions
    );
    assert_eq!(
        b().versioned().max_tombstones(0).build().unwrap_err(),
        BuildError::ZeroTombstones
    );
}

#[test]
fn tombstones_are_bounded() {
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(100)
        .versioned()
        .max_tombstones(64)
        .build()
        .unwrap();
    for k in 0..10_000 {
        cache.invalidate_versioned(k, 1);
    }
    assert!(
        cache.tombstones() <= 64,
        "{} tombstones",
        cache.tombstones()
    );
    // The newest ones are kept (FIFO).
    assert!(cache.insert_versioned(9_999, 1, 1).is_err());
    assert!(
        cache.insert_versioned(0, 1, 1).is_ok(),
        "the oldest was dropped"
    );
}

#[test]
fn an_evicted_entry_leaves_its_version_behind() {
    // CLOCK: a stream of new keys evicts the old entry. (The adaptive policy would keep it:
    // one-time keys lose the admission contest; tests/policy.rs.)
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(4)
        .versioned()
        .policy(clockline::Policy::Clock)
        .build()
        .unwrap();
    cache.insert_versioned(1, 10, 5).unwrap();
    for k in 100..120 {
        cache.insert(k, k).unwrap();
    }
    assert_eq!(cache.get(&1), None, "evicted");
    let e = cache.insert_versioned(1, 9, 4).unwrap_err();
    assert_eq!(
        e.kind,
        InsertErrorKind::Stale {
            version: 4,
            current: 5
        }
    );
    cache.insert_versioned(1, 11, 6).unwrap();
}

/// T1/T2: notifications for many keys arrive in both orders on two threads at once. Whatever
/// the interleaving, each key ends with its newest value.
#[test]
fn t1_t2_reordered_notifications_under_concurrency() {
    const KEYS: u64 = 500;
    const VERSIONS: u64 = 20;
    for round in 0..4 {
        let cache = Arc::new(versioned(2 * KEYS as usize));
        let start = Arc::new(Barrier::new(2));
        let threads: Vec<_> = [false, true]
            .into_iter()
            .map(|reverse| {
                let (cache, start) = (cache.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    for i in 0..VERSIONS {
                        let v = if reverse { VERSIONS - i } else { i + 1 };
                        for k in 0..KEYS {
                            let _ = cache.insert_versioned(k, v * 1000 + k, v);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        for k in 0..KEYS {
            assert_eq!(
                cache.get(&k),
                Some(VERSIONS * 1000 + k),
                "round {round}: key {k} lost its newest version"
            );
        }
    }
}

/// The cache-aside race: a loader reads version n from the source and puts it late; meanwhile
/// a writer moves the source to n+1 and invalidates with n+1. The cache must never end up
/// holding version n after the invalidation.
#[test]
fn load_invalidate_stale_put_race() {
    let cache = Arc::new(versioned(64));
    for round in 0..2000u64 {
        let key = round % 16;
        let source = Arc::new(AtomicU64::new(round * 2 + 1));
        let go = Arc::new(Barrier::new(2));
        let loader = {
            let (cache, source, go) = (cache.clone(), source.clone(), go.clone());
            std::thread::spawn(move || {
                let v = source.load(Ordering::SeqCst);
                go.wait();
                let _ = cache.insert_versioned(key, v, v);
            })
        };
        let writer = {
            let (cache, source, go) = (cache.clone(), source.clone(), go.clone());
            std::thread::spawn(move || {
                go.wait();
                let v = source.fetch_add(1, Ordering::SeqCst) + 1;
                cache.invalidate_versioned(key, v);
            })
        };
        loader.join().unwrap();
        writer.join().unwrap();
        let newest = source.load(Ordering::SeqCst);
        if let Some(v) = cache.get(&key) {
            assert!(
                v >= newest,
                "round {round}: stale version {v} survived invalidation {newest}"
            );
        }
    }
}
