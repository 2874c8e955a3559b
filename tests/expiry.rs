//! Expiry (issue #3): time-to-live, per-entry TTL, time-to-idle, the hand taking expired entries
//! first, `purge_expired`, the janitor, and the bad inputs (zero, overflow), all on an injected
//! clock so nothing sleeps except the janitor test.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clockline::{BuildError, Cache, InsertErrorKind, RemovalCause};
use common::ManualClock;

const SEC: Duration = Duration::from_secs(1);

fn ttl_cache(clock: &Arc<ManualClock>, cap: usize, ttl: Duration) -> Cache<u64, u64> {
    Cache::builder()
        .max_capacity(cap)
        .time_to_live(ttl)
        .clock(clock.clone())
        .build()
        .unwrap()
}

#[test]
fn an_entry_expires_at_its_deadline_for_every_reader() {
    let clock = ManualClock::new();
    let cache = ttl_cache(&clock, 100, 10 * SEC);
    cache.insert(1, 10).unwrap();
    clock.advance(10 * SEC - Duration::from_nanos(1));
    assert_eq!(
        cache.get(&1),
        Some(10),
        "one nanosecond before the deadline"
    );
    assert!(cache.contains_key(&1));
    clock.advance(Duration::from_nanos(1));
    assert_eq!(cache.get(&1), None, "at the deadline");
    assert_eq!(cache.peek(&1), None);
    assert!(!cache.contains_key(&1));
    let pinned = cache.pin();
    assert_eq!(pinned.get(&1), None);
    assert_eq!(pinned.iter().count(), 0, "iteration skips expired entries");
    // Not removed by the reads (they write nothing shared): still counted until purged.
    assert_eq!(cache.len(), 1);
}

#[test]
fn a_pinned_handle_judges_expiry_when_it_was_made() {
    let clock = ManualClock::new();
    let cache = ttl_cache(&clock, 100, SEC);
    cache.insert(1, 10).unwrap();
    let pinned = cache.pin();
    clock.advance(2 * SEC);
    assert_eq!(
        pinned.get(&1),
        Some(&10),
        "time stands still inside a handle"
    );
    drop(pinned);
    assert_eq!(cache.pin().get(&1), None);
}

#[test]
fn per_entry_ttl_overrides_the_default() {
    let clock = ManualClock::new();
    let cache = ttl_cache(&clock, 100, 10 * SEC);
    cache.insert_with_ttl(1, 1, SEC).unwrap();
    cache.insert_with_ttl(2, 2, 100 * SEC).unwrap();
    cache.insert(3, 3).unwrap();
    clock.advance(5 * SEC);
    assert_eq!(
        (cache.get(&1), cache.get(&2), cache.get(&3)),
        (None, Some(2), Some(3))
    );
    clock.advance(10 * SEC);
    assert_eq!((cache.get(&2), cache.get(&3)), (Some(2), None));
}

#[test]
fn expiry_without_a_default_ttl_only_expires_what_asks() {
    let clock = ManualClock::new();
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(10)
        .expiry()
        .clock(clock.clone())
        .build()
        .unwrap();
    cache.insert(1, 1).unwrap();
    cache.insert_with_ttl(2, 2, SEC).unwrap();
    clock.advance(1000 * SEC);
    assert_eq!((cache.get(&1), cache.get(&2)), (Some(1), None));
}

#[test]
fn insert_with_ttl_needs_a_cache_with_expiry() {
    let cache: Cache<u64, String> = Cache::new(10);
    let err = cache.insert_with_ttl(1, "v".into(), SEC).unwrap_err();
    assert_eq!(err.kind, InsertErrorKind::ExpiryDisabled);
    assert_eq!(
        (err.key, err.value.as_str()),
        (1, "v"),
        "the pair comes back"
    );
    assert!(cache.is_empty());
}

#[test]
fn zero_and_huge_ttls_are_handled() {
    let clock = ManualClock::new();
    let removed = Arc::new(Mutex::new(Vec::new()));
    let log = removed.clone();
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(10)
        .expiry()
        .clock(clock.clone())
        .eviction_listener(move |k, _, c| log.lock().unwrap().push((*k, c)))
        .build()
        .unwrap();
    // Zero: stored already expired; never returned; purged as expired.
    cache.insert_with_ttl(1, 1, Duration::ZERO).unwrap();
    assert_eq!(cache.get(&1), None);
    // Huge: saturates to "never", does not wrap into the past.
    cache.insert_with_ttl(2, 2, Duration::MAX).unwrap();
    cache
        .insert_with_ttl(3, 3, Duration::from_nanos(u64::MAX))
        .unwrap();
    clock.set_nanos(u64::MAX - 2);
    assert_eq!((cache.get(&2), cache.get(&3)), (Some(2), Some(3)));
    assert_eq!(cache.purge_expired(), 1);
    assert_eq!(*removed.lock().unwrap(), [(1, RemovalCause::Expired)]);
}

/// Found in review: in a cache without a weigher the deadline is packed in whole milliseconds,
/// rounded up, and compared with the clock rounded down. A zero TTL at 1.5 ms stored 2 ms, which
/// 1 ms does not reach: the entry was returned for up to a millisecond, though a zero TTL (an
/// HTTP `max-age=0`) is documented as never returned.
#[test]
fn a_zero_ttl_is_never_returned_between_milliseconds() {
    let clock = ManualClock::new();
    clock.set_nanos(1_500_000);
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(64)
        .expiry()
        .clock(clock.clone())
        .build()
        .unwrap();
    cache.insert_with_ttl(1, 1, Duration::ZERO).unwrap();
    assert_eq!(cache.get(&1), None);
    assert_eq!(cache.peek(&1), None);
    assert!(!cache.contains_key(&1));
    // A positive TTL is still never early.
    cache
        .insert_with_ttl(2, 2, Duration::from_micros(300))
        .unwrap();
    clock.set_nanos(1_799_999);
    assert_eq!(cache.get(&2), Some(2));
}

/// Found by the session-store dry run: a zero TTL stored the deadline `now`, and a pinned
/// handle made earlier, which judges expiry at its own instant, returned the entry (and
/// iterated it), though a zero TTL is documented as never returned. Both layouts: the
/// deadline packed in milliseconds (no weigher) and in its own word (a weigher).
#[test]
fn a_pinned_handle_never_returns_a_zero_ttl_entry_inserted_after_it() {
    for weighed in [false, true] {
        let clock = ManualClock::new();
        let b = Cache::<u64, u64>::builder()
            .max_capacity(64)
            .expiry()
            .clock(clock.clone());
        let b = if weighed {
            b.max_weight(64).weigher(|_, _| 1)
        } else {
            b
        };
        let cache = b.build().unwrap();
        let pinned = cache.pin();
        clock.advance(Duration::from_secs(1));
        cache.insert_with_ttl(7, 7, Duration::ZERO).unwrap();
        assert_eq!(cache.get(&7), None);
        assert_eq!(
            pinned.get(&7),
            None,
            "weighed {weighed}: the older handle returned it"
        );
        assert_eq!(
            pinned.iter().count(),
            0,
            "weighed {weighed}: and iterated it"
        );
    }
}

#[test]
fn bad_builder_input_is_a_typed_error() {
    let b = || Cache::<u64, u64>::builder().max_capacity(10);
    assert_eq!(
        b().time_to_live(Duration::ZERO).build().unwrap_err(),
        BuildError::ZeroTimeToLive
    );
    assert_eq!(
        b().time_to_idle(Duration::ZERO).build().unwrap_err(),
        BuildError::ZeroTimeToIdle
    );
    assert_eq!(
        b().time_to_live(SEC)
            .janitor(Duration::ZERO)
            .build()
            .unwrap_err(),
        BuildError::ZeroJanitorInterval
    );
    assert_eq!(
        b().janitor(SEC).build().unwrap_err(),
        BuildError::JanitorWithoutExpiry
    );
}

/// 200 entries, the even keys short-lived and the odd ones long-lived, all read (marked); then
/// time passes the short TTL and 100 new keys arrive. Returns the cache and every eviction.
///
/// A fixed hasher. Under a random one, now and then a key's neighbourhood (8 buckets) fills up,
/// and the insert evicts there, an expired entry of it first, but a live one if it has none,
/// whatever is expired elsewhere (README, "Bounds are strict"): 4 runs in 300.
fn expire_half_then_insert(
    policy: clockline::Policy,
) -> (
    Cache<u64, u64, ahash::RandomState>,
    Vec<(u64, RemovalCause)>,
) {
    let clock = ManualClock::new();
    let causes = Arc::new(Mutex::new(Vec::new()));
    let log = causes.clone();
    let cache: Cache<u64, u64, ahash::RandomState> = Cache::builder()
        .max_capacity(200)
        .expiry()
        .policy(policy)
        .hasher(ahash::RandomState::with_seeds(1, 2, 3, 4))
        .clock(clock.clone())
        .eviction_listener(move |k, _, c| log.lock().unwrap().push((*k, c)))
        .build()
        .unwrap();
    for k in 0..200 {
        let ttl = if k % 2 == 0 { SEC } else { 1000 * SEC };
        cache.insert_with_ttl(k, k, ttl).unwrap();
    }
    for k in 0..200 {
        assert_eq!(cache.get(&k), Some(k));
    }
    clock.advance(2 * SEC);
    for k in 1000..1100 {
        cache.insert(k, k).unwrap();
    }
    let causes = causes.lock().unwrap().clone();
    (cache, causes)
}

#[test]
fn the_hand_takes_expired_entries_first() {
    // Room for 100 new keys. The hand passes marked live entries (clearing their bits) but
    // takes every expired entry it meets, marked or not, so no old live entry is evicted while
    // expired ones remain. (A new entry that starts unmarked may go before an expired one
    // that the hand has not reached yet: "first" means first when passed.)
    let (cache, causes) = expire_half_then_insert(clockline::Policy::Clock);
    assert!(causes.len() >= 100);
    for &(k, c) in causes.iter() {
        assert!(
            k % 2 == 0 || k >= 1000,
            "live, marked key {k} was evicted: {causes:?}"
        );
        assert_eq!(c == RemovalCause::Expired, k < 1000, "key {k}: {c:?}");
    }
    let expired = causes
        .iter()
        .filter(|e| e.1 == RemovalCause::Expired)
        .count();
    assert!(expired >= 50, "only {expired} expired entries taken");
    for k in (1..200).step_by(2) {
        assert_eq!(cache.get(&k), Some(k), "long-lived key {k} survived");
    }
}

/// The adaptive policy's hand prefers expired entries the same way, but a window entry (a
/// recent one) can leave before an expired main entry the hand has not reached, so the
/// guarantee there is statistical: nearly all long-lived entries survive.
#[test]
fn the_adaptive_policy_prefers_expired_entries() {
    let (_, causes) = expire_half_then_insert(clockline::Policy::Adaptive);
    let live: Vec<_> = causes
        .iter()
        .filter(|&&(k, _)| k % 2 == 1 && k < 1000)
        .collect();
    assert!(
        live.iter().all(|e| e.1 == RemovalCause::Capacity),
        "{live:?}"
    );
    assert!(
        live.len() <= 5,
        "{} of 100 long-lived entries evicted",
        live.len()
    );
}

#[test]
fn purge_expired_removes_exactly_the_expired() {
    let clock = ManualClock::new();
    let cache = ttl_cache(&clock, 1000, 10 * SEC);
    for k in 0..500 {
        cache.insert(k, k).unwrap();
    }
    clock.advance(5 * SEC);
    for k in 500..800 {
        cache.insert(k, k).unwrap();
    }
    clock.advance(5 * SEC);
    assert_eq!(cache.purge_expired(), 500);
    assert_eq!(cache.len(), 300);
    assert_eq!(cache.purge_expired(), 0);
    assert_eq!(cache.check_invariants(), Ok(300));
}

#[test]
fn time_to_idle_keeps_what_is_read() {
    let clock = ManualClock::new();
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(10)
        .time_to_idle(10 * SEC)
        .clock(clock.clone())
        .build()
        .unwrap();
    cache.insert(1, 1).unwrap();
    cache.insert(2, 2).unwrap();
    for _ in 0..10 {
        clock.advance(6 * SEC);
        assert_eq!(cache.get(&1), Some(1), "read every 6 s, TTI 10 s");
    }
    assert_eq!(cache.get(&2), None, "never read: idle for 60 s");
    // peek does not count as use.
    clock.advance(6 * SEC);
    assert_eq!(cache.peek(&1), Some(1));
    clock.advance(6 * SEC);
    assert_eq!(cache.peek(&1), None);
}

/// Found in review: a hit wrote the idle deadline only when `now + tti` passed the stored one
/// by more than a sixteenth of the TTI, so an entry read 0.9 s after its insert (TTI 16 s) kept
/// its first deadline and expired 15.1 s after that read. Now it never expires less than a TTI
/// after its last read, and at most a sixteenth of the TTI later.
#[test]
fn a_recently_read_entry_never_expires_early() {
    let clock = ManualClock::new();
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(10)
        .time_to_idle(16 * SEC)
        .clock(clock.clone())
        .build()
        .unwrap();
    let start = clockline::Clock::now(&*clock);
    let at = |d: Duration| clock.set_nanos((start + d).as_nanos() as u64);
    cache.insert(1, 1).unwrap();
    at(Duration::from_millis(900));
    assert_eq!(cache.get(&1), Some(1));
    at(Duration::from_millis(16_899));
    assert_eq!(cache.peek(&1), Some(1), "read at 0.9 s: alive until 16.9 s");
    assert_eq!(cache.get(&1), Some(1));
    at(Duration::from_millis(16_899 + 15_999));
    assert_eq!(
        cache.peek(&1),
        Some(1),
        "read at 16.899 s: alive for 16 s more"
    );
    at(Duration::from_millis(16_899 + 17_000));
    assert_eq!(
        cache.peek(&1),
        None,
        "idle for 17 s (17/16 of the TTI): expired"
    );
}

#[test]
fn ttl_and_tti_together_expire_at_the_earlier() {
    let clock = ManualClock::new();
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(10)
        .time_to_live(20 * SEC)
        .time_to_idle(10 * SEC)
        .clock(clock.clone())
        .build()
        .unwrap();
    cache.insert(1, 1).unwrap();
    for _ in 0..3 {
        clock.advance(6 * SEC);
        assert_eq!(cache.get(&1), Some(1));
    }
    clock.advance(3 * SEC);
    assert_eq!(
        cache.get(&1),
        None,
        "TTL 20 s wins although it was read at 18 s"
    );
}

#[test]
fn the_janitor_purges_in_the_background_and_stops_on_drop() {
    let clock = ManualClock::new();
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(1000)
        .time_to_live(SEC)
        .clock(clock.clone())
        .janitor(Duration::from_millis(5))
        .build()
        .unwrap();
    for k in 0..100 {
        cache.insert(k, k).unwrap();
    }
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(cache.len(), 100, "nothing expired yet");
    clock.advance(2 * SEC);
    let t = Instant::now();
    while !cache.is_empty() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(cache.len(), 0, "the janitor purged everything");
    // A janitor with a long interval must not delay the drop: it is woken and joined.
    let slow: Cache<u64, u64> = Cache::builder()
        .max_capacity(10)
        .time_to_live(SEC)
        .janitor(Duration::from_secs(3600))
        .build()
        .unwrap();
    let t = Instant::now();
    drop(slow);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "drop waited for the janitor's sleep"
    );
}

#[test]
fn replacing_an_expired_entry_reports_it_as_expired() {
    let clock = ManualClock::new();
    let causes = Arc::new(Mutex::new(Vec::new()));
    let log = causes.clone();
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(10)
        .time_to_live(SEC)
        .clock(clock.clone())
        .eviction_listener(move |k, v, c| log.lock().unwrap().push((*k, *v, c)))
        .build()
        .unwrap();
    cache.insert(1, 1).unwrap();
    cache.insert(1, 2).unwrap();
    clock.advance(2 * SEC);
    cache.insert(1, 3).unwrap();
    assert_eq!(
        *causes.lock().unwrap(),
        [
            (1, 1, RemovalCause::Replaced),
            (1, 2, RemovalCause::Expired)
        ]
    );
    assert_eq!(cache.get(&1), Some(3));
}

#[test]
fn the_coarse_clock_is_the_default_and_real_time_expires_entries() {
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(10)
        .time_to_live(Duration::from_millis(20))
        .build()
        .unwrap();
    cache.insert(1, 1).unwrap();
    assert_eq!(cache.get(&1), Some(1));
    // A handle made now judges expiry now, even after the deadline has passed.
    let before = cache.pin();
    let deadline = Duration::from_millis(20) + clockline::CoarseClock::resolution() * 2;
    std::thread::sleep(deadline + Duration::from_millis(5));
    // Every read path of this cache (TTL only, default clock: the short path that compares
    // with the tick's milliseconds) agrees that the entry is gone...
    assert_eq!(cache.get(&1), None);
    assert_eq!(cache.peek(&1), None);
    assert!(!cache.contains_key(&1));
    assert_eq!(cache.pin().get(&1), None);
    // ...except the handle made before the deadline.
    assert_eq!(before.get(&1), Some(&1));
    assert!(before.contains_key(&1));
}

/// A weighted cache keeps its TTL deadline in an extension word; an unweighted one packs it
/// into the node's weight bits, in whole milliseconds. Both expire at the deadline, never
/// before it, and the weighted one still counts its weights.
#[test]
fn weighted_and_unweighted_caches_expire_alike() {
    let clock = ManualClock::new();
    let weighted: Cache<u64, u64> = Cache::builder()
        .max_weight(1000)
        .weigher(|_, v: &u64| *v)
        .time_to_live(SEC)
        .clock(clock.clone())
        .build()
        .unwrap();
    let plain = ttl_cache(&clock, 10, SEC);
    weighted.insert(1, 7).unwrap();
    plain.insert(1, 7).unwrap();
    // Packed deadlines are rounded up to whole milliseconds: still present 1 ns before.
    clock.advance(SEC - Duration::from_nanos(1));
    assert_eq!((weighted.get(&1), plain.get(&1)), (Some(7), Some(7)));
    assert_eq!(weighted.weight(), 7);
    clock.advance(Duration::from_millis(1));
    assert_eq!((weighted.get(&1), plain.get(&1)), (None, None));
    assert_eq!((weighted.purge_expired(), plain.purge_expired()), (1, 1));
    assert_eq!(
        weighted.weight(),
        0,
        "the expired entry's weight was given back"
    );
}

/// A value that counts its drops.
struct Counted(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A listener called by the janitor's sweep may drop the last handle of the cache (a listener
/// holding a `Weak<Cache>` is the documented way to call back in). The drop then runs on the
/// janitor thread, which cannot join itself. It used to try, panic ("failed to join thread:
/// Resource deadlock avoided") and free the cache under the running sweep: a use after free
/// that AddressSanitizer reported. Now the drop only signals the janitor, which frees the cache
/// when its sweep returns.
#[test]
fn the_last_handle_may_drop_in_a_listener_on_the_janitor_thread() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{mpsc, OnceLock, Weak};

    // Panics on janitor threads, from the hook: the failed self-join panicked there.
    static JANITOR_PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() == Some("clockline-janitor") {
            JANITOR_PANICS.lock().unwrap().push(info.to_string());
        }
        previous(info);
    }));

    let clock = ManualClock::new();
    let handle: Arc<OnceLock<Weak<Cache<u64, Counted>>>> = Arc::default();
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (entered_tx, go_rx) = (Mutex::new(entered_tx), Mutex::new(go_rx));
    let h = handle.clone();
    let cache = Arc::new(
        Cache::builder()
            .max_capacity(64)
            .time_to_live(SEC)
            .clock(clock.clone())
            .janitor(Duration::from_millis(5))
            .eviction_listener(move |_: &u64, _: &Counted, _| {
                if let Some(c) = h.get().and_then(Weak::upgrade) {
                    let _ = c.contains_key(&99);
                    let _ = entered_tx.lock().unwrap().send(());
                    // Wait until the test has dropped its handle: `c` is then the last one.
                    let _ = go_rx.lock().unwrap().recv_timeout(10 * SEC);
                }
            })
            .build()
            .unwrap(),
    );
    handle.set(Arc::downgrade(&cache)).unwrap();
    let dropped = Arc::new(AtomicUsize::new(0));
    cache.insert(1, Counted(dropped.clone())).unwrap();
    cache.insert(2, Counted(dropped.clone())).unwrap();
    clock.advance(2 * SEC);
    // Not expired: still in the table when the cache is freed, so its drop shows the free.
    let live = Arc::new(AtomicUsize::new(0));
    cache.insert(3, Counted(live.clone())).unwrap();
    entered_rx
        .recv_timeout(10 * SEC)
        .expect("the janitor purged");
    drop(cache);
    go_tx.send(()).unwrap();
    let t = Instant::now();
    while live.load(Ordering::SeqCst) == 0 && t.elapsed() < 10 * SEC {
        std::thread::sleep(Duration::from_millis(5));
    }
    let panics: Vec<String> = JANITOR_PANICS.lock().unwrap().clone();
    assert!(
        !panics.iter().any(|p| p.contains("join")),
        "the janitor tried to join itself: {panics:?}"
    );
    assert_eq!(
        live.load(Ordering::SeqCst),
        1,
        "the cache, dropped on the janitor thread, was freed once its sweep returned"
    );
}
