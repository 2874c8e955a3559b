//! Cache-aside loading with single flight: concurrent misses on one key run one loader; the
//! others wait for its value.
//!
//! # Protocol
//!
//! A caller that misses looks the key up in a small sharded map of *flights* (a `Mutex` per
//! shard; this is the miss path, where a lock costs nothing next to the load). If a flight is
//! there it waits on it; otherwise it registers one and *leads*: it looks the cache up once more
//! (a previous leader may have inserted and left between our miss and our registration), runs
//! the loader, inserts the value into the cache, and only then removes the flight and wakes the
//! waiters. So at any instant there is at most one loader per key in this cache, and a caller
//! that comes late finds either the flight or the cached value.
//!
//! A leader that finds the key cached at that second look returns what it found but does not
//! hand it to the waiters: they look the cache up again themselves, since one of them may have
//! asked after that value expired (found by the configuration fuzzer). For the same reason a
//! waiter takes a loaded value only if its deadline is after the instant the waiter asked (see
//! `Outcome::Value`).
//!
//! What waiters see when the leader does not produce a value:
//! * **The loader returns an error**: nothing is cached; the leader gets its error as `Arc<E>`,
//!   and every waiter that asked with the same error type gets the same `Arc<E>` (one failed
//!   query, not one per waiter). A waiter whose loader has another error type, or none (plain
//!   `get_or_insert_with`), starts its own attempt, again single flight.
//! * **The loader panics** (sync) **or the leading future is dropped** (async): the flight is
//!   abandoned; waiters wake and one of them leads a new attempt with its own loader. The panic
//!   propagates to the leader's caller only. Nothing is poisoned: the flight map's locks are
//!   never held while user code runs.
//! * **A waiting future is dropped**: it simply stops waiting, and takes its waker out of the
//!   flight; the flight goes on.
//!
//! A loader must not ask for its own key (directly or through another loader): it would wait
//! on its own flight forever. Loading *other* keys from a loader is fine.
//!
//! **In an unversioned cache** the loaded value is cached only if the key is still absent (or
//! its entry expired): a write of the key during the load, such as a write-through `insert`
//! of the data the load may have read before it changed, wins, and the loaded value is only
//! returned (Guava's rule; until 2026-11-27 the loaded value overwrote it).
//!
//! **In a versioned cache** the loaded value's version is unknown, so it is cached only if
//! nothing newer arrived while it loaded: the key is still absent (or its entry expired), and
//! the tombstones know what they knew when the load began (`Tombstones::snapshot`, compared by `Tombstones::since`). A versioned insert or an invalidation of the key during the load
//! wins; the loader's callers still get the loaded value, which is simply not cached. (The
//! leader used to store it with a plain insert, version 0, over whatever had arrived: found in
//! review; `tests/versions.rs`, `a_load_never_overwrites_what_arrived_meanwhile`.) A loader
//! that knows its value's version tells it through
//! [`try_get_or_insert_versioned_with`](crate::Cache::try_get_or_insert_versioned_with), and
//! the value is weighed by that version instead, as `insert_versioned` weighs it.
//!
//! Sync and async callers share flights. A sync `get_or_insert_with` that waits on a flight
//! led by an async task blocks its thread until that task finishes: on a single-threaded
//! executor, where the task can only run on that same thread, it never does. A multi-threaded
//! executor does not make it safe either: tokio's keeps a task woken from a worker in that
//! worker's LIFO slot, which the other workers do not steal, so a sync loader called from an
//! async task waits forever on an async leader that the same task has just woken
//! (`tests/loader.rs`,
//! `sync_loader_inside_an_async_task_can_hang_a_multi_thread_runtime`). From async code, call
//! the async loaders; where a sync one must run there, wrap it in `spawn_blocking` or
//! `block_in_place`.
//!
//! The async variant needs no runtime: waiters park their `Waker` in the flight, and the leader
//! wakes them all when it finishes or is dropped.
//!
//! The flight map's and the flights' locks come from `crate::sync`, so loom's models
//! (`loom-tests/tests/loader.rs`) run this protocol: two misses run one loader, a failing or
//! panicking loader, an async leader dropped while a waiter is parked, and a load racing an
//! update and its invalidation.

use crate::cache::Cond;
use crate::expiry::Stopwatch;
use crate::stats::Counter;
use crate::sync::{Condvar, FlightArc, Mutex, MutexGuard};
use crate::versions::Snapshot;
use crate::{Cache, InsertError};
use equivalent::Equivalent;
use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{Arc, PoisonError};
use std::task::{Context, Poll, Waker};

/// Shards of the flight map (two in loom models, which need few objects).
const SHARDS: usize = if cfg!(clockline_loom) { 2 } else { 16 };

type Failure = Arc<dyn Any + Send + Sync>;

enum State<V> {
    Running(Wakers),
    /// The loaded value, and the earliest deadline the cache gave it (see [`Outcome::Value`]).
    Done(V, u64),
    Failed(Failure),
    Abandoned,
}

/// The wakers of the async waiters parked on a running flight: a slab, so that a waiter
/// dropped before the flight ends (a request that timed out) takes its waker out again in
/// O(1). (They used to stay until the flight ended: a cancellation storm on a slow load kept
/// one waker, with tokio a whole task allocation, per request that gave up;
/// `tests/loader.rs`,
/// `a_dropped_async_waiter_does_not_keep_its_waker_in_the_flight`.)
#[derive(Default)]
struct Wakers {
    slots: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl Wakers {
    /// Registers or refreshes the waker of the waiter in `slot`.
    fn register(&mut self, slot: &mut Option<usize>, waker: &Waker) {
        if let Some(i) = *slot {
            if let Some(Some(w)) = self.slots.get_mut(i) {
                if !w.will_wake(waker) {
                    *w = waker.clone();
                }
                return;
            }
        }
        let w = Some(waker.clone());
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i] = w;
                i
            }
            None => {
                self.slots.push(w);
                self.slots.len() - 1
            }
        };
        *slot = Some(i);
    }

    /// Takes out the waker of a waiter that stops waiting.
    fn remove(&mut self, i: usize) -> Option<Waker> {
        let w = self.slots.get_mut(i)?.take();
        if w.is_some() {
            self.free.push(i);
        }
        w
    }
}

pub(crate) struct Flight<V> {
    state: Mutex<State<V>>,
    cv: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The only user code run under these locks is a key's `Hash`, `Eq` and `Clone` (the
    // flight map's lookups, and `join`'s clones, made before it registers anything). A panic
    // there leaves the map as it was, and a flight's state changes in one assignment, so a
    // poisoned lock's data is still consistent.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<V: Clone> Flight<V> {
    fn new() -> Self {
        Self {
            state: Mutex::new(State::Running(Wakers::default())),
            cv: Condvar::new(),
        }
    }

    fn finish(&self, outcome: State<V>) {
        let wakers = match std::mem::replace(&mut *lock(&self.state), outcome) {
            State::Running(w) => w.slots,
            _ => Vec::new(),
        };
        self.cv.notify_all();
        for w in wakers.into_iter().flatten() {
            w.wake();
        }
    }

    /// Blocks until the flight ends.
    fn wait(&self) -> Outcome<V> {
        let mut st = lock(&self.state);
        while matches!(*st, State::Running(_)) {
            st = self.cv.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
        Outcome::of(&st)
    }

    /// `slot`: where this waiter's waker is registered, if it is.
    fn poll_wait(&self, cx: &mut Context<'_>, slot: &mut Option<usize>) -> Poll<Outcome<V>> {
        let mut st = lock(&self.state);
        if let State::Running(wakers) = &mut *st {
            wakers.register(slot, cx.waker());
            return Poll::Pending;
        }
        *slot = None;
        Poll::Ready(Outcome::of(&st))
    }

    /// A waiter registered in `slot` stops waiting (its future was dropped).
    fn forget(&self, slot: usize) {
        let waker = match &mut *lock(&self.state) {
            State::Running(wakers) => wakers.remove(slot),
            _ => None,
        };
        // Dropped with the lock released: a waker's drop may free its task.
        drop(waker);
    }
}

/// How a flight ended, as a waiter sees it.
enum Outcome<V> {
    /// The leader's value and the earliest deadline the cache gave it. A waiter takes the value
    /// only if that deadline is after the instant it asked ([`Cache::asked`]); otherwise the
    /// value expired before the waiter's call began (the leader read the clock for its insert,
    /// then stalled), and the waiter looks again.
    Value(V, u64),
    Failed(Failure),
    Retry,
}

impl<V: Clone> Outcome<V> {
    fn of(st: &State<V>) -> Self {
        match st {
            State::Done(v, born) => Self::Value(v.clone(), *born),
            State::Failed(e) => Self::Failed(e.clone()),
            State::Abandoned | State::Running(_) => Self::Retry,
        }
    }
}

type Shard<K, V> = Mutex<HashMap<K, FlightArc<Flight<V>>, ahash::RandomState>>;

/// The flights in progress, by key.
pub(crate) struct Flights<K, V> {
    shards: Box<[Shard<K, V>]>,
}

impl<K, V> Flights<K, V> {
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::with_hasher(ahash::RandomState::new())))
                .collect(),
        }
    }
}

/// The leader's duty to end its flight: if dropped without [`Lead::finish`] (the loader
/// panicked, or the leading future was dropped), the flight is abandoned and waiters retry.
struct Lead<'a, K: Hash + Eq, V: Clone> {
    flights: &'a Flights<K, V>,
    shard: usize,
    key: K,
    flight: FlightArc<Flight<V>>,
    done: bool,
}

impl<K: Hash + Eq, V: Clone> Lead<'_, K, V> {
    fn finish(mut self, outcome: State<V>) {
        if let Some(panic) = self.end(outcome) {
            resume_unwind(panic);
        }
    }

    /// Ends the flight of a leader that found the key cached after all (inserted between its
    /// miss and its registration): the waiters look the cache up again, each at its own time,
    /// instead of taking the value this leader found. A waiter may have asked after that value
    /// expired, and would otherwise return it (found by the configuration fuzzer; test
    /// `a_waiter_never_gets_a_value_that_expired_before_it_asked`).
    fn cached(self) {
        self.finish(State::Abandoned);
    }

    /// Unregisters the flight and ends it with `outcome`, whatever the key's `Hash` and `Eq`
    /// do: if one of them panics while the flight is looked up, the flight is removed by
    /// identity instead (no user code), still ended, and the panic handed back for the caller
    /// to raise. (It used to unwind out of here after `done` was set: the flight stayed
    /// registered and never ended, so its waiters, and every later miss on the key, waited
    /// forever; `tests/loader.rs`, `a_panic_while_ending_a_flight_leaves_no_flight_behind`.)
    fn end(&mut self, outcome: State<V>) -> Option<Box<dyn Any + Send>> {
        self.done = true;
        let shard = &self.flights.shards[self.shard];
        let looked_up = catch_unwind(AssertUnwindSafe(|| {
            let mut map = lock(shard);
            if map
                .get(&self.key)
                .is_some_and(|f| FlightArc::ptr_eq(f, &self.flight))
            {
                // Not `remove`: it drops the map's key while its result (the flight) is an
                // unbound return value, which leaks if that `Drop` panics.
                let removed = map.remove_entry(&self.key);
                drop(map);
                if let Some((k, f)) = removed {
                    drop(f);
                    drop(k);
                }
            }
        }));
        let panic = looked_up.err();
        if panic.is_some() {
            // A panic inside a lookup leaves the map unchanged (and the poisoned lock is
            // ignored, see `lock`), so the flight is still registered, at most once.
            // `retain` drops the map's key, whose `Drop` may panic: the flight must still end
            // (the first panic is the one raised).
            let _ = catch_unwind(AssertUnwindSafe(|| {
                lock(shard).retain(|_, f| !FlightArc::ptr_eq(f, &self.flight))
            }));
        }
        self.flight.finish(outcome);
        panic
    }
}

impl<K: Hash + Eq, V: Clone> Drop for Lead<'_, K, V> {
    fn drop(&mut self) {
        if !self.done {
            if let Some(panic) = self.end(State::Abandoned) {
                // Raising a second panic while one unwinds (the loader's) would abort.
                if !std::thread::panicking() {
                    resume_unwind(panic);
                }
            }
        }
    }
}

enum Joined<'a, K: Hash + Eq, V: Clone> {
    Lead(Lead<'a, K, V>),
    Wait(FlightArc<Flight<V>>),
}

/// How a load request was served; warm-up reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Served {
    /// The value was cached.
    Hit,
    /// This caller ran the loader.
    Loaded,
    /// This caller waited for another caller's loader.
    Joined,
}

impl<K, V, S> Cache<K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher,
{
    fn join(&self, key: &K) -> Joined<'_, K, V> {
        let flights = &self.inner().flights;
        let shard = (self.inner().hash(key) >> 60) as usize % SHARDS;
        let mut map = lock(&flights.shards[shard]);
        if let Some(f) = map.get(key) {
            return Joined::Wait(f.clone());
        }
        // Both clones of the key (user code that may panic) are made before the flight is
        // registered: a panic then leaves nothing behind. (The leader's own clone used to come
        // after the registration, and its panic left a flight with no leader to end it, which
        // every later miss on the key waited on forever; `tests/loader.rs`,
        // `a_panic_while_cloning_the_key_to_lead_leaves_no_flight_behind`.) A panic of the
        // key's `Hash` or `Eq` inside `insert` leaves the map without the new entry.
        let lead_key = key.clone();
        let map_key = key.clone();
        let flight = FlightArc::new(Flight::new());
        map.insert(map_key, flight.clone());
        Joined::Lead(Lead {
            flights,
            shard,
            key: lead_key,
            flight,
            done: false,
        })
    }

    /// Starts timing a load; the returned guard counts it as failed if the loader panics.
    fn start_load(&self) -> LoadTimer<'_, K, V, S> {
        LoadTimer {
            cache: self,
            started: self.inner().clock.stopwatch(),
            armed: true,
        }
    }

    /// What [`Self::insert_loaded`] needs to know from before a load of `key` begins: in a
    /// versioned cache, what the tombstones know of the key then, and the version of the
    /// entry present then (expired or not; `None` if absent); `None` in other caches.
    fn load_begins(&self, key: &K) -> Option<(Snapshot, Option<u64>)> {
        let inner = self.inner();
        let tombs = inner.tombstones.as_ref()?;
        let snapshot = tombs.snapshot(inner.hash(key), key);
        Some((snapshot, inner.present_version(key)))
    }

    /// Caches a loaded value, giving way to what arrived since the load began: in an
    /// unversioned cache a live entry (a write of the key during the load), in a versioned
    /// one anything newer (see the module docs). Runs `then` (the end of the
    /// flight) after the insert and before the eviction listener hears of what the insert
    /// evicted: a listener that loads the key being loaded then finds it cached, instead of
    /// waiting on a flight that waits for that listener.
    ///
    /// `version`: the version the loader told (`try_get_or_insert_versioned_with`); in a
    /// versioned cache the value is then stored as a versioned insert of that version would be
    /// against the entry (replacing also an expired entry of the same version), and against the
    /// tombstones as `Since::refuses_load_at` decides (a tombstone of that same version does
    /// not refuse it; one dropped during the load may).
    fn insert_loaded(
        &self,
        key: K,
        value: V,
        began: Option<(Snapshot, Option<u64>)>,
        version: Option<u64>,
        then: impl FnOnce(u64, bool),
    ) -> Result<(), InsertError<K, V>> {
        let cond = match (began, version) {
            (None, _) => Cond::Absent,
            (Some((snapshot, _)), Some(v)) => Cond::LoadedAt(v, snapshot),
            (Some((snapshot, present)), None) => Cond::Loaded(snapshot, present),
        };
        let guard = crate::sync::pin();
        let result = self
            .inner()
            .insert_then(key, value, None, cond, &guard, then);
        if let Some(version) = version {
            // As for `insert_versioned` (a late older broadcast was cached and served after
            // such a load: found in review, `tests/versions.rs`,
            // `a_versioned_load_refused_for_its_weight_is_news_of_its_version`).
            self.refused_is_news(&result, version);
        }
        result
    }

    /// How a flight whose loader returned `value` ends for its waiters, once the insert is
    /// done: they take the value, unless the cache refused it as older than what it knows
    /// (`stale`: in a versioned cache, an invalidation or a newer version arrived during the
    /// load). Then they look the cache up again, and load again on a miss: a waiter may have
    /// asked after it saw the newer version, and must not get an older one. (It took the
    /// refused value; found by a dry run of the fleet coherence layer, `tests/loader.rs`,
    /// `a_waiter_never_gets_a_value_the_cache_refused_as_stale`.) The leader's own caller,
    /// whose call began before the load, still gets it.
    fn loaded_outcome(value: V, born: u64, stale: bool) -> State<V> {
        if stale {
            State::Abandoned
        } else {
            State::Done(value, born)
        }
    }

    /// What a waiter does once the flight it joined has ended: `Some` answer to return (the
    /// leader's value, or its error if it is of the caller's type), or `None` to look the
    /// cache up again and, on a miss, load (the flight was abandoned, its value expired
    /// before this call began, or it failed with another caller's error type). One function
    /// for the sync and async loops, so that the two cannot drift apart.
    fn waited<E>(outcome: Outcome<V>, asked: u64) -> Option<Result<V, Arc<E>>>
    where
        E: Send + Sync + 'static,
    {
        match outcome {
            Outcome::Value(v, born) if born > asked => Some(Ok(v)),
            Outcome::Failed(e) => e.downcast::<E>().ok().map(Err),
            Outcome::Value(..) | Outcome::Retry => None,
        }
    }

    /// The leader's end of a load, sync or async: counts it, caches a value (a refusal, a
    /// value heavier than the whole budget or, in a versioned cache, one something newer
    /// overtook, only means it is not cached), ends the flight for the waiters, and writes
    /// the caller's answer into `out`. The answer goes out through `out`, not as a return
    /// value, and the key of a failed load is dropped after it is written, for the reason
    /// [`Self::load_sync`] gives.
    fn end_load<E>(
        &self,
        key: K,
        lead: Lead<'_, K, V>,
        began: Option<(Snapshot, Option<u64>)>,
        timer: LoadTimer<'_, K, V, S>,
        loaded: Result<(V, Option<u64>), E>,
        out: &mut Option<Result<V, Arc<E>>>,
    ) where
        E: Send + Sync + 'static,
    {
        *out = Some(match loaded {
            Ok((v, version)) => {
                timer.done(true);
                let done = v.clone();
                let _ = self.insert_loaded(key, v.clone(), began, version, |born, stale| {
                    lead.finish(Self::loaded_outcome(done, born, stale))
                });
                Ok(v)
            }
            Err(e) => {
                timer.done(false);
                let e = Arc::new(e);
                lead.finish(State::Failed(e.clone()));
                Err(e)
            }
        });
    }

    /// The instant a load call began, on the cache's expiry clock (0 in a cache without
    /// expiry, where every value's deadline is `NEVER`). A waiter takes the leader's value only
    /// if the value's earliest deadline is after it: a call never returns a value that expired
    /// before the call began (found in review: a leader that read the clock for its insert and
    /// then stalled, on a busy lock or an eviction, could hand its waiters a value born
    /// expired for them; `tests/loader.rs`, `a_waiter_never_gets_a_loaded_value_that_expired_before_it_asked`).
    fn asked(&self) -> u64 {
        self.inner().now()
    }

    /// The lookup at the top of a load's loop. Only the first counts in the statistics (a hit
    /// or a miss): a retry, after the leader failed or was dropped, counts nothing, so one call
    /// counts one lookup (found in review: it counted two misses). Every one of them marks what
    /// it finds as used and moves its idle deadline, as any read does (it used `peek`, which
    /// does neither, so an entry found there could expire a time-to-idle after an earlier
    /// read instead of this one: found in review).
    fn lookup_before_load(&self, key: &K, first: &mut bool) -> Option<V> {
        if std::mem::take(first) {
            self.get(key)
        } else {
            self.get_uncounted(key)
        }
    }

    /// The value for `key`; on a miss, runs `init` to make it, caches it and returns it.
    /// Concurrent callers that miss on the same key run one `init` between them; the others
    /// wait for its value. If `init` panics, the panic propagates to this caller, and one of
    /// the waiters runs its own `init` instead. A value the cache refuses (a weighted cache's
    /// [`TooHeavy`](crate::InsertErrorKind::TooHeavy) or
    /// [`Rejected`](crate::InsertErrorKind::Rejected)) is still returned, and not cached. See
    /// the [module docs](crate::loader) for the protocol.
    ///
    /// ```
    /// let cache: clockline::Cache<u64, String> = clockline::Cache::new(100);
    /// let v = cache.get_or_insert_with(7, || "seven".to_string());
    /// assert_eq!(v, "seven");
    /// assert_eq!(cache.get_or_insert_with(7, || unreachable!()), "seven");
    /// ```
    pub fn get_or_insert_with(&self, key: K, init: impl FnOnce() -> V) -> V {
        match self.try_get_or_insert_with::<std::convert::Infallible>(key, || Ok(init())) {
            Ok(v) => v,
            Err(e) => match *e {},
        }
    }

    /// Like [`get_or_insert_with`](Self::get_or_insert_with), with a loader that may fail. A
    /// failure caches nothing; this caller and every waiter that asked with the same error type
    /// get the same `Arc<E>`. (Waiters with another error type start their own attempt.)
    ///
    /// ```
    /// let cache: clockline::Cache<u64, u64> = clockline::Cache::new(100);
    /// let r = cache.try_get_or_insert_with(1, || Err::<u64, _>("database down"));
    /// assert_eq!(*r.unwrap_err(), "database down");
    /// assert_eq!(cache.get(&1), None, "a failure caches nothing");
    /// ```
    pub fn try_get_or_insert_with<E>(
        &self,
        key: K,
        init: impl FnOnce() -> Result<V, E>,
    ) -> Result<V, Arc<E>>
    where
        E: Send + Sync + 'static,
    {
        self.load_sync(key, false, || init().map(|v| (v, None)))
            .map(|(v, _)| v)
    }

    /// Like [`try_get_or_insert_with`](Self::try_get_or_insert_with), for a loader that knows
    /// the version of what it loaded (a row version, a log offset: the numbers a fleet's
    /// invalidations carry). In a [versioned](crate::Builder::versioned) cache the value is
    /// cached only if its version is newer than the key's entry (or equal to an *expired*
    /// entry's: the same data, loaded again) and not older than the key's tombstone: a
    /// tombstone of the same version, left by an eviction or by an invalidation announcing
    /// that version, describes the data the loader just read. So an invalidation to a newer
    /// version or a newer insert that arrived during the load wins (also once the bounded
    /// tombstone store has dropped that invalidation again), and an older insert that arrives
    /// after it is refused. The caller gets the loaded value either way, as with every loader;
    /// callers waiting on this load get it only if it was cached (otherwise they look again).
    /// In a cache built without `versioned()` the version is ignored and the value cached as
    /// `try_get_or_insert_with` caches it.
    ///
    /// ```
    /// let cache: clockline::Cache<u64, String> =
    ///     clockline::Cache::builder().max_capacity(100).versioned().build().unwrap();
    /// let v = cache.try_get_or_insert_versioned_with(1, || Ok::<_, ()>(("row 1".to_string(), 7)));
    /// assert_eq!(v.unwrap(), "row 1");
    /// assert_eq!(cache.version_of(&1), Some(7));
    /// // A late broadcast of version 6 is older than what was loaded: refused.
    /// assert!(cache.insert_versioned(1, "old".to_string(), 6).is_err());
    /// ```
    pub fn try_get_or_insert_versioned_with<E>(
        &self,
        key: K,
        init: impl FnOnce() -> Result<(V, u64), E>,
    ) -> Result<V, Arc<E>>
    where
        E: Send + Sync + 'static,
    {
        self.load_sync(key, false, || init().map(|(v, n)| (v, Some(n))))
            .map(|(v, _)| v)
    }

    /// [`get_or_insert_with`](Self::get_or_insert_with) with a borrowed key, as moka's
    /// `get_with_by_ref`: a hit clones no key (with `String` keys, `&str` lookups allocate
    /// nothing); only a miss makes the owned key, with `ToOwned`. The statistics count one
    /// lookup per call, as for the owned form. (A `get` followed by `get_or_insert_with` on its
    /// miss counts two misses for one request: call this instead.)
    ///
    /// ```
    /// let cache: clockline::Cache<String, usize> = clockline::Cache::new(100);
    /// assert_eq!(cache.get_or_insert_with_by_ref("seven", || 7), 7);
    /// assert_eq!(cache.get_or_insert_with_by_ref("seven", || unreachable!()), 7);
    /// ```
    pub fn get_or_insert_with_by_ref<Q>(&self, key: &Q, init: impl FnOnce() -> V) -> V
    where
        Q: ?Sized + Hash + Equivalent<K> + ToOwned<Owned = K>,
    {
        match self.try_get_or_insert_with_by_ref::<Q, std::convert::Infallible>(key, || Ok(init()))
        {
            Ok(v) => v,
            Err(e) => match *e {},
        }
    }

    /// [`try_get_or_insert_with`](Self::try_get_or_insert_with) with a borrowed key: see
    /// [`get_or_insert_with_by_ref`](Self::get_or_insert_with_by_ref).
    pub fn try_get_or_insert_with_by_ref<Q, E>(
        &self,
        key: &Q,
        init: impl FnOnce() -> Result<V, E>,
    ) -> Result<V, Arc<E>>
    where
        Q: ?Sized + Hash + Equivalent<K> + ToOwned<Owned = K>,
        E: Send + Sync + 'static,
    {
        self.by_ref_sync(key, || init().map(|v| (v, None)))
    }

    /// [`try_get_or_insert_versioned_with`](Self::try_get_or_insert_versioned_with) with a
    /// borrowed key: see [`get_or_insert_with_by_ref`](Self::get_or_insert_with_by_ref).
    pub fn try_get_or_insert_versioned_with_by_ref<Q, E>(
        &self,
        key: &Q,
        init: impl FnOnce() -> Result<(V, u64), E>,
    ) -> Result<V, Arc<E>>
    where
        Q: ?Sized + Hash + Equivalent<K> + ToOwned<Owned = K>,
        E: Send + Sync + 'static,
    {
        self.by_ref_sync(key, || init().map(|(v, n)| (v, Some(n))))
    }

    /// The sync `_by_ref` loaders: a counted lookup by `&Q`, and on a miss the owned loader,
    /// which does not count its first lookup again.
    fn by_ref_sync<Q, E>(
        &self,
        key: &Q,
        init: impl FnOnce() -> Result<(V, Option<u64>), E>,
    ) -> Result<V, Arc<E>>
    where
        Q: ?Sized + Hash + Equivalent<K> + ToOwned<Owned = K>,
        E: Send + Sync + 'static,
    {
        if let Some(v) = self.get(key) {
            // Dropped here, not as this returns: a panicking `Drop` of the unused loader then
            // drops `v` while unwinding instead of leaking it (see `load_sync`).
            drop(init);
            return Ok(v);
        }
        self.load_sync(key.to_owned(), true, init).map(|(v, _)| v)
    }

    /// The body of every sync loader: `init` returns the value and, if the loader knows it,
    /// its version. `missed`: the caller's own lookup of `key` already missed and was counted
    /// (the `_by_ref` loaders), so the loader's first lookup is not counted again.
    pub(crate) fn load_sync<E>(
        &self,
        key: K,
        missed: bool,
        init: impl FnOnce() -> Result<(V, Option<u64>), E>,
    ) -> Result<(V, Served), Arc<E>>
    where
        E: Send + Sync + 'static,
    {
        // The answer is made in `load_sync_into` and kept here, so that user code dropped as
        // that returns (the key, a loader that was not run and what it captured, a flight's
        // last reference and its value) may panic without leaking it: rustc does not drop a
        // function's return value when a local's destructor panics after it was made
        // (rust-lang/rust#47949). An unused loader's panicking `Drop` leaked the value a hit
        // was returning (found by the configuration fuzzer's hostile mode; `tests/hostile.rs`,
        // `a_panicking_drop_of_an_unused_loader_leaks_no_value`).
        let mut out = None;
        self.load_sync_into(key, missed, init, &mut out);
        match out {
            Some(out) => out,
            None => unreachable!("`load_sync_into` answers or panics"),
        }
    }

    fn load_sync_into<E>(
        &self,
        key: K,
        missed: bool,
        init: impl FnOnce() -> Result<(V, Option<u64>), E>,
        out: &mut Option<Result<(V, Served), Arc<E>>>,
    ) where
        E: Send + Sync + 'static,
    {
        let mut init = Some(init);
        let mut first = !missed;
        let asked = self.asked();
        loop {
            if let Some(v) = self.lookup_before_load(&key, &mut first) {
                *out = Some(Ok((v, Served::Hit)));
                return;
            }
            match self.join(&key) {
                Joined::Wait(flight) => {
                    if let Some(answer) = Self::waited(flight.wait(), asked) {
                        *out = Some(answer.map(|v| (v, Served::Joined)));
                        return;
                    }
                }
                Joined::Lead(lead) => {
                    if let Some(v) = self.get_uncounted(&key) {
                        // Not `Done(v)`: a waiter may have asked after `v` expired, and must
                        // not get it. Waiters look the cache up again (see `Lead::cached`).
                        lead.cached();
                        *out = Some(Ok((v, Served::Hit)));
                        return;
                    }
                    let began = self.load_begins(&key);
                    let timer = self.start_load();
                    let init = init.take().expect("a caller leads at most once");
                    // A panic in `init` drops `lead`, which abandons the flight, and `timer`,
                    // which counts a failed load.
                    let loaded = init();
                    let mut answer = None;
                    self.end_load(key, lead, began, timer, loaded, &mut answer);
                    *out = answer.map(|a| a.map(|v| (v, Served::Loaded)));
                    return;
                }
            }
        }
    }

    /// The async form of [`get_or_insert_with`](Self::get_or_insert_with), for any executor
    /// (clockline depends on no runtime). Single flight as in the sync form: one `init` future
    /// runs per key at a time, polled by the caller that leads; the others wait without
    /// blocking their thread. If the leading caller's future is dropped before it finishes, the
    /// waiters wake and one of them leads with its own `init`; a dropped waiter just stops
    /// waiting.
    ///
    /// Sync and async callers of one key share flights. The future is `Send` when `K`, `V`,
    /// `S` and `init` are, so it can be spawned on a multi-thread runtime.
    ///
    /// ```
    /// use std::sync::Arc;
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let cache: Arc<clockline::Cache<u64, String>> = Arc::new(clockline::Cache::new(100));
    /// let c = Arc::clone(&cache);
    /// let row = tokio::spawn(async move {
    ///     c.get_or_insert_with_async(7, async { "row 7".to_string() }).await
    /// });
    /// assert_eq!(row.await.unwrap(), "row 7");
    /// assert_eq!(cache.get(&7).as_deref(), Some("row 7"));
    /// # });
    /// ```
    pub async fn get_or_insert_with_async<F>(&self, key: K, init: F) -> V
    where
        F: Future<Output = V>,
    {
        match self
            .try_get_or_insert_with_async::<std::convert::Infallible, _>(key, async {
                Ok(init.await)
            })
            .await
        {
            Ok(v) => v,
            Err(e) => match *e {},
        }
    }

    /// The async form of [`try_get_or_insert_with`](Self::try_get_or_insert_with).
    pub async fn try_get_or_insert_with_async<E, F>(&self, key: K, init: F) -> Result<V, Arc<E>>
    where
        E: Send + Sync + 'static,
        F: Future<Output = Result<V, E>>,
    {
        self.load_async(key, false, async { init.await.map(|v| (v, None)) })
            .await
    }

    /// The async form of
    /// [`try_get_or_insert_versioned_with`](Self::try_get_or_insert_versioned_with).
    pub async fn try_get_or_insert_versioned_with_async<E, F>(
        &self,
        key: K,
        init: F,
    ) -> Result<V, Arc<E>>
    where
        E: Send + Sync + 'static,
        F: Future<Output = Result<(V, u64), E>>,
    {
        self.load_async(key, false, async { init.await.map(|(v, n)| (v, Some(n))) })
            .await
    }

    /// The async form of [`get_or_insert_with_by_ref`](Self::get_or_insert_with_by_ref).
    pub async fn get_or_insert_with_by_ref_async<Q, F>(&self, key: &Q, init: F) -> V
    where
        Q: ?Sized + Hash + Equivalent<K> + ToOwned<Owned = K>,
        F: Future<Output = V>,
    {
        match self
            .by_ref_async::<Q, std::convert::Infallible, _>(key, async { Ok((init.await, None)) })
            .await
        {
            Ok(v) => v,
            Err(e) => match *e {},
        }
    }

    /// The async form of [`try_get_or_insert_with_by_ref`](Self::try_get_or_insert_with_by_ref).
    pub async fn try_get_or_insert_with_by_ref_async<Q, E, F>(
        &self,
        key: &Q,
        init: F,
    ) -> Result<V, Arc<E>>
    where
        Q: ?Sized + Hash + Equivalent<K> + ToOwned<Owned = K>,
        E: Send + Sync + 'static,
        F: Future<Output = Result<V, E>>,
    {
        self.by_ref_async(key, async { init.await.map(|v| (v, None)) })
            .await
    }

    /// The async form of
    /// [`try_get_or_insert_versioned_with_by_ref`](Self::try_get_or_insert_versioned_with_by_ref).
    pub async fn try_get_or_insert_versioned_with_by_ref_async<Q, E, F>(
        &self,
        key: &Q,
        init: F,
    ) -> Result<V, Arc<E>>
    where
        Q: ?Sized + Hash + Equivalent<K> + ToOwned<Owned = K>,
        E: Send + Sync + 'static,
        F: Future<Output = Result<(V, u64), E>>,
    {
        self.by_ref_async(key, async { init.await.map(|(v, n)| (v, Some(n))) })
            .await
    }

    /// The async `_by_ref` loaders, as [`Self::by_ref_sync`] is of the sync ones.
    async fn by_ref_async<Q, E, F>(&self, key: &Q, init: F) -> Result<V, Arc<E>>
    where
        Q: ?Sized + Hash + Equivalent<K> + ToOwned<Owned = K>,
        E: Send + Sync + 'static,
        F: Future<Output = Result<(V, Option<u64>), E>>,
    {
        if let Some(v) = self.get(key) {
            // As in `by_ref_sync`.
            drop(init);
            return Ok(v);
        }
        self.load_async(key.to_owned(), true, init).await
    }

    /// The body of every async loader, as [`Self::load_sync`] is of the sync ones. As there,
    /// the answer is kept here while the callee's locals are dropped.
    async fn load_async<E, F>(&self, key: K, missed: bool, init: F) -> Result<V, Arc<E>>
    where
        E: Send + Sync + 'static,
        F: Future<Output = Result<(V, Option<u64>), E>>,
    {
        let mut out = None;
        self.load_async_into(key, missed, init, &mut out).await;
        match out {
            Some(out) => out,
            None => unreachable!("`load_async_into` answers or panics"),
        }
    }

    async fn load_async_into<E, F>(
        &self,
        key: K,
        missed: bool,
        init: F,
        out: &mut Option<Result<V, Arc<E>>>,
    ) where
        E: Send + Sync + 'static,
        F: Future<Output = Result<(V, Option<u64>), E>>,
    {
        let mut init = Some(init);
        let mut first = !missed;
        let asked = self.asked();
        loop {
            if let Some(v) = self.lookup_before_load(&key, &mut first) {
                *out = Some(Ok(v));
                return;
            }
            let joined = self.join(&key);
            match joined {
                Joined::Wait(flight) => {
                    let outcome = WaitFlight {
                        flight: Some(flight),
                        slot: None,
                    }
                    .await;
                    if let Some(answer) = Self::waited(outcome, asked) {
                        *out = Some(answer);
                        return;
                    }
                }
                Joined::Lead(lead) => {
                    if let Some(v) = self.get_uncounted(&key) {
                        // As in `load_sync`: waiters look again.
                        lead.cached();
                        *out = Some(Ok(v));
                        return;
                    }
                    let began = self.load_begins(&key);
                    let timer = self.start_load();
                    let init = init.take().expect("a caller leads at most once");
                    // If this future is dropped here, `lead` is dropped with it and abandons
                    // the flight, which wakes the waiters. (`timer` counts a cancelled load as
                    // neither success nor failure.)
                    let loaded = init.await;
                    self.end_load(key, lead, began, timer, loaded, out);
                    return;
                }
            }
        }
    }
}

/// Times one load for the statistics, and counts it as failed if dropped while the loader
/// panics.
struct LoadTimer<'a, K, V, S> {
    cache: &'a Cache<K, V, S>,
    started: Stopwatch,
    armed: bool,
}

impl<K, V, S> LoadTimer<'_, K, V, S> {
    fn done(mut self, ok: bool) {
        self.armed = false;
        self.count(ok);
    }

    fn count(&self, ok: bool) {
        if let Some(st) = &self.cache.inner().stats {
            st.add(
                if ok {
                    Counter::LoadOk
                } else {
                    Counter::LoadErr
                },
                1,
            );
            let nanos = self.cache.inner().clock.elapsed(&self.started);
            st.add(Counter::LoadNanos, nanos);
        }
    }
}

impl<K, V, S> Drop for LoadTimer<'_, K, V, S> {
    fn drop(&mut self) {
        if self.armed && std::thread::panicking() {
            self.count(false);
        }
    }
}

/// Waits for a flight without blocking the thread; takes its waker out of the flight if
/// dropped while the flight runs.
struct WaitFlight<V: Clone> {
    /// Taken (and dropped) as the wait ends, inside `poll`: dropping the flight's last
    /// reference drops its value, whose `Drop` may panic, and the `.await` that drops this
    /// future would then leak the outcome it is returning (an unbound temporary).
    flight: Option<FlightArc<Flight<V>>>,
    slot: Option<usize>,
}

impl<V: Clone> Future for WaitFlight<V> {
    type Output = Outcome<V>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome<V>> {
        let this = self.get_mut();
        let flight = this.flight.as_ref().expect("polled after it finished");
        let outcome = flight.poll_wait(cx, &mut this.slot);
        if outcome.is_ready() {
            // A local here: dropped if the flight's drop panics.
            drop(this.flight.take());
        }
        outcome
    }
}

impl<V: Clone> Drop for WaitFlight<V> {
    fn drop(&mut self) {
        if let (Some(slot), Some(flight)) = (self.slot, &self.flight) {
            flight.forget(slot);
        }
    }
}
