//! Multi-threaded stress tests.
//!
//! Every value names its key, its writer and the writer's sequence number, and carries a canary
//! that its `Drop` overwrites, so a reader notices a value filed under the wrong key, an old value
//! coming back, or a value that was already dropped (AddressSanitizer turns the last one into a
//! report; see `ci/asan.sh`). Each test checks:
//!
//! * integrity: a lookup of `k` only ever returns a live value inserted for `k`;
//! * linearizability per key, as one thread sees it: values of one writer for one key come in
//!   the writer's order, and a thread that reads its own key back gets its latest insert or
//!   another writer's value, never one of its older ones;
//! * the bounds: `len() <= capacity()` and `weight() <= max_weight` after every insert and in a
//!   watcher thread that samples them without pause;
//! * drops: after the cache is dropped and epoch garbage is flushed, every value ever created
//!   (inserted, cloned by `get`, handed back) was dropped exactly once;
//! * progress: a monitor fails the test if no operation completes for a long time (a hang).
//!
//! The tests without `#[ignore]` are the short versions, sized to run in a few seconds in a
//! debug build on two cores. `stress_long` runs every configuration for longer, in release:
//!
//! ```text
//! CLOCKLINE_STRESS_SECS=300 cargo test --release --test stress -- --ignored --nocapture
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use clockline::Cache;

/// A monitor declares a hang after this long without a single completed operation. Generous:
/// a debug build on a loaded CI machine must never get near it.
const HANG: Duration = Duration::from_secs(60);

const ALIVE: u64 = 0x5afe_5afe_5afe_5afe;
const DEAD: u64 = 0xdead_dead_dead_dead;

#[derive(Default)]
struct Counts {
    created: AtomicUsize,
    dropped: AtomicUsize,
    /// Drops of a value whose canary was not intact (a double drop, in practice).
    bad_drops: AtomicUsize,
}

/// A value that knows which key and which insert it belongs to.
struct Tracked {
    key: u64,
    writer: u32,
    seq: u64,
    weight: u64,
    canary: u64,
    counts: Arc<Counts>,
}

impl Tracked {
    fn new(key: u64, writer: u32, seq: u64, weight: u64, counts: &Arc<Counts>) -> Self {
        counts.created.fetch_add(1, Ordering::Relaxed);
        Self {
            key,
            writer,
            seq,
            weight,
            canary: ALIVE,
            counts: counts.clone(),
        }
    }

    /// Panics unless this is a live value for `key`.
    #[track_caller]
    fn check(&self, key: u64) {
        assert_eq!(
            self.canary, ALIVE,
            "value for key {} read after its drop",
            self.key
        );
        assert_eq!(
            self.key, key,
            "lookup of {key} returned a value of key {}",
            self.key
        );
    }
}

impl Clone for Tracked {
    fn clone(&self) -> Self {
        assert_eq!(self.canary, ALIVE, "clone of a dropped value");
        Self::new(self.key, self.writer, self.seq, self.weight, &self.counts)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if self.canary != ALIVE {
            self.counts.bad_drops.fetch_add(1, Ordering::Relaxed);
        }
        self.canary = DEAD;
        self.counts.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// xorshift64*: a tiny deterministic generator per thread.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
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

/// Checks that everything created was dropped exactly once.
fn assert_all_dropped(counts: &Counts) {
    settle(|| counts.dropped.load(Ordering::SeqCst) >= counts.created.load(Ordering::SeqCst));
    let created = counts.created.load(Ordering::SeqCst);
    assert_eq!(
        counts.dropped.load(Ordering::SeqCst),
        created,
        "values leaked or double-dropped"
    );
    assert_eq!(
        counts.bad_drops.load(Ordering::SeqCst),
        0,
        "a value was dropped twice"
    );
}

/// Relative frequencies of the operations a worker runs.
#[derive(Clone, Copy, Debug)]
struct Mix {
    insert: u32,
    pinned_insert: u32,
    get: u32,
    peek: u32,
    contains: u32,
    remove: u32,
    pinned: u32,
    iter: u32,
    clear: u32,
}

impl Mix {
    const READ_HEAVY: Mix = Mix {
        insert: 20,
        pinned_insert: 5,
        get: 50,
        peek: 10,
        contains: 5,
        remove: 5,
        pinned: 8,
        iter: 0,
        clear: 0,
    };
    const EVERYTHING: Mix = Mix {
        insert: 35,
        pinned_insert: 10,
        get: 25,
        peek: 5,
        contains: 5,
        remove: 10,
        pinned: 8,
        iter: 1,
        clear: 1,
    };
    /// As `EVERYTHING`, without `clear`, so that a growing table fills and grows.
    const NO_CLEAR: Mix = Mix {
        clear: 0,
        ..Mix::EVERYTHING
    };
    const WRITE_ONLY: Mix = Mix {
        insert: 80,
        pinned_insert: 20,
        get: 0,
        peek: 0,
        contains: 0,
        remove: 0,
        pinned: 0,
        iter: 0,
        clear: 0,
    };

    fn total(&self) -> u32 {
        self.insert
            + self.pinned_insert
            + self.get
            + self.peek
            + self.contains
            + self.remove
            + self.pinned
            + self.iter
            + self.clear
    }
}

/// An insert's result: stored, or, in a weighted cache under the adaptive policy, a new heavy
/// entry not admitted (`InsertErrorKind::Rejected`); anything else fails the test.
#[track_caller]
fn stored<K, V>(r: Result<(), clockline::InsertError<K, V>>) {
    if let Err(e) = r {
        assert!(
            matches!(e.kind, clockline::InsertErrorKind::Rejected { .. }),
            "insert failed: {}",
            e
        );
    }
}

/// The weight of a value: a function of the key alone, so that a replace keeps the weight, or
/// (`varying`) of the insert too, so that replaces grow and shrink entries.
fn weight_of(key: u64, seq: u64, varying: bool) -> u64 {
    if varying {
        (key + seq) % 5
    } else {
        key % 5
    }
}

#[derive(Clone, Debug)]
struct Config {
    name: &'static str,
    threads: usize,
    /// `None`: weight-bounded only, with a growing table.
    capacity: Option<usize>,
    max_weight: Option<u64>,
    /// Weights change when a key is replaced (see `weight_of`).
    varying_weights: bool,
    keys: u64,
    mix: Mix,
    ops_per_thread: u64,
    time_box: Duration,
}

fn build(cfg: &Config, policy: clockline::Policy) -> Cache<u64, Tracked> {
    let mut b = Cache::builder().policy(policy);
    if let Some(c) = cfg.capacity {
        b = b.max_capacity(c);
    }
    if let Some(w) = cfg.max_weight {
        b = b.max_weight(w).weigher(|_, v: &Tracked| v.weight);
    }
    b.build().expect("valid configuration")
}

/// `len() <= capacity()` and `weight() <= max_weight`, read in an order that stays valid while
/// a growing table raises `capacity()`.
#[track_caller]
fn assert_bounds(cache: &Cache<u64, Tracked>) {
    let len = cache.len();
    let cap = cache.capacity();
    assert!(len <= cap, "len {len} > capacity {cap}");
    if let Some(max) = cache.max_weight() {
        let w = cache.weight();
        assert!(w <= max, "weight {w} > max_weight {max}");
    }
}

/// What one thread has seen and written, for the per-key order checks.
struct Observer {
    me: u32,
    /// Highest sequence number seen per (key, writer).
    seen: HashMap<(u64, u32), u64>,
    /// This thread's latest insert per key.
    mine: HashMap<u64, u64>,
}

impl Observer {
    #[track_caller]
    fn saw(&mut self, key: u64, v: &Tracked) {
        v.check(key);
        let last = self.seen.entry((key, v.writer)).or_insert(v.seq);
        assert!(
            v.seq >= *last,
            "key {key}: writer {}'s seq {} seen after its seq {last}",
            v.writer,
            v.seq
        );
        *last = v.seq;
        if v.writer == self.me {
            assert_eq!(
                self.mine.get(&key),
                Some(&v.seq),
                "key {key}: thread {} read back an older insert of its own",
                self.me
            );
        }
    }
}

fn worker(
    cache: &Cache<u64, Tracked>,
    cfg: &Config,
    me: u32,
    counts: &Arc<Counts>,
    ops: &AtomicU64,
) {
    let mut rng = Rng::new(u64::from(me) + 1);
    let mut obs = Observer {
        me,
        seen: HashMap::new(),
        mine: HashMap::new(),
    };
    let mut seq = 0u64;
    let start = Instant::now();
    let m = cfg.mix;
    let mut new_value = |key: u64, obs: &mut Observer| {
        seq += 1;
        obs.mine.insert(key, seq);
        Tracked::new(
            key,
            me,
            seq,
            weight_of(key, seq, cfg.varying_weights),
            counts,
        )
    };
    for i in 0..cfg.ops_per_thread {
        if i % 64 == 0 && start.elapsed() > cfg.time_box {
            break;
        }
        let key = rng.below(cfg.keys);
        let mut r = rng.below(u64::from(m.total())) as u32;
        let mut pick = |w: u32| {
            let hit = r < w;
            r = r.wrapping_sub(w);
            hit
        };
        if pick(m.insert) {
            let v = new_value(key, &mut obs);
            stored(cache.insert(key, v));
            assert_bounds(cache);
        } else if pick(m.pinned_insert) {
            let v = new_value(key, &mut obs);
            let pinned = cache.pin();
            stored(pinned.insert(key, v));
            if let Some(v) = pinned.get(&key) {
                obs.saw(key, v);
            }
            assert_bounds(cache);
        } else if pick(m.get) {
            if let Some(v) = cache.get(&key) {
                obs.saw(key, &v);
            }
        } else if pick(m.peek) {
            if let Some(v) = cache.peek(&key) {
                obs.saw(key, &v);
            }
        } else if pick(m.contains) {
            let _ = cache.contains_key(&key);
        } else if pick(m.remove) {
            if let Some(v) = cache.remove(&key) {
                obs.saw(key, &v);
            }
        } else if pick(m.pinned) {
            // A reference lent by a pinned handle stays valid while this thread's own inserts
            // evict around it.
            let pinned = cache.pin();
            let held = pinned.get(&key);
            if let Some(v) = held {
                obs.saw(key, v);
            }
            for j in 1..=4 {
                let k = (key + j) % cfg.keys;
                let v = new_value(k, &mut obs);
                stored(pinned.insert(k, v));
            }
            if let Some(v) = pinned.remove(&((key + 2) % cfg.keys)) {
                v.check((key + 2) % cfg.keys);
            }
            if let Some(v) = held {
                v.check(key);
            }
        } else if pick(m.iter) {
            let pinned = cache.pin();
            for (k, v) in pinned.iter() {
                v.check(*k);
            }
        } else {
            cache.clear();
        }
        ops.fetch_add(1, Ordering::Relaxed);
    }
}

/// Samples the bounds without pause until `stop`; returns the number of samples.
fn watcher(cache: &Cache<u64, Tracked>, stop: &AtomicBool) -> u64 {
    let mut samples = 0;
    while !stop.load(Ordering::Relaxed) {
        assert_bounds(cache);
        samples += 1;
    }
    samples
}

/// Waits for `handles`, failing the test if `ops` stops moving for `HANG`.
fn join_or_hang<T>(handles: Vec<thread::JoinHandle<T>>, ops: &AtomicU64, what: &str) -> Vec<T> {
    let mut last = ops.load(Ordering::Relaxed);
    let mut since = Instant::now();
    while !handles.iter().all(|h| h.is_finished()) {
        thread::sleep(Duration::from_millis(10));
        let now = ops.load(Ordering::Relaxed);
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() > HANG {
            panic!("{what}: no operation completed for {HANG:?} (after {now}): hang");
        }
    }
    handles
        .into_iter()
        .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
        .collect()
}

/// Runs `cfg` under each eviction policy and checks the cache at rest and every drop.
fn run(cfg: &Config) {
    for policy in [clockline::Policy::Adaptive, clockline::Policy::Clock] {
        run_with(cfg, policy);
    }
}

fn run_with(cfg: &Config, policy: clockline::Policy) {
    let counts = Arc::new(Counts::default());
    let cache = Arc::new(build(cfg, policy));
    let ops = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let watch = {
        let (cache, stop) = (cache.clone(), stop.clone());
        thread::spawn(move || watcher(&cache, &stop))
    };
    let workers: Vec<_> = (0..cfg.threads)
        .map(|t| {
            let (cache, cfg, counts, ops) =
                (cache.clone(), cfg.clone(), counts.clone(), ops.clone());
            thread::spawn(move || worker(&cache, &cfg, t as u32, &counts, &ops))
        })
        .collect();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        join_or_hang(workers, &ops, cfg.name);
    }));
    stop.store(true, Ordering::Relaxed);
    let samples = watch
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
    assert!(samples > 0);
    if cfg.name.contains("striped") && policy == clockline::Policy::Adaptive {
        assert!(cache.window_queues() > 1, "{}: one queue", cfg.name);
    }
    println!(
        "{} ({policy:?}): {} ops, {samples} bound samples, capacity {}",
        cfg.name,
        ops.load(Ordering::Relaxed),
        cache.capacity()
    );

    // At rest: the table is consistent and agrees with the counters.
    let n = cache
        .check_invariants()
        .unwrap_or_else(|e| panic!("{}: {e}", cfg.name));
    assert_eq!(n, cache.len(), "{}: len() at rest", cfg.name);
    assert_bounds(&cache);
    let pinned = cache.pin();
    let mut weight = 0;
    let mut seen = 0;
    for (k, v) in pinned.iter() {
        v.check(*k);
        weight += v.weight;
        seen += 1;
    }
    drop(pinned);
    assert_eq!(seen, n);
    if cfg.max_weight.is_some() {
        assert_eq!(cache.weight(), weight, "{}: weight() at rest", cfg.name);
    }
    let cache = Arc::try_unwrap(cache).unwrap_or_else(|_| panic!("cache still shared"));
    drop(cache);
    assert_all_dropped(&counts);
}

/// Several threads on 2 cores: more threads than cores makes preemption inside an operation
/// likely, which is where races show.
const THREADS: usize = 4;

/// The short versions: operations per thread, and a time box that cuts them short on a slow
/// machine (the checks do not depend on how much work got done).
const SHORT_OPS: u64 = 50_000;
const SHORT_TIME: Duration = Duration::from_millis(1_000);

fn configs(ops: u64, time_box: Duration, threads: usize) -> Vec<Config> {
    let base = Config {
        name: "",
        threads,
        capacity: None,
        max_weight: None,
        varying_weights: false,
        keys: 0,
        mix: Mix::EVERYTHING,
        ops_per_thread: ops,
        time_box,
    };
    vec![
        Config {
            name: "count-bounded, keys > capacity, everything",
            capacity: Some(64),
            keys: 256,
            ..base.clone()
        },
        Config {
            name: "count-bounded, capacity 1",
            capacity: Some(1),
            keys: 8,
            ..base.clone()
        },
        Config {
            name: "count-bounded, read-heavy, keys < capacity",
            capacity: Some(512),
            keys: 300,
            mix: Mix::READ_HEAVY,
            ..base.clone()
        },
        Config {
            name: "count- and weight-bounded",
            capacity: Some(200),
            max_weight: Some(150),
            keys: 512,
            ..base.clone()
        },
        Config {
            name: "count- and weight-bounded, weights change on replace",
            capacity: Some(200),
            max_weight: Some(150),
            varying_weights: true,
            keys: 512,
            ..base.clone()
        },
        Config {
            name: "weight-bounded, growing table",
            max_weight: Some(5_000),
            keys: 8_192,
            mix: Mix::WRITE_ONLY,
            ..base.clone()
        },
        Config {
            name: "weight-bounded, growing table, everything but clear",
            max_weight: Some(3_000),
            keys: 4_096,
            mix: Mix::NO_CLEAR,
            ..base.clone()
        },
        // The adaptive window's queue is striped from 32,768 entries on (four queues here):
        // nodes of every queue promoted, evicted, removed and replaced from four threads.
        Config {
            name: "count-bounded, striped window (4 queues), write-heavy",
            capacity: Some(65_536),
            keys: 262_144,
            mix: Mix::WRITE_ONLY,
            ..base.clone()
        },
        // Striped, with weights: entries leave for their weight too, and replaces change it.
        Config {
            name: "count- and weight-bounded, striped window (4 queues), everything but clear",
            capacity: Some(65_536),
            max_weight: Some(100_000),
            varying_weights: true,
            keys: 262_144,
            mix: Mix::NO_CLEAR,
            ..base
        },
    ]
}

#[test]
fn count_bounded_everything() {
    run(&configs(SHORT_OPS, SHORT_TIME, THREADS)[0]);
}

#[test]
fn count_bounded_capacity_one() {
    run(&configs(SHORT_OPS, SHORT_TIME, THREADS)[1]);
}

#[test]
fn count_bounded_read_heavy() {
    run(&configs(SHORT_OPS, SHORT_TIME, THREADS)[2]);
}

#[test]
fn count_and_weight_bounded() {
    run(&configs(SHORT_OPS, SHORT_TIME, THREADS)[3]);
}

#[test]
fn weights_change_on_replace() {
    run(&configs(SHORT_OPS, SHORT_TIME, THREADS)[4]);
}

#[test]
fn weight_bounded_growing_write_only() {
    run(&configs(SHORT_OPS / 4, SHORT_TIME, THREADS)[5]);
}

#[test]
fn weight_bounded_growing_mixed() {
    run(&configs(SHORT_OPS, SHORT_TIME, THREADS)[6]);
}

/// A cache large enough for a striped window (`policy::Adaptive`): at rest every window node
/// is queued in its own queue and counted by it (`check_invariants`), the bounds held
/// throughout, and every value is dropped once.
#[test]
fn a_striped_window_keeps_every_node_queued_and_counted() {
    let configs = configs(SHORT_OPS * 2, SHORT_TIME, THREADS);
    run(&configs[7]);
    run(&configs[8]);
}

/// Many threads insert one key (plain and pinned) while others read it: there is never more
/// than one entry, and the survivor is some writer's last insert.
#[test]
fn same_key_hammering() {
    for weighted in [false, true] {
        same_key(weighted, 2_000, Duration::from_millis(500));
    }
}

fn same_key(weighted: bool, per_thread: u64, time_box: Duration) {
    let counts = Arc::new(Counts::default());
    let cache = Arc::new(if weighted {
        Cache::builder()
            .max_weight(100)
            .weigher(|_, v: &Tracked| v.weight)
            .build()
            .unwrap()
    } else {
        Cache::new(16)
    });
    let ops = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..THREADS as u32)
        .map(|t| {
            let (cache, counts, ops) = (cache.clone(), counts.clone(), ops.clone());
            thread::spawn(move || {
                let start = Instant::now();
                let mut last = 0;
                for seq in 1..=per_thread {
                    if seq % 64 == 0 && start.elapsed() > time_box {
                        break;
                    }
                    // Weights differ per insert: replaces both grow and shrink the entry.
                    let v = Tracked::new(0, t, seq, seq % 7, &counts);
                    if seq % 3 == 0 {
                        cache.pin().insert(0, v).unwrap();
                    } else {
                        cache.insert(0, v).unwrap();
                    }
                    last = seq;
                    assert!(cache.len() <= 1, "one key, {} entries", cache.len());
                    ops.fetch_add(1, Ordering::Relaxed);
                }
                last
            })
        })
        .collect();
    let reads = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let (cache, stop, ops) = (cache.clone(), stop.clone(), reads.clone());
            thread::spawn(move || {
                let mut obs = Observer {
                    me: u32::MAX - r,
                    seen: HashMap::new(),
                    mine: HashMap::new(),
                };
                while !stop.load(Ordering::Relaxed) {
                    if let Some(v) = cache.get(&0) {
                        obs.saw(0, &v);
                    }
                    if let Some(v) = cache.pin().peek(&0) {
                        obs.saw(0, v);
                    }
                    assert!(cache.len() <= 1, "one key, {} entries", cache.len());
                    ops.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let lasts = join_or_hang(writers, &ops, "same key");
    stop.store(true, Ordering::Relaxed);
    join_or_hang(readers, &reads, "same key readers");

    assert_eq!(cache.check_invariants(), Ok(1));
    assert_eq!(cache.len(), 1);
    let v = cache.get(&0).expect("the key is there");
    v.check(0);
    assert_eq!(
        v.seq, lasts[v.writer as usize],
        "the survivor is its writer's last insert"
    );
    if weighted {
        assert_eq!(cache.weight(), v.weight);
    }
    assert_eq!(cache.pin().iter().count(), 1);
    drop(v);
    drop(Arc::try_unwrap(cache).unwrap_or_else(|_| panic!("cache still shared")));
    assert_all_dropped(&counts);
}

/// Threads walk the same keys in the same order, in lockstep, so that they race to insert each
/// key while it is still absent (where two inserts of one key could both publish): there is one
/// entry per key, and `len()` never exceeds the number of keys started.
#[test]
fn same_new_key_races() {
    same_new_keys(20_000, Duration::from_secs(1));
}

fn same_new_keys(keys: u64, time_box: Duration) {
    let counts = Arc::new(Counts::default());
    // Four times the room: at full load, an insert whose 56-slot neighbourhood is full evicts
    // there even below capacity (about 0.2 % of keys when filling to capacity); at a quarter
    // load that does not happen, so every key must stay.
    let cache = Arc::new(
        Cache::builder()
            .max_capacity(4 * keys as usize)
            .build()
            .unwrap(),
    );
    let started = Arc::new(AtomicU64::new(0));
    let ops = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(std::sync::Barrier::new(THREADS));
    let over = Arc::new(AtomicBool::new(false));
    let watch = {
        let (cache, started, stop) = (cache.clone(), started.clone(), stop.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let len = cache.len() as u64;
                let started = started.load(Ordering::SeqCst);
                assert!(len <= started, "{len} entries for {started} keys");
            }
        })
    };
    let handles: Vec<_> = (0..THREADS as u32)
        .map(|t| {
            let (cache, counts, started, ops, barrier, over) = (
                cache.clone(),
                counts.clone(),
                started.clone(),
                ops.clone(),
                barrier.clone(),
                over.clone(),
            );
            thread::spawn(move || {
                let start = Instant::now();
                let mut done = 0;
                for key in 0..keys {
                    // Every 50 keys: all threads wait for each other, then race again. They all
                    // take the same decision to stop, so no one waits at a barrier alone.
                    if key % 50 == 0 {
                        if barrier.wait().is_leader() && start.elapsed() > time_box {
                            over.store(true, Ordering::SeqCst);
                        }
                        barrier.wait();
                        if over.load(Ordering::SeqCst) {
                            break;
                        }
                    }
                    started.fetch_max(key + 1, Ordering::SeqCst);
                    let v = Tracked::new(key, t, key, 0, &counts);
                    if (key + u64::from(t)) % 2 == 0 {
                        cache.insert(key, v).unwrap();
                    } else {
                        cache.pin().insert(key, v).unwrap();
                    }
                    ops.fetch_add(1, Ordering::Relaxed);
                    done = key + 1;
                }
                done
            })
        })
        .collect();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        join_or_hang(handles, &ops, "same new keys")
    }));
    stop.store(true, Ordering::SeqCst);
    watch
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
    let done = match result {
        Ok(done) => done[0],
        Err(e) => std::panic::resume_unwind(e),
    };
    assert_eq!(
        cache.check_invariants(),
        Ok(done as usize),
        "one entry per key"
    );
    let mut seen = vec![0u32; done as usize];
    for (k, v) in cache.pin().iter() {
        v.check(*k);
        seen[*k as usize] += 1;
    }
    assert!(seen.iter().all(|&n| n == 1), "one entry per key");
    drop(Arc::try_unwrap(cache).unwrap_or_else(|_| panic!("cache still shared")));
    assert_all_dropped(&counts);
}

/// Threads insert and remove one key: at rest there is at most one entry, and the table agrees.
#[test]
fn same_key_insert_remove() {
    let counts = Arc::new(Counts::default());
    let cache = Arc::new(Cache::new(4));
    let ops = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..THREADS as u32)
        .map(|t| {
            let (cache, counts, ops) = (cache.clone(), counts.clone(), ops.clone());
            thread::spawn(move || {
                let start = Instant::now();
                for seq in 1..=5_000u64 {
                    if seq % 64 == 0 && start.elapsed() > Duration::from_millis(500) {
                        break;
                    }
                    if t % 2 == 0 {
                        cache
                            .insert(7, Tracked::new(7, t, seq, 0, &counts))
                            .unwrap();
                    } else if let Some(v) = cache.remove(&7) {
                        v.check(7);
                    }
                    ops.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    join_or_hang(handles, &ops, "insert/remove one key");
    let n = cache.check_invariants().unwrap();
    assert!(n <= 1);
    assert_eq!(cache.len(), n);
    drop(Arc::try_unwrap(cache).unwrap_or_else(|_| panic!("cache still shared")));
    assert_all_dropped(&counts);
}

/// Writers insert distinct keys into a growing weight-bounded cache whose weight never binds, so
/// nothing is ever evicted: readers check that every key a writer has finished inserting is
/// found, through every growth of the table.
#[test]
fn growing_table_loses_nothing() {
    growing(2_000, Duration::from_secs(2));
}

fn growing(per_writer: u64, time_box: Duration) {
    let writers = 3u64;
    let counts = Arc::new(Counts::default());
    let cache: Arc<Cache<u64, Tracked>> = Arc::new(
        Cache::builder()
            .max_weight(1 << 40)
            .weigher(|_, v: &Tracked| v.weight)
            .build()
            .unwrap(),
    );
    let initial = cache.capacity();
    let done: Arc<Vec<AtomicU64>> = Arc::new((0..writers).map(|_| AtomicU64::new(0)).collect());
    let ops = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let ws: Vec<_> = (0..writers)
        .map(|w| {
            let (cache, counts, done, ops) =
                (cache.clone(), counts.clone(), done.clone(), ops.clone());
            thread::spawn(move || {
                let start = Instant::now();
                let mut n = 0;
                while n < per_writer && start.elapsed() < time_box {
                    let key = n * writers + w;
                    cache
                        .insert(key, Tracked::new(key, w as u32, n, 1, &counts))
                        .unwrap();
                    n += 1;
                    // Release: a reader that sees `n` finds the key.
                    done[w as usize].store(n, Ordering::Release);
                    ops.fetch_add(1, Ordering::Relaxed);
                }
                n
            })
        })
        .collect();
    let reads = Arc::new(AtomicU64::new(0));
    let reader = {
        let (cache, done, stop, ops) = (cache.clone(), done.clone(), stop.clone(), reads.clone());
        thread::spawn(move || {
            let mut rng = Rng::new(99);
            let mut checks = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let w = rng.below(writers);
                let n = done[w as usize].load(Ordering::Acquire);
                if n == 0 {
                    continue;
                }
                // The newest key and a random older one.
                for i in [n - 1, rng.below(n)] {
                    let key = i * writers + w;
                    match cache.pin().get(&key) {
                        Some(v) => v.check(key),
                        None => panic!("key {key} (writer {w}, #{i} of {n}) lost"),
                    }
                    checks += 1;
                }
                ops.fetch_add(1, Ordering::Relaxed);
            }
            checks
        })
    };
    let inserted: u64 = join_or_hang(ws, &ops, "growing table").iter().sum();
    stop.store(true, Ordering::Relaxed);
    join_or_hang(vec![reader], &reads, "growing table reader");
    assert_eq!(cache.check_invariants(), Ok(inserted as usize));
    assert_eq!(cache.len(), inserted as usize);
    assert_eq!(cache.weight(), inserted);
    if inserted as usize > initial {
        assert!(cache.capacity() > initial, "the table grew");
    }
    for w in 0..writers {
        for i in 0..done[w as usize].load(Ordering::Relaxed) {
            let key = i * writers + w;
            cache.peek(&key).expect("every key is there").check(key);
        }
    }
    drop(Arc::try_unwrap(cache).unwrap_or_else(|_| panic!("cache still shared")));
    assert_all_dropped(&counts);
}

/// Many threads insert distinct keys into a cache of capacity 1: the bound holds at every
/// instant, though every insert must evict the entry another thread just published.
#[test]
fn capacity_one_contention() {
    let counts = Arc::new(Counts::default());
    let cache = Arc::new(Cache::new(1));
    let ops = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let watch = {
        let (cache, stop) = (cache.clone(), stop.clone());
        thread::spawn(move || watcher(&cache, &stop))
    };
    let handles: Vec<_> = (0..THREADS as u64)
        .map(|t| {
            let (cache, counts, ops) = (cache.clone(), counts.clone(), ops.clone());
            thread::spawn(move || {
                let start = Instant::now();
                for seq in 0..5_000u64 {
                    if seq % 64 == 0 && start.elapsed() > Duration::from_millis(500) {
                        break;
                    }
                    let key = t * 1_000_000 + seq;
                    cache
                        .insert(key, Tracked::new(key, t as u32, seq, 0, &counts))
                        .unwrap();
                    assert!(cache.len() <= 1);
                    if let Some(v) = cache.get(&key) {
                        v.check(key);
                    }
                    ops.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        join_or_hang(handles, &ops, "capacity 1");
    }));
    stop.store(true, Ordering::Relaxed);
    watch.join().unwrap();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
    assert_eq!(cache.check_invariants(), Ok(1));
    drop(Arc::try_unwrap(cache).unwrap_or_else(|_| panic!("cache still shared")));
    assert_all_dropped(&counts);
}

/// Two threads replace their own keys with values of changing weight in a cache of
/// `max_weight` 10: thread 0 alternates weights 1 and 9, thread 1 alternates 1 and 3.
///
/// A replace that grows an entry first reserves the extra weight (`new - old`). If the entry is
/// evicted before the swap (another thread's insert made room), the insert falls back to
/// publishing a new entry and needs `old` more weight. Both threads can get there at once, each
/// holding its extra weight (8 + 2 = all of the budget) and waiting for 1 more, with nothing
/// published that could be evicted: a livelock (`len` 2, `weight` 10, no entry in the table).
/// Fixed by giving the reservation back before retrying.
///
/// A hang here leaves the two threads pinned, so the rest of this process frees no epoch garbage
/// and other tests' drop counts fail too: look at this test first.
#[test]
fn weighted_replaces_that_change_weight_make_progress() {
    // Thread 0 alternates 1 and 9, thread 1 alternates 1 and 3, each on its own key.
    let next = |t: u64, i: u64| match (i % 2, t) {
        (0, _) => (t, 1),
        (_, 0) => (t, 9),
        _ => (t, 3),
    };
    two_weighted_writers(clockline::Policy::Adaptive, Duration::from_secs(2), next);
}

/// Two threads insert for `run_for` into a cache of at most 100 entries and weight 10, where a
/// value is its own weight; `next(thread, i)` gives a thread's `i`-th key and value. Fails if
/// no insert finishes for 30 s (the hazard of the tests around it is both threads waiting for
/// weight the other holds); checks the cache at rest.
fn two_weighted_writers(
    policy: clockline::Policy,
    run_for: Duration,
    next: fn(u64, u64) -> (u64, u64),
) {
    let stall = Duration::from_secs(30);
    let cache: Arc<Cache<u64, u64>> = Arc::new(
        Cache::builder()
            .max_capacity(100)
            .max_weight(10)
            .weigher(|_, v: &u64| *v)
            .policy(policy)
            .build()
            .unwrap(),
    );
    let ops = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..2u64)
        .map(|t| {
            let (cache, ops) = (cache.clone(), ops.clone());
            thread::spawn(move || {
                let start = Instant::now();
                let mut i = 0u64;
                while start.elapsed() < run_for {
                    i += 1;
                    let (key, weight) = next(t, i);
                    stored(cache.insert(key, weight));
                    ops.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let mut last = ops.load(Ordering::Relaxed);
    let mut since = Instant::now();
    while !handles.iter().all(|h| h.is_finished()) {
        thread::sleep(Duration::from_millis(10));
        let now = ops.load(Ordering::Relaxed);
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() > stall {
            panic!(
                "{policy:?}: no insert finished for {stall:?} after {now}: len {} weight {} \
                 (both threads wait for weight the other one reserved)",
                cache.len(),
                cache.weight()
            );
        }
    }
    for h in handles {
        h.join().unwrap();
    }
    cache.check_invariants().unwrap();
    assert!(cache.weight() <= 10);
}

/// The same hazard on the path of new keys, found in review: while the weight budget had no
/// room, an insert evicted entry after entry and kept each victim's weight, and when nothing was
/// left to evict it waited, holding that part. Two inserts of new weight-7 keys into a budget of
/// 10 could each hold 4, with the table empty and 2 free: both waited forever (within 2 s here,
/// under both policies). Fixed: an insert that finds nothing to evict gives back what it holds
/// before it waits.
#[test]
fn weighted_inserts_of_new_keys_make_progress() {
    // A new key every time, of weight 7 one time in three, else 2; the adaptive policy may
    // refuse a heavy one (`stored` accepts that).
    let next = |t: u64, i: u64| ((t << 40) | i, if i % 3 == 0 { 7 } else { 2 });
    for policy in [clockline::Policy::Adaptive, clockline::Policy::Clock] {
        two_weighted_writers(policy, Duration::from_secs(2), next);
    }
}

/// Rounds on a fresh, full cache, under each policy: threads insert keys drawn from twice the
/// capacity, so nearly every insert of a new key evicts, and an eviction of a key displaced
/// from its home takes that home's lock with a try-lock to clear a spill bit. After each round
/// every key is in the table once (`check_invariants` looks each one up). A failed try-lock once
/// unlocked the lock's holder, and two inserts of one key then both published: rounds like
/// these found it within 1 to 35 s in release, where the other stress tests found it once, in
/// the AddressSanitizer run.
#[test]
fn full_caches_keep_one_entry_per_key() {
    rounds_of_evicting_inserts(Duration::from_millis(1_500));
}

fn rounds_of_evicting_inserts(run_for: Duration) {
    const CAPACITY: u64 = 4_096;
    let start = Instant::now();
    let mut rounds = 0u64;
    while rounds == 0 || start.elapsed() < run_for {
        for policy in [clockline::Policy::Adaptive, clockline::Policy::Clock] {
            let cache: Arc<Cache<u64, u64>> = Arc::new(
                Cache::builder()
                    .max_capacity(CAPACITY as usize)
                    .policy(policy)
                    .build()
                    .unwrap(),
            );
            let ops = Arc::new(AtomicU64::new(0));
            let workers: Vec<_> = (0..THREADS as u64)
                .map(|t| {
                    let (cache, ops) = (cache.clone(), ops.clone());
                    let mut rng = Rng::new(rounds * 64 + t + 1);
                    thread::spawn(move || {
                        for i in 0..3 * CAPACITY {
                            let key = rng.below(2 * CAPACITY);
                            cache.insert(key, key).unwrap();
                            // Progress for the hang monitor, in steps: a shared counter
                            // written per insert would serialize the inserts it watches.
                            if i % 256 == 255 {
                                ops.fetch_add(256, Ordering::Relaxed);
                            }
                        }
                    })
                })
                .collect();
            join_or_hang(workers, &ops, "evicting inserts");
            let n = cache
                .check_invariants()
                .unwrap_or_else(|e| panic!("round {rounds}, {policy:?}: {e}"));
            assert_eq!(n, cache.len());
            assert!(n <= CAPACITY as usize);
            for (k, v) in cache.pin().iter() {
                assert_eq!(k, v);
            }
        }
        rounds += 1;
    }
    println!("{rounds} rounds in {:?}", start.elapsed());
}

/// The long version of everything above, for release builds:
/// `CLOCKLINE_STRESS_SECS=300 cargo test --release --test stress -- --ignored --nocapture`.
#[test]
#[ignore = "long: run in release with --ignored; CLOCKLINE_STRESS_SECS sets the duration"]
fn stress_long() {
    let secs: u64 = std::env::var("CLOCKLINE_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let threads = thread::available_parallelism()
        .map_or(4, |n| n.get())
        .max(2)
        * 2;
    let cfgs = configs(u64::MAX, Duration::ZERO, threads);
    // One share per configuration, four for the single-purpose tests.
    let share = Duration::from_secs(secs) / (cfgs.len() as u32 + 4);
    let start = Instant::now();
    for cfg in cfgs {
        let cfg = Config {
            time_box: share,
            ..cfg
        };
        let t = Instant::now();
        run(&cfg);
        println!("{}: {:?}", cfg.name, t.elapsed());
    }
    let t = Instant::now();
    while t.elapsed() < share {
        same_key(false, u64::MAX, share / 4);
        same_key(true, u64::MAX, share / 4);
    }
    growing(200_000, share);
    same_new_keys(1_000_000, share);
    rounds_of_evicting_inserts(share);
    println!("total: {:?}", start.elapsed());
}
