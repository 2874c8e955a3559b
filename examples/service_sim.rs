//! A dry run of clockline inside an async web service: a tokio multi-thread runtime (4 workers)
//! serving "requests" through a weighted cache of byte blobs (`max_weight` 4 MiB, values of
//! 0.5-8 KiB, every 97th key 256 KiB-1 MiB, every 499th 5 MiB: above the budget) with a TTL and
//! a time-to-idle, an eviction listener feeding metrics, statistics, a warm-up at start (and a
//! second one racing the traffic), a slow fake backend (0-5 ms, 4 % errors, 1 % panics),
//! cancellation storms (30 % of requests under `tokio::time::timeout` of 0-4 ms), sync callers
//! from `spawn_blocking`, writers doing `insert` / `insert_with_ttl` / `remove`, a `clear` in
//! the middle, then a storm of 50,000 requests timing out on one stuck load.
//!
//! Checked during and after the run (each violation is printed; exit status 1 if any):
//! * no request hangs (10 s watchdog), and afterwards every key loads again within 2 s;
//! * single flight: never two backend loads of one key at once (counted in the backend);
//! * `weight() <= max_weight`, `len() <= capacity()` (a sampler thread), `check_invariants`;
//! * no value returned after its deadline: the sim clock is injected (`Builder::clock`), each
//!   value carries its birth, the instant the weigher saw it (just before the insert reads the
//!   clock) and an upper bound of the insert's clock reading; "PROVEN" lateness is a violation;
//! * the listener: every value reported at most once, `Cleared` only inside `clear`, never
//!   `Expired` before min(ttl, tti), per-cause counts equal to the statistics', and in all as
//!   many reports as entries stored (inserts + updates) once the cache is cleared;
//! * statistics: hits + misses equal the lookups made, loads ok / failed equal the backend's;
//! * errors reach a caller of their own key, each at least one; a loader's panic reaches the
//!   request whose loader panicked and no other;
//! * warm-up's report equals what its loader did; the concurrent one adds up;
//! * memory: no value alive once the cache and the runtime are gone (a `Drop` counter); also
//!   printed: values retired but not yet freed while the service idles, and heap growth
//!   during the storm on a stuck load (a counting allocator).
//!
//! `cargo run --release --example service_sim [-- --requests N] [--seed N] [--keys N]
//!  [--ttl-ms N] [--tti-ms N] [--clock-policy 1] [--default-clock 1] [--flush-on-park 1]`

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::num::NonZeroUsize;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use clockline::{Cache, Clock, RemovalCause, WarmUp};

// ------------------------------------------------------------------ knobs

static TTL_MS: AtomicU64 = AtomicU64::new(250);
static TTI_MS: AtomicU64 = AtomicU64::new(60);
static SEED: AtomicU64 = AtomicU64::new(1);
#[allow(non_snake_case)]
fn TTL() -> Duration {
    Duration::from_millis(TTL_MS.load(Relaxed))
}
#[allow(non_snake_case)]
fn TTI() -> Duration {
    Duration::from_millis(TTI_MS.load(Relaxed))
}
const MAX_WEIGHT: u64 = 4 << 20;
const MAX_CAPACITY: usize = 1500;
const CONCURRENCY: usize = 1000; // requests in flight at once
const WATCHDOG: Duration = Duration::from_secs(10);

// ------------------------------------------------------------------ randomness

// The project's workload generator (splitmix64) and Zipf sampler, as the other examples use
// them.
#[path = "../benches/common/mod.rs"]
#[allow(dead_code)]
mod common;
use common::{SplitMix64 as Rng, Zipf};

/// The draws this simulation makes.
trait Draw {
    fn chance(&mut self, per_mille: u64) -> bool;
}

impl Draw for Rng {
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

// ------------------------------------------------------------------ clock

/// The cache's clock and ours: exact (`Instant`), so expiry can be checked without slack.
struct SimClock(Instant);
impl Clock for SimClock {
    fn now(&self) -> Duration {
        let t = self.0.elapsed();
        LAST_NOW.with(|c| c.set(t));
        t
    }
}

thread_local! {
    /// This thread's last reading of the sim clock (the cache's reads included): read right
    /// after an insert on the same thread, it bounds that insert's clock reading from above.
    static LAST_NOW: std::cell::Cell<Duration> = const { std::cell::Cell::new(Duration::ZERO) };
}

/// Records, in a value this thread just inserted (or loaded as leader), an upper bound of the
/// insert's clock reading.
fn stamp_upper(v: &Blob) {
    let t = LAST_NOW.with(|c| c.get());
    v.upper.fetch_max(t.as_nanos() as u64, Relaxed);
}

// ------------------------------------------------------------------ values

static LIVE: AtomicI64 = AtomicI64::new(0);
static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

struct BlobInner {
    key: u64,
    id: u64,
    /// The sim clock when the value was made: the entry's deadline is at least `born + TTL()`.
    born: Duration,
    /// The value's time-to-live: the cache's, or the one it was inserted with.
    ttl: Duration,
    /// When the cache's weigher last weighed it (nanos on the sim clock; 0: never): an insert
    /// reads its clock right after weighing, so this is the entry's birth as the cache sees it.
    weighed: AtomicU64,
    /// An upper bound of the insert's clock reading (nanos; 0: unknown yet), see `stamp_upper`.
    upper: AtomicU64,
    /// The request whose loader made it (0: a writer or warm-up).
    req: AtomicU64,
    data: Vec<u8>,
}
impl Drop for BlobInner {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Relaxed);
        LIVE_BYTES.fetch_sub(self.data.len() as i64, Relaxed);
    }
}
type Blob = Arc<BlobInner>;

fn make_blob(key: u64, born: Duration) -> Blob {
    make_blob_ttl(key, born, TTL())
}

fn make_blob_ttl(key: u64, born: Duration, ttl: Duration) -> Blob {
    let len = size_of_key(key);
    LIVE.fetch_add(1, Relaxed);
    LIVE_BYTES.fetch_add(len as i64, Relaxed);
    Arc::new(BlobInner {
        key,
        id: NEXT_ID.fetch_add(1, Relaxed),
        born,
        ttl,
        weighed: AtomicU64::new(0),
        upper: AtomicU64::new(0),
        req: AtomicU64::new(0),
        data: vec![0u8; len],
    })
}

/// Most values are 512 B - 8 KiB; every 97th key 256 KiB - 1 MiB (near the budget in groups);
/// every 499th key is 5 MiB, above the 4 MiB budget.
fn size_of_key(key: u64) -> usize {
    let mut r = Rng::new(key.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0xabcdef);
    if key % 499 == 0 {
        5 << 20
    } else if key % 97 == 0 {
        (256 << 10) + r.below(768 << 10) as usize
    } else {
        512 + r.below(7680) as usize
    }
}

static WEIGH_CLOCK: std::sync::OnceLock<Arc<SimClock>> = std::sync::OnceLock::new();

fn weigh(_k: &u64, v: &Blob) -> u64 {
    if let Some(c) = WEIGH_CLOCK.get() {
        v.weighed.fetch_max(c.now().as_nanos() as u64, Relaxed);
    }
    8 + v.data.len() as u64
}

// ------------------------------------------------------------------ violations

/// How late (past born + ttl) a returned value may be before it counts as a violation: the
/// stamp precedes the cache's clock read; the default clock trails real time by ~6 ms.
static SLACK_US: AtomicU64 = AtomicU64::new(1000);
static WU2_CALLS: AtomicU64 = AtomicU64::new(0);
static VIOLATIONS: AtomicUsize = AtomicUsize::new(0);
static PRINTED: AtomicUsize = AtomicUsize::new(0);

fn violation(what: String) {
    VIOLATIONS.fetch_add(1, Relaxed);
    if PRINTED.fetch_add(1, Relaxed) < 40 {
        eprintln!("VIOLATION: {what}");
    }
}

// ------------------------------------------------------------------ backend

#[derive(Debug)]
#[allow(dead_code)]
struct BackendError {
    key: u64,
    load: u64,
}

/// The payload of a backend panic: which request's loader panicked.
struct BackendPanic {
    req: u64,
}

#[derive(Default)]
struct Backend {
    /// Loads of each key running now (single flight: never above 1).
    running: Vec<AtomicUsize>,
    started: AtomicU64,
    ok: AtomicU64,
    err: AtomicU64,
    panicked: AtomicU64,
    cancelled: AtomicU64,
    overlaps: AtomicU64,
    /// Error loads, by load number: (key, end time).
    errors: Mutex<HashMap<u64, (u64, Duration)>>,
}

/// Marks a load running until dropped (completion, error, panic or cancellation).
struct Running<'a> {
    b: &'a Backend,
    key: u64,
    finished: bool,
}
impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.b.running[self.key as usize].fetch_sub(1, SeqCst);
        if !self.finished {
            if std::thread::panicking() {
                self.b.panicked.fetch_add(1, Relaxed);
            } else {
                self.b.cancelled.fetch_add(1, Relaxed);
            }
        }
    }
}

#[derive(Clone, Copy)]
struct Faults {
    err_per_mille: u64,
    panic_per_mille: u64,
}

impl Backend {
    fn new(keys: usize) -> Self {
        Self {
            running: (0..keys).map(|_| AtomicUsize::new(0)).collect(),
            ..Default::default()
        }
    }

    fn enter(&self, key: u64, who: &str) -> Running<'_> {
        self.started.fetch_add(1, Relaxed);
        let before = self.running[key as usize].fetch_add(1, SeqCst);
        if before != 0 {
            self.overlaps.fetch_add(1, Relaxed);
            violation(format!(
                "single flight: {who} load of key {key} started while {before} other load(s) of it ran"
            ));
        }
        Running {
            b: self,
            key,
            finished: false,
        }
    }

    fn outcome(
        &self,
        mut run: Running<'_>,
        key: u64,
        req: u64,
        rng: &mut Rng,
        f: Faults,
        clock: &SimClock,
    ) -> Result<Blob, BackendError> {
        if rng.chance(f.panic_per_mille) {
            std::panic::panic_any(BackendPanic { req });
        }
        run.finished = true;
        if rng.chance(f.err_per_mille) {
            self.err.fetch_add(1, Relaxed);
            let load = NEXT_ID.fetch_add(1, Relaxed);
            self.errors.lock().unwrap().insert(load, (key, clock.now()));
            drop(run);
            return Err(BackendError { key, load });
        }
        self.ok.fetch_add(1, Relaxed);
        // Stamped last: the cache reads its clock for the insert right after this returns.
        let blob = make_blob(key, clock.now());
        blob.req.store(req, Relaxed);
        drop(run);
        Ok(blob)
    }

    async fn load(
        &self,
        key: u64,
        req: u64,
        seed: u64,
        f: Faults,
        clock: &SimClock,
    ) -> Result<Blob, BackendError> {
        let run = self.enter(key, "async");
        let mut rng = Rng::new(seed);
        let micros = rng.below(5000);
        tokio::time::sleep(Duration::from_micros(micros)).await;
        self.outcome(run, key, req, &mut rng, f, clock)
    }

    fn load_blocking(
        &self,
        key: u64,
        req: u64,
        seed: u64,
        f: Faults,
        clock: &SimClock,
    ) -> Result<Blob, BackendError> {
        let run = self.enter(key, "sync");
        let mut rng = Rng::new(seed);
        std::thread::sleep(Duration::from_micros(rng.below(5000)));
        self.outcome(run, key, req, &mut rng, f, clock)
    }
}

// ------------------------------------------------------------------ catch_unwind for futures

/// `FutureExt::catch_unwind` without the futures crate.
struct CatchUnwind<F>(F);
impl<F: Future> Future for CatchUnwind<F> {
    type Output = std::thread::Result<F::Output>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: structural pinning of the only field.
        let f = unsafe { self.map_unchecked_mut(|s| &mut s.0) };
        match catch_unwind(AssertUnwindSafe(|| f.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(p) => Poll::Ready(Err(p)),
        }
    }
}

// ------------------------------------------------------------------ metrics

#[derive(Default)]
struct Metrics {
    // listener
    by_cause: [AtomicU64; 5],
    bytes_by_cause: [AtomicU64; 5],
    reported: Mutex<HashSet<u64>>,
    clearing: AtomicBool,
    clearing_final: AtomicBool,
    /// The most an entry was reported `Expired` before min(ttl, tti) after it was made (us).
    max_early_us: AtomicU64,
    // requests
    calls_counted: AtomicU64, // lookups the stats must count (one per loader call or get)
    requests: AtomicU64,
    ok: AtomicU64,
    errors: AtomicU64,
    panics_caught: AtomicU64,
    timeouts: AtomicU64,
    hangs: AtomicU64,
    too_heavy_served: AtomicU64,
    sync_calls: AtomicU64,
    expired_served: AtomicU64,
    expired_served_max_late: AtomicU64, // micros
    /// Error load number -> receivers.
    error_receivers: Mutex<HashMap<u64, u64>>,
    latencies: Mutex<Vec<u64>>, // micros
    /// Values returned past weighed + ttl but not (yet) proven expired: re-checked at the end.
    suspects: Mutex<Vec<(Duration, Blob, &'static str)>>,
    // bounds
    samples: AtomicU64,
    max_weight_seen: AtomicU64,
    max_len_seen: AtomicUsize,
}

fn cause_index(c: RemovalCause) -> usize {
    match c {
        RemovalCause::Capacity => 0,
        RemovalCause::Expired => 1,
        RemovalCause::Explicit => 2,
        RemovalCause::Replaced => 3,
        RemovalCause::Cleared => 4,
        _ => unreachable!(),
    }
}
const CAUSES: [&str; 5] = ["Capacity", "Expired", "Explicit", "Replaced", "Cleared"];

type C = Cache<u64, Blob>;

struct World {
    cache: C,
    clock: Arc<SimClock>,
    backend: Backend,
    metrics: Arc<Metrics>,
    zipf: Zipf,
    keys: u64,
}

impl World {
    /// Checks a value a call returned: right key, not expired before the call began.
    fn check_value(&self, key: u64, v: &Blob, asked: Duration, via: &'static str) {
        if v.key != key {
            violation(format!(
                "{via}: asked for key {key}, got key {}'s value",
                v.key
            ));
        }
        // The entry's deadline is at least born + TTL(); `asked` past that means the value had
        // expired before the call began (slack: the stamp precedes the cache's own clock read).
        let born = v.born.max(Duration::from_nanos(v.weighed.load(Relaxed)));
        if asked > born + v.ttl {
            let late = (asked - born - v.ttl).as_micros() as u64;
            self.metrics.expired_served.fetch_add(1, Relaxed);
            self.metrics
                .expired_served_max_late
                .fetch_max(late, Relaxed);
            let upper = Duration::from_nanos(v.upper.load(Relaxed));
            let slack = Duration::from_micros(SLACK_US.load(Relaxed));
            if !upper.is_zero() && asked > upper + v.ttl + slack {
                violation(format!(
                    "PROVEN expired value served ({via}): key {key} id {} ttl {:?}: inserted by {:?} at the latest, asked {:?}",
                    v.id, v.ttl, upper, asked
                ));
            } else {
                self.metrics
                    .suspects
                    .lock()
                    .unwrap()
                    .push((asked, v.clone(), via));
            }
        }
        if v.data.len() as u64 + 8 > MAX_WEIGHT {
            self.metrics.too_heavy_served.fetch_add(1, Relaxed);
        }
    }

    fn record_error(&self, key: u64, e: &BackendError) {
        if e.key != key {
            violation(format!(
                "error of key {} reached a caller of key {key}",
                e.key
            ));
        }
        *self
            .metrics
            .error_receivers
            .lock()
            .unwrap()
            .entry(e.load)
            .or_default() += 1;
    }
}

/// One async request. Returns whether it completed (not timed out).
async fn request(w: Arc<World>, req: u64) {
    let m = &w.metrics;
    let mut rng = Rng::new(req.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ SEED.load(Relaxed));
    let key = w.zipf.sample(&mut rng) as u64 % w.keys;
    let kind = rng.below(100);
    let timeout = if rng.chance(300) {
        Some(Duration::from_micros(rng.below(4000)))
    } else {
        None
    };
    let seed = rng.next_u64();
    let faults = Faults {
        err_per_mille: 40,
        panic_per_mille: 10,
    };
    m.requests.fetch_add(1, Relaxed);
    let t0 = Instant::now();
    let asked = w.clock.now();
    let w2 = w.clone();
    let fut = async move {
        let w = &*w2;
        m_count(&w.metrics);
        if kind < 45 {
            // Fallible cache-aside.
            let r = w
                .cache
                .try_get_or_insert_with_async(key, w.backend.load(key, req, seed, faults, &w.clock))
                .await;
            match r {
                Ok(v) => {
                    if v.req.load(Relaxed) == req {
                        stamp_upper(&v);
                    }
                    w.check_value(key, &v, asked, "try_get_or_insert_with_async");
                    w.metrics.ok.fetch_add(1, Relaxed);
                }
                Err(e) => {
                    w.record_error(key, &e);
                    w.metrics.errors.fetch_add(1, Relaxed);
                }
            }
        } else if kind < 75 {
            // Infallible cache-aside: the backend does not fail (it may still panic).
            let v = w
                .cache
                .get_or_insert_with_async(key, async {
                    match w
                        .backend
                        .load(
                            key,
                            req,
                            seed,
                            Faults {
                                err_per_mille: 0,
                                panic_per_mille: faults.panic_per_mille,
                            },
                            &w.clock,
                        )
                        .await
                    {
                        Ok(v) => v,
                        Err(_) => unreachable!(),
                    }
                })
                .await;
            if v.req.load(Relaxed) == req {
                stamp_upper(&v);
            }
            w.check_value(key, &v, asked, "get_or_insert_with_async");
            w.metrics.ok.fetch_add(1, Relaxed);
        } else {
            // A plain read, as a handler that only serves what is cached.
            if let Some(v) = w.cache.get(&key) {
                w.check_value(key, &v, asked, "get");
            }
            w.metrics.ok.fetch_add(1, Relaxed);
        }
    };
    let caught = match timeout {
        Some(t) => match tokio::time::timeout(t, CatchUnwind(fut)).await {
            Ok(r) => Some(r),
            Err(_) => {
                m.timeouts.fetch_add(1, Relaxed);
                None
            }
        },
        None => Some(CatchUnwind(fut).await),
    };
    if let Some(Err(p)) = caught {
        match p.downcast::<BackendPanic>() {
            Ok(bp) if bp.req == req => {
                m.panics_caught.fetch_add(1, Relaxed);
            }
            Ok(bp) => violation(format!(
                "request {req} (key {key}) got the panic of request {}'s loader",
                bp.req
            )),
            Err(_) => violation(format!("request {req}: unexpected panic payload")),
        }
    }
    m.latencies
        .lock()
        .unwrap()
        .push(t0.elapsed().as_micros() as u64);
}

fn m_count(m: &Metrics) {
    m.calls_counted.fetch_add(1, Relaxed);
}

/// One sync request from `spawn_blocking`.
fn sync_request(w: &World, req: u64) {
    let mut rng = Rng::new(req ^ 0xb10c ^ SEED.load(Relaxed).wrapping_mul(31));
    let key = w.zipf.sample(&mut rng) as u64 % w.keys;
    let seed = rng.next_u64();
    let faults = Faults {
        err_per_mille: 40,
        panic_per_mille: 10,
    };
    w.metrics.sync_calls.fetch_add(1, Relaxed);
    w.metrics.requests.fetch_add(1, Relaxed);
    let t0 = Instant::now();
    let asked = w.clock.now();
    m_count(&w.metrics);
    let r = catch_unwind(AssertUnwindSafe(|| {
        w.cache.try_get_or_insert_with(key, || {
            w.backend.load_blocking(key, req, seed, faults, &w.clock)
        })
    }));
    match r {
        Ok(Ok(v)) => {
            if v.req.load(Relaxed) == req {
                stamp_upper(&v);
            }
            w.check_value(key, &v, asked, "try_get_or_insert_with (sync)");
            w.metrics.ok.fetch_add(1, Relaxed);
        }
        Ok(Err(e)) => {
            w.record_error(key, &e);
            w.metrics.errors.fetch_add(1, Relaxed);
        }
        Err(p) => match p.downcast::<BackendPanic>() {
            Ok(bp) if bp.req == req => {
                w.metrics.panics_caught.fetch_add(1, Relaxed);
            }
            Ok(bp) => violation(format!(
                "sync request {req} got the panic of request {}'s loader",
                bp.req
            )),
            Err(_) => violation(format!("sync request {req}: unexpected panic payload")),
        },
    }
    w.metrics
        .latencies
        .lock()
        .unwrap()
        .push(t0.elapsed().as_micros() as u64);
}

/// Heap bytes allocated now (a counting global allocator), in KiB.
fn rss_kib() -> u64 {
    HEAP.load(Relaxed).max(0) as u64 >> 10
}

static HEAP: AtomicI64 = AtomicI64::new(0);
struct Counting;
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        HEAP.fetch_add(l.size() as i64, Relaxed);
        unsafe { std::alloc::System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: std::alloc::Layout) -> *mut u8 {
        HEAP.fetch_add(l.size() as i64, Relaxed);
        unsafe { std::alloc::System.alloc_zeroed(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        HEAP.fetch_sub(l.size() as i64, Relaxed);
        unsafe { std::alloc::System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, n: usize) -> *mut u8 {
        HEAP.fetch_add(n as i64 - l.size() as i64, Relaxed);
        unsafe { std::alloc::System.realloc(p, l, n) }
    }
}
#[global_allocator]
static GLOBAL: Counting = Counting;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let n_requests = arg("--requests", 250_000);
    let keys = arg("--keys", 4000);
    let seed = arg("--seed", 1);
    SEED.store(seed, Relaxed);
    TTL_MS.store(arg("--ttl-ms", 250), Relaxed);
    TTI_MS.store(arg("--tti-ms", 60), Relaxed);
    let policy = if arg("--clock-policy", 0) == 1 {
        clockline::Policy::Clock
    } else {
        clockline::Policy::Adaptive
    };

    // Backend panics are expected: keep the hook quiet about them.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info.payload().downcast_ref::<BackendPanic>().is_none() {
            default_hook(info);
        }
    }));

    let clock = Arc::new(SimClock(Instant::now()));
    let _ = WEIGH_CLOCK.set(clock.clone());
    let metrics = Arc::new(Metrics::default());
    let lm = metrics.clone();
    let lclock = clock.clone();
    let default_clock = arg("--default-clock", 0) == 1;
    SLACK_US.store(if default_clock { 7000 } else { 0 }, Relaxed); // 0: only PROVEN lateness counts
    let builder = Cache::builder();
    let builder = if default_clock {
        builder
    } else {
        builder.clock(clock.clone())
    };
    let cache: C = builder
        .max_weight(MAX_WEIGHT)
        .max_capacity(MAX_CAPACITY)
        .weigher(weigh)
        .time_to_live(TTL())
        .time_to_idle(TTI())
        .record_stats()
        .policy(policy)
        .eviction_listener(move |k: &u64, v: &Blob, cause| {
            let i = cause_index(cause);
            lm.by_cause[i].fetch_add(1, Relaxed);
            lm.bytes_by_cause[i].fetch_add(v.data.len() as u64, Relaxed);
            if v.key != *k {
                violation(format!("listener: key {k} with key {}'s value", v.key));
            }
            if !lm.reported.lock().unwrap().insert(v.id) {
                violation(format!(
                    "listener: value {} of key {k} reported twice ({cause:?})",
                    v.id
                ));
            }
            if cause == RemovalCause::Cleared && !lm.clearing.load(Relaxed) {
                violation(format!("listener: Cleared for key {k} outside clear"));
            }
            if cause != RemovalCause::Cleared && lm.clearing_final.load(Relaxed) {
                violation(format!(
                    "listener: {cause:?} for key {k} during the final (quiet) clear"
                ));
            }
            // An entry cannot expire before min(ttl, TTI()) after it was made.
            let now = lclock.now();
            // With the exact (injected) clock: never. With the default cached tick, the
            // deadline is set from a tick that may trail real time, so in real time an entry
            // may expire up to that lag early: measured, and a violation only past 7 ms.
            let earliest = v.born + v.ttl.min(TTI());
            if cause == RemovalCause::Expired && now < earliest {
                let early = (earliest - now).as_micros() as u64;
                lm.max_early_us.fetch_max(early, Relaxed);
                if early > SLACK_US.load(Relaxed) {
                    violation(format!(
                        "listener: key {k} reported Expired at {now:?}, {early} us before born {:?} + min(ttl {:?}, tti)",
                        v.born, v.ttl
                    ));
                }
            }
        })
        .build()
        .expect("valid configuration");

    let world = Arc::new(World {
        cache,
        clock: clock.clone(),
        backend: Backend::new(keys as usize),
        metrics: metrics.clone(),
        zipf: Zipf::new(keys as usize, 0.9),
        keys,
    });

    let mut rtb = tokio::runtime::Builder::new_multi_thread();
    rtb.worker_threads(4).enable_all();
    if arg("--flush-on-park", 0) == 1 {
        // Hand each worker's retired values to the reclaimer whenever it goes idle.
        rtb.on_thread_park(clockline::flush_deferred);
    }
    let rt = rtb.build().unwrap();

    // ---------------------------------------------------------- warm-up
    // Pre-insert some keys so that warm-up has something to skip.
    for k in (0..40).step_by(4) {
        let _ = world.cache.insert(k, make_blob(k, clock.now()));
    }
    let wu_ok = Arc::new(AtomicU64::new(0));
    let wu_err = Arc::new(AtomicU64::new(0));
    let wu_panic = Arc::new(AtomicU64::new(0));
    let wu_keys: Vec<u64> = (0..300).collect();
    let wu_present = wu_keys
        .iter()
        .filter(|&&k| world.cache.contains_key(&k))
        .count();
    let before_wu = world.cache.stats().unwrap();
    let (report, wu_wall) = {
        let w = world.clone();
        let (ok, err) = (wu_ok.clone(), wu_err.clone());
        let keys = wu_keys.clone();
        let handle = rt.handle().clone();
        // warm_up is blocking (scoped OS threads); from async code it must go to spawn_blocking.
        rt.block_on(async move {
            tokio::task::spawn_blocking(move || {
                let t = Instant::now();
                let r = w
                    .cache
                    .warm_up(keys, WarmUp::new(NonZeroUsize::new(8).unwrap()), |&k| {
                        // The sync loader calls the async backend through the runtime handle.
                        let mut rng = Rng::new(k ^ 0x77);
                        let r = handle.block_on(w.backend.load(
                            k,
                            u64::MAX - k,
                            rng.next_u64(),
                            Faults {
                                err_per_mille: 50,
                                panic_per_mille: 20,
                            },
                            &w.clock,
                        ));
                        match &r {
                            Ok(_) => ok.fetch_add(1, Relaxed),
                            Err(e) => {
                                w.record_error(k, e);
                                err.fetch_add(1, Relaxed)
                            }
                        };
                        r
                    });
                (r, t.elapsed())
            })
            .await
            .unwrap()
        })
    };
    wu_panic.store(world.backend.panicked.load(Relaxed), Relaxed);
    println!(
        "warm-up: {} of its {} keys cached right after it (len {}, weight {} KiB)",
        wu_keys
            .iter()
            .filter(|&&k| world.cache.contains_key(&k))
            .count(),
        wu_keys.len(),
        world.cache.len(),
        world.cache.weight() >> 10
    );
    let after_wu = world.cache.stats().unwrap();
    println!(
        "warm-up: {report:?} (wall {wu_wall:?}); loader ok {} err {} panicked {}; keys {} of which cached before {}",
        wu_ok.load(Relaxed),
        wu_err.load(Relaxed),
        wu_panic.load(Relaxed),
        wu_keys.len(),
        wu_present
    );
    // No traffic runs yet, so no key is served by a hit after `contains_key` missed: skipped keys
    // are those found cached (pre-inserted ones may have expired meanwhile with a short TTL).
    if report.loaded as u64 != wu_ok.load(Relaxed)
        || report.failed as u64 != wu_err.load(Relaxed) + wu_panic.load(Relaxed)
        || report.skipped > wu_present
        || report.loaded + report.failed + report.skipped != wu_keys.len()
    {
        violation(format!(
            "warm-up report {report:?} does not match what happened"
        ));
    }
    let wu_lookups = (wu_keys.len() - report.skipped) as u64;
    let d = (after_wu.hits + after_wu.misses) - (before_wu.hits + before_wu.misses);
    if d != wu_lookups {
        violation(format!("warm-up counted {d} lookups, made {wu_lookups}"));
    }
    let wu_loads = (
        after_wu.loads_ok - before_wu.loads_ok,
        after_wu.loads_failed - before_wu.loads_failed,
    );
    if wu_loads
        != (
            wu_ok.load(Relaxed),
            wu_err.load(Relaxed) + wu_panic.load(Relaxed),
        )
    {
        violation(format!(
            "warm-up loads in stats {wu_loads:?} vs loader calls"
        ));
    }

    // ---------------------------------------------------------- samplers and writers
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (w, stop) = (world.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Relaxed) {
                let (weight, len, cap) = (w.cache.weight(), w.cache.len(), w.cache.capacity());
                w.metrics.samples.fetch_add(1, Relaxed);
                w.metrics.max_weight_seen.fetch_max(weight, Relaxed);
                w.metrics.max_len_seen.fetch_max(len, Relaxed);
                if weight > MAX_WEIGHT {
                    violation(format!("weight {weight} > max_weight {MAX_WEIGHT}"));
                }
                if len > cap || cap > MAX_CAPACITY {
                    violation(format!("len {len} > capacity {cap} (max {MAX_CAPACITY})"));
                }
                std::thread::yield_now();
            }
        })
    };
    let writes = Arc::new(AtomicU64::new(0));
    let writer = {
        let (w, stop, writes) = (world.clone(), stop.clone(), writes.clone());
        rt.spawn(async move {
            let mut rng = Rng::new(seed ^ 0x1417e);
            while !stop.load(Relaxed) {
                let key = w.zipf.sample(&mut rng) as u64 % w.keys;
                match rng.below(10) {
                    0..=3 => {
                        let b = make_blob(key, w.clock.now());
                        if w.cache.insert(key, b.clone()).is_ok() {
                            stamp_upper(&b);
                        }
                    }
                    4 => {
                        let ttl = Duration::from_millis(1 + rng.below(30));
                        let b = make_blob_ttl(key, w.clock.now(), ttl);
                        if w.cache.insert_with_ttl(key, b.clone(), ttl).is_ok() {
                            stamp_upper(&b);
                        }
                    }
                    _ => {
                        // "invalidate": a plain cache has `remove` for that.
                        w.cache.remove(&key);
                    }
                }
                writes.fetch_add(1, Relaxed);
                tokio::time::sleep(Duration::from_micros(300)).await;
            }
        })
    };

    // ---------------------------------------------------------- mid-run clear, second warm-up
    let mid = {
        let (w, stop) = (world.clone(), stop.clone());
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            w.metrics.clearing.store(true, Relaxed);
            w.cache.clear();
            w.metrics.clearing.store(false, Relaxed);
            // A second warm-up racing the traffic: counts must still add up.
            let keys: Vec<u64> = (0..200).collect();
            let r = w.cache.warm_up(
                keys.clone(),
                WarmUp::new(NonZeroUsize::new(4).unwrap()),
                |&k| {
                    std::thread::sleep(Duration::from_micros(500));
                    WU2_CALLS.fetch_add(1, Relaxed);
                    Ok::<_, BackendError>(make_blob(k, w.clock.now()))
                },
            );
            if r.loaded + r.failed + r.skipped != keys.len() {
                violation(format!(
                    "concurrent warm-up report {r:?} does not add up to {}",
                    keys.len()
                ));
            }
            let _ = stop;
            r
        })
    };
    let t_traffic = Instant::now();
    rt.block_on({
        let w = world.clone();
        async move {
            let sem = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
            let mut handles = Vec::with_capacity(n_requests as usize);
            for req in 0..n_requests {
                let permit = sem.clone().acquire_owned().await.unwrap();
                let w = w.clone();
                if req % 20 == 7 {
                    handles.push(tokio::task::spawn_blocking(move || {
                        sync_request(&w, req);
                        drop(permit);
                    }));
                } else {
                    // Friction check: the loaders' futures are `Send`, so `tokio::spawn` takes them.
                    let m = w.metrics.clone();
                    handles.push(tokio::spawn(async move {
                        if tokio::time::timeout(WATCHDOG, request(w, req))
                            .await
                            .is_err()
                        {
                            m.hangs.fetch_add(1, Relaxed);
                            violation(format!("request {req} hung for {WATCHDOG:?}"));
                        }
                        drop(permit);
                    }));
                }
            }
            for h in handles {
                if let Err(e) = h.await {
                    violation(format!("a request task failed: {e}"));
                }
            }
        }
    });
    let traffic_wall = t_traffic.elapsed();
    let after_traffic = world.cache.stats().unwrap();
    println!(
        "traffic phase stats: hits {} misses {} hit ratio {:.3}; loads ok {} failed {}",
        after_traffic.hits - after_wu.hits,
        after_traffic.misses - after_wu.misses,
        (after_traffic.hits - after_wu.hits) as f64
            / ((after_traffic.hits + after_traffic.misses) - (after_wu.hits + after_wu.misses))
                as f64,
        after_traffic.loads_ok - after_wu.loads_ok,
        after_traffic.loads_failed - after_wu.loads_failed
    );
    let wu2 = mid.join().unwrap();
    println!("concurrent warm-up: {wu2:?}");
    let cleared_mid = metrics.by_cause[4].load(Relaxed);
    stop.store(true, Relaxed);
    rt.block_on(writer).unwrap();
    sampler.join().unwrap();

    // ---------------------------------------------------------- storm on a stuck load
    // One load hangs (a backend that stalls); 50,000 requests for the same key time out after
    // 1 ms each while it does. Their futures are dropped: memory should not grow with them.
    let storm_key = keys; // outside the traffic's keys
    let (rss_before, rss_during, rss_after) = rt.block_on({
        let w = world.clone();
        async move {
            let release = Arc::new(tokio::sync::Notify::new());
            let leader = {
                let (w, release) = (w.clone(), release.clone());
                w.metrics.calls_counted.fetch_add(1, Relaxed);
                tokio::spawn(async move {
                    w.cache
                        .get_or_insert_with_async(storm_key, async {
                            release.notified().await;
                            w.backend.ok.fetch_add(1, Relaxed);
                            make_blob(storm_key, w.clock.now())
                        })
                        .await
                })
            };
            tokio::time::sleep(Duration::from_millis(20)).await;
            let rss_before = rss_kib();
            let mut hs = Vec::new();
            for _ in 0..50_000 {
                let w = w.clone();
                w.metrics.calls_counted.fetch_add(1, Relaxed);
                hs.push(tokio::spawn(async move {
                    // A handler's own state, held across the await (as real handlers do).
                    let state = [7u8; 2048];
                    let r = tokio::time::timeout(
                        Duration::from_millis(1),
                        w.cache.get_or_insert_with_async(storm_key, async {
                            make_blob(storm_key, w.clock.now())
                        }),
                    )
                    .await;
                    std::hint::black_box(&state);
                    r.is_err()
                }));
            }
            let mut timed_out = 0;
            for h in hs {
                timed_out += h.await.unwrap() as u64;
            }
            let rss_during = rss_kib();
            release.notify_one();
            let v = leader.await.unwrap();
            drop(v);
            let rss_after = rss_kib();
            println!("storm: {timed_out} of 50000 requests timed out on the stuck load");
            (rss_before, rss_during, rss_after)
        }
    });
    println!(
        "storm: heap {rss_before} KiB before, {rss_during} KiB after 50000 requests gave up (load still stuck), {rss_after} KiB once it ended"
    );

    // ---------------------------------------------------------- no flight left behind
    let left_behind = rt.block_on({
        let w = world.clone();
        async move {
            let mut hs = Vec::new();
            for key in 0..w.keys {
                let w = w.clone();
                hs.push(tokio::spawn(async move {
                    w.metrics.calls_counted.fetch_add(1, Relaxed);
                    let asked = w.clock.now();
                    let r = tokio::time::timeout(
                        Duration::from_secs(2),
                        w.cache.try_get_or_insert_with_async(key, async {
                            let run = w.backend.enter(key, "final");
                            let mut run = run;
                            run.finished = true;
                            w.backend.ok.fetch_add(1, Relaxed);
                            Ok::<_, BackendError>(make_blob(key, w.clock.now()))
                        }),
                    )
                    .await;
                    match r {
                        Ok(Ok(v)) => {
                            w.check_value(key, &v, asked, "final");
                            false
                        }
                        Ok(Err(_)) => unreachable!(),
                        Err(_) => true,
                    }
                }));
            }
            let mut n = 0;
            for h in hs {
                n += h.await.unwrap() as u64;
            }
            n
        }
    });
    if left_behind > 0 {
        violation(format!(
            "{left_behind} keys could not be loaded after the storm: flight left behind"
        ));
    }

    // ---------------------------------------------------------- expiry suspects, re-checked
    let suspects = std::mem::take(&mut *metrics.suspects.lock().unwrap());
    let n_suspects = suspects.len();
    for (n, (asked, v, via)) in suspects.into_iter().enumerate() {
        let upper = Duration::from_nanos(v.upper.load(Relaxed));
        let weighed = Duration::from_nanos(v.weighed.load(Relaxed));
        let verdict = if upper.is_zero() {
            "unknown (no upper bound: warm-up value)"
        } else if asked > upper + v.ttl + Duration::from_micros(SLACK_US.load(Relaxed)) {
            violation(format!("PROVEN expired value served ({via}) key {}", v.key));
            "PROVEN"
        } else {
            if SLACK_US.load(Relaxed) > 0 {
                "within the default clock's documented lag"
            } else {
                "not proven: within the insert's window"
            }
        };
        if n < 5 {
            println!(
                "expiry suspect ({via}): key {} ttl {:?} weighed {:?} insert clock <= {:?} asked {:?}: {verdict}",
                v.key, v.ttl, weighed, upper, asked
            );
        }
    }
    if n_suspects > 5 {
        println!("expiry suspects: {n_suspects} in all");
    }

    // ---------------------------------------------------------- end checks
    let c = &world.cache;
    if let Err(e) = c.check_invariants() {
        violation(format!("check_invariants: {e}"));
    }
    if c.weight() > MAX_WEIGHT || c.len() > c.capacity() {
        violation("bounds at the end".into());
    }
    let s = c.stats().unwrap();
    let m = &*metrics;
    let b = &world.backend;
    let lookups = s.hits + s.misses;
    // The concurrent warm-up made one counted lookup per key it did not skip by
    // `contains_key` (not observable): between its loaded + failed and its key count.
    let expected = m.calls_counted.load(Relaxed) + wu_lookups;
    let lo = expected + (wu2.loaded + wu2.failed) as u64;
    let hi = expected + 200;
    if lookups < lo || lookups > hi {
        violation(format!(
            "stats: hits {} + misses {} = {lookups}, calls made {lo}..={hi}",
            s.hits, s.misses
        ));
    }
    let backend_failed = b.err.load(Relaxed) + b.panicked.load(Relaxed);
    if s.loads_ok != b.ok.load(Relaxed) + WU2_CALLS.load(Relaxed)
        || s.loads_failed != backend_failed
    {
        violation(format!(
            "stats loads ok {} failed {} vs backend ok {} failed {} (err {} + panic {})",
            s.loads_ok,
            s.loads_failed,
            b.ok.load(Relaxed),
            backend_failed,
            b.err.load(Relaxed),
            b.panicked.load(Relaxed)
        ));
    }
    // Every backend error reached at least its leader.
    {
        let rec = m.error_receivers.lock().unwrap();
        let errs = b.errors.lock().unwrap();
        let unreceived = errs.keys().filter(|l| !rec.contains_key(l)).count();
        if unreceived > 0 {
            violation(format!("{unreceived} backend errors reached no caller"));
        }
        let shared = rec.values().filter(|&&n| n > 1).count();
        println!(
            "errors: {} backend errors, {} delivered to callers, {} shared by waiters (max receivers {})",
            errs.len(),
            rec.values().sum::<u64>(),
            shared,
            rec.values().max().unwrap_or(&0)
        );
    }
    // Listener vs statistics, before clear.
    let stat_causes = [
        s.evictions,
        s.expirations,
        s.removals,
        s.replacements,
        s.cleared,
    ];
    for i in 0..5 {
        let l = m.by_cause[i].load(Relaxed);
        if l != stat_causes[i] {
            violation(format!(
                "listener heard {l} {} but stats say {}",
                CAUSES[i], stat_causes[i]
            ));
        }
    }
    let len_before_clear = c.len();
    println!(
        "retention (quiescent, cache alive): {} values / {} KiB alive, cache holds {} entries / {} KiB",
        LIVE.load(Relaxed),
        LIVE_BYTES.load(Relaxed) >> 10,
        len_before_clear,
        c.weight() >> 10
    );
    m.clearing.store(true, Relaxed);
    m.clearing_final.store(true, Relaxed);
    c.clear();
    m.clearing_final.store(false, Relaxed);
    m.clearing.store(false, Relaxed);
    let cleared = m.by_cause[4].load(Relaxed) - cleared_mid;
    if cleared as usize != len_before_clear || !c.is_empty() || c.weight() != 0 {
        violation(format!(
            "clear: {cleared} Cleared reports for {len_before_clear} entries; after: len {} weight {}",
            c.len(),
            c.weight()
        ));
    }
    let s2 = c.stats().unwrap();
    let total_reports: u64 = (0..5).map(|i| m.by_cause[i].load(Relaxed)).sum();
    if total_reports != s2.inserts + s2.updates {
        violation(format!(
            "listener reports {total_reports} != entries stored {} (inserts {} + updates {})",
            s2.inserts + s2.updates,
            s2.inserts,
            s2.updates
        ));
    }
    if s2.cleared != cleared + cleared_mid {
        violation(format!(
            "stats cleared {} vs listener {cleared}",
            s2.cleared
        ));
    }

    let bsum = [
        b.started.load(Relaxed),
        b.ok.load(Relaxed),
        b.err.load(Relaxed),
        b.panicked.load(Relaxed),
        b.cancelled.load(Relaxed),
        b.overlaps.load(Relaxed),
    ];
    // ---------------------------------------------------------- memory
    let world = Arc::try_unwrap(world).ok().expect("all handles dropped");
    drop(world);
    clockline::flush_deferred();
    let live_one_flush = LIVE.load(Relaxed);
    for _ in 0..100 {
        clockline::flush_deferred();
        std::thread::yield_now();
    }
    let threads = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Threads:"))
                .map(|l| l[8..].trim().to_string())
        })
        .unwrap_or_default();
    println!("memory: after dropping the cache, one flush_deferred: {live_one_flush} values alive; 100 flushes: {}; process threads {threads}", LIVE.load(Relaxed));
    let live_runtime_up = LIVE.load(Relaxed);
    let live_bytes_runtime_up = LIVE_BYTES.load(Relaxed);
    drop(rt); // worker threads exit, handing their epoch bags over
    let mut live = 0;
    let t_settle = Instant::now();
    for i in 0..1000 {
        clockline::flush_deferred();
        live = LIVE.load(Relaxed);
        if live == 0 {
            break;
        }
        if i == 50 || i == 200 {
            println!("memory: runtime down, {i} flushes later {live} values still alive");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("memory: settled to {live} in {:?}", t_settle.elapsed());
    if live != 0 {
        violation(format!(
            "{live} values ({} bytes) still alive after drop + flush",
            LIVE_BYTES.load(Relaxed)
        ));
    }

    // ---------------------------------------------------------- report
    let mut lat = std::mem::take(&mut *m.latencies.lock().unwrap());
    lat.sort_unstable();
    println!(
        "traffic: {} requests ({} sync) in {traffic_wall:?}; ok {} errors {} panics caught {} timeouts {} hangs {}",
        m.requests.load(Relaxed),
        m.sync_calls.load(Relaxed),
        m.ok.load(Relaxed),
        m.errors.load(Relaxed),
        m.panics_caught.load(Relaxed),
        m.timeouts.load(Relaxed),
        m.hangs.load(Relaxed)
    );
    println!(
        "latency us: p50 {} p90 {} p99 {} p99.9 {} max {}",
        pct(&lat, 0.5),
        pct(&lat, 0.9),
        pct(&lat, 0.99),
        pct(&lat, 0.999),
        lat.last().copied().unwrap_or(0)
    );
    println!(
        "stats: hits {} misses {} hit ratio {:.3}; inserts {} updates {}; loads ok {} failed {}; load time {:?}",
        s.hits, s.misses, s.hit_ratio(), s.inserts, s.updates, s.loads_ok, s.loads_failed, s.load_time
    );
    println!(
        "backend: started {} ok {} err {} panicked {} cancelled {} overlaps {}; writes {}",
        bsum[0],
        bsum[1],
        bsum[2],
        bsum[3],
        bsum[4],
        bsum[5],
        writes.load(Relaxed)
    );
    print!("listener:");
    for (i, cause) in CAUSES.iter().enumerate() {
        print!(
            " {} {} ({} KiB)",
            cause,
            m.by_cause[i].load(Relaxed),
            m.bytes_by_cause[i].load(Relaxed) >> 10
        );
    }
    println!();
    println!(
        "bounds: {} samples, max weight {} / {MAX_WEIGHT}, max len {} / {MAX_CAPACITY}; too-heavy values served (uncached) {}",
        m.samples.load(Relaxed),
        m.max_weight_seen.load(Relaxed),
        m.max_len_seen.load(Relaxed),
        m.too_heavy_served.load(Relaxed)
    );
    println!(
        "expiry: {} values returned past weighed+ttl (max {} us late; a violation only if PROVEN: past the insert's latest clock reading + ttl, + 7 ms with the default clock)",
        m.expired_served.load(Relaxed),
        m.expired_served_max_late.load(Relaxed)
    );
    println!(
        "memory: {live_runtime_up} values ({} KiB) alive after dropping the cache + flush_deferred with the runtime up; {live} after the runtime shut down",
        live_bytes_runtime_up >> 10
    );
    println!(
        "expiry: entries reported Expired at most {} us before min(ttl, tti) after they were made (real time)",
        m.max_early_us.load(Relaxed)
    );
    let v = VIOLATIONS.load(Relaxed);
    println!("VIOLATIONS: {v}");
    if v > 0 {
        std::process::exit(1);
    }
}
