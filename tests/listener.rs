//! The eviction listener (issue #3): one call per departing entry, with the right cause, after
//! the unlink and outside any lock (it may call back into the cache), exactly once under
//! concurrency, and a panicking listener leaves the cache consistent.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use clockline::{Cache, RemovalCause};

type Log = Arc<Mutex<Vec<(u64, u64, RemovalCause)>>>;

fn logged(cap: usize) -> (Cache<u64, u64>, Log) {
    let log: Log = Arc::default();
    let l = log.clone();
    let cache = Cache::builder()
        .max_capacity(cap)
        .eviction_listener(move |k: &u64, v: &u64, c| l.lock().unwrap().push((*k, *v, c)))
        .build()
        .unwrap();
    (cache, log)
}

#[test]
fn each_cause_is_reported() {
    let (cache, log) = logged(4);
    cache.insert(1, 10).unwrap();
    cache.insert(1, 11).unwrap();
    cache.remove(&1);
    cache.insert(2, 20).unwrap();
    cache.clear();
    assert_eq!(
        *log.lock().unwrap(),
        [
            (1, 10, RemovalCause::Replaced),
            (1, 11, RemovalCause::Explicit),
            (2, 20, RemovalCause::Cleared),
        ]
    );
    log.lock().unwrap().clear();
    for k in 0..10 {
        cache.insert(k, k).unwrap();
    }
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 6, "four fit, six were evicted");
    assert!(log.iter().all(|e| e.2 == RemovalCause::Capacity));
    assert!(RemovalCause::Capacity.was_evicted() && !RemovalCause::Replaced.was_evicted());
}

#[test]
fn a_listener_may_call_back_into_the_cache() {
    // The listener re-inserts every evicted key under key + 1000 and reads the cache: it would
    // deadlock if it ran under a bucket lock.
    let slot: Arc<OnceLock<Weak<Cache<u64, u64>>>> = Arc::default();
    let s = slot.clone();
    let cache = Arc::new(
        Cache::builder()
            .max_capacity(8)
            .eviction_listener(move |k: &u64, v: &u64, c| {
                if let Some(cache) = s.get().and_then(Weak::upgrade) {
                    let _ = cache.get(k);
                    if c == RemovalCause::Capacity && *k < 1000 {
                        cache.insert(k + 1000, *v).unwrap();
                    }
                    cache.remove(&(k + 5000));
                }
            })
            .build()
            .unwrap(),
    );
    slot.set(Arc::downgrade(&cache)).unwrap();
    for k in 0..100 {
        cache.insert(k, k).unwrap();
    }
    assert!(cache.len() <= 8);
    assert_eq!(cache.check_invariants().unwrap(), cache.len());
}

#[test]
fn a_panicking_listener_leaves_the_cache_consistent() {
    let calls = Arc::new(AtomicU64::new(0));
    let c = calls.clone();
    // Weight 10: two entries of weight 5 are both evicted by one insert of weight 10, and the
    // listener panics on every call.
    let cache: Cache<u64, u64> = Cache::builder()
        .max_weight(10)
        .weigher(|_, v: &u64| *v)
        .eviction_listener(move |_, _, _| {
            c.fetch_add(1, Ordering::SeqCst);
            panic!("listener panics");
        })
        .build()
        .unwrap();
    cache.insert(1, 5).unwrap();
    cache.insert(2, 5).unwrap();
    let r = catch_unwind(AssertUnwindSafe(|| cache.insert(3, 10)));
    assert!(r.is_err(), "the listener's panic reaches the caller");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "both departures were still reported"
    );
    assert_eq!(cache.get(&3), Some(10), "the insert itself completed");
    assert_eq!((cache.len(), cache.weight()), (1, 10));
    assert_eq!(cache.check_invariants(), Ok(1));
    assert!(catch_unwind(AssertUnwindSafe(|| cache.remove(&3))).is_err());
    assert!(cache.is_empty());
    cache.insert(4, 1).unwrap();
    assert_eq!(cache.get(&4), Some(1));
}

/// Every value ever inserted is, at the end, either reported exactly once or still cached:
/// never both, never twice, never lost. Four threads insert, replace, remove and clear a small
/// cache concurrently; values are unique ids.
#[test]
fn exactly_once_under_concurrency() {
    let reported: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let r = reported.clone();
    let cache: Arc<Cache<u64, u64>> = Arc::new(
        Cache::builder()
            .max_capacity(64)
            .eviction_listener(move |_, v: &u64, _| *r.lock().unwrap().entry(*v).or_default() += 1)
            .build()
            .unwrap(),
    );
    let next_id = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let (cache, next_id) = (cache.clone(), next_id.clone());
            std::thread::spawn(move || {
                let mut x = t.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                for i in 0..20_000u64 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let key = x % 200;
                    match x % 100 {
                        0..=79 => {
                            let id = next_id.fetch_add(1, Ordering::Relaxed);
                            cache.insert(key, id).unwrap();
                        }
                        80..=97 => {
                            cache.remove(&key);
                        }
                        _ if i % 500 == 0 => cache.clear(),
                        _ => {
                            cache.get(&key);
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let inserted = next_id.load(Ordering::SeqCst);
    let reported = reported.lock().unwrap();
    let cached: Vec<u64> = cache.pin().iter().map(|(_, v)| *v).collect();
    assert_eq!(cached.len(), cache.len());
    for id in &cached {
        assert!(
            !reported.contains_key(id),
            "value {id} is cached and was reported"
        );
    }
    if let Some((id, n)) = reported.iter().find(|(_, &n)| n != 1) {
        panic!("value {id} reported {n} times");
    }
    assert_eq!(
        reported.len() + cached.len(),
        inserted as usize,
        "every inserted value is reported or cached"
    );
}

/// A listener that panics once does not stop `clear`: every entry is still removed and
/// reported, and the panic reaches the caller once the whole cache is cleared. (`clear`
/// delivered each bucket's batch as it went and stopped at the first panic, leaving the rest
/// of the cache in place, unreported.)
#[test]
fn a_listener_that_panics_does_not_stop_clear_halfway() {
    let calls = Arc::new(AtomicU64::new(0));
    let c = calls.clone();
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(100)
        .eviction_listener(move |_, _, cause| {
            assert_eq!(cause, RemovalCause::Cleared);
            if c.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("intentional: the first call panics");
            }
        })
        .build()
        .unwrap();
    for k in 0..50 {
        cache.insert(k, k).unwrap();
    }
    let r = catch_unwind(AssertUnwindSafe(|| cache.clear()));
    assert!(r.is_err(), "the listener's panic reaches the caller");
    assert_eq!(cache.len(), 0, "every entry was cleared");
    assert_eq!(calls.load(Ordering::SeqCst), 50, "every entry was reported");
    assert_eq!(cache.check_invariants(), Ok(0));
}

#[test]
fn removal_causes_display_as_lower_case_words() {
    let words: Vec<String> = [
        RemovalCause::Capacity,
        RemovalCause::Expired,
        RemovalCause::Explicit,
        RemovalCause::Replaced,
        RemovalCause::Cleared,
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    assert_eq!(
        words,
        ["capacity", "expired", "explicit", "replaced", "cleared"]
    );
}
