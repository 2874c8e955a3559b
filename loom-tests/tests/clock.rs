//! Models of CLOCK eviction (`src/clock.rs`) racing with reads, inserts and replaces.
//!
//! Every writer holds the lock of its key's home bucket, and eviction runs inside an insert, so
//! an evicting insert races with another writer only if their keys have different homes: the
//! models with two writers use a two-bucket table (capacity 3) and a key with [`HOME_1`].
#![cfg(clockline_loom)]

use clockline_loom_tests::{cache, collect_garbage, two_evicting_inserts, Cache, Drops, HOME_1};
use loom::sync::Arc;
use loom::thread;

/// The values of `keys` that are cached, read through loom.
fn values(cache: &Cache, keys: &[u64]) -> Vec<Option<u64>> {
    keys.iter().map(|k| cache.get(k).map(|v| v.get())).collect()
}

/// The hand evicting k1 ∥ a get that marks k1 (capacity 1: the insert of k2 must evict k1).
/// The reader's value stays intact until its guard ends although the evictor collects garbage
/// right away, k1 is evicted (and freed) exactly once, and `len()` never exceeds 1.
#[test]
fn evict_vs_get_marking() {
    loom::model(|| {
        let drops = Drops::new(2);
        let cache = Arc::new(cache(1));
        cache.insert(1, drops.payload(0, 10)).unwrap();

        let evictor = {
            let cache = cache.clone();
            let value = drops.payload(1, 20);
            thread::spawn(move || {
                cache.insert(2, value).unwrap();
                assert!(cache.len() <= 1);
                // Tries to free k1 while the reader may still hold it.
                collect_garbage();
            })
        };
        {
            let pinned = cache.pin();
            assert!(cache.len() <= 1);
            if let Some(v) = pinned.get(&1) {
                assert!(cache.len() <= 1);
                assert_eq!(v.get(), 10);
            }
        }
        assert!(cache.len() <= 1);
        evictor.join().unwrap();

        assert_eq!(values(&cache, &[1, 2]), [None, Some(20)]);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.check_invariants(), Ok(1));
        // k1 evicted and freed exactly once; k2 still cached.
        drops.assert_dropped_once(&[0]);
        assert_eq!(drops.count(1), 0, "k2 is still cached");
        drop(cache);
        drops.assert_each_dropped_once();
    });
}

/// Two inserts of new keys with different homes into a full cache (capacity 3, four slots):
/// both evict, concurrently, and the insert homed in the full bucket 0 can only land in a slot
/// an eviction just freed (tag released, then claimed). `len()` never exceeds the capacity as
/// either thread sees it, three entries remain, reachable, and every value is freed exactly once.
#[test]
fn evict_vs_insert_into_freed_slot() {
    loom::model(|| {
        let drops = Drops::new(5);
        let cache = Arc::new(cache(3));
        // Bucket 0: k1, k2 (full). Bucket 1: k3 and one free slot.
        cache.insert(1, drops.payload(0, 10)).unwrap();
        cache.insert(2, drops.payload(1, 20)).unwrap();
        cache.insert(HOME_1 | 3, drops.payload(2, 30)).unwrap();

        two_evicting_inserts(&cache, &drops);

        assert_eq!(cache.len(), 3);
        assert_eq!(cache.check_invariants(), Ok(3));
        let left = values(&cache, &[1, 2, HOME_1 | 3, HOME_1 | 4, 5]);
        assert_eq!(left.iter().flatten().count(), 3, "left {left:?}");
        for (v, want) in left.iter().zip([10, 20, 30, 40, 50]) {
            assert!(v.is_none() || *v == Some(want), "left {left:?}");
        }
        let evicted: Vec<usize> = (0..5).filter(|&i| left[i].is_none()).collect();
        // The two evicted values are freed exactly once, the others not at all.
        drops.assert_dropped_once(&evicted);
        drop(cache);
        drops.assert_each_dropped_once();
    });
}

/// Replace of k1 ∥ an insert homed in the other bucket whose hand evicts k1 (the old node, or
/// the new one, which starts unmarked). Either the replace lands first and the hand evicts the
/// new node, or the eviction wins the slot CAS and the replace, finding its CAS failed, looks
/// again and inserts k1 afresh (evicting in turn). Three entries remain, k1's old value never
/// comes back, and every value is freed exactly once.
#[test]
fn replace_vs_evict() {
    loom::model(|| {
        let drops = Drops::new(5);
        let cache = Arc::new(cache(3));
        cache.insert(1, drops.payload(0, 10)).unwrap();
        cache.insert(2, drops.payload(1, 20)).unwrap();
        cache.insert(HOME_1 | 3, drops.payload(2, 30)).unwrap();

        let evictor = {
            let cache = cache.clone();
            let value = drops.payload(3, 40);
            thread::spawn(move || {
                cache.insert(HOME_1 | 4, value).unwrap();
                assert!(cache.len() <= 3);
                // Tries to free the evicted node while the replacer may still hold it.
                collect_garbage();
            })
        };
        cache.insert(1, drops.payload(4, 11)).unwrap();
        assert!(cache.len() <= 3);
        evictor.join().unwrap();

        assert_eq!(cache.len(), 3);
        assert_eq!(cache.check_invariants(), Ok(3));
        let left = values(&cache, &[1, 2, HOME_1 | 3, HOME_1 | 4]);
        assert!(matches!(left[0], None | Some(11)), "left {left:?}");
        assert_eq!(left.iter().flatten().count(), 3, "left {left:?}");
        // k1's old value is gone for good and freed exactly once; no value freed twice.
        drops.assert_dropped_once(&[0]);
        drop(cache);
        drops.assert_each_dropped_once();
    });
}

/// Remove of k1 ∥ an insert homed in the other bucket whose hand evicts k1: both race to unlink
/// k1 with a CAS of its slot, and exactly one of them owns and retires it (k1's value is freed
/// exactly once). The remove returns k1's value or, if the hand won, nothing; k1 is gone either
/// way, and the counters agree with what is left.
#[test]
fn remove_vs_evict() {
    loom::model(|| {
        let drops = Drops::new(4);
        let cache = Arc::new(cache(3));
        cache.insert(1, drops.payload(0, 10)).unwrap();
        cache.insert(2, drops.payload(1, 20)).unwrap();
        cache.insert(HOME_1 | 3, drops.payload(2, 30)).unwrap();

        let evictor = {
            let cache = cache.clone();
            let value = drops.payload(3, 40);
            thread::spawn(move || {
                cache.insert(HOME_1 | 4, value).unwrap();
                assert!(cache.len() <= 3);
                collect_garbage();
            })
        };
        let removed = cache.remove(&1).map(|v| v.get());
        assert!(matches!(removed, None | Some(10)), "removed {removed:?}");
        evictor.join().unwrap();

        let left = values(&cache, &[1, 2, HOME_1 | 3, HOME_1 | 4]);
        assert_eq!(left[0], None, "k1 is gone");
        assert_eq!(left[3], Some(40), "nothing evicts k4 after its insert");
        let n = left.iter().flatten().count();
        assert_eq!(cache.len(), n);
        assert_eq!(cache.check_invariants(), Ok(n));
        // k1 unlinked by exactly one of the two and freed exactly once.
        drops.assert_dropped_once(&[0]);
        drop(cache);
        drops.assert_each_dropped_once();
    });
}
