//! Models of table growth (`Cache::grow` in `src/cache.rs`): a weight-bounded cache without
//! `max_capacity` starts with room for one entry under `clockline_loom` and doubles, up to its
//! weight bound, instead of evicting. The grower takes every bucket lock of the old table,
//! copies the node pointers, publishes the new table and retires the old one with its locks
//! held for good; readers go on in either table, and writers waiting on a lock of the old table
//! give up and retry in the new one.
#![cfg(clockline_loom)]

use clockline_loom_tests::{collect_garbage, growable_cache, Drops};
use loom::sync::Arc;
use loom::thread;

/// Growth ∥ get: a reader finds k1 in the old table or in the new one, never misses it (it is
/// never removed), and its value is intact; the grower retires the old table and collects
/// garbage at once, while the reader may still be walking it.
#[test]
fn grow_vs_get() {
    loom::model(|| {
        let drops = Drops::new(2);
        let cache = Arc::new(growable_cache(2));
        cache.insert(1, drops.payload(0, 10)).unwrap();

        let grower = {
            let cache = cache.clone();
            let value = drops.payload(1, 20);
            thread::spawn(move || {
                cache.insert(2, value).unwrap();
                collect_garbage();
            })
        };
        {
            let pinned = cache.pin();
            assert_eq!(pinned.get(&1).map(|v| v.get()), Some(10), "k1 missed");
        }
        grower.join().unwrap();

        assert_eq!(cache.capacity(), 2);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.check_invariants(), Ok(2));
        assert_eq!(cache.get(&1).map(|v| v.get()), Some(10));
        assert_eq!(cache.get(&2).map(|v| v.get()), Some(20));
        drop(cache);
        drops.assert_each_dropped_once();
    });
}

/// Growth ∥ insert: two inserts of new keys, each of which may find the table full by count
/// and grow it (1 -> 2 -> 3 entries), or wait on a lock the other's growth keeps for good and
/// retry in the grown table. Nothing is evicted (the weight bound is never reached), so all
/// three keys remain, reachable, and each value is freed exactly once, when the cache drops.
#[test]
fn grow_vs_insert() {
    loom::model(|| {
        let drops = Drops::new(3);
        let cache = Arc::new(growable_cache(3));
        cache.insert(1, drops.payload(0, 10)).unwrap();

        let other = {
            let cache = cache.clone();
            let value = drops.payload(1, 20);
            thread::spawn(move || cache.insert(2, value).unwrap())
        };
        cache.insert(3, drops.payload(2, 30)).unwrap();
        other.join().unwrap();

        assert_eq!(cache.capacity(), 3);
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.check_invariants(), Ok(3));
        for (k, v) in [(1, 10), (2, 20), (3, 30)] {
            assert_eq!(cache.get(&k).map(|p| p.get()), Some(v), "key {k}");
        }
        drop(cache);
        drops.assert_each_dropped_once();
    });
}

/// Growth ∥ remove: the remove unlinks k1 from the old table before the grower copies it, or
/// waits on the old table's lock and removes it from the new one. Either way k1 is gone from
/// the current table and freed exactly once (a retired table never frees its nodes), and k2
/// stays.
#[test]
fn grow_vs_remove() {
    loom::model(|| {
        let drops = Drops::new(2);
        let cache = Arc::new(growable_cache(2));
        cache.insert(1, drops.payload(0, 10)).unwrap();

        let grower = {
            let cache = cache.clone();
            let value = drops.payload(1, 20);
            thread::spawn(move || cache.insert(2, value).unwrap())
        };
        assert_eq!(cache.remove(&1).map(|v| v.get()), Some(10));
        grower.join().unwrap();

        assert_eq!(cache.len(), 1);
        assert_eq!(cache.check_invariants(), Ok(1));
        assert!(cache.get(&1).is_none());
        assert_eq!(cache.get(&2).map(|v| v.get()), Some(20));
        // k1 freed exactly once, k2 still cached.
        drops.assert_dropped_once(&[0]);
        assert_eq!(drops.count(1), 0, "k2 is still cached");
        drop(cache);
        drops.assert_each_dropped_once();
    });
}
