//! Resource dry run: thread churn, cache churn (multi-tenant), a cache in a `static`
//! (2026-11-27; what it found and measured: docs/benchmarks.md section 7.2).
//!
//! ```text
//! cargo run --release --example churn_sim -- churn   [secs] [flush 0|1] [alive] [ops]
//! cargo run --release --example churn_sim -- tenants [secs] [threads]
//! cargo run --release --example churn_sim -- static  [mode: join|nojoin|exit] [threads] [secs]
//! ```
//!
//! Every second it prints: threads ever spawned, RSS, live heap bytes and allocations (a
//! counting global allocator), OS threads of the process (/proc/self/task), live tracked values.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use clockline::{Cache, Compute, Policy};

// ---------- counting allocator ----------
struct Counting;
static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static LIVE_ALLOCS: AtomicUsize = AtomicUsize::new(0);
static TOTAL_ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to `System` unchanged, adding only atomic counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout, as `GlobalAlloc::alloc` requires.
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(l.size(), Relaxed);
            LIVE_ALLOCS.fetch_add(1, Relaxed);
            TOTAL_ALLOCS.fetch_add(1, Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` came from this allocator (so from `System`) with layout `l`.
        unsafe { System.dealloc(p, l) };
        LIVE_BYTES.fetch_sub(l.size(), Relaxed);
        LIVE_ALLOCS.fetch_sub(1, Relaxed);
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(l.size(), Relaxed);
            LIVE_ALLOCS.fetch_add(1, Relaxed);
            TOTAL_ALLOCS.fetch_add(1, Relaxed);
        }
        p
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // SAFETY: `p` came from `System` with layout `l`; the caller's `new` is valid.
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            LIVE_BYTES.fetch_add(new, Relaxed);
            LIVE_BYTES.fetch_sub(l.size(), Relaxed);
        }
        q
    }
}
#[global_allocator]
static A: Counting = Counting;

// ---------- tracked values ----------
static CREATED: AtomicU64 = AtomicU64::new(0);
static DROPPED: AtomicU64 = AtomicU64::new(0);

#[derive(Debug)]
struct Tracked {
    _payload: [u64; 4],
}
impl Tracked {
    fn new(x: u64) -> Self {
        CREATED.fetch_add(1, Relaxed);
        Tracked { _payload: [x; 4] }
    }
}
impl Drop for Tracked {
    fn drop(&mut self) {
        let d = DROPPED.fetch_add(1, Relaxed) + 1;
        assert!(d <= CREATED.load(Relaxed), "dropped more than created");
    }
}
fn live_tracked() -> i64 {
    CREATED.load(Relaxed) as i64 - DROPPED.load(Relaxed) as i64
}

// ---------- process probes ----------
fn rss_kb() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    pages * 4
}
fn os_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}
fn thread_names() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
                .map(|s| s.trim().to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[path = "../benches/common/mod.rs"]
#[allow(dead_code)]
mod common;
use common::SplitMix64 as Rng;

fn sample(t0: Instant, label: &str, extra: &str) {
    println!(
        "{:>6.1}s {label:<10} rss={:>7} KiB live_bytes={:>10} live_allocs={:>8} os_threads={:>3} tracked_live={:>7} {extra}",
        t0.elapsed().as_secs_f64(),
        rss_kb(),
        LIVE_BYTES.load(Relaxed),
        LIVE_ALLOCS.load(Relaxed),
        os_threads(),
        live_tracked(),
    );
}

fn settle() {
    for _ in 0..200 {
        clockline::flush_deferred();
    }
}

// ---------- (1) thread-per-request churn ----------
struct Caches {
    blobs: Cache<u64, Vec<u8>>,
    sessions: Cache<String, Arc<Tracked>>,
    versioned: Cache<u64, Arc<Tracked>>,
    version: AtomicU64,
}

fn request(c: &Caches, seed: u64, ops: usize) {
    let mut r = Rng::new(seed | 1);
    for _ in 0..ops {
        let op = r.below(100);
        match r.below(3) {
            0 => {
                let k = r.below(20_000);
                match op {
                    0..=49 => {
                        let _ = c.blobs.get(&k);
                    }
                    50..=74 => {
                        let len = 64 + r.below(4032) as usize;
                        let _ = c.blobs.insert(k, vec![1u8; len]);
                    }
                    75..=84 => {
                        let _ = c.blobs.remove(&k);
                    }
                    85..=92 => {
                        let _ = c.blobs.compute(k, |v| match v {
                            Some(v) if v.len() > 2048 => Compute::Remove,
                            Some(v) => Compute::Put(vec![2u8; v.len() + 64]),
                            None => Compute::Put(vec![3u8; 256]),
                        });
                    }
                    _ => {
                        let _ = c.blobs.get_or_insert_with(k, || vec![4u8; 512]);
                    }
                }
            }
            1 => {
                let k = format!("session-{}", r.below(5_000));
                match op {
                    0..=49 => {
                        let _ = c.sessions.get(&k);
                    }
                    50..=74 => {
                        let _ = c.sessions.insert(k, Arc::new(Tracked::new(op)));
                    }
                    75..=84 => {
                        let _ = c.sessions.remove(&k);
                    }
                    85..=92 => {
                        let _ = c.sessions.compute(k, |v| match v {
                            Some(_) => Compute::Remove,
                            None => Compute::Put(Arc::new(Tracked::new(1))),
                        });
                    }
                    _ => {
                        let _ = c
                            .sessions
                            .get_or_insert_with(k, || Arc::new(Tracked::new(2)));
                    }
                }
            }
            _ => {
                let k = r.below(5_000);
                match op {
                    0..=49 => {
                        let _ = c.versioned.get_versioned(&k);
                    }
                    50..=79 => {
                        let v = c.version.fetch_add(1, Relaxed);
                        let _ = c
                            .versioned
                            .insert_versioned(k, Arc::new(Tracked::new(v)), v);
                    }
                    80..=89 => {
                        let v = c.version.fetch_add(1, Relaxed);
                        let _ = c.versioned.invalidate_versioned(k, v);
                    }
                    90..=94 => {
                        let _ = c.versioned.remove(&k);
                    }
                    _ => {
                        let _ = c
                            .versioned
                            .get_or_insert_with(k, || Arc::new(Tracked::new(3)));
                    }
                }
            }
        }
    }
}

fn churn(secs: u64, flush: bool, alive: usize, ops: usize) {
    let t0 = Instant::now();
    sample(t0, "baseline", "");
    let caches = Arc::new(Caches {
        blobs: Cache::builder()
            .max_weight(8 << 20)
            .weigher(|_: &u64, v: &Vec<u8>| v.len() as u64)
            .build()
            .unwrap(),
        sessions: Cache::builder()
            .max_capacity(4096)
            .time_to_live(Duration::from_millis(200))
            .build()
            .unwrap(),
        versioned: Cache::builder()
            .max_capacity(4096)
            .versioned()
            .build()
            .unwrap(),
        version: AtomicU64::new(1),
    });
    sample(t0, "built", "");
    let spawned = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (caches, spawned, stop) = (caches.clone(), spawned.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Relaxed) {
                std::thread::sleep(Duration::from_secs(2));
                sample(
                    t0,
                    "churn",
                    &format!(
                        "spawned={} blobs.weight={} sessions.len={} versioned.len={} tomb={}",
                        spawned.load(Relaxed),
                        caches.blobs.weight(),
                        caches.sessions.len(),
                        caches.versioned.len(),
                        caches.versioned.tombstones()
                    ),
                );
            }
        })
    };
    let mut handles: Vec<std::thread::JoinHandle<()>> = Vec::new();
    let deadline = t0 + Duration::from_secs(secs);
    let mut n = 0u64;
    while Instant::now() < deadline {
        handles.retain(|h| !h.is_finished());
        while handles.len() < alive {
            n += 1;
            let c = caches.clone();
            handles.push(std::thread::spawn(move || {
                request(&c, n.wrapping_mul(0x9E37_79B9_7F4A_7C15), ops);
                if flush {
                    clockline::flush_deferred();
                }
            }));
            spawned.fetch_add(1, Relaxed);
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    for h in handles {
        h.join().unwrap();
    }
    stop.store(true, Relaxed);
    sampler.join().unwrap();
    sample(t0, "joined", &format!("spawned={}", spawned.load(Relaxed)));
    settle();
    let entries = caches.sessions.len() + caches.versioned.len();
    sample(
        t0,
        "settled",
        &format!(
            "blobs.len={} blobs.weight={} sessions.len={} versioned.len={} (tracked should be ~{entries})",
            caches.blobs.len(),
            caches.blobs.weight(),
            caches.sessions.len(),
            caches.versioned.len()
        ),
    );
    drop(caches);
    settle();
    std::thread::sleep(Duration::from_millis(50));
    sample(t0, "dropped", &format!("threads={:?}", thread_names()));
}

// ---------- (2) multi-tenant ----------
fn tenants(secs: u64, threads: usize) {
    let t0 = Instant::now();
    // Warm the process-wide pieces (the epoch collector, thread-locals) once, then baseline.
    {
        let c: Cache<u64, Arc<Tracked>> = Cache::builder()
            .max_capacity(16)
            .time_to_live(Duration::from_secs(1))
            .build()
            .unwrap();
        c.insert(1, Arc::new(Tracked::new(0))).unwrap();
    }
    settle();
    std::thread::sleep(Duration::from_millis(20));
    let base_allocs = LIVE_ALLOCS.load(Relaxed);
    let base_bytes = LIVE_BYTES.load(Relaxed);
    let base_threads = os_threads();
    sample(t0, "baseline", &format!("threads={:?}", thread_names()));
    let built = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (built, stop) = (built.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Relaxed) {
                std::thread::sleep(Duration::from_secs(2));
                sample(
                    t0,
                    "tenants",
                    &format!("caches_built={}", built.load(Relaxed)),
                );
            }
        })
    };
    let deadline = t0 + Duration::from_secs(secs);
    // CFG_MASK: bit 0 Policy::Clock, bit 1 TTL, bit 2 janitor (with TTL).
    let mask: u64 = std::env::var("CFG_MASK")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let built = built.clone();
            std::thread::spawn(move || {
                let mut r = Rng::new(0x1234_5678 + t as u64 * 7919);
                let mut held: Vec<Cache<u64, Arc<Tracked>>> = Vec::new();
                while Instant::now() < deadline {
                    let cfg = r.below(8) & mask;
                    let cap = 16 + r.below(600) as usize;
                    let mut b = Cache::builder().max_capacity(cap);
                    if cfg & 1 == 1 {
                        b = b.policy(Policy::Clock);
                    }
                    if cfg & 2 == 2 {
                        b = b.time_to_live(Duration::from_millis(1 + r.below(50)));
                        if cfg & 4 == 4 {
                            b = b.janitor(Duration::from_millis(1 + r.below(20)));
                        }
                    }
                    let c = b.build().unwrap();
                    built.fetch_add(1, Relaxed);
                    for _ in 0..(cap as u64 * 2) {
                        let k = r.below(cap as u64 * 2);
                        match r.below(4) {
                            0 | 1 => {
                                let _ = c.insert(k, Arc::new(Tracked::new(k)));
                            }
                            2 => {
                                let _ = c.get(&k);
                            }
                            _ => {
                                let _ = c.remove(&k);
                            }
                        }
                    }
                    held.push(c);
                    if held.len() > 4 || r.below(3) == 0 {
                        let i = r.below(held.len() as u64) as usize;
                        drop(held.swap_remove(i));
                    }
                }
                drop(held);
                clockline::flush_deferred();
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    stop.store(true, Relaxed);
    sampler.join().unwrap();
    sample(
        t0,
        "joined",
        &format!("caches_built={}", built.load(Relaxed)),
    );
    for round in 0..4 {
        settle();
        std::thread::sleep(Duration::from_millis(50));
        if live_tracked() == 0 {
            break;
        }
        sample(t0, "settling", &format!("round={round}"));
    }
    sample(
        t0,
        "settled",
        &format!(
            "d_allocs={} d_bytes={} d_threads={} created={} dropped={} threads={:?}",
            LIVE_ALLOCS.load(Relaxed) as i64 - base_allocs as i64,
            LIVE_BYTES.load(Relaxed) as i64 - base_bytes as i64,
            os_threads() as i64 - base_threads as i64,
            CREATED.load(Relaxed),
            DROPPED.load(Relaxed),
            thread_names()
        ),
    );
}

// ---------- (3) a cache in a static ----------
static SHARED: LazyLock<Cache<String, Arc<Tracked>>> = LazyLock::new(|| {
    Cache::builder()
        .max_capacity(10_000)
        .time_to_live(Duration::from_millis(100))
        .janitor(Duration::from_millis(5))
        .build()
        .unwrap()
});
static PLAIN: LazyLock<Cache<u64, Vec<u8>>> = LazyLock::new(|| Cache::new(10_000));

fn static_mode(mode: &str) {
    let threads: u64 = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    let t0 = Instant::now();
    let work = |t: u64, n: u64| {
        let mut r = Rng::new(t * 31 + 7);
        for i in 0..n {
            let k = r.below(20_000);
            let _ = SHARED.insert(format!("k{k}"), Arc::new(Tracked::new(k)));
            let _ = SHARED.get(&format!("k{}", r.below(20_000)));
            let _ = PLAIN.insert(k, vec![0u8; 100]);
            let _ = PLAIN.get(&i);
            if i % 97 == 0 {
                let _ = SHARED.remove(&format!("k{k}"));
            }
        }
    };
    let join = mode == "join";
    let hs: Vec<_> = (0..threads)
        .map(|t| {
            std::thread::spawn(move || {
                if join {
                    work(t, 20_000)
                } else {
                    loop {
                        work(t, 1_000)
                    }
                }
            })
        })
        .collect();
    if mode == "join" {
        for h in hs {
            h.join().unwrap();
        }
    } else {
        let secs: u64 = std::env::args()
            .nth(3)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        for _ in 0..secs {
            std::thread::sleep(Duration::from_secs(1));
            sample(
                t0,
                "busy",
                &format!("SHARED.len={} PLAIN.len={}", SHARED.len(), PLAIN.len()),
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    sample(
        t0,
        "static",
        &format!("mode={mode} threads={:?}", thread_names()),
    );
    println!("returning from main at {:.3}s", t0.elapsed().as_secs_f64());
    if mode == "exit" {
        std::process::exit(0);
    }
}

// ---------- long-lived busy threads on one cache: garbage backlog ----------
fn busy(threads: u64, secs: u64, janitor: bool, ttl: bool) {
    let t0 = Instant::now();
    let mut b = Cache::builder().max_capacity(10_000);
    if ttl {
        b = b.time_to_live(Duration::from_millis(100));
    }
    if janitor {
        b = b.janitor(Duration::from_millis(5));
    }
    let c: Arc<Cache<String, Arc<Tracked>>> = Arc::new(b.build().unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let hs: Vec<_> = (0..threads)
        .map(|t| {
            let (c, stop) = (c.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut r = Rng::new(t * 31 + 7);
                while !stop.load(Relaxed) {
                    let k = r.below(20_000);
                    let _ = c.insert(format!("k{k}"), Arc::new(Tracked::new(k)));
                    let _ = c.get(&format!("k{}", r.below(20_000)));
                }
            })
        })
        .collect();
    let mut max_live = 0i64;
    let mut max_bytes = 0usize;
    for _ in 0..secs * 4 {
        std::thread::sleep(Duration::from_millis(250));
        max_live = max_live.max(live_tracked());
        max_bytes = max_bytes.max(LIVE_BYTES.load(Relaxed));
    }
    stop.store(true, Relaxed);
    for h in hs {
        h.join().unwrap();
    }
    sample(
        t0,
        "busy",
        &format!(
            "threads={threads} janitor={janitor} ttl={ttl} len={} max_tracked_live={max_live} max_live_bytes={max_bytes}",
            c.len()
        ),
    );
}

// ---------- fixed cost per cache, per-thread retained memory ----------
fn fixed() {
    for &cap in &[16usize, 100, 300, 1000, 10_000] {
        for &(clock, ttl) in &[(false, false), (true, false), (false, true), (true, true)] {
            settle();
            let b0 = LIVE_BYTES.load(Relaxed);
            let caches: Vec<Cache<u64, u64>> = (0..50)
                .map(|_| {
                    let mut b = Cache::builder().max_capacity(cap);
                    if clock {
                        b = b.policy(Policy::Clock);
                    }
                    if ttl {
                        b = b.time_to_live(Duration::from_secs(60));
                    }
                    b.build().unwrap()
                })
                .collect();
            let per = (LIVE_BYTES.load(Relaxed) - b0) / 50;
            drop(caches);
            println!(
                "empty Cache<u64,u64> cap={cap:>6} clock={clock:<5} ttl={ttl:<5}: {per:>7} bytes"
            );
        }
    }
    // A long-lived thread that churned 4 caches of different node layouts, then parks: what
    // does it keep beyond the caches' live entries?
    let c1: Arc<Cache<u64, u64>> = Arc::new(Cache::new(100));
    let c2: Arc<Cache<u64, [u64; 8]>> = Arc::new(Cache::new(100));
    let c3: Arc<Cache<u64, [u64; 32]>> = Arc::new(Cache::new(100));
    let c4: Arc<Cache<u64, [u64; 64]>> = Arc::new(Cache::new(100));
    let (a, b, c, d) = (c1.clone(), c2.clone(), c3.clone(), c4.clone());
    settle();
    let b0 = LIVE_BYTES.load(Relaxed);
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let h = std::thread::spawn(move || {
        for i in 0..200_000u64 {
            a.insert(i, i).unwrap();
            b.insert(i, [i; 8]).unwrap();
            c.insert(i, [i; 32]).unwrap();
            d.insert(i, [i; 64]).unwrap();
        }
        settle();
        done_tx.send(()).unwrap();
        rx.recv().unwrap();
    });
    done_rx.recv().unwrap();
    settle();
    let held = LIVE_BYTES.load(Relaxed) - b0;
    let entries: usize = [c1.len(), c2.len(), c3.len(), c4.len()].iter().sum();
    println!("parked writer thread + 4 caches of 100: {held} bytes beyond the empty caches (entries {entries})");
    tx.send(()).unwrap();
    h.join().unwrap();
    settle();
    println!(
        "after the thread exits: {} bytes",
        LIVE_BYTES.load(Relaxed) as i64 - b0 as i64
    );
}

// ---------- ticker restarts: one short-lived TTL cache at a time ----------
fn ticker(n: u64, gap_us: u64) {
    let t0 = Instant::now();
    for i in 0..n {
        let c: Cache<u64, u64> = Cache::builder()
            .max_capacity(16)
            .time_to_live(Duration::from_secs(1))
            .build()
            .unwrap();
        c.insert(i, i).unwrap();
        drop(c);
        std::thread::sleep(Duration::from_micros(gap_us));
    }
    println!(
        "{n} TTL caches built and dropped one at a time, {gap_us} us apart: {:?}; sizeof Cache<u64,u64> = {}",
        t0.elapsed(),
        std::mem::size_of::<Cache<u64, u64>>()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: u64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    match args.first().map(String::as_str) {
        Some("churn") => churn(
            arg(1, 30),
            arg(2, 0) == 1,
            arg(3, 16) as usize,
            arg(4, 300) as usize,
        ),
        Some("tenants") => tenants(arg(1, 30), arg(2, 8) as usize),
        Some("busy") => busy(arg(1, 16), arg(2, 10), arg(3, 0) == 1, arg(4, 1) == 1),
        Some("ticker") => ticker(arg(1, 1000), arg(2, 2000)),
        Some("fixed") => fixed(),
        Some("static") => static_mode(args.get(1).map(String::as_str).unwrap_or("join")),
        _ => eprintln!("usage: churn_sim churn|tenants|static ..."),
    }
}
