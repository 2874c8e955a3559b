//! Models of cache-aside loading with single flight (`src/loader.rs`): the flight map and each
//! flight's state are loom's `Mutex` and `Condvar` under `clockline_loom` (through `src/sync.rs`),
//! so these models explore every order of the flight protocol's lock sections, and report a
//! waiter that nothing wakes as a deadlock. Also a load racing a database update and its
//! invalidation, the fleet-coherence case: the tombstone store's locks are loom's too.
#![cfg(clockline_loom)]

use std::future::Future;
use std::hash::BuildHasherDefault;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use clockline_loom_tests::{cache, collect_garbage, Cache, Drops, IdHasher};
use loom::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

fn versioned_cache(capacity: usize) -> Cache {
    clockline::Cache::builder()
        .max_capacity(capacity)
        .versioned()
        .hasher(BuildHasherDefault::<IdHasher>::default())
        .build()
        .expect("valid capacity")
}

/// get_or_insert_with(k) ∥ get_or_insert_with(k) on a miss: one loader runs, both callers get
/// its value, which is cached; the loaded payload is dropped once (the caller's original; the
/// cache holds a clone), the other loader's is never made.
#[test]
fn concurrent_misses_run_one_loader() {
    loom::model(|| {
        let drops = Drops::new(2);
        let cache = Arc::new(cache(2));
        let loads = Arc::new(AtomicUsize::new(0));
        let other = {
            let (cache, loads) = (cache.clone(), loads.clone());
            thread::spawn(move || {
                cache
                    .get_or_insert_with(7, || {
                        loads.fetch_add(1, Ordering::Relaxed);
                        drops.payload(1, 20)
                    })
                    .get()
            })
        };
        let mine = cache
            .get_or_insert_with(7, || {
                loads.fetch_add(1, Ordering::Relaxed);
                drops.payload(0, 10)
            })
            .get();
        let theirs = other.join().unwrap();
        assert_eq!(
            loads.load(Ordering::Relaxed),
            1,
            "two loaders ran for one key"
        );
        assert_eq!(mine, theirs, "the callers got different values");
        assert_eq!(cache.peek(&7).map(|p| p.get()), Some(mine));
        let (loaded, unused) = if mine == 10 { (0, 1) } else { (1, 0) };
        assert_eq!(
            drops.count(loaded),
            1,
            "the caller's value is dropped with it"
        );
        assert_eq!(drops.count(unused), 0, "the other loader never ran");
        drop(cache);
        collect_garbage();
    });
}

/// A failing loader ∥ a caller of the same key: nothing is cached, each caller gets an error,
/// and when only one loader ran, both got the same `Arc` (one failed query, not one per
/// waiter). Afterwards no flight is left behind: a third load runs its loader at once.
#[test]
fn a_failed_load_is_shared_and_leaves_no_flight() {
    loom::model(|| {
        let cache = Arc::new(cache(2));
        let loads = Arc::new(AtomicUsize::new(0));
        let fail = |loads: &AtomicUsize| {
            loads.fetch_add(1, Ordering::Relaxed);
            Err::<clockline_loom_tests::Payload, _>("down")
        };
        let other = {
            let (cache, loads) = (cache.clone(), loads.clone());
            thread::spawn(move || {
                let r = cache.try_get_or_insert_with(7, || fail(&loads));
                r.map(|_| ()).unwrap_err()
            })
        };
        let mine = cache.try_get_or_insert_with(7, || fail(&loads));
        let mine = mine.map(|_| ()).unwrap_err();
        let theirs = other.join().unwrap();
        let n = loads.load(Ordering::Relaxed);
        assert!(n == 1 || n == 2, "{n} loads");
        if n == 1 {
            assert!(
                std::sync::Arc::ptr_eq(&mine, &theirs),
                "one load, two errors"
            );
        }
        assert!(cache.peek(&7).is_none(), "a failure cached something");
        let drops = Drops::new(1);
        let v = cache.get_or_insert_with(7, || drops.payload(0, 30));
        assert_eq!(v.get(), 30);
        drop(v);
        drop(cache);
        collect_garbage();
    });
}

/// A loader that panics ∥ a caller of the same key: the panic reaches only the leader's caller;
/// a caller waiting on that flight wakes and loads with its own loader (a waiter left waiting
/// is a deadlock, which loom reports). (`resume_unwind`, not `panic!`: no hook, no output in
/// thousands of executions.)
#[test]
fn a_panicking_loader_wakes_its_waiters() {
    loom::model(|| {
        let drops = Drops::new(1);
        let cache = Arc::new(cache(2));
        let other = {
            let cache = cache.clone();
            thread::spawn(move || {
                catch_unwind(AssertUnwindSafe(|| {
                    cache.get_or_insert_with(7, || resume_unwind(Box::new("loader panicked")))
                }))
                .map(|p| p.get())
            })
        };
        let mine = cache.get_or_insert_with(7, || drops.payload(0, 10)).get();
        let theirs = other.join().unwrap();
        // The panicking loader ran only if it led; a caller that found the value needs none.
        assert_eq!(mine, 10);
        if let Ok(v) = theirs {
            assert_eq!(v, 10);
        }
        assert_eq!(cache.peek(&7).map(|p| p.get()), Some(10));
        drop(cache);
        collect_garbage();
    });
}

/// A caller loads k from a "database" ∥ a writer updates k there and invalidates it
/// (`invalidate_versioned`), the fleet-coherence case: whatever the order, the cache never ends
/// up holding the value from before the update. A load whose database read might predate the
/// update sees the invalidation's tombstone change during the load (`Tombstones::snapshot`),
/// and its value is returned but not cached.
#[test]
fn a_load_racing_an_update_never_caches_the_old_value() {
    loom::model(|| {
        let drops = Drops::new(1);
        let cache = Arc::new(versioned_cache(2));
        let db = Arc::new(AtomicU64::new(1));
        let writer = {
            let (cache, db) = (cache.clone(), db.clone());
            thread::spawn(move || {
                db.store(2, Ordering::SeqCst);
                let _ = cache.invalidate_versioned(7, 2);
            })
        };
        let loaded = cache
            .get_or_insert_with(7, || drops.payload(0, db.load(Ordering::SeqCst)))
            .get();
        writer.join().unwrap();
        assert!(loaded == 1 || loaded == 2);
        let cached = cache.peek(&7).map(|p| p.get());
        assert!(
            cached.is_none() || cached == Some(2),
            "the value from before the update ({cached:?}) outlived its invalidation"
        );
        drop(cache);
        collect_garbage();
    });
}

/// The same race with a loader that knows the version it read
/// (`try_get_or_insert_versioned_with`) and a writer that broadcasts the new value
/// (`insert_versioned`): the newer version is cached at the end, whichever came first.
#[test]
fn a_versioned_load_racing_a_versioned_update_keeps_the_newer() {
    loom::model(|| {
        let drops = Drops::new(2);
        let cache = Arc::new(versioned_cache(2));
        let db = Arc::new(AtomicU64::new(1));
        let writer = {
            let (cache, db) = (cache.clone(), db.clone());
            thread::spawn(move || {
                db.store(2, Ordering::SeqCst);
                // Refused (`Stale`) if the load read version 2 and cached it first.
                let _ = cache.insert_versioned(7, drops.payload(1, 2), 2);
            })
        };
        let loaded = cache
            .try_get_or_insert_versioned_with(7, || {
                let n = db.load(Ordering::SeqCst);
                Ok::<_, ()>((drops.payload(0, n), n))
            })
            .unwrap()
            .get();
        writer.join().unwrap();
        assert!(loaded == 1 || loaded == 2);
        assert_eq!(
            cache.peek(&7).map(|p| p.get()),
            Some(2),
            "the older version won"
        );
        assert_eq!(cache.version_of(&7), Some(2));
        drop(cache);
        // The writer's payload went into the cache (or back in the refusal); the loader's, if
        // it ran, to its caller.
        drops.assert_dropped_once(&[1]);
    });
}

/// The async form: a caller whose future is dropped while it may lead (its loader never
/// finishes) ∥ a caller blocked on the same key. The second completes with its own value:
/// dropping the leading future abandons the flight and wakes its waiters' wakers (a waker never
/// woken leaves `block_on` parked, which loom reports as a deadlock).
#[test]
fn a_dropped_async_leader_wakes_its_waiters() {
    loom::model(|| {
        let drops = Drops::new(1);
        let cache = Arc::new(cache(2));
        let other = {
            let cache = cache.clone();
            thread::spawn(move || {
                let mut fut = pin!(cache.get_or_insert_with_async(7, std::future::pending()));
                let mut cx = Context::from_waker(Waker::noop());
                // Leads and waits on its loader, or waits on the other caller's flight, or
                // finds the value: then drops the future either way.
                match fut.as_mut().poll(&mut cx) {
                    Poll::Ready(v) => assert_eq!(v.get(), 10),
                    Poll::Pending => {}
                }
            })
        };
        let mine = loom::future::block_on(
            cache.get_or_insert_with_async(7, async { drops.payload(0, 10) }),
        );
        assert_eq!(mine.get(), 10);
        drop(mine);
        other.join().unwrap();
        assert_eq!(cache.peek(&7).map(|p| p.get()), Some(10));
        drop(cache);
        collect_garbage();
    });
}
