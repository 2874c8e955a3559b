//! Cache-aside loading (issue #3): single flight for `get_or_insert_with`, its fallible form and
//! their async forms, and what waiters see when the leader fails, panics or is cancelled.
//!
//! A broken single flight shows up as a hang as often as a wrong answer, so every test that
//! waits on other callers runs under a watchdog ([`within`], or `tokio::time::timeout`) that
//! fails it with a message instead of stalling CI. Where a test needs callers to overlap a
//! load, the loader waits until they have arrived rather than hoping a sleep is long enough.

use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

mod common;

use common::{wait_until, within, ManualClock, WATCHDOG};

use clockline::Cache;
use tokio::sync::{oneshot, Notify};
use tokio::time::{sleep, timeout};

/// How long a loader waits for other callers to arrive before going on without them.
const ARRIVAL: Duration = Duration::from_secs(3);

/// The async form of [`wait_until`].
async fn wait_until_async(limit: Duration, cond: impl Fn() -> bool) -> bool {
    let end = Instant::now() + limit;
    while !cond() {
        if Instant::now() >= end {
            return false;
        }
        sleep(Duration::from_millis(1)).await;
    }
    true
}

/// A minimal executor on std alone: polls `f` on this thread and parks between polls. Proves
/// the async loaders need no runtime, only a waker that works.
fn block_on<F: Future>(f: F) -> F::Output {
    struct Unpark(thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let mut f = pin!(f);
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        thread::park();
    }
}

/// An error type for fallible loaders.
#[derive(Debug, PartialEq, Eq)]
struct DbDown(u32);

/// Another error type: waiters that ask with it cannot receive a `DbDown`.
#[derive(Debug, PartialEq, Eq)]
struct TimedOut;

fn panic_message(p: &(dyn std::any::Any + Send)) -> &str {
    p.downcast_ref::<&str>()
        .copied()
        .or_else(|| p.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("<not a string>")
}

// ---------------------------------------------------------------------------------------------
// Sync single flight
// ---------------------------------------------------------------------------------------------

#[test]
fn one_loader_for_64_concurrent_misses_on_one_key() {
    within("64 concurrent misses", || {
        let cache: Cache<u64, String> = Cache::new(100);
        let calls = AtomicUsize::new(0);
        let barrier = Barrier::new(64);
        let values: Vec<String> = thread::scope(|s| {
            let callers: Vec<_> = (0..64)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        cache.get_or_insert_with(7, || {
                            calls.fetch_add(1, SeqCst);
                            thread::sleep(Duration::from_millis(50));
                            "seven".to_string()
                        })
                    })
                })
                .collect();
            callers.into_iter().map(|c| c.join().unwrap()).collect()
        });
        assert_eq!(
            calls.load(SeqCst),
            1,
            "64 concurrent misses on one key must run one loader between them"
        );
        assert_eq!(values.len(), 64);
        assert!(
            values.iter().all(|v| v == "seven"),
            "every caller gets the loaded value: {values:?}"
        );
        assert_eq!(
            cache.peek(&7).as_deref(),
            Some("seven"),
            "the value is cached"
        );
        let again = cache.get_or_insert_with(7, || panic!("a cached key must not load again"));
        assert_eq!(again, "seven");
    });
}

#[test]
fn different_keys_load_concurrently() {
    within("loads of 8 keys", || {
        const KEYS: usize = 8;
        let cache: Cache<usize, usize> = Cache::new(100);
        let entered = AtomicUsize::new(0);
        let inside = AtomicUsize::new(0);
        let most_inside = AtomicUsize::new(0);
        let barrier = Barrier::new(KEYS);
        thread::scope(|s| {
            for k in 0..KEYS {
                let (cache, entered, inside, most_inside, barrier) =
                    (&cache, &entered, &inside, &most_inside, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    let v = cache.get_or_insert_with(k, || {
                        entered.fetch_add(1, SeqCst);
                        let now = inside.fetch_add(1, SeqCst) + 1;
                        most_inside.fetch_max(now, SeqCst);
                        // Each loader stays until all eight are in: serialized loads would
                        // each wait out the timeout and never overlap.
                        wait_until(ARRIVAL, || entered.load(SeqCst) == KEYS);
                        inside.fetch_sub(1, SeqCst);
                        k * 10
                    });
                    assert_eq!(v, k * 10);
                });
            }
        });
        assert_eq!(entered.load(SeqCst), KEYS, "one loader per key");
        assert_eq!(
            most_inside.load(SeqCst),
            KEYS,
            "loaders of different keys must run at the same time, not one after another"
        );
        for k in 0..KEYS {
            assert_eq!(cache.get(&k), Some(k * 10));
        }
    });
}

#[test]
fn loader_may_use_the_cache_for_other_keys() {
    // If a flight-map lock were held while the loader runs, a nested load whose key falls in
    // the same shard would deadlock; 200 keys reach every shard with near certainty.
    within("nested loads", || {
        let cache: Cache<u64, u64> = Cache::new(1000);
        let v = cache.get_or_insert_with(0, || {
            for k in 1..=200 {
                assert_eq!(cache.get_or_insert_with(k, || k + 1), k + 1);
            }
            cache.insert(500, 5).unwrap();
            assert_eq!(cache.remove(&500), Some(5));
            let e = cache.try_get_or_insert_with(501, || Err(DbDown(501)));
            assert_eq!(*e.unwrap_err(), DbDown(501));
            7
        });
        assert_eq!(v, 7);
        assert_eq!(cache.get(&0), Some(7));
        assert_eq!(cache.get(&200), Some(201));
    });
}

// ---------------------------------------------------------------------------------------------
// Failing loaders
// ---------------------------------------------------------------------------------------------

#[test]
fn failed_load_caches_nothing_and_waiters_share_the_error() {
    within("failing loads", || {
        const CALLERS: usize = 16;
        let cache: Cache<u64, u64> = Cache::new(100);

        let e = cache.try_get_or_insert_with(1, || Err(DbDown(1)));
        assert_eq!(*e.unwrap_err(), DbDown(1));
        assert!(!cache.contains_key(&1), "a failed load caches nothing");

        let calls = AtomicUsize::new(0);
        let arrived = AtomicUsize::new(0);
        let barrier = Barrier::new(CALLERS);
        let results: Vec<Result<u64, Arc<DbDown>>> = thread::scope(|s| {
            let callers: Vec<_> = (0..CALLERS)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        arrived.fetch_add(1, SeqCst);
                        cache.try_get_or_insert_with(2, || {
                            calls.fetch_add(1, SeqCst);
                            // Fail only once every caller is on its way in, and give the last
                            // ones time to join the flight.
                            wait_until(ARRIVAL, || arrived.load(SeqCst) == CALLERS);
                            thread::sleep(Duration::from_millis(50));
                            Err(DbDown(2))
                        })
                    })
                })
                .collect();
            callers.into_iter().map(|c| c.join().unwrap()).collect()
        });
        assert_eq!(calls.load(SeqCst), 1, "one failing loader for all callers");
        let first = results[0].as_ref().expect_err("the load failed");
        assert_eq!(**first, DbDown(2));
        for r in &results {
            let e = r.as_ref().expect_err("every caller sees the failure");
            assert!(
                Arc::ptr_eq(e, first),
                "waiters with the leader's error type get the leader's Arc, not a copy"
            );
        }
        assert_eq!(cache.get(&2), None, "a failed load caches nothing");

        // The failure is not remembered: the next call runs its loader again.
        let again = cache.try_get_or_insert_with(2, || {
            calls.fetch_add(1, SeqCst);
            Err(DbDown(22))
        });
        let again = again.unwrap_err();
        assert_eq!(*again, DbDown(22));
        assert!(!Arc::ptr_eq(&again, first));
        assert_eq!(calls.load(SeqCst), 2);
        let ok = cache.try_get_or_insert_with(2, || {
            calls.fetch_add(1, SeqCst);
            Ok::<_, DbDown>(222)
        });
        assert_eq!(ok, Ok(222));
        assert_eq!(calls.load(SeqCst), 3);
        assert_eq!(cache.get(&2), Some(222));
    });
}

#[test]
fn waiters_with_another_error_type_or_none_retry_with_their_own_loader() {
    within("waiters of a failing leader", || {
        let cache: Cache<u64, u64> = Cache::new(100);
        let (started_tx, started) = mpsc::channel();
        let arrived = AtomicUsize::new(0);
        let same_type_calls = AtomicUsize::new(0);
        let retry_calls = AtomicUsize::new(0);
        thread::scope(|s| {
            let leader = s.spawn(|| {
                cache.try_get_or_insert_with(5, || {
                    started_tx.send(()).unwrap();
                    wait_until(ARRIVAL, || arrived.load(SeqCst) == 3);
                    thread::sleep(Duration::from_millis(50));
                    Err(DbDown(5))
                })
            });
            started.recv().unwrap();
            let same_type = s.spawn(|| {
                arrived.fetch_add(1, SeqCst);
                cache.try_get_or_insert_with(5, || {
                    same_type_calls.fetch_add(1, SeqCst);
                    Ok::<_, DbDown>(50)
                })
            });
            let other_type = s.spawn(|| {
                arrived.fetch_add(1, SeqCst);
                cache.try_get_or_insert_with(5, || {
                    retry_calls.fetch_add(1, SeqCst);
                    thread::sleep(Duration::from_millis(20));
                    Ok::<_, TimedOut>(51)
                })
            });
            let infallible = s.spawn(|| {
                arrived.fetch_add(1, SeqCst);
                cache.get_or_insert_with(5, || {
                    retry_calls.fetch_add(1, SeqCst);
                    thread::sleep(Duration::from_millis(20));
                    52
                })
            });

            let leader_err = leader
                .join()
                .unwrap()
                .expect_err("the leader's loader failed");
            assert_eq!(*leader_err, DbDown(5));
            let same = same_type.join().unwrap();
            let same = same.expect_err("a waiter with the leader's error type gets its error");
            assert!(Arc::ptr_eq(&same, &leader_err));
            assert_eq!(same_type_calls.load(SeqCst), 0, "and runs no loader");

            let other = other_type
                .join()
                .unwrap()
                .expect("a waiter with another error type loads for itself");
            let plain = infallible
                .join()
                .expect("the infallible form must not receive the leader's error");
            assert!(other == 51 || other == 52, "got {other}");
            assert_eq!(
                other, plain,
                "the two retrying waiters share one new flight, so one value"
            );
            assert_eq!(
                retry_calls.load(SeqCst),
                1,
                "the retry is single flight too: one of the two loaders runs"
            );
            assert_eq!(cache.get(&5), Some(other));
        });
    });
}

// ---------------------------------------------------------------------------------------------
// Panicking loaders
// ---------------------------------------------------------------------------------------------

#[test]
fn panicking_loader_panics_its_caller_only_and_a_waiter_loads() {
    within("waiters of a panicking leader", || {
        const WAITERS: usize = 8;
        let cache: Cache<u64, u64> = Cache::new(1000);
        let (started_tx, started) = mpsc::channel();
        let arrived = AtomicUsize::new(0);
        let waiter_calls = AtomicUsize::new(0);
        thread::scope(|s| {
            let leader = s.spawn(|| {
                panic::catch_unwind(AssertUnwindSafe(|| {
                    cache.get_or_insert_with(9, || -> u64 {
                        started_tx.send(()).unwrap();
                        wait_until(ARRIVAL, || arrived.load(SeqCst) == WAITERS);
                        thread::sleep(Duration::from_millis(50));
                        panic!("loader exploded")
                    })
                }))
            });
            started.recv().unwrap();
            let waiters: Vec<_> = (0..WAITERS)
                .map(|_| {
                    s.spawn(|| {
                        arrived.fetch_add(1, SeqCst);
                        cache.get_or_insert_with(9, || {
                            waiter_calls.fetch_add(1, SeqCst);
                            thread::sleep(Duration::from_millis(20));
                            90
                        })
                    })
                })
                .collect();
            let payload = leader
                .join()
                .unwrap()
                .expect_err("the panic reaches the leader's caller");
            assert_eq!(panic_message(&*payload), "loader exploded");
            for w in waiters {
                let v = w
                    .join()
                    .expect("the leader's panic must not reach a waiter");
                assert_eq!(v, 90);
            }
        });
        assert_eq!(
            waiter_calls.load(SeqCst),
            1,
            "after the abandoned flight, one waiter loads and the others wait for it"
        );
        assert_eq!(cache.get(&9), Some(90));

        // Nothing is poisoned: the same key and others load as usual afterwards.
        assert_eq!(cache.remove(&9), Some(90));
        assert_eq!(cache.get_or_insert_with(9, || 91), 91);
        let again = panic::catch_unwind(AssertUnwindSafe(|| {
            cache.get_or_insert_with(10, || panic!("again"))
        }));
        assert!(again.is_err());
        assert_eq!(cache.get_or_insert_with(10, || 100), 100);
        for k in 100..300 {
            assert_eq!(cache.get_or_insert_with(k, || k * 2), k * 2);
        }
        let e = cache.try_get_or_insert_with(300, || Err(DbDown(300)));
        assert_eq!(*e.unwrap_err(), DbDown(300));
    });
}

// ---------------------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------------------

#[test]
fn stats_count_loads_ok_and_failed() {
    within("stats", || {
        let cache: Cache<u64, u64> = Cache::builder()
            .max_capacity(100)
            .record_stats()
            .build()
            .unwrap();
        let loads = |c: &Cache<u64, u64>| {
            let s = c.stats().unwrap();
            (s.loads_ok, s.loads_failed)
        };
        assert_eq!(loads(&cache), (0, 0));
        assert_eq!(cache.get_or_insert_with(1, || 10), 10);
        assert_eq!(loads(&cache), (1, 0));
        assert_eq!(
            cache.get_or_insert_with(1, || 11),
            10,
            "a hit loads nothing"
        );
        assert_eq!(loads(&cache), (1, 0));
        assert!(cache.try_get_or_insert_with(2, || Err(DbDown(2))).is_err());
        assert_eq!(loads(&cache), (1, 1));

        // 16 callers, one load: counted once.
        let barrier = Barrier::new(16);
        thread::scope(|s| {
            for _ in 0..16 {
                s.spawn(|| {
                    barrier.wait();
                    cache.get_or_insert_with(3, || {
                        thread::sleep(Duration::from_millis(30));
                        30
                    })
                });
            }
        });
        assert_eq!(loads(&cache), (2, 1), "a shared load counts once");

        assert_eq!(
            block_on(cache.get_or_insert_with_async(4, async { 40 })),
            40
        );
        assert_eq!(loads(&cache), (3, 1));
        let r = block_on(cache.try_get_or_insert_with_async(5, async { Err(DbDown(5)) }));
        assert_eq!(*r.unwrap_err(), DbDown(5));
        assert_eq!(loads(&cache), (3, 2));
        assert!(cache.stats().unwrap().hits >= 1);
    });
}

#[test]
fn stats_count_a_panicking_loader_as_failed() {
    // `CacheStats::loads_failed` is documented as "Loader calls that returned an error or
    // panicked".
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(100)
        .record_stats()
        .build()
        .unwrap();
    let r = panic::catch_unwind(AssertUnwindSafe(|| {
        cache.get_or_insert_with(1, || panic!("loader exploded"))
    }));
    assert!(r.is_err());
    let s = cache.stats().unwrap();
    assert_eq!(
        (s.loads_ok, s.loads_failed),
        (0, 1),
        "a loader that panicked must count in loads_failed (CacheStats docs); \
         load_sync/try_get_or_insert_with_async count nothing when `init` unwinds"
    );
}

#[test]
fn stats_load_time_is_measured_on_the_injected_clock() {
    // `CacheStats::load_time` is documented as "Time spent in loader calls, on the injected
    // clock": a loader that takes 2 s on the cache's clock adds 2 s, however fast it really is.
    let clock = ManualClock::new();
    clock.advance(Duration::from_secs(1000));
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(100)
        .record_stats()
        .clock(clock.clone())
        .build()
        .unwrap();
    let v = cache.get_or_insert_with(1, || {
        clock.advance(Duration::from_secs(2));
        10
    });
    assert_eq!(v, 10);
    let r = cache.try_get_or_insert_with(2, || {
        clock.advance(Duration::from_secs(3));
        Err(DbDown(2))
    });
    assert!(r.is_err());
    assert_eq!(
        cache.stats().unwrap().load_time,
        Duration::from_secs(5),
        "load_time must be read on the cache's (injected) clock, as CacheStats documents"
    );
}

// ---------------------------------------------------------------------------------------------
// Async
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn async_single_flight_across_32_tasks() {
    let cache = Arc::new(Cache::<u64, u64>::new(100));
    let calls = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(32));
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (cache, calls, barrier) = (cache.clone(), calls.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                cache
                    .get_or_insert_with_async(3, async {
                        calls.fetch_add(1, SeqCst);
                        sleep(Duration::from_millis(50)).await;
                        33
                    })
                    .await
            })
        })
        .collect();
    for t in tasks {
        let v = timeout(WATCHDOG, t).await.expect("an async caller hung");
        assert_eq!(v.unwrap(), 33);
    }
    assert_eq!(calls.load(SeqCst), 1, "32 tasks, one loader future polled");
    assert_eq!(cache.get(&3), Some(33));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn async_failed_load_shares_the_error() {
    const TASKS: usize = 8;
    let cache = Arc::new(Cache::<u64, u64>::new(100));
    let calls = Arc::new(AtomicUsize::new(0));
    let arrived = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (cache, calls, arrived) = (cache.clone(), calls.clone(), arrived.clone());
            tokio::spawn(async move {
                arrived.fetch_add(1, SeqCst);
                cache
                    .try_get_or_insert_with_async(4, async {
                        calls.fetch_add(1, SeqCst);
                        wait_until_async(ARRIVAL, || arrived.load(SeqCst) == TASKS).await;
                        sleep(Duration::from_millis(50)).await;
                        Err::<u64, _>(DbDown(4))
                    })
                    .await
            })
        })
        .collect();
    let mut errors = Vec::new();
    for t in tasks {
        let r = timeout(WATCHDOG, t).await.expect("an async caller hung");
        errors.push(r.unwrap().expect_err("the load failed"));
    }
    assert_eq!(calls.load(SeqCst), 1);
    assert_eq!(*errors[0], DbDown(4));
    assert!(errors.iter().all(|e| Arc::ptr_eq(e, &errors[0])));
    assert_eq!(cache.get(&4), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn async_cancelled_waiter_does_not_disturb_the_flight() {
    let cache = Arc::new(Cache::<u64, u64>::new(100));
    let calls = Arc::new(AtomicUsize::new(0));
    let waiter_calls = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(Notify::new());
    let (started_tx, started) = oneshot::channel();
    let leader = {
        let (cache, calls, release) = (cache.clone(), calls.clone(), release.clone());
        tokio::spawn(async move {
            cache
                .get_or_insert_with_async(4, async {
                    calls.fetch_add(1, SeqCst);
                    started_tx.send(()).unwrap();
                    release.notified().await;
                    44
                })
                .await
        })
    };
    started.await.unwrap();
    let waiter = |cache: Arc<Cache<u64, u64>>, calls: Arc<AtomicUsize>| async move {
        cache
            .get_or_insert_with_async(4, async {
                calls.fetch_add(1, SeqCst);
                0
            })
            .await
    };

    // A waiter cancelled by a timeout, another by aborting its task.
    let r = timeout(
        Duration::from_millis(20),
        waiter(cache.clone(), waiter_calls.clone()),
    )
    .await;
    assert!(r.is_err(), "the waiter waits for the leader: {r:?}");
    let aborted = tokio::spawn(waiter(cache.clone(), waiter_calls.clone()));
    let patient = tokio::spawn(waiter(cache.clone(), waiter_calls.clone()));
    sleep(Duration::from_millis(20)).await;
    assert!(!aborted.is_finished() && !patient.is_finished());
    aborted.abort();
    assert!(aborted.await.unwrap_err().is_cancelled());
    assert!(
        !leader.is_finished(),
        "dropped waiters leave the flight alone"
    );

    release.notify_one();
    let v = timeout(WATCHDOG, leader).await.expect("the leader hung");
    assert_eq!(v.unwrap(), 44);
    let v = timeout(WATCHDOG, patient).await.expect("a waiter hung");
    assert_eq!(v.unwrap(), 44);
    assert_eq!(calls.load(SeqCst), 1);
    assert_eq!(waiter_calls.load(SeqCst), 0, "no waiter ran its own loader");
    assert_eq!(cache.get(&4), Some(44));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn async_cancelled_loader_hands_the_load_to_a_waiter() {
    const WAITERS: usize = 4;
    let cache = Arc::new(Cache::<u64, u64>::new(100));
    let waiter_calls = Arc::new(AtomicUsize::new(0));
    let (started_tx, started) = oneshot::channel();
    let leader = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .get_or_insert_with_async(6, async {
                    started_tx.send(()).unwrap();
                    std::future::pending::<u64>().await
                })
                .await
        })
    };
    started.await.unwrap();
    let waiters: Vec<_> = (0..WAITERS)
        .map(|_| {
            let (cache, calls) = (cache.clone(), waiter_calls.clone());
            tokio::spawn(async move {
                cache
                    .get_or_insert_with_async(6, async {
                        calls.fetch_add(1, SeqCst);
                        sleep(Duration::from_millis(20)).await;
                        66
                    })
                    .await
            })
        })
        .collect();
    sleep(Duration::from_millis(50)).await;
    assert_eq!(
        waiter_calls.load(SeqCst),
        0,
        "the waiters wait on the leader"
    );
    assert!(waiters.iter().all(|w| !w.is_finished()));

    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    for w in waiters {
        let v = timeout(WATCHDOG, w)
            .await
            .expect("a waiter was never woken after its leader's future was dropped");
        assert_eq!(v.unwrap(), 66);
    }
    assert_eq!(
        waiter_calls.load(SeqCst),
        1,
        "one waiter leads the new attempt with its own future; the others wait for it"
    );
    assert_eq!(cache.get(&6), Some(66));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_and_async_callers_share_one_flight() {
    const WAITERS: usize = 8;
    let cache = Arc::new(Cache::<u64, u64>::new(100));

    // A sync leader, async waiters.
    let arrived = Arc::new(AtomicUsize::new(0));
    let async_calls = Arc::new(AtomicUsize::new(0));
    let (started_tx, started) = oneshot::channel();
    let sync_leader = {
        let (cache, arrived) = (cache.clone(), arrived.clone());
        thread::spawn(move || {
            cache.get_or_insert_with(8, || {
                started_tx.send(()).unwrap();
                wait_until(ARRIVAL, || arrived.load(SeqCst) == WAITERS);
                thread::sleep(Duration::from_millis(50));
                80
            })
        })
    };
    started.await.unwrap();
    let waiters: Vec<_> = (0..WAITERS)
        .map(|_| {
            let (cache, arrived, calls) = (cache.clone(), arrived.clone(), async_calls.clone());
            tokio::spawn(async move {
                arrived.fetch_add(1, SeqCst);
                cache
                    .get_or_insert_with_async(8, async {
                        calls.fetch_add(1, SeqCst);
                        0
                    })
                    .await
            })
        })
        .collect();
    for w in waiters {
        let v = timeout(WATCHDOG, w).await.expect("an async waiter hung");
        assert_eq!(v.unwrap(), 80);
    }
    assert_eq!(
        async_calls.load(SeqCst),
        0,
        "async waiters joined the sync load"
    );
    let v = tokio::task::spawn_blocking(move || sync_leader.join().unwrap());
    assert_eq!(v.await.unwrap(), 80);

    // An async leader, sync waiters (on blocking threads, not runtime workers).
    let arrived = Arc::new(AtomicUsize::new(0));
    let sync_calls = Arc::new(AtomicUsize::new(0));
    let (started_tx, started) = oneshot::channel();
    let async_leader = {
        let (cache, arrived) = (cache.clone(), arrived.clone());
        tokio::spawn(async move {
            cache
                .get_or_insert_with_async(9, async {
                    started_tx.send(()).unwrap();
                    wait_until_async(ARRIVAL, || arrived.load(SeqCst) == WAITERS).await;
                    sleep(Duration::from_millis(50)).await;
                    90
                })
                .await
        })
    };
    started.await.unwrap();
    let waiters: Vec<_> = (0..WAITERS)
        .map(|_| {
            let (cache, arrived, calls) = (cache.clone(), arrived.clone(), sync_calls.clone());
            tokio::task::spawn_blocking(move || {
                arrived.fetch_add(1, SeqCst);
                cache.get_or_insert_with(9, || {
                    calls.fetch_add(1, SeqCst);
                    0
                })
            })
        })
        .collect();
    for w in waiters {
        let v = timeout(WATCHDOG, w).await.expect("a sync waiter hung");
        assert_eq!(v.unwrap(), 90);
    }
    assert_eq!(
        sync_calls.load(SeqCst),
        0,
        "sync waiters joined the async load"
    );
    let v = timeout(WATCHDOG, async_leader)
        .await
        .expect("the leader hung");
    assert_eq!(v.unwrap(), 90);
}

#[test]
fn async_loader_needs_no_runtime() {
    // Driven by a std-only executor: the async waiter is woken through its `Waker` when a sync
    // leader on another thread finishes. A waker that was never called would park this thread
    // for good, which the watchdog reports.
    within("async waiter without a runtime", || {
        let cache: Cache<u64, u64> = Cache::new(100);
        assert_eq!(
            block_on(cache.get_or_insert_with_async(1, async { 11 })),
            11
        );

        let (started_tx, started) = mpsc::channel();
        let joining = AtomicBool::new(false);
        let waiter_calls = AtomicUsize::new(0);
        thread::scope(|s| {
            let leader = s.spawn(|| {
                cache.get_or_insert_with(2, || {
                    started_tx.send(()).unwrap();
                    wait_until(ARRIVAL, || joining.load(SeqCst));
                    thread::sleep(Duration::from_millis(50));
                    22
                })
            });
            started.recv().unwrap();
            joining.store(true, SeqCst);
            let v = block_on(cache.get_or_insert_with_async(2, async {
                waiter_calls.fetch_add(1, SeqCst);
                0
            }));
            assert_eq!(v, 22);
            assert_eq!(leader.join().unwrap(), 22);
        });
        assert_eq!(
            waiter_calls.load(SeqCst),
            0,
            "the async caller joined the load"
        );
    });
}

/// Found in review: the leader's insert delivered its eviction listener calls while its flight
/// was still registered, so a listener that asked for the key being loaded waited on that
/// flight, which waited for the listener: a deadlock (once the key was evicted again by the
/// time the listener asked). The flight now ends before the listener hears of the evictions.
#[test]
fn a_listener_of_the_loaders_insert_may_load_the_same_key() {
    let handle: Arc<std::sync::OnceLock<std::sync::Weak<Cache<u64, u64>>>> = Arc::default();
    let seen = Arc::new(AtomicUsize::new(0));
    let (h, s) = (handle.clone(), seen.clone());
    let cache: Arc<Cache<u64, u64>> = Arc::new(
        Cache::builder()
            .max_capacity(1)
            .eviction_listener(move |k, _, _| {
                if *k != 1 {
                    return;
                }
                if let Some(c) = h.get().and_then(std::sync::Weak::upgrade) {
                    // Key 2's load evicted key 1. Another insert evicts key 2 again (as
                    // another thread could have), and the listener asks for key 2: a new load.
                    c.insert(3, 30).unwrap();
                    let v = c.get_or_insert_with(2, || 99);
                    s.store(v as usize, SeqCst);
                }
            })
            .build()
            .unwrap(),
    );
    handle.set(Arc::downgrade(&cache)).unwrap();
    cache.insert(1, 10).unwrap();
    let c = cache.clone();
    let v = within("a listener loading the key being loaded", move || {
        c.get_or_insert_with(2, || 20)
    });
    assert_eq!(v, 20);
    assert_eq!(seen.load(SeqCst), 99, "the listener loaded key 2 again");
}

/// Found in review: a waiter whose leader panicked looked the key up again with a counting
/// `get`, so one `get_or_insert_with` counted two misses. A retry now looks without counting.
#[test]
fn a_retry_after_a_failed_leader_counts_one_miss() {
    let cache: Arc<Cache<u64, u64>> = Arc::new(
        Cache::builder()
            .max_capacity(16)
            .record_stats()
            .build()
            .unwrap(),
    );
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let c = cache.clone();
    let leader = thread::spawn(move || {
        let _ = panic::catch_unwind(AssertUnwindSafe(|| {
            c.get_or_insert_with(1, || {
                started_tx.send(()).unwrap();
                go_rx.recv().unwrap();
                panic!("intentional: the leader fails");
            })
        }));
    });
    started_rx.recv().unwrap();
    let c = cache.clone();
    let waiter = thread::spawn(move || c.get_or_insert_with(1, || 7));
    // Let the waiter join the flight, then fail the leader. (Had the waiter not joined yet, it
    // would lead its own load and count one miss all the same: the test cannot fail falsely.)
    thread::sleep(Duration::from_millis(100));
    go_tx.send(()).unwrap();
    leader.join().unwrap();
    assert_eq!(waiter.join().unwrap(), 7);
    let s = cache.stats().unwrap();
    assert_eq!((s.hits, s.misses), (0, 2), "one miss per call");
}

/// A gate that blocks one chosen thread the first time it reaches a hook (a `Clone` below),
/// until the test opens it; every other thread, and every later call, passes.
#[derive(Debug)]
struct Gate {
    armed: std::sync::Mutex<Option<thread::ThreadId>>,
    reached: mpsc::SyncSender<()>,
    open: std::sync::Mutex<mpsc::Receiver<()>>,
}

impl Gate {
    fn new() -> (Self, mpsc::Receiver<()>, mpsc::SyncSender<()>) {
        let (reached, reached_rx) = mpsc::sync_channel(1);
        let (open_tx, open) = mpsc::sync_channel(1);
        let gate = Gate {
            armed: std::sync::Mutex::new(None),
            reached,
            open: std::sync::Mutex::new(open),
        };
        (gate, reached_rx, open_tx)
    }

    fn arm(&self, t: thread::ThreadId) {
        *self.armed.lock().unwrap() = Some(t);
    }

    fn pass(&self) {
        let me = thread::current().id();
        let mine = {
            let mut a = self.armed.lock().unwrap();
            if *a == Some(me) {
                *a = None;
                true
            } else {
                false
            }
        };
        if mine {
            self.reached.send(()).unwrap();
            self.open.lock().unwrap().recv().unwrap();
        }
    }
}

/// Runs `f` on a new thread whose first pass through each of `gates` blocks. The gates are
/// armed before `f` starts: armed after, a fast thread would pass them first and the test
/// would wait for it forever (it did once, under ASan).
fn spawn_armed<T: Send + 'static>(
    gates: &[&Gate],
    f: impl FnOnce() -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    let (start, started) = mpsc::channel::<()>();
    let t = thread::spawn(move || {
        started.recv().unwrap();
        f()
    });
    for g in gates {
        g.arm(t.thread().id());
    }
    start.send(()).unwrap();
    t
}

/// A key whose `Clone` passes its gate (the leader clones the key to register its flight).
#[derive(Debug)]
struct GatedKey(u64, Arc<Gate>);

impl Clone for GatedKey {
    fn clone(&self) -> Self {
        self.1.pass();
        GatedKey(self.0, self.1.clone())
    }
}
/// `PartialEq`, `Eq` and `Hash` by the number in field 0 alone, for keys that carry a hook.
macro_rules! keyed_by_number {
    ($($t:ty),*) => {$(
        impl PartialEq for $t {
            fn eq(&self, o: &Self) -> bool {
                self.0 == o.0
            }
        }
        impl Eq for $t {}
        impl std::hash::Hash for $t {
            fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
                self.0.hash(h);
            }
        }
    )*};
}
keyed_by_number!(GatedKey, CountedKey);

/// A value whose `Clone` passes its gate (a lookup clones the value it returns).
#[derive(Debug)]
struct GatedValue(u64, Arc<Gate>);

impl Clone for GatedValue {
    fn clone(&self) -> Self {
        self.1.pass();
        GatedValue(self.0, self.1.clone())
    }
}
impl PartialEq for GatedValue {
    fn eq(&self, o: &Self) -> bool {
        self.0 == o.0
    }
}

/// A leader that finds the key cached after all (it was inserted between its miss and its
/// registration) must not hand that value to the waiters: a waiter may have started after the
/// value expired, and would return it. Found by the configuration fuzzer (seed 1775 of a long
/// run: `try_get_or_insert_with` returned a value expired 1,100 s before the call began).
///
/// The gates stop the leader twice: while it registers its flight (cloning the key), so that
/// the value can be inserted after its miss; and while it clones the value it found, so that
/// the value can expire and a waiter can start, miss, and join the flight. `load` runs one
/// `get_or_insert_with`, sync or async.
fn waiter_after_expiry(load: fn(&Cache<GatedKey, GatedValue>, GatedKey, GatedValue) -> GatedValue) {
    within("a waiter and an expired value", move || {
        let (kg, key_reached, key_open) = Gate::new();
        let (vg, value_reached, value_open) = Gate::new();
        let (kg, vg) = (Arc::new(kg), Arc::new(vg));
        let clock = ManualClock::new();
        let cache: Arc<Cache<GatedKey, GatedValue>> = Arc::new(
            Cache::builder()
                .max_capacity(16)
                .time_to_live(Duration::from_millis(10))
                .clock(clock.clone())
                .build()
                .unwrap(),
        );
        let c = cache.clone();
        let (k, v) = (GatedKey(1, kg.clone()), GatedValue(0, vg.clone()));
        let leader = spawn_armed(&[&kg, &vg], move || load(&c, k, v));
        // The leader missed and is registering its flight: the value arrives now.
        key_reached.recv().unwrap();
        cache
            .insert(GatedKey(1, kg.clone()), GatedValue(10, vg.clone()))
            .unwrap();
        key_open.send(()).unwrap();
        // The leader found the value and is cloning it. It expires; a waiter then asks.
        value_reached.recv().unwrap();
        clock.advance(Duration::from_secs(1));
        let c = cache.clone();
        let (k, v) = (GatedKey(1, kg.clone()), GatedValue(20, vg.clone()));
        let waiter = thread::spawn(move || load(&c, k, v));
        // Let the waiter miss and join the flight. (Had it not joined yet, it would load its
        // own value, and the test would pass without having tested the race: it cannot fail
        // falsely.)
        thread::sleep(Duration::from_millis(100));
        value_open.send(()).unwrap();
        assert_eq!(leader.join().unwrap().0, 10, "the leader saw it live");
        assert_eq!(
            waiter.join().unwrap().0,
            20,
            "the waiter asked after the value expired"
        );
    });
}

#[test]
fn a_waiter_never_gets_a_value_that_expired_before_it_asked() {
    waiter_after_expiry(|c, k, v| c.get_or_insert_with(k, move || v));
}

#[test]
fn an_async_waiter_never_gets_a_value_that_expired_before_it_asked() {
    waiter_after_expiry(|c, k, v| block_on(c.get_or_insert_with_async(k, async move { v })));
}

/// A key whose `==` passes its gate (a lookup compares the key it finds with the one asked).
#[derive(Debug)]
struct EqGatedKey(u64, Arc<Gate>);

impl Clone for EqGatedKey {
    fn clone(&self) -> Self {
        EqGatedKey(self.0, self.1.clone())
    }
}
impl PartialEq for EqGatedKey {
    fn eq(&self, o: &Self) -> bool {
        self.1.pass();
        self.0 == o.0
    }
}
impl Eq for EqGatedKey {}
impl std::hash::Hash for EqGatedKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.0.hash(h);
    }
}

/// The loaded value's twin of [`waiter_after_expiry`]: a leader that read the clock for its
/// insert and then stalled (on a busy lock or an eviction; here in the key's `==`, in the
/// insert's lookup) gives its value a deadline that may pass before a waiter asks. That waiter
/// must not take it: it looks again and loads its own. Found in review, after the fuzzer's
/// bug above. `load` runs one `get_or_insert_with`, sync or async.
fn waiter_after_loaded_expiry(load: fn(&Cache<EqGatedKey, u64>, EqGatedKey, Loader) -> u64) {
    within("a waiter and an expired loaded value", move || {
        let (gate, reached, open) = Gate::new();
        let gate = Arc::new(gate);
        let clock = ManualClock::new();
        let cache: Arc<Cache<EqGatedKey, u64>> = Arc::new(
            Cache::builder()
                .max_capacity(16)
                .time_to_live(Duration::from_millis(10))
                .clock(clock.clone())
                .build()
                .unwrap(),
        );
        // An expired entry, so that the leader's insert compares keys (and stops there).
        cache.insert(EqGatedKey(1, gate.clone()), 10).unwrap();
        clock.advance(Duration::from_secs(1));
        let c = cache.clone();
        let (k, g) = (EqGatedKey(1, gate.clone()), gate.clone());
        // The loader arms the gate on the leader's thread: the next `==` there is the insert's
        // lookup, after the insert has read the clock.
        let leader = thread::spawn(move || {
            load(
                &c,
                k,
                Box::new(move || {
                    g.arm(thread::current().id());
                    20
                }),
            )
        });
        reached.recv().unwrap();
        clock.advance(Duration::from_secs(1));
        let c = cache.clone();
        let k = EqGatedKey(1, gate.clone());
        let waiter = thread::spawn(move || load(&c, k, Box::new(|| 30)));
        // Let the waiter miss and join the flight (had it not joined yet, it would load its own
        // value: the test cannot fail falsely).
        thread::sleep(Duration::from_millis(100));
        open.send(()).unwrap();
        assert_eq!(
            leader.join().unwrap(),
            20,
            "the leader returns what it loaded"
        );
        assert_eq!(
            waiter.join().unwrap(),
            30,
            "the leader's value expired before the waiter asked"
        );
    });
}

type Loader = Box<dyn FnOnce() -> u64 + Send>;

#[test]
fn a_waiter_never_gets_a_loaded_value_that_expired_before_it_asked() {
    waiter_after_loaded_expiry(|c, k, f| c.get_or_insert_with(k, f));
}

#[test]
fn an_async_waiter_never_gets_a_loaded_value_that_expired_before_it_asked() {
    waiter_after_loaded_expiry(|c, k, f| {
        block_on(c.get_or_insert_with_async(k, async move { f() }))
    });
}

/// Found in review: the leader's second look (and a waiter's retry) used `peek`, which neither
/// marks the entry nor moves its idle deadline, so an entry a loader call returned could expire
/// a time-to-idle after an earlier read instead of after that call. The key gate stops the
/// leader after its miss, while it registers its flight, so that the value arrives and ages
/// before the leader's second look finds it.
#[test]
fn a_loader_hit_moves_the_idle_deadline() {
    within("a loader hit and time-to-idle", || {
        let (kg, key_reached, key_open) = Gate::new();
        let (vg, _, _) = Gate::new();
        let (kg, vg) = (Arc::new(kg), Arc::new(vg));
        let clock = ManualClock::new();
        let cache: Arc<Cache<GatedKey, GatedValue>> = Arc::new(
            Cache::builder()
                .max_capacity(16)
                .time_to_idle(Duration::from_secs(10))
                .clock(clock.clone())
                .build()
                .unwrap(),
        );
        let c = cache.clone();
        let (k, v) = (GatedKey(1, kg.clone()), GatedValue(0, vg.clone()));
        let leader = spawn_armed(&[&kg], move || c.get_or_insert_with(k, move || v));
        key_reached.recv().unwrap();
        cache
            .insert(GatedKey(1, kg.clone()), GatedValue(10, vg.clone()))
            .unwrap();
        clock.advance(Duration::from_secs(9));
        key_open.send(()).unwrap();
        assert_eq!(
            leader.join().unwrap().0,
            10,
            "the leader's second look found it"
        );
        clock.advance(Duration::from_secs(2));
        assert_eq!(
            cache.get(&GatedKey(1, kg.clone())).map(|v| v.0),
            Some(10),
            "read 2 s ago, with a 10 s time-to-idle"
        );
    });
}

/// A key whose `Eq` panics once, when armed. Only the test below uses it.
#[derive(Clone, Debug)]
struct EqPanicsOnce(u64);

static EQ_ARMED: AtomicBool = AtomicBool::new(false);

impl PartialEq for EqPanicsOnce {
    fn eq(&self, other: &Self) -> bool {
        if EQ_ARMED.swap(false, SeqCst) {
            panic!("intentional: Eq panics once");
        }
        self.0 == other.0
    }
}
impl Eq for EqPanicsOnce {}
impl std::hash::Hash for EqPanicsOnce {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.0.hash(h);
    }
}

/// A panic of the key's `Eq` while the leader ends its flight (looking its key up in the
/// flight map) still ends the flight: later misses on the key load it instead of waiting
/// forever. (The leader marked its flight done before that lookup, so the flight stayed
/// registered and never finished: every later miss on the key waited on it.)
#[test]
fn a_panic_while_ending_a_flight_leaves_no_flight_behind() {
    within("a miss after a flight whose end panicked", || {
        let cache: Arc<Cache<EqPanicsOnce, u64>> = Arc::new(Cache::new(100));
        let first = panic::catch_unwind(AssertUnwindSafe(|| {
            cache.get_or_insert_with(EqPanicsOnce(1), || {
                // The cache is empty: the next `Eq` is the flight map's, as the flight ends.
                EQ_ARMED.store(true, SeqCst);
                10
            })
        }));
        EQ_ARMED.store(false, SeqCst);
        assert!(first.is_err(), "the panic of `Eq` reaches the caller");
        cache.remove(&EqPanicsOnce(1));
        assert_eq!(cache.get_or_insert_with(EqPanicsOnce(1), || 20), 20);
    });
}

/// How many more clones a [`ClonePanics`] allows before one panics; `None`: disarmed.
static CLONES_BEFORE_PANIC: std::sync::Mutex<Option<usize>> = std::sync::Mutex::new(None);

/// A key whose `Clone` panics once, after the armed number of clones.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ClonePanics(u64);

impl Clone for ClonePanics {
    fn clone(&self) -> Self {
        let mut left = CLONES_BEFORE_PANIC.lock().unwrap();
        match *left {
            Some(0) => {
                *left = None;
                drop(left);
                panic!("intentional: Clone of a key");
            }
            Some(n) => *left = Some(n - 1),
            None => {}
        }
        ClonePanics(self.0)
    }
}

/// Found in review: a leader registered its flight (one clone of the key, into the flight map)
/// and then cloned the key again for its own duty to end it. A panic of that second `Clone`
/// left the flight registered with no leader to end it: every later miss on the key waited on
/// it forever (the README: user code may panic, and the cache deadlocks nothing).
#[test]
fn a_panic_while_cloning_the_key_to_lead_leaves_no_flight_behind() {
    within("a miss after a leader whose key's Clone panicked", || {
        let cache: Cache<ClonePanics, u64> = Cache::new(100);
        // The flight map's clone passes; the leader's own clone panics.
        *CLONES_BEFORE_PANIC.lock().unwrap() = Some(1);
        let first = panic::catch_unwind(AssertUnwindSafe(|| {
            cache.get_or_insert_with(ClonePanics(1), || 10)
        }));
        *CLONES_BEFORE_PANIC.lock().unwrap() = None;
        let p = first.expect_err("the panic of `Clone` reaches the caller");
        assert_eq!(panic_message(&*p), "intentional: Clone of a key");
        assert_eq!(cache.get_or_insert_with(ClonePanics(1), || 20), 20);
    });
}

/// The async versioned loader stores the version it was told, as the sync one does
/// (tests/versions.rs), and shares its flights.
#[test]
fn the_async_versioned_loader_stores_its_version() {
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(100)
        .versioned()
        .build()
        .unwrap();
    let v =
        block_on(cache.try_get_or_insert_versioned_with_async(1, async { Ok::<_, ()>((10, 7)) }));
    assert_eq!(v, Ok(10));
    assert_eq!(cache.version_of(&1), Some(7));
    assert!(cache.insert_versioned(1, 60, 7).is_err(), "equal is stale");
    let r = block_on(
        cache.try_get_or_insert_versioned_with_async(2, async { Err::<(u64, u64), _>("down") }),
    );
    assert_eq!(*r.unwrap_err(), "down");
    assert_eq!(cache.get(&2), None, "a failure caches nothing");
}

/// A loader that reads `(value, version)`.
type VersionedLoader = Box<dyn FnOnce() -> (u64, u64) + Send>;

/// Found by a dry run of the fleet coherence layer: a waiter that joins a load which began
/// before newer data reached the cache took the leader's older value, though the cache had
/// refused to store it and this thread had already read a newer version. A value refused as
/// stale now goes to the leader's caller only (its call began before the newer data); waiters
/// look the cache up again and load their own.
fn waiter_after_a_stale_load(load: fn(&Cache<u64, u64>, VersionedLoader) -> u64) {
    within("a waiter and a load refused as stale", move || {
        let cache: Arc<Cache<u64, u64>> = Arc::new(
            Cache::builder()
                .max_capacity(100)
                .versioned()
                .build()
                .unwrap(),
        );
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let (started_tx, started_rx) = mpsc::channel::<()>();
        let c = cache.clone();
        let leader = thread::spawn(move || {
            load(
                &c,
                Box::new(move || {
                    // Reads the row at version 1, then stalls.
                    started_tx.send(()).unwrap();
                    go_rx.recv().unwrap();
                    (101, 1)
                }),
            )
        });
        started_rx.recv().unwrap();
        cache.insert_versioned(1, 102, 2).unwrap();
        assert_eq!(cache.get(&1), Some(102));
        assert_eq!(
            cache.invalidate_versioned(1, 3),
            clockline::Invalidation::Removed
        );
        let c = cache.clone();
        let waiter = thread::spawn(move || load(&c, Box::new(|| (103, 3))));
        // Let the waiter miss and join the flight (had it not joined yet, it would load its
        // own value: the test cannot fail falsely).
        thread::sleep(Duration::from_millis(100));
        go_tx.send(()).unwrap();
        assert_eq!(
            leader.join().unwrap(),
            101,
            "the leader returns what it loaded"
        );
        assert_eq!(
            waiter.join().unwrap(),
            103,
            "the waiter got version 1 after the cache had served version 2 and known of 3"
        );
        assert_eq!(cache.get(&1), Some(103));
    });
}

#[test]
fn a_waiter_never_gets_a_value_the_cache_refused_as_stale() {
    waiter_after_a_stale_load(|c, f| {
        c.try_get_or_insert_versioned_with(1, || Ok::<_, ()>(f()))
            .unwrap()
    });
}

#[test]
fn an_async_waiter_never_gets_a_value_the_cache_refused_as_stale() {
    waiter_after_a_stale_load(|c, f| {
        block_on(c.try_get_or_insert_versioned_with_async(1, async move { Ok::<_, ()>(f()) }))
            .unwrap()
    });
}

/// Found by a dry run of clockline in an async service (`examples/service_sim.rs`): in an
/// unversioned cache, a write-through `insert` of the new row that lands while a load of the
/// old row is in flight was overwritten when the load ended, and the old row served until its
/// TTL. The write now wins (as in a versioned cache, and in Guava's loading cache); the
/// leader's caller still gets what it loaded, and a waiter looks again and finds the write.
#[test]
fn a_write_during_a_load_wins_over_the_loaded_value() {
    for versioned in [false, true] {
        let mut b = Cache::builder().max_capacity(100);
        if versioned {
            b = b.versioned();
        }
        let cache: Cache<u64, &str> = b.build().unwrap();
        let release = Arc::new(AtomicBool::new(false));
        let r2 = release.clone();
        let load = std::future::poll_fn(move |_| {
            if r2.load(SeqCst) {
                Poll::Ready("old row (read before the write)")
            } else {
                Poll::Pending
            }
        });
        let mut leader = pin!(cache.get_or_insert_with_async(1, load));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(leader.as_mut().poll(&mut cx).is_pending());
        let mut waiter = pin!(cache.get_or_insert_with_async(1, async { "waiter's own load" }));
        assert!(
            waiter.as_mut().poll(&mut cx).is_pending(),
            "joined the flight"
        );
        // The service writes the row, then writes the cache through.
        cache.insert(1, "new row").unwrap();
        release.store(true, SeqCst);
        assert_eq!(
            leader.as_mut().poll(&mut cx),
            Poll::Ready("old row (read before the write)"),
            "the leader's caller gets what it loaded"
        );
        assert_eq!(cache.get(&1), Some("new row"), "versioned: {versioned}");
        assert_eq!(waiter.as_mut().poll(&mut cx), Poll::Ready("new row"));
    }
    // An expired entry is still replaced.
    let clock = ManualClock::new();
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(100)
        .time_to_live(Duration::from_secs(10))
        .clock(clock.clone())
        .build()
        .unwrap();
    let got = cache.get_or_insert_with(1, || {
        cache.insert(1, 5).unwrap();
        clock.advance(Duration::from_secs(11));
        7
    });
    assert_eq!(got, 7);
    assert_eq!(cache.get(&1), Some(7), "the write expired during the load");
}

/// On a multi-thread tokio runtime (4 workers), a task wakes an async leader of key 1 (into
/// this worker's LIFO slot) and then loads key 1 with the *sync* loader, directly or inside
/// `block_in_place`. The pair of values, or `None` if the runtime hung for 5 s (the hung
/// runtime's thread is then leaked with the test).
fn sync_load_beside_a_woken_async_leader(in_place: bool) -> Option<(u64, u64)> {
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .unwrap();
        let cache: Arc<Cache<u64, u64>> = Arc::new(Cache::new(100));
        let r = rt.block_on(async move {
            tokio::spawn(async move {
                let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
                let (led_tx, led_rx) = tokio::sync::oneshot::channel::<()>();
                let c = cache.clone();
                let leader = tokio::spawn(async move {
                    c.get_or_insert_with_async(1, async move {
                        led_tx.send(()).unwrap();
                        go_rx.await.unwrap();
                        10
                    })
                    .await
                });
                led_rx.await.unwrap(); // the leader registered its flight and is parked
                go_tx.send(()).unwrap(); // wakes the leader: into this worker's LIFO slot
                let load = || cache.get_or_insert_with(1, || 20);
                let v = if in_place {
                    tokio::task::block_in_place(load)
                } else {
                    load() // a handler calling the sync API, as if it were cheap
                };
                (v, leader.await.unwrap())
            })
            .await
            .unwrap()
        });
        let _ = done_tx.send(r);
    });
    done_rx.recv_timeout(Duration::from_secs(5)).ok()
}

/// A *sync* loader called from inside an async task (not `spawn_blocking`) on a multi-thread
/// tokio runtime, waiting on a flight whose async leader the same task just woke: the leader
/// sits in this worker's LIFO slot, which other workers do not steal, and the blocked worker
/// never runs it. Found by the async-service dry run; the loader docs now warn of it.
#[test]
#[ignore = "demonstrates a hang (leaks a runtime thread); run with --ignored"]
fn sync_loader_inside_an_async_task_can_hang_a_multi_thread_runtime() {
    let r = sync_load_beside_a_woken_async_leader(false);
    assert!(
        r.is_some(),
        "the runtime hung: a sync get_or_insert_with in an async task waits forever on the async leader it woke"
    );
}

/// The workaround: `block_in_place` lets the runtime hand this worker's queue (LIFO slot
/// included) to another thread before the sync loader blocks.
#[test]
fn sync_loader_inside_block_in_place_does_not_hang() {
    let r = sync_load_beside_a_woken_async_leader(true);
    assert_eq!(
        r,
        Some((10, 10)),
        "hung, or the sync caller loaded its own value"
    );
}

mod waker_retention {
    //! Found by a dry run of clockline in an async service (`examples/service_sim.rs`).
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll, Wake, Waker};

    /// A waker that counts how many of its kind are alive: a tokio waker holds its task's
    /// allocation (sized to the task's future) alive the same way.
    struct Counted(Arc<AtomicUsize>);
    impl Wake for Counted {
        fn wake(self: Arc<Self>) {}
    }
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    fn counted(live: &Arc<AtomicUsize>) -> Waker {
        live.fetch_add(1, Ordering::SeqCst);
        Waker::from(Arc::new(Counted(live.clone())))
    }

    /// The leader's load: pending until `release` is set, then 7.
    fn released_with_7(release: &Arc<std::sync::atomic::AtomicBool>) -> impl Future<Output = u64> {
        let release = release.clone();
        std::future::poll_fn(move |_cx| {
            if release.load(Ordering::SeqCst) {
                Poll::Ready(7)
            } else {
                Poll::Pending
            }
        })
    }

    /// A cancellation storm on a key whose load is slow: every request times out (its future
    /// is dropped) while the leader still loads. Each dropped waiter's waker stays in the
    /// flight until the load ends, so memory grows with the number of requests that gave up,
    /// not with those still waiting (with tokio, each waker keeps its whole task allocated).
    #[test]
    fn a_dropped_async_waiter_does_not_keep_its_waker_in_the_flight() {
        let cache: Cache<u64, u64> = Cache::new(100);
        let live = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let release = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let gate = released_with_7(&release);
        let mut leader = pin!(cache.get_or_insert_with_async(1, gate));
        let lw = counted(&live);
        assert!(leader
            .as_mut()
            .poll(&mut Context::from_waker(&lw))
            .is_pending());
        drop(tx);
        let _ = rx.try_recv();
        let base = live.load(Ordering::SeqCst);
        for _ in 0..1000 {
            let mut waiter = Box::pin(cache.get_or_insert_with_async(1, async { 8 }));
            let w = counted(&live);
            assert!(waiter
                .as_mut()
                .poll(&mut Context::from_waker(&w))
                .is_pending());
            drop(w);
            drop(waiter); // the request timed out
        }
        let retained = live.load(Ordering::SeqCst) - base;
        release.store(true, Ordering::SeqCst);
        assert_eq!(
            leader.as_mut().poll(&mut Context::from_waker(&lw)),
            Poll::Ready(7)
        );
        assert_eq!(
            retained, 0,
            "{retained} wakers of 1000 dropped waiters still held by the flight"
        );
    }

    /// Two waits on one key in the same task (same waker), one of them dropped: the other must
    /// still be woken (guards a fix that removes a dropped waiter's waker).
    #[test]
    fn a_waiter_in_the_same_task_as_a_dropped_one_is_still_woken() {
        let cache: Cache<u64, u64> = Cache::new(100);
        let live = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let gate = released_with_7(&release);
        let mut leader = pin!(cache.get_or_insert_with_async(1, gate));
        let lw = counted(&live);
        assert!(leader
            .as_mut()
            .poll(&mut Context::from_waker(&lw))
            .is_pending());
        struct Flag(std::sync::atomic::AtomicBool);
        impl Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let flag = Arc::new(Flag(std::sync::atomic::AtomicBool::new(false)));
        let w = Waker::from(flag.clone());
        let mut a = Box::pin(cache.get_or_insert_with_async(1, async { 8 }));
        let mut b = Box::pin(cache.get_or_insert_with_async(1, async { 9 }));
        assert!(a.as_mut().poll(&mut Context::from_waker(&w)).is_pending());
        assert!(b.as_mut().poll(&mut Context::from_waker(&w)).is_pending());
        drop(a);
        release.store(true, Ordering::SeqCst);
        assert_eq!(
            leader.as_mut().poll(&mut Context::from_waker(&lw)),
            Poll::Ready(7)
        );
        assert!(
            flag.0.load(Ordering::SeqCst),
            "the remaining waiter was woken"
        );
        assert_eq!(
            b.as_mut().poll(&mut Context::from_waker(&w)),
            Poll::Ready(7)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The `_by_ref` loaders
// ---------------------------------------------------------------------------------------------

/// A key that counts its clones: `ToOwned` of a `&CountedKey` is a clone. Compared and
/// hashed by its number only (`keyed_by_number!`).
#[derive(Debug)]
struct CountedKey(u64, Arc<AtomicUsize>);

impl Clone for CountedKey {
    fn clone(&self) -> Self {
        self.1.fetch_add(1, SeqCst);
        CountedKey(self.0, self.1.clone())
    }
}

#[test]
fn by_ref_loaders_make_no_owned_key_on_a_hit() {
    let clones = Arc::new(AtomicUsize::new(0));
    let key = CountedKey(5, clones.clone());
    let cache: Cache<CountedKey, u64> = Cache::new(16);
    assert_eq!(cache.get_or_insert_with_by_ref(&key, || 50), 50);
    let on_miss = clones.load(SeqCst);
    assert!(
        on_miss >= 1,
        "a miss makes the owned key from the borrowed one"
    );
    assert_eq!(cache.get_or_insert_with_by_ref(&key, || unreachable!()), 50);
    let r = cache.try_get_or_insert_with_by_ref(&key, || Err::<u64, _>("not called"));
    assert_eq!(r.unwrap(), 50);
    let r = block_on(cache.get_or_insert_with_by_ref_async(&key, async { unreachable!() }));
    assert_eq!(r, 50);
    assert_eq!(
        clones.load(SeqCst),
        on_miss,
        "a hit through a `_by_ref` loader clones no key"
    );
}

#[test]
fn by_ref_loaders_take_str_for_string_keys_and_count_one_lookup_per_call() {
    let cache: Cache<String, usize> = Cache::builder()
        .max_capacity(16)
        .record_stats()
        .build()
        .unwrap();
    assert_eq!(cache.get_or_insert_with_by_ref("abc", || 3), 3);
    assert_eq!(cache.get_or_insert_with_by_ref("abc", || unreachable!()), 3);
    let r = cache.try_get_or_insert_with_by_ref("de", || Err::<usize, _>("down"));
    assert_eq!(*r.unwrap_err(), "down");
    assert_eq!(cache.get("de"), None, "a failure caches nothing");
    let r = block_on(cache.try_get_or_insert_with_by_ref_async("de", async { Ok::<_, ()>(2) }));
    assert_eq!(r.unwrap(), 2);
    let s = cache.stats().unwrap();
    // Calls: miss+load, hit, miss+failed load, the `get` (a miss), async miss+load.
    assert_eq!((s.hits, s.misses), (1, 4), "one lookup counted per call");
    assert_eq!((s.loads_ok, s.loads_failed), (2, 1));
}

#[test]
fn by_ref_and_owned_callers_of_one_key_share_one_load() {
    within("by_ref single flight", || {
        let cache: Cache<String, u64> = Cache::new(100);
        let calls = AtomicUsize::new(0);
        let barrier = Barrier::new(16);
        let load = || {
            calls.fetch_add(1, SeqCst);
            thread::sleep(Duration::from_millis(50));
            Ok::<_, ()>(9)
        };
        let values: Vec<u64> = thread::scope(|s| {
            let callers: Vec<_> = (0..16)
                .map(|i| {
                    let (cache, barrier) = (&cache, &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        match i % 4 {
                            0 => cache.get_or_insert_with_by_ref("k", || load().unwrap()),
                            1 => cache.try_get_or_insert_with_by_ref("k", load).unwrap(),
                            2 => cache.get_or_insert_with("k".to_string(), || load().unwrap()),
                            _ => block_on(
                                cache.try_get_or_insert_with_by_ref_async("k", async { load() }),
                            )
                            .unwrap(),
                        }
                    })
                })
                .collect();
            callers.into_iter().map(|c| c.join().unwrap()).collect()
        });
        assert_eq!(calls.load(SeqCst), 1, "one loader for 16 misses on one key");
        assert!(values.iter().all(|&v| v == 9), "{values:?}");
    });
}

#[test]
fn by_ref_versioned_loaders_store_the_version() {
    let cache: Cache<String, &str> = Cache::builder()
        .max_capacity(16)
        .versioned()
        .build()
        .unwrap();
    let r = cache.try_get_or_insert_versioned_with_by_ref("row", || Ok::<_, ()>(("at 4", 4)));
    assert_eq!(r.unwrap(), "at 4");
    assert_eq!(cache.version_of("row"), Some(4));
    cache.remove("row");
    let r = block_on(
        cache.try_get_or_insert_versioned_with_by_ref_async("row", async {
            Ok::<_, ()>(("at 6", 6))
        }),
    );
    assert_eq!(r.unwrap(), "at 6");
    assert_eq!(cache.get_versioned("row"), Some(("at 6", 6)));
    assert!(
        cache
            .insert_versioned("row".to_string(), "at 5", 5)
            .is_err(),
        "an older versioned insert is refused after a by_ref load"
    );
}
