//! Miri-sized scenarios for the concurrent protocols of the features that `tests/miri.rs` runs
//! on one thread only: single flight between two threads (a value, an error, a panic; sync and
//! async, a waiter cancelled, a leader dropped), `compute` from two threads, the ticker and the
//! janitor threads, statistics read while counted, versions and tombstones under two writers,
//! `warm_up`'s workers, an iteration beside removals and `clear`, and a listener that calls back
//! into its cache. Two threads at most (besides clockline's own ticker and janitor), a few dozen
//! operations each, values that check their key and count their drops.
//!
//! Run under Miri as `ci/miri.sh` runs `tests/miri.rs` (Tree Borrows: crossbeam-epoch is not
//! compatible with Stacked Borrows):
//!
//! ```text
//! MIRIFLAGS="-Zmiri-disable-isolation -Zmiri-permissive-provenance -Zmiri-ignore-leaks \
//!     -Zmiri-tree-borrows" cargo +nightly miri test --test miri_features -- --test-threads=1
//! ```
//!
//! Where a scenario needs one thread to be parked on a flight before the other goes on, it
//! waits for the other's lookup to be counted as a miss (`record_stats`), then pauses: the
//! checks hold whichever way the race goes, and where the outcome depends on it both outcomes
//! are checked for what they must be.

use std::future::Future;
use std::num::NonZeroUsize;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

use clockline::{Cache, Compute, Computed, InsertErrorKind, Invalidation, RemovalCause, WarmUp};
use common::ledger::{Ledger, Val};

mod common;

/// Polls `cond` until it holds; fails the test after a minute (generous for Miri).
fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let end = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < end, "still waiting for {what}");
        thread::yield_now();
        thread::sleep(Duration::from_micros(200));
    }
}

/// Lets the other thread go on a little (from a counted miss into the flight it joins).
fn pause() {
    for _ in 0..20 {
        thread::yield_now();
    }
    thread::sleep(Duration::from_millis(5));
}

fn misses<K, V>(cache: &Cache<K, V>) -> u64
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    cache.stats().expect("built with record_stats").misses
}

/// (1) Two threads miss on one key at once, sync loaders: one runs its loader, the other
/// waits and gets its value; an error is shared with a waiter of the same error type; a panic
/// reaches the leader's caller only, and the waiter then loads with its own loader.
#[test]
fn sync_loaders_single_flight_between_two_threads() {
    let ledger = Ledger::new();
    let cache: Cache<u64, Val> = Cache::builder()
        .max_capacity(8)
        .record_stats()
        .build()
        .unwrap();

    // A value: the waiter comes while the leader's loader runs.
    let runs = AtomicUsize::new(0);
    let base = misses(&cache);
    thread::scope(|s| {
        s.spawn(|| {
            let v = cache.get_or_insert_with(1, || {
                runs.fetch_add(1, Ordering::SeqCst);
                wait_for("the waiter's miss", || misses(&cache) >= base + 2);
                pause();
                ledger.val(1)
            });
            v.check(1);
        });
        s.spawn(|| {
            wait_for("the leader's loader", || runs.load(Ordering::SeqCst) == 1);
            let v = cache.get_or_insert_with_by_ref(&1, || {
                runs.fetch_add(1, Ordering::SeqCst);
                ledger.val(1)
            });
            v.check(1);
            clockline::flush_deferred();
        });
    });
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "two loaders ran for one key"
    );
    cache.get(&1).unwrap().check(1);

    // An error: a waiter with the same error type gets the leader's `Arc`; one that came
    // after the flight ended runs its own loader.
    let leader_err: Mutex<Option<Arc<String>>> = Mutex::new(None);
    let started = AtomicBool::new(false);
    let waiter_ran = AtomicBool::new(false);
    let base = misses(&cache);
    thread::scope(|s| {
        s.spawn(|| {
            let r = cache.try_get_or_insert_with(2, || {
                started.store(true, Ordering::SeqCst);
                wait_for("the waiter's miss", || misses(&cache) >= base + 2);
                pause();
                Err::<Val, _>("database down".to_string())
            });
            *leader_err.lock().unwrap() = Some(r.unwrap_err());
        });
        s.spawn(|| {
            wait_for("the leader's loader", || started.load(Ordering::SeqCst));
            let r = cache.try_get_or_insert_with_by_ref(&2, || {
                waiter_ran.store(true, Ordering::SeqCst);
                Ok::<_, String>(ledger.val(2))
            });
            // Checked below, once the leader's error is known.
            match r {
                Ok(v) => {
                    v.check(2);
                    assert!(waiter_ran.load(Ordering::SeqCst), "a value nobody loaded");
                }
                Err(e) => {
                    assert!(!waiter_ran.load(Ordering::SeqCst));
                    // Kept until the leader has stored its own.
                    wait_for("the leader's error", || {
                        leader_err.lock().unwrap().is_some()
                    });
                    let theirs = leader_err.lock().unwrap().clone().unwrap();
                    assert!(Arc::ptr_eq(&e, &theirs), "a waiter got another error");
                    assert_eq!(*e, "database down");
                }
            }
        });
    });
    assert_eq!(
        cache.get(&2).is_some(),
        waiter_ran.load(Ordering::SeqCst),
        "a failure cached something, or a success nothing"
    );

    // A panic: the leader's caller gets it; the waiter wakes and loads with its own loader.
    let started = AtomicBool::new(false);
    let waiter_runs = AtomicUsize::new(0);
    let base = misses(&cache);
    thread::scope(|s| {
        s.spawn(|| {
            let r = catch_unwind(AssertUnwindSafe(|| {
                cache.get_or_insert_with(3, || {
                    started.store(true, Ordering::SeqCst);
                    wait_for("the waiter's miss", || misses(&cache) >= base + 2);
                    pause();
                    panic!("the loader panics (expected by the test)");
                })
            }));
            assert!(r.is_err(), "the leader's caller did not get the panic");
        });
        s.spawn(|| {
            wait_for("the leader's loader", || started.load(Ordering::SeqCst));
            let v = cache
                .try_get_or_insert_with(3, || {
                    waiter_runs.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, ()>(ledger.val(3))
                })
                .unwrap();
            v.check(3);
            clockline::flush_deferred();
        });
    });
    assert_eq!(waiter_runs.load(Ordering::SeqCst), 1);
    cache.get(&3).unwrap().check(3);

    let st = cache.stats().unwrap();
    let waiter_loaded_2 = u64::from(waiter_ran.load(Ordering::SeqCst));
    assert_eq!(st.loads_ok, 2 + waiter_loaded_2, "{st:?}");
    assert_eq!(st.loads_failed, 2, "{st:?}");
    cache.check_invariants().unwrap();
    drop(cache);
    ledger.settle();
}

/// A waker that unparks the thread that made it, and counts its wakes.
struct Unpark {
    thread: thread::Thread,
    wakes: AtomicUsize,
}

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
        self.thread.unpark();
    }
}

fn unpark_waker() -> (Waker, Arc<Unpark>) {
    let w = Arc::new(Unpark {
        thread: thread::current(),
        wakes: AtomicUsize::new(0),
    });
    (Waker::from(w.clone()), w)
}

/// The smallest executor: polls `f` on this thread, parking between polls.
fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let (waker, wakes) = unpark_waker();
    loop {
        let seen = wakes.wakes.load(Ordering::SeqCst);
        if let Poll::Ready(v) = poll_once(f.as_mut(), &waker) {
            return v;
        }
        park_until_woken(&wakes, seen);
    }
}

/// Parks until `wakes` counts a wake after `seen`; fails the test if none comes within a
/// minute (a lost wake-up would otherwise hang it).
fn park_until_woken(wakes: &Unpark, seen: usize) {
    let end = Instant::now() + Duration::from_secs(60);
    while wakes.wakes.load(Ordering::SeqCst) == seen {
        let now = Instant::now();
        assert!(now < end, "a pending future was never woken");
        thread::park_timeout(end - now);
    }
}

/// Polls `f` once.
fn poll_once<F: Future>(f: std::pin::Pin<&mut F>, waker: &Waker) -> Poll<F::Output> {
    f.poll(&mut Context::from_waker(waker))
}

/// A future that is pending until another thread opens it.
#[derive(Default)]
struct Gate {
    open: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Gate {
    fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
        if let Some(w) = self.waker.lock().unwrap().take() {
            w.wake();
        }
    }

    fn polled(&self) -> bool {
        self.waker.lock().unwrap().is_some()
    }

    async fn wait(&self) {
        std::future::poll_fn(|cx| {
            if self.open.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            if self.open.load(Ordering::SeqCst) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

/// (2) The async loaders, driven by a hand-written executor on two threads: a waiter future
/// dropped while the leader loads takes its waker out and the flight goes on; another waiter
/// gets the leader's value (or its error); a leading future dropped while a waiter is parked
/// on another thread wakes it, and it loads with its own loader.
#[test]
fn async_loaders_single_flight_cancel_and_abandon() {
    let ledger = Ledger::new();
    let cache: Cache<u64, Val> = Cache::builder()
        .max_capacity(8)
        .record_stats()
        .build()
        .unwrap();

    for fail in [false, true] {
        let key = u64::from(fail) + 1;
        let gate = Gate::default();
        let runs = AtomicUsize::new(0);
        let leader_err: Mutex<Option<Arc<String>>> = Mutex::new(None);
        thread::scope(|s| {
            s.spawn(|| {
                let r = block_on(cache.try_get_or_insert_with_async(key, async {
                    runs.fetch_add(1, Ordering::SeqCst);
                    gate.wait().await;
                    if fail {
                        Err("database down".to_string())
                    } else {
                        Ok(ledger.val(key))
                    }
                }));
                match r {
                    Ok(v) => v.check(key),
                    Err(e) => *leader_err.lock().unwrap() = Some(e),
                }
            });
            s.spawn(|| {
                wait_for("the leader's loader", || gate.polled());
                let (waker, wakes) = unpark_waker();
                // A waiter that gives up: parked, then dropped while the leader loads.
                {
                    let cancelled = cache.get_or_insert_with_async(key, async {
                        runs.fetch_add(1, Ordering::SeqCst);
                        ledger.val(key)
                    });
                    let mut cancelled = pin!(cancelled);
                    assert!(poll_once(cancelled.as_mut(), &waker).is_pending());
                }
                // A waiter that stays, by reference.
                let stays = cache.try_get_or_insert_with_by_ref_async(&key, async {
                    runs.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, String>(ledger.val(key))
                });
                let mut stays = pin!(stays);
                assert!(poll_once(stays.as_mut(), &waker).is_pending());
                gate.open();
                let r = loop {
                    let seen = wakes.wakes.load(Ordering::SeqCst);
                    if let Poll::Ready(r) = poll_once(stays.as_mut(), &waker) {
                        break r;
                    }
                    park_until_woken(&wakes, seen);
                };
                // The leader may end the flight just before it wakes the waiters.
                wait_for("the waiter's wake", || {
                    wakes.wakes.load(Ordering::SeqCst) >= 1
                });
                match r {
                    Ok(v) => {
                        assert!(!fail);
                        v.check(key);
                    }
                    Err(e) => {
                        assert!(fail);
                        wait_for("the leader's error", || {
                            leader_err.lock().unwrap().is_some()
                        });
                        let theirs = leader_err.lock().unwrap().clone().unwrap();
                        assert!(Arc::ptr_eq(&e, &theirs), "a waiter got another error");
                    }
                }
                clockline::flush_deferred();
            });
        });
        assert_eq!(runs.load(Ordering::SeqCst), 1, "the waiters ran a loader");
        assert_eq!(cache.get(&key).is_some(), !fail);
    }

    // The leading future is dropped while a waiter on the other thread is parked on it.
    let gate = Gate::default();
    let runs = AtomicUsize::new(0);
    let base = misses(&cache);
    thread::scope(|s| {
        s.spawn(|| {
            let (waker, _) = unpark_waker();
            {
                let lead = cache.get_or_insert_with_async(3, async {
                    gate.wait().await;
                    unreachable!("this leader is dropped before its gate opens")
                });
                let mut lead = pin!(lead);
                assert!(poll_once(lead.as_mut(), &waker).is_pending());
                wait_for("the waiter's miss", || misses(&cache) >= base + 2);
                pause();
            }
            clockline::flush_deferred();
        });
        s.spawn(|| {
            wait_for("the leader's loader", || gate.polled());
            let v = block_on(cache.get_or_insert_with_by_ref_async(&3, async {
                runs.fetch_add(1, Ordering::SeqCst);
                ledger.val(3)
            }));
            v.check(3);
        });
    });
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    cache.get(&3).unwrap().check(3);
    cache.check_invariants().unwrap();
    drop(cache);
    ledger.settle();
}

/// (3) `compute` from two threads on one key, with other keys written beside it: no
/// increment is lost, and every value a retried closure made is dropped. (More rounds
/// natively, where two threads rarely overlap in a few dozen operations.)
#[test]
fn compute_from_two_threads_loses_no_increment() {
    const EACH: u64 = if cfg!(miri) { 8 } else { 500 };
    let ledger = Ledger::new();
    let cache: Cache<u64, Val> = Cache::builder().max_capacity(8).build().unwrap();
    let start = std::sync::Barrier::new(2);
    thread::scope(|s| {
        for t in 0..2u64 {
            let (cache, ledger, start) = (&cache, &ledger, &start);
            s.spawn(move || {
                start.wait();
                for i in 0..EACH {
                    let r = cache.compute(0, |old| {
                        let n = old.map_or(0, |v| {
                            v.check(0);
                            v.n
                        });
                        // Lets the other thread in between the read and the commit.
                        thread::yield_now();
                        Compute::Put(ledger.val_n(0, n + 1))
                    });
                    assert!(matches!(r, Ok(Computed::Inserted | Computed::Updated)));
                    // Other keys (six in all: no eviction), replaced beside the counter.
                    let k = 1 + (t * EACH + i) % 5;
                    let _ = cache.insert(k, ledger.val(k));
                    if let Some(v) = cache.get(&0) {
                        v.check(0);
                    }
                }
                clockline::flush_deferred();
            });
        }
    });
    let v = cache.get(&0).expect("the counter is gone");
    v.check(0);
    assert_eq!(v.n, 2 * EACH, "an increment was lost");
    drop(v);
    assert_eq!(
        cache.compute(0, |_| Compute::Remove).unwrap(),
        Computed::Removed
    );
    cache.check_invariants().unwrap();
    drop(cache);
    ledger.settle();
}

/// (4) A time-to-live on the default clock (the process-wide ticker thread runs) and a janitor
/// every millisecond: one thread inserts while another reads; the janitor purges what expired;
/// dropping the cache stops and joins the janitor.
#[test]
fn ticker_and_janitor_beside_a_writer_and_a_reader() {
    let ledger = Ledger::new();
    let heard = Arc::new(AtomicUsize::new(0));
    let log = heard.clone();
    let cache: Cache<u64, Val> = Cache::builder()
        .max_capacity(8)
        .time_to_live(Duration::from_millis(20))
        .janitor(Duration::from_millis(1))
        .eviction_listener(move |k: &u64, v: &Val, _| {
            v.check(*k);
            log.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    thread::scope(|s| {
        s.spawn(|| {
            for i in 0..16u64 {
                let k = i % 6;
                cache.insert(k, ledger.val(k)).unwrap();
            }
            clockline::flush_deferred();
        });
        s.spawn(|| {
            for i in 0..16u64 {
                let k = i % 6;
                if let Some(v) = cache.get(&k) {
                    v.check(k);
                }
            }
        });
    });
    // Only the janitor removes expired entries now (nothing else touches the cache).
    // Each entry replaced or expired is heard once (the janitor's listener calls come after
    // its unlinks, so wait for both).
    wait_for("the janitor's purge", || {
        cache.is_empty() && heard.load(Ordering::SeqCst) >= 16
    });
    assert_eq!(heard.load(Ordering::SeqCst), 16);
    drop(cache);
    // The cache's `Drop` joined the janitor and freed the listener.
    assert_eq!(Arc::strong_count(&heard), 1);
    ledger.settle();
}

/// (5) Statistics read by one thread while another counts: no counter goes back, none runs
/// ahead of the operations made, and the totals are exact at the end.
#[test]
fn statistics_read_while_another_thread_counts() {
    const OPS: u64 = 24;
    let ledger = Ledger::new();
    let cache: Cache<u64, Val> = Cache::builder()
        .max_capacity(4)
        .record_stats()
        .build()
        .unwrap();
    let done = AtomicUsize::new(0);
    thread::scope(|s| {
        s.spawn(|| {
            for i in 0..OPS {
                let k = i % 6;
                if i % 2 == 0 {
                    let _ = cache.insert(k, ledger.val(k));
                } else if let Some(v) = cache.get(&k) {
                    v.check(k);
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
            clockline::flush_deferred();
        });
        s.spawn(|| {
            let mut last = cache.stats().unwrap();
            loop {
                let finished = done.load(Ordering::SeqCst) as u64 == OPS;
                let st = cache.stats().unwrap();
                assert!(st.hits >= last.hits && st.misses >= last.misses, "{st:?}");
                assert!(st.inserts >= last.inserts && st.updates >= last.updates);
                assert!(st.evictions >= last.evictions);
                // No bound by `done` here: the counters are relaxed, so a count may be seen
                // before the `done` that follows it. Only the totals bound them.
                assert!(st.hits + st.misses <= OPS / 2, "{st:?}");
                assert!(st.inserts + st.updates <= OPS / 2, "{st:?}");
                last = st;
                if finished {
                    break;
                }
                thread::yield_now();
            }
        });
    });
    let st = cache.stats().unwrap();
    assert_eq!(st.hits + st.misses, OPS / 2, "{st:?}");
    assert_eq!(st.inserts + st.updates, OPS / 2, "{st:?}");
    assert_eq!(st.inserts - st.evictions, cache.len() as u64, "{st:?}");
    drop(cache);
    ledger.settle();
}

/// (6) Versioned inserts and invalidations from two threads on a small cache that evicts and
/// keeps one tombstone per shard (`max_tombstones(2)`, rounded up to one per
/// shard), so that a shard's oldest tombstone goes when two keys share it.
#[test]
fn versions_and_invalidations_from_two_threads_with_few_tombstones() {
    let ledger = Ledger::new();
    let cache: Cache<u64, Val> = Cache::builder()
        .max_capacity(3)
        .versioned()
        .max_tombstones(2)
        .build()
        .unwrap();
    thread::scope(|s| {
        s.spawn(|| {
            for i in 0..20u64 {
                let k = i % 5;
                match cache.insert_versioned(k, ledger.val(k), i + 1) {
                    // Only this thread inserts, with versions that grow: what it finds now is
                    // its own or newer, or nothing (invalidated, evicted).
                    Ok(()) => {
                        if let Some(version) = cache.version_of(&k) {
                            assert!(version > i, "{version} after inserting {}", i + 1);
                        }
                    }
                    Err(e) => {
                        match e.kind {
                            InsertErrorKind::Stale { version, current } => {
                                assert_eq!(version, i + 1);
                                assert!(current >= version, "refused {version} for {current}");
                            }
                            ref other => panic!("{other:?}"),
                        }
                        assert_eq!(e.key, k);
                        e.value.check(k);
                    }
                }
                if let Some((v, version)) = cache.get_versioned(&k) {
                    v.check(k);
                    assert!(version >= 1);
                }
            }
            clockline::flush_deferred();
        });
        s.spawn(|| {
            for i in 0..20u64 {
                let k = (i * 3) % 5;
                match cache.invalidate_versioned(k, i + 1) {
                    Invalidation::Removed | Invalidation::Absent => {}
                    Invalidation::Stale { current } => assert!(current > i),
                    Invalidation::NotVersioned => unreachable!("a versioned cache"),
                }
                // 16 shards of one tombstone each (`max_tombstones` rounds up to 16), and at
                // most one per key.
                assert!(cache.tombstones() <= 5, "{} tombstones", cache.tombstones());
                if let Some(version) = cache.version_of(&k) {
                    assert!(version >= 1);
                }
            }
            clockline::flush_deferred();
        });
    });
    assert!(cache.len() <= 3);
    assert!(cache.tombstones() <= 5);
    cache.check_invariants().unwrap();
    drop(cache);
    ledger.settle();
}

/// (7) `warm_up` with two workers: loads, failures, a panicking loader, keys already cached.
#[test]
fn warm_up_with_two_workers() {
    let ledger = Ledger::new();
    let cache: Cache<u64, Val> = Cache::builder().max_capacity(16).build().unwrap();
    for k in [1, 2] {
        cache.insert(k, ledger.val(k)).unwrap();
    }
    let calls = AtomicUsize::new(0);
    let report = cache.warm_up(0..10u64, WarmUp::new(NonZeroUsize::new(2).unwrap()), |&k| {
        calls.fetch_add(1, Ordering::SeqCst);
        match k {
            5 => Err("no such row"),
            7 => panic!("the loader panics (expected by the test)"),
            _ => Ok(ledger.val(k)),
        }
    });
    assert_eq!(report.skipped, 2, "{report:?}");
    assert_eq!(report.failed, 2, "{report:?}");
    assert_eq!(report.loaded, 6, "{report:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 8);
    for k in 0..10u64 {
        match cache.get(&k) {
            Some(v) => v.check(k),
            None => assert!(k == 5 || k == 7, "key {k} not cached"),
        }
    }
    drop(cache);
    ledger.settle();
}

/// (8) `pin().iter()` on one thread while another removes, clears and inserts: every value the
/// iteration lends stays readable while the handle lives.
#[test]
fn iteration_beside_removals_and_clear() {
    let ledger = Ledger::new();
    let cache: Cache<u64, Val> = Cache::builder().max_capacity(8).build().unwrap();
    for k in 0..8 {
        cache.insert(k, ledger.val(k)).unwrap();
    }
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        s.spawn(|| {
            for round in 0..3u64 {
                for k in 0..8 {
                    if let Some(v) = cache.remove(&((k + round) % 8)) {
                        v.check((k + round) % 8);
                    }
                    if k % 3 == 0 {
                        let _ = cache.insert(k, ledger.val(k));
                    }
                }
                cache.clear();
                for k in 0..4 {
                    let _ = cache.insert(k, ledger.val(k));
                }
            }
            stop.store(true, Ordering::SeqCst);
            clockline::flush_deferred();
        });
        s.spawn(|| {
            let mut rounds = 0;
            while !stop.load(Ordering::SeqCst) || rounds < 2 {
                let pinned = cache.pin();
                let mut lent = Vec::new();
                for (k, v) in pinned.iter() {
                    v.check(*k);
                    lent.push((*k, v));
                    thread::yield_now();
                }
                assert!(lent.len() <= 8);
                // Still readable after the writer may have removed them.
                for (k, v) in lent {
                    v.check(k);
                }
                rounds += 1;
            }
        });
    });
    cache.check_invariants().unwrap();
    drop(cache);
    ledger.settle();
}

/// (9) An eviction listener that calls back into its cache (a read, and an insert of another
/// key) while another thread inserts.
#[test]
fn a_listener_calls_back_into_the_cache_while_another_thread_inserts() {
    thread_local! {
        static NESTED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    let ledger = Arc::new(Ledger::new());
    let slot: Arc<OnceLock<Weak<Cache<u64, Val>>>> = Arc::new(OnceLock::new());
    let heard = Arc::new(AtomicUsize::new(0));
    let (cb_slot, cb_ledger, cb_heard) = (slot.clone(), ledger.clone(), heard.clone());
    let cache = Arc::new(
        Cache::builder()
            .max_capacity(4)
            .eviction_listener(move |k: &u64, v: &Val, cause| {
                v.check(*k);
                cb_heard.fetch_add(1, Ordering::SeqCst);
                let Some(cache) = cb_slot.get().and_then(Weak::upgrade) else {
                    return;
                };
                if let Some(v) = cache.get(&(k ^ 1)) {
                    v.check(k ^ 1);
                }
                // Not from a listener call made by a listener's insert: no chain.
                if cause == RemovalCause::Capacity && !NESTED.get() {
                    NESTED.set(true);
                    let _ = cache.insert(100 + k % 100, cb_ledger.val(100 + k % 100));
                    NESTED.set(false);
                }
            })
            .build()
            .unwrap(),
    );
    slot.set(Arc::downgrade(&cache)).unwrap();
    thread::scope(|s| {
        for t in 0..2u64 {
            let (cache, ledger) = (&cache, &ledger);
            s.spawn(move || {
                for i in 0..12u64 {
                    let k = (t * 12 + i) % 10;
                    let _ = cache.insert(k, ledger.val(k));
                    if let Some(v) = cache.get(&(k + 100)) {
                        v.check(k + 100);
                    }
                }
                clockline::flush_deferred();
            });
        }
    });
    assert!(heard.load(Ordering::SeqCst) > 0, "nothing was evicted");
    assert!(cache.len() <= 4);
    cache.check_invariants().unwrap();
    drop(cache);
    ledger.settle();
}

/// (4b) The last handle of a cache dropped by its listener on the janitor thread: the drop
/// cannot join the thread it runs on, so it only signals the stop, and the cache is freed by
/// the janitor after its sweep (it used to be freed under the running sweep).
#[test]
fn the_last_handle_dropped_by_the_listener_on_the_janitor_thread() {
    type Shared = Arc<Mutex<Option<Arc<Cache<u64, Val>>>>>;
    let ledger = Ledger::new();
    let slot: Shared = Arc::default();
    let dropped_on: Arc<Mutex<Option<thread::ThreadId>>> = Arc::default();
    let (cb_slot, cb_on) = (slot.clone(), dropped_on.clone());
    let cache = Arc::new(
        Cache::builder()
            .max_capacity(4)
            .expiry()
            .janitor(Duration::from_millis(1))
            .eviction_listener(move |k: &u64, v: &Val, cause| {
                v.check(*k);
                if cause == RemovalCause::Expired {
                    let last = cb_slot.lock().unwrap().take();
                    if last.is_some() {
                        *cb_on.lock().unwrap() = Some(thread::current().id());
                    }
                    drop(last);
                }
            })
            .build()
            .unwrap(),
    );
    let weak = Arc::downgrade(&cache);
    *slot.lock().unwrap() = Some(cache);
    {
        // Expiring after this handle is gone, so that the listener's is the last.
        let cache = weak.upgrade().unwrap();
        for k in 0..3 {
            let ttl = Duration::from_millis(20);
            cache.insert_with_ttl(k, ledger.val(k), ttl).unwrap();
        }
    }
    wait_for("the listener's drop", || weak.strong_count() == 0);
    let on = dropped_on.lock().unwrap().expect("dropped by the listener");
    assert_ne!(
        on,
        thread::current().id(),
        "not dropped on the janitor thread"
    );
    // The janitor frees the cache, and its values, once its sweep returns.
    ledger.settle();
    assert_eq!(Arc::strong_count(&slot), 1, "the listener was not freed");
}
