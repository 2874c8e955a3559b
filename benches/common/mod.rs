//! Workloads and contenders shared by `benches/throughput.rs` and `examples/showdown`.
//!
//! * A workload is a [`Spec`] (Zipf exponent, what each access does, key space, capacity) plus
//!   a key array: the three standard ones ([`Workload::standard`]) and the get/put grid
//!   ([`Workload::getput`]: [`GRID_ZIPF`] x [`GRID_READS`]) are all built by [`Workload::new`].
//! * Key arrays are pre-generated and deterministic: Zipf over ranks by inverse CDF, driven by
//!   splitmix64 with a fixed seed, and ranks scattered over the `u64` key space by a fixed
//!   bijection, so hot keys are not neighbours. Threads walk the array from their own offsets;
//!   no random number is drawn inside a measured loop.
//! * Every contender is built with the same [`hasher`] (ahash with fixed seeds), holds at most
//!   `capacity` entries (except papaya, which never evicts: the ceiling), and stores `u64 -> u64`.
//!
//! Included with `mod common;` from the bench and `#[path = ...] mod common;` from the example;
//! each uses only part of it, hence the `allow(dead_code)` on those declarations.

use std::num::NonZeroUsize;
use std::sync::Mutex;

/// Hardware counters (perf_event) per operation; see the module docs.
pub mod counters;
/// get-hit, get-miss and insert workloads for the counters and the callgrind simulation.
pub mod per_op;

/// The hasher every contender gets: ahash with fixed seeds, so all of them hash alike and runs
/// repeat.
pub fn hasher() -> ahash::RandomState {
    ahash::RandomState::with_seeds(
        0x243f_6a88_85a3_08d3,
        0x1319_8a2e_0370_7344,
        0xa409_3822_299f_31d0,
        0x082e_fa98_ec4e_6c89,
    )
}

// ---------------------------------------------------------------------------------------------
// Deterministic key generation
// ---------------------------------------------------------------------------------------------

/// splitmix64: a tiny, fast, well-mixed generator; fine for building workloads.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }

    /// In `0..n` (modulo bias, negligible for the small `n` the simulations draw).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in [0, 1), 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// splitmix64's finalizer: a bijection on `u64` (every step is invertible).
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The key of popularity rank `rank` (0 = hottest): a fixed permutation of `u64`, so distinct
/// ranks give distinct keys and hot keys are scattered over the key space.
#[inline]
pub fn key_of_rank(rank: usize) -> u64 {
    mix64(rank as u64 ^ 0x5851_f42d_4c95_7f2d)
}

/// Zipf(`s`) over ranks `0..n`, sampled by inverse CDF (binary search in a table of `n` f64).
#[derive(Debug, Clone)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, s: f64) -> Self {
        assert!(n > 0);
        let mut cdf = Vec::with_capacity(n);
        let mut sum = 0.0;
        for r in 0..n {
            sum += 1.0 / ((r + 1) as f64).powf(s);
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        Self { cdf }
    }

    /// A rank; 0 is the most popular.
    pub fn sample(&self, rng: &mut SplitMix64) -> usize {
        let u = rng.next_f64();
        self.cdf
            .partition_point(|&c| c <= u)
            .min(self.cdf.len() - 1)
    }
}

/// The one-file probes' cache (`examples/cache_aside_probe.rs`, `examples/evict_scaling.rs`):
/// the cache-aside workload's 2^17 entries, the policy named by `arg` ("clock", else the
/// adaptive default), ahash with fixed seeds. Returns the policy too, for the printout.
pub fn probe_cache(
    arg: Option<&str>,
) -> (
    clockline::Policy,
    clockline::Cache<u64, u64, ahash::RandomState>,
) {
    let policy = match arg {
        Some("clock") => clockline::Policy::Clock,
        _ => clockline::Policy::Adaptive,
    };
    let cache = clockline::Cache::builder()
        .max_capacity(1 << 17)
        .policy(policy)
        .hasher(ahash::RandomState::with_seeds(1, 2, 3, 4))
        .build()
        .expect("cache");
    (policy, cache)
}

/// The showdown's cache-aside keys for the probes: 2^22 draws of Zipf 0.99 over 2^20 ranks.
pub fn probe_zipf_keys() -> Vec<u64> {
    zipf_keys(1 << 20, ZIPF_S, 1 << 22, 2)
}

/// `len` keys drawn from Zipf(`s`) over `key_space` ranks, each mapped by [`key_of_rank`].
pub fn zipf_keys(key_space: usize, s: f64, len: usize, seed: u64) -> Vec<u64> {
    let zipf = Zipf::new(key_space, s);
    let mut rng = SplitMix64::new(seed);
    (0..len)
        .map(|_| key_of_rank(zipf.sample(&mut rng)))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Workloads
// ---------------------------------------------------------------------------------------------

/// What each access does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `get` only.
    Get,
    /// `get`; on a miss, `insert` (mokabench's cache-aside).
    CacheAside,
    /// `insert` for `write_percent` of the accesses, spread evenly, `get` for the rest.
    Mixed { write_percent: u32 },
}

impl Op {
    /// `read_pct` % `get`, the rest `insert`: [`Op::Get`] at 100, else [`Op::Mixed`].
    pub fn reads(read_pct: u32) -> Self {
        assert!(read_pct <= 100, "read share {read_pct}% over 100%");
        if read_pct == 100 {
            Op::Get
        } else {
            Op::Mixed {
                write_percent: 100 - read_pct,
            }
        }
    }

    /// The share of accesses that are plain `get`s, in percent; `None` for cache-aside, whose
    /// inserts depend on the hits.
    pub fn read_pct(self) -> Option<u32> {
        match self {
            Op::Get => Some(100),
            Op::CacheAside => None,
            Op::Mixed { write_percent } => Some(100 - write_percent),
        }
    }
}

/// What defines a workload: the key distribution, what each access does, and the sizes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spec {
    /// Zipf exponent of the key popularity (0.99 in the standard workloads).
    pub zipf: f64,
    pub op: Op,
    /// Distinct keys the accesses are drawn from.
    pub key_space: usize,
    /// Entries each contender may hold. The cache is pre-filled with the hottest
    /// `min(key_space, capacity)` keys.
    pub capacity: usize,
}

impl Spec {
    /// The get/put grid (Caffeine's GetPutBenchmark): read-hit's key space and capacity (all
    /// keys fit twice over, so every insert replaces a resident key and nothing is evicted),
    /// `read_pct` % `get`, the rest `insert`, spread evenly, Zipf `zipf`.
    pub fn getput(sz: Sizes, zipf: f64, read_pct: u32) -> Self {
        Spec {
            zipf,
            op: Op::reads(read_pct),
            key_space: sz.read_keys,
            capacity: 2 * sz.read_keys,
        }
    }
}

/// Sizes of the standard workloads; [`Sizes::FULL`] for measurements, [`Sizes::QUICK`] for
/// smoke runs.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Accesses in each pre-generated key array (a power of two).
    pub accesses: usize,
    /// read-hit: distinct keys, all resident.
    pub read_keys: usize,
    /// cache-aside: key space and capacity.
    pub aside_keys: usize,
    /// cache-aside: accesses in its key array (a power of two). Longer than the others, so that
    /// a run does not replay one short sequence over and over: a replayed array of 2^20
    /// accesses is a loop over about 400,000 distinct keys, three times the capacity, and
    /// it measured the policies on that loop instead of on Zipf (docs/benchmarks.md, *The
    /// cache-aside key array*). `CLOCKLINE_ASIDE_ACCESSES` overrides it (a power of two;
    /// 1048576 gives the array used before 2026-11-27).
    pub aside_accesses: usize,
    pub aside_capacity: usize,
    /// write-50: key space (= capacity).
    pub write_keys: usize,
}

impl Sizes {
    pub const FULL: Sizes = Sizes {
        accesses: 1 << 20,
        read_keys: 1 << 16,
        aside_keys: 1 << 20,
        aside_capacity: 1 << 17,
        aside_accesses: 1 << 23,
        write_keys: 1 << 16,
    };
    pub const QUICK: Sizes = Sizes {
        accesses: 1 << 14,
        read_keys: 1 << 10,
        aside_keys: 1 << 14,
        aside_capacity: 1 << 11,
        aside_accesses: 1 << 14,
        write_keys: 1 << 10,
    };
}

/// Zipf exponent of every standard workload.
pub const ZIPF_S: f64 = 0.99;

/// A workload: a pre-generated key array, what to do with each key, and how to fill the cache
/// before measuring.
#[derive(Debug, Clone)]
pub struct Workload {
    pub name: &'static str,
    /// One line for reports.
    pub description: String,
    /// Zipf exponent of the key array.
    pub zipf: f64,
    /// Distinct keys in the key array (at most; the rarest may never be drawn).
    pub key_space: usize,
    pub capacity: usize,
    pub op: Op,
    /// Keys of ranks `0..prefill` are inserted before measuring.
    pub prefill: usize,
    /// The accesses; the length is a power of two.
    pub keys: Vec<u64>,
}

impl Workload {
    /// The workload `spec` with `accesses` pre-generated accesses (a power of two) drawn with
    /// `seed`. Every workload is built here.
    pub fn new(
        name: &'static str,
        description: String,
        spec: Spec,
        accesses: usize,
        seed: u64,
    ) -> Self {
        assert!(accesses.is_power_of_two(), "{accesses} accesses");
        Self {
            name,
            description,
            zipf: spec.zipf,
            key_space: spec.key_space,
            capacity: spec.capacity,
            op: spec.op,
            prefill: spec.key_space.min(spec.capacity),
            keys: zipf_keys(spec.key_space, spec.zipf, accesses, seed),
        }
    }

    /// One cell of the get/put grid ([`Spec::getput`]), named `getput`; its key array depends
    /// only on the exponent (seed 4), so the read shares of one exponent walk the same keys.
    pub fn getput(sz: Sizes, zipf: f64, read_pct: u32) -> Self {
        let spec = Spec::getput(sz, zipf, read_pct);
        let description = format!(
            "{read_pct}% get / {}% insert, {} keys all resident (capacity {}), Zipf {zipf}",
            100 - read_pct,
            spec.key_space,
            spec.capacity
        );
        Self::new("getput", description, spec, sz.accesses, 4)
    }

    /// The parameters this workload was built from.
    pub fn spec(&self) -> Spec {
        Spec {
            zipf: self.zipf,
            op: self.op,
            key_space: self.key_space,
            capacity: self.capacity,
        }
    }

    /// 100 % `get` over keys that are all resident. The capacity is twice the key count so that
    /// no contender evicts any of them (quick_cache's shards fill unevenly, moka's admission is
    /// lazy); [`Workload::check_resident`] verifies it.
    pub fn read_hit(sz: Sizes) -> Self {
        let n = sz.read_keys;
        let description = format!(
            "100% get, {n} keys all resident (capacity {}), Zipf {ZIPF_S}",
            2 * n
        );
        let spec = Spec::getput(sz, ZIPF_S, 100);
        Self::new("read-hit", description, spec, sz.accesses, 1)
    }

    /// get, insert on a miss; the capacity is a fraction of the key space. Pre-filled with the
    /// hottest `capacity` keys (the steady state of an ideal policy).
    pub fn cache_aside(sz: Sizes) -> Self {
        let (n, cap) = (sz.aside_keys, sz.aside_capacity);
        let spec = Spec {
            zipf: ZIPF_S,
            op: Op::CacheAside,
            key_space: n,
            capacity: cap,
        };
        let accesses = std::env::var("CLOCKLINE_ASIDE_ACCESSES")
            .ok()
            .map(|v| match v.parse::<usize>() {
                Ok(n) if n.is_power_of_two() => n,
                _ => panic!("CLOCKLINE_ASIDE_ACCESSES={v}: not a power of two"),
            })
            .unwrap_or(sz.aside_accesses);
        let description = format!(
            "get, insert on miss, {n} keys, capacity {cap}, Zipf {ZIPF_S}, {accesses} accesses"
        );
        Self::new("cache-aside", description, spec, accesses, 2)
    }

    /// Half `insert`, half `get`, over a key space the size of the capacity, pre-filled full.
    pub fn write_50(sz: Sizes) -> Self {
        let n = sz.write_keys;
        let spec = Spec {
            zipf: ZIPF_S,
            op: Op::reads(50),
            key_space: n,
            capacity: n,
        };
        let description = format!("50% insert / 50% get, {n} keys, capacity {n}, Zipf {ZIPF_S}");
        Self::new("write-50", description, spec, sz.accesses, 3)
    }

    /// The three standard workloads, in report order.
    pub fn standard(sz: Sizes) -> Vec<Self> {
        vec![
            Self::read_hit(sz),
            Self::cache_aside(sz),
            Self::write_50(sz),
        ]
    }

    /// Where thread `t` of `threads` starts walking the key array.
    pub fn offset(&self, t: usize, threads: usize) -> usize {
        t * (self.keys.len() / threads.max(1))
    }

    /// Inserts the keys of ranks `0..prefill` and lets the contender settle.
    pub fn fill<C: Contender>(&self, cache: &C) {
        for rank in 0..self.prefill {
            let k = key_of_rank(rank);
            cache.insert(k, k);
        }
        cache.settle();
    }

    /// For read-hit: how many of the pre-filled keys are missing (0 means all resident).
    pub fn check_resident<C: Contender>(&self, cache: &C) -> usize {
        (0..self.prefill)
            .filter(|&rank| !cache.get(&key_of_rank(rank)))
            .count()
    }
}

/// Runs `n` accesses of `w` on `cache`, from index `start` of the key array (wrapping), and
/// returns how many `get`s hit.
#[inline(never)]
pub fn run_ops<C: Contender>(cache: &C, w: &Workload, start: usize, n: usize) -> u64 {
    let keys = &w.keys[..];
    let mask = keys.len() - 1;
    debug_assert!(keys.len().is_power_of_two());
    let mut hits = 0u64;
    match w.op {
        Op::Get => hits = cache.get_run(keys, start, n),
        Op::CacheAside => {
            for i in start..start + n {
                let k = keys[i & mask];
                if cache.get(&k) {
                    hits += 1;
                } else {
                    cache.insert(k, k);
                }
            }
        }
        Op::Mixed { write_percent } => {
            // Bresenham: exactly `write_percent` of every 100 accesses write, evenly spread,
            // and the pattern does not depend on the key.
            let mut acc = (start as u64 * write_percent as u64 % 100) as u32;
            for i in start..start + n {
                let k = keys[i & mask];
                acc += write_percent;
                if acc >= 100 {
                    acc -= 100;
                    cache.insert(k, k);
                } else {
                    hits += cache.get(&k) as u64;
                }
            }
        }
    }
    hits
}

/// Accesses in `n` that are `get`s under `op` (the denominator of a hit ratio).
pub fn gets_in(op: Op, n: u64) -> u64 {
    match op {
        Op::Get | Op::CacheAside => n,
        Op::Mixed { write_percent } => n - n * write_percent as u64 / 100,
    }
}

// ---------------------------------------------------------------------------------------------
// Contenders
// ---------------------------------------------------------------------------------------------

/// A `u64 -> u64` cache under test.
pub trait Contender: Send + Sync + Sized + 'static {
    /// Short name for reports.
    const NAME: &'static str;
    /// A cache that holds at most `capacity` entries, hashing with `hasher`.
    fn new(capacity: usize, hasher: ahash::RandomState) -> Self;
    /// Looks `key` up the way a user would (clone-on-get where that is the API); true on a hit.
    fn get(&self, key: &u64) -> bool;
    fn insert(&self, key: u64, value: u64);
    /// Finishes deferred work after pre-filling (moka's pending tasks); nothing for most.
    fn settle(&self) {}
    /// `get` over `keys[(start + i) & mask]` for `i` in `0..n`; the number of hits. One `get`
    /// after another, unless a contender has a cheaper way a user would take for a run of
    /// lookups (`Featured<Pinned>`).
    #[inline]
    fn get_run(&self, keys: &[u64], start: usize, n: usize) -> u64 {
        let mask = keys.len() - 1;
        let mut hits = 0u64;
        for i in start..start + n {
            hits += self.get(&keys[i & mask]) as u64;
        }
        hits
    }
}

pub type Clockline = clockline::Cache<u64, u64, ahash::RandomState>;
pub type QuickCache = quick_cache::sync::Cache<
    u64,
    u64,
    quick_cache::UnitWeighter,
    ahash::RandomState,
    quick_cache::sync::DefaultLifecycle<u64, u64>,
>;
pub type Moka = moka::sync::Cache<u64, u64, ahash::RandomState>;
pub type MutexLru = Mutex<lru::LruCache<u64, u64, ahash::RandomState>>;
pub type Papaya = papaya::HashMap<u64, u64, ahash::RandomState>;

impl Contender for Clockline {
    const NAME: &'static str = "clockline";

    fn new(capacity: usize, hasher: ahash::RandomState) -> Self {
        clockline::Cache::builder()
            .max_capacity(capacity)
            .hasher(hasher)
            .build()
            .expect("clockline cache")
    }

    #[inline]
    fn get(&self, key: &u64) -> bool {
        clockline::Cache::get(self, key).is_some()
    }

    #[inline]
    fn insert(&self, key: u64, value: u64) {
        // Never refused: the cache has no weigher.
        let r = clockline::Cache::insert(self, key, value);
        debug_assert!(r.is_ok());
    }
}

/// clockline with one of issue #3's features switched on ([`Feature`]), for the
/// cost-of-features comparison.
pub struct Featured<F: Feature>(Clockline, std::marker::PhantomData<F>);

/// What a [`Featured`] contender turns on.
pub trait Feature: Send + Sync + 'static {
    const NAME: &'static str;
    /// Read a run of lookups through one pinned handle instead of a pin per `get`.
    const PIN_RUNS: bool = false;
    fn enable(
        b: clockline::Builder<u64, u64, ahash::RandomState>,
    ) -> clockline::Builder<u64, u64, ahash::RandomState>;
}

/// A default TTL (one hour: nothing expires during a run), so every hit reads the cached tick
/// and compares a deadline.
pub struct Ttl;
/// `record_stats()`: every hit adds one to its thread's stripe.
pub struct Stats;
/// `policy(Policy::Clock)`: classic CLOCK instead of the default adaptive policy (issue #5's
/// throughput comparison).
pub struct ClockPolicy;

impl Feature for ClockPolicy {
    const NAME: &'static str = "clockline-clock";
    fn enable(
        b: clockline::Builder<u64, u64, ahash::RandomState>,
    ) -> clockline::Builder<u64, u64, ahash::RandomState> {
        b.policy(clockline::Policy::Clock)
    }
}

/// No builder change: lookups are read through one [`clockline::Pinned`] handle per run
/// (1,024 in the showdown) instead of an epoch pin per `get`, what a request handler that
/// pins once for its lookups gets. Beside plain clockline on many cores it shows how much of
/// the read path's scaling the per-`get` pin costs (docs/benchmarks.md section 5.3; issue #2's
/// 16-core target). Writes are plain clockline's.
pub struct Pinned;

impl Feature for Pinned {
    const NAME: &'static str = "clockline-pinned";
    const PIN_RUNS: bool = true;
    fn enable(
        b: clockline::Builder<u64, u64, ahash::RandomState>,
    ) -> clockline::Builder<u64, u64, ahash::RandomState> {
        b
    }
}

impl Feature for Ttl {
    const NAME: &'static str = "clockline+ttl";
    fn enable(
        b: clockline::Builder<u64, u64, ahash::RandomState>,
    ) -> clockline::Builder<u64, u64, ahash::RandomState> {
        b.time_to_live(std::time::Duration::from_secs(3600))
    }
}

impl Feature for Stats {
    const NAME: &'static str = "clockline+stats";
    fn enable(
        b: clockline::Builder<u64, u64, ahash::RandomState>,
    ) -> clockline::Builder<u64, u64, ahash::RandomState> {
        b.record_stats()
    }
}

impl<F: Feature> Contender for Featured<F> {
    const NAME: &'static str = F::NAME;

    fn new(capacity: usize, hasher: ahash::RandomState) -> Self {
        let b = clockline::Cache::builder()
            .max_capacity(capacity)
            .hasher(hasher);
        Self(
            F::enable(b).build().expect("clockline cache"),
            std::marker::PhantomData,
        )
    }

    #[inline]
    fn get(&self, key: &u64) -> bool {
        Contender::get(&self.0, key)
    }

    #[inline]
    fn insert(&self, key: u64, value: u64) {
        Contender::insert(&self.0, key, value)
    }

    #[inline]
    fn get_run(&self, keys: &[u64], start: usize, n: usize) -> u64 {
        if !F::PIN_RUNS {
            return Contender::get_run(&self.0, keys, start, n);
        }
        let mask = keys.len() - 1;
        let pinned = self.0.pin();
        let mut hits = 0u64;
        for i in start..start + n {
            hits += pinned.get(&keys[i & mask]).is_some() as u64;
        }
        hits
    }
}

/// True when `CLOCKLINE_FEATURE_VARIANTS=1`: the contender list then also holds clockline with
/// expiry, with statistics, with classic CLOCK and read through a pinned handle, for the
/// cost-of-features, policy and pin comparisons in docs/benchmarks.md.
pub fn feature_variants() -> bool {
    std::env::var_os("CLOCKLINE_FEATURE_VARIANTS").is_some_and(|v| v == "1")
}

impl Contender for QuickCache {
    const NAME: &'static str = "quick_cache";

    fn new(capacity: usize, hasher: ahash::RandomState) -> Self {
        // Weight capacity = item capacity with the unit weighter. quick_cache splits it into
        // power-of-two shards, rounding each shard up: exact for power-of-two capacities.
        quick_cache::sync::Cache::with(
            capacity,
            capacity as u64,
            quick_cache::UnitWeighter,
            hasher,
            Default::default(),
        )
    }

    #[inline]
    fn get(&self, key: &u64) -> bool {
        quick_cache::sync::Cache::get(self, key).is_some()
    }

    #[inline]
    fn insert(&self, key: u64, value: u64) {
        quick_cache::sync::Cache::insert(self, key, value);
    }
}

impl Contender for Moka {
    const NAME: &'static str = "moka";

    fn new(capacity: usize, hasher: ahash::RandomState) -> Self {
        moka::sync::Cache::builder()
            .max_capacity(capacity as u64)
            .build_with_hasher(hasher)
    }

    #[inline]
    fn get(&self, key: &u64) -> bool {
        moka::sync::Cache::get(self, key).is_some()
    }

    #[inline]
    fn insert(&self, key: u64, value: u64) {
        moka::sync::Cache::insert(self, key, value);
    }

    fn settle(&self) {
        self.run_pending_tasks();
    }
}

impl Contender for MutexLru {
    const NAME: &'static str = "lru+mutex";

    fn new(capacity: usize, hasher: ahash::RandomState) -> Self {
        let cap = NonZeroUsize::new(capacity).expect("capacity > 0");
        Mutex::new(lru::LruCache::with_hasher(cap, hasher))
    }

    #[inline]
    fn get(&self, key: &u64) -> bool {
        lock(self).get(key).is_some()
    }

    #[inline]
    fn insert(&self, key: u64, value: u64) {
        lock(self).put(key, value);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Contender for Papaya {
    const NAME: &'static str = "papaya";

    /// No eviction: `capacity` only pre-sizes the table. In cache-aside it grows to the key
    /// space and hits more than any cache can; it is the ceiling, not a cache.
    fn new(capacity: usize, hasher: ahash::RandomState) -> Self {
        papaya::HashMap::with_capacity_and_hasher(capacity, hasher)
    }

    #[inline]
    fn get(&self, key: &u64) -> bool {
        self.pin().get(key).is_some()
    }

    #[inline]
    fn insert(&self, key: u64, value: u64) {
        self.pin().insert(key, value);
    }
}

/// Something to do once per contender type; see [`for_each_contender`].
pub trait Visit {
    fn visit<C: Contender>(&mut self);
}

/// Calls `v.visit::<C>()` for every contender, in report order. The one list of contenders.
pub fn for_each_contender(v: &mut impl Visit) {
    v.visit::<Clockline>();
    if feature_variants() {
        v.visit::<Featured<Ttl>>();
        v.visit::<Featured<Stats>>();
        v.visit::<Featured<ClockPolicy>>();
        v.visit::<Featured<Pinned>>();
    }
    v.visit::<QuickCache>();
    v.visit::<Moka>();
    v.visit::<MutexLru>();
    v.visit::<Papaya>();
}

/// Something to make per contender type, for [`select`].
pub trait PerContender {
    type Out;
    fn make<C: Contender>(&self) -> Self::Out;
}

/// Every contender, or those named in `only`, in report order, each with what `p` makes for it.
pub fn select<P: PerContender>(only: Option<&[String]>, p: &P) -> Vec<(&'static str, P::Out)> {
    struct Collect<'a, P: PerContender>(&'a P, Vec<(&'static str, P::Out)>);
    impl<P: PerContender> Visit for Collect<'_, P> {
        fn visit<C: Contender>(&mut self) {
            let made = self.0.make::<C>();
            self.1.push((C::NAME, made));
        }
    }
    let mut c = Collect(p, Vec::new());
    for_each_contender(&mut c);
    if let Some(only) = only {
        c.1.retain(|(name, _)| only.iter().any(|o| o == name));
    }
    c.1
}

/// Names in the order of [`for_each_contender`].
pub fn contender_names() -> Vec<&'static str> {
    struct Names(Vec<&'static str>);
    impl Visit for Names {
        fn visit<C: Contender>(&mut self) {
            self.0.push(C::NAME);
        }
    }
    let mut n = Names(Vec::new());
    for_each_contender(&mut n);
    n.0
}

/// Thread counts from a list like "1,2,4,8,16"; `None` if any entry is not a positive number.
pub fn parse_threads(s: &str) -> Option<Vec<usize>> {
    s.split(',')
        .map(|t| t.trim().parse::<usize>().ok().filter(|&n| n > 0))
        .collect()
}

/// Zipf exponents of the get/put grid.
pub const GRID_ZIPF: [f64; 3] = [0.8, 0.99, 1.2];

/// Read shares (percent `get`) of the get/put grid.
pub const GRID_READS: [u32; 5] = [100, 95, 75, 50, 0];

/// Zipf exponents from a list like "0.8,0.99"; `None` if any is not a finite number >= 0.
pub fn parse_zipfs(s: &str) -> Option<Vec<f64>> {
    s.split(',')
        .map(|z| {
            z.trim()
                .parse::<f64>()
                .ok()
                .filter(|z| z.is_finite() && *z >= 0.0)
        })
        .collect()
}

/// Read shares from a list like "100,95,50"; `None` if any is not a whole percentage.
pub fn parse_reads(s: &str) -> Option<Vec<u32>> {
    s.split(',')
        .map(|r| r.trim().parse::<u32>().ok().filter(|&r| r <= 100))
        .collect()
}

/// 1, 2, 4, ... below the number of cores, then the number of cores: the default thread sweep.
pub fn sweep_threads() -> Vec<usize> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut t: Vec<usize> = std::iter::successors(Some(1usize), |&n| n.checked_mul(2))
        .take_while(|&n| n < cores)
        .collect();
    t.push(cores);
    t
}
