//! Models of issue #3's protocols that race with the table: version-guarded insert against
//! invalidation (both under the key's home lock, with the tombstone recorded inside it) and
//! against an eviction (which does not hold that lock, and records the tombstone before its
//! unlink), the
//! eviction listener's exactly-once rule when an eviction races with a removal, and the hand
//! taking an expired entry while a reader looks it up.
#![cfg(clockline_loom)]

use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicU64, Ordering as StdOrdering};
use std::time::Duration;

use clockline::{Compute, Invalidation, RemovalCause};
use clockline_loom_tests::{collect_garbage, Cache, Drops, IdHasher, Payload, HOME_1};
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

fn builder(capacity: usize) -> clockline::Builder<u64, Payload, BuildHasherDefault<IdHasher>> {
    clockline::Cache::builder()
        .max_capacity(capacity)
        .hasher(BuildHasherDefault::<IdHasher>::default())
}

/// insert_versioned(k, v1) ∥ invalidate_versioned(k, 2): whichever runs first, version 1 must
/// not be cached at the end: either the invalidation removes it, or its tombstone refuses it.
#[test]
fn versioned_insert_vs_invalidate() {
    loom::model(|| {
        let drops = Drops::new(2);
        let cache: Arc<Cache> = Arc::new(builder(2).versioned().build().unwrap());
        let writer = {
            let cache = cache.clone();
            let value = drops.payload(0, 1);
            thread::spawn(move || {
                let _ = cache.insert_versioned(7, value, 1);
                collect_garbage();
            })
        };
        let inv = cache.invalidate_versioned(7, 2);
        writer.join().unwrap();
        assert!(
            matches!(inv, Invalidation::Removed | Invalidation::Absent),
            "{inv:?}"
        );
        assert!(cache.get(&7).is_none(), "version 1 survived invalidation 2");
        // The tombstone keeps version 2: a late version-1 update is refused.
        assert!(cache.insert_versioned(7, drops.payload(1, 0), 1).is_err());
        drop(cache);
        drops.assert_each_dropped_once();
    });
}

/// The hand evicting k1 (an insert into a full one-entry cache) ∥ remove(k1): the listener
/// hears about k1 exactly once, with the cause of whichever unlink won, and k1 is dropped once.
#[test]
fn listener_once_when_eviction_races_removal() {
    loom::model(|| {
        let drops = Drops::new(2);
        let heard = Arc::new(AtomicUsize::new(0));
        let cause_capacity = Arc::new(AtomicUsize::new(0));
        let cache: Arc<Cache> = {
            let (heard, cap) = (heard.clone(), cause_capacity.clone());
            Arc::new(
                builder(1)
                    .eviction_listener(move |k, _, cause| {
                        if *k == 1 {
                            heard.fetch_add(1, Ordering::Relaxed);
                            if cause == RemovalCause::Capacity {
                                cap.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    })
                    .build()
                    .unwrap(),
            )
        };
        cache.insert(1, drops.payload(0, 10)).unwrap();
        let inserter = {
            let cache = cache.clone();
            let value = drops.payload(1, 20);
            thread::spawn(move || {
                cache.insert(2, value).unwrap();
                collect_garbage();
            })
        };
        let removed = cache.remove(&1);
        inserter.join().unwrap();
        assert_eq!(heard.load(Ordering::Relaxed), 1, "k1 reported once");
        assert_eq!(
            cause_capacity.load(Ordering::Relaxed) == 1,
            removed.is_none(),
            "the cause names the unlink that won"
        );
        assert!(cache.len() <= 1);
        drop(cache);
        drops.assert_each_dropped_once();
    });
}

/// A test clock outside loom: set before the threads start, only read during the model.
struct Frozen(AtomicU64);
impl clockline::Clock for Frozen {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.0.load(StdOrdering::Relaxed))
    }
}

/// k1 has expired; the hand takes it (an insert into a full one-entry cache) ∥ a reader pins and
/// looks k1 up. The reader never gets the expired value, the listener hears `Expired`, and the
/// value is freed once, after the reader's guard.
#[test]
fn expired_eviction_vs_get() {
    loom::model(|| {
        let drops = Drops::new(2);
        let clock = std::sync::Arc::new(Frozen(AtomicU64::new(1_000_000_000)));
        let expired = Arc::new(AtomicUsize::new(0));
        let cache: Arc<Cache> = {
            let expired = expired.clone();
            Arc::new(
                builder(1)
                    .time_to_live(Duration::from_millis(100))
                    .clock(clock.clone())
                    .eviction_listener(move |_, _, cause| {
                        if cause == RemovalCause::Expired {
                            expired.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                    .build()
                    .unwrap(),
            )
        };
        cache.insert(1, drops.payload(0, 10)).unwrap();
        clock.0.store(2_000_000_000, StdOrdering::Relaxed);
        let inserter = {
            let cache = cache.clone();
            let value = drops.payload(1, 20);
            thread::spawn(move || {
                cache.insert(2, value).unwrap();
                collect_garbage();
            })
        };
        {
            let pinned = cache.pin();
            assert!(pinned.get(&1).is_none(), "an expired entry was returned");
        }
        inserter.join().unwrap();
        assert_eq!(expired.load(Ordering::Relaxed), 1);
        drop(cache);
        drops.assert_each_dropped_once();
    });
}

/// insert_versioned(k1, v3) ∥ an insert homed in the other bucket whose hand evicts k1
/// (version 5, expired; k2 and k3 are fresh and marked, so the hand passes them). The evictor
/// does not hold k1's home lock: it records k1's tombstone before its unlink, and the versioned
/// insert reads tombstones after its lookup, behind an Acquire fence. So version 3 is refused
/// whichever way they interleave: the insert sees the entry (expired or not, its version
/// counts), or the tombstone. Recorded after the unlink, as it once was, the insert could see
/// neither and store version 3: this model fails on that code.
#[test]
fn versioned_insert_vs_eviction() {
    loom::model(|| {
        let drops = Drops::new(5);
        let clock = std::sync::Arc::new(Frozen(AtomicU64::new(1_000_000_000)));
        let cache: Arc<Cache> = Arc::new(
            builder(3)
                .policy(clockline::Policy::Clock)
                .versioned()
                .time_to_live(Duration::from_millis(100))
                .clock(clock.clone())
                .build()
                .unwrap(),
        );
        cache.insert_versioned(1, drops.payload(0, 10), 5).unwrap();
        clock.0.store(2_000_000_000, StdOrdering::Relaxed);
        cache.insert(2, drops.payload(1, 20)).unwrap();
        cache.insert(HOME_1 | 3, drops.payload(2, 30)).unwrap();
        assert!(cache.get(&2).is_some() && cache.get(&(HOME_1 | 3)).is_some());
        let evictor = {
            let cache = cache.clone();
            let value = drops.payload(3, 40);
            thread::spawn(move || {
                cache.insert(HOME_1 | 4, value).unwrap();
                collect_garbage();
            })
        };
        let late = cache.insert_versioned(1, drops.payload(4, 11), 3);
        evictor.join().unwrap();
        assert!(late.is_err(), "version 3 accepted after version 5");
        drop(late);
        assert!(
            cache.peek(&1).is_none(),
            "k1 (version 5) has expired; version 3 must not be there"
        );
        drop(cache);
        drops.assert_each_dropped_once();
    });
}

/// compute(k, +1) ∥ compute(k, +1), from an absent key and from a present one: both increments
/// land (each commit checks, under the key's home lock, that the entry it read is still there,
/// and otherwise reads again), and the value each closure reads is never freed under it.
#[test]
fn compute_increments_are_not_lost() {
    for start in [None, Some(0)] {
        loom::model(move || {
            let cache: Arc<Cache> = Arc::new(builder(2).build().unwrap());
            let drops = Drops::new(1);
            if let Some(v) = start {
                cache.insert(7, drops.payload(0, v)).unwrap();
            }
            let bump = |v: Option<&Payload>| {
                Compute::Put(Payload::untracked(v.map_or(0, Payload::get) + 1))
            };
            let other = {
                let cache = cache.clone();
                thread::spawn(move || {
                    let _ = cache.compute(7, bump).unwrap();
                    collect_garbage();
                })
            };
            let _ = cache.compute(7, bump).unwrap();
            other.join().unwrap();
            let want = start.map_or(2, |v| v + 2);
            assert_eq!(cache.get(&7).map(|p| p.get()), Some(want), "an increment was lost");
            drop(cache);
            if start.is_some() {
                drops.assert_each_dropped_once();
            }
        });
    }
}

/// compute(k, remove if 1) ∥ insert(k, 5): the removal takes only the entry its closure saw,
/// so 5 is never removed, whichever runs first.
#[test]
fn compute_removes_only_what_it_saw() {
    loom::model(|| {
        let cache: Arc<Cache> = Arc::new(builder(2).build().unwrap());
        let drops = Drops::new(2);
        cache.insert(7, drops.payload(0, 1)).unwrap();
        let writer = {
            let cache = cache.clone();
            let value = drops.payload(1, 5);
            thread::spawn(move || {
                cache.insert(7, value).unwrap();
                collect_garbage();
            })
        };
        let _ = cache
            .compute(7, |v| match v.map(Payload::get) {
                Some(1) => Compute::Remove,
                _ => Compute::Keep,
            })
            .unwrap();
        writer.join().unwrap();
        assert_eq!(cache.get(&7).map(|p| p.get()), Some(5), "the newer value was removed");
        drop(cache);
        drops.assert_each_dropped_once();
    });
}
