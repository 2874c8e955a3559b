//! A dry run of clockline as a byte-bounded blob cache, as a storage service would use it:
//! `Cache<u64, Blob>` bounded by `max_weight` only (a weigher of key + bytes, no
//! `max_capacity`, so the table grows from 1024 entries), a TTL with some per-entry TTLs, a
//! `janitor`, an eviction listener that keeps a byte metric and sometimes calls back into the
//! cache (`get` and `insert` of another key, through a `Weak`), reader threads (`get`,
//! `Pinned::get`), writer threads (`insert`, `insert_with_ttl`, `remove`, `Pinned::remove`,
//! entries heavier than the budget), a scanner that walks every entry through `pin().iter()`
//! while the table grows, and a chaos thread (`clear`, `purge_expired`).
//!
//! Checked (each violation printed; exit status 1 if any):
//! * `weight() <= max_weight` and `len() <= capacity()` at every sample (sampler thread);
//! * iteration: every value's checksum and key, no entry (serial) twice in one pass, the bytes
//!   a pass sees (reported against `max_weight`: the docs give no bound for a pass);
//! * listener: every stored blob reported exactly once (or still cached at the end: the run
//!   ends with a `clear`), causes consistent (`Cleared` only during a `clear`, `Expired` only
//!   after the blob's TTL, `Explicit` only for removed serials, ...), byte metric == `weight()`
//!   once quiescent; per-cause counts == statistics;
//! * `TooHeavy` for every entry over the budget; `Rejected` counted;
//! * no hang (watchdog: no progress for 20 s aborts), also for a loop of short-lived caches
//!   with a 1 ms janitor and a re-entrant listener;
//! * memory: after the cache is dropped and `flush_deferred` loops, every blob instance was
//!   dropped exactly once (per-serial drop counters; clones counted apart);
//! * statistics: hits + misses == gets made, inserts + updates == successful inserts, causes.
//!
//! `cargo run --release --example blob_sim [-- --secs N] [--writers N] [--readers N]
//!  [--max-mib N] [--keys N] [--seed N] [--clock-policy 1] [--small 1] [--scan 0]
//!  [--clear-every N (x 100 ms, 0: never)]`

use std::cell::Cell;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, AtomicUsize, Ordering::*};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use clockline::{Cache, InsertErrorKind, Policy, RemovalCause};

const MAX_SERIALS: usize = 40_000_000;

// ---------- blobs with identity, checksum and drop accounting ----------

static SERIAL: AtomicU64 = AtomicU64::new(1);
static CLONES_MADE: AtomicU64 = AtomicU64::new(0);
static CLONES_DROPPED: AtomicU64 = AtomicU64::new(0);
static BYTES_ALIVE: AtomicI64 = AtomicI64::new(0);

struct Track {
    /// Drops of the original instance, per serial.
    dropped: Vec<AtomicU8>,
    /// Listener reports, per serial.
    reported: Vec<AtomicU8>,
    /// 1: the insert returned Ok.  2: refused.  4: removed by the user (remove returned it).
    state: Vec<AtomicU8>,
    /// ms since start when created; ttl ms (0 = default)
    born_ms: Vec<AtomicU64>,
}

static TRACK: OnceLock<Track> = OnceLock::new();
fn track() -> &'static Track {
    TRACK.get_or_init(|| {
        let v = |n| (0..n).map(|_| AtomicU8::new(0)).collect::<Vec<_>>();
        Track {
            dropped: v(MAX_SERIALS),
            reported: v(MAX_SERIALS),
            state: v(MAX_SERIALS),
            born_ms: (0..MAX_SERIALS).map(|_| AtomicU64::new(0)).collect(),
        }
    })
}

static START: OnceLock<Instant> = OnceLock::new();
fn now_ms() -> u64 {
    START.get().unwrap().elapsed().as_millis() as u64
}

struct Blob {
    key: u64,
    serial: u64,
    clone: bool,
    sum: u64,
    data: Vec<u8>,
}

fn fill(serial: u64, len: usize) -> Vec<u8> {
    let mut x = serial.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut d = Vec::with_capacity(len);
    while d.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        let take = (len - d.len()).min(8);
        d.extend_from_slice(&b[..take]);
    }
    d
}

fn checksum(d: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let mut chunks = d.chunks_exact(8);
    for c in &mut chunks {
        h = (h ^ u64::from_le_bytes(c.try_into().unwrap())).wrapping_mul(0x100_0000_01b3);
    }
    for &b in chunks.remainder() {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    h
}

impl Blob {
    fn new(key: u64, len: usize) -> Self {
        Self::new_counted(key, len, true)
    }
    /// `counted: false`: a buffer that is never stored (over the budget), kept out of the
    /// byte figures and counted with the clones.
    fn new_counted(key: u64, len: usize, counted: bool) -> Self {
        let serial = SERIAL.fetch_add(1, Relaxed);
        assert!((serial as usize) < MAX_SERIALS, "out of serials");
        track().born_ms[serial as usize].store(now_ms(), Relaxed);
        let data = fill(serial, len);
        if counted {
            BYTES_ALIVE.fetch_add(len as i64, Relaxed);
        } else {
            CLONES_MADE.fetch_add(1, Relaxed);
            track().dropped[serial as usize].store(1, Relaxed);
        }
        Blob {
            key,
            serial,
            clone: !counted,
            sum: checksum(&data),
            data,
        }
    }
    /// Cheap check: the first and last bytes against the generator.
    fn check_ends(&self, key: u64) -> Result<(), String> {
        if self.key != key {
            return Err(format!("value of key {} under key {key}", self.key));
        }
        let n = self.data.len().min(16);
        let head = fill(self.serial, n);
        if self.data[..n] != head[..] {
            return Err(format!("torn head of serial {}", self.serial));
        }
        Ok(())
    }
    fn check_full(&self, key: u64) -> Result<(), String> {
        self.check_ends(key)?;
        if checksum(&self.data) != self.sum {
            return Err(format!("bad checksum of serial {}", self.serial));
        }
        Ok(())
    }
}

impl Clone for Blob {
    fn clone(&self) -> Self {
        CLONES_MADE.fetch_add(1, Relaxed);
        Blob {
            key: self.key,
            serial: self.serial,
            clone: true,
            sum: self.sum,
            data: self.data.clone(),
        }
    }
}

impl Drop for Blob {
    fn drop(&mut self) {
        if self.clone {
            CLONES_DROPPED.fetch_add(1, Relaxed);
        } else {
            BYTES_ALIVE.fetch_sub(self.data.len() as i64, Relaxed);
            let before = track().dropped[self.serial as usize].fetch_add(1, Relaxed);
            if before != 0 {
                violation(format!("serial {} dropped twice", self.serial));
            }
        }
    }
}

// ---------- violations ----------

static EARLY_MAX: AtomicU64 = AtomicU64::new(0);
static EARLY_N: AtomicU64 = AtomicU64::new(0);
static SMALL: AtomicBool = AtomicBool::new(false);
static PAUSE: AtomicBool = AtomicBool::new(false);
static INSERT_MAX_US: AtomicU64 = AtomicU64::new(0);
static INSERT_SLOW: AtomicU64 = AtomicU64::new(0);
static OVERHANG_MAX: AtomicI64 = AtomicI64::new(0);
static VIOLATIONS: AtomicUsize = AtomicUsize::new(0);
static VIOL_LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());
fn violation(msg: String) {
    let n = VIOLATIONS.fetch_add(1, Relaxed);
    if n < 30 {
        eprintln!("VIOLATION: {msg}");
        VIOL_LOG.lock().unwrap().push(msg);
    }
}

// ---------- rng ----------

#[path = "../benches/common/mod.rs"]
#[allow(dead_code)]
mod common;
use common::SplitMix64 as Rng;

fn blob_len(r: &mut Rng) -> usize {
    if SMALL.load(Relaxed) {
        // Mostly small blobs, so the table must grow far.
        return match r.below(10000) {
            0..=9994 => 100 + r.below(200) as usize,
            _ => 4096 + r.below(1 << 20) as usize - 4096,
        };
    }
    match r.below(1000) {
        0..=899 => 100 + r.below(4 * 1024) as usize,
        900..=989 => 4096 + r.below(124 * 1024) as usize,
        _ => 128 * 1024 + r.below(896 * 1024) as usize,
    }
}

// ---------- counters ----------

#[derive(Default)]
struct Counts {
    gets: AtomicU64,
    ok_inserts: AtomicU64,
    too_heavy: AtomicU64,
    too_heavy_expected: AtomicU64,
    rejected: AtomicU64,
    rejected_weight: AtomicU64,
    by_cause: [AtomicU64; 5],
    metric: AtomicI64,
    clears_in_flight: AtomicUsize,
    listener_gets: AtomicU64,
    listener_inserts: AtomicU64,
    progress: AtomicU64,
    removes_hit: AtomicU64,
    scans: AtomicU64,
    max_scan_bytes: AtomicU64,
    dup_keys_in_pass: AtomicU64,
    max_capacity_seen: AtomicUsize,
    growths_seen: AtomicUsize,
    samples: AtomicU64,
}

fn cause_ix(c: RemovalCause) -> usize {
    match c {
        RemovalCause::Capacity => 0,
        RemovalCause::Expired => 1,
        RemovalCause::Explicit => 2,
        RemovalCause::Replaced => 3,
        RemovalCause::Cleared => 4,
        _ => unreachable!(),
    }
}

type BlobCache = Cache<u64, Blob>;

thread_local! {
    static IN_LISTENER: Cell<u32> = const { Cell::new(0) };
}

fn weigh(_k: &u64, v: &Blob) -> u64 {
    8 + v.data.len() as u64
}

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().unwrap())
        .unwrap_or(default)
}

const TTL_MS: u64 = 1500;
const SHORT_TTL_MS: u64 = 150;

fn main() {
    START.get_or_init(Instant::now);
    track();
    let args: Vec<String> = std::env::args().collect();
    let secs = arg(&args, "--secs", 6);
    let writers = arg(&args, "--writers", 4) as usize;
    let readers = arg(&args, "--readers", 3) as usize;
    let max_weight = arg(&args, "--max-mib", 32) << 20;
    let keys = arg(&args, "--keys", 400_000);
    let seed = arg(&args, "--seed", 1);
    let clock_policy = arg(&args, "--clock-policy", 0) == 1;
    SMALL.store(arg(&args, "--small", 0) == 1, Relaxed);
    let scan = arg(&args, "--scan", 1) == 1;
    let clear_every = arg(&args, "--clear-every", 15);

    let counts: Arc<Counts> = Arc::default();
    let slot: Arc<OnceLock<Weak<BlobCache>>> = Arc::default();
    let c2 = counts.clone();
    let s2 = slot.clone();
    let mut b = Cache::builder()
        .max_weight(max_weight)
        .weigher(weigh)
        .time_to_live(Duration::from_millis(TTL_MS))
        .janitor(Duration::from_millis(50))
        .record_stats()
        .eviction_listener(move |k: &u64, v: &Blob, cause| {
            listener(&c2, &s2, *k, v, cause, keys);
        });
    if clock_policy {
        b = b.policy(Policy::Clock);
    }
    let cache: Arc<BlobCache> = Arc::new(b.build().unwrap());
    slot.set(Arc::downgrade(&cache)).ok().unwrap();
    println!(
        "built: max_weight {} MiB, capacity() at start {}, policy {}",
        max_weight >> 20,
        cache.capacity(),
        if clock_policy { "clock" } else { "adaptive" }
    );

    let stop = Arc::new(AtomicBool::new(false));
    // Watchdog.
    {
        let counts = counts.clone();
        std::thread::spawn(move || {
            let mut last = 0;
            let mut still = 0;
            loop {
                std::thread::sleep(Duration::from_secs(1));
                let p = counts.progress.load(Relaxed);
                if p == last {
                    still += 1;
                    if still >= 20 {
                        eprintln!("HANG: no progress for 20 s");
                        std::process::exit(3);
                    }
                } else {
                    still = 0;
                    last = p;
                }
            }
        });
    }

    let t0 = Instant::now();
    let mut hs = Vec::new();
    // Writers.
    for w in 0..writers {
        let (cache, counts, stop) = (cache.clone(), counts.clone(), stop.clone());
        hs.push(std::thread::spawn(move || {
            let mut r = Rng::new(seed.wrapping_mul(77) + w as u64 * 1_000_003 + 12345);
            while !stop.load(Relaxed) {
                counts.progress.fetch_add(1, Relaxed);
                if PAUSE.load(Relaxed) {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                let k = skewed_key(&mut r, keys);
                let op = r.below(1000);
                if op < 850 {
                    insert(&cache, &counts, &mut r, k, max_weight);
                } else if op < 900 {
                    let p = cache.pin();
                    if let Some(v) = p.remove(&k) {
                        if let Err(e) = v.check_full(k) {
                            violation(format!("pinned remove: {e}"));
                        }
                        track().state[v.serial as usize].fetch_or(4, Relaxed);
                        counts.removes_hit.fetch_add(1, Relaxed);
                    }
                } else if op < 910 {
                    if let Some(v) = cache.remove(&k) {
                        if let Err(e) = v.check_full(k) {
                            violation(format!("remove: {e}"));
                        }
                        track().state[v.serial as usize].fetch_or(4, Relaxed);
                        counts.removes_hit.fetch_add(1, Relaxed);
                    }
                } else if op < 912 {
                    // Over the budget: must be TooHeavy.
                    // Not counted as a live blob: a refused 32 MiB buffer would drown the
                    // memory figures (it is counted with the clones instead).
                    let v = Blob::new_counted(k, max_weight as usize, false);
                    let s = v.serial;
                    counts.too_heavy_expected.fetch_add(1, Relaxed);
                    match cache.insert(k, v) {
                        Err(e) if matches!(e.kind, InsertErrorKind::TooHeavy { .. }) => {
                            counts.too_heavy.fetch_add(1, Relaxed);
                            track().state[s as usize].fetch_or(2, Relaxed);
                        }
                        other => violation(format!(
                            "oversize insert gave {:?}",
                            other.map_err(|e| e.kind)
                        )),
                    }
                } else {
                    let p = cache.pin();
                    counts.gets.fetch_add(1, Relaxed);
                    if let Some(v) = p.get(&k) {
                        if let Err(e) = v.check_ends(k) {
                            violation(format!("writer pinned get: {e}"));
                        }
                    }
                }
            }
            clockline::flush_deferred();
        }));
    }
    // Readers.
    for rd in 0..readers {
        let (cache, counts, stop) = (cache.clone(), counts.clone(), stop.clone());
        hs.push(std::thread::spawn(move || {
            let mut r = Rng::new(seed.wrapping_mul(91) + rd as u64 * 7_000_003 + 999);
            while !stop.load(Relaxed) {
                counts.progress.fetch_add(1, Relaxed);
                if PAUSE.load(Relaxed) {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                let p = cache.pin();
                for _ in 0..32 {
                    let k = skewed_key(&mut r, keys);
                    counts.gets.fetch_add(1, Relaxed);
                    if let Some(v) = p.get(&k) {
                        if let Err(e) = v.check_ends(k) {
                            violation(format!("reader pinned get: {e}"));
                        }
                        if r.below(64) == 0 {
                            if let Err(e) = v.check_full(k) {
                                violation(format!("reader pinned get full: {e}"));
                            }
                        }
                    }
                }
                drop(p);
                let k = skewed_key(&mut r, keys);
                if r.below(16) == 0 {
                    counts.gets.fetch_add(1, Relaxed);
                    if let Some(v) = cache.get(&k) {
                        if let Err(e) = v.check_full(k) {
                            violation(format!("reader get: {e}"));
                        }
                    }
                } else {
                    let _ = cache.contains_key(&k);
                }
            }
        }));
    }
    // Scanner.
    if scan {
        let (cache, counts, stop) = (cache.clone(), counts.clone(), stop.clone());
        hs.push(std::thread::spawn(move || {
            let mut serials = HashSet::new();
            let mut keyset = HashSet::new();
            while !stop.load(Relaxed) {
                counts.progress.fetch_add(1, Relaxed);
                serials.clear();
                keyset.clear();
                let p = cache.pin();
                let mut bytes = 0u64;
                for (k, v) in p.iter() {
                    if let Err(e) = v.check_full(*k) {
                        violation(format!("iter: {e}"));
                    }
                    if !serials.insert(v.serial) {
                        violation(format!(
                            "iter: serial {} (key {k}) twice in one pass",
                            v.serial
                        ));
                    }
                    if !keyset.insert(*k) {
                        counts.dup_keys_in_pass.fetch_add(1, Relaxed);
                    }
                    bytes += weigh(k, v);
                }
                drop(p);
                counts.max_scan_bytes.fetch_max(bytes, Relaxed);
                counts.scans.fetch_add(1, Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        }));
    }
    // Sampler.
    {
        let (cache, counts, stop) = (cache.clone(), counts.clone(), stop.clone());
        hs.push(std::thread::spawn(move || {
            let mut cap_prev = cache.capacity();
            while !stop.load(Relaxed) {
                for _ in 0..1000 {
                    let w = cache.weight();
                    OVERHANG_MAX.fetch_max(BYTES_ALIVE.load(Relaxed) - w as i64, Relaxed);
                    if w > max_weight {
                        violation(format!("weight {w} > max_weight {max_weight}"));
                    }
                    let len = cache.len();
                    let cap = cache.capacity();
                    if len > cap {
                        violation(format!("len {len} > capacity {cap}"));
                    }
                    if cap != cap_prev {
                        counts.growths_seen.fetch_add(1, Relaxed);
                        cap_prev = cap;
                    }
                    counts.max_capacity_seen.fetch_max(cap, Relaxed);
                    counts.samples.fetch_add(1, Relaxed);
                }
                std::thread::yield_now();
            }
        }));
    }
    // Chaos: clear and purge_expired under load.
    {
        let (cache, counts, stop) = (cache.clone(), counts.clone(), stop.clone());
        hs.push(std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                i += 1;
                if clear_every > 0 && i % clear_every == 0 {
                    counts.clears_in_flight.fetch_add(1, SeqCst);
                    cache.clear();
                    counts.clears_in_flight.fetch_sub(1, SeqCst);
                } else {
                    cache.purge_expired();
                }
            }
        }));
    }

    let mut last_print = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(100));
        if last_print.elapsed() > Duration::from_secs(1) {
            last_print = Instant::now();
            println!(
                "  t={:.1}s len {} cap {} weight {:.1} MiB, ok inserts {}, scans {}",
                t0.elapsed().as_secs_f64(),
                cache.len(),
                cache.capacity(),
                cache.weight() as f64 / 1048576.0,
                counts.ok_inserts.load(Relaxed),
                counts.scans.load(Relaxed)
            );
        }
    }
    // Idle: readers and writers stop working but stay alive (a service between bursts).
    PAUSE.store(true, SeqCst);
    std::thread::sleep(Duration::from_millis(300));
    let idle_alive = BYTES_ALIVE.load(SeqCst);
    let idle_weight = cache.weight();
    println!(
        "idle service: blob bytes alive {:.1} MiB against weight() {:.1} MiB (retired values waiting in epoch bags)",
        idle_alive as f64 / 1048576.0,
        idle_weight as f64 / 1048576.0
    );
    stop.store(true, Relaxed);
    for h in hs {
        h.join().unwrap();
    }
    let run_s = t0.elapsed().as_secs_f64();

    // ----- quiescent checks -----
    // The janitor may still be sweeping: wait until the metric settles against weight().
    let settle = Instant::now();
    loop {
        let m = counts.metric.load(SeqCst);
        let w = cache.weight() as i64;
        if m == w || settle.elapsed() > Duration::from_secs(2) {
            if m != w {
                violation(format!(
                    "quiescent: listener byte metric {m} != weight() {w}"
                ));
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    match cache.check_invariants() {
        Ok(n) => println!("check_invariants: ok ({n} entries)"),
        Err(e) => violation(format!("check_invariants: {e}")),
    }
    let len_before_clear = cache.len();
    let weight_before_clear = cache.weight();
    let live_bytes_in_values = BYTES_ALIVE.load(SeqCst);
    println!(
        "quiescent: len {len_before_clear}, weight {:.1} MiB, blob bytes alive (cached + retired, not yet freed) {:.1} MiB",
        weight_before_clear as f64 / 1048576.0,
        live_bytes_in_values as f64 / 1048576.0
    );
    let st_pre = cache.stats().unwrap();
    counts.clears_in_flight.fetch_add(1, SeqCst);
    cache.clear();
    counts.clears_in_flight.fetch_sub(1, SeqCst);
    if !cache.is_empty() || cache.weight() != 0 {
        violation(format!(
            "after clear: len {} weight {}",
            cache.len(),
            cache.weight()
        ));
    }
    if counts.metric.load(SeqCst) != 0 {
        violation(format!(
            "after clear: metric {}",
            counts.metric.load(SeqCst)
        ));
    }
    let st = cache.stats().unwrap();
    let by = |c: usize| counts.by_cause[c].load(SeqCst);
    let ok = counts.ok_inserts.load(SeqCst);
    let _ = st_pre;
    // Statistics add up.
    let gets = counts.gets.load(SeqCst) + counts.listener_gets.load(SeqCst);
    if st.hits + st.misses != gets {
        violation(format!(
            "stats: hits {} + misses {} != gets {gets}",
            st.hits, st.misses
        ));
    }
    if st.inserts + st.updates != ok {
        violation(format!(
            "stats: inserts {} + updates {} != ok inserts {ok}",
            st.inserts, st.updates
        ));
    }
    for (name, s, c) in [
        ("evictions", st.evictions, 0),
        ("expirations", st.expirations, 1),
        ("removals", st.removals, 2),
        ("replacements", st.replacements, 3),
        ("cleared", st.cleared, 4),
    ] {
        if s != by(c) {
            violation(format!("stats: {name} {s} != listener's {}", by(c)));
        }
    }
    let reports: u64 = (0..5).map(by).sum();
    if reports != ok {
        violation(format!(
            "listener reports {reports} != ok inserts {ok} (cache now empty)"
        ));
    }
    // Per serial: every Ok-inserted one reported exactly once.
    let nser = SERIAL.load(SeqCst) as usize;
    let t = track();
    let (mut unreported, mut multi, mut reported_not_stored) = (0, 0, 0);
    for s in 1..nser {
        let st = t.state[s].load(SeqCst);
        let r = t.reported[s].load(SeqCst);
        if st & 1 != 0 {
            if r == 0 {
                unreported += 1;
                if unreported < 5 {
                    violation(format!("serial {s} stored but never reported"));
                }
            } else if r > 1 {
                multi += 1;
            }
        } else if r != 0 {
            reported_not_stored += 1;
        }
    }
    if unreported + multi + reported_not_stored > 0 {
        violation(format!(
            "listener exactly-once: {unreported} unreported, {multi} reported more than once, {reported_not_stored} reported but never stored"
        ));
    }

    // Memory: drop the cache, flush, every original blob dropped exactly once.
    let weak = Arc::downgrade(&cache);
    drop(cache);
    if weak.upgrade().is_some() {
        violation("cache still alive after the last Arc".into());
    }
    let flush_start = Instant::now();
    let mut not_dropped;
    loop {
        clockline::flush_deferred();
        // Pin a few times so the global epoch advances and bags get collected.
        for _ in 0..256 {
            let _ = SERIAL.load(Relaxed);
            clockline::flush_deferred();
        }
        not_dropped = (1..nser)
            .filter(|&s| t.dropped[s].load(SeqCst) == 0)
            .count();
        if not_dropped == 0 || flush_start.elapsed() > Duration::from_secs(5) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let flush_ms = flush_start.elapsed().as_millis();
    if not_dropped > 0 {
        violation(format!(
            "{not_dropped} blobs never dropped after 5 s of flush_deferred"
        ));
    }
    if CLONES_MADE.load(SeqCst) != CLONES_DROPPED.load(SeqCst) {
        violation(format!(
            "clones made {} dropped {}",
            CLONES_MADE.load(SeqCst),
            CLONES_DROPPED.load(SeqCst)
        ));
    }

    // Janitor vs drop, re-entrant listener, many short-lived caches.
    let jt = Instant::now();
    let mut janitor_rounds = 0;
    while jt.elapsed() < Duration::from_millis(1500) {
        janitor_drop_round(janitor_rounds);
        janitor_rounds += 1;
    }

    let probe = growth_probe();
    println!("\n== blob_sim results ({run_s:.1} s, {writers} writers, {readers} readers, 1 scanner, 1 sampler, 1 chaos, janitor) ==");
    println!(
        "ok inserts {ok}, TooHeavy {}/{} expected, Rejected {} (avg weight {:.0} B)",
        counts.too_heavy.load(SeqCst),
        counts.too_heavy_expected.load(SeqCst),
        counts.rejected.load(SeqCst),
        counts.rejected_weight.load(SeqCst) as f64 / counts.rejected.load(SeqCst).max(1) as f64
    );
    println!("listener causes: capacity {} expired {} explicit {} replaced {} cleared {}; listener re-entrant gets {} inserts {}",
        by(0), by(1), by(2), by(3), by(4), counts.listener_gets.load(SeqCst), counts.listener_inserts.load(SeqCst));
    println!("stats: {:?}", st);
    println!(
        "gets {gets}, removes that hit {}",
        counts.removes_hit.load(SeqCst)
    );
    println!(
        "scans {}, max bytes seen by one pass {:.2} MiB = {:.3} x max_weight, duplicate keys within a pass (re-inserted) {}",
        counts.scans.load(SeqCst),
        counts.max_scan_bytes.load(SeqCst) as f64 / 1048576.0,
        counts.max_scan_bytes.load(SeqCst) as f64 / max_weight as f64,
        counts.dup_keys_in_pass.load(SeqCst)
    );
    println!(
        "sampler: {} samples, capacity grew {} times to {} entries",
        counts.samples.load(SeqCst),
        counts.growths_seen.load(SeqCst),
        counts.max_capacity_seen.load(SeqCst)
    );
    println!("memory: {nser} blobs made, all dropped after {flush_ms} ms of flush_deferred; {not_dropped} not dropped");
    println!("janitor/drop rounds: {janitor_rounds}");
    println!(
        "insert latency: max {} us, {} inserts over 1 ms; blob bytes alive beyond weight(): at most {:.1} MiB during the run",
        INSERT_MAX_US.load(SeqCst),
        INSERT_SLOW.load(SeqCst),
        OVERHANG_MAX.load(SeqCst) as f64 / 1048576.0
    );
    println!(
        "expired before TTL in real time (documented tick lag): {} entries, at most {} ms early",
        EARLY_N.load(SeqCst),
        EARLY_MAX.load(SeqCst)
    );
    println!("growth probe (1 thread, 2^21 blobs of 100 B, no eviction): {probe}");
    let v = VIOLATIONS.load(SeqCst);
    println!("VIOLATIONS: {v}");
    for m in VIOL_LOG.lock().unwrap().iter() {
        println!("  {m}");
    }
    std::process::exit(if v == 0 { 0 } else { 1 });
}

fn skewed_key(r: &mut Rng, keys: u64) -> u64 {
    // Half the traffic on 1/16 of the keys.
    if r.below(2) == 0 {
        r.below(keys / 16)
    } else {
        r.below(keys)
    }
}

fn insert(cache: &BlobCache, counts: &Counts, r: &mut Rng, k: u64, max_weight: u64) {
    let len = blob_len(r);
    let v = Blob::new(k, len);
    let s = v.serial as usize;
    let w = 8 + len as u64;
    let short = r.below(8) == 0;
    if short {
        track().born_ms[s].fetch_or(1 << 63, Relaxed);
    }
    let t = Instant::now();
    let res = if short {
        cache.insert_with_ttl(k, v, Duration::from_millis(SHORT_TTL_MS))
    } else {
        cache.insert(k, v)
    };
    let us = t.elapsed().as_micros() as u64;
    INSERT_MAX_US.fetch_max(us, Relaxed);
    if us > 1000 {
        INSERT_SLOW.fetch_add(1, Relaxed);
    }
    match res {
        Ok(()) => {
            track().state[s].fetch_or(1, Relaxed);
            counts.metric.fetch_add(w as i64, SeqCst);
            counts.ok_inserts.fetch_add(1, SeqCst);
        }
        Err(e) => {
            track().state[s].fetch_or(2, Relaxed);
            match e.kind {
                InsertErrorKind::Rejected { weight } => {
                    counts.rejected.fetch_add(1, Relaxed);
                    counts.rejected_weight.fetch_add(weight, Relaxed);
                    if weight != w {
                        violation(format!(
                            "Rejected reports weight {weight}, weigher said {w}"
                        ));
                    }
                }
                InsertErrorKind::TooHeavy { .. } if w > max_weight => {}
                other => violation(format!("insert of {w} B refused: {other:?}")),
            }
        }
    }
}

fn listener(
    counts: &Counts,
    slot: &OnceLock<Weak<BlobCache>>,
    k: u64,
    v: &Blob,
    cause: RemovalCause,
    keys: u64,
) {
    counts.progress.fetch_add(1, Relaxed);
    counts.by_cause[cause_ix(cause)].fetch_add(1, SeqCst);
    counts.metric.fetch_sub(weigh(&k, v) as i64, SeqCst);
    let t = track();
    let s = v.serial as usize;
    if v.clone {
        violation(format!("listener got a clone (serial {s})"));
    }
    if let Err(e) = v.check_full(k) {
        violation(format!("listener value: {e}"));
    }
    let before = t.reported[s].fetch_add(1, SeqCst);
    if before != 0 {
        violation(format!("serial {s} reported twice (second: {cause:?})"));
    }
    match cause {
        RemovalCause::Cleared if counts.clears_in_flight.load(SeqCst) == 0 => {
            violation(format!("Cleared outside clear (serial {s})"));
        }
        RemovalCause::Expired => {
            let b = t.born_ms[s].load(Relaxed);
            let ttl = if b & (1 << 63) != 0 {
                SHORT_TTL_MS
            } else {
                TTL_MS
            };
            let born = b & !(1 << 63);
            // born was read before the insert; the entry's deadline is after born + ttl.
            let age = now_ms().saturating_sub(born);
            // Documented (src/expiry.rs): the deadline comes from the ticker's tick, which
            // trails real time by its lag (more when the ticker is starved), so an entry may
            // expire up to that lag before its TTL. Measured; a violation only past 50 ms.
            if age < ttl {
                EARLY_MAX.fetch_max(ttl - age, Relaxed);
                EARLY_N.fetch_add(1, Relaxed);
            }
            if age + 50 < ttl {
                violation(format!(
                    "Expired after {age} ms < ttl {ttl} ms (serial {s})"
                ));
            }
        }
        RemovalCause::Explicit => {
            // The remover marks state after remove returns; it may not have yet. Checked
            // loosely at the end instead (count == removals that hit).
        }
        _ => {}
    }
    // Re-entrancy: sometimes call back into the cache.
    let depth = IN_LISTENER.with(|d| d.get());
    if depth == 0 && s % 32 == 0 {
        if let Some(cache) = slot.get().and_then(Weak::upgrade) {
            IN_LISTENER.with(|d| d.set(1));
            let other = (k * 31 + 7) % keys;
            counts.listener_gets.fetch_add(1, SeqCst);
            if let Some(v) = cache.get(&other) {
                if let Err(e) = v.check_full(other) {
                    violation(format!("listener get: {e}"));
                }
            }
            if s % 128 == 0 && cause != RemovalCause::Cleared {
                counts.listener_inserts.fetch_add(1, SeqCst);
                let nb = Blob::new(other, 200);
                let ns = nb.serial as usize;
                match cache.insert(other, nb) {
                    Ok(()) => {
                        t.state[ns].fetch_or(1, SeqCst);
                        counts.metric.fetch_add(208, SeqCst);
                        counts.ok_inserts.fetch_add(1, SeqCst);
                    }
                    Err(e) => {
                        t.state[ns].fetch_or(2, SeqCst);
                        if !matches!(e.kind, InsertErrorKind::Rejected { .. }) {
                            violation(format!("listener insert refused {:?}", e.kind));
                        }
                    }
                }
            }
            IN_LISTENER.with(|d| d.set(0));
            // `cache` (an Arc) drops here: on the janitor thread this may be the last one.
        }
    }
}

/// Short-lived caches with a 1 ms janitor, a listener holding a Weak and re-entering, dropped
/// while the janitor sweeps; sometimes the last handle is dropped on the janitor thread.
fn janitor_drop_round(round: u64) {
    type Small = Cache<u64, Vec<u8>>;
    let slot: Arc<OnceLock<Weak<Small>>> = Arc::default();
    let s2 = slot.clone();
    let cache: Arc<Cache<u64, Vec<u8>>> = Arc::new(
        Cache::builder()
            .max_weight(1 << 16)
            .weigher(|_k: &u64, v: &Vec<u8>| v.len() as u64)
            .time_to_live(Duration::from_millis(1))
            .janitor(Duration::from_millis(1))
            .eviction_listener(move |k: &u64, _v: &Vec<u8>, _c| {
                if let Some(c) = s2.get().and_then(Weak::upgrade) {
                    let _ = c.get(&(k + 1));
                    if k % 5 == 0 {
                        let _ = c.insert(k + 1000, vec![1; 10]);
                    }
                }
            })
            .build()
            .unwrap(),
    );
    slot.set(Arc::downgrade(&cache)).ok().unwrap();
    for i in 0..200u64 {
        let _ = cache.insert(i, vec![0; 100 + (i as usize % 7) * 50]);
    }
    std::thread::sleep(Duration::from_micros(500 + (round % 5) * 300));
    drop(cache);
}

/// How long one insert waits while the table doubles: one thread fills a byte-bounded cache
/// with 2^21 small blobs (never full by weight) and reports the slowest inserts.
fn growth_probe() -> String {
    let cache: Cache<u64, Vec<u8>> = Cache::builder()
        .max_weight(1 << 30)
        .weigher(|_k: &u64, v: &Vec<u8>| 8 + v.len() as u64)
        .build()
        .unwrap();
    let mut worst: Vec<(u128, usize, usize)> = Vec::new();
    let t0 = Instant::now();
    for k in 0..(1u64 << 21) {
        let cap = cache.capacity();
        let t = Instant::now();
        cache.insert(k, vec![7; 100]).unwrap();
        let us = t.elapsed().as_micros();
        if cache.capacity() != cap {
            worst.push((us, cap, cache.capacity()));
        }
    }
    let total = t0.elapsed();
    let w: Vec<String> = worst
        .iter()
        .filter(|w| w.1 >= 1 << 17)
        .map(|(us, a, b)| format!("{a}->{b}: {:.1} ms", *us as f64 / 1000.0))
        .collect();
    format!(
        "{} growths, total {:.0} ms; the inserts that grew: {}",
        worst.len(),
        total.as_secs_f64() * 1e3,
        w.join(", ")
    )
}
