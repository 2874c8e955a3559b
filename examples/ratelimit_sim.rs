//! Dry run of a rate-limiting / counting service built on `Cache::compute` (2026-11-27; what it
//! found: docs/features.md, "Atomic updates"; the tests: tests/compute.rs).
//!
//! `cargo run --release --example ratelimit_sim [seconds_per_scenario]`
//!
//! Scenarios (each checked with exact accounting, see `Ledger`):
//! * counters / lists on caches with a mock-clock TTL, a real-clock TTL, a small max_capacity,
//!   a weigher (vec len) that refuses puts, record_stats, an eviction listener, and a
//!   `.versioned()` cache where an adversary thread also calls insert_versioned /
//!   invalidate_versioned / remove / clear / purge_expired on the same keys;
//! * a fixed-window and a token-bucket rate limiter keyed by client id;
//! * adversarial closures (panics, recursion, writes of their own key);
//! * retry counts and compute vs get+insert throughput.
//!
//! Every value carries a unique id; the run records which ids were committed, which ids a
//! committed `Updated` continued, and what the listener heard. At the end:
//!   committed ids == ids heard by the listener (each once) + ids still cached (disjoint),
//!   every id f saw was committed, a continued id was heard as `Replaced`,
//!   sum of counts of terminal (non-continued) values == number of committed increments,
//!   every value is dropped exactly once after the cache is dropped.

use std::collections::{HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use clockline::{Cache, Clock, Compute, Computed, InsertErrorKind, Policy, RemovalCause};

// ---------------------------------------------------------------- values and bookkeeping

static LIVE: AtomicI64 = AtomicI64::new(0);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

#[derive(Debug)]
struct Val {
    id: u64,
    count: u64,
    /// Append ids (list mode).
    list: Vec<u64>,
    /// Mock-clock nanos when built.
    born: u64,
}

impl Val {
    fn new(count: u64, list: Vec<u64>, born: u64) -> Self {
        LIVE.fetch_add(1, SeqCst);
        Val {
            id: NEXT_ID.fetch_add(1, SeqCst),
            count,
            list,
            born,
        }
    }
}
impl Clone for Val {
    fn clone(&self) -> Self {
        LIVE.fetch_add(1, SeqCst);
        Val {
            id: self.id,
            count: self.count,
            list: self.list.clone(),
            born: self.born,
        }
    }
}
impl Drop for Val {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, SeqCst);
    }
}

#[derive(Default, Debug)]
struct MockClock(AtomicU64);
impl Clock for MockClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.0.load(SeqCst))
    }
    fn sleep(&self, d: Duration) {
        self.0.fetch_add(d.as_nanos() as u64, SeqCst);
    }
}

#[derive(Default)]
struct Heard {
    /// id -> (key, count, list, cause), and duplicates.
    by_id: HashMap<u64, (u64, u64, Vec<u64>, RemovalCause)>,
    dup: Vec<(u64, RemovalCause, RemovalCause)>,
    causes: HashMap<RemovalCause, u64>,
}

#[derive(Default)]
struct Ledger {
    committed: HashSet<u64>,
    /// ids of values a committed compute `Updated` built on, with the key.
    continued: HashSet<u64>,
    seen: HashSet<u64>,
    /// committed compute increments (Inserted/Updated).
    increments: u64,
    appended: HashSet<u64>,
    outcome_mismatch: Vec<String>,
    f_runs: u64,
    commits: u64,
    retries_hist: [u64; 8],
    errors: HashMap<String, u64>,
    gets_hit: u64,
    gets_miss: u64,
    plain_inserts_ok: u64,
    /// (id f saw, mock clock read before the compute call began).
    seen_at: Vec<(u64, u64)>,
    /// id -> mock clock read after its compute returned (>= the insert's clock read).
    committed_at: HashMap<u64, u64>,
}

impl Ledger {
    fn merge(&mut self, o: Ledger) {
        self.committed.extend(o.committed);
        self.continued.extend(o.continued);
        self.seen.extend(o.seen);
        self.increments += o.increments;
        self.appended.extend(o.appended);
        self.outcome_mismatch.extend(o.outcome_mismatch);
        self.f_runs += o.f_runs;
        self.commits += o.commits;
        for i in 0..8 {
            self.retries_hist[i] += o.retries_hist[i];
        }
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.gets_hit += o.gets_hit;
        self.gets_miss += o.gets_miss;
        self.plain_inserts_ok += o.plain_inserts_ok;
        self.seen_at.extend(o.seen_at);
        self.committed_at.extend(o.committed_at);
    }
}

#[path = "../benches/common/mod.rs"]
#[allow(dead_code)]
mod common;
use common::SplitMix64 as Rng;

static FAILURES: AtomicUsize = AtomicUsize::new(0);
macro_rules! check {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            FAILURES.fetch_add(1, SeqCst);
            println!("  FAIL: {}", format!($($arg)*));
        }
    };
}

/// Aborts the process if `phase` does not finish in `limit`.
struct Watchdog(Arc<AtomicBool>);
impl Watchdog {
    fn new(phase: &'static str, limit: Duration) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        thread::spawn(move || {
            let end = Instant::now() + limit;
            while Instant::now() < end {
                if d.load(SeqCst) {
                    return;
                }
                thread::sleep(Duration::from_millis(20));
            }
            println!("HANG: phase {phase} still running after {limit:?}");
            std::process::exit(3);
        });
        Watchdog(done)
    }
}
impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.store(true, SeqCst);
    }
}

// ---------------------------------------------------------------- generic scenario

#[derive(Clone, Copy, PartialEq, Debug)]
enum Ttl {
    None,
    Mock(Duration),
    Real(Duration),
}

#[derive(Clone, Copy, Debug)]
struct Cfg {
    name: &'static str,
    threads: usize,
    keys: u64,
    ttl: Ttl,
    max_capacity: Option<usize>,
    /// max_weight, weigher = list len + 1 (list mode).
    max_weight: Option<u64>,
    list: bool,
    versioned: bool,
    adversary: bool,
    policy: Policy,
    /// Flush (Remove) a list once it has this many elements; a key `0` is never flushed (grows
    /// until TooHeavy).
    flush_at: usize,
    /// Busy work in f (ns), as a closure that does real work would take.
    f_spin_ns: u64,
}

fn run_scenario(cfg: Cfg, secs: f64) {
    println!("== {} {:?}", cfg.name, cfg);
    let _wd = Watchdog::new(cfg.name, Duration::from_secs_f64(secs * 3.0 + 30.0));
    let live_before = LIVE.load(SeqCst);
    let heard = Arc::new(Mutex::new(Heard::default()));
    let clock = Arc::new(MockClock(AtomicU64::new(1_000_000_000)));
    let h = heard.clone();
    let mut b = Cache::<u64, Val>::builder()
        .record_stats()
        .policy(cfg.policy)
        .eviction_listener(move |k: &u64, v: &Val, cause| {
            let mut h = h.lock().unwrap();
            *h.causes.entry(cause).or_default() += 1;
            if let Some(prev) = h.by_id.get(&v.id) {
                let prev = prev.3;
                h.dup.push((v.id, prev, cause));
            } else {
                h.by_id.insert(v.id, (*k, v.count, v.list.clone(), cause));
            }
        });
    if let Some(c) = cfg.max_capacity {
        b = b.max_capacity(c);
    }
    if let Some(w) = cfg.max_weight {
        b = b
            .max_weight(w)
            .weigher(|_, v: &Val| v.list.len() as u64 + 1);
    }
    match cfg.ttl {
        Ttl::None => {}
        Ttl::Mock(d) => b = b.time_to_live(d).clock(clock.clone()),
        Ttl::Real(d) => b = b.time_to_live(d),
    }
    if cfg.versioned {
        b = b.versioned();
    }
    let cache = b.build().unwrap();
    let mock_now = || clock.0.load(SeqCst);
    let stop = AtomicBool::new(false);
    let max_len_seen = AtomicUsize::new(0);
    let max_weight_seen = AtomicU64::new(0);
    let next_append = AtomicU64::new(1);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);

    let mut ledger = Ledger::default();
    let adversary_ops = Mutex::new(HashMap::<&'static str, u64>::new());
    thread::scope(|s| {
        // Clock driver.
        if let Ttl::Mock(d) = cfg.ttl {
            let (clock, stop) = (&clock, &stop);
            s.spawn(move || {
                let mut r = Rng::new(99);
                while !stop.load(SeqCst) {
                    clock
                        .0
                        .fetch_add(r.below(d.as_nanos() as u64 / 8 + 1), SeqCst);
                    thread::sleep(Duration::from_micros(300));
                }
            });
        }
        // Bounds monitor.
        {
            let (cache, stop, ml, mw) = (&cache, &stop, &max_len_seen, &max_weight_seen);
            s.spawn(move || {
                while !stop.load(SeqCst) {
                    ml.fetch_max(cache.len(), SeqCst);
                    mw.fetch_max(cache.weight(), SeqCst);
                    thread::sleep(Duration::from_micros(200));
                }
            });
        }
        // Adversary: plain / versioned writes on the same keys.
        let adv = if cfg.adversary {
            let (cache, stop, ops, clock) = (&cache, &stop, &adversary_ops, &clock);
            Some(s.spawn(move || {
                let mut l = Ledger::default();
                let mut r = Rng::new(12345);
                let mut ver = 1u64;
                while !stop.load(SeqCst) {
                    let k = r.below(cfg.keys);
                    let what = r.below(100);
                    let name: &'static str;
                    if what < 30 && cfg.versioned {
                        ver += 1;
                        let v = Val::new(0, Vec::new(), clock.0.load(SeqCst));
                        let id = v.id;
                        name = match cache.insert_versioned(k, v, ver) {
                            Ok(()) => {
                                l.committed.insert(id);
                                "insert_versioned ok"
                            }
                            Err(e) => {
                                *l.errors.entry(format!("adv {:?}", e.kind)).or_default() += 1;
                                "insert_versioned err"
                            }
                        };
                    } else if what < 45 && cfg.versioned {
                        ver += 1;
                        let _ = cache.invalidate_versioned(k, ver);
                        name = "invalidate_versioned";
                    } else if what < 60 {
                        let v = Val::new(0, Vec::new(), clock.0.load(SeqCst));
                        let id = v.id;
                        name = match cache.insert(k, v) {
                            Ok(()) => {
                                l.committed.insert(id);
                                l.plain_inserts_ok += 1;
                                "insert ok"
                            }
                            Err(_) => "insert err",
                        };
                    } else if what < 90 {
                        let _ = cache.remove(&k);
                        name = "remove";
                    } else if what < 92 {
                        cache.clear();
                        name = "clear";
                    } else {
                        let _ = cache.purge_expired();
                        name = "purge_expired";
                    }
                    *ops.lock().unwrap().entry(name).or_default() += 1;
                    thread::sleep(Duration::from_micros(50));
                }
                l
            }))
        } else {
            None
        };
        let workers: Vec<_> = (0..cfg.threads)
            .map(|t| {
                let (cache, next_append) = (&cache, &next_append);
                let mock_now = &mock_now;
                s.spawn(move || {
                    let mut l = Ledger::default();
                    let mut r = Rng::new(0x9E37_79B9_7F4A_7C15 ^ ((t as u64 + 1) * 7919));
                    let ttl_nanos = match cfg.ttl {
                        Ttl::Mock(d) => Some(d.as_nanos() as u64),
                        _ => None,
                    };
                    while Instant::now() < deadline {
                        // Skewed keys: a few hot ones.
                        let k = if r.below(4) == 0 { r.below(4) } else { r.below(cfg.keys) };
                        if r.below(20) == 0 {
                            // get (counts hit/miss)
                            let g = cache.get(&k);
                            if let Some(v) = &g {
                                l.seen.insert(v.id);
                                l.gets_hit += 1;
                            } else {
                                l.gets_miss += 1;
                            }
                            continue;
                        }
                        let append = next_append.fetch_add(1, SeqCst);
                        let mut runs = 0u64;
                        let mut last_saw: Option<(u64, u64)> = None; // (id, count)
                        let mut last_put: Option<u64> = None;
                        let mut last_action = "";
                        let t0 = mock_now();
                        let res = cache.compute(k, |v| {
                            runs += 1;
                            if cfg.f_spin_ns > 0 {
                                let t = Instant::now();
                                while (t.elapsed().as_nanos() as u64) < cfg.f_spin_ns {
                                    std::hint::spin_loop();
                                }
                            }
                            let now = mock_now();
                            last_saw = v.map(|v| (v.id, v.count));
                            if let Some(v) = v {
                                l.seen.insert(v.id);
                                if ttl_nanos.is_some() {
                                    l.seen_at.push((v.id, t0));
                                }
                                if cfg.list && v.list.len() as u64 != v.count {
                                    l.outcome_mismatch.push(format!("list/count {}", v.id));
                                }
                            }
                            if cfg.list {
                                let mut list = v.map(|v| v.list.clone()).unwrap_or_default();
                                if k != 0 && list.len() >= cfg.flush_at {
                                    last_action = "remove";
                                    last_put = None;
                                    return Compute::Remove;
                                }
                                list.push(append);
                                let nv = Val::new(v.map_or(0, |v| v.count) + 1, list, now);
                                last_put = Some(nv.id);
                                last_action = "put";
                                Compute::Put(nv)
                            } else if r.below(50) == 0 {
                                last_action = "remove";
                                last_put = None;
                                Compute::Remove
                            } else if r.below(50) == 0 {
                                last_action = "keep";
                                last_put = None;
                                Compute::Keep
                            } else {
                                let nv = Val::new(v.map_or(0, |v| v.count) + 1, Vec::new(), now);
                                last_put = Some(nv.id);
                                last_action = "put";
                                Compute::Put(nv)
                            }
                        });
                        l.f_runs += runs;
                        l.retries_hist[(runs as usize - 1).min(7)] += 1;
                        match res {
                            Ok(outcome) => {
                                l.commits += 1;
                                let expect = match (last_action, last_saw.is_some()) {
                                    ("put", false) => Computed::Inserted,
                                    ("put", true) => Computed::Updated,
                                    ("remove", true) => Computed::Removed,
                                    ("remove", false) | ("keep", _) => Computed::Unchanged,
                                    _ => unreachable!(),
                                };
                                if outcome != expect {
                                    l.outcome_mismatch.push(format!(
                                        "key {k}: {outcome:?}, f last saw {last_saw:?} and did {last_action}"
                                    ));
                                }
                                if let Some(id) = last_put {
                                    if ttl_nanos.is_some() {
                                        l.committed_at.insert(id, mock_now());
                                    }
                                    l.committed.insert(id);
                                    l.increments += 1;
                                    if cfg.list {
                                        l.appended.insert(append);
                                    }
                                    if let (Computed::Updated, Some((sid, _))) = (outcome, last_saw) {
                                        l.continued.insert(sid);
                                    }
                                }
                            }
                            Err(e) => {
                                *l.errors.entry(format!("{:?}", std::mem::discriminant(&e.kind)).replace("Discriminant", "kind")
                                    + match e.kind {
                                        InsertErrorKind::TooHeavy { .. } => " TooHeavy",
                                        InsertErrorKind::Rejected { .. } => " Rejected",
                                        _ => " other",
                                    }).or_default() += 1;
                                if !matches!(e.kind, InsertErrorKind::TooHeavy { .. } | InsertErrorKind::Rejected { .. }) {
                                    l.outcome_mismatch.push(format!("unexpected error {:?}", e.kind));
                                }
                                // The refused value came back: not committed.
                                if Some(e.value.id) != last_put {
                                    l.outcome_mismatch.push("error handed back another value".into());
                                }
                            }
                        }
                    }
                    l
                })
            })
            .collect();
        for w in workers {
            ledger.merge(w.join().unwrap());
        }
        stop.store(true, SeqCst);
        if let Some(a) = adv {
            ledger.merge(a.join().unwrap());
        }
    });

    // ---- quiet point checks
    match cache.check_invariants() {
        Ok(n) => check!(
            n == cache.len(),
            "invariants len {n} vs len {}",
            cache.len()
        ),
        Err(e) => check!(false, "check_invariants: {e}"),
    }
    if let Some(c) = cfg.max_capacity {
        check!(
            max_len_seen.load(SeqCst) <= c,
            "len {} > max_capacity {c}",
            max_len_seen.load(SeqCst)
        );
    }
    if let Some(w) = cfg.max_weight {
        check!(
            max_weight_seen.load(SeqCst) <= w,
            "weight {} > max_weight {w}",
            max_weight_seen.load(SeqCst)
        );
    }
    // Expired entries are not iterated: purge them first so the listener hears them (the
    // mock clock is stopped; a real-clock TTL is let run out completely first).
    let mut expired_left = 0;
    if let Ttl::Real(d) = cfg.ttl {
        thread::sleep(d * 3);
    }
    if cfg.ttl != Ttl::None {
        expired_left = cache.purge_expired();
    }
    let mut final_vals: HashMap<u64, (u64, u64, Vec<u64>)> = HashMap::new();
    {
        let pinned = cache.pin();
        for (k, v) in pinned.iter() {
            final_vals.insert(v.id, (*k, v.count, v.list.clone()));
        }
    }
    // Compare stats with the listener before dropping.
    let stats = cache.stats().unwrap();
    let heard_now = {
        let h = heard.lock().unwrap();
        h.causes.clone()
    };
    let c = |cause| heard_now.get(&cause).copied().unwrap_or(0);
    check!(
        stats.hits == ledger.gets_hit && stats.misses == ledger.gets_miss,
        "stats hits/misses {}/{} vs gets {}/{} (compute must count none)",
        stats.hits,
        stats.misses,
        ledger.gets_hit,
        ledger.gets_miss
    );
    check!(
        stats.evictions == c(RemovalCause::Capacity),
        "evictions {} vs listener {}",
        stats.evictions,
        c(RemovalCause::Capacity)
    );
    check!(
        stats.expirations == c(RemovalCause::Expired),
        "expirations {} vs listener {}",
        stats.expirations,
        c(RemovalCause::Expired)
    );
    check!(
        stats.removals == c(RemovalCause::Explicit),
        "removals {} vs listener {}",
        stats.removals,
        c(RemovalCause::Explicit)
    );
    check!(
        stats.replacements == c(RemovalCause::Replaced),
        "replacements {} vs listener {}",
        stats.replacements,
        c(RemovalCause::Replaced)
    );
    check!(
        stats.cleared == c(RemovalCause::Cleared),
        "cleared {} vs listener {}",
        stats.cleared,
        c(RemovalCause::Cleared)
    );
    check!(
        stats.inserts + stats.updates == ledger.committed.len() as u64,
        "inserts+updates {}+{} vs committed puts {}",
        stats.inserts,
        stats.updates,
        ledger.committed.len()
    );
    let len_now = cache.len();
    drop(cache);
    clockline::flush_deferred();
    // Give deferred destruction a moment.
    for _ in 0..50 {
        if LIVE.load(SeqCst) == live_before {
            break;
        }
        clockline::flush_deferred();
        thread::sleep(Duration::from_millis(10));
    }
    check!(
        LIVE.load(SeqCst) == live_before,
        "values alive after drop: {} (leak or double drop)",
        LIVE.load(SeqCst) - live_before
    );

    let h = heard.lock().unwrap();
    check!(
        h.dup.is_empty(),
        "listener heard {} ids twice: {:?}",
        h.dup.len(),
        &h.dup[..h.dup.len().min(5)]
    );
    // committed == heard + final, disjoint
    let mut missing = 0;
    let mut example_missing = None;
    for id in &ledger.committed {
        let in_heard = h.by_id.contains_key(id);
        let in_final = final_vals.contains_key(id);
        if in_heard == in_final {
            missing += 1;
            example_missing.get_or_insert((*id, in_heard, in_final));
        }
    }
    check!(
        missing == 0,
        "{missing} committed ids not exactly once in heard+final, e.g. {example_missing:?}"
    );
    let stray = h
        .by_id
        .keys()
        .filter(|id| !ledger.committed.contains(id))
        .count()
        + final_vals
            .keys()
            .filter(|id| !ledger.committed.contains(id))
            .count();
    check!(
        stray == 0,
        "{stray} ids heard/cached that were never committed"
    );
    let unseen = ledger
        .seen
        .iter()
        .filter(|id| !ledger.committed.contains(id))
        .count();
    check!(unseen == 0, "f/get saw {unseen} ids never committed");
    // Continued values were replaced by the compute that built on them.
    let mut bad_cause: HashMap<RemovalCause, u64> = HashMap::new();
    for id in &ledger.continued {
        match h.by_id.get(id) {
            Some((_, _, _, RemovalCause::Replaced)) => {}
            Some((_, _, _, c)) => *bad_cause.entry(*c).or_default() += 1,
            None => *bad_cause.entry(RemovalCause::Cleared).or_default() += 1000000,
        }
    }
    check!(
        bad_cause.is_empty(),
        "values a committed Updated built on were heard with cause {bad_cause:?} (not Replaced)"
    );
    // Exact increment accounting: terminal values' counts.
    let terminal: u64 = h
        .by_id
        .iter()
        .filter(|(id, _)| !ledger.continued.contains(id))
        .map(|(_, v)| v.1)
        .sum::<u64>()
        + final_vals
            .iter()
            .filter(|(id, _)| !ledger.continued.contains(id))
            .map(|(_, v)| v.1)
            .sum::<u64>();
    check!(
        terminal == ledger.increments,
        "increments {} vs terminal counts {} (diff {})",
        ledger.increments,
        terminal,
        terminal as i64 - ledger.increments as i64
    );
    if cfg.list {
        let mut elems: HashMap<u64, u32> = HashMap::new();
        for (id, v) in h.by_id.iter() {
            if !ledger.continued.contains(id) {
                for e in &v.2 {
                    *elems.entry(*e).or_default() += 1;
                }
            }
        }
        for (id, v) in final_vals.iter() {
            if !ledger.continued.contains(id) {
                for e in &v.2 {
                    *elems.entry(*e).or_default() += 1;
                }
            }
        }
        let dup = elems.values().filter(|&&n| n > 1).count();
        let lost = ledger
            .appended
            .iter()
            .filter(|e| !elems.contains_key(e))
            .count();
        let extra = elems
            .keys()
            .filter(|e| !ledger.appended.contains(e))
            .count();
        check!(
            dup == 0 && lost == 0 && extra == 0,
            "list appends: dup {dup} lost {lost} extra {extra}"
        );
    }
    if let Ttl::Mock(d) = cfg.ttl {
        // Expired for sure: the seer's call began at or after (commit returned + ttl + 1 ms of documented rounding).
        let ttl = d.as_nanos() as u64;
        let stale: Vec<_> = ledger
            .seen_at
            .iter()
            .filter(|(id, t0)| {
                ledger
                    .committed_at
                    .get(id)
                    .is_some_and(|&c| *t0 >= c + ttl + 1_000_000)
            })
            .take(3)
            .collect();
        check!(
            stale.is_empty(),
            "f saw values expired before its call began, e.g. {stale:?}"
        );
    }
    let mism = ledger.outcome_mismatch.len();
    check!(
        mism == 0,
        "{mism} outcome mismatches, e.g. {:?}",
        &ledger.outcome_mismatch[..mism.min(3)]
    );
    let avg = ledger.f_runs as f64
        / (ledger.commits as f64 + ledger.errors.values().sum::<u64>() as f64).max(1.0);
    println!(
        "  computes {} (f runs {}, {:.4} per call), runs hist {:?}, errors {:?}, final len {len_now}, expired purged at end {expired_left}",
        ledger.commits, ledger.f_runs, avg, ledger.retries_hist, ledger.errors
    );
    println!("  listener causes {:?}", h.causes);
    println!("  stats {stats:?}");
    if cfg.adversary {
        println!("  adversary ops {:?}", adversary_ops.lock().unwrap());
    }
}

// ---------------------------------------------------------------- rate limiters

/// Fixed window: count per client, TTL = window, mock clock. Allowed iff count < LIMIT.
fn fixed_window(secs: f64) {
    println!("== fixed-window limiter (mock clock)");
    let _wd = Watchdog::new("fixed_window", Duration::from_secs_f64(secs * 3.0 + 30.0));
    const LIMIT: u64 = 20;
    const CLIENTS: u64 = 64;
    let window = Duration::from_millis(100);
    let clock = Arc::new(MockClock(AtomicU64::new(5_000_000_000)));
    // Windows ended by expiry with their count: the count must never exceed LIMIT.
    let over = Arc::new(AtomicU64::new(0));
    let o = over.clone();
    let cache: Cache<u64, (u64, u64)> = Cache::builder()
        .max_capacity(CLIENTS as usize * 2)
        .time_to_live(window)
        .clock(clock.clone())
        .record_stats()
        .eviction_listener(move |_, v: &(u64, u64), _| {
            if v.0 > LIMIT {
                o.fetch_add(1, SeqCst);
            }
        })
        .build()
        .unwrap();
    let stop = AtomicBool::new(false);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let allowed = AtomicU64::new(0);
    let denied = AtomicU64::new(0);
    let windows = AtomicU64::new(0);
    let carried = AtomicU64::new(0);
    let f_runs = AtomicU64::new(0);
    let calls = AtomicU64::new(0);
    thread::scope(|s| {
        let (clock2, stop2) = (&clock, &stop);
        s.spawn(move || {
            while !stop2.load(SeqCst) {
                clock2
                    .0
                    .fetch_add(Duration::from_millis(7).as_nanos() as u64, SeqCst);
                thread::sleep(Duration::from_micros(500));
            }
        });
        for t in 0..4u64 {
            let (cache, allowed, denied, windows, carried, f_runs, calls, clock) = (
                &cache, &allowed, &denied, &windows, &carried, &f_runs, &calls, &clock,
            );
            s.spawn(move || {
                let mut r = Rng::new(t * 31 + 7);
                while Instant::now() < deadline {
                    let c = r.below(CLIENTS);
                    let mut saw_start = None;
                    let mut runs = 0;
                    let res = cache.compute(c, |v| {
                        runs += 1;
                        let now = clock.0.load(SeqCst);
                        saw_start = v.map(|v| v.1);
                        match v {
                            None => Compute::Put((1, now)),
                            Some(&(n, start)) if n < LIMIT => Compute::Put((n + 1, start)),
                            Some(_) => Compute::Keep,
                        }
                    });
                    f_runs.fetch_add(runs, SeqCst);
                    calls.fetch_add(1, SeqCst);
                    match res.unwrap() {
                        Computed::Inserted => {
                            windows.fetch_add(1, SeqCst);
                            allowed.fetch_add(1, SeqCst);
                        }
                        Computed::Updated => {
                            allowed.fetch_add(1, SeqCst);
                            // The window this increment landed in must still be open at the
                            // commit (it is the entry f saw, whose TTL is the window).
                            let now = clock.0.load(SeqCst);
                            if let Some(start) = saw_start {
                                if now >= start + 2 * window.as_nanos() as u64 {
                                    carried.fetch_add(1, SeqCst);
                                }
                            }
                        }
                        Computed::Unchanged => {
                            denied.fetch_add(1, SeqCst);
                        }
                        Computed::Removed => unreachable!(),
                    }
                }
            });
        }
        thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, SeqCst);
    });
    let a = allowed.load(SeqCst);
    let w = windows.load(SeqCst);
    check!(a <= w * LIMIT, "allowed {a} > windows {w} x {LIMIT}");
    check!(
        over.load(SeqCst) == 0,
        "windows over the limit: {}",
        over.load(SeqCst)
    );
    check!(
        cache.check_invariants().is_ok(),
        "invariants {:?}",
        cache.check_invariants()
    );
    println!(
        "  allowed {a} denied {} windows {w}; increments landing >=2 windows after the window began: {}; f runs/call {:.4}",
        denied.load(SeqCst),
        carried.load(SeqCst),
        f_runs.load(SeqCst) as f64 / calls.load(SeqCst) as f64
    );
    println!("  stats {:?}", cache.stats().unwrap());
}

/// Token bucket: (tokens x1000, last refill nanos). Real clock for the bucket math, cache
/// without TTL (buckets evicted when the cache is full: a fresh bucket is full again, which a
/// real service must accept).
fn token_bucket(secs: f64) {
    println!("== token-bucket limiter (default clock, TTL 200ms, capacity 48 < 64 clients)");
    let _wd = Watchdog::new("token_bucket", Duration::from_secs_f64(secs * 3.0 + 30.0));
    const BURST: u64 = 10_000; // milli-tokens = 10 tokens
    const RATE_PER_MS: u64 = 100; // 0.1 token per ms = 100/s
    const CLIENTS: u64 = 64;
    let cache: Cache<u64, (u64, Instant)> = Cache::builder()
        .max_capacity(48)
        .time_to_live(Duration::from_millis(200))
        .record_stats()
        .build()
        .unwrap();
    let allowed: Vec<AtomicU64> = (0..CLIENTS).map(|_| AtomicU64::new(0)).collect();
    let fresh: Vec<AtomicU64> = (0..CLIENTS).map(|_| AtomicU64::new(0)).collect();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let runs_total = AtomicU64::new(0);
    let calls = AtomicU64::new(0);
    thread::scope(|s| {
        for t in 0..4u64 {
            let (cache, allowed, fresh, runs_total, calls) =
                (&cache, &allowed, &fresh, &runs_total, &calls);
            s.spawn(move || {
                let mut r = Rng::new(t * 77 + 3);
                while Instant::now() < deadline {
                    let c = r.below(CLIENTS);
                    let mut ok = false;
                    let mut runs = 0;
                    let res = cache.compute(c, |v| {
                        runs += 1;
                        let now = Instant::now();
                        let (tokens, _) = match v {
                            None => (BURST, now),
                            Some(&(tok, last)) => {
                                let ms = now.duration_since(last).as_micros() as u64 / 1000;
                                (
                                    (tok + ms * RATE_PER_MS).min(BURST),
                                    last + Duration::from_millis(ms),
                                )
                            }
                        };
                        let last = match v {
                            None => now,
                            Some(&(_, last)) => {
                                let ms = now.duration_since(last).as_micros() as u64 / 1000;
                                last + Duration::from_millis(ms)
                            }
                        };
                        if tokens >= 1000 {
                            ok = true;
                            Compute::Put((tokens - 1000, last))
                        } else {
                            ok = false;
                            Compute::Keep
                        }
                    });
                    runs_total.fetch_add(runs, SeqCst);
                    calls.fetch_add(1, SeqCst);
                    match res.unwrap() {
                        Computed::Inserted => {
                            fresh[c as usize].fetch_add(1, SeqCst);
                            allowed[c as usize].fetch_add(1, SeqCst);
                        }
                        Computed::Updated => {
                            assert!(ok);
                            allowed[c as usize].fetch_add(1, SeqCst);
                        }
                        Computed::Unchanged => assert!(!ok),
                        Computed::Removed => unreachable!(),
                    }
                }
            });
        }
    });
    let elapsed_ms = start.elapsed().as_millis() as u64 + 1;
    let mut worst = 0f64;
    for c in 0..CLIENTS as usize {
        let a = allowed[c].load(SeqCst);
        let f = fresh[c].load(SeqCst);
        // Each fresh bucket brings BURST; refill RATE over the run.
        let bound = f * BURST / 1000 + elapsed_ms * RATE_PER_MS / 1000 + 1;
        check!(a <= bound, "client {c}: allowed {a} > bound {bound}");
        worst = worst.max(a as f64 / bound as f64);
    }
    let total: u64 = allowed.iter().map(|a| a.load(SeqCst)).sum();
    let fr: u64 = fresh.iter().map(|a| a.load(SeqCst)).sum();
    println!(
        "  allowed {total} over {elapsed_ms} ms, fresh buckets {fr}, worst allowed/bound {worst:.3}, f runs/call {:.4}",
        runs_total.load(SeqCst) as f64 / calls.load(SeqCst) as f64
    );
    check!(cache.check_invariants().is_ok(), "invariants");
}

// ---------------------------------------------------------------- adversarial closures

fn adversarial() {
    println!("== adversarial closures");
    let _wd = Watchdog::new("adversarial", Duration::from_secs(60));
    let live_before = LIVE.load(SeqCst);
    let heard = Arc::new(Mutex::new(Vec::new()));
    let h = heard.clone();
    let cache: Cache<u64, Val> = Cache::builder()
        .max_weight(64)
        .weigher(|_, v: &Val| v.list.len() as u64 + 1)
        .eviction_listener(move |_, v: &Val, c| h.lock().unwrap().push((v.id, c)))
        .record_stats()
        .build()
        .unwrap();
    // 1. f that panics sometimes, from 4 threads (panic messages silenced).
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let panics = AtomicU64::new(0);
    let okc = AtomicU64::new(0);
    thread::scope(|s| {
        for t in 0..4u64 {
            let (cache, panics, okc) = (&cache, &panics, &okc);
            s.spawn(move || {
                let mut r = Rng::new(t + 1);
                for _ in 0..20_000 {
                    let k = r.below(8);
                    let p = r.below(5) == 0;
                    let res = catch_unwind(AssertUnwindSafe(|| {
                        cache.compute(k, |v| {
                            if p {
                                panic!("boom");
                            }
                            Compute::Put(Val::new(v.map_or(0, |v| v.count) + 1, Vec::new(), 0))
                        })
                    }));
                    match res {
                        Err(_) => {
                            panics.fetch_add(1, SeqCst);
                        }
                        Ok(Ok(_)) => {
                            okc.fetch_add(1, SeqCst);
                        }
                        Ok(Err(e)) => println!("  err {:?}", e.kind),
                    }
                }
            });
        }
    });
    std::panic::set_hook(hook);
    let total: u64 = (0..8).map(|k| cache.get(&k).map_or(0, |v| v.count)).sum();
    let evicted: u64 = 0;
    println!(
        "  panicking f: {} panics, {} ok, sum of counters {total} (+evicted {evicted})",
        panics.load(SeqCst),
        okc.load(SeqCst)
    );
    check!(
        total == okc.load(SeqCst),
        "panicking f: counters {total} vs ok {}",
        okc.load(SeqCst)
    );
    check!(cache.check_invariants().is_ok(), "invariants after panics");

    // 2. recursion depth 1 and 2, bounded: the nested computes write only on their first run.
    let mut calls = 0;
    let mut inner_calls = 0;
    let r = cache.compute(100, |v| {
        calls += 1;
        if calls == 1 {
            let _ = cache.compute(100, |w| {
                inner_calls += 1;
                if inner_calls == 1 {
                    let _ = cache.compute(100, |x| {
                        Compute::Put(Val::new(x.map_or(0, |x| x.count) + 1, Vec::new(), 0))
                    });
                }
                Compute::Put(Val::new(w.map_or(0, |w| w.count) + 1, Vec::new(), 0))
            });
        }
        Compute::Put(Val::new(v.map_or(0, |v| v.count) + 1, Vec::new(), 0))
    });
    println!(
        "  recursive depth 2: {r:?} after {calls} outer / {inner_calls} inner runs, value {:?}",
        cache.get(&100).map(|v| v.count)
    );
    check!(
        cache.get(&100).map(|v| v.count) == Some(3),
        "recursive counts"
    );
    // 2b. The natural way to write it: f always does a nested compute of its key (depth 1).
    // Every nested commit invalidates the outer read: the outer call never commits. Capped
    // here at 100,000 runs to show it (unbounded otherwise).
    let mut calls = 0u64;
    let t0 = Instant::now();
    let r = cache.compute(101, |v| {
        calls += 1;
        if calls < 100_000 {
            let _ = cache.compute(101, |x| {
                Compute::Put(Val::new(x.map_or(0, |x| x.count) + 1, Vec::new(), 0))
            });
        }
        Compute::Put(Val::new(v.map_or(0, |v| v.count) + 1, Vec::new(), 0))
    });
    println!("  unconditional nested compute: outer f ran {calls} times in {:?} before the cap let it commit ({r:?}) -- livelock without the cap", t0.elapsed());
    // 3. f that inserts / removes its own key (a fixed number of times).
    let mut calls = 0;
    let r = cache.compute(200, |v| {
        calls += 1;
        match calls {
            1 => {
                let _ = cache.insert(200, Val::new(10, Vec::new(), 0));
            }
            2 => {
                let _ = cache.remove(&200);
            }
            3 => {
                let _ = cache.insert(200, Val::new(20, Vec::new(), 0));
            }
            _ => {}
        }
        Compute::Put(Val::new(v.map_or(0, |v| v.count) + 1, Vec::new(), 0))
    });
    println!(
        "  self-writing f: {r:?} after {calls} runs, value {:?}",
        cache.get(&200).map(|v| v.count)
    );
    check!(
        calls == 4 && cache.get(&200).map(|v| v.count) == Some(21),
        "self-writing f"
    );

    // 4. Put heavier than max_weight: on absent and present keys.
    let e = cache
        .compute(300, |_| Compute::Put(Val::new(1, vec![0; 100], 0)))
        .unwrap_err();
    check!(
        matches!(e.kind, InsertErrorKind::TooHeavy { .. }),
        "too heavy absent {:?}",
        e.kind
    );
    drop(e);
    let _ = cache.compute(300, |_| Compute::Put(Val::new(1, vec![0; 10], 0)));
    let before = cache.get(&300).map(|v| v.id);
    let e = cache
        .compute(300, |_| Compute::Put(Val::new(1, vec![0; 100], 0)))
        .unwrap_err();
    check!(
        matches!(e.kind, InsertErrorKind::TooHeavy { .. }),
        "too heavy present"
    );
    drop(e);
    check!(
        cache.get(&300).map(|v| v.id) == before,
        "too heavy changed the entry"
    );
    check!(cache.weight() <= 64, "weight {}", cache.weight());
    check!(cache.check_invariants().is_ok(), "invariants after heavy");

    // 5. Hash/Eq that panic (separate cache).
    #[derive(Clone)]
    struct HK(u64, bool, bool);
    impl std::hash::Hash for HK {
        fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
            if self.1 {
                panic!("hash");
            }
            self.0.hash(h)
        }
    }
    impl PartialEq for HK {
        fn eq(&self, o: &Self) -> bool {
            if self.2 || o.2 {
                panic!("eq");
            }
            self.0 == o.0
        }
    }
    impl Eq for HK {}
    let hc: Cache<HK, Val> = Cache::builder().max_capacity(16).build().unwrap();
    for i in 0..8 {
        let _ = hc.compute(HK(i, false, false), |_| {
            Compute::Put(Val::new(1, Vec::new(), 0))
        });
    }
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    for (hp, ep) in [(true, false), (false, true)] {
        for act in 0..3 {
            let r = catch_unwind(AssertUnwindSafe(|| {
                hc.compute(HK(3, hp, ep), |_| match act {
                    0 => Compute::Put(Val::new(9, Vec::new(), 0)),
                    1 => Compute::Remove,
                    _ => Compute::Keep,
                })
            }));
            check!(r.is_err(), "hostile key did not panic ({hp},{ep},{act})");
        }
    }
    std::panic::set_hook(hook);
    check!(
        hc.get(&HK(3, false, false)).map(|v| v.count) == Some(1),
        "hostile key changed entry"
    );
    check!(
        hc.check_invariants().is_ok(),
        "hostile invariants {:?}",
        hc.check_invariants()
    );
    drop(hc);
    drop(cache);
    clockline::flush_deferred();
    thread::sleep(Duration::from_millis(50));
    clockline::flush_deferred();
    check!(
        LIVE.load(SeqCst) == live_before,
        "adversarial: values alive after drop: {}",
        LIVE.load(SeqCst) - live_before
    );
    let h = heard.lock().unwrap();
    let mut ids = HashSet::new();
    let dups = h.iter().filter(|(id, _)| !ids.insert(*id)).count();
    check!(dups == 0, "adversarial: listener heard {dups} ids twice");
}

// ---------------------------------------------------------------- throughput

fn throughput(secs: f64) {
    for threads in [2u64, 4] {
        println!("== throughput (2-core box; {threads} threads; {secs}s each)");
        for keys in [1u64, 1000] {
            for mode in ["compute", "get+insert"] {
                let cache: Cache<u64, u64> = Cache::new(4096);
                let deadline = Instant::now() + Duration::from_secs_f64(secs);
                let ops = AtomicU64::new(0);
                let runs = AtomicU64::new(0);
                thread::scope(|s| {
                    for t in 0..threads {
                        let (cache, ops, runs) = (&cache, &ops, &runs);
                        s.spawn(move || {
                            let mut r = Rng::new(t + 11);
                            let mut n = 0u64;
                            let mut fr = 0u64;
                            while Instant::now() < deadline {
                                for _ in 0..256 {
                                    let k = r.below(keys);
                                    if mode == "compute" {
                                        let _ = cache.compute(k, |v| {
                                            fr += 1;
                                            Compute::Put(v.copied().unwrap_or(0) + 1)
                                        });
                                    } else {
                                        let v = cache.get(&k).unwrap_or(0);
                                        cache.insert(k, v + 1).unwrap();
                                    }
                                    n += 1;
                                }
                            }
                            ops.fetch_add(n, SeqCst);
                            runs.fetch_add(fr, SeqCst);
                        });
                    }
                });
                let n = ops.load(SeqCst);
                let total: u64 = (0..keys).map(|k| cache.get(&k).unwrap_or(0)).sum();
                println!(
                "  keys {keys:>4} {mode:>10}: {:>6.2} Mops/s, f runs per call {}, increments kept {total}/{n} ({:.2}% lost)",
                n as f64 / secs / 1e6,
                if mode == "compute" { format!("{:.4}", runs.load(SeqCst) as f64 / n as f64) } else { "-".into() },
                100.0 * (n - total) as f64 / n as f64
            );
            }
        }
    }
}

fn main() {
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let only = std::env::args().nth(2);
    let base = Cfg {
        name: "",
        threads: 4,
        keys: 200,
        ttl: Ttl::None,
        max_capacity: None,
        max_weight: None,
        list: false,
        versioned: false,
        adversary: false,
        policy: Policy::default(),
        flush_at: 40,
        f_spin_ns: 0,
    };
    let scenarios = [
        Cfg {
            name: "counters-mock-ttl-evicting",
            ttl: Ttl::Mock(Duration::from_millis(50)),
            max_capacity: Some(64),
            ..base
        },
        Cfg {
            name: "counters-mock-ttl-clock-policy",
            ttl: Ttl::Mock(Duration::from_millis(50)),
            max_capacity: Some(64),
            policy: Policy::Clock,
            threads: 6,
            ..base
        },
        Cfg {
            name: "counters-mock-ttl-slow-f",
            ttl: Ttl::Mock(Duration::from_millis(5)),
            max_capacity: Some(512),
            keys: 100,
            f_spin_ns: 20_000,
            ..base
        },
        Cfg {
            name: "counters-real-ttl",
            ttl: Ttl::Real(Duration::from_millis(20)),
            max_capacity: Some(128),
            ..base
        },
        Cfg {
            name: "lists-weighted",
            max_weight: Some(600),
            list: true,
            keys: 100,
            ..base
        },
        Cfg {
            name: "lists-weighted-mock-ttl-clock",
            max_weight: Some(300),
            list: true,
            keys: 100,
            ttl: Ttl::Mock(Duration::from_millis(30)),
            policy: Policy::Clock,
            ..base
        },
        Cfg {
            name: "counters-adversary",
            max_capacity: Some(64),
            adversary: true,
            keys: 50,
            ..base
        },
        Cfg {
            name: "counters-versioned-adversary-mock-ttl",
            max_capacity: Some(64),
            adversary: true,
            versioned: true,
            keys: 50,
            ttl: Ttl::Mock(Duration::from_millis(40)),
            threads: 5,
            ..base
        },
        Cfg {
            name: "lists-versioned-adversary-weighted",
            max_weight: Some(400),
            adversary: true,
            versioned: true,
            list: true,
            keys: 40,
            threads: 4,
            ..base
        },
    ];
    let want = |n: &str| only.as_deref().map_or(true, |o| n.contains(o));
    for cfg in scenarios {
        if want(cfg.name) {
            run_scenario(cfg, secs);
        }
    }
    if want("fixed") {
        fixed_window(secs);
    }
    if want("token") {
        token_bucket(secs);
    }
    if want("adversarial") {
        adversarial();
    }
    if want("throughput") {
        throughput(secs.min(2.0));
    }
    let f = FAILURES.load(SeqCst);
    println!("FAILURES: {f}");
    if f > 0 {
        std::process::exit(1);
    }
}
