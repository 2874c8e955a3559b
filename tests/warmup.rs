//! Warm-up (issue #3): bounded concurrency, the report's counts, the rate limit measured on an
//! injected clock, and requests that arrive while a warm-up runs.

use std::collections::HashMap;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

mod common;

use common::{wait_until, within};

use clockline::{Cache, Clock, WarmUp, WarmUpReport};

/// How long a loader waits for an event from another thread before going on without it.
const ARRIVAL: Duration = Duration::from_secs(3);

fn workers(n: usize) -> WarmUp {
    WarmUp::new(NonZeroUsize::new(n).unwrap())
}

#[derive(Debug)]
struct DbDown;

/// A clock that moves only when told to. `sleep(d)` returns at once, with the clock moved to
/// `d` past the time this thread last read: where a real sleep started right after that read
/// would wake. Threads sleeping at once move it to the latest of their wake-up times, never to
/// a sum, so workers that sleep in parallel on a real clock do so here too.
#[derive(Default)]
struct ManualClock {
    nanos: AtomicU64,
    last_read: Mutex<HashMap<ThreadId, u64>>,
    sleeps: AtomicUsize,
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        let n = self.nanos.load(SeqCst);
        self.last_read
            .lock()
            .unwrap()
            .insert(thread::current().id(), n);
        Duration::from_nanos(n)
    }
    fn sleep(&self, d: Duration) {
        self.sleeps.fetch_add(1, SeqCst);
        let from = self
            .last_read
            .lock()
            .unwrap()
            .get(&thread::current().id())
            .copied();
        let from = from.unwrap_or_else(|| self.nanos.load(SeqCst));
        self.nanos.fetch_max(from + d.as_nanos() as u64, SeqCst);
    }
}

impl ManualClock {
    fn starting_at(t: Duration) -> Arc<Self> {
        let c = Arc::new(Self::default());
        c.nanos.store(t.as_nanos() as u64, SeqCst);
        c
    }
}

/// A warm-up of 60 keys, 10 of them cached already, at 10 loads per second on a
/// [`ManualClock`]; returns the report, the clock time at which the warm-up started, and each
/// load's start time on that clock, sorted.
fn rate_limited_warm_up(concurrency: usize) -> (WarmUpReport, Duration, Vec<Duration>) {
    let origin = Duration::from_secs(1000);
    let clock = ManualClock::starting_at(origin);
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(100)
        .clock(clock.clone())
        .build()
        .unwrap();
    // Skipped keys start no load, so they take no slot of the rate limit.
    let cached = |k: u64| k % 6 == 5;
    for k in (0..60).filter(|&k| cached(k)) {
        cache.insert(k, k).unwrap();
    }
    let starts = Mutex::new(Vec::new());
    let entered = AtomicUsize::new(0);
    let real = Instant::now();
    let report = cache.warm_up(
        0..60u64,
        workers(concurrency).rate_limit(NonZeroU32::new(10).unwrap()),
        |&k| {
            starts.lock().unwrap().push(clock.now());
            // The first loads wait (in real time) until every worker has started one, so the
            // workers overlap instead of one of them running through the list alone.
            entered.fetch_add(1, SeqCst);
            wait_until(Duration::from_secs(1), || {
                entered.load(SeqCst) >= concurrency
            });
            Ok::<_, DbDown>(k)
        },
    );
    let real = real.elapsed();
    assert!(
        real < Duration::from_secs(3),
        "the rate limit must wait on the injected clock, not sleep for real: took {real:?}"
    );
    assert!(
        clock.sleeps.load(SeqCst) > 0,
        "the limiter waited on the clock"
    );
    assert_eq!((report.loaded, report.failed, report.skipped), (50, 0, 10));
    for k in 0..60 {
        assert_eq!(cache.get(&k), Some(k));
    }
    let mut starts = starts.into_inner().unwrap();
    starts.sort();
    assert_eq!(starts.len(), 50);
    (report, origin, starts)
}

#[test]
fn warm_up_bounds_concurrency_and_reports_counts() {
    within("bounded warm-up", || {
        const C: usize = 4;
        let cache: Cache<u64, u64> = Cache::new(1000);
        // Keys 0..5 are cached already: skipped, their loader never called.
        for k in 0..5 {
            cache.insert(k, 1000 + k).unwrap();
        }
        let entered = AtomicUsize::new(0);
        let inside = AtomicUsize::new(0);
        let most_inside = AtomicUsize::new(0);
        let loaded_keys = Mutex::new(Vec::new());
        let first_wait_ends = Instant::now() + Duration::from_millis(300);
        let report = cache.warm_up(0..40u64, workers(C), |&k| {
            loaded_keys.lock().unwrap().push(k);
            entered.fetch_add(1, SeqCst);
            let now = inside.fetch_add(1, SeqCst) + 1;
            most_inside.fetch_max(now, SeqCst);
            // The first loaders stay until a (C+1)-th one comes in or 300 ms pass: with C
            // workers all C overlap here, with more than C the extra one would be seen.
            while entered.load(SeqCst) <= C && Instant::now() < first_wait_ends {
                thread::sleep(Duration::from_millis(1));
            }
            thread::sleep(Duration::from_millis(2));
            inside.fetch_sub(1, SeqCst);
            match k {
                19 => panic!("loader for key 19 exploded"),
                k if k % 10 == 7 => Err(DbDown),
                k => Ok(k * 10),
            }
        });
        assert_eq!(
            most_inside.load(SeqCst),
            C,
            "warm-up with concurrency {C} runs exactly {C} loads at a time at its peak"
        );
        // Failed: 7, 17, 27, 37 (errors) and 19 (panic); skipped: 0..5; loaded: the other 30.
        assert_eq!(report.skipped, 5, "{report:?}");
        assert_eq!(report.failed, 5, "{report:?}");
        assert_eq!(report.loaded, 30, "{report:?}");
        let mut called = loaded_keys.into_inner().unwrap();
        called.sort_unstable();
        assert_eq!(
            called,
            (5..40).collect::<Vec<_>>(),
            "one loader call per key"
        );
        for k in 0..40 {
            let expect = match k {
                0..=4 => Some(1000 + k),
                19 => None,
                k if k % 10 == 7 => None,
                k => Some(k * 10),
            };
            assert_eq!(cache.get(&k), expect, "key {k}");
        }
    });
}

#[test]
fn warm_up_rate_limit_spaces_starts_on_the_injected_clock() {
    within("rate-limited warm-up", || {
        let (report, origin, starts) = rate_limited_warm_up(1);
        assert_eq!(starts[0], origin, "the first load starts at once");
        for w in starts.windows(2) {
            assert!(
                w[1] - w[0] >= Duration::from_millis(100),
                "10 loads/s: starts at least 100 ms apart on the cache's clock, got {:?} then {:?}",
                w[0] - origin,
                w[1] - origin
            );
        }
        // 50 starts, 49 gaps of 100 ms; the loader itself takes no time on this clock.
        assert!(
            report.elapsed >= Duration::from_millis(4900)
                && report.elapsed < Duration::from_millis(5000),
            "elapsed on the injected clock: {:?}",
            report.elapsed
        );
    });
}

#[test]
fn warm_up_rate_limit_holds_across_workers() {
    within("rate-limited warm-up, 4 workers", || {
        let (report, origin, starts) = rate_limited_warm_up(4);
        // Whatever the interleaving, by time t at most 1 + t * rate loads have started: the
        // k-th start (from 0) is no earlier than k * 100 ms. Workers that each kept their own
        // schedule would start 4 loads at once.
        for (k, &s) in starts.iter().enumerate() {
            assert!(
                s - origin >= Duration::from_millis(100) * k as u32,
                "load {k} started at {:?}, earlier than 10 loads/s allows",
                s - origin
            );
        }
        // The last of the 50 slots is 4.9 s in; workers that share one schedule do not
        // stretch it.
        assert!(
            report.elapsed >= Duration::from_millis(4900)
                && report.elapsed < Duration::from_millis(5000),
            "elapsed on the injected clock: {:?}",
            report.elapsed
        );
    });
}

#[test]
fn requests_during_warm_up_join_hit_or_load() {
    within("requests during warm-up", || {
        let cache: Cache<u64, u64> = Cache::new(1000);
        let warm_calls = Mutex::new(HashMap::new());
        let own_calls = AtomicUsize::new(0);
        let (loading_tx, loading) = mpsc::channel();
        let joining = AtomicBool::new(false);
        thread::scope(|s| {
            let warm = s.spawn(|| {
                cache.warm_up([0, 1, 2], workers(1), |&k| {
                    *warm_calls.lock().unwrap().entry(k).or_insert(0) += 1;
                    if k == 1 {
                        // Key 1 stays in flight until the other thread is on its way to it.
                        loading_tx.send(()).unwrap();
                        wait_until(ARRIVAL, || joining.load(SeqCst));
                        thread::sleep(Duration::from_millis(100));
                    }
                    Ok::<_, DbDown>(100 + k)
                })
            });
            loading.recv().unwrap();
            let own = |v| {
                own_calls.fetch_add(1, SeqCst);
                v
            };
            // Key 0 is loaded already: a hit.
            assert_eq!(cache.get_or_insert_with(0, || own(0)), 100);
            assert_eq!(own_calls.load(SeqCst), 0, "a key warm-up loaded is a hit");
            // Key 50 is not in the list: this caller loads it.
            assert_eq!(cache.get_or_insert_with(50, || own(150)), 150);
            assert_eq!(
                own_calls.load(SeqCst),
                1,
                "a key outside the list loads as usual"
            );
            // Key 1 is being loaded: this caller joins that load.
            joining.store(true, SeqCst);
            assert_eq!(cache.get_or_insert_with(1, || own(0)), 101);
            assert_eq!(
                own_calls.load(SeqCst),
                1,
                "a key in flight is joined, not reloaded"
            );

            let report = warm.join().unwrap();
            assert_eq!((report.loaded, report.failed, report.skipped), (3, 0, 0));
        });
        let warm_calls = warm_calls.into_inner().unwrap();
        assert_eq!(warm_calls, HashMap::from([(0, 1), (1, 1), (2, 1)]));
        assert_eq!(cache.get(&50), Some(150));
    });
}

#[test]
fn warm_up_joins_a_request_already_loading() {
    // The other direction: a request is loading key 3 when warm-up reaches it. Warm-up waits
    // for that load instead of running its own loader, and reports the key as loaded.
    within("warm-up joining a request", || {
        let cache: Cache<u64, u64> = Cache::builder()
            .max_capacity(1000)
            .record_stats()
            .build()
            .unwrap();
        let warm_calls = AtomicUsize::new(0);
        let (started_tx, started) = mpsc::channel();
        thread::scope(|s| {
            let request = s.spawn(|| {
                cache.get_or_insert_with(3, || {
                    started_tx.send(()).unwrap();
                    // Warm-up misses on key 3 (the second miss) just before it joins the
                    // flight; stay in flight until then, and a little longer.
                    wait_until(ARRIVAL, || cache.stats().unwrap().misses >= 2);
                    thread::sleep(Duration::from_millis(50));
                    303
                })
            });
            started.recv().unwrap();
            let report = cache.warm_up([3, 4], workers(1), |&k| {
                warm_calls.fetch_add(1, SeqCst);
                Ok::<_, DbDown>(k * 100)
            });
            assert_eq!(request.join().unwrap(), 303);
            assert_eq!(
                (report.loaded, report.failed, report.skipped),
                (2, 0, 0),
                "a key received from a concurrent load counts as loaded: {report:?}"
            );
        });
        assert_eq!(warm_calls.load(SeqCst), 1, "warm-up loaded only key 4");
        assert_eq!(cache.get(&3), Some(303));
        assert_eq!(cache.get(&4), Some(400));
    });
}

/// A listener that panics when warm-up's inserts evict does not make the keys whose loader
/// succeeded count as failed (the report says "nothing was cached" for those, and each was);
/// warm-up loads every key, and the listener's panic reaches the caller at the end, as it
/// would from the insert that triggered it. (Warm-up counted such a key as failed and
/// swallowed the listener's panic.)
#[test]
fn a_panicking_listener_during_warm_up_fails_no_key_and_reaches_the_caller() {
    within("warm-up with a panicking listener", || {
        let reported = Arc::new(Mutex::new(Vec::new()));
        let r = reported.clone();
        let cache: Cache<u64, u64> = Cache::builder()
            .max_capacity(1)
            .policy(clockline::Policy::Clock)
            .eviction_listener(move |k: &u64, _, _| {
                r.lock().unwrap().push(*k);
                panic!("intentional: the listener panics");
            })
            .build()
            .unwrap();
        let loads = AtomicUsize::new(0);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            cache.warm_up(0..3u64, workers(1), |&k| {
                loads.fetch_add(1, SeqCst);
                Ok::<_, DbDown>(k * 10)
            })
        }));
        assert_eq!(loads.load(SeqCst), 3, "every key was loaded");
        assert_eq!(cache.get(&2), Some(20), "the last key is cached");
        assert_eq!(
            *reported.lock().unwrap(),
            [0, 1],
            "each insert evicted the one before"
        );
        match outcome {
            Ok(report) => panic!("the listener's panic was swallowed: {report:?}"),
            Err(p) => assert_eq!(
                p.downcast_ref::<&str>(),
                Some(&"intentional: the listener panics")
            ),
        }
    });
}

/// Found by a dry run of clockline in an async service (`examples/service_sim.rs`; the panics
/// below print their messages). `warm_up` is blocking and runs one of its workers on the calling thread. Called from an
/// async task with a loader that bridges to async code with `Handle::block_on`, the loads on
/// that thread (a runtime worker) panic ("Cannot start a runtime from within a runtime"); the
/// report counts them as `failed`, indistinguishable from backend errors, and the panics are
/// swallowed. (The same call inside `spawn_blocking` loads everything.)
#[test]
fn warm_up_called_from_an_async_task_fails_keys_silently() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cache: Arc<Cache<u64, u64>> = Arc::new(Cache::new(1000));
    let (in_task, in_blocking) = rt.block_on(async {
        let handle = tokio::runtime::Handle::current();
        let h = handle.clone();
        let in_task = cache.warm_up(
            0..20u64,
            clockline::WarmUp::new(std::num::NonZeroUsize::new(4).unwrap()),
            move |&k| {
                h.block_on(async {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    Ok::<_, std::io::Error>(k)
                })
            },
        );
        cache.clear();
        let c = cache.clone();
        let in_blocking = tokio::task::spawn_blocking(move || {
            c.warm_up(
                0..20u64,
                clockline::WarmUp::new(std::num::NonZeroUsize::new(4).unwrap()),
                move |&k| {
                    handle.block_on(async {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        Ok::<_, std::io::Error>(k)
                    })
                },
            )
        })
        .await
        .unwrap();
        (in_task, in_blocking)
    });
    println!("in an async task: {in_task:?}\nin spawn_blocking: {in_blocking:?}");
    assert_eq!(in_blocking.loaded, 20);
    assert!(in_task.failed > 0, "{in_task:?}");
}
