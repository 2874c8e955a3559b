//! Hostile-conditions dry run (2026-11-27; what it found: docs/design.md, "Found by the dry
//! runs of 2026-11-27 (later)"; the tests: tests/hostile_drops.rs): several threads hammer one cache whose user code (key `Hash`,
//! `Eq`, `Clone`; value `Clone`, `Drop`; weigher; listener; loaders) panics at random, seeded
//! moments, concurrently, with every operation (plain, pinned, versioned, loaders sync and
//! async, warm-up, clear, purge, iteration). Checks: no hang (watchdog), only injected panics
//! reach callers, bounds, `check_invariants` at quiet points, the cache stays usable, values
//! returned belong to their key, every value dropped exactly once by the end.
//!
//! `cargo run --release --example hostile_sim -- [secs per config] [seed] [threads] [config]`
//! Env: HOOKS (mask of hooks that may panic: 1 Hash, 2 Eq, 4 key Clone, 8 value Clone,
//! 16 value Drop, 32 weigher, 64 listener, 128 key Drop; default 127), RATE (per 100,000 calls
//! of a hook, default 200), ONLY_OPS (comma-separated op indices, see `OPS`), TRACE (record a
//! backtrace per value clone and print those of leaked values), GDB (on a hang, dump every
//! thread's stack to a file in the temp directory). Loaders panic 6 % and fail 6 % of the time.

use std::cell::Cell;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::num::{NonZeroU32, NonZeroUsize};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, AtomicUsize, Ordering::*};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

use clockline::{Cache, Policy, RemovalCause, WarmUp};

// ------------------------------------------------------------------------------------------
// Injection

const H_HASH: u16 = 1;
const H_EQ: u16 = 2;
const H_KCLONE: u16 = 4;
const H_VCLONE: u16 = 8;
const H_VDROP: u16 = 16;
const H_WEIGHER: u16 = 32;
const H_LISTENER: u16 = 64;
const H_KDROP: u16 = 128;
const NAMES: [&str; 8] = [
    "Hash", "Eq", "KClone", "VClone", "VDrop", "weigher", "listener", "KDrop",
];

static MASK: AtomicU64 = AtomicU64::new(0x7f); // KDrop (0x80) only when asked
/// Per 100,000 calls of a hook.
static RATE: AtomicU64 = AtomicU64::new(200);

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static RNG: Cell<u64> = const { Cell::new(0) };
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    static TAG: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn rnd() -> u64 {
    RNG.with(|r| {
        let mut x = r.get();
        if x == 0 {
            // A thread the cache made (warm-up workers): seed from its id.
            let mut h = std::collections::hash_map::DefaultHasher::new();
            thread::current().id().hash(&mut h);
            x = h.finish() | 1;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        r.set(x);
        x
    })
}

fn maybe_panic(hook: u16) {
    if !ON.with(|c| c.get()) || std::thread::panicking() {
        return;
    }
    if MASK.load(Relaxed) as u16 & hook == 0 {
        return;
    }
    if rnd() % 100_000 < RATE.load(Relaxed) {
        INJECTED[hook.trailing_zeros() as usize].fetch_add(1, Relaxed);
        panic!(
            "intentional: {} [t{}]",
            NAMES[hook.trailing_zeros() as usize],
            TAG.with(|t| t.get())
        );
    }
}

static INJECTED: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];

struct Hot(bool);
impl Hot {
    fn on() -> Self {
        Hot(ON.with(|c| c.replace(true)))
    }
}
impl Drop for Hot {
    fn drop(&mut self) {
        ON.with(|c| c.set(self.0));
    }
}
fn cold() -> Hot {
    Hot(ON.with(|c| c.replace(false)))
}

// ------------------------------------------------------------------------------------------
// Keys and values

static LIVE_K: AtomicI64 = AtomicI64::new(0);
static LIVE_V: AtomicI64 = AtomicI64::new(0);
static NEXT_V: AtomicUsize = AtomicUsize::new(0);
const V_SLOTS: usize = 1 << 25;
static V_STATE: OnceLock<Vec<AtomicU8>> = OnceLock::new();
static DOUBLE: AtomicU64 = AtomicU64::new(0);
static ORIGIN: OnceLock<Vec<AtomicU8>> = OnceLock::new();

fn vs() -> &'static [AtomicU8] {
    V_STATE.get_or_init(|| (0..V_SLOTS).map(|_| AtomicU8::new(0)).collect())
}
fn origin() -> &'static [AtomicU8] {
    ORIGIN.get_or_init(|| (0..V_SLOTS).map(|_| AtomicU8::new(0)).collect())
}

thread_local! {
    static OP: Cell<u8> = const { Cell::new(0) };
}

#[derive(Debug)]
struct K(u64);
impl K {
    fn new(k: u64) -> K {
        LIVE_K.fetch_add(1, Relaxed);
        K(k)
    }
}
impl Clone for K {
    fn clone(&self) -> K {
        maybe_panic(H_KCLONE);
        K::new(self.0)
    }
}
impl Drop for K {
    fn drop(&mut self) {
        LIVE_K.fetch_sub(1, Relaxed);
        maybe_panic(H_KDROP);
    }
}
impl Hash for K {
    fn hash<H: Hasher>(&self, h: &mut H) {
        maybe_panic(H_HASH);
        self.0.hash(h)
    }
}
impl PartialEq for K {
    fn eq(&self, o: &K) -> bool {
        maybe_panic(H_EQ);
        self.0 == o.0
    }
}
impl Eq for K {}

#[derive(Debug)]
struct V {
    key: u64,
    w: u64,
    id: usize,
}
impl V {
    fn new(key: u64, w: u64) -> V {
        LIVE_V.fetch_add(1, Relaxed);
        let id = NEXT_V.fetch_add(1, Relaxed);
        if id < V_SLOTS {
            vs()[id].store(1, Relaxed);
            origin()[id].store(OP.with(|c| c.get()), Relaxed);
        }
        V { key, w, id }
    }
}
impl Clone for V {
    fn clone(&self) -> V {
        maybe_panic(H_VCLONE);
        let v = V::new(self.key, self.w);
        if TRACE.load(Relaxed) {
            let _c = cold();
            TRACES
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert_with(Default::default)
                .insert(v.id, std::backtrace::Backtrace::force_capture());
        }
        if v.id < V_SLOTS {
            origin()[v.id].fetch_or(0x80, Relaxed);
        }
        v
    }
}
impl Drop for V {
    fn drop(&mut self) {
        LIVE_V.fetch_sub(1, Relaxed);
        if TRACE.load(Relaxed) {
            let _c = cold();
            if let Some(m) = TRACES.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
                m.remove(&self.id);
            }
        }
        if self.id < V_SLOTS && vs()[self.id].swap(2, Relaxed) != 1 {
            DOUBLE.fetch_add(1, Relaxed);
            eprintln!("DOUBLE DROP of value #{} (key {})", self.id, self.key);
        }
        maybe_panic(H_VDROP);
    }
}

static TRACE: AtomicBool = AtomicBool::new(false);
static TRACES: Mutex<Option<std::collections::HashMap<usize, std::backtrace::Backtrace>>> =
    Mutex::new(None);
// ------------------------------------------------------------------------------------------
// Failures

static FAILURES: Mutex<Vec<String>> = Mutex::new(Vec::new());
fn fail(s: String) {
    let mut f = FAILURES.lock().unwrap_or_else(|e| e.into_inner());
    if f.len() < 40 {
        eprintln!("FAIL: {s}");
        f.push(s);
    }
}

fn msg(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(non-string payload)".into())
}

static STRAYS: AtomicU64 = AtomicU64::new(0);

fn install_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let m = msg(info.payload());
        if !m.starts_with("intentional:") && !m.starts_with("loader:") {
            STRAYS.fetch_add(1, Relaxed);
            fail(format!(
                "stray panic: {m} at {:?} on {:?}",
                info.location(),
                thread::current().name()
            ));
            default(info);
        }
    }));
}

// ------------------------------------------------------------------------------------------
// Simulation

const OPS: [&str; 24] = [
    "get",
    "pin_get",
    "peek",
    "contains",
    "insert",
    "insert_ttl",
    "remove",
    "clear",
    "purge",
    "iter",
    "gois",
    "tgois",
    "tgoivw",
    "ins_ver",
    "inval_ver",
    "warm_up",
    "async_gois",
    "async_cancel",
    "get_versioned",
    "pinned_insert_remove",
    "pin_get_versioned",
    "ins_ver_ttl",
    "async_try_ver",
    "len_weight",
];

type C = Cache<K, V>;

#[derive(Clone, Copy, Debug)]
struct Cfg {
    name: &'static str,
    policy: Policy,
    cap: Option<usize>,
    max_w: Option<u64>,
    versioned: bool,
    ttl: bool,
    janitor: bool,
    keys: u64,
}

static PROGRESS: AtomicU64 = AtomicU64::new(0);
static PAUSE: AtomicBool = AtomicBool::new(false);
static PARKED: AtomicUsize = AtomicUsize::new(0);
static STOP: AtomicBool = AtomicBool::new(false);
static CUR: [AtomicUsize; 16] = [const { AtomicUsize::new(usize::MAX) }; 16];
static CALLS: [AtomicU64; 24] = [const { AtomicU64::new(0) }; 24];
static PANICS: [AtomicU64; 24] = [const { AtomicU64::new(0) }; 24];
static VER: AtomicU64 = AtomicU64::new(1);
static LOADER_PANICS: AtomicU64 = AtomicU64::new(0);
static LOADER_ERRS: AtomicU64 = AtomicU64::new(0);
static LOADS: AtomicU64 = AtomicU64::new(0);
static JOINED_PANIC_RETRIES: AtomicU64 = AtomicU64::new(0);
static LISTENER_CALLS: AtomicU64 = AtomicU64::new(0);
static QUIET: AtomicU64 = AtomicU64::new(0);

#[derive(Debug)]
struct LoadErr(u64);

fn loader_outcome(key: u64) -> Result<V, LoadErr> {
    let _cold = cold();
    LOADS.fetch_add(1, Relaxed);
    let r = rnd() % 100;
    if r < 30 {
        // Give waiters time to pile up.
        thread::sleep(Duration::from_micros(50 + rnd() % 300));
    } else if r < 50 {
        thread::yield_now();
    }
    let r = rnd() % 100;
    if r < 6 {
        LOADER_PANICS.fetch_add(1, Relaxed);
        panic!("loader: [t{}] panics for key {key}", TAG.with(|t| t.get()));
    }
    if r < 12 {
        LOADER_ERRS.fetch_add(1, Relaxed);
        return Err(LoadErr(key));
    }
    Ok(V::new(key, 1 + rnd() % 8))
}

struct ParkWaker(thread::Thread);
impl Wake for ParkWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}
fn block_on<F: Future>(f: F) -> F::Output {
    let waker = Waker::from(Arc::new(ParkWaker(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    let start = Instant::now();
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        thread::park_timeout(Duration::from_millis(50));
        if start.elapsed() > Duration::from_secs(20) {
            fail("block_on: no progress for 20 s".into());
            std::process::abort();
        }
    }
}

/// Pending once (waking itself), then ready: an async loader that yields.
struct YieldOnce(bool);
impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

fn check_v(op: &str, k: u64, v: &V) {
    if v.key != k {
        fail(format!(
            "{op}: key {k} returned a value of key {} (#{})",
            v.key, v.id
        ));
    }
    if v.id < V_SLOTS && vs()[v.id].load(Relaxed) != 1 {
        fail(format!("{op}: key {k} returned a dropped value #{}", v.id));
    }
}

fn check_bounds(c: &C, cfg: &Cfg) {
    let len = c.len();
    if len > c.capacity() {
        fail(format!("len {} > capacity {}", len, c.capacity()));
    }
    if let Some(mw) = cfg.max_w {
        let w = c.weight();
        if w > mw {
            fail(format!("weight {w} > max_weight {mw}"));
        }
    }
}

fn one_op(c: &Arc<C>, cfg: &Cfg, op: usize, hot_keys: u64) {
    let nk = if matches!(op, 10..=12 | 15..=17 | 22) {
        hot_keys
    } else {
        cfg.keys
    };
    let k = rnd() % nk;
    let w = 1 + rnd() % 8;
    OP.with(|c| c.set(op as u8));
    match op {
        0 => {
            if let Some(v) = c.get(&K::new(k)) {
                check_v("get", k, &v);
            }
        }
        1 => {
            let p = c.pin();
            if let Some(v) = p.get(&K::new(k)) {
                check_v("pin_get", k, v);
            }
            let k2 = rnd() % cfg.keys;
            if let Some(v) = p.peek(&K::new(k2)) {
                check_v("pin_peek", k2, v);
            }
        }
        2 => {
            if let Some(v) = c.peek(&K::new(k)) {
                check_v("peek", k, &v);
            }
        }
        3 => {
            c.contains_key(&K::new(k));
        }
        4 => {
            let _ = c.insert(K::new(k), V::new(k, w));
        }
        5 => {
            if cfg.ttl {
                let _ =
                    c.insert_with_ttl(K::new(k), V::new(k, w), Duration::from_millis(rnd() % 20));
            }
        }
        6 => {
            if let Some(v) = c.remove(&K::new(k)) {
                check_v("remove", k, &v);
            }
        }
        7 => {
            if rnd() % 20 == 0 {
                c.clear();
            }
        }
        8 => {
            if cfg.ttl {
                c.purge_expired();
            }
        }
        9 => {
            let p = c.pin();
            let mut n = 0;
            let mut wsum = 0;
            for (kk, vv) in p.iter() {
                n += 1;
                wsum += vv.w;
                if kk.0 != vv.key {
                    fail(format!("iter: key {} with value of key {}", kk.0, vv.key));
                }
                if n > 3 * c.capacity() + 1000 {
                    fail("iter: endless".into());
                    break;
                }
            }
            let _ = wsum;
        }
        10 => {
            let v = c.get_or_insert_with(K::new(k), || match loader_outcome(k) {
                Ok(v) => v,
                Err(_) => panic!(
                    "loader: [t{}] infallible loader fails for key {k}",
                    TAG.with(|t| t.get())
                ),
            });
            check_v("get_or_insert_with", k, &v);
        }
        11 => match c.try_get_or_insert_with(K::new(k), || loader_outcome(k)) {
            Ok(v) => check_v("try_get_or_insert_with", k, &v),
            Err(e) => {
                if e.0 != k {
                    fail(format!("try_gois: key {k} got error of key {}", e.0));
                }
            }
        },
        12 => {
            let ver = VER.fetch_add(1, Relaxed);
            match c
                .try_get_or_insert_versioned_with(K::new(k), || loader_outcome(k).map(|v| (v, ver)))
            {
                Ok(v) => check_v("try_gois_versioned", k, &v),
                Err(e) => {
                    if e.0 != k {
                        fail(format!("tgoivw: key {k} got error of key {}", e.0));
                    }
                }
            }
        }
        13 => {
            if cfg.versioned {
                let ver = VER.fetch_add(1, Relaxed) - rnd() % 4;
                let _ = c.insert_versioned(K::new(k), V::new(k, w), ver);
            }
        }
        14 => {
            if cfg.versioned {
                let ver = VER.fetch_add(1, Relaxed) - rnd() % 4;
                let _ = c.invalidate_versioned(K::new(k), ver);
            }
        }
        15 => {
            if rnd() % 8 == 0 {
                let n = 1 + rnd() % 6;
                let keys: Vec<K> = {
                    let _c = cold();
                    (0..n).map(|_| K::new(rnd() % hot_keys)).collect()
                };
                let conc = NonZeroUsize::new(1 + (rnd() % 3) as usize).unwrap();
                let mut opts = WarmUp::new(conc);
                if rnd() % 2 == 0 {
                    opts = opts.rate_limit(NonZeroU32::new(20_000).unwrap());
                }
                let report = c.warm_up(keys, opts, |key: &K| {
                    // Warm-up workers other than this thread: hooks may fire there too.
                    ON.with(|c| c.set(true));
                    let id = key.0;
                    loader_outcome(id)
                });
                if report.loaded + report.failed + report.skipped != n as usize {
                    fail(format!("warm_up: {n} keys but report {report:?}"));
                }
            }
        }
        16 => {
            let yields = rnd() % 2 == 0;
            let v = block_on(c.get_or_insert_with_async(K::new(k), async move {
                if yields {
                    YieldOnce(false).await;
                }
                match loader_outcome(k) {
                    Ok(v) => v,
                    Err(_) => panic!(
                        "loader: [t{}] infallible async loader fails for key {k}",
                        TAG.with(|t| t.get())
                    ),
                }
            }));
            check_v("get_or_insert_with_async", k, &v);
        }
        17 => {
            // Poll once and drop: a cancelled leader or waiter.
            let fut = c.try_get_or_insert_with_async(K::new(k), async move {
                YieldOnce(false).await;
                loader_outcome(k)
            });
            let waker = Waker::from(Arc::new(ParkWaker(thread::current())));
            let mut fut = std::pin::pin!(fut);
            if let Poll::Ready(Ok(v)) = fut.as_mut().poll(&mut Context::from_waker(&waker)) {
                check_v("async_cancel", k, &v);
            }
        }
        18 => {
            if let Some((v, _)) = c.get_versioned(&K::new(k)) {
                check_v("get_versioned", k, &v);
            }
        }
        19 => {
            let p = c.pin();
            let _ = p.insert(K::new(k), V::new(k, w));
            if let Some(v) = p.remove(&K::new((k + 1) % cfg.keys)) {
                check_v("pinned_remove", (k + 1) % cfg.keys, v);
            }
        }
        20 => {
            let p = c.pin();
            if let Some((v, _)) = p.get_versioned(&K::new(k)) {
                check_v("pin_get_versioned", k, v);
            }
        }
        21 => {
            if cfg.versioned && cfg.ttl {
                let ver = VER.fetch_add(1, Relaxed) - rnd() % 4;
                let _ = c.insert_versioned_with_ttl(
                    K::new(k),
                    V::new(k, w),
                    ver,
                    Duration::from_millis(rnd() % 30),
                );
            }
        }
        22 => {
            let ver = VER.fetch_add(1, Relaxed);
            let r = block_on(
                c.try_get_or_insert_versioned_with_async(K::new(k), async move {
                    YieldOnce(false).await;
                    loader_outcome(k).map(|v| (v, ver))
                }),
            );
            match r {
                Ok(v) => check_v("async_try_ver", k, &v),
                Err(e) => {
                    if e.0 != k {
                        fail(format!("async_try_ver: key {k} got error of key {}", e.0));
                    }
                }
            }
        }
        _ => {
            let _c = cold();
            check_bounds(c, cfg);
        }
    }
}

fn worker(c: Arc<C>, cfg: Cfg, t: usize, seed: u64) {
    RNG.with(|r| {
        r.set(
            seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .wrapping_add(t as u64 * 7919)
                | 1,
        )
    });
    TAG.with(|x| x.set(t));
    let hot_keys = 4 + rnd() % 8;
    // Weights: frequent ops more often.
    let table: Vec<usize> = {
        let mut v = Vec::new();
        for (op, n) in [
            (0, 12),
            (1, 6),
            (2, 3),
            (3, 2),
            (4, 12),
            (5, 4),
            (6, 5),
            (7, 1),
            (8, 1),
            (9, 1),
            (10, 8),
            (11, 6),
            (12, 4),
            (13, 5),
            (14, 4),
            (15, 1),
            (16, 3),
            (17, 2),
            (18, 2),
            (19, 3),
            (20, 2),
            (21, 2),
            (22, 2),
            (23, 3),
        ] {
            let only = std::env::var("ONLY_OPS").ok();
            if let Some(o) = &only {
                if !o.split(',').any(|x| x.parse::<usize>().ok() == Some(op)) {
                    continue;
                }
            }
            for _ in 0..n {
                v.push(op);
            }
        }
        v
    };
    while !STOP.load(Relaxed) {
        if PAUSE.load(SeqCst) {
            PARKED.fetch_add(1, SeqCst);
            while PAUSE.load(SeqCst) {
                thread::sleep(Duration::from_micros(200));
            }
            PARKED.fetch_sub(1, SeqCst);
        }
        let op = table[(rnd() % table.len() as u64) as usize];
        CUR[t].store(op, Relaxed);
        CALLS[op].fetch_add(1, Relaxed);
        let r = {
            let _hot = Hot::on();
            catch_unwind(AssertUnwindSafe(|| one_op(&c, &cfg, op, hot_keys)))
        };
        if let Err(p) = r {
            PANICS[op].fetch_add(1, Relaxed);
            let m = msg(&*p);
            if !m.starts_with("intentional:") && !m.starts_with("loader:") {
                fail(format!(
                    "op {}: non-injected panic reached the caller: {m}",
                    OPS[op]
                ));
            } else if op == 15 && m.starts_with("loader:") {
                fail(format!("warm_up: a loader's panic reached the caller: {m}"));
            } else if op != 15 && !m.contains(&format!("[t{t}]")) {
                fail(format!(
                    "op {}: thread {t} caught another thread's panic: {m}",
                    OPS[op]
                ));
            }
            // Drop the payload cold.
            let _c = cold();
            drop(p);
        }
        if matches!(op, 4 | 5 | 10 | 13 | 19) {
            let _c = cold();
            check_bounds(&c, &cfg);
        }
        CUR[t].store(usize::MAX, Relaxed);
        PROGRESS.fetch_add(1, Relaxed);
    }
}

fn quiet_check(c: &Arc<C>, cfg: &Cfg, threads: usize) {
    PAUSE.store(true, SeqCst);
    let start = Instant::now();
    while PARKED.load(SeqCst) < threads {
        thread::sleep(Duration::from_micros(200));
        if start.elapsed() > Duration::from_secs(30) {
            fail("quiet point: workers did not park within 30 s".into());
            return;
        }
    }
    let _c = cold();
    QUIET.fetch_add(1, Relaxed);
    match c.check_invariants() {
        Ok(n) => {
            if n != c.len() {
                fail(format!("check_invariants {n} != len {}", c.len()));
            }
            let p = c.pin();
            let mut cnt = 0;
            let mut w = 0;
            for (k, v) in p.iter() {
                cnt += 1;
                w += v.w;
                if k.0 != v.key {
                    fail(format!("quiet iter: key {} value of {}", k.0, v.key));
                }
            }
            drop(p);
            // Iteration skips expired entries, len counts them.
            if !cfg.ttl && cnt != n {
                fail(format!(
                    "quiet: iter saw {cnt} entries, check_invariants {n}"
                ));
            }
            if cfg.max_w.is_some() && !cfg.ttl && c.weight() != w {
                fail(format!("quiet: weight() {} != sum {w}", c.weight()));
            }
        }
        Err(e) => fail(format!("check_invariants: {e}")),
    }
    check_bounds(c, cfg);
    // Usable: a fresh key round-trips.
    let k = 1_000_000 + QUIET.load(Relaxed);
    match c.insert(K::new(k), V::new(k, 1)) {
        Ok(()) => {
            if c.get(&K::new(k)).map(|v| v.key) != Some(k) {
                fail(format!("quiet: key {k} inserted but not found"));
            }
            if c.remove(&K::new(k)).is_none() {
                fail(format!("quiet: key {k} not removed"));
            }
        }
        Err(e) => {
            if !matches!(e.kind, clockline::InsertErrorKind::Rejected { .. }) {
                fail(format!("quiet: insert of fresh key refused: {e}"));
            }
        }
    }
    // A loader on a hot key must not hang (a left-behind flight).
    for hk in 0..12 {
        let (tx, rx) = std::sync::mpsc::channel();
        let c2 = c.clone();
        thread::spawn(move || {
            let v = c2.get_or_insert_with(K::new(hk), || {
                LOADS.fetch_add(1, Relaxed);
                V::new(hk, 1)
            });
            drop(c2);
            let _ = tx.send(v.key);
        });
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(got) if got == hk => {}
            Ok(got) => fail(format!("quiet: loader on {hk} returned key {got}")),
            Err(_) => {
                fail(format!(
                    "quiet: get_or_insert_with on key {hk} hangs: a flight was left behind"
                ));
                return;
            }
        }
    }
    PAUSE.store(false, SeqCst);
}

fn run(cfg: Cfg, secs: f64, seed: u64, threads: usize) {
    eprintln!(
        "== config {} ({cfg:?}), {threads} threads, {secs} s, seed {seed}",
        cfg.name
    );
    STOP.store(false, SeqCst);
    let slot: Arc<OnceLock<Weak<C>>> = Arc::new(OnceLock::new());
    let mut b = Cache::builder().policy(cfg.policy).record_stats();
    if let Some(n) = cfg.cap {
        b = b.max_capacity(n);
    }
    if let Some(w) = cfg.max_w {
        b = b.max_weight(w).weigher(|_k: &K, v: &V| {
            maybe_panic(H_WEIGHER);
            v.w
        });
    }
    if cfg.versioned {
        b = b.versioned().max_tombstones(32);
    }
    if cfg.ttl {
        b = b.time_to_live(Duration::from_millis(40));
        if cfg.janitor {
            b = b.janitor(Duration::from_millis(3));
        }
    }
    let s2 = slot.clone();
    b = b.eviction_listener(move |k: &K, v: &V, cause: RemovalCause| {
        LISTENER_CALLS.fetch_add(1, Relaxed);
        if k.0 != v.key {
            fail(format!(
                "listener: key {} with value of key {} ({cause:?})",
                k.0, v.key
            ));
        }
        maybe_panic(H_LISTENER);
        if !ON.with(|c| c.get()) {
            return;
        }
        // Call back into the cache, one level deep.
        if DEPTH.with(|d| d.get()) == 0 && rnd() % 4 == 0 {
            if let Some(c) = s2.get().and_then(Weak::upgrade) {
                DEPTH.with(|d| d.set(1));
                struct Undepth;
                impl Drop for Undepth {
                    fn drop(&mut self) {
                        DEPTH.with(|d| d.set(0));
                    }
                }
                let _u = Undepth;
                let kk = rnd() % 64;
                match rnd() % 4 {
                    3 => {
                        // A load from the listener (never of a key this thread is loading:
                        // its flight has ended before the listener runs).
                        let v = c.get_or_insert_with(K::new(kk % 8), || {
                            LOADS.fetch_add(1, Relaxed);
                            V::new(kk % 8, 1)
                        });
                        check_v("listener load", kk % 8, &v);
                    }
                    0 => {
                        if let Some(v) = c.get(&K::new(kk)) {
                            check_v("listener get", kk, &v);
                        }
                    }
                    1 => {
                        let _ = c.insert(K::new(kk), V::new(kk, 1));
                    }
                    _ => {
                        c.remove(&K::new(kk));
                    }
                }
            }
        }
    });
    let c: Arc<C> = Arc::new(b.build().unwrap());
    slot.set(Arc::downgrade(&c)).ok();

    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let c = c.clone();
            thread::Builder::new()
                .name(format!("w{t}"))
                .spawn(move || worker(c, cfg, t, seed))
                .unwrap()
        })
        .collect();
    let start = Instant::now();
    let mut next_quiet = Instant::now() + Duration::from_millis(700);
    while start.elapsed().as_secs_f64() < secs {
        thread::sleep(Duration::from_millis(20));
        if Instant::now() >= next_quiet {
            quiet_check(&c, &cfg, threads);
            next_quiet = Instant::now() + Duration::from_millis(700);
        }
    }
    STOP.store(true, SeqCst);
    for h in handles {
        if h.join().is_err() {
            fail("a worker thread panicked".into());
        }
    }
    {
        let _c = cold();
        quiet_check(&c, &cfg, 0);
        PAUSE.store(false, SeqCst);
    }
    if let Some(s) = c.stats() {
        eprintln!("   stats: {s:?}");
        let loads = LOADS.load(SeqCst);
        if s.loads_ok + s.loads_failed != loads {
            fail(format!(
                "stats: loads_ok {} + loads_failed {} != loader runs {loads}",
                s.loads_ok, s.loads_failed
            ));
        }
    }
    eprintln!(
        "   len {} weight {} tombstones {}",
        c.len(),
        c.weight(),
        c.tombstones()
    );
    let mut c = c;
    let c = loop {
        match Arc::try_unwrap(c) {
            Ok(c) => break c,
            Err(back) => {
                c = back;
                thread::sleep(Duration::from_millis(1));
            }
        }
    };
    if catch_unwind(AssertUnwindSafe(|| drop(c))).is_err() {
        fail("drop of the cache panicked (no hooks on)".into());
    }
    // Everything freed, exactly once.
    let t0 = Instant::now();
    while (LIVE_V.load(SeqCst) != 0 || LIVE_K.load(SeqCst) != 0)
        && t0.elapsed() < Duration::from_secs(20)
    {
        clockline::flush_deferred();
        thread::sleep(Duration::from_millis(1));
        PROGRESS.fetch_add(1, Relaxed);
    }
    let lv = LIVE_V.load(SeqCst);
    let lk = LIVE_K.load(SeqCst);
    if lv != 0 || lk != 0 {
        let used = NEXT_V.load(SeqCst).min(V_SLOTS);
        let mut leaked = Vec::new();
        for id in 0..used {
            if vs()[id].load(SeqCst) == 1 {
                let o = origin()[id].load(SeqCst);
                leaked.push(format!(
                    "#{id} by {}{}",
                    OPS.get((o & 0x7f) as usize).unwrap_or(&"?"),
                    if o & 0x80 != 0 { " (clone)" } else { "" }
                ));
                if leaked.len() >= 10 {
                    break;
                }
            }
        }
        if let Some(m) = TRACES.lock().unwrap().as_ref() {
            for (id, bt) in m.iter().take(2) {
                eprintln!("LEAKED #{id} cloned at:\n{bt}");
            }
        }
        fail(format!(
            "config {}: leaked {lv} values, {lk} keys: {leaked:?}",
            cfg.name
        ));
        // Start the next config from zero.
        for id in 0..used {
            vs()[id].store(0, SeqCst);
        }
        LIVE_V.store(0, SeqCst);
        LIVE_K.store(0, SeqCst);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs: f64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(8.0);
    let seed: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let threads: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(6);
    let only: Option<String> = args.get(4).cloned();
    if let Ok(m) = std::env::var("HOOKS") {
        MASK.store(m.parse().unwrap(), SeqCst);
    }
    if let Ok(r) = std::env::var("RATE") {
        RATE.store(r.parse().unwrap(), SeqCst);
    }
    install_hook();
    TRACE.store(std::env::var("TRACE").is_ok(), SeqCst);
    let _ = vs();
    let _ = origin();
    // Watchdog.
    thread::spawn(|| {
        let mut last = PROGRESS.load(SeqCst);
        let mut still = 0;
        loop {
            thread::sleep(Duration::from_secs(1));
            let now = PROGRESS.load(SeqCst);
            if now == last {
                still += 1;
            } else {
                still = 0;
                last = now;
            }
            if still >= 10 {
                let cur: Vec<String> = CUR
                    .iter()
                    .map(|c| OPS.get(c.load(SeqCst)).copied().unwrap_or("-").to_string())
                    .collect();
                eprintln!(
                    "WATCHDOG: no progress for 10 s; threads in: {cur:?}; pause {}",
                    PAUSE.load(SeqCst)
                );
                if std::env::var("GDB").is_ok() {
                    let pid = std::process::id().to_string();
                    let out = std::process::Command::new("gdb")
                        .args(["-p", &pid, "-batch", "-ex", "thread apply all bt 30"])
                        .output();
                    if let Ok(o) = out {
                        let path = std::env::temp_dir().join("hostile_sim_gdb.txt");
                        std::fs::write(&path, &o.stdout).ok();
                        eprintln!(
                            "gdb output in {} ({} bytes)",
                            path.display(),
                            o.stdout.len()
                        );
                    }
                }
                std::process::abort();
            }
        }
    });
    let configs = [
        Cfg {
            name: "clock-count",
            policy: Policy::Clock,
            cap: Some(64),
            max_w: None,
            versioned: false,
            ttl: false,
            janitor: false,
            keys: 200,
        },
        Cfg {
            name: "adaptive-count-ttl",
            policy: Policy::Adaptive,
            cap: Some(64),
            max_w: None,
            versioned: false,
            ttl: true,
            janitor: false,
            keys: 200,
        },
        Cfg {
            name: "clock-weight-ver",
            policy: Policy::Clock,
            cap: None,
            max_w: Some(150),
            versioned: true,
            ttl: false,
            janitor: false,
            keys: 200,
        },
        Cfg {
            name: "adaptive-weight-ver-ttl-janitor",
            policy: Policy::Adaptive,
            cap: Some(100),
            max_w: Some(150),
            versioned: true,
            ttl: true,
            janitor: true,
            keys: 200,
        },
        Cfg {
            name: "adaptive-count-ver",
            policy: Policy::Adaptive,
            cap: Some(32),
            max_w: None,
            versioned: true,
            ttl: false,
            janitor: false,
            keys: 100,
        },
        Cfg {
            name: "clock-weight-ttl",
            policy: Policy::Clock,
            cap: None,
            max_w: Some(300),
            versioned: false,
            ttl: true,
            janitor: false,
            keys: 2000,
        },
    ];
    for cfg in configs {
        if let Some(o) = &only {
            if cfg.name != o {
                continue;
            }
        }
        run(cfg, secs, seed, threads);
        let calls: Vec<String> = (0..OPS.len())
            .map(|i| {
                format!(
                    "{}={}/{}",
                    OPS[i],
                    CALLS[i].swap(0, Relaxed),
                    PANICS[i].swap(0, Relaxed)
                )
            })
            .collect();
        eprintln!("   calls/panics: {}", calls.join(" "));
        let inj: Vec<String> = (0..8)
            .map(|i| format!("{}={}", NAMES[i], INJECTED[i].swap(0, Relaxed)))
            .collect();
        eprintln!(
            "   injected: {} ; loads {} (panics {}, errors {}), listener calls {}, quiet checks {}",
            inj.join(" "),
            LOADS.swap(0, Relaxed),
            LOADER_PANICS.swap(0, Relaxed),
            LOADER_ERRS.swap(0, Relaxed),
            LISTENER_CALLS.swap(0, Relaxed),
            QUIET.swap(0, Relaxed)
        );
    }
    let _ = JOINED_PANIC_RETRIES.load(Relaxed);
    let f = FAILURES.lock().unwrap();
    eprintln!(
        "DOUBLE drops: {}, strays: {}",
        DOUBLE.load(SeqCst),
        STRAYS.load(SeqCst)
    );
    if f.is_empty() {
        eprintln!("OK: no failure");
    } else {
        eprintln!("{} FAILURES", f.len());
        std::process::exit(1);
    }
}
