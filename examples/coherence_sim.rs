//! A dry run of the fleet-coherence layer: N service instances, each with a clockline cache in
//! front of one shared "database", kept coherent by broadcast invalidations or updates that
//! carry the row's version, applied with clockline's version guards.
//!
//! * The database is a `Mutex<HashMap<key, (value, version)>>` with one global version counter
//!   (a log offset: every write gets the next number).
//! * Writers update a random row and broadcast `(key, version, maybe value)` to every instance
//!   through that instance's bus: each message is delayed at random (so messages reorder),
//!   sometimes duplicated, and, in the missed-message scenarios, sometimes dropped.
//! * Each instance has an applier thread (the subscriber) and reader threads doing cache-aside
//!   reads with `try_get_or_insert_versioned_with` (the loader reads the row and its version).
//! * Styles: `invalidate` applies `invalidate_versioned(k, n)`; `update` applies
//!   `insert_versioned(k, value, n)`; `update-present` updates held keys and records the
//!   version of others with `invalidate_versioned`; `invalidate-enc` is `invalidate` with the
//!   versions encoded as rows at `2n + 1` and invalidations at `2n`, the workaround an author
//!   needed before a load at a tombstone's own version was cached (2026-11-27; kept as a
//!   control: it should now measure like `invalidate`).
//!
//! Measured per scenario: reads, loads and hit ratio; reads staler than the database was when
//! the read began (and for how long their value had been superseded); per-reader regressions
//! (a read older than one this reader already saw for the key); what the appliers did; and,
//! after the writers stop and the buses drain, the coherence check: no instance returns a
//! value older than the database's latest version of that key.
//!
//! `cargo run --release --example coherence_sim [-- SCENARIO...] [--secs S] [--seed N]`
//! Scenarios: baseline update enc unv evict evict-unv restart-inv restart-upd restart-upp
//! missed missed-ttl pressure pressure-enc pressure-upd pressure-upp tombloss tombloss-unv
//! (default: all).
//!
//! The version a read returns is carried inside the value (`V = (version, payload)`), so that
//! the check does not depend on the cache's own bookkeeping of versions (`get_versioned`).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use clockline::{Cache, InsertErrorKind, Invalidation};

/// `(version at the database, payload)`.
type Val = (u64, u64);
type C = Cache<u64, Val>;

// ---------------------------------------------------------------- randomness

// The project's workload generator (splitmix64), as the other examples use it.
#[path = "../benches/common/mod.rs"]
#[allow(dead_code)]
mod common;
use common::SplitMix64 as Rng;

/// The draws this simulation makes.
trait Draw {
    fn chance(&mut self, p: f64) -> bool;
    /// Skewed key: u^3 puts about half the reads on the lowest 12 % of keys.
    fn key(&mut self, keys: u64) -> u64;
}

impl Draw for Rng {
    fn chance(&mut self, p: f64) -> bool {
        self.next_f64() <= p
    }
    fn key(&mut self, keys: u64) -> u64 {
        let u = self.next_f64();
        ((u * u * u) * keys as f64) as u64
    }
}

// ---------------------------------------------------------------- the database

struct Db {
    rows: Mutex<HashMap<u64, Val>>,
    counter: AtomicU64,
    /// Latest committed version per key, readable without the lock (for the staleness probe).
    latest: Vec<AtomicU64>,
    /// Every (version, commit instant) per key, to tell how long a value had been superseded.
    history: Vec<Mutex<Vec<(u64, Instant)>>>,
}

impl Db {
    fn new(keys: u64) -> Self {
        let now = Instant::now();
        let mut rows = HashMap::new();
        for k in 0..keys {
            rows.insert(k, (1, k * 1000));
        }
        Db {
            rows: Mutex::new(rows),
            counter: AtomicU64::new(1),
            latest: (0..keys).map(|_| AtomicU64::new(1)).collect(),
            history: (0..keys).map(|_| Mutex::new(vec![(1, now)])).collect(),
        }
    }

    /// One write: the next global version. Returns what to broadcast.
    fn write(&self, key: u64, payload: u64) -> Val {
        let mut rows = self.rows.lock().unwrap();
        let v = self.counter.fetch_add(1, Relaxed) + 1;
        rows.insert(key, (v, payload));
        self.latest[key as usize].store(v, Relaxed);
        self.history[key as usize]
            .lock()
            .unwrap()
            .push((v, Instant::now()));
        (v, payload)
    }

    fn read(&self, key: u64) -> Val {
        *self.rows.lock().unwrap().get(&key).unwrap()
    }

    /// When the first version newer than `v` was committed, and how many writes of the key
    /// newer than `v` and not newer than `upto` there were.
    fn superseded_at(&self, key: u64, v: u64, upto: u64) -> Option<(Instant, u64)> {
        let h = self.history[key as usize].lock().unwrap();
        let i = h.partition_point(|&(x, _)| x <= v);
        let j = h.partition_point(|&(x, _)| x <= upto);
        h.get(i).map(|&(_, t)| (t, (j - i) as u64))
    }
}

// ---------------------------------------------------------------- the bus

#[derive(Clone, Copy, Debug)]
struct Msg {
    key: u64,
    version: u64,
    value: Option<u64>,
}

/// A queued message: (due, sequence number, key, version, value).
type Due = Reverse<(Instant, u64, u64, u64, Option<u64>)>;

/// One instance's subscription: messages come out when their random delay has passed, so
/// they reorder; the bus may also duplicate and drop them.
struct Bus {
    heap: Mutex<BinaryHeap<Due>>,
    cv: Condvar,
    seq: AtomicU64,
    pending: AtomicU64,
}

impl Bus {
    fn new() -> Self {
        Bus {
            heap: Mutex::new(BinaryHeap::new()),
            cv: Condvar::new(),
            seq: AtomicU64::new(0),
            pending: AtomicU64::new(0),
        }
    }
    fn push(&self, m: Msg, delay: Duration) {
        let s = self.seq.fetch_add(1, Relaxed);
        self.pending.fetch_add(1, Relaxed);
        self.heap.lock().unwrap().push(Reverse((
            Instant::now() + delay,
            s,
            m.key,
            m.version,
            m.value,
        )));
        self.cv.notify_one();
    }
    /// The next due message, waiting at most `max`.
    fn pop(&self, max: Duration) -> Option<Msg> {
        let mut h = self.heap.lock().unwrap();
        let deadline = Instant::now() + max;
        loop {
            let now = Instant::now();
            if let Some(Reverse((at, _, key, version, value))) = h.peek().copied() {
                if at <= now {
                    h.pop();
                    return Some(Msg {
                        key,
                        version,
                        value,
                    });
                }
                let wait = at.min(deadline).saturating_duration_since(now);
                if now >= deadline {
                    return None;
                }
                h = self.cv.wait_timeout(h, wait).unwrap().0;
            } else {
                if now >= deadline {
                    return None;
                }
                h = self.cv.wait_timeout(h, deadline - now).unwrap().0;
            }
        }
    }
}

// ---------------------------------------------------------------- configuration

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Style {
    Invalidate,
    Update,
    /// Invalidate, with row versions encoded as 2n + 1 and invalidations as 2n.
    InvalidateEnc,
    /// Update only a key the instance holds; for any other, record the version with
    /// `invalidate_versioned` (emulated: `contains_key` then one of the two, not atomic).
    UpdatePresent,
}

#[derive(Clone, Debug)]
struct Scenario {
    name: &'static str,
    what: &'static str,
    style: Style,
    instances: usize,
    readers: usize,
    writers: usize,
    keys: u64,
    capacity: usize,
    max_tombstones: Option<usize>,
    ttl: Option<Duration>,
    /// Time between a loader's read of the row and its return (network, decoding).
    load_delay: Duration,
    write_pause: Duration,
    max_bus_delay: Duration,
    dup: f64,
    drop: f64,
    /// Replace instance 0's cache with an empty one when the writers stop.
    restart: bool,
    /// Load with `try_get_or_insert_versioned_with` (true) or the unversioned
    /// `try_get_or_insert_with`, whose value is cached at version 0 under the snapshot rule.
    versioned_loader: bool,
}

impl Scenario {
    fn base(name: &'static str, what: &'static str) -> Self {
        Scenario {
            name,
            what,
            style: Style::Invalidate,
            instances: 3,
            readers: 2,
            writers: 2,
            keys: 400,
            capacity: 1000,
            max_tombstones: None,
            ttl: None,
            load_delay: Duration::from_micros(200),
            write_pause: Duration::from_micros(300),
            max_bus_delay: Duration::from_millis(20),
            dup: 0.05,
            drop: 0.0,
            restart: false,
            versioned_loader: true,
        }
    }
}

fn scenarios() -> Vec<Scenario> {
    let b = Scenario::base;
    vec![
        Scenario {
            ..b("baseline", "invalidate style, everything fits, no loss")
        },
        Scenario {
            style: Style::Update,
            ..b(
                "update",
                "update-with-value style, everything fits, no loss",
            )
        },
        Scenario {
            style: Style::InvalidateEnc,
            ..b("enc", "invalidate style with versions encoded 2n / 2n+1")
        },
        Scenario {
            versioned_loader: false,
            ..b(
                "unv",
                "invalidate style, unversioned loader (cached at version 0)",
            )
        },
        Scenario {
            keys: 4000,
            capacity: 500,
            write_pause: Duration::from_millis(20),
            ..b(
                "evict",
                "few writes, cache 500 << 4000 keys (64 tombstones)",
            )
        },
        Scenario {
            keys: 4000,
            capacity: 500,
            write_pause: Duration::from_millis(20),
            versioned_loader: false,
            ..b("evict-unv", "as evict, unversioned loader")
        },
        Scenario {
            restart: true,
            ..b(
                "restart-inv",
                "instance 0 restarts empty as writes stop; invalidate style",
            )
        },
        Scenario {
            style: Style::Update,
            restart: true,
            ..b(
                "restart-upd",
                "instance 0 restarts empty as writes stop; update style",
            )
        },
        Scenario {
            style: Style::UpdatePresent,
            restart: true,
            ..b(
                "restart-upp",
                "as restart-upd, updates applied only to held keys",
            )
        },
        Scenario {
            drop: 0.02,
            ..b("missed", "2 % of messages lost, no TTL")
        },
        Scenario {
            drop: 0.02,
            ttl: Some(Duration::from_millis(300)),
            ..b("missed-ttl", "2 % of messages lost, TTL 300 ms")
        },
        Scenario {
            keys: 2000,
            capacity: 64,
            max_tombstones: Some(16),
            load_delay: Duration::from_millis(2),
            ..b(
                "pressure",
                "cache 64 << 2000 keys, 16 tombstones, 2 ms loads; invalidate style",
            )
        },
        Scenario {
            style: Style::InvalidateEnc,
            keys: 2000,
            capacity: 64,
            max_tombstones: Some(16),
            load_delay: Duration::from_millis(2),
            ..b("pressure-enc", "as pressure, versions encoded 2n / 2n+1")
        },
        Scenario {
            style: Style::Update,
            keys: 2000,
            capacity: 64,
            max_tombstones: Some(16),
            load_delay: Duration::from_millis(2),
            ..b("pressure-upd", "as pressure, update style")
        },
        Scenario {
            style: Style::UpdatePresent,
            keys: 2000,
            capacity: 64,
            max_tombstones: Some(16),
            load_delay: Duration::from_millis(2),
            ..b(
                "pressure-upp",
                "as pressure-upd, updates applied only to held keys",
            )
        },
        Scenario {
            keys: 200,
            capacity: 64,
            max_tombstones: Some(16),
            readers: 4,
            load_delay: Duration::from_millis(3),
            write_pause: Duration::from_micros(100),
            max_bus_delay: Duration::from_millis(2),
            ..b(
                "tombloss",
                "hot keys, 16 tombstones, 3 ms loads, fast bus; invalidate style",
            )
        },
        Scenario {
            keys: 200,
            capacity: 64,
            max_tombstones: Some(16),
            readers: 4,
            load_delay: Duration::from_millis(3),
            write_pause: Duration::from_micros(100),
            max_bus_delay: Duration::from_millis(2),
            versioned_loader: false,
            ..b("tombloss-unv", "as tombloss, unversioned loader")
        },
    ]
}

// ---------------------------------------------------------------- counters

#[derive(Default)]
struct Counters {
    reads: AtomicU64,
    loads: AtomicU64,
    loaded_not_cached: AtomicU64,
    stale_vs_db: AtomicU64,
    stale_age_max_us: AtomicU64,
    stale_versions_max: AtomicU64,
    /// Stale reads whose value had been superseded for longer than the bound a coherent
    /// instance keeps: the bus's largest delay + one load + 10 ms of scheduling slack.
    stale_beyond_bound: AtomicU64,
    regressions: AtomicU64,
    regression_after_restart: AtomicU64,
    sent: AtomicU64,
    dups: AtomicU64,
    dropped: AtomicU64,
    applied: AtomicU64,
    inv_removed: AtomicU64,
    inv_absent: AtomicU64,
    inv_stale: AtomicU64,
    upd_stored: AtomicU64,
    upd_stale: AtomicU64,
    upd_other: AtomicU64,
    apply_ns: AtomicU64,
}

struct Instance {
    cache: RwLock<Arc<C>>,
    bus: Bus,
    /// Bumped at a restart; readers reset what they remember of this instance.
    generation: AtomicUsize,
}

fn build(sc: &Scenario) -> C {
    let mut b = Cache::builder().max_capacity(sc.capacity).versioned();
    if let Some(t) = sc.max_tombstones {
        b = b.max_tombstones(t);
    }
    if let Some(ttl) = sc.ttl {
        b = b.time_to_live(ttl);
    }
    b.build().unwrap()
}

fn cache_version(style: Style, v: u64) -> u64 {
    match style {
        Style::InvalidateEnc => 2 * v + 1,
        _ => v,
    }
}

fn apply(style: Style, cache: &C, m: Msg, c: &Counters) {
    let t = Instant::now();
    let style = match style {
        Style::UpdatePresent if cache.contains_key(&m.key) => Style::Update,
        Style::UpdatePresent => Style::Invalidate,
        s => s,
    };
    match (style, m.value) {
        (Style::Update, Some(val)) => {
            match cache.insert_versioned(m.key, (m.version, val), m.version) {
                Ok(()) => {
                    c.upd_stored.fetch_add(1, Relaxed);
                }
                Err(e) if matches!(e.kind, InsertErrorKind::Stale { .. }) => {
                    c.upd_stale.fetch_add(1, Relaxed);
                }
                Err(_) => {
                    c.upd_other.fetch_add(1, Relaxed);
                }
            }
        }
        _ => {
            let n = match style {
                Style::InvalidateEnc => 2 * m.version,
                _ => m.version,
            };
            match cache.invalidate_versioned(m.key, n) {
                Invalidation::Removed => c.inv_removed.fetch_add(1, Relaxed),
                Invalidation::Absent => c.inv_absent.fetch_add(1, Relaxed),
                Invalidation::Stale { .. } => c.inv_stale.fetch_add(1, Relaxed),
                Invalidation::NotVersioned => unreachable!(),
            };
        }
    }
    c.apply_ns.fetch_add(t.elapsed().as_nanos() as u64, Relaxed);
    c.applied.fetch_add(1, Relaxed);
}

/// Instances whose cache returns a value older than the database's latest for the key.
fn incoherent(db: &Db, insts: &[Arc<Instance>]) -> (usize, Vec<String>) {
    let mut n = 0;
    let mut examples = Vec::new();
    for (i, inst) in insts.iter().enumerate() {
        let cache = inst.cache.read().unwrap().clone();
        for k in 0..db.latest.len() as u64 {
            let latest = db.latest[k as usize].load(Relaxed);
            if let Some((v, _)) = cache.peek(&k) {
                if v < latest {
                    n += 1;
                    if examples.len() < 4 {
                        examples.push(format!(
                            "inst {i} key {k}: cached v{v} (cache version {:?}), db v{latest}",
                            cache.version_of(&k)
                        ));
                    }
                }
            }
        }
    }
    (n, examples)
}

fn run(sc: &Scenario, secs: f64, seed: u64) {
    let db = Arc::new(Db::new(sc.keys));
    let c = Arc::new(Counters::default());
    let insts: Vec<Arc<Instance>> = (0..sc.instances)
        .map(|_| {
            Arc::new(Instance {
                cache: RwLock::new(Arc::new(build(sc))),
                bus: Bus::new(),
                generation: AtomicUsize::new(0),
            })
        })
        .collect();
    let writing = Arc::new(AtomicBool::new(true));
    let reading = Arc::new(AtomicBool::new(true));
    let applying = Arc::new(AtomicBool::new(true));
    let start = Instant::now();
    let mut handles = Vec::new();

    // Appliers.
    for inst in &insts {
        let (inst, c, applying) = (inst.clone(), c.clone(), applying.clone());
        let style = sc.style;
        handles.push(thread::spawn(move || {
            while applying.load(Relaxed) || inst.bus.pending.load(Relaxed) > 0 {
                if let Some(m) = inst.bus.pop(Duration::from_millis(5)) {
                    let cache = inst.cache.read().unwrap().clone();
                    apply(style, &cache, m, &c);
                    inst.bus.pending.fetch_sub(1, Relaxed);
                }
            }
        }));
    }

    // Readers.
    let mut reader_handles = Vec::new();
    for (i, inst) in insts.iter().enumerate() {
        for r in 0..sc.readers {
            let (inst, c, db, reading) = (inst.clone(), c.clone(), db.clone(), reading.clone());
            let sc = sc.clone();
            let mut rng =
                Rng::new(seed ^ ((i * 100 + r) as u64 + 1).wrapping_mul(0x1234_5678_9abc));
            reader_handles.push(thread::spawn(move || {
                let mut seen: HashMap<u64, u64> = HashMap::new();
                let mut gen = 0;
                let mut restarted = false;
                while reading.load(Relaxed) {
                    let g = inst.generation.load(Relaxed);
                    if g != gen {
                        // A new process: it remembers nothing of what the old one read.
                        gen = g;
                        seen.clear();
                        restarted = true;
                    }
                    let cache = inst.cache.read().unwrap().clone();
                    let k = rng.key(sc.keys);
                    let before = db.latest[k as usize].load(Relaxed);
                    let mut ran = false;
                    let (v, _) = if sc.versioned_loader {
                        cache
                            .try_get_or_insert_versioned_with(k, || {
                                ran = true;
                                let row = db.read(k);
                                thread::sleep(sc.load_delay);
                                Ok::<_, ()>((row, cache_version(sc.style, row.0)))
                            })
                            .unwrap()
                    } else {
                        cache
                            .try_get_or_insert_with(k, || {
                                ran = true;
                                let row = db.read(k);
                                thread::sleep(sc.load_delay);
                                Ok::<_, ()>(row)
                            })
                            .unwrap()
                    };
                    let done = Instant::now();
                    c.reads.fetch_add(1, Relaxed);
                    if ran {
                        c.loads.fetch_add(1, Relaxed);
                        if cache.version_of(&k).is_none() {
                            c.loaded_not_cached.fetch_add(1, Relaxed);
                        }
                    }
                    if v < before {
                        c.stale_vs_db.fetch_add(1, Relaxed);
                        if let Some((t, behind)) = db.superseded_at(k, v, before) {
                            c.stale_versions_max.fetch_max(behind, Relaxed);
                            let age = done.saturating_duration_since(t);
                            c.stale_age_max_us
                                .fetch_max(age.as_micros() as u64, Relaxed);
                            let bound =
                                sc.max_bus_delay + sc.load_delay + Duration::from_millis(10);
                            if age > bound {
                                c.stale_beyond_bound.fetch_add(1, Relaxed);
                            }
                        }
                    }
                    let m = seen.entry(k).or_insert(0);
                    if v < *m {
                        c.regressions.fetch_add(1, Relaxed);
                        if restarted {
                            c.regression_after_restart.fetch_add(1, Relaxed);
                        }
                    }
                    *m = (*m).max(v);
                    // A service does other work between reads.
                    thread::sleep(Duration::from_micros(50));
                }
            }));
        }
    }

    // Writers.
    let mut writer_handles = Vec::new();
    for w in 0..sc.writers {
        let (insts, c, db, writing) = (insts.clone(), c.clone(), db.clone(), writing.clone());
        let sc = sc.clone();
        let mut rng = Rng::new(seed ^ (w as u64 + 7).wrapping_mul(0xdead_beef_1234));
        writer_handles.push(thread::spawn(move || {
            while writing.load(Relaxed) {
                let k = rng.key(sc.keys);
                let payload = rng.next_u64();
                let (v, p) = db.write(k, payload);
                let value = matches!(sc.style, Style::Update | Style::UpdatePresent).then(|| p);
                for inst in &insts {
                    let m = Msg {
                        key: k,
                        version: v,
                        value,
                    };
                    c.sent.fetch_add(1, Relaxed);
                    if rng.chance(sc.drop) {
                        c.dropped.fetch_add(1, Relaxed);
                        continue;
                    }
                    let max = sc.max_bus_delay.as_micros() as u64;
                    inst.bus.push(m, Duration::from_micros(rng.below(max + 1)));
                    if rng.chance(sc.dup) {
                        c.dups.fetch_add(1, Relaxed);
                        inst.bus
                            .push(m, Duration::from_micros(rng.below(3 * max + 1)));
                    }
                }
                thread::sleep(sc.write_pause);
            }
        }));
    }

    thread::sleep(Duration::from_secs_f64(secs));
    writing.store(false, Relaxed);
    for h in writer_handles {
        h.join().unwrap();
    }
    if sc.restart {
        *insts[0].cache.write().unwrap() = Arc::new(build(sc));
        insts[0].generation.fetch_add(1, Relaxed);
    }
    // Drain the buses while the readers go on.
    while insts.iter().any(|i| i.bus.pending.load(Relaxed) > 0) {
        thread::sleep(Duration::from_millis(2));
    }
    let drained = start.elapsed();
    // Let readers run a little longer over the quiet database.
    thread::sleep(Duration::from_millis(100));
    reading.store(false, Relaxed);
    for h in reader_handles {
        h.join().unwrap();
    }
    applying.store(false, Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    let (bad, examples) = incoherent(&db, &insts);
    let after_ttl = sc.ttl.map(|ttl| {
        thread::sleep(ttl + Duration::from_millis(50));
        incoherent(&db, &insts).0
    });

    let g = |a: &AtomicU64| a.load(Relaxed);
    let reads = g(&c.reads).max(1);
    println!("== {} ({})", sc.name, sc.what);
    println!(
        "   writes {} over {:.1}s (drained at {:.2}s); messages sent {}, +{} duplicates, {} dropped",
        db.counter.load(Relaxed) - 1,
        secs,
        drained.as_secs_f64(),
        g(&c.sent),
        g(&c.dups),
        g(&c.dropped)
    );
    println!(
        "   reads {}  loads {} (hit ratio {:.1} %)  loaded but not cached right after: {} ({:.1} % of loads)",
        reads,
        g(&c.loads),
        100.0 * (1.0 - g(&c.loads) as f64 / reads as f64),
        g(&c.loaded_not_cached),
        100.0 * g(&c.loaded_not_cached) as f64 / g(&c.loads).max(1) as f64
    );
    println!(
        "   reads older than the db when they began: {} ({:.2} %), at most {} writes of the key behind, superseded at most {:.1} ms before; beyond the bound ({} ms): {}",
        g(&c.stale_vs_db),
        100.0 * g(&c.stale_vs_db) as f64 / reads as f64,
        g(&c.stale_versions_max),
        g(&c.stale_age_max_us) as f64 / 1000.0,
        (sc.max_bus_delay + sc.load_delay + Duration::from_millis(10)).as_millis(),
        g(&c.stale_beyond_bound)
    );
    println!(
        "   per-reader regressions (older than already seen): {} ({} after the restart)",
        g(&c.regressions),
        g(&c.regression_after_restart)
    );
    println!(
        "   applied {} (avg {:.2} us): invalidations removed {} absent {} stale {}; updates stored {} stale {} other {}",
        g(&c.applied),
        g(&c.apply_ns) as f64 / g(&c.applied).max(1) as f64 / 1000.0,
        g(&c.inv_removed),
        g(&c.inv_absent),
        g(&c.inv_stale),
        g(&c.upd_stored),
        g(&c.upd_stale),
        g(&c.upd_other)
    );
    let tombs: Vec<usize> = insts
        .iter()
        .map(|i| i.cache.read().unwrap().tombstones())
        .collect();
    println!("   tombstones held at the end: {tombs:?}");
    match after_ttl {
        Some(a) => {
            println!("   COHERENCE after drain: {bad} stale entries; after one more TTL: {a}")
        }
        None => println!("   COHERENCE after drain: {bad} stale entries (no TTL: they stay)"),
    }
    for e in examples {
        println!("     {e}");
    }
}

fn main() {
    let mut secs = 2.0;
    let mut seed = 1;
    let mut names = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--secs" => secs = args.next().unwrap().parse().unwrap(),
            "--seed" => seed = args.next().unwrap().parse().unwrap(),
            _ => names.push(a),
        }
    }
    for sc in scenarios() {
        if names.is_empty() || names.iter().any(|n| n == sc.name) {
            run(&sc, secs, seed);
        }
    }
}
