//! Panicking `Drop`, `Hash` and `Eq` of keys and values in the loader and warm-up paths,
//! found by the hostile-conditions dry run (2026-11-27: 6-8 threads, every kind of user code
//! panicking at random). Each test failed on the code before its fix: a flight left unended
//! (its waiters hung), values leaked through unbound temporaries whose neighbour's `Drop`
//! panicked (rust-lang/rust#47949), and warm-up running user code outside its `catch_unwind`.

use std::future::Future;
use std::num::NonZeroUsize;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Once};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::Duration;

use clockline::{Cache, WarmUp};

fn quiet() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let p = info.payload();
            let m = p
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| p.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("");
            if !m.starts_with("intentional:") {
                default(info);
            }
        }));
    });
}

fn msg(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// Counts creations and drops; a value made with `bomb` panics in `Drop` while `armed`.
#[derive(Default)]
struct Counts {
    created: AtomicUsize,
    dropped: AtomicUsize,
    armed: AtomicBool,
}

struct Val {
    key: u64,
    bomb: bool,
    /// Clones inherit `bomb`.
    sticky: bool,
    c: Arc<Counts>,
}

impl Val {
    fn new(c: &Arc<Counts>, key: u64, bomb: bool, sticky: bool) -> Val {
        c.created.fetch_add(1, SeqCst);
        Val {
            key,
            bomb,
            sticky,
            c: c.clone(),
        }
    }
}

impl Clone for Val {
    fn clone(&self) -> Val {
        Val::new(&self.c, self.key, self.bomb && self.sticky, self.sticky)
    }
}

impl Drop for Val {
    fn drop(&mut self) {
        self.c.dropped.fetch_add(1, SeqCst);
        if self.bomb && self.c.armed.load(SeqCst) && !thread::panicking() {
            panic!("intentional: Drop of the value of key {}", self.key);
        }
    }
}

fn settle(c: &Counts) {
    for _ in 0..10_000 {
        if c.dropped.load(SeqCst) >= c.created.load(SeqCst) {
            break;
        }
        clockline::flush_deferred();
        thread::yield_now();
    }
}

struct Noop;
impl Wake for Noop {
    fn wake(self: Arc<Self>) {}
}

/// Pending until `go` is set.
struct Gate(Arc<AtomicBool>);
impl Future for Gate {
    type Output = ();
    fn poll(self: std::pin::Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if self.0.load(SeqCst) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// An async waiter that ends up holding the last reference to a finished flight: dropping it
/// drops the flight's loaded value, whose `Drop` panics. The panic reaches the waiter (fine),
/// but the clone of the value the waiter was returning is never dropped: the `WaitFlight` is
/// dropped by the `.await` right after it returned `Ready(Outcome::Value(clone))`, while that
/// outcome is still an unbound temporary, which rustc leaks when a destructor panics then
/// (the async twin of rust-lang/rust#47949). README: "leaks nothing".
#[test]
fn an_async_waiter_whose_flight_drop_panics_leaks_no_value() {
    quiet();
    let counts = Arc::new(Counts::default());
    let cache: Cache<u64, Val> = Cache::new(16);
    let waker = Waker::from(Arc::new(Noop));
    let mut cx = Context::from_waker(&waker);
    let go = Arc::new(AtomicBool::new(false));

    let (g, c) = (go.clone(), counts.clone());
    {
        let mut leader = pin!(cache.get_or_insert_with_async(1, async move {
            Gate(g).await;
            Val::new(&c, 1, true, true)
        }));
        let mut waiter = pin!(cache.get_or_insert_with_async(1, async { unreachable!() }));
        assert!(
            leader.as_mut().poll(&mut cx).is_pending(),
            "leads, loader pending"
        );
        assert!(
            waiter.as_mut().poll(&mut cx).is_pending(),
            "waits on the flight"
        );
        go.store(true, SeqCst);
        let Poll::Ready(v) = leader.as_mut().poll(&mut cx) else {
            panic!("the load is done")
        };
        // Now the waiter's `WaitFlight` holds the flight's last reference.
        counts.armed.store(true, SeqCst);
        let r = catch_unwind(AssertUnwindSafe(|| waiter.as_mut().poll(&mut cx)));
        counts.armed.store(false, SeqCst);
        assert!(
            r.is_err(),
            "the flight's value's Drop panicked in the waiter"
        );
        drop(r);
        drop(v);
    }
    drop(cache);
    settle(&counts);
    assert_eq!(
        counts.created.load(SeqCst) - counts.dropped.load(SeqCst),
        0,
        "values created but never dropped"
    );
}

/// Warm-up drops the value a load returned after its `catch_unwind` (src/warmup.rs, the end of
/// `work`'s loop): a panicking `Drop` of that value unwinds the worker. With concurrency 1 the
/// caller's own worker stops, and the remaining keys are never loaded, although the docs say
/// the other keys go on and the panic is raised once every key is done.
#[test]
fn a_panicking_drop_in_warm_up_stops_the_remaining_keys() {
    quiet();
    let counts = Arc::new(Counts::default());
    counts.armed.store(true, SeqCst);
    let cache: Cache<u64, Val> = Cache::new(100);
    let c = counts.clone();
    let r = catch_unwind(AssertUnwindSafe(|| {
        cache.warm_up(0..10u64, WarmUp::new(NonZeroUsize::new(1).unwrap()), |&k| {
            // Only the loader's own value is a bomb; the cache's clones are not.
            Ok::<_, ()>(Val::new(&c, k, k == 0, false))
        })
    }));
    counts.armed.store(false, SeqCst);
    assert!(r.is_err(), "the Drop panic reaches the caller");
    let cached = (0..10u64).filter(|k| cache.contains_key(k)).count();
    assert_eq!(
        cached, 10,
        "every key was loaded before the panic was raised"
    );
}

/// The same on a warm-up worker thread (concurrency 2): the scoped thread dies, and the caller
/// gets `std::thread::scope`'s "a scoped thread panicked" instead of the panic of the code
/// that panicked (README: "the panic reaches the caller whose operation ran that code").
#[test]
fn a_panicking_drop_on_a_warm_up_worker_reaches_the_caller_as_itself() {
    quiet();
    let counts = Arc::new(Counts::default());
    counts.armed.store(true, SeqCst);
    let cache: Cache<u64, Val> = Cache::new(100);
    let caller = thread::current().id();
    let c = counts.clone();
    let r = catch_unwind(AssertUnwindSafe(|| {
        cache.warm_up(0..20u64, WarmUp::new(NonZeroUsize::new(2).unwrap()), |&k| {
            let on_worker = thread::current().id() != caller;
            if !on_worker {
                // Leave keys to the worker.
                thread::sleep(Duration::from_millis(20));
            }
            Ok::<_, ()>(Val::new(&c, k, on_worker, false))
        })
    }));
    counts.armed.store(false, SeqCst);
    let p = r.expect_err("the Drop panic reaches the caller");
    let m = msg(&*p);
    assert!(
        m.starts_with("intentional:"),
        "the caller got {m:?}, not the panic of the value's Drop"
    );
}

/// A key whose `Hash` panics while `HASH_ARMED` and its id is 0.
static HASH_ARMED: AtomicBool = AtomicBool::new(false);

#[derive(Clone, PartialEq, Eq)]
struct PKey(u64);

impl std::hash::Hash for PKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        if self.0 == 0 && HASH_ARMED.load(SeqCst) {
            panic!("intentional: Hash of key 0");
        }
        self.0.hash(h)
    }
}

/// Warm-up's skip check (`self.contains_key(&key)`, src/warmup.rs) runs outside its
/// `catch_unwind`: a key whose `Hash` panics there unwinds the worker, and with concurrency 1
/// no later key is loaded (the docs: "the others go on", and such a panic "is raised once
/// every key is done").
#[test]
fn a_panicking_hash_in_warm_up_stops_the_remaining_keys() {
    quiet();
    let cache: Cache<PKey, u64> = Cache::new(100);
    HASH_ARMED.store(true, SeqCst);
    let r = catch_unwind(AssertUnwindSafe(|| {
        cache.warm_up(
            (0..10u64).map(PKey),
            WarmUp::new(NonZeroUsize::new(1).unwrap()),
            |k| Ok::<_, ()>(k.0),
        )
    }));
    HASH_ARMED.store(false, SeqCst);
    assert!(r.is_err(), "the Hash panic reaches the caller");
    let cached = (1..10u64).filter(|&k| cache.contains_key(&PKey(k))).count();
    assert_eq!(
        cached, 9,
        "keys 1-9 were loaded before the panic was raised"
    );
}

/// Key whose `Drop` panics at the `KDROP_AT`-th drop while armed (counting from 1).
static KDROP_COUNT: AtomicUsize = AtomicUsize::new(0);
static KDROP_AT: AtomicUsize = AtomicUsize::new(0);

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
struct DKey(u64);

impl Drop for DKey {
    fn drop(&mut self) {
        let at = KDROP_AT.load(SeqCst);
        if at != 0 && !thread::panicking() && KDROP_COUNT.fetch_add(1, SeqCst) + 1 == at {
            panic!("intentional: Drop of key {}", self.0);
        }
    }
}

fn kdrop_arm(at: usize) {
    KDROP_COUNT.store(0, SeqCst);
    KDROP_AT.store(at, SeqCst);
}

/// A loader's flight ends with `map.remove(&self.key)` (src/loader.rs, `Lead::end`): the
/// flight map drops its copy of the key while `remove`'s result, the flight, is an unbound
/// return value. If that key's `Drop` panics, the flight (with the loaded value it hands to
/// waiters) is never freed. Here the first key drop of a load on an empty cache is that one.
#[test]
fn a_panicking_key_drop_as_a_flight_ends_leaks_no_value() {
    quiet();
    let counts = Arc::new(Counts::default());
    let cache: Cache<DKey, Val> = Cache::new(16);
    let c = counts.clone();
    kdrop_arm(1);
    let r = catch_unwind(AssertUnwindSafe(|| {
        cache.get_or_insert_with(DKey(1), || Val::new(&c, 1, false, false))
    }));
    kdrop_arm(0);
    assert!(r.is_err(), "the key's Drop panic reaches the caller");
    drop(r);
    assert_eq!(cache.check_invariants(), Ok(1));
    drop(cache);
    settle(&counts);
    assert_eq!(
        counts.created.load(SeqCst) - counts.dropped.load(SeqCst),
        0,
        "values created but never dropped"
    );
}

/// One-shot panics: the next `Eq` call panics / the next drop panics, once each.
static EQ_PANIC_NEXT: AtomicBool = AtomicBool::new(false);
static DROP_PANIC_NEXT: AtomicBool = AtomicBool::new(false);

#[derive(Clone, Debug)]
struct OneShotKey(u64);

impl std::hash::Hash for OneShotKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.0.hash(h)
    }
}

impl PartialEq for OneShotKey {
    fn eq(&self, o: &Self) -> bool {
        if EQ_PANIC_NEXT.swap(false, SeqCst) {
            panic!("intentional: Eq of key {}", self.0);
        }
        self.0 == o.0
    }
}
impl Eq for OneShotKey {}
impl Drop for OneShotKey {
    fn drop(&mut self) {
        if !thread::panicking() && DROP_PANIC_NEXT.swap(false, SeqCst) {
            panic!("intentional: Drop of key {}", self.0);
        }
    }
}

/// `Lead::end` (src/loader.rs): when the flight-map lookup panics (the key's `Eq`), it removes
/// the flight by identity with `retain`, which drops the map's key; if that `Drop` panics too,
/// `end` unwinds before `self.flight.finish(outcome)`, with `done` already set. The flight is
/// out of the map but never ends: every caller already waiting on it waits forever (a sync
/// waiter blocks its thread for good; here an async waiter stays pending).
#[test]
fn a_waiter_is_released_when_ending_the_flight_panics_twice() {
    quiet();
    let cache: Cache<OneShotKey, u64> = Cache::new(16);
    let waker = Waker::from(Arc::new(Noop));
    let mut cx = Context::from_waker(&waker);
    let go = Arc::new(AtomicBool::new(false));
    let g = go.clone();
    let mut leader = pin!(cache.get_or_insert_with_async(OneShotKey(1), async move {
        Gate(g).await;
        // The insert of an empty cache compares no key; the flight map's lookup is next.
        EQ_PANIC_NEXT.store(true, SeqCst);
        DROP_PANIC_NEXT.store(true, SeqCst);
        7
    }));
    let mut waiter = pin!(cache.get_or_insert_with_async(OneShotKey(1), async { 8 }));
    assert!(leader.as_mut().poll(&mut cx).is_pending());
    assert!(waiter.as_mut().poll(&mut cx).is_pending());
    go.store(true, SeqCst);
    let r = catch_unwind(AssertUnwindSafe(|| leader.as_mut().poll(&mut cx)));
    assert!(r.is_err(), "the leader's caller gets the Eq panic");
    assert!(
        !EQ_PANIC_NEXT.load(SeqCst) && !DROP_PANIC_NEXT.load(SeqCst),
        "both fired"
    );
    let mut answer = None;
    for _ in 0..1000 {
        if let Poll::Ready(v) = waiter.as_mut().poll(&mut cx) {
            answer = Some(v);
            break;
        }
    }
    assert!(
        answer.is_some(),
        "the waiter is still waiting on a flight nobody will end"
    );
}

/// Counts `Hash` calls of key 0 while armed; the `HASH_NTH`-th panics.
static HASH_N: AtomicUsize = AtomicUsize::new(0);
static HASH_NTH: AtomicUsize = AtomicUsize::new(0);

#[derive(Clone, PartialEq, Eq)]
struct NthHashKey(u64);

impl std::hash::Hash for NthHashKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        if self.0 == 0 && HASH_N.fetch_add(1, SeqCst) + 1 == HASH_NTH.load(SeqCst) {
            panic!("intentional: Hash of key 0");
        }
        self.0.hash(h)
    }
}

/// README, Guarantees: a panic in user code (`Hash` included) "reaches the caller whose
/// operation ran that code". Warm-up counts a key whose `Hash` panics inside the load, before
/// its loader ran (here its second hash: the first is warm-up's skip check), as a failed load
/// and swallows the panic. (Warm-up's docs only speak of loader panics and of panics after the
/// loader returned.) Doc or code: one of them should change.
#[test]
fn a_panicking_hash_inside_a_warm_up_load_reaches_the_caller() {
    quiet();
    let cache: Cache<NthHashKey, u64> = Cache::new(100);
    HASH_N.store(0, SeqCst);
    HASH_NTH.store(2, SeqCst);
    let r = catch_unwind(AssertUnwindSafe(|| {
        cache.warm_up(
            (0..3u64).map(NthHashKey),
            WarmUp::new(NonZeroUsize::new(1).unwrap()),
            |k| Ok::<_, ()>(k.0),
        )
    }));
    HASH_NTH.store(0, SeqCst);
    assert!(
        r.is_err(),
        "the Hash panic was swallowed; report: {:?}",
        r.ok()
    );
}
