//! `Cache::compute`: atomic read-modify-write of one key (src/compute.rs).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;

mod common;

use clockline::{Cache, Compute, Computed, InsertErrorKind, Policy, RemovalCause};
use common::{within, ManualClock};

fn bump(n: Option<&u64>) -> Compute<u64> {
    Compute::Put(n.copied().unwrap_or(0) + 1)
}

/// The point of `compute`: concurrent increments of shared counters lose nothing (with `get`
/// then `insert` they do). Under both policies, in a cache small enough to evict, so that the
/// counters must also survive the hand: 8 counters in 64 entries, kept hot.
#[test]
fn concurrent_increments_are_not_lost() {
    for policy in [Policy::Clock, Policy::default()] {
        within("concurrent computes", move || {
            const THREADS: u64 = 4;
            const ROUNDS: u64 = 5_000;
            let cache: Cache<u64, u64> = Cache::builder()
                .max_capacity(64)
                .policy(policy)
                .build()
                .unwrap();
            let barrier = Barrier::new(THREADS as usize);
            thread::scope(|s| {
                for t in 0..THREADS {
                    let (cache, barrier) = (&cache, &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        for i in 0..ROUNDS {
                            let _ = cache.compute(i % 8, bump).unwrap();
                            // Traffic of other keys, none of which is read twice: the
                            // counters (read all the time) are what the hand keeps.
                            cache.insert(1_000 + t * ROUNDS + i, 0).unwrap();
                        }
                    });
                }
            });
            let total: u64 = (0..8).map(|k| cache.get(&k).unwrap_or(0)).sum();
            assert_eq!(
                total,
                THREADS * ROUNDS,
                "{policy:?}: increments lost (or a counter evicted)"
            );
            assert!(cache.check_invariants().is_ok());
        });
    }
}

#[test]
fn outcomes_and_the_listener() {
    let heard = Arc::new(Mutex::new(Vec::new()));
    let h = heard.clone();
    let cache: Cache<&str, u64> = Cache::builder()
        .max_capacity(10)
        .eviction_listener(move |k: &&str, v: &u64, cause| h.lock().unwrap().push((*k, *v, cause)))
        .build()
        .unwrap();
    assert_eq!(cache.compute("a", bump).unwrap(), Computed::Inserted);
    assert_eq!(cache.compute("a", bump).unwrap(), Computed::Updated);
    assert_eq!(
        cache.compute("a", |_| Compute::Keep).unwrap(),
        Computed::Unchanged
    );
    assert_eq!(cache.get("a"), Some(2));
    assert_eq!(
        cache.compute("a", |_| Compute::Remove).unwrap(),
        Computed::Removed
    );
    assert_eq!(
        cache.compute("a", |_| Compute::Remove).unwrap(),
        Computed::Unchanged
    );
    assert_eq!(cache.get("a"), None);
    assert_eq!(
        *heard.lock().unwrap(),
        [
            ("a", 1, RemovalCause::Replaced),
            ("a", 2, RemovalCause::Explicit)
        ]
    );
    assert_eq!(cache.len(), 0);
}

/// An expired entry is absent to the closure; a put over it is an insert, and the listener
/// hears the old one as expired.
#[test]
fn an_expired_entry_is_seen_as_absent() {
    let clock = ManualClock::new();
    let heard = Arc::new(Mutex::new(Vec::new()));
    let h = heard.clone();
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(10)
        .time_to_live(Duration::from_secs(1))
        .clock(clock.clone())
        .eviction_listener(move |_, v: &u64, cause| h.lock().unwrap().push((*v, cause)))
        .build()
        .unwrap();
    cache.insert(1, 41).unwrap();
    clock.advance(Duration::from_secs(2));
    let mut saw = Vec::new();
    let r = cache.compute(1, |v| {
        saw.push(v.copied());
        bump(v)
    });
    assert_eq!(r.unwrap(), Computed::Inserted);
    assert_eq!(saw, [None]);
    assert_eq!(cache.get(&1), Some(1));
    assert_eq!(*heard.lock().unwrap(), [(41, RemovalCause::Expired)]);
    // A removal of an expired entry the closure saw as absent changes nothing it saw.
    clock.advance(Duration::from_secs(2));
    assert_eq!(
        cache.compute(1, |_| Compute::Remove).unwrap(),
        Computed::Unchanged
    );
}

/// The closure runs with no lock held: it may write the same key, and then runs again on what
/// it wrote, whose value the result is built on.
#[test]
fn a_closure_that_writes_its_own_key_runs_again_on_the_new_value() {
    within("re-entrant compute", || {
        let cache: Cache<u64, u64> = Cache::new(10);
        cache.insert(1, 1).unwrap();
        let mut calls = Vec::new();
        let r = cache.compute(1, |v| {
            calls.push(v.copied());
            if calls.len() == 1 {
                cache.insert(1, 100).unwrap();
                // And another key, and a nested compute: no lock is held.
                let _ = cache.compute(2, bump).unwrap();
            }
            bump(v)
        });
        assert_eq!(r.unwrap(), Computed::Updated);
        assert_eq!(calls, [Some(1), Some(100)]);
        assert_eq!(cache.get(&1), Some(101));
        assert_eq!(cache.get(&2), Some(1));
    });
}

/// A removal commits only if the entry the closure saw is still there.
#[test]
fn a_removal_never_removes_an_entry_the_closure_did_not_see() {
    let cache: Cache<u64, u64> = Cache::new(10);
    cache.insert(1, 1).unwrap();
    let mut calls = 0;
    let r = cache.compute(1, |v| {
        calls += 1;
        if calls == 1 {
            cache.insert(1, 5).unwrap();
        }
        // Remove only the value 1.
        if v == Some(&1) {
            Compute::Remove
        } else {
            Compute::Keep
        }
    });
    assert_eq!(r.unwrap(), Computed::Unchanged);
    assert_eq!(calls, 2);
    assert_eq!(cache.get(&1), Some(5), "the newer value survives");
}

#[test]
fn a_panicking_closure_changes_nothing() {
    let drops = Arc::new(AtomicUsize::new(0));
    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, SeqCst);
        }
    }
    let cache: Cache<u64, Arc<Counted>> = Cache::new(10);
    cache.insert(1, Arc::new(Counted(drops.clone()))).unwrap();
    let r = catch_unwind(AssertUnwindSafe(|| {
        cache.compute(1, |_| -> Compute<Arc<Counted>> { panic!("intentional") })
    }));
    assert!(r.is_err());
    assert!(cache.get(&1).is_some());
    assert_eq!(cache.check_invariants(), Ok(1));
    drop(cache);
    clockline::flush_deferred();
    assert_eq!(
        drops.load(SeqCst),
        1,
        "the value dropped once, with the cache"
    );
}

#[test]
fn a_weighted_cache_may_refuse_the_put_and_hands_it_back() {
    let cache: Cache<u64, Vec<u8>> = Cache::builder()
        .max_weight(100)
        .weigher(|_, v: &Vec<u8>| v.len() as u64)
        .build()
        .unwrap();
    cache.insert(1, vec![0; 10]).unwrap();
    let e = cache
        .compute(1, |v| Compute::Put(vec![1; v.map_or(0, Vec::len) * 20]))
        .unwrap_err();
    assert!(matches!(
        e.kind,
        InsertErrorKind::TooHeavy { weight: 200, .. }
    ));
    assert_eq!((e.key, e.value.len()), (1, 200));
    assert_eq!(
        cache.get(&1).map(|v| v.len()),
        Some(10),
        "the old value stays"
    );
}

/// In a versioned cache a put is an unversioned insert (version 0), which any versioned
/// insert replaces, as `insert` documents.
#[test]
fn in_a_versioned_cache_a_put_stores_version_0() {
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(10)
        .versioned()
        .build()
        .unwrap();
    cache.insert_versioned(1, 10, 3).unwrap();
    assert_eq!(cache.compute(1, bump).unwrap(), Computed::Updated);
    assert_eq!(cache.get_versioned(&1), Some((11, 0)));
}

/// A cache whose entries expire 10 s after their insert (`idle`: after their last read), with
/// a listener that records every value and cause.
fn expiring_cache(
    clock: &Arc<ManualClock>,
    heard: &Arc<Mutex<Vec<(u64, RemovalCause)>>>,
    idle: bool,
) -> Cache<u64, u64> {
    let h = heard.clone();
    let b = Cache::builder().max_capacity(10);
    let b = if idle {
        b.time_to_idle(Duration::from_secs(10))
    } else {
        b.time_to_live(Duration::from_secs(10))
    };
    b.clock(clock.clone())
        .eviction_listener(move |_, v: &u64, cause| h.lock().unwrap().push((*v, cause)))
        .build()
        .unwrap()
}

/// Found by the rate-limiter dry run: a put built on a live value that expired before the
/// commit was committed (a fixed window's count carried into the next window, the call said
/// `Updated` while the listener heard `Expired`). It now runs the closure again, which sees
/// the key absent.
#[test]
fn a_put_built_on_a_value_that_expired_before_the_commit_runs_again() {
    let clock = ManualClock::new();
    let heard = Arc::new(Mutex::new(Vec::new()));
    let cache = expiring_cache(&clock, &heard, false);
    assert_eq!(cache.compute(1, bump).unwrap(), Computed::Inserted);
    let mut saw = Vec::new();
    let r = cache.compute(1, |v| {
        saw.push(v.copied());
        if saw.len() == 1 {
            clock.advance(Duration::from_secs(10)); // the window ends meanwhile
        }
        bump(v)
    });
    assert_eq!(r.unwrap(), Computed::Inserted);
    assert_eq!(saw, [Some(1), None]);
    assert_eq!(cache.get(&1), Some(1));
    assert_eq!(*heard.lock().unwrap(), [(1, RemovalCause::Expired)]);
}

/// The same for a removal: not of a value that expired since the closure saw it live.
#[test]
fn a_remove_of_a_value_that_expired_before_the_commit_runs_again() {
    let clock = ManualClock::new();
    let heard = Arc::new(Mutex::new(Vec::new()));
    let cache = expiring_cache(&clock, &heard, false);
    cache.insert(1, 7).unwrap();
    let mut saw = Vec::new();
    let r = cache.compute(1, |v| {
        saw.push(v.copied());
        if saw.len() == 1 {
            clock.advance(Duration::from_secs(10));
        }
        Compute::Remove
    });
    assert_eq!(r.unwrap(), Computed::Unchanged);
    assert_eq!(saw, [Some(7), None]);
    // The expired entry is removed all the same, as by `remove`.
    assert_eq!(*heard.lock().unwrap(), [(7, RemovalCause::Explicit)]);
    assert_eq!(cache.len(), 0);
}

/// A fixed window: `PutWithTtl` keeps the window's end, where each `Put` would start the
/// default TTL anew and a window kept busy would never close.
#[test]
fn put_with_ttl_keeps_a_fixed_windows_end() {
    let clock = ManualClock::new();
    let heard = Arc::new(Mutex::new(Vec::new()));
    let cache = expiring_cache(&clock, &heard, false);
    let window = Duration::from_secs(10);
    // The value packs the count and the window's end, in seconds on the test's clock.
    let start = 1_000u64;
    let mut now = start;
    let hit = |cache: &Cache<u64, u64>, now: u64| {
        cache
            .compute(1, |v| match v {
                Some(&v) => {
                    let (end, count) = (v >> 32, v & 0xffff_ffff);
                    Compute::PutWithTtl(end << 32 | (count + 1), Duration::from_secs(end - now))
                }
                None => {
                    let end = now + window.as_secs();
                    Compute::PutWithTtl(end << 32 | 1, window)
                }
            })
            .unwrap()
    };
    for _ in 0..5 {
        let _ = hit(&cache, now);
        clock.advance(Duration::from_secs(3));
        now += 3;
    }
    // Requests at 0, 3, 6, 9 s fall in the first window; the one at 12 s opens a new one.
    assert_eq!(cache.get(&1).map(|v| v & 0xffff_ffff), Some(1));
    // It needs a cache with expiry, as `insert_with_ttl` does.
    let e = Cache::<u64, u64>::new(10).compute(1, |_| Compute::PutWithTtl(1, window));
    assert!(matches!(
        e.unwrap_err().kind,
        InsertErrorKind::ExpiryDisabled
    ));
}

/// An entry the closure saw expired (idle too long) may be read again before the commit by a
/// reader that judges it at an earlier instant (a `Pinned` handle made before it expired, or
/// a `get` preempted between its clock read and its touch): that read moves its idle deadline
/// and the entry is live again, as a `get` now shows. A put built on `None` must not replace
/// that live value (the count 5 was lost: the call said `Inserted`, the listener `Replaced`).
#[test]
fn a_put_built_on_an_expired_entry_that_a_read_revived_runs_again() {
    let clock = ManualClock::new();
    let heard = Arc::new(Mutex::new(Vec::new()));
    let cache = expiring_cache(&clock, &heard, true);
    cache.insert(1, 5).unwrap();
    clock.advance(Duration::from_secs(9));
    let pinned = cache.pin(); // judges at 9 s, where the entry is live
    clock.advance(Duration::from_secs(2)); // 11 s: idle for 11 s, expired
    let mut saw = Vec::new();
    let r = cache.compute(1, |v| {
        saw.push(v.copied());
        if saw.len() == 1 {
            assert_eq!(pinned.get(&1), Some(&5), "live at the handle's instant");
            assert_eq!(cache.peek(&1), Some(5), "and, read at 9 s, live again now");
        }
        bump(v)
    });
    drop(pinned);
    assert_eq!(
        saw,
        [None, Some(5)],
        "the closure runs again on the live value"
    );
    assert_eq!(r.unwrap(), Computed::Updated);
    assert_eq!(cache.get(&1), Some(6), "the count 5 was lost");
    assert_eq!(*heard.lock().unwrap(), [(5, RemovalCause::Replaced)]);
}

/// The same for a removal: `Remove` after seeing `None` must not remove an entry that is live
/// again at the commit (it removed the live 5 and answered `Unchanged`).
#[test]
fn a_remove_after_seeing_an_expired_entry_that_a_read_revived_runs_again() {
    let clock = ManualClock::new();
    let heard = Arc::new(Mutex::new(Vec::new()));
    let cache = expiring_cache(&clock, &heard, true);
    cache.insert(1, 5).unwrap();
    clock.advance(Duration::from_secs(9));
    let pinned = cache.pin();
    clock.advance(Duration::from_secs(2));
    let mut saw = Vec::new();
    let r = cache.compute(1, |v| {
        saw.push(v.copied());
        if saw.len() == 1 {
            assert_eq!(pinned.get(&1), Some(&5));
        }
        // Remove only what is absent (a stale marker); keep a live value.
        if v.is_none() {
            Compute::Remove
        } else {
            Compute::Keep
        }
    });
    drop(pinned);
    assert_eq!(
        saw,
        [None, Some(5)],
        "the closure runs again on the live value"
    );
    assert_eq!(r.unwrap(), Computed::Unchanged);
    assert_eq!(
        cache.get(&1),
        Some(5),
        "a live entry the closure never saw was removed"
    );
    assert!(heard.lock().unwrap().is_empty());
}

/// A key whose `clone` runs a hook once: the versioned cache clones the key to record the
/// tombstone of an expired entry it replaces, after `compute`'s commit check and before its
/// CAS, so the hook lands a read exactly in that window.
#[derive(PartialEq, Eq, Hash, Debug)]
struct HookKey(u64);

thread_local! {
    static CLONE_HOOK: std::cell::RefCell<Option<Box<dyn FnOnce()>>> =
        const { std::cell::RefCell::new(None) };
}

impl Clone for HookKey {
    fn clone(&self) -> Self {
        if let Some(hook) = CLONE_HOOK.with(|h| h.borrow_mut().take()) {
            hook();
        }
        HookKey(self.0)
    }
}

/// A read that judges expiry at an earlier instant (here a `Pinned` handle made before the
/// entry expired) lands between `compute`'s commit check and its CAS, on the entry the closure
/// saw expired (as `None`). It must not be served and then overwritten: either the read
/// revives it first, and the closure runs again on the live value, or the read finds the entry
/// already given up and answers `None`. (Found in review: the read served 5 and moved the idle
/// deadline; the put built on `None` then replaced it with 1, reported `Inserted`, and the
/// listener heard 5 leave as `Expired`.)
#[test]
fn a_revival_between_the_commit_check_and_the_commit_is_not_overwritten() {
    let clock = ManualClock::new();
    let heard = Arc::new(Mutex::new(Vec::new()));
    let h = heard.clone();
    // A static, so that the hook (a `'static` closure) may hold a pinned handle of it; in a
    // static rather than leaked, so that the leak checker of the ASan run sees it reachable.
    static CACHE: std::sync::OnceLock<Cache<HookKey, u64>> = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(|| {
        Cache::builder()
            .max_capacity(10)
            .time_to_idle(Duration::from_secs(10))
            .clock(clock.clone())
            .versioned()
            .eviction_listener(move |_, v: &u64, cause| h.lock().unwrap().push((*v, cause)))
            .build()
            .unwrap()
    });
    cache.insert_versioned(HookKey(1), 5, 1).unwrap();
    clock.advance(Duration::from_secs(9));
    let mut pinned = Some(cache.pin()); // judges at 9 s, where the entry is live
    clock.advance(Duration::from_secs(2)); // 11 s: expired
    let served = Arc::new(Mutex::new(None));
    let mut saw = Vec::new();
    let result = cache.compute(HookKey(1), |v| {
        saw.push(v.copied());
        if let Some(pinned) = pinned.take() {
            let served = served.clone();
            CLONE_HOOK.with(|h| {
                *h.borrow_mut() = Some(Box::new(move || {
                    *served.lock().unwrap() = Some(pinned.get(&HookKey(1)).copied());
                }))
            });
        }
        bump(v)
    });
    let served = served
        .lock()
        .unwrap()
        .expect("the hook ran inside the commit");
    let want = match served {
        // Revived first: the closure runs again on it.
        Some(5) => (vec![None, Some(5)], Computed::Updated, Some(6)),
        None => (vec![None], Computed::Inserted, Some(1)),
        other => panic!("the pinned read served {other:?}"),
    };
    assert_eq!(
        (saw, result.unwrap(), cache.get(&HookKey(1))),
        want,
        "the pinned read served {served:?}; the listener heard {:?}",
        heard.lock().unwrap()
    );
}
