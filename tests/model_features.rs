//! Single-threaded behaviour of the production features against a model, driven by proptest:
//! expiry (default TTL, per-entry TTL, TTI) on a manual clock, versioned inserts and
//! invalidations with tombstones, the loaders, the eviction listener and the statistics.
//!
//! The model keeps, per key, the entry (its value, version and deadlines, expired or not: an
//! expired entry still counts in `len()` and its version still refuses older inserts until
//! something removes it, as its tombstone does after) and the tombstone. Every operation's result, every listener call (key,
//! value, cause), every statistics counter, `len()`, `tombstones()` and `check_invariants()`
//! must match it after every operation.
//!
//! Where the docs allow a range, the model keeps the range, not one answer:
//!
//! * a TTL deadline kept in whole milliseconds (a cache without a weigher) may be up to 1 ms
//!   late (`src/expiry.rs`, "Precision"), with a weigher it is exact;
//! * a TTI deadline lies between one TTI and 17/16 of it after the last `get` (or the insert);
//!   `peek`, `contains_key`, `version_of` and iteration do not move it (docs/features.md).
//!
//! An entry is expired from the first instant at or after its deadline. While the clock is
//! inside an entry's window the cache may answer either way, but it must stay consistent: the
//! first read that answers narrows the window (an entry seen live at `t` has both deadlines
//! after `t`; one seen expired stays expired, since only a hit moves a deadline). A write whose
//! outcome depends on it (the cause an insert reports for the entry it replaces, and so whether
//! it leaves a tombstone; what `purge_expired` removes) first settles the question with a
//! `peek`, which changes nothing.
//!
//! The evicting variant runs the same model with a capacity below the key space, and learns
//! from the listener which entry each insert evicted: the victim must be an entry the model
//! holds, with its current value, evicted only when the cache was full (or it had expired), at
//! most one per insert. From there on the model is exact again, tombstones included (there is
//! room for every key's tombstone), so a read never returns a value older than one acknowledged
//! before unless a plain write or `clear` intervened.
//!
//! The loaders (`get_or_insert_with`, `try_get_or_insert_with`,
//! `try_get_or_insert_versioned_with`, and a loader that panics): a hit returns the live value
//! without running the loader and counts as `get` does (a hit; the idle deadline moves); a miss
//! counts a miss, runs the loader once, and the caller gets what it returned (value, error or
//! panic), counted as a load that succeeded or failed, for the manual clock's time it took.
//! A loaded value is cached as `Model::load_caches` says (src/loader.rs, `Cond::Loaded` and
//! `Cond::LoadedAt` in src/cache.rs), replacing an expired entry as an insert does (`Expired`,
//! an update). To model what arrives while a value loads, the loader itself runs a few
//! operations first (inserts, invalidations, time passing, loads of other keys), each checked
//! as it goes.
//!
//! Every case ends with `clear()`: then every value ever stored must have been reported exactly
//! once, and every refused one handed back and never reported.

mod common;

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::BuildHasherDefault;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clockline::{
    Cache, Compute, Computed, InsertError, InsertErrorKind, Invalidation, Policy, RemovalCause,
};
use common::ManualClock;
use proptest::prelude::*;

const MS: u64 = 1_000_000;
/// A deadline that never comes (the crate's own `NEVER`).
const NEVER: u64 = u64::MAX;

/// SipHash with fixed keys: a failing case replays the same way (tombstone shards included).
type Fixed = BuildHasherDefault<DefaultHasher>;

/// A value that names its key, the insert that made it (unique: the listener ledger's id) and
/// the version it was stored with (0 for an unversioned insert).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Val {
    key: u8,
    seq: u64,
    version: u64,
}

type Log = Arc<Mutex<Vec<(u8, Val, RemovalCause)>>>;

/// What the cache is built with. Durations in nanoseconds.
#[derive(Clone, Copy, Debug)]
struct Features {
    ttl: Option<u64>,
    /// `expiry()`: per-entry TTLs without a default.
    expiry: bool,
    tti: Option<u64>,
    /// A weigher (every entry weighs 1) moves the TTL deadline out of the weight bits into its
    /// own word, in exact nanoseconds.
    weigher: bool,
    versioned: bool,
    listener: bool,
    stats: bool,
    clock_policy: bool,
}

impl Features {
    fn has_deadline(&self) -> bool {
        self.ttl.is_some() || self.expiry
    }
}

/// A duration from a seed: 1 to 60 ms, sometimes with a sub-millisecond part, so that deadlines
/// fall both on and between the milliseconds the packed deadline rounds to.
fn duration_from(seed: u64) -> u64 {
    let ms = 1 + seed % 60;
    let jitter = if (seed >> 8) & 1 == 1 {
        (seed >> 16) % MS
    } else {
        0
    };
    ms * MS + jitter
}

/// Feature sets; bits that shrink to 0 shrink to a plain cache.
fn features() -> impl Strategy<Value = Features> {
    (any::<u8>(), any::<u64>(), any::<u64>()).prop_map(|(bits, a, b)| Features {
        ttl: (bits & 1 != 0).then(|| duration_from(a)),
        tti: (bits & 2 != 0).then(|| duration_from(b)),
        expiry: bits & 4 != 0,
        weigher: bits & 8 != 0,
        versioned: bits & 16 != 0,
        listener: bits & 32 != 0,
        stats: bits & 64 != 0,
        clock_policy: bits & 128 != 0,
    })
}

#[derive(Clone, Debug)]
enum Op {
    Insert(u8),
    /// TTL in nanoseconds; [`NEVER`] stands for `Duration::MAX`.
    InsertWithTtl(u8, u64),
    InsertVersioned(u8, u64),
    Invalidate(u8, u64),
    Remove(u8),
    Get(u8),
    PinnedGet(u8),
    /// A `get` through a handle pinned before the clock moved on by this many nanoseconds:
    /// judged at the handle's instant.
    PinnedGetAcross(u8, u64),
    Peek(u8),
    /// `compute`: 0 puts a new value, 1 removes, 2 keeps.
    Compute(u8, u8),
    Contains(u8),
    VersionOf(u8),
    Iter,
    Clear,
    Purge,
    /// Nanoseconds.
    Advance(u64),
    /// To (or a millisecond or a nanosecond around) one end of one of the key's deadline
    /// windows, chosen by the seed; nothing if that is not ahead of the clock.
    ToDeadline(u8, u64),
    /// A load of the key through `loader`. On a miss the loader runs the operations in
    /// `during` (on this key or others: inserts, invalidations, time passing, loads of *other*
    /// keys; never a load of this key) before it returns: what arrives while a value loads.
    Load(u8, Loader, Vec<Op>),
}

/// Which loader a [`Op::Load`] calls, and what its loader returns.
#[derive(Clone, Copy, Debug)]
enum Loader {
    /// `get_or_insert_with`.
    Plain,
    /// `try_get_or_insert_with`: a value (`true`) or an error.
    Try(bool),
    /// `try_get_or_insert_versioned_with`: a value with this version, or (`None`) an error.
    Versioned(Option<u64>),
    /// `get_or_insert_with`, whose loader panics (with `resume_unwind`: no panic message).
    Panics,
}

/// A loader's error: unique per failed load, so that the caller is seen to get its own.
#[derive(Clone, Debug, PartialEq, Eq)]
struct LoadFailed(u64);

/// What a [`Loader::Panics`] loader panics with.
struct LoaderPanic;

/// Versions from a seed: mostly 0..12, so that equal and older versions are common, and
/// sometimes `u64::MAX`, the newest.
fn version_from(seed: u64) -> u64 {
    if seed % 16 == 15 {
        u64::MAX
    } else {
        (seed >> 4) % 12
    }
}

/// A per-entry TTL from a seed: zero (born expired), "never" (too large for the clock), or 1 to
/// 60 ms.
fn ttl_from(seed: u64) -> u64 {
    match seed % 32 {
        0 => 0,
        1 => NEVER,
        2 => 1 << 63,
        _ => duration_from(seed >> 5),
    }
}

/// The loader a seed picks: mostly ones that return a value, about half of them versioned.
fn loader_from(seed: u64) -> Loader {
    match seed % 16 {
        0..=3 => Loader::Plain,
        4 | 5 => Loader::Try(true),
        6 => Loader::Try(false),
        7 => Loader::Panics,
        15 => Loader::Versioned(None),
        _ => Loader::Versioned(Some(version_from(seed >> 4))),
    }
}

/// SplitMix64's step: the seeds of the operations a loader runs, from one seed.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What a loader of `k` runs before it returns, from a seed: half the time nothing (seed 0,
/// where it shrinks to, included), else one to three operations, three in four on `k` itself.
/// A load among them is of another key, and runs nothing itself.
fn during_from(k: u8, seed: u64, keys: u8) -> Vec<Op> {
    let n = [0, 0, 0, 0, 1, 1, 2, 3][(seed % 8) as usize];
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = splitmix(s);
            let key = if (s >> 8) % 4 != 0 {
                k
            } else {
                ((s >> 10) % u64::from(keys)) as u8
            };
            match op_from((s % KINDS as u64) as u8, key, splitmix(s ^ 0x5555), 0, keys) {
                Op::Load(k2, loader, _) if k2 == k => Op::Load((k + 1) % keys, loader, Vec::new()),
                op => op,
            }
        })
        .collect()
}

/// How many kinds [`op_from`] knows: 40 before the loaders, 6 of them.
const KINDS: u8 = 46;

/// Operations over keys `0..keys`.
///
/// Generated as plain tuples and mapped, as in tests/model.rs: `prop_oneof!` is several times
/// slower to generate in a debug build, and this shrinks towards `Insert(0)`.
fn ops(keys: u8, len: usize) -> impl Strategy<Value = Vec<Op>> {
    let op = (0u8..KINDS, 0..keys, any::<u64>(), any::<u64>())
        .prop_map(move |(kind, k, a, b)| op_from(kind, k, a, b, keys));
    prop::collection::vec(op, 1..len)
}

/// The operation of `kind` on key `k` with seeds `a` and `b` (`b`: what a loader runs).
fn op_from(kind: u8, k: u8, a: u64, b: u64, keys: u8) -> Op {
    match kind {
        0..=4 => Op::Insert(k),
        5..=7 => Op::InsertWithTtl(k, ttl_from(a)),
        8..=11 => Op::InsertVersioned(k, version_from(a)),
        12..=13 => Op::Invalidate(k, version_from(a)),
        14..=15 => Op::Remove(k),
        16..=18 => Op::Get(k),
        19 => Op::PinnedGet(k),
        20..=21 => Op::Peek(k),
        22 => Op::Contains(k),
        23 => Op::VersionOf(k),
        24 => Op::Iter,
        25 => Op::Clear,
        26 => Op::Purge,
        // Small steps in whole milliseconds (0 included: time standing still).
        27..=30 => Op::Advance((a % 6) * MS),
        // Sub-millisecond steps: the clock between the milliseconds a packed deadline knows.
        31 => Op::Advance(a % (2 * MS)),
        // Large steps, past most deadlines at once.
        32 => Op::Advance((20 + a % 100) * MS),
        33..=36 => Op::ToDeadline(k, a),
        37 => Op::PinnedGetAcross(k, a % (3 * MS)),
        38..=39 => Op::Compute(k, (a % 3) as u8),
        40..=45 => Op::Load(k, loader_from(a), during_from(k, b, keys)),
        _ => Op::Get(k),
    }
}

/// Where a deadline lies: expired at `now` iff the deadline is `<= now`, and the deadline is
/// somewhere in `lo..=hi` ([`NEVER`] for none).
#[derive(Clone, Copy, Debug)]
struct Window {
    lo: u64,
    hi: u64,
}

impl Window {
    const NEVER: Self = Self {
        lo: NEVER,
        hi: NEVER,
    };
}

#[derive(Clone, Debug)]
struct Entry {
    val: Val,
    ttl: Window,
    idle: Option<Window>,
    /// Seen expired once: expired for good (only a hit moves a deadline).
    dead: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Live {
    Yes,
    No,
    /// Inside a deadline's window: the docs allow either answer.
    Maybe,
}

/// The statistics the model expects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Counts {
    hits: u64,
    misses: u64,
    inserts: u64,
    updates: u64,
    evictions: u64,
    expirations: u64,
    removals: u64,
    replacements: u64,
    cleared: u64,
    loads_ok: u64,
    loads_failed: u64,
    /// Nanoseconds of the manual clock spent inside loaders.
    load_nanos: u64,
}

impl Counts {
    fn removed(&mut self, cause: RemovalCause) {
        let c = match cause {
            RemovalCause::Capacity => &mut self.evictions,
            RemovalCause::Expired => &mut self.expirations,
            RemovalCause::Explicit => &mut self.removals,
            RemovalCause::Replaced => &mut self.replacements,
            RemovalCause::Cleared => &mut self.cleared,
            other => panic!("unknown cause {other:?}"),
        };
        *c += 1;
    }
}

struct Model {
    f: Features,
    cap: usize,
    /// Capacity above the key space: nothing may be evicted.
    exact: bool,
    now: u64,
    entries: BTreeMap<u8, Entry>,
    tombs: BTreeMap<u8, u64>,
    seq: u64,
    counts: Counts,
    /// The listener calls the current operation owes.
    owed: Vec<(u8, Val, RemovalCause)>,
    /// Every value an insert stored, and every one it handed back (or a loader returned and
    /// the cache did not keep), by `seq`.
    stored: BTreeMap<u64, Val>,
    handed_back: BTreeSet<u64>,
    /// Values the listener reported, with the cause.
    reported: BTreeMap<u64, RemovalCause>,
    /// Failed loads so far: the last [`LoadFailed`]'s number.
    failures: u64,
}

/// What the model knew when a loader began (on a miss), and what the loader returned.
struct Began {
    /// The key's tombstone and its entry's version (expired or not), as `load_begins` reads
    /// them.
    tomb: Option<u64>,
    present: Option<u64>,
    at: u64,
    /// `None`: the loader panicked.
    result: Option<Result<Val, LoadFailed>>,
}

impl Model {
    fn live(&self, k: u8) -> Option<Live> {
        let e = self.entries.get(&k)?;
        let now = self.now;
        let idle = e.idle.unwrap_or(Window::NEVER);
        Some(if e.dead || e.ttl.hi <= now || idle.hi <= now {
            Live::No
        } else if now < e.ttl.lo && now < idle.lo {
            Live::Yes
        } else {
            Live::Maybe
        })
    }

    /// The cache said whether `k`'s entry is live now: checks that against the model and
    /// narrows the windows.
    fn observe(&mut self, k: u8, seen: bool, what: &str) {
        let live = self.live(k);
        let now = self.now;
        match (live, seen) {
            (Some(Live::Yes), true) | (Some(Live::No), false) | (None, false) => {}
            (Some(Live::Maybe), true) => {
                let e = self.entries.get_mut(&k).expect("present");
                e.ttl.lo = e.ttl.lo.max(now + 1);
                if let Some(w) = &mut e.idle {
                    w.lo = w.lo.max(now + 1);
                }
            }
            (Some(Live::Maybe), false) => {
                self.entries.get_mut(&k).expect("present").dead = true;
            }
            _ => panic!(
                "{what}: key {k} seen {} at {now}, model says {live:?}: {:?}",
                if seen { "live" } else { "absent" },
                self.entries.get(&k)
            ),
        }
    }

    /// A `get` hit at `now`: the idle deadline is now between one TTI and 17/16 of it away,
    /// never moved back.
    fn touch(&mut self, k: u8) {
        let (now, tti) = (self.now, self.f.tti);
        if let (Some(w), Some(tti)) = (&mut self.entries.get_mut(&k).expect("present").idle, tti) {
            w.lo = w.lo.max(now.saturating_add(tti));
            w.hi = w.hi.max(now.saturating_add(tti + tti / 16));
        }
    }

    /// `k`'s entry leaves with `cause`: the listener is owed a call, and an entry the cache
    /// chose to drop (capacity, expiry) leaves its version as a tombstone.
    fn depart(&mut self, k: u8, cause: RemovalCause) {
        let e = self.entries.remove(&k).expect("present");
        if self.f.versioned && cause.was_evicted() && e.val.version > 0 {
            let t = self.tombs.entry(k).or_insert(0);
            *t = (*t).max(e.val.version);
        }
        self.counts.removed(cause);
        self.owed.push((k, e.val, cause));
    }

    fn next_val(&mut self, key: u8, version: u64) -> Val {
        self.seq += 1;
        Val {
            key,
            seq: self.seq,
            version,
        }
    }

    /// A successful insert of `val` with `ttl` (`None`: the default).
    fn store(&mut self, val: Val, ttl: Option<u64>) {
        let k = val.key;
        match self.live(k) {
            Some(Live::Maybe) => unreachable!("settled before the insert"),
            Some(live) => {
                let cause = if live == Live::No {
                    RemovalCause::Expired
                } else {
                    RemovalCause::Replaced
                };
                self.depart(k, cause);
                // `updates` counts inserts that found the key's node, expired or not.
                self.counts.updates += 1;
            }
            None => self.counts.inserts += 1,
        }
        let now = self.now;
        let ttl = match ttl.or(self.f.ttl) {
            _ if !self.f.has_deadline() => Window::NEVER,
            None => Window::NEVER,
            Some(d) => match now.saturating_add(d) {
                NEVER => Window::NEVER,
                // Born expired: never returned, not even within the current millisecond.
                due if d == 0 => Window { lo: due, hi: due },
                due if self.f.weigher => Window { lo: due, hi: due },
                // Whole milliseconds, rounded up: up to 1 ms late.
                due => Window {
                    lo: due,
                    hi: due.saturating_add(MS),
                },
            },
        };
        let idle = self.f.tti.map(|tti| Window {
            lo: now.saturating_add(tti),
            hi: now.saturating_add(tti + tti / 16),
        });
        self.stored.insert(val.seq, val.clone());
        self.entries.insert(
            k,
            Entry {
                val,
                ttl,
                idle,
                dead: false,
            },
        );
    }

    /// Whether the value a loader returned is cached (its liveness settled before). In an
    /// unversioned cache if the key is absent or its entry expired (`Cond::Absent`: a write
    /// during the load wins). In a versioned one, with a version told
    /// (`try_get_or_insert_versioned_with`, `Cond::LoadedAt`): as `insert_versioned` would store
    /// it against the entry, and also over an *expired* entry of the same version; against the
    /// tombstone, at its version or newer (the model's store never drops tombstones, so the
    /// drop rule of `Snapshot::refuses_load_at` does not arise here). Without (`Cond::Loaded`): only
    /// if the tombstone is what it was when the load began, and the key is absent or holds an
    /// expired entry of the version it held then.
    fn load_caches(&self, k: u8, loader: Loader, began: &Began) -> bool {
        let expired = self.live(k) == Some(Live::No);
        if !self.f.versioned {
            // Only over an absent or expired entry: a write during the load wins.
            return !self.entries.contains_key(&k) || expired;
        }
        let current = self.entries.get(&k).map(|e| e.val.version);
        let tomb = self.tombs.get(&k).copied();
        match loader {
            // Not older than the tombstone (a load at its version reads the data it
            // announced); newer than the entry (`None < Some(_)`), or the entry's own version
            // once it has expired.
            Loader::Versioned(Some(n)) => {
                Some(n) >= tomb && (Some(n) > current || (Some(n) == current && expired))
            }
            // Versions compared, not entries: an entry that arrived during the load with the
            // version the key held when it began (a plain insert: 0) and expired before it
            // ended is replaced too.
            _ => tomb == began.tomb && (current.is_none() || (expired && current == began.present)),
        }
    }

    /// What the cache knows of `k`'s version: its entry's (expired or not) and its tombstone's.
    fn known_version(&self, k: u8) -> Option<u64> {
        let entry = self.entries.get(&k).map(|e| e.val.version);
        let tomb = self.tombs.get(&k).copied();
        entry.max(tomb)
    }
}

struct Harness {
    /// Shared with the loaders' calls, whose loaders step the harness.
    cache: Arc<Cache<u8, Val, Fixed>>,
    clock: Arc<ManualClock>,
    log: Log,
    m: Model,
}

impl Harness {
    fn new(f: Features, cap: usize, keys: u8) -> Self {
        let clock = ManualClock::new();
        let log: Log = Arc::default();
        let mut b = Cache::builder()
            .max_capacity(cap)
            .hasher(Fixed::default())
            .clock(clock.clone());
        if f.versioned {
            // The bound is per shard (a sixteenth each), and all keys may share a shard: room
            // for every key in each, so the store never drops a tombstone and the model's are
            // exact.
            b = b.versioned().max_tombstones(16 * usize::from(keys));
        }
        if let Some(ttl) = f.ttl {
            b = b.time_to_live(Duration::from_nanos(ttl));
        }
        if let Some(tti) = f.tti {
            b = b.time_to_idle(Duration::from_nanos(tti));
        }
        if f.expiry {
            b = b.expiry();
        }
        if f.weigher {
            b = b.max_weight(1 << 20).weigher(|_, _| 1);
        }
        if f.listener {
            let l = log.clone();
            b = b.eviction_listener(move |k: &u8, v: &Val, c| {
                l.lock().unwrap().push((*k, v.clone(), c));
            });
        }
        if f.stats {
            b = b.record_stats();
        }
        if f.clock_policy {
            b = b.policy(Policy::Clock);
        }
        let cache = Arc::new(b.build().expect("valid configuration"));
        let now = u64::try_from(clockline::Clock::now(&*clock).as_nanos()).unwrap();
        Self {
            cache,
            clock,
            log,
            m: Model {
                f,
                cap,
                exact: cap > usize::from(keys),
                now,
                entries: BTreeMap::new(),
                tombs: BTreeMap::new(),
                seq: 0,
                counts: Counts::default(),
                owed: Vec::new(),
                stored: BTreeMap::new(),
                handed_back: BTreeSet::new(),
                reported: BTreeMap::new(),
                failures: 0,
            },
        }
    }

    /// If the docs allow `k` to be live or expired now, asks `peek` (which changes nothing), so
    /// that the write that follows has one expected outcome.
    fn settle(&mut self, k: u8) {
        if self.m.live(k) == Some(Live::Maybe) {
            self.peek(k, "settling peek");
        }
    }

    fn peek(&mut self, k: u8, what: &str) -> Option<Val> {
        let got = self.cache.peek(&k);
        self.check_read(k, got.as_ref(), what);
        got
    }

    /// A read returned `got` for `k`: it must be the model's value, and live.
    fn check_read(&mut self, k: u8, got: Option<&Val>, what: &str) {
        if let Some(v) = got {
            let e = self.m.entries.get(&k);
            assert_eq!(
                Some(v),
                e.map(|e| &e.val),
                "{what}({k}) returned a value the model does not hold"
            );
        }
        self.m.observe(k, got.is_some(), what);
    }

    /// A read that counts and touches, as `get` does: checks it, then a hit moves the idle
    /// deadline, a miss counts as one.
    fn counted_read(&mut self, k: u8, got: Option<&Val>, what: &str) {
        self.check_read(k, got, what);
        if got.is_some() {
            self.m.counts.hits += 1;
            self.m.touch(k);
        } else {
            self.m.counts.misses += 1;
        }
    }

    /// A refused insert hands the pair back and changes nothing.
    fn refused(&mut self, res: Result<(), InsertError<u8, Val>>, val: Val, kind: InsertErrorKind) {
        let err = res.expect_err("the insert is refused");
        assert_eq!(err.kind, kind, "why the insert of {val:?} was refused");
        assert_eq!(
            (err.key, &err.value),
            (val.key, &val),
            "the pair comes back"
        );
        self.m.handed_back.insert(val.seq);
    }

    /// The body of a loader of `k` (so the lookup missed): runs `during`, settles `k` for the
    /// insert that follows, and returns the loaded value (with the version it tells) or an
    /// error.
    fn load_body(&mut self, k: u8, loader: Loader, during: &[Op]) -> Began {
        self.counted_read(k, None, "a load's lookup");
        let tomb = self.m.tombs.get(&k).copied();
        let present = self.m.entries.get(&k).map(|e| e.val.version);
        let at = self.m.now;
        // Each checked as it goes: the miss is counted by now, the load not yet.
        for op in during {
            self.step(op);
        }
        self.settle(k);
        let result = match loader {
            Loader::Plain | Loader::Try(true) => Some(Ok(self.m.next_val(k, 0))),
            Loader::Versioned(Some(n)) => {
                // Stored with its version only in a versioned cache.
                let stored = if self.m.f.versioned { n } else { 0 };
                Some(Ok(self.m.next_val(k, stored)))
            }
            Loader::Try(false) | Loader::Versioned(None) => {
                self.m.failures += 1;
                Some(Err(LoadFailed(self.m.failures)))
            }
            Loader::Panics => None,
        };
        Began {
            tomb,
            present,
            at,
            result,
        }
    }

    fn step(&mut self, op: &Op) {
        let mut len_before = self.m.entries.len();
        let mut inserted_new = None;
        match *op {
            Op::Insert(k) => {
                self.settle(k);
                let val = self.m.next_val(k, 0);
                inserted_new = (!self.m.entries.contains_key(&k)).then(|| k);
                self.cache.insert(k, val.clone()).expect("insert succeeds");
                self.m.store(val, None);
            }
            Op::InsertWithTtl(k, ttl) => {
                self.settle(k);
                let val = self.m.next_val(k, 0);
                let d = if ttl == NEVER {
                    Duration::MAX
                } else {
                    Duration::from_nanos(ttl)
                };
                let res = self.cache.insert_with_ttl(k, val.clone(), d);
                if self.m.f.has_deadline() {
                    inserted_new = (!self.m.entries.contains_key(&k)).then(|| k);
                    res.expect("insert_with_ttl succeeds");
                    self.m.store(val, Some(ttl));
                } else {
                    self.refused(res, val, InsertErrorKind::ExpiryDisabled);
                }
            }
            Op::InsertVersioned(k, n) => {
                self.settle(k);
                let val = self.m.next_val(k, n);
                let res = self.cache.insert_versioned(k, val.clone(), n);
                if !self.m.f.versioned {
                    self.refused(res, val, InsertErrorKind::NotVersioned);
                } else {
                    let entry = self.m.entries.get(&k).map(|e| e.val.version);
                    let tomb = self.m.tombs.get(&k).copied();
                    let expired = self.m.live(k) == Some(Live::No);
                    // Equal to a live entry's is stale: a redelivered notification changes
                    // nothing. Equal to the tombstone's is not: the tombstone says the source
                    // holds `n`, and this is that data (an evicted entry coming back); nor
                    // equal to an expired entry's, whose tombstone it becomes once swept.
                    match self.m.known_version(k) {
                        Some(current)
                            if entry.is_some_and(|e| n < e || (n == e && !expired))
                                || tomb.is_some_and(|t| n < t) =>
                        {
                            let stale = InsertErrorKind::Stale {
                                version: n,
                                current,
                            };
                            self.refused(res, val, stale);
                        }
                        _ => {
                            inserted_new = (!self.m.entries.contains_key(&k)).then(|| k);
                            res.expect("a newer version is stored");
                            self.m.store(val, None);
                        }
                    }
                }
            }
            Op::Invalidate(k, n) => {
                // Whether an expired entry is there decides the answer: settled first.
                if self.m.f.versioned {
                    self.settle(k);
                }
                let got = self.cache.invalidate_versioned(k, n);
                let want = if !self.m.f.versioned {
                    // No versions to compare: removed as by `remove`, no tombstone.
                    if self.m.entries.contains_key(&k) {
                        self.m.depart(k, RemovalCause::Explicit);
                    }
                    Invalidation::NotVersioned
                } else {
                    // An expired entry goes as a sweep would take it (`Expired`, its version
                    // kept as a tombstone) and the answer is `Absent`, as after that sweep; a
                    // live one is compared with `n`.
                    let expired = self.m.live(k) == Some(Live::No);
                    let want = match self.m.entries.get(&k).map(|e| e.val.version) {
                        Some(_) if expired => {
                            self.m.depart(k, RemovalCause::Expired);
                            Invalidation::Absent
                        }
                        Some(current) if current >= n => Invalidation::Stale { current },
                        Some(_) => {
                            self.m.depart(k, RemovalCause::Explicit);
                            Invalidation::Removed
                        }
                        None => Invalidation::Absent,
                    };
                    // A tombstone unless the entry was newer; raised, never lowered.
                    if !matches!(want, Invalidation::Stale { .. }) {
                        let t = self.m.tombs.entry(k).or_insert(n);
                        *t = (*t).max(n);
                    }
                    want
                };
                assert_eq!(got, want, "invalidate_versioned({k}, {n})");
            }
            Op::Compute(k, what) => {
                self.settle(k);
                let val = (what == 0).then(|| self.m.next_val(k, 0));
                let mut saw = Vec::new();
                let done = self.cache.compute(k, |v| {
                    saw.push(v.cloned());
                    match &val {
                        Some(val) => Compute::Put(val.clone()),
                        None if what == 1 => Compute::Remove,
                        None => Compute::Keep,
                    }
                });
                assert_eq!(saw.len(), 1, "one thread: the closure runs once");
                let saw = saw.pop().unwrap();
                // Judged at the same instant as a lookup: the model's value if live.
                self.check_read(k, saw.as_ref(), "compute");
                let done = done.expect("an unweighted cache takes every put");
                match val {
                    Some(val) => {
                        let want = if saw.is_some() {
                            Computed::Updated
                        } else {
                            Computed::Inserted
                        };
                        assert_eq!(done, want, "compute put of {k}");
                        inserted_new = (!self.m.entries.contains_key(&k)).then(|| k);
                        self.m.store(val, None);
                    }
                    None if what == 1 => {
                        let want = if saw.is_some() {
                            Computed::Removed
                        } else {
                            Computed::Unchanged
                        };
                        assert_eq!(done, want, "compute remove of {k}");
                        // An expired entry it saw as absent is removed all the same, as by
                        // `remove`.
                        if self.m.entries.contains_key(&k) {
                            self.m.depart(k, RemovalCause::Explicit);
                        }
                    }
                    None => assert_eq!(done, Computed::Unchanged, "compute keep of {k}"),
                }
            }
            Op::Remove(k) => {
                let got = self.cache.remove(&k);
                // Returns the value only if live; an expired entry is removed all the same and
                // reported as `Explicit`. Leaves the tombstone alone.
                self.check_read(k, got.as_ref(), "remove");
                if self.m.entries.contains_key(&k) {
                    self.m.depart(k, RemovalCause::Explicit);
                }
            }
            Op::Get(k) | Op::PinnedGet(k) => {
                let got = if matches!(op, Op::Get(_)) {
                    self.cache.get(&k)
                } else {
                    self.cache.pin().get(&k).cloned()
                };
                self.counted_read(k, got.as_ref(), "get");
            }
            Op::PinnedGetAcross(k, d) => {
                let pinned = self.cache.pin();
                self.clock.set_nanos(self.m.now + d);
                let got = pinned.get(&k).cloned();
                drop(pinned);
                // Judged, and the idle deadline moved, at the handle's instant.
                self.counted_read(k, got.as_ref(), "pinned get");
                self.advance_to(self.m.now + d);
            }
            Op::Peek(k) => {
                self.peek(k, "peek");
            }
            Op::Contains(k) => {
                let got = self.cache.contains_key(&k);
                self.m.observe(k, got, "contains_key");
            }
            Op::VersionOf(k) => {
                let got = self.cache.version_of(&k);
                if self.m.f.versioned {
                    if let Some(v) = got {
                        let e = self.m.entries.get(&k).map(|e| e.val.version);
                        assert_eq!(Some(v), e, "version_of({k})");
                    }
                    self.m.observe(k, got.is_some(), "version_of");
                } else {
                    assert_eq!(got, None, "an unversioned cache knows no versions");
                }
            }
            Op::Iter => {
                let seen: BTreeMap<u8, Val> = {
                    let pinned = self.cache.pin();
                    let mut seen = BTreeMap::new();
                    for (k, v) in pinned.iter() {
                        assert!(seen.insert(*k, v.clone()).is_none(), "key {k} seen twice");
                    }
                    seen
                };
                let keys: BTreeSet<u8> =
                    self.m.entries.keys().chain(seen.keys()).copied().collect();
                for k in keys {
                    self.check_read(k, seen.get(&k), "iter");
                }
            }
            Op::Clear => {
                self.cache.clear();
                // Expired or not, every entry goes as `Cleared`, and no tombstone is left.
                let keys: Vec<u8> = self.m.entries.keys().copied().collect();
                for k in keys {
                    self.m.depart(k, RemovalCause::Cleared);
                }
            }
            Op::Purge => {
                let keys: Vec<u8> = self.m.entries.keys().copied().collect();
                for &k in &keys {
                    self.settle(k);
                }
                let expired: Vec<u8> = keys
                    .into_iter()
                    .filter(|&k| self.m.live(k) == Some(Live::No))
                    .collect();
                let purged = self.cache.purge_expired();
                assert_eq!(purged, expired.len(), "purge_expired, expected {expired:?}");
                for k in expired {
                    self.m.depart(k, RemovalCause::Expired);
                }
            }
            Op::Advance(d) => self.advance_to(self.m.now + d),
            Op::Load(k, loader, ref during) => {
                let cache = Arc::clone(&self.cache);
                let mut began = None;
                let got: Option<Result<Val, Arc<LoadFailed>>> = {
                    let mut body = || {
                        assert!(began.is_none(), "the loader runs at most once");
                        let b = self.load_body(k, loader, during);
                        let res = b.result.clone();
                        began = Some(b);
                        match res {
                            Some(res) => res,
                            None => resume_unwind(Box::new(LoaderPanic)),
                        }
                    };
                    match loader {
                        Loader::Plain => Some(Ok(cache.get_or_insert_with(k, || {
                            body().expect("a plain loader returns a value")
                        }))),
                        Loader::Try(_) => Some(cache.try_get_or_insert_with(k, body)),
                        Loader::Versioned(n) => {
                            Some(cache.try_get_or_insert_versioned_with(k, || {
                                body().map(|v| (v, n.expect("returns a value")))
                            }))
                        }
                        // The panic reaches this caller (and only the loader's: a failed check
                        // of the model inside goes on unwinding).
                        Loader::Panics => match catch_unwind(AssertUnwindSafe(|| {
                            cache.get_or_insert_with(k, || body().expect("panics first"))
                        })) {
                            Ok(v) => Some(Ok(v)),
                            Err(p) if p.is::<LoaderPanic>() => None,
                            Err(p) => resume_unwind(p),
                        },
                    }
                };
                match began {
                    // A hit, counted and touched as by `get`; the loader did not run.
                    None => {
                        let v = got
                            .expect("no panic: the loader did not run")
                            .expect("the loader did not run: a hit");
                        self.counted_read(k, Some(&v), "a load's lookup");
                    }
                    Some(began) => {
                        self.m.counts.load_nanos += self.m.now - began.at;
                        match &began.result {
                            None => {
                                assert!(got.is_none(), "the loader's panic reaches the caller");
                                self.m.counts.loads_failed += 1;
                            }
                            Some(Err(e)) => {
                                self.m.counts.loads_failed += 1;
                                let got = got.expect("no panic").expect_err("the loader failed");
                                assert_eq!(*got, *e, "the caller gets its loader's error");
                            }
                            Some(Ok(val)) => {
                                self.m.counts.loads_ok += 1;
                                let got =
                                    got.expect("no panic").expect("the loader returned a value");
                                assert_eq!(&got, val, "the caller gets the loaded value");
                                len_before = self.m.entries.len();
                                if self.m.load_caches(k, loader, &began) {
                                    inserted_new = (!self.m.entries.contains_key(&k)).then(|| k);
                                    self.m.store(val.clone(), None);
                                } else {
                                    self.m.handed_back.insert(val.seq);
                                }
                            }
                        }
                    }
                }
            }
            Op::ToDeadline(k, seed) => {
                if let Some(e) = self.m.entries.get(&k) {
                    let idle = e.idle.unwrap_or(Window::NEVER);
                    let ends = [e.ttl.lo, e.ttl.hi, idle.lo, idle.hi];
                    let end = ends[(seed % 4) as usize];
                    let offsets = [0i64, 0, -(MS as i64), MS as i64, -1, 1];
                    let off = offsets[((seed >> 2) % offsets.len() as u64) as usize];
                    if end != NEVER {
                        let to = end.saturating_add_signed(off);
                        if to > self.m.now && to < NEVER / 2 {
                            self.advance_to(to);
                        }
                    }
                }
            }
        }
        self.check_listener(inserted_new, len_before);
        self.check_state(op);
    }

    fn advance_to(&mut self, to: u64) {
        self.m.now = to;
        self.clock.set_nanos(to);
    }

    /// The listener calls the operation made against those the model owes. In the evicting
    /// variant, an insert of a new key into a full cache may also evict one entry (by capacity,
    /// or an expired one first): the model learns which from the call.
    fn check_listener(&mut self, inserted_new: Option<u8>, len_before: usize) {
        let owed = std::mem::take(&mut self.m.owed);
        if !self.m.f.listener {
            return;
        }
        let mut calls = std::mem::take(&mut *self.log.lock().unwrap());
        let mut extra = Vec::new();
        for call in calls.drain(..) {
            if owed.contains(&call) {
                self.report(&call);
            } else {
                extra.push(call);
            }
        }
        for o in &owed {
            assert!(
                self.m.reported.contains_key(&o.1.seq),
                "the listener was not told of {o:?}"
            );
        }
        if extra.is_empty() {
            return;
        }
        assert!(
            !self.m.exact,
            "unexpected listener calls {extra:?} in a cache with room for every key"
        );
        let Some(new_key) = inserted_new else {
            panic!("listener calls {extra:?} from an operation that evicts nothing");
        };
        assert_eq!(extra.len(), 1, "one insert evicted {extra:?}");
        assert_eq!(
            len_before, self.m.cap,
            "an insert of {new_key} into a cache that was not full evicted {extra:?}"
        );
        let (k, val, cause) = extra.pop().expect("one");
        assert_ne!(k, new_key, "the new entry itself was evicted");
        assert_eq!(
            self.m.entries.get(&k).map(|e| &e.val),
            Some(&val),
            "evicted a value the model does not hold"
        );
        // The cause says whether the victim was live when it was taken.
        match cause {
            RemovalCause::Capacity => self.m.observe(k, true, "eviction by capacity"),
            RemovalCause::Expired => self.m.observe(k, false, "eviction as expired"),
            other => panic!("an eviction reported as {other:?}"),
        }
        self.m.depart(k, cause);
        let call = self.m.owed.pop().expect("just owed");
        self.report(&call);
    }

    fn report(&mut self, (k, val, cause): &(u8, Val, RemovalCause)) {
        assert_eq!(*k, val.key);
        assert!(
            self.m.stored.get(&val.seq) == Some(val),
            "reported a value never stored: {val:?}"
        );
        if let Some(first) = self.m.reported.insert(val.seq, *cause) {
            panic!("{val:?} reported twice: {first:?}, then {cause:?}");
        }
    }

    fn check_state(&mut self, op: &Op) {
        let len = self.m.entries.len();
        assert_eq!(self.cache.len(), len, "len() after {op:?}");
        assert!(len <= self.m.cap);
        assert_eq!(self.cache.check_invariants(), Ok(len), "after {op:?}");
        let tombs = if self.m.f.versioned {
            self.m.tombs.len()
        } else {
            0
        };
        assert_eq!(self.cache.tombstones(), tombs, "tombstones() after {op:?}");
        if self.m.f.stats {
            let s = self.cache.stats().expect("stats are recorded");
            let c = &self.m.counts;
            let got = Counts {
                hits: s.hits,
                misses: s.misses,
                inserts: s.inserts,
                updates: s.updates,
                evictions: s.evictions,
                expirations: s.expirations,
                removals: s.removals,
                replacements: s.replacements,
                cleared: s.cleared,
                loads_ok: s.loads_ok,
                loads_failed: s.loads_failed,
                load_nanos: u64::try_from(s.load_time.as_nanos()).unwrap(),
            };
            assert_eq!(&got, c, "statistics after {op:?}");
        } else {
            assert!(self.cache.stats().is_none());
        }
    }

    /// The last look at every key, then `clear()`: every value ever stored has now been
    /// reported exactly once, and no refused one.
    fn finish(mut self, keys: u8) {
        for k in 0..keys {
            self.peek(k, "final peek");
        }
        self.step(&Op::Clear);
        assert!(self.cache.is_empty());
        if self.m.f.listener {
            let stored: BTreeSet<u64> = self.m.stored.keys().copied().collect();
            let reported: BTreeSet<u64> = self.m.reported.keys().copied().collect();
            assert_eq!(stored, reported, "reported exactly the stored values");
            assert!(
                self.m.handed_back.is_disjoint(&reported),
                "a refused value was reported"
            );
            assert_eq!(
                stored.len() + self.m.handed_back.len(),
                self.m.seq as usize,
                "every value was stored or handed back"
            );
            // Dropping an empty cache reports nothing more.
            let log = self.log.clone();
            drop(self.cache);
            assert!(log.lock().unwrap().is_empty());
        }
    }
}

fn run(f: Features, cap: usize, keys: u8, ops: &[Op]) {
    let mut h = Harness::new(f, cap, keys);
    h.check_state(&Op::Iter);
    for op in ops {
        h.step(op);
    }
    h.finish(keys);
}

/// proptest's defaults, as in tests/model.rs: 256 cases (about a second and a quarter for the
/// three properties in a debug build on the 2-core VM), or `PROPTEST_CASES` for long runs.
fn config() -> ProptestConfig {
    ProptestConfig::default()
}

const KEYS: u8 = 8;

proptest! {
    #![proptest_config(config())]

    /// Room for every key and every tombstone: every answer must be the model's.
    #[test]
    fn every_feature_set_behaves_like_the_model(f in features(), ops in ops(KEYS, 200)) {
        run(f, 64, KEYS, &ops);
    }

    /// With a listener and versions always on: each stored value is reported once, with the
    /// cause the model gives, and refused ones never.
    #[test]
    fn the_listener_hears_of_every_stored_value_exactly_once(
        f in features(), ops in ops(KEYS, 200)
    ) {
        let f = Features { listener: true, versioned: true, ..f };
        run(f, 64, KEYS, &ops);
    }

    /// A capacity below the key space: the listener says what each insert evicted, and the
    /// model stays exact from there (tombstones keep evicted versions).
    #[test]
    fn evictions_keep_versions_and_the_listener_exact(
        f in features(), cap in 1usize..8, ops in ops(12, 200)
    ) {
        let f = Features { listener: true, ..f };
        run(f, cap, 12, &ops);
    }
}

/// Found by `every_feature_set_behaves_like_the_model`: after an invalidation at 1 and an
/// insert at 4, an insert at 1 was refused with `current: 1`, the tombstone's version, though
/// the cache knew 4. `current` is "the version the cache knows": the newest of the two.
#[test]
fn a_stale_insert_reports_the_entrys_version_when_it_is_newer_than_the_tombstone() {
    let cache: Cache<u8, u64> = Cache::builder()
        .max_capacity(16)
        .versioned()
        .build()
        .unwrap();
    assert_eq!(cache.invalidate_versioned(1, 1), Invalidation::Absent);
    cache.insert_versioned(1, 40, 4).unwrap();
    let err = cache.insert_versioned(1, 10, 1).unwrap_err();
    assert_eq!(
        err.kind,
        InsertErrorKind::Stale {
            version: 1,
            current: 4
        }
    );
    // Between the two, the entry refuses it, and says so as before.
    let err = cache.insert_versioned(1, 30, 3).unwrap_err();
    assert_eq!(
        err.kind,
        InsertErrorKind::Stale {
            version: 3,
            current: 4
        }
    );
    assert_eq!(cache.get(&1), Some(40));
}
