//! Epoch reclamation seen from outside: how fast retired values are freed, and what holds them
//! back. crossbeam-epoch's collector is process-wide, so these tests run one at a time (one
//! test's guard would hold back another's values).

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Duration;

mod common;

use clockline::Cache;
use common::ManualClock;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A value that counts its drops in its own counter.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, SeqCst);
    }
}

/// A backlog of retired values (left here by a pinned handle held while another thread
/// evicted 100,000 values) drains in one `flush_deferred` call once nothing pins. It used to
/// take a call per 512 values (crossbeam frees at most 8 bags of 64 per flush): 196 calls here
/// (found by the thread-churn dry run).
#[test]
fn one_flush_drains_a_backlog() {
    let _serial = serial();
    let dropped = Arc::new(AtomicUsize::new(0));
    let cache: Arc<Cache<u64, Counted>> = Arc::new(Cache::new(100));
    let pinned = cache.pin();
    let (c, d) = (cache.clone(), dropped.clone());
    thread::spawn(move || {
        for i in 0..100_000 {
            c.insert(i, Counted(d.clone())).unwrap();
        }
    })
    .join()
    .unwrap();
    drop(pinned);
    let evicted = 100_000 - cache.len();
    clockline::flush_deferred();
    assert_eq!(
        dropped.load(SeqCst),
        evicted,
        "one flush frees every evicted value once nothing pins"
    );
}

/// A sweep (`purge_expired` here; the janitor and `clear` alike) renews its epoch guard after
/// each bucket whose listener calls ran, so a value another thread retires while the sweep runs
/// can be freed before the sweep ends. It used to hold one guard for the whole sweep and its
/// listener calls, which stopped reclamation in every cache of the process (found by the
/// thread-churn dry run: a janitor with a 1 ms listener let an unrelated cache pile up 99,000
/// retired values).
#[test]
fn a_sweep_does_not_hold_reclamation_back_for_its_whole_walk() {
    let _serial = serial();
    let other: Arc<Cache<u64, Counted>> = Arc::new(Cache::new(10));
    let freed = Arc::new(AtomicUsize::new(0));
    other.insert(1, Counted(freed.clone())).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    // Listener calls after the value was retired that saw it freed.
    let seen_freed = Arc::new(AtomicUsize::new(0));
    let clock = ManualClock::new();
    let swept: Cache<u64, u64> = {
        let (other, freed, calls, seen) = (
            other.clone(),
            freed.clone(),
            calls.clone(),
            seen_freed.clone(),
        );
        Cache::builder()
            .max_capacity(1_000)
            .time_to_live(Duration::from_secs(1))
            .clock(clock.clone())
            .eviction_listener(move |_, _, _| {
                // Another thread (not pinned by this sweep) retires the value on the first
                // call, and flushes on every call.
                let first = calls.fetch_add(1, SeqCst) == 0;
                let other = other.clone();
                thread::spawn(move || {
                    if first {
                        // Replaced: the old value is retired.
                        let spare = Counted(Arc::new(AtomicUsize::new(0)));
                        other.insert(1, spare).unwrap();
                    }
                    clockline::flush_deferred();
                })
                .join()
                .unwrap();
                if !first && freed.load(SeqCst) == 1 {
                    seen.fetch_add(1, SeqCst);
                }
            })
            .build()
            .unwrap()
    };
    for k in 0..500 {
        swept.insert(k, k).unwrap();
    }
    clock.advance(Duration::from_secs(2));
    assert_eq!(swept.purge_expired(), 500);
    assert_eq!(calls.load(SeqCst), 500);
    assert!(
        seen_freed.load(SeqCst) > 0,
        "the value retired during the sweep was freed only after it"
    );
}

/// crossbeam-epoch's default collector, which clockline uses, is shared with every other user
/// of it in the process (moka's table, crossbeam-skiplist, ...): their garbage bags queue in
/// front of clockline's. `flush_deferred` must not take three flushes that free only their
/// garbage (each frees at most 8 bags) for "nothing left to free" and leave this cache's
/// backlog behind them in place.
#[test]
fn one_flush_drains_a_backlog_queued_behind_other_users_of_the_collector() {
    let _serial = serial();
    let dropped = Arc::new(AtomicUsize::new(0));
    let cache: Arc<Cache<u64, Counted>> = Arc::new(Cache::new(100));
    let pinned = cache.pin();
    // Another crate's garbage, queued first: 32 bags of 64 deferred functions.
    thread::spawn(|| {
        for _ in 0..32 * 64 {
            crossbeam_epoch::pin().defer(|| ());
        }
        crossbeam_epoch::pin().flush();
    })
    .join()
    .unwrap();
    let (c, d) = (cache.clone(), dropped.clone());
    thread::spawn(move || {
        for i in 0..10_000 {
            c.insert(i, Counted(d.clone())).unwrap();
        }
    })
    .join()
    .unwrap();
    drop(pinned);
    let evicted = 10_000 - cache.len();
    clockline::flush_deferred();
    assert_eq!(
        dropped.load(SeqCst),
        evicted,
        "one flush frees every evicted value once nothing pins"
    );
}
