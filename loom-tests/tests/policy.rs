//! Models of the adaptive policy's steps (`src/policy/`, `Inner::evict_adaptive` in
//! `src/cache.rs`): a window entry leaving (promotion or eviction after the admission
//! contest) while a reader marks it or a writer removes it, and the ghost's record and lookup
//! (with the window's adaptation) racing with a hit on the same key.
//!
//! The common set-up, capacity 3 (two buckets, four slots; a window of at most two entries,
//! target one): k1 is inserted and, once k2 makes the window hold two, promoted to main
//! (uncontested: the cache is not full yet); k3 fills the cache. So k1 is in main, k2 and k3
//! are in the window, and the next insert of a new key must evict: k2, the window's oldest,
//! competes with k1, the hand's victim, and loses (equal frequencies; a newcomer must win by
//! more than one count).
#![cfg(clockline_loom)]

use clockline_loom_tests::{
    adaptive_cache, collect_garbage, two_evicting_inserts, Cache, Drops, HOME_1,
};
use loom::sync::Arc;
use loom::thread;

const K1: u64 = 1;
const K2: u64 = HOME_1 | 2;
const K3: u64 = 3;

/// k1 in main, k2 and k3 in the window; payloads 0, 1, 2.
fn set_up(drops: &Drops) -> Arc<Cache> {
    let cache = Arc::new(adaptive_cache(3));
    cache.insert(K1, drops.payload(0, 10)).unwrap();
    cache.insert(K2, drops.payload(1, 20)).unwrap();
    cache.insert(K3, drops.payload(2, 30)).unwrap();
    assert_eq!(cache.check_invariants(), Ok(3));
    cache
}

/// The end of every model: the length (one of `lens`), the window's exact count
/// (`check_invariants`), and every payload freed exactly once after the cache is dropped.
fn finish(cache: Arc<Cache>, drops: Drops, lens: &[usize]) {
    let len = cache.len();
    assert!(lens.contains(&len), "len {len}, expected one of {lens:?}");
    assert_eq!(cache.check_invariants(), Ok(len));
    drop(cache);
    drops.assert_each_dropped_once();
}

/// An insert that must evict (the window's oldest, k2, against main's k1) ∥ a get that marks
/// k2. Whether the mark lands before the contest (k2 gets a second turn, k3 leaves instead)
/// or after (k2 leaves), the reader sees k2's value intact until its guard ends, however
/// early the evictor collects garbage, and exactly one entry is evicted, once.
#[test]
fn window_exit_vs_get_marking() {
    loom::model(|| {
        let drops = Drops::new(4);
        let cache = set_up(&drops);
        let evictor = {
            let cache = cache.clone();
            let value = drops.payload(3, 40);
            thread::spawn(move || {
                cache.insert(HOME_1 | 4, value).unwrap();
                assert!(cache.len() <= 3);
                collect_garbage();
            })
        };
        {
            let pinned = cache.pin();
            if let Some(v) = pinned.get(&K2) {
                assert_eq!(v.get(), 20);
            }
            assert!(cache.len() <= 3);
        }
        evictor.join().unwrap();
        assert!(
            cache.get(&K1).is_some(),
            "main's k1 wins every contest here"
        );
        assert!(
            cache.get(&(HOME_1 | 4)).is_some(),
            "the new key is in the window"
        );
        finish(cache, drops, &[3]);
    });
}

/// An insert whose eviction picks k2 as the window's candidate ∥ a remove of k2 (different
/// homes, so both run at once). Whoever unlinks k2 first owns it; the other sees its CAS fail
/// and moves on (the evictor to the next candidate). The window's count loses k2 exactly
/// once (`take_window`), the bound holds, and nothing is freed twice.
#[test]
fn window_exit_vs_remove() {
    loom::model(|| {
        let drops = Drops::new(4);
        let cache = set_up(&drops);
        let evictor = {
            let cache = cache.clone();
            let value = drops.payload(3, 40);
            thread::spawn(move || {
                cache.insert(4, value).unwrap();
                assert!(cache.len() <= 3);
            })
        };
        let removed = cache.remove(&K2).map(|v| v.get());
        assert!(matches!(removed, None | Some(20)));
        evictor.join().unwrap();
        assert_eq!(cache.get(&K2).map(|v| v.get()), None);
        // 3: the remove freed room first, or the evictor took k2 first. 2: the evictor picked
        // k2, the remove unlinked it first, and the evictor, which had no room yet, evicted
        // the next candidate: one eviction more than the end state needed, never fewer.
        finish(cache, drops, &[2, 3]);
    });
}

/// The ghost and the adaptation: an insert evicts k2 (recording its fingerprint in the ghost,
/// from the window) ∥ a cache-aside reader of k2: a hit, or a miss that inserts k2 again,
/// which looks the ghost up and may grow the window's target. Every interleaving keeps the
/// bound, the window's count and the target's bounds (checked by `check_invariants`), and
/// each payload is freed once.
#[test]
fn ghost_record_vs_hit_and_reinsert() {
    loom::model(|| {
        let drops = Drops::new(5);
        let cache = set_up(&drops);
        let evictor = {
            let cache = cache.clone();
            let value = drops.payload(3, 40);
            thread::spawn(move || {
                cache.insert(4, value).unwrap();
                assert!(cache.len() <= 3);
            })
        };
        match cache.get(&K2) {
            Some(v) => {
                assert_eq!(v.get(), 20);
                drop(drops.payload(4, 50)); // Not needed: a hit.
            }
            None => cache.insert(K2, drops.payload(4, 50)).unwrap(),
        }
        assert!(cache.len() <= 3);
        evictor.join().unwrap();
        finish(cache, drops, &[3]);
    });
}

/// Two inserts of new keys with different homes into a cache that is not full yet, while the
/// window is over its target: each pushes its slot into the window's ring and promotes the
/// window's oldest entries to main, concurrently (two poppers on the ring, `take_window` racing
/// for the same node). The window's count stays exact and nothing is lost.
#[test]
fn concurrent_arrivals_promote_without_contest() {
    loom::model(|| {
        let drops = Drops::new(3);
        let cache = Arc::new(adaptive_cache(3));
        cache.insert(K1, drops.payload(0, 10)).unwrap();
        let other = {
            let cache = cache.clone();
            let value = drops.payload(1, 20);
            thread::spawn(move || cache.insert(K2, value).unwrap())
        };
        cache.insert(K3, drops.payload(2, 30)).unwrap();
        other.join().unwrap();
        for (k, v) in [(K1, 10), (K2, 20), (K3, 30)] {
            assert_eq!(cache.get(&k).map(|p| p.get()), Some(v));
        }
        finish(cache, drops, &[3]);
    });
}

/// Two evicting inserts at once (different homes), each recording its victim in the ghost,
/// and the second new key arriving while the ghost holds the first one's record (under the
/// models' hasher every key shares one fingerprint, so every arrival after an eviction is a
/// ghost hit): both may move the window's target at once. It stays within its bounds
/// (`check_invariants`), the bound holds, and every payload is freed once.
#[test]
fn concurrent_adaptation_steps() {
    loom::model(|| {
        let drops = Drops::new(5);
        let cache = set_up(&drops);
        two_evicting_inserts(&cache, &drops);
        finish(cache, drops, &[3]);
    });
}
