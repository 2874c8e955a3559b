//! Hostile user code: degenerate hashers, and panics in every hook the cache calls.
//!
//! The crate promises (lib.rs, "User code") that a panic in `Hash`, `Eq`, `Clone`, the weigher or
//! `Drop` leaves the cache consistent, locks nothing for good and leaks nothing. Each test below
//! arms one hook, checks that the panic reaches the caller (or, for a `Drop` run by epoch
//! reclamation, is contained), then disarms it and checks:
//!
//! * `check_invariants()` is `Ok` and agrees with `len()`, and the entries are the expected ones;
//! * the key's bucket still works: inserts, gets and removes of the same key, on this thread and
//!   on another one (a leaked bucket lock shows up as a timeout, not a hung test);
//! * every value created is dropped exactly once, after the cache is dropped and epoch garbage
//!   is flushed.
//!
//! Intentional panics say "intentional:"; a panic hook keeps them out of the test output.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Once};
use std::thread;
use std::time::{Duration, Instant};

use clockline::{Cache, INITIAL_WEIGHTED_ENTRIES};

mod common;

/// Longest wait for work on another thread before calling it a deadlock.
const DEADLOCK: Duration = Duration::from_secs(60);

/// Keeps the "intentional:" panics out of the output; every other panic is reported as usual.
fn quiet_intentional_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let msg = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("");
            if !msg.starts_with("intentional:") {
                default(info);
            }
        }));
    });
}

/// No key has this id.
const NO_KEY: u64 = u64::MAX;

/// Which hooks panic. Shared by the keys and values of one test.
struct Hooks {
    /// `Hash` of the key with this id panics (`NO_KEY`: none).
    hash_panics_for: AtomicU64,
    eq_panics: AtomicBool,
    clone_panics: AtomicBool,
    created: AtomicUsize,
    dropped: AtomicUsize,
}

impl Hooks {
    fn new() -> Arc<Self> {
        quiet_intentional_panics();
        Arc::new(Self {
            hash_panics_for: AtomicU64::new(NO_KEY),
            eq_panics: AtomicBool::new(false),
            clone_panics: AtomicBool::new(false),
            created: AtomicUsize::new(0),
            dropped: AtomicUsize::new(0),
        })
    }

    fn key(self: &Arc<Self>, id: u64) -> Key {
        Key {
            id,
            hooks: self.clone(),
        }
    }

    fn val(self: &Arc<Self>, key: u64, n: u64) -> Val {
        self.created.fetch_add(1, Ordering::SeqCst);
        Val {
            key,
            n,
            weight: 1,
            bomb: false,
            weigher_panics: false,
            hooks: self.clone(),
        }
    }

    /// A value whose `Drop` panics.
    fn bomb(self: &Arc<Self>, key: u64, n: u64) -> Val {
        let mut v = self.val(key, n);
        v.bomb = true;
        v
    }

    fn created(&self) -> usize {
        self.created.load(Ordering::SeqCst)
    }

    fn dropped(&self) -> usize {
        self.dropped.load(Ordering::SeqCst)
    }

    /// Flushes epoch garbage until `dropped() == n`, then checks it is exactly `n`.
    #[track_caller]
    fn assert_dropped(&self, n: usize) {
        settle(|| self.dropped() >= n);
        assert_eq!(self.dropped(), n, "values dropped");
    }

    /// Everything created was dropped exactly once.
    #[track_caller]
    fn assert_all_dropped(&self) {
        self.assert_dropped(self.created());
    }
}

/// A key whose `Hash` and `Eq` panic when the test says so.
struct Key {
    id: u64,
    hooks: Arc<Hooks>,
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        if self.hooks.hash_panics_for.load(Ordering::SeqCst) == self.id {
            panic!("intentional: Hash of key {}", self.id);
        }
        self.id.hash(state);
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        if self.hooks.eq_panics.load(Ordering::SeqCst) {
            panic!("intentional: Eq of keys {} and {}", self.id, other.id);
        }
        self.id == other.id
    }
}

impl Eq for Key {}

/// A value that counts its clones and drops; its `Clone`, `Drop` and weigher can panic.
struct Val {
    key: u64,
    n: u64,
    weight: u64,
    /// `Drop` panics (after counting the drop).
    bomb: bool,
    /// The weigher panics on this value.
    weigher_panics: bool,
    hooks: Arc<Hooks>,
}

impl Clone for Val {
    fn clone(&self) -> Self {
        if self.hooks.clone_panics.load(Ordering::SeqCst) {
            panic!("intentional: Clone of the value of key {}", self.key);
        }
        self.hooks.created.fetch_add(1, Ordering::SeqCst);
        Val {
            key: self.key,
            n: self.n,
            weight: self.weight,
            bomb: false,
            weigher_panics: self.weigher_panics,
            hooks: self.hooks.clone(),
        }
    }
}

impl Drop for Val {
    fn drop(&mut self) {
        self.hooks.dropped.fetch_add(1, Ordering::SeqCst);
        if self.bomb && !thread::panicking() {
            panic!("intentional: Drop of the value of key {}", self.key);
        }
    }
}

impl std::fmt::Debug for Val {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Val({}, #{})", self.key, self.n)
    }
}

/// Deferred drops run when the global epoch advances, which other tests' pinned threads can hold
/// back for a moment: flush until `done` or a minute has passed.
fn settle(done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() && start.elapsed() < Duration::from_secs(60) {
        clockline::flush_deferred();
        thread::yield_now();
    }
}

/// SipHash with fixed keys.
type Fixed = BuildHasherDefault<std::collections::hash_map::DefaultHasher>;

/// Every key gets the same hash: one home bucket, one tag, every lookup compares every key.
#[derive(Clone, Copy, Default)]
struct ConstantHash;

impl BuildHasher for ConstantHash {
    type Hasher = ConstantHasher;
    fn build_hasher(&self) -> ConstantHasher {
        ConstantHasher
    }
}

struct ConstantHasher;

impl Hasher for ConstantHasher {
    fn finish(&self) -> u64 {
        0x1234_5678_9abc_def0
    }
    fn write(&mut self, _: &[u8]) {}
}

/// Four distinct hashes in all.
#[derive(Clone, Copy, Default)]
struct FourHashes;

impl BuildHasher for FourHashes {
    type Hasher = FourHasher;
    fn build_hasher(&self) -> FourHasher {
        FourHasher(0)
    }
}

struct FourHasher(u64);

impl Hasher for FourHasher {
    fn finish(&self) -> u64 {
        [
            0x0000_0000_0000_0001,
            0x4000_0000_0000_0082,
            0x8000_0000_0000_0103,
            0xffff_ffff_ffff_ff84,
        ][(self.0 % 4) as usize]
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.wrapping_mul(31).wrapping_add(u64::from(b));
        }
    }
}

/// Runs `f` on another thread and waits for it, failing the test if it takes longer than
/// `DEADLOCK` (a bucket lock left held, a spin that never ends). A panic in `f` is re-raised.
#[track_caller]
fn on_other_thread<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let handle = thread::spawn(move || {
        let r = catch_unwind(AssertUnwindSafe(f));
        let _ = tx.send(());
        r
    });
    match rx.recv_timeout(DEADLOCK) {
        Ok(()) => match handle.join().expect("caught above") {
            Ok(v) => v,
            Err(e) => {
                let msg = e
                    .downcast_ref::<&str>()
                    .copied()
                    .or_else(|| e.downcast_ref::<String>().map(String::as_str))
                    .unwrap_or("(no message)");
                panic!("{what}: panicked: {msg}")
            }
        },
        Err(_) => panic!("{what}: no answer after {DEADLOCK:?}: deadlock"),
    }
}

/// Checks the table and the counters without concurrent writers; all hooks must be disarmed.
#[track_caller]
fn assert_consistent<S: BuildHasher>(cache: &Cache<Key, Val, S>, len: usize) {
    assert_eq!(cache.check_invariants(), Ok(len), "check_invariants");
    assert_eq!(cache.len(), len, "len()");
    let pinned = cache.pin();
    let mut n = 0;
    for (k, v) in pinned.iter() {
        assert_eq!(k.id, v.key, "{v:?} under key {}", k.id);
        n += 1;
    }
    assert_eq!(n, len, "entries seen by iter()");
    if let Some(max) = cache.max_weight() {
        let w: u64 = pinned.iter().map(|(_, v)| v.weight).sum();
        assert_eq!(cache.weight(), w, "weight()");
        assert!(w <= max);
    }
}

/// Inserts, reads back and removes `id` (then puts it back), here and on another thread: the
/// key's bucket is usable.
#[track_caller]
fn assert_key_usable<S>(cache: &Arc<Cache<Key, Val, S>>, hooks: &Arc<Hooks>, id: u64)
where
    S: BuildHasher + Send + Sync + 'static,
{
    let check = move |cache: &Cache<Key, Val, S>, hooks: &Arc<Hooks>, n: u64| {
        cache.insert(hooks.key(id), hooks.val(id, n)).unwrap();
        assert_eq!(cache.get(&hooks.key(id)).map(|v| v.n), Some(n));
        assert_eq!(cache.remove(&hooks.key(id)).map(|v| v.n), Some(n));
        assert!(!cache.contains_key(&hooks.key(id)));
        cache.insert(hooks.key(id), hooks.val(id, n + 1)).unwrap();
        assert_eq!(cache.pin().get(&hooks.key(id)).map(|v| v.n), Some(n + 1));
    };
    check(cache, hooks, 1000);
    let (c, h) = (cache.clone(), hooks.clone());
    on_other_thread("the key's bucket from another thread", move || {
        check(&c, &h, 2000)
    });
}

/// Drops the last handle to the cache and checks that every value was dropped once.
#[track_caller]
fn drop_and_check<S>(cache: Arc<Cache<Key, Val, S>>, hooks: &Hooks) {
    drop(Arc::try_unwrap(cache).unwrap_or_else(|_| panic!("cache still shared")));
    hooks.assert_all_dropped();
}

#[track_caller]
fn assert_panics<R>(what: &str, f: impl FnOnce() -> R) {
    assert!(
        catch_unwind(AssertUnwindSafe(f)).is_err(),
        "{what} did not panic"
    );
}

// ---------------------------------------------------------------------------------------------
// Degenerate hashers

/// A few thousand mixed operations over more keys than the capacity, checked against the last
/// value written per key: a hit returns that value, never an older one. Runs on another thread,
/// so that a hang fails the test.
fn degenerate_hasher<S>(hasher: S, weighted: bool)
where
    S: BuildHasher + Clone + Send + Sync + 'static,
{
    let hooks = Hooks::new();
    let b = Cache::builder().max_capacity(150);
    let cache = Arc::new(if weighted {
        b.max_weight(200)
            .weigher(|_, v: &Val| v.weight)
            .hasher(hasher)
            .build()
            .unwrap()
    } else {
        b.hasher(hasher).build().unwrap()
    });
    let (c, h) = (cache.clone(), hooks.clone());
    on_other_thread("single-threaded operations", move || {
        let mut last: HashMap<u64, u64> = HashMap::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for n in 0..4_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let id = x % 300;
            match x >> 60 {
                0..=8 => {
                    let mut v = h.val(id, n);
                    v.weight = (x >> 20) % 4;
                    c.insert(h.key(id), v).unwrap();
                    last.insert(id, n);
                }
                9..=12 => {
                    if let Some(v) = c.get(&h.key(id)) {
                        assert_eq!((v.key, Some(&v.n)), (id, last.get(&id)));
                    }
                }
                _ => {
                    if let Some(v) = c.remove(&h.key(id)) {
                        assert_eq!((v.key, Some(&v.n)), (id, last.get(&id)));
                    }
                    last.remove(&id);
                    assert!(!c.contains_key(&h.key(id)));
                }
            }
            if n % 1_000 == 999 {
                c.clear();
                last.clear();
                assert!(c.is_empty());
            }
            assert!(c.len() <= 150);
        }
        let n = c.check_invariants().unwrap();
        assert_eq!(n, c.len());
        for (k, v) in c.pin().iter() {
            assert_eq!(last.get(&k.id), Some(&v.n));
        }
    });
    // The same from four threads at once, each on its own keys.
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            let (c, h) = (cache.clone(), hooks.clone());
            thread::spawn(move || {
                for n in 0..1_000u64 {
                    let id = 1_000 + t * 100 + n % 100;
                    c.insert(h.key(id), h.val(id, n)).unwrap();
                    if let Some(v) = c.get(&h.key(id)) {
                        assert_eq!((v.key, v.n), (id, n), "read back own insert");
                    }
                    if n % 7 == 0 {
                        if let Some(v) = c.remove(&h.key(id)) {
                            assert_eq!(v.key, id);
                        }
                    }
                }
            })
        })
        .collect();
    on_other_thread("four threads", move || {
        for h in handles {
            h.join().unwrap();
        }
    });
    let n = cache.check_invariants().unwrap();
    assert_eq!(n, cache.len());
    drop_and_check(cache, &hooks);
}

#[test]
fn constant_hash_stays_correct() {
    degenerate_hasher(ConstantHash, false);
    degenerate_hasher(ConstantHash, true);
}

#[test]
fn four_hashes_stay_correct() {
    degenerate_hasher(FourHashes, false);
    degenerate_hasher(FourHashes, true);
}

/// With one hash for every key, a growable (weight-bounded) cache stays correct and does not
/// grow without end: every key has the same 56-slot neighbourhood (8 buckets of 7), so the cache
/// holds at most 56 entries, evicting within the neighbourhood, and the table stays at its
/// initial size.
#[test]
fn constant_hash_does_not_grow_the_table() {
    let hooks = Hooks::new();
    let cache: Arc<Cache<Key, Val, ConstantHash>> = Arc::new(
        Cache::builder()
            .max_weight(1 << 20)
            .weigher(|_, v: &Val| v.weight)
            .hasher(ConstantHash)
            .build()
            .unwrap(),
    );
    let entries = INITIAL_WEIGHTED_ENTRIES as u64 + 100;
    let (c, h) = (cache.clone(), hooks.clone());
    on_other_thread("inserts with one hash", move || {
        for id in 1..=entries {
            c.insert(h.key(id), h.val(id, 0)).unwrap();
            assert!(
                c.contains_key(&h.key(id)),
                "key {id} missing right after its insert"
            );
        }
    });
    assert_eq!(cache.capacity(), INITIAL_WEIGHTED_ENTRIES);
    let held = cache.check_invariants().unwrap();
    assert!((1..=56).contains(&held), "{held} entries");
    assert_consistent(&cache, held);
    assert!(
        cache.contains_key(&hooks.key(entries)),
        "the last insert stays"
    );
    drop_and_check(cache, &hooks);
}

// ---------------------------------------------------------------------------------------------
// Panics in user code, one test per hook

fn filled<S: BuildHasher + Send + Sync + 'static>(
    hooks: &Arc<Hooks>,
    hasher: S,
    n: u64,
) -> Arc<Cache<Key, Val, S>> {
    let cache = Cache::builder()
        .max_capacity(64)
        .hasher(hasher)
        .build()
        .unwrap();
    for id in 1..=n {
        cache.insert(hooks.key(id), hooks.val(id, 0)).unwrap();
    }
    Arc::new(cache)
}

#[test]
fn panic_in_hash() {
    let hooks = Hooks::new();
    let cache = filled(&hooks, Fixed::default(), 10);
    hooks.hash_panics_for.store(5, Ordering::SeqCst);
    let k = || hooks.key(5);
    assert_panics("insert", || cache.insert(k(), hooks.val(5, 1)));
    assert_panics("pinned insert", || cache.pin().insert(k(), hooks.val(5, 2)));
    assert_panics("get", || cache.get(&k()));
    assert_panics("peek", || cache.peek(&k()));
    assert_panics("contains_key", || cache.contains_key(&k()));
    assert_panics("remove", || cache.remove(&k()));
    assert_panics("pinned get", || cache.pin().get(&k()).is_some());
    assert_panics("pinned remove", || cache.pin().remove(&k()).is_some());
    // The two values that were never inserted are dropped by the unwinding inserts.
    hooks.assert_dropped(2);
    // Other keys are unaffected while the hook is armed.
    assert_eq!(cache.get(&hooks.key(6)).map(|v| v.n), Some(0));
    hooks.hash_panics_for.store(NO_KEY, Ordering::SeqCst);
    assert_consistent(&cache, 10);
    assert_eq!(
        cache.get(&k()).map(|v| v.n),
        Some(0),
        "the old value is intact"
    );
    assert_key_usable(&cache, &hooks, 5);
    drop_and_check(cache, &hooks);
}

/// A growing table rehashes every key it holds; a panic there leaves the old table current and
/// every lock released.
#[test]
fn panic_in_hash_while_growing() {
    let hooks = Hooks::new();
    let cache: Arc<Cache<Key, Val>> = Arc::new(
        Cache::builder()
            .max_weight(1 << 20)
            .weigher(|_, v: &Val| v.weight)
            .build()
            .unwrap(),
    );
    let initial = cache.capacity();
    for id in 1..=10 {
        cache.insert(hooks.key(id), hooks.val(id, 0)).unwrap();
    }
    // From now on only a rehash of every key (growth) touches key 7's hash.
    hooks.hash_panics_for.store(7, Ordering::SeqCst);
    let mut id = 10;
    let panicked = loop {
        id += 1;
        assert!(id < 10 * initial as u64, "the table never grew");
        let r = catch_unwind(AssertUnwindSafe(|| {
            cache.insert(hooks.key(id), hooks.val(id, 0))
        }));
        match r {
            Ok(r) => r.unwrap(),
            Err(_) => break id,
        }
    };
    assert_eq!(cache.capacity(), initial, "the table did not grow");
    hooks.hash_panics_for.store(NO_KEY, Ordering::SeqCst);
    let held = cache.check_invariants().unwrap();
    assert_consistent(&cache, held);
    assert!(!cache.contains_key(&hooks.key(panicked)));
    assert!(cache.contains_key(&hooks.key(7)), "key 7 intact");
    // Growing works now, from another thread (every lock of the old table was released).
    let (c, h) = (cache.clone(), hooks.clone());
    on_other_thread("grow after a panic", move || {
        c.insert(h.key(panicked), h.val(panicked, 1)).unwrap();
    });
    assert!(cache.capacity() > initial);
    assert_consistent(&cache, held + 1);
    assert_key_usable(&cache, &hooks, 7);
    assert_key_usable(&cache, &hooks, panicked);
    drop_and_check(cache, &hooks);
}

/// Set while a grow should meet a panicking `Hash`: the countdown of hashes until it panics.
static GROW_HASH_ARMED: AtomicBool = AtomicBool::new(false);
static GROW_HASH_COUNTDOWN: AtomicUsize = AtomicUsize::new(0);

/// A key whose `Hash` panics once, at the countdown's end, while armed.
#[derive(PartialEq, Eq, Clone, Debug)]
struct GrowKey(u64);

impl Hash for GrowKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        if GROW_HASH_ARMED.load(Ordering::SeqCst)
            && GROW_HASH_COUNTDOWN.fetch_sub(1, Ordering::SeqCst) == 1
        {
            GROW_HASH_ARMED.store(false, Ordering::SeqCst);
            panic!("intentional: Hash while growing");
        }
        self.0.hash(h)
    }
}

/// Found in review: a grow placed each node in the new table as it hashed it, and placing a
/// node rewrote its distance from home, which the old table still uses. A `Hash` that panicked
/// halfway left the old table current with half its nodes carrying the new table's distances;
/// unlinks then cleared spill bits that keys still needed, those keys became unreachable, and
/// inserting one again made a second entry. Now every key is hashed before any node is placed.
#[test]
fn a_panicking_hash_while_growing_loses_no_key() {
    quiet_intentional_panics();
    let cache: Cache<GrowKey, u64, BuildHasherDefault<std::collections::hash_map::DefaultHasher>> =
        Cache::builder()
            .max_weight(1 << 20)
            .weigher(|_, _: &u64| 1)
            .policy(clockline::Policy::Clock)
            .hasher(BuildHasherDefault::default())
            .build()
            .unwrap();
    let mut next = 0u64;
    while cache.len() < cache.capacity() {
        cache.insert(GrowKey(next), next).unwrap();
        next += 1;
    }
    let capacity = cache.capacity();
    // The new key's own hash, then half of the grow's rehashes.
    GROW_HASH_COUNTDOWN.store(1 + cache.len() / 2, Ordering::SeqCst);
    GROW_HASH_ARMED.store(true, Ordering::SeqCst);
    let r = catch_unwind(AssertUnwindSafe(|| cache.insert(GrowKey(1 << 40), 0)));
    GROW_HASH_ARMED.store(false, Ordering::SeqCst);
    assert!(r.is_err(), "the grow should have met the panic");
    assert_eq!(cache.capacity(), capacity, "not grown");
    // Churn: remove a third of the keys, then insert and remove as many new ones.
    for k in (0..next).filter(|k| k % 3 == 0) {
        assert!(cache.remove(&GrowKey(k)).is_some(), "key {k} unreachable");
    }
    for k in 0..next / 3 {
        cache.insert(GrowKey((2 << 40) | k), k).unwrap();
    }
    for k in 0..next / 3 {
        cache.remove(&GrowKey((2 << 40) | k));
    }
    cache.check_invariants().unwrap();
    for k in (0..next).filter(|k| k % 3 != 0) {
        assert!(cache.contains_key(&GrowKey(k)), "key {k} unreachable");
    }
}

#[test]
fn panic_in_eq() {
    let hooks = Hooks::new();
    // One hash for all keys, so every operation compares keys, also inserts of new keys.
    let cache = filled(&hooks, ConstantHash, 10);
    hooks.eq_panics.store(true, Ordering::SeqCst);
    assert_panics("insert (replace)", || {
        cache.insert(hooks.key(3), hooks.val(3, 1))
    });
    assert_panics("insert (new key)", || {
        cache.insert(hooks.key(30), hooks.val(30, 1))
    });
    assert_panics("pinned insert", || {
        cache.pin().insert(hooks.key(3), hooks.val(3, 2))
    });
    assert_panics("get", || cache.get(&hooks.key(3)));
    assert_panics("peek", || cache.peek(&hooks.key(3)));
    assert_panics("contains_key", || cache.contains_key(&hooks.key(3)));
    assert_panics("remove", || cache.remove(&hooks.key(3)));
    assert_panics("pinned remove", || {
        cache.pin().remove(&hooks.key(3)).is_some()
    });
    hooks.assert_dropped(3);
    hooks.eq_panics.store(false, Ordering::SeqCst);
    assert_consistent(&cache, 10);
    assert_eq!(
        cache.get(&hooks.key(3)).map(|v| v.n),
        Some(0),
        "the old value is intact"
    );
    assert!(!cache.contains_key(&hooks.key(30)));
    // Inserts and removes took the (only) home bucket's lock before they panicked.
    assert_key_usable(&cache, &hooks, 3);
    assert_key_usable(&cache, &hooks, 30);
    let c = cache.clone();
    on_other_thread("clear", move || c.clear());
    assert_consistent(&cache, 0);
    drop_and_check(cache, &hooks);
}

#[test]
fn panic_in_clone() {
    let hooks = Hooks::new();
    let cache = filled(&hooks, Fixed::default(), 10);
    hooks.clone_panics.store(true, Ordering::SeqCst);
    assert_panics("get", || cache.get(&hooks.key(4)));
    assert_panics("peek", || cache.peek(&hooks.key(4)));
    // Borrowing lookups do not clone.
    assert_eq!(cache.pin().get(&hooks.key(4)).map(|v| v.n), Some(0));
    assert_consistent(&cache, 10);
    // `remove` removes, then clones the value it returns: the entry is gone, and its value is
    // reclaimed like any removed value.
    assert_panics("remove", || cache.remove(&hooks.key(4)));
    hooks.clone_panics.store(false, Ordering::SeqCst);
    assert!(!cache.contains_key(&hooks.key(4)));
    assert_consistent(&cache, 9);
    hooks.assert_dropped(1);
    assert_key_usable(&cache, &hooks, 4);
    drop_and_check(cache, &hooks);
}

#[test]
fn panic_in_weigher() {
    let hooks = Hooks::new();
    let cache: Arc<Cache<Key, Val>> = Arc::new(
        Cache::builder()
            .max_capacity(16)
            .max_weight(10)
            .weigher(|_, v: &Val| {
                if v.weigher_panics {
                    panic!("intentional: weigher on the value of key {}", v.key);
                }
                v.weight
            })
            .build()
            .unwrap(),
    );
    for id in 1..=10 {
        cache.insert(hooks.key(id), hooks.val(id, 0)).unwrap();
    }
    let poisoned = |id| {
        let mut v = hooks.val(id, 1);
        v.weigher_panics = true;
        v
    };
    // A full cache (by weight): a new key, a replace, and a pinned insert.
    assert_panics("insert (new key)", || {
        cache.insert(hooks.key(11), poisoned(11))
    });
    assert_panics("insert (replace)", || {
        cache.insert(hooks.key(3), poisoned(3))
    });
    assert_panics("pinned insert", || {
        cache.pin().insert(hooks.key(3), poisoned(3))
    });
    hooks.assert_dropped(3);
    assert_consistent(&cache, 10);
    assert_eq!(cache.weight(), 10, "nothing reserved or evicted");
    assert_eq!(
        cache.get(&hooks.key(3)).map(|v| v.n),
        Some(0),
        "the old value is intact"
    );
    assert!(!cache.contains_key(&hooks.key(11)));
    assert_key_usable(&cache, &hooks, 3);
    assert_key_usable(&cache, &hooks, 11);
    drop_and_check(cache, &hooks);
}

/// Values whose `Drop` panics, reclaimed by epoch after remove, replace, eviction and clear: the
/// panic is contained on the collecting thread, and the allocation and every other value are
/// still freed.
#[test]
fn panic_in_drop_during_reclamation() {
    let hooks = Hooks::new();
    let cache: Arc<Cache<Key, Val>> = Arc::new(Cache::new(8));
    let mut dropped = 0;
    let mut check = |cache: &Arc<Cache<Key, Val>>, newly_dropped: usize, len: usize| {
        dropped += newly_dropped;
        hooks.assert_dropped(dropped);
        assert_consistent(cache, len);
    };

    // remove: the removed bomb is returned as a clone (not a bomb) and reclaimed later.
    cache.insert(hooks.key(1), hooks.bomb(1, 0)).unwrap();
    let v = cache.remove(&hooks.key(1)).unwrap();
    drop(v);
    check(&cache, 2, 0);
    // pinned remove: lent while pinned, reclaimed after.
    cache.insert(hooks.key(1), hooks.bomb(1, 1)).unwrap();
    {
        let pinned = cache.pin();
        assert_eq!(pinned.remove(&hooks.key(1)).map(|v| v.n), Some(1));
    }
    check(&cache, 1, 0);
    // replace
    cache.insert(hooks.key(2), hooks.bomb(2, 0)).unwrap();
    cache.insert(hooks.key(2), hooks.val(2, 1)).unwrap();
    check(&cache, 1, 1);
    // eviction: eight bombs, then eight plain values push them all out.
    for id in 10..18 {
        cache.insert(hooks.key(id), hooks.bomb(id, 0)).unwrap();
    }
    let len = cache.len();
    assert_eq!(len, 8);
    for id in 20..28 {
        cache.insert(hooks.key(id), hooks.val(id, 0)).unwrap();
    }
    // Seventeen entries went in, eight are left.
    check(&cache, 9, 8);
    // clear
    for id in 30..38 {
        cache.insert(hooks.key(id), hooks.bomb(id, 0)).unwrap();
    }
    check(&cache, 8, 8);
    cache.clear();
    check(&cache, 8, 0);

    assert_key_usable(&cache, &hooks, 1);
    assert_key_usable(&cache, &hooks, 2);
    drop_and_check(cache, &hooks);
}

/// Values whose `Drop` panics, freed by the cache's own `Drop`: the first panic reaches the
/// caller after every node was freed.
#[test]
fn panic_in_drop_of_the_cache() {
    let hooks = Hooks::new();
    let cache: Cache<Key, Val> = Cache::new(100);
    for id in 1..=40 {
        let v = if id % 10 == 0 {
            hooks.bomb(id, 0)
        } else {
            hooks.val(id, 0)
        };
        cache.insert(hooks.key(id), v).unwrap();
    }
    // Some garbage in flight too: replaced values wait for epoch.
    for id in 1..=5 {
        cache.insert(hooks.key(id), hooks.val(id, 1)).unwrap();
    }
    assert_consistent(&cache, 40);
    assert_panics("drop of a cache holding panicking values", move || {
        drop(cache)
    });
    hooks.assert_all_dropped();

    // A growing weighted cache too.
    let hooks = Hooks::new();
    let cache: Cache<Key, Val> = Cache::builder()
        .max_weight(1 << 20)
        .weigher(|_, v: &Val| v.weight)
        .build()
        .unwrap();
    let n = INITIAL_WEIGHTED_ENTRIES as u64 + 10;
    for id in 1..=n {
        let v = if id % 500 == 0 {
            hooks.bomb(id, 0)
        } else {
            hooks.val(id, 0)
        };
        cache.insert(hooks.key(id), v).unwrap();
    }
    assert_panics("drop of a grown cache", move || drop(cache));
    hooks.assert_all_dropped();
}

// ---------------------------------------------------------------------------------------------
// An `Eq` that changes its behaviour once the insert calling it has evicted something: the
// insert of a new key into a full neighbourhood (one hash for all keys) evicts there and looks
// the key up again.

/// What `TrickyKey`'s `Eq` does once `TRICKY_CACHE`'s statistics count an eviction.
#[derive(Clone, Copy, PartialEq, Eq)]
enum AfterEviction {
    Panic,
    /// Says "different" until then, the truth after (an inconsistent `Eq`: a logic error,
    /// which must still leak nothing).
    TellTheTruth,
}

type TrickyCache = Cache<TrickyKey, u64, ConstantHash>;
/// The listener's log: each removed key with its cause.
type RemovalLog = Arc<std::sync::Mutex<Vec<(u64, clockline::RemovalCause)>>>;

thread_local! {
    static TRICKY_CACHE: std::cell::RefCell<Option<(Arc<TrickyCache>, AfterEviction)>> =
        const { std::cell::RefCell::new(None) };
}

#[derive(Clone, Debug)]
struct TrickyKey(u64);

impl Hash for TrickyKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.0.hash(h)
    }
}

impl PartialEq for TrickyKey {
    fn eq(&self, other: &Self) -> bool {
        let armed = TRICKY_CACHE.with(|c| {
            c.borrow()
                .as_ref()
                .map(|(cache, mode)| (cache.stats().unwrap().evictions > 0, *mode))
        });
        match armed {
            Some((true, AfterEviction::Panic)) => panic!("intentional: Eq after an eviction"),
            Some((false, AfterEviction::TellTheTruth)) => false,
            _ => self.0 == other.0,
        }
    }
}

impl Eq for TrickyKey {}

/// A cache of 200 whose one neighbourhood (56 slots) is full, with a listener that logs.
fn full_neighbourhood() -> (Arc<TrickyCache>, RemovalLog) {
    quiet_intentional_panics();
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let l = log.clone();
    let cache: Arc<TrickyCache> = Arc::new(
        Cache::builder()
            .max_capacity(200)
            .hasher(ConstantHash)
            .record_stats()
            .eviction_listener(move |k: &TrickyKey, _: &u64, cause| {
                l.lock().unwrap().push((k.0, cause))
            })
            .build()
            .unwrap(),
    );
    for id in 0..56 {
        cache.insert(TrickyKey(id), id).unwrap();
    }
    assert_eq!(cache.check_invariants(), Ok(56));
    assert_eq!(cache.stats().unwrap().evictions, 0);
    (cache, log)
}

/// Found in review (twice): an insert that evicted an entry of its full neighbourhood and then
/// met a panic in the key's `Eq` (looking the key up again) dropped its listener notes: the
/// entry was gone, counted as evicted, and the listener never heard of it.
#[test]
fn a_panic_in_eq_after_an_eviction_still_tells_the_listener() {
    let (cache, log) = full_neighbourhood();
    TRICKY_CACHE.with(|c| *c.borrow_mut() = Some((cache.clone(), AfterEviction::Panic)));
    let r = catch_unwind(AssertUnwindSafe(|| cache.insert(TrickyKey(1000), 1000)));
    TRICKY_CACHE.with(|c| *c.borrow_mut() = None);
    assert!(r.is_err(), "the insert should have met the panic");
    assert_eq!(cache.stats().unwrap().evictions, 1);
    assert_eq!(cache.check_invariants(), Ok(55));
    let log = log.lock().unwrap();
    assert_eq!(
        log.len(),
        1,
        "the listener heard of the eviction: {:?}",
        log.len()
    );
    assert_eq!(log[0].1, clockline::RemovalCause::Capacity);
    assert!(!cache.contains_key(&TrickyKey(log[0].0)));
    let cached: Vec<u64> = cache.pin().iter().map(|(k, _)| k.0).collect();
    assert_eq!(cached.len(), cache.len());
    let mut all: Vec<u64> = log.iter().map(|e| e.0).chain(cached).collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..56).collect::<Vec<_>>(),
        "every key inserted is reported exactly once or still cached"
    );
}

/// Found in review: the same for a loader's insert. Its flight was dropped before the listener
/// calls, ending the flight looks the key up in the flight map, the same `Eq` panicked there
/// too, and that second panic was raised out of the flight's `Drop`, past the listener calls:
/// the evicted entry was gone, counted as evicted, and never reported.
#[test]
fn a_load_whose_insert_panics_after_evicting_still_tells_the_listener() {
    common::within("a load that panics after an eviction", || {
        let (cache, log) = full_neighbourhood();
        TRICKY_CACHE.with(|c| *c.borrow_mut() = Some((cache.clone(), AfterEviction::Panic)));
        let r = catch_unwind(AssertUnwindSafe(|| {
            cache.get_or_insert_with(TrickyKey(1000), || 1000)
        }));
        TRICKY_CACHE.with(|c| *c.borrow_mut() = None);
        let p = r.expect_err("the insert meets the panic of `Eq`");
        assert_eq!(
            p.downcast_ref::<&str>().copied(),
            Some("intentional: Eq after an eviction")
        );
        assert_eq!(cache.stats().unwrap().evictions, 1);
        assert_eq!(
            log.lock().unwrap().len(),
            1,
            "the listener heard of the eviction"
        );
        assert_eq!(
            cache.get_or_insert_with(TrickyKey(1000), || 7),
            7,
            "the flight ended"
        );
    });
}

/// Found in review: an insert of a new key reserves an entry, evicts in its full
/// neighbourhood and looks again; if that look finds the key (an `Eq` that answered
/// otherwise the first time), it replaced the entry and kept the reservation, so `len` counted
/// one entry that does not exist, for good (enough of them and inserts wait for room forever).
#[test]
fn an_inconsistent_eq_leaks_no_entry_of_the_budget() {
    let (cache, _log) = full_neighbourhood();
    // Marked, so that the neighbourhood's eviction takes another entry.
    assert_eq!(cache.get(&TrickyKey(55)), Some(55));
    TRICKY_CACHE.with(|c| *c.borrow_mut() = Some((cache.clone(), AfterEviction::TellTheTruth)));
    cache.insert(TrickyKey(55), 5500).unwrap();
    TRICKY_CACHE.with(|c| *c.borrow_mut() = None);
    assert_eq!(cache.stats().unwrap().evictions, 1);
    assert_eq!(cache.get(&TrickyKey(55)), Some(5500));
    let held = cache.check_invariants().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(held, 55);
    assert_eq!(cache.len(), 55);
}

/// A loader that is not run (the key is cached) is dropped as the call returns; its captured
/// value's `Drop` panics. The panic reaches the caller, and the value the call was returning is
/// still dropped: rustc leaks a function's return value when a local's destructor panics after
/// it was made (rust-lang/rust#47949), and the loader used to be such a local. Found by the
/// configuration fuzzer (seed 4, hostile hooks).
#[test]
fn a_panicking_drop_of_an_unused_loader_leaks_no_value() {
    let hooks = Hooks::new();
    let cache: Cache<u64, Val> = Cache::new(10);
    cache.insert(1, hooks.val(1, 0)).unwrap();
    let bomb = hooks.bomb(1, 1);
    assert_panics("a hit whose loader's drop panics", || {
        cache.get_or_insert_with(1, move || bomb)
    });
    let bomb = hooks.bomb(1, 2);
    assert_panics("try_: a hit whose loader's drop panics", || {
        cache.try_get_or_insert_with(1, move || Ok::<_, ()>(bomb))
    });
    let bomb = hooks.bomb(1, 3);
    assert_panics("by_ref: a hit whose loader's drop panics", || {
        cache.get_or_insert_with_by_ref(&1, move || bomb)
    });
    let bomb = hooks.bomb(1, 4);
    assert_panics("try_ by_ref: a hit whose loader's drop panics", || {
        cache.try_get_or_insert_with_by_ref(&1, move || Ok::<_, ()>(bomb))
    });
    assert_eq!(cache.check_invariants(), Ok(1));
    drop(cache);
    hooks.assert_all_dropped();
}

/// The same with the async loaders, whose returned value leaked alike.
#[test]
fn a_panicking_drop_of_an_unused_async_loader_leaks_no_value() {
    use std::future::Future;
    use std::task::{Context, Poll, Wake, Waker};
    struct Noop;
    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }
    /// Polls once: a hit is ready at once.
    fn poll_once<F: Future>(f: F) -> Poll<F::Output> {
        let waker = Waker::from(Arc::new(Noop));
        std::pin::pin!(f).poll(&mut Context::from_waker(&waker))
    }
    let hooks = Hooks::new();
    let cache: Cache<u64, Val> = Cache::new(10);
    cache.insert(1, hooks.val(1, 0)).unwrap();
    let bomb = hooks.bomb(1, 1);
    assert_panics("an async hit whose loader's drop panics", || {
        poll_once(cache.get_or_insert_with_async(1, async move { bomb }))
    });
    let bomb = hooks.bomb(1, 2);
    assert_panics("an async by_ref hit whose loader's drop panics", || {
        poll_once(cache.get_or_insert_with_by_ref_async(&1, async move { bomb }))
    });
    assert_eq!(cache.check_invariants(), Ok(1));
    drop(cache);
    hooks.assert_all_dropped();
}
