//! The public cache: lookups, inserts, removal and eviction over the raw table.
//!
//! [`Cache`] is a thin handle over an [`Inner`], which holds the table and everything the
//! features need. With a janitor the `Inner` is boxed, which gives the janitor thread a stable
//! address to sweep, and `Cache`'s `Drop` stops and joins that thread before the box is freed.

use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;
use std::time::Duration;

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

use crossbeam_epoch::{self as epoch, Atomic, Guard, Owned, Shared};
use equivalent::Equivalent;

use crate::budget::{Budget, Reservation};
use crate::builder::{Builder, Weigher};
use crate::clock::{Hand, Passed};
use crate::error::{BuildError, InsertError, InsertErrorKind};
use crate::expiry::{ticker, ClockSource, Expiry, ExtLayout, MS, NEVER};
use crate::janitor::Janitor;
use crate::listener::{Listener, Notes, RemovalCause};
use crate::loader::Flights;
use crate::policy::{Adaptive, Policy};
use crate::stats::{count_remembered, CacheStats, Counter, Stats, NO_STATS};
use crate::sync::{fence, spin_wait, AtomicBool, Ordering};
use crate::table::{retire, Found, Node, NodeBox, RawTable, MAX_WEIGHT, REF, SLOTS};
use crate::versions::{Snapshot, Tombstones};

/// The default hasher: [ahash](https://docs.rs/ahash) with random keys.
pub type DefaultHashBuilder = ahash::RandomState;

/// A concurrent cache bounded by entry count and, optionally, by total weight.
///
/// Reads take no lock, do no CAS and write no shared cache line once an entry is marked as
/// recently used. Writes never block reads. See the [crate docs](crate) for the guarantees.
///
/// A `Cache` is `Send + Sync` (when `K`, `V` and `S` are) and not `Clone`: share one between
/// threads or tasks through an [`Arc`].
///
/// ```
/// use std::sync::Arc;
/// let cache: Arc<clockline::Cache<String, u64>> = Arc::new(clockline::Cache::new(1_000));
/// let workers: Vec<_> = (0..4u64)
///     .map(|t| {
///         let cache = Arc::clone(&cache);
///         std::thread::spawn(move || {
///             cache.insert(format!("user-{t}"), t).unwrap();
///             // Lookups by `&str`: no `String` is built for a `get`.
///             cache.get_or_insert_with_by_ref("shared", || 42)
///         })
///     })
///     .collect();
/// for w in workers {
///     assert_eq!(w.join().unwrap(), 42);
/// }
/// assert_eq!(cache.get("user-3"), Some(3));
/// assert_eq!(cache.len(), 5);
/// ```
pub struct Cache<K, V, S = DefaultHashBuilder> {
    repr: Repr<K, V, S>,
    /// Stopped and joined first on drop, while the cache is still alive.
    janitor: Option<Janitor>,
}

/// A node's pointer, as the table holds it, and the node.
type Loaded<'g, K, V> = (Shared<'g, Node<K, V>>, &'g Node<K, V>);

/// The node in `slot`, if there is one and it is in the adaptive policy's window (a queue
/// entry may be stale: its node gone, or out of the window already).
fn window_node<'g, K, V>(
    table: &RawTable<K, V>,
    slot: usize,
    guard: &'g Guard,
) -> Option<Loaded<'g, K, V>> {
    let p = table.load_slot(slot, guard);
    // SAFETY: loaded under `guard`; nodes are retired through epoch.
    let n = unsafe { p.as_ref() }?;
    n.in_window().then(|| (p, n))
}

/// How many slots the adaptive policy's hand looks at for a victim to weigh against a
/// window candidate before it calls main hot and lets the candidate go (docs/design.md).
const CONTEST_REACH: usize = 32;

/// The adaptive policy's victim search limit: [`CONTEST_REACH`], or none in a cache that
/// expires entries (`now` is its clock), where the hand must reach expired entries before a
/// live one goes (tests/expiry.rs, `the_hand_takes_expired_entries_first`).
fn reach_of(now: Option<u64>) -> Option<usize> {
    now.is_none().then(|| CONTEST_REACH)
}

/// The adaptive policy's queue stores slot numbers in 32 bits; a table with more slots (over
/// three billion entries) runs plain CLOCK.
fn table_fits_ring(entries: usize) -> bool {
    RawTable::<(), ()>::buckets_for(entries).saturating_mul(SLOTS) < u32::MAX as usize
}

/// The most entries, at most `limit`, whose table still fits the adaptive policy's queue
/// (given that `from` entries do). A growable table under that policy grows no further: its
/// queue could not name the slots beyond (found in review: a weight-bounded cache with a large
/// `max_weight` would otherwise grow past 2^32 slots and wrap slot numbers).
fn ring_limit(from: usize, limit: usize) -> usize {
    if table_fits_ring(limit) {
        return limit;
    }
    let (mut lo, mut hi) = (from, limit); // fits(lo), !fits(hi)
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if table_fits_ring(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

/// Where the cache's state lives, and whether lookups need the feature half: inline, or boxed
/// when a janitor thread needs a stable address to sweep. Inline is the default because a box
/// costs every read hit one more dependent load before it can hash: 8 to 9 % of read-hit
/// throughput on the build VM (docs/benchmarks.md).
///
/// The tag also says whether the cache is plain (neither expiry nor statistics), so
/// [`Cache::lookup`] makes one predictable branch on it and a plain hit then runs the core's
/// read path: the probe and the reference bit, nothing else. A separate `plain` flag cost a
/// plain hit 8 more instructions than the core (two branches, a re-test of the probe's result,
/// a spilled register; callgrind, docs/benchmarks.md section 8).
// A `Repr` is made once per cache and never moved between variants: the size difference
// is the point (inline state, no pointer to chase).
#[allow(clippy::large_enum_variant)]
enum Repr<K, V, S> {
    /// Neither expiry nor statistics: lookups take the core's read path unchanged.
    Plain(Inner<K, V, S>),
    /// Expiry or statistics (or both): lookups go through [`Inner::lookup`], or the short
    /// path of [`Inner::ticked`].
    Inline(Inner<K, V, S>),
    /// With a janitor, which needs expiry, so never plain; shared with the janitor thread
    /// (see `janitor`).
    Shared(Arc<Inner<K, V, S>>),
}

/// The instant a lookup judges expiry at.
#[derive(Clone, Copy)]
pub(crate) enum At {
    /// Now, on the cache's clock (read only if the cache expires entries).
    Now,
    /// A fixed instant in clock nanoseconds: a [`Pinned`] handle's.
    Fixed(u64),
}

/// What a lookup does to the entry it finds, besides finding it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Read {
    /// Nothing: `peek`, `contains_key`, `version_of`.
    Peek,
    /// Marks it as used (reference bit, idle deadline) and counts the hit or miss: `get`.
    Get,
    /// Marks it as used, counts nothing: the loader's lookups after the first, in a call that
    /// has counted its lookup already.
    Uncounted,
}

/// Everything a cache is; see [`Cache`].
///
/// `repr(C)`, read-path fields first: a read hit touches `table` and `hasher`, which then share
/// the first line; the written counters (`hand`, `budget`) are `CachePadded` and come after
/// everything a reader touches.
#[repr(C)]
pub(crate) struct Inner<K, V, S> {
    /// The current table. Replaced only when a growable (weight-bounded, no `max_capacity`)
    /// cache grows; the old one is retired through epoch.
    table: Atomic<RawTable<K, V>>,
    hasher: S,
    /// The cache's only feature is a TTL kept in the weight bits and judged against the cached
    /// tick (the default clock): a lookup probes, compares the deadline with the tick's
    /// milliseconds and marks the entry, nothing else. Through the feature half of
    /// [`Inner::lookup`] the same hit cost 30 more instructions than a plain one (the clock's
    /// match, the division to milliseconds, the feature checks); this way it costs 6
    /// (callgrind, docs/benchmarks.md section 8). A flag, not a fourth [`Repr`]: LLVM turned
    /// a four-way match into a jump table that cost every plain hit 5 instructions.
    ticked: bool,
    /// The id of the cache's statistics, or [`NO_STATS`]: a hit counts through the stripe
    /// its thread remembers with one compare against this, before looking at `stats`.
    stats_id: u64,
    weigher: Option<Weigher<K, V>>,
    /// The most entries a growable table may grow to; `None` for a fixed table.
    grow_limit: Option<usize>,
    /// Set when allocating a grown table failed: the table stays as it is and evicts instead,
    /// rather than retrying the allocation forever.
    grow_failed: AtomicBool,
    /// Which extension words each node carries (none for a plain cache).
    pub(crate) ext: ExtLayout,
    pub(crate) expiry: Option<Expiry>,
    /// The clock for expiry and warm-up's rate limit.
    pub(crate) clock: ClockSource,
    listener: Option<Listener<K, V>>,
    pub(crate) stats: Option<Stats>,
    pub(crate) flights: Flights<K, V>,
    pub(crate) tombstones: Option<Tombstones<K>>,
    hand: Hand,
    /// The adaptive policy's state; `None` under [`Policy::Clock`].
    policy: Option<Adaptive>,
    budget: Budget,
}

/// The features a builder asks for, beyond bounds and hasher.
pub(crate) struct Features<K, V> {
    pub(crate) expiry: Option<Expiry>,
    pub(crate) clock: ClockSource,
    pub(crate) versioned: Option<Tombstones<K>>,
    pub(crate) listener: Option<Listener<K, V>>,
    pub(crate) stats: bool,
    pub(crate) janitor: Option<Duration>,
    pub(crate) policy: Policy,
}

/// What an insert under the home lock did.
enum Locked<K, V> {
    Done,
    /// The table should grow first; the node comes back.
    Grow(NodeBox<K, V>),
    /// A versioned insert older than (or as old as) what the cache knows.
    Stale(NodeBox<K, V>, u64),
    /// The adaptive policy did not admit a heavy newcomer ([`InsertErrorKind::Rejected`]).
    Rejected(NodeBox<K, V>),
}

/// What an insert may replace, beyond making room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cond {
    /// Anything: a plain insert (stored as version 0 in a versioned cache).
    Always,
    /// A version-guarded insert: only if newer than the live entry's version (an expired
    /// entry's own version is accepted, as its tombstone will accept it once the entry is
    /// swept) and not older than the key's tombstone (a tombstone's own version is the data
    /// it announced).
    Newer(u64),
    /// A loader's value in an unversioned cache: only if the key is absent or its entry has
    /// expired. A write of the key during the load (a write-through `insert` of newer data)
    /// wins, as in Guava's loading cache; the loaded value still goes to the caller. (It used
    /// to be stored with a plain insert over that write, which then served the older data
    /// until its TTL; found by the async-service dry run, `tests/loader.rs`,
    /// `a_write_during_a_load_wins_over_the_loaded_value`.)
    Absent,
    /// A loader's value in a versioned cache, whose version is unknown: only if what the
    /// tombstones knew of the key when the load began is unchanged, and the key is absent or
    /// holds an expired entry of the version it held then (the entry's version when the load
    /// began, expired or not: `None` if the key was absent). So it never replaces what a
    /// versioned insert or an invalidation brought meanwhile, even once that has expired too.
    /// (Versions, not entries, are compared: a plain write during the load, version 0, is
    /// protected only while it is live.)
    Loaded(Snapshot, Option<u64>),
    /// A loader's value whose version the loader told (`try_get_or_insert_versioned_with`),
    /// with what the tombstones knew when the load began: as [`Cond::Newer`] against the
    /// entry, an *expired* entry of the same version included (the same data, loaded again;
    /// refusing it would reload the key on every lookup until something removed the expired
    /// entry); against the tombstones, see
    /// [`Since::refuses_load_at`](crate::versions::Since::refuses_load_at)
    /// (a tombstone of the same version does not refuse it, for the same reason).
    LoadedAt(u64, Snapshot),
    /// [`Cache::compute`]'s put: only if the key's node, expired or not, is still the one at
    /// this address (0: only if the key has no node), and it is live exactly if the closure
    /// saw it live (the flag): not expired since, nor revived since by a read (see
    /// [`Inner::still_as_read`]). The caller holds the guard under which it saw that
    /// node, so the address cannot have been reused meanwhile.
    Unchanged(usize, bool),
}

impl Cond {
    /// The version a guarded insert stores and compares.
    fn version(self) -> Option<u64> {
        match self {
            Cond::Newer(v) | Cond::LoadedAt(v, _) => Some(v),
            Cond::Always | Cond::Absent | Cond::Loaded(..) | Cond::Unchanged(..) => None,
        }
    }
}

// SAFETY: the table shares keys and values between threads (readers get `&K`/`&V`, and any
// thread may drop them during reclamation), which is sound exactly when both are Send + Sync.
// Everything else is atomics, locks, or `S`, the weigher and the listener, which are shared by
// reference (the boxed closures are `Send + Sync`).
unsafe impl<K: Send + Sync, V: Send + Sync, S: Send> Send for Cache<K, V, S> {}
// SAFETY: as above; `&Cache` hands out `&S`, hence `S: Sync`.
unsafe impl<K: Send + Sync, V: Send + Sync, S: Sync> Sync for Cache<K, V, S> {}
// SAFETY: as for `Cache`; the janitor thread uses an `Inner` through a shared reference.
unsafe impl<K: Send + Sync, V: Send + Sync, S: Sync> Sync for Inner<K, V, S> {}
// SAFETY: as for `Cache`: the janitor thread may drop the last reference to a shared `Inner`
// (see `janitor`), which drops keys, values and `S` there.
unsafe impl<K: Send + Sync, V: Send + Sync, S: Send> Send for Inner<K, V, S> {}

impl<K, V> Cache<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// A cache of at most `capacity` entries, with the default hasher.
    ///
    /// # Panics
    /// If `capacity` is 0 or the table cannot be allocated; use [`Cache::builder`] to get these
    /// as a [`BuildError`] instead.
    pub fn new(capacity: usize) -> Self {
        match Self::builder().max_capacity(capacity).build() {
            Ok(cache) => cache,
            Err(e) => panic!("Cache::new({capacity}): {e}"),
        }
    }

    /// Starts a [`Builder`].
    pub fn builder() -> Builder<K, V> {
        Builder::new()
    }
}

impl<K, V, S> Cache<K, V, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// `grow_limit`: `Some(most entries)` makes the table start at `entries` and double when
    /// the entry count, not the weight, is what binds.
    pub(crate) fn from_parts(
        entries: usize,
        grow_limit: Option<usize>,
        max_weight: Option<u64>,
        weigher: Option<Weigher<K, V>>,
        hasher: S,
        features: Features<K, V>,
    ) -> Result<Self, BuildError> {
        let table = RawTable::try_with_entries(entries)
            .ok_or(BuildError::CapacityTooLarge { requested: entries })?;
        let ext = ExtLayout::new(
            features
                .expiry
                .as_ref()
                .is_some_and(|e| e.layout.deadline.is_some()),
            features
                .expiry
                .as_ref()
                .is_some_and(|e| e.layout.idle.is_some()),
            features.versioned.is_some(),
            weigher.is_none(),
        );
        let mut expiry = features.expiry;
        if let Some(e) = &mut expiry {
            e.set_layout(ext);
        }
        let plain = expiry.is_none() && !features.stats;
        // Shared caches (with a janitor) take the long path: their hits already pay a load.
        let ticked = !features.stats
            && features.janitor.is_none()
            && features.clock.is_ticker()
            && expiry.as_ref().is_some_and(|e| e.only_packed);
        let stats = features.stats.then(Stats::new);
        let adaptive = features.policy == Policy::Adaptive && table_fits_ring(entries);
        let grow_limit = match grow_limit {
            Some(limit) if adaptive => Some(ring_limit(entries, limit)),
            other => other,
        };
        let inner = Inner {
            table: Atomic::new(table),
            hand: Hand::new(),
            policy: adaptive.then(|| {
                // A growable table starts small; its policy is sized for what it grows to,
                // up to 65,536 entries (docs/design.md, *Adaptive policy*).
                let sized_for = match grow_limit {
                    Some(limit) => entries.max(limit.min(1 << 16)),
                    None => entries,
                };
                Adaptive::new(sized_for, entries)
            }),
            budget: Budget::new(entries, max_weight.unwrap_or(MAX_WEIGHT)),
            hasher,
            ticked,
            stats_id: stats.as_ref().map_or(NO_STATS, Stats::id),
            weigher,
            grow_limit,
            grow_failed: AtomicBool::new(false),
            ext,
            expiry,
            clock: features.clock,
            listener: features.listener,
            stats,
            flights: Flights::new(),
            tombstones: features.versioned,
        };
        let (repr, janitor) = match features.janitor {
            Some(every) => {
                let inner = Arc::new(inner);
                let janitor = Janitor::start(&inner, every)?;
                (Repr::Shared(inner), Some(janitor))
            }
            None if plain => (Repr::Plain(inner), None),
            None => (Repr::Inline(inner), None),
        };
        Ok(Self { repr, janitor })
    }
}

impl<K, V, S> Inner<K, V, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
    S: BuildHasher,
{
    #[inline(always)]
    pub(crate) fn hash<Q: ?Sized + Hash>(&self, key: &Q) -> u64 {
        self.hasher.hash_one(key)
    }

    /// A node's weight: always 0 in a cache without a weigher (its only `NodeBox::new` call,
    /// in `insert_noted`, passes 0 then), so such a cache skips decoding the node's word.
    #[inline(always)]
    fn weight_of(&self, node: &Node<K, V>) -> u64 {
        match self.weigher {
            Some(_) => node.weight(),
            None => 0,
        }
    }

    /// True once `table` is no longer the current table (a grower replaced it).
    fn replaced(&self, table: &RawTable<K, V>, guard: &Guard) -> bool {
        // Relaxed: only decides whether to stop waiting; the caller reloads with Acquire.
        !std::ptr::eq(self.table.load(Ordering::Relaxed, guard).as_raw(), table)
    }

    /// The version of `key`'s entry, expired or not (0 for an unversioned one); `None` if
    /// the key is absent. What a load remembers of the key when it begins ([`Cond::Loaded`]).
    pub(crate) fn present_version(&self, key: &K) -> Option<u64>
    where
        K: Eq,
    {
        let guard = crate::sync::pin();
        let node = self.find(key, &guard)?;
        Some(self.ext.version(node).unwrap_or(0))
    }

    /// Now on the expiry clock, or 0 (unused) in a cache without expiry.
    #[inline(always)]
    pub(crate) fn now(&self) -> u64 {
        match &self.expiry {
            Some(_) => self.clock.now(),
            None => 0,
        }
    }

    #[inline(always)]
    pub(crate) fn expired(&self, node: &Node<K, V>, now: u64) -> bool {
        match &self.expiry {
            Some(e) => e.is_expired(node, now),
            None => false,
        }
    }

    /// [`Cache::compute`]'s commit condition ([`Cond::Unchanged`]), checked by every path
    /// that commits for it: the key's node (`None`: no node) is the one at `expected` (0:
    /// none), and it is live now exactly if the closure saw it live: one it saw live has not
    /// expired since, and one it saw expired (as absent) has not come back to life. (A read
    /// that judges expiry at an earlier instant, a `Pinned` handle's or a `get` preempted
    /// between its clock read and its touch, moves an idle deadline past `now`: a put built
    /// on `None` replaced that live value, and a `Remove` removed it; `tests/compute.rs`,
    /// `a_put_built_on_an_expired_entry_that_a_read_revived_runs_again`.)
    pub(crate) fn still_as_read(
        &self,
        node: Option<&Node<K, V>>,
        expected: usize,
        saw_live: bool,
        now: u64,
    ) -> bool {
        node.map_or(0, |n| n as *const Node<K, V> as usize) == expected
            && node.map_or(true, |n| match (&self.expiry, saw_live) {
                (None, _) => saw_live,
                (Some(e), true) => !e.is_expired(n, now),
                // Seen expired: still expired, and settled so that no read revives it
                // between this check and the commit (a read that did so before the commit
                // lost the value it had just served: found in review).
                (Some(e), false) => e.settle_expired(n, now),
            })
    }

    /// The node for `key`, expired or not.
    #[inline(always)]
    pub(crate) fn find<'g, Q>(&self, key: &Q, guard: &'g Guard) -> Option<&'g Node<K, V>>
    where
        Q: ?Sized + Hash + Equivalent<K>,
    {
        let hash = self.hash(key);
        self.table(guard)
            .find(hash, |k| key.equivalent(k), guard)
            .map(|f| f.node())
    }

    /// The live node for `key`: `None` if absent or expired (at the time `now` gives, asked
    /// only in a cache with expiry, after the lookup). `read` says whether it marks the entry
    /// as used (reference bit, idle deadline) and counts the hit or miss.
    ///
    /// Correct for every cache, but a plain one takes the shorter path of
    /// [`Cache::lookup`]. Everything here is inlined into `get`: as calls, `find` and the
    /// feature checks cost a read hit 20 to 60 more instructions (callgrind,
    /// docs/benchmarks.md).
    #[inline(always)]
    pub(crate) fn lookup<'g, Q>(
        &self,
        key: &Q,
        now: impl FnOnce() -> u64,
        read: Read,
        guard: &'g Guard,
    ) -> Option<&'g Node<K, V>>
    where
        Q: ?Sized + Hash + Equivalent<K>,
    {
        let found = self.find(key, guard);
        self.admit(found, now, read)
    }

    /// The feature half of [`lookup`](Self::lookup): expiry check, idle deadline, counters.
    ///
    /// Hit and miss each count with a constant counter index: one count with the index chosen
    /// by a hit-or-miss flag (then re-tested for the result) cost a stats hit 4 more
    /// instructions, and every variant 2 more (callgrind, docs/benchmarks.md section 8).
    #[inline(always)]
    fn admit<'g>(
        &self,
        found: Option<&'g Node<K, V>>,
        now: impl FnOnce() -> u64,
        read: Read,
    ) -> Option<&'g Node<K, V>> {
        let touch = read != Read::Peek;
        let count = read == Read::Get;
        let live = match (found, &self.expiry) {
            (Some(node), Some(e)) if e.only_packed => {
                (!Expiry::is_expired_packed(node, now())).then(|| node)
            }
            (Some(node), Some(e)) => {
                let now = now();
                if e.is_expired(node, now) {
                    None
                } else {
                    // A touch that finds the entry settled by a writer that judged it
                    // expired (see `Expiry::settle_expired`): it is being replaced or removed.
                    (!touch || e.touch(node, now)).then(|| node)
                }
            }
            (found, _) => found,
        };
        match live {
            Some(node) if touch => {
                node.touch();
                // SAFETY: `stats_id` is `NO_STATS` or `self.stats`'s id, borrowed with `self`.
                if count && !unsafe { count_remembered(self.stats_id, Counter::Hit) } {
                    if let Some(st) = &self.stats {
                        st.add(Counter::Hit, 1);
                    }
                }
            }
            // The guard counts (and is then false) when this thread remembers the stripe.
            // SAFETY: as for the hit.
            None if touch
                && count
                && !unsafe { count_remembered(self.stats_id, Counter::Miss) } =>
            {
                if let Some(st) = &self.stats {
                    st.add(Counter::Miss, 1);
                }
            }
            _ => {}
        }
        live
    }

    /// Inserts or replaces; `ttl` overrides the default time-to-live, `cond` says what the
    /// insert may replace (see [`Cond`]).
    pub(crate) fn insert_full(
        &self,
        key: K,
        value: V,
        ttl: Option<Duration>,
        cond: Cond,
        guard: &Guard,
    ) -> Result<(), InsertError<K, V>> {
        self.insert_then(key, value, ttl, cond, guard, |_, _| {})
    }

    /// [`Self::insert_full`], running `then` once the insert is done and before the listener
    /// hears of what it evicted (the loader ends its flight there). `then` is told the
    /// earliest deadline the entry got ([`Expiry::fill`]; [`NEVER`] in a cache
    /// without expiry), computed from the instant the insert read the clock, and whether the
    /// value was refused as older than what the cache knows ([`InsertErrorKind::Stale`]).
    ///
    /// A panic of user code inside the insert (a key's `Eq` when it probes again after an
    /// eviction, its `Hash` while the table grows) is caught, `then` is dropped without being
    /// called, the listener still hears of every entry the insert had already evicted, and the
    /// panic is raised after that. (It used to unwind past the listener calls: an entry the
    /// insert had evicted was neither cached nor reported; `tests/hostile.rs`,
    /// `a_panic_in_eq_after_an_eviction_still_tells_the_listener`.)
    pub(crate) fn insert_then(
        &self,
        key: K,
        value: V,
        ttl: Option<Duration>,
        cond: Cond,
        guard: &Guard,
        then: impl FnOnce(u64, bool),
    ) -> Result<(), InsertError<K, V>> {
        let mut notes = Notes::new(self.listener.is_some());
        let mut born = NEVER;
        let result = catch_unwind(AssertUnwindSafe(|| {
            self.insert_noted(key, value, ttl, cond, &mut born, &mut notes, guard)
        }));
        let result = match result {
            // `then` may panic too (the loader's flight map runs the key's `Hash` and `Eq`):
            // the listener calls are still made, then the panic is raised.
            Ok(result) => match catch_unwind(AssertUnwindSafe(|| {
                let stale = match &result {
                    Err(e) if matches!(e.kind, InsertErrorKind::Stale { .. }) => true,
                    // Refused for its weight before the key was looked at: stale too if it
                    // would have been (a waiter took a value older than an invalidation it
                    // had seen, when that value was also too heavy: found in review).
                    Err(e) if matches!(e.kind, InsertErrorKind::TooHeavy { .. }) => {
                        self.outdated_load(&e.key, cond, guard)
                    }
                    _ => false,
                };
                then(born, stale)
            })) {
                Ok(()) => Some(result),
                Err(panic) => {
                    notes.panicked(panic);
                    None
                }
            },
            Err(panic) => {
                // Dropped before the listener runs, as `then` would have run: a loader's
                // flight is abandoned, so a listener that loads its key does not wait on it.
                // That drop may panic too (ending the flight runs the key's `Hash` and `Eq`,
                // which may well be what panicked in the insert): caught, so that it cannot
                // unwind past the listener calls; the insert's panic is the one raised. (It
                // used to escape here, and the entries the insert had evicted were never
                // reported; `tests/hostile.rs`,
                // `a_load_whose_insert_panics_after_evicting_still_tells_the_listener`.)
                notes.panicked(panic);
                if let Err(second) = catch_unwind(AssertUnwindSafe(|| drop(then))) {
                    notes.panicked(second);
                }
                None
            }
        };
        notes.deliver(self.listener.as_ref());
        match result {
            Some(result) => result,
            None => unreachable!("`deliver` raised the insert's (or `then`'s) panic"),
        }
    }

    /// Whether the key's entry `node` refuses an insert under `cond` as stale, judged at `now`
    /// (the tombstones are judged apart, before it):
    /// * a load without a version (`Loaded`) replaces only the entry it began with, and only
    ///   expired (lookups treat it as absent, which is why the value was loaded). A live entry
    ///   that arrived during the load stays, and so does an expired one of another version (a
    ///   versioned insert whose time ran out meanwhile: found in review, the load replaced any
    ///   expired entry);
    /// * an unversioned cache's load (`Absent`) replaces only an expired entry;
    /// * a versioned insert or load of `v` (`Newer`, `LoadedAt`) only an entry older than `v`,
    ///   or an expired one of `v` itself: an expired entry's version is what its tombstone
    ///   will say once the entry is swept, and a tombstone `n` accepts `n`. (An insert of its
    ///   own version was refused until swept: the same history gave two answers, by whether the
    ///   hand, the janitor or a purge had come by; found in review, `tests/versions.rs`,
    ///   `an_expired_entrys_own_version_is_accepted_swept_or_not`.)
    ///
    /// One predicate for `insert_locked` and for [`Self::outdated_load`], so that the two
    /// cannot disagree.
    fn entry_refuses(&self, cond: Cond, node: &Node<K, V>, now: u64) -> bool {
        let current = || self.ext.version(node).unwrap_or(0);
        match cond {
            Cond::Always | Cond::Unchanged(..) => false,
            Cond::Absent => !self.expired(node, now),
            Cond::Loaded(_, present) => !self.expired(node, now) || present != Some(current()),
            Cond::Newer(v) | Cond::LoadedAt(v, _) => {
                let current = current();
                v < current || (v == current && !self.expired(node, now))
            }
        }
    }

    /// For a loaded value refused as too heavy, a refusal made before the key is looked at:
    /// whether the insert's condition would have refused it as stale too (something newer
    /// arrived during the load), as `insert_locked` decides it, so that the flight's waiters
    /// look again instead of taking it ([`loader`](crate::loader): they take a loaded value
    /// only if it was not outdated). Read without the key's lock: a write racing this check
    /// is one that could as well have come just after the load.
    fn outdated_load(&self, key: &K, cond: Cond, guard: &Guard) -> bool {
        if !matches!(cond, Cond::Absent | Cond::Loaded(..) | Cond::LoadedAt(..)) {
            return false;
        }
        let now = self.now();
        let hash = self.hash(key);
        let refused_by_entry = self
            .table(guard)
            .find(hash, |k| k == key, guard)
            .is_some_and(|f| self.entry_refuses(cond, f.node(), now));
        refused_by_entry
            || self.tombstones.as_ref().is_some_and(|t| match cond {
                Cond::Loaded(began, _) => t.since(hash, key, began).refuses_unversioned_load(began),
                Cond::LoadedAt(v, began) => t.since(hash, key, began).refuses_load_at(v),
                _ => false,
            })
    }

    /// The body of [`Self::insert_then`]; sets `born` to the entry's earliest deadline.
    #[allow(clippy::too_many_arguments)]
    fn insert_noted<'g>(
        &self,
        key: K,
        value: V,
        ttl: Option<Duration>,
        cond: Cond,
        born: &mut u64,
        notes: &mut Notes<'g, K, V>,
        guard: &'g Guard,
    ) -> Result<(), InsertError<K, V>> {
        let version = cond.version();
        let hash = self.hash(&key);
        let weight = match &self.weigher {
            Some(weigher) => weigher(&key, &value),
            None => 0,
        };
        let refuse = |key, value, kind| Err(InsertError { key, value, kind });
        if weight > self.budget.max_weight() {
            let max_weight = self.budget.max_weight();
            return refuse(key, value, InsertErrorKind::TooHeavy { weight, max_weight });
        }
        if ttl.is_some() && !self.ext.has_deadline() {
            return refuse(key, value, InsertErrorKind::ExpiryDisabled);
        }
        if version.is_some() && self.ext.version.is_none() {
            return refuse(key, value, InsertErrorKind::NotVersioned);
        }
        let now = self.now();
        let mut words = [0u64; 3];
        let packed = match &self.expiry {
            Some(e) => {
                let (packed, earliest) = e.fill(&mut words, now, ttl);
                *born = earliest;
                packed
            }
            None => None,
        };
        if let Some(i) = self.ext.version {
            // An unversioned insert stores version 0: any versioned insert may replace it.
            words[i] = version.unwrap_or(0);
        }
        let mut node = NodeBox::new(key, value, weight, &words[..self.ext.len], packed);
        // A plain insert, or `compute`'s put over the entry it read, may replace without the
        // lock. (`compute` took the lock on every commit: 0.7-1.0x the throughput of `get` +
        // `insert` on 1,000 keys in the rate-limiter dry run.)
        let unlocked = match cond {
            Cond::Always => Some(None),
            Cond::Unchanged(expected, saw_live) if expected != 0 => {
                Some(Some((expected, saw_live)))
            }
            _ => None,
        };
        if let (None, Some(expect)) = (self.grow_limit, unlocked) {
            match self.replace_unlocked(hash, node, now, expect, notes, guard) {
                Ok(()) => return Ok(()),
                Err(back) => node = back,
            }
        }
        loop {
            let table = self.table(guard);
            // Inserts of one key serialize on its home bucket's lock, so they leave one entry;
            // nothing else waits for it. `None`: the table grew meanwhile, start over.
            let Some(lock) = table.lock(hash, || self.replaced(table, guard)) else {
                continue;
            };
            match self.insert_locked(table, hash, node, weight, cond, now, notes, guard) {
                Locked::Done => return Ok(()),
                Locked::Stale(back, current) => {
                    drop(lock);
                    let (key, value) = back.into_kv();
                    let version = version.unwrap_or(0);
                    return refuse(key, value, InsertErrorKind::Stale { version, current });
                }
                Locked::Rejected(back) => {
                    drop(lock);
                    let (key, value) = back.into_kv();
                    return refuse(key, value, InsertErrorKind::Rejected { weight });
                }
                Locked::Grow(back) => {
                    node = back;
                    drop(lock);
                    self.grow(table, notes, guard);
                }
            }
        }
    }

    /// The fast path of an insert that replaces a present key with one no heavier: a single CAS
    /// of the slot, no lock. Gives the node back if the key is absent, the new value is
    /// heavier (it needs a reservation), or the CAS lost to a concurrent unlink or replace.
    ///
    /// Only for tables that never grow: a grower relies on every writer holding a lock. Without
    /// the lock this is still linearizable: a concurrent insert of the same key under the lock
    /// also replaces with a CAS on the same slot (one wins, the other retries), and a concurrent
    /// remove or eviction unlinks with a CAS on it (if the unlink wins, we retry under the lock
    /// and find the key absent). The slot, its tag and the home's spill bits do not change.
    /// Versioned inserts never take it: their check of the stored version needs the lock.
    /// `expect`: `compute`'s condition (the node it read, and whether it saw it live), checked
    /// here and then by the CAS itself, which replaces only that node; a node that does not
    /// match is left to the locked path, which refuses it.
    #[inline]
    fn replace_unlocked<'g>(
        &self,
        hash: u64,
        node: NodeBox<K, V>,
        now: u64,
        expect: Option<(usize, bool)>,
        notes: &mut Notes<'g, K, V>,
        guard: &'g Guard,
    ) -> Result<(), NodeBox<K, V>> {
        let table = self.table(guard);
        let new_key = &node.kv().0;
        let Some(found) = table.find(hash, |k| k == new_key, guard) else {
            return Err(node);
        };
        if self.weight_of(&node) > self.weight_of(found.node()) {
            return Err(node);
        }
        if let Some((expected, saw_live)) = expect {
            if !self.still_as_read(Some(found.node()), expected, saw_live, now) {
                return Err(node);
            }
        }
        self.swap_in(table, &found, node, now, notes, guard)
    }

    /// Replaces the node at `found` by `node` with one CAS; on success retires the old node and
    /// gives back any weight the new one does not use. Any extra weight the new node needs must
    /// already be reserved (and is then committed by the caller).
    #[inline(always)]
    fn swap_in<'g>(
        &self,
        table: &RawTable<K, V>,
        found: &Found<'g, K, V>,
        node: NodeBox<K, V>,
        now: u64,
        notes: &mut Notes<'g, K, V>,
        guard: &'g Guard,
    ) -> Result<(), NodeBox<K, V>> {
        let (old_weight, weight) = (self.weight_of(found.node()), self.weight_of(&node));
        let cause = if self.expired(found.node(), now) {
            RemovalCause::Expired
        } else {
            RemovalCause::Replaced
        };
        self.entomb(found.node(), cause, notes);
        table.replace(found, node, guard)?;
        if let Some(st) = &self.stats {
            st.add(Counter::Update, 1);
        }
        // The old node's budget passes to the new one; only the weight difference goes back.
        self.note(found.node, cause, notes);
        // SAFETY: our CAS replaced it, so we alone retire it.
        unsafe { retire(found.node, guard) };
        self.budget
            .release_weight(old_weight.saturating_sub(weight));
        Ok(())
    }

    /// [`Self::swap_in`] for the locked path of an update, as a call: inlined there too, it
    /// made the evicting insert (which shares `insert_locked` with it but never takes it) cost
    /// 10 more instructions (callgrind), while the unlocked replace gains 40 from inlining.
    #[inline(never)]
    fn swap_in_locked<'g>(
        &self,
        table: &RawTable<K, V>,
        found: &Found<'g, K, V>,
        node: NodeBox<K, V>,
        now: u64,
        notes: &mut Notes<'g, K, V>,
        guard: &'g Guard,
    ) -> Result<(), NodeBox<K, V>> {
        self.swap_in(table, found, node, now, notes, guard)
    }

    /// The body of an insert, under the home bucket's lock.
    #[allow(clippy::too_many_arguments)]
    fn insert_locked<'g>(
        &self,
        table: &RawTable<K, V>,
        hash: u64,
        mut node: NodeBox<K, V>,
        weight: u64,
        cond: Cond,
        now: u64,
        notes: &mut Notes<'g, K, V>,
        guard: &'g Guard,
    ) -> Locked<K, V> {
        let mut reservation = Reservation::new(&self.budget);
        let mut step = 0;
        // Set once the key was found: an update is never refused admission, even if making
        // room for its extra weight evicted the old entry meanwhile.
        let mut updating = false;
        loop {
            let new_key = &node.kv().0;
            let found = table.find(hash, |k| k == new_key, guard);
            if let (Cond::Newer(_) | Cond::LoadedAt(..) | Cond::Loaded(..), Some(tombs)) =
                (cond, &self.tombstones)
            {
                // Acquire: an evictor records the tombstone before its unlink (`entomb`). If
                // the lookup missed the key because of that unlink, it read the unlink's CAS
                // or the tag clear after it (both Release); this fence makes that read an
                // acquire, so the tombstone is seen below. Strictly, the tombstone store's
                // lock already guarantees it: had this insert's lock come first, its lookup
                // would happen before the evictor's record and so before its unlink, and could
                // not have read it (coherence). The fence keeps the guarantee if tombstones
                // are ever read without that lock; it is free on x86. (The loom model
                // `versioned_insert_vs_eviction` checks the order of record and unlink, and
                // passes without the fence, as the argument says; loom-tests/README.md.)
                fence(Ordering::Acquire);
                // A refusal reports the newest version known: the entry's may be newer than
                // its tombstone (an invalidation, then a newer insert). It used to report the
                // tombstone's (tests/model_features.rs,
                // `a_stale_insert_reports_the_entrys_version_when_it_is_newer_than_the_tombstone`).
                let newest = |tomb: u64| {
                    let entry = found
                        .as_ref()
                        .map_or(0, |f| self.ext.version(f.node()).unwrap_or(0));
                    tomb.max(entry)
                };
                match cond {
                    // A value read from the source at `v`: refused by a newer tombstone,
                    // or by one dropped during the load (`Since::refuses_load_at`).
                    Cond::LoadedAt(v, began) => {
                        let now = tombs.since(hash, new_key, began);
                        if now.refuses_load_at(v) {
                            return Locked::Stale(node, newest(now.version().unwrap_or(0)));
                        }
                    }
                    Cond::Newer(v) => {
                        if let Some(t) = tombs.get(hash, new_key).filter(|&t| v < t) {
                            return Locked::Stale(node, newest(t));
                        }
                    }
                    // Something newer arrived while the value loaded: it is not cached.
                    Cond::Loaded(began, _) => {
                        let now = tombs.since(hash, new_key, began);
                        if now.refuses_unversioned_load(began) {
                            return Locked::Stale(node, now.version().unwrap_or(0));
                        }
                    }
                    Cond::Always | Cond::Absent | Cond::Unchanged(..) => {}
                }
            }
            if let Cond::Unchanged(expected, saw_live) = cond {
                // Another write of the key came between `compute`'s read and this lock, or the
                // live value the closure built on has expired since: committed, a fixed
                // window's count carried into the next window, reported `Updated` while the
                // listener heard `Expired` (found by the rate-limiter dry run;
                // `tests/compute.rs`, `a_put_built_on_a_value_that_expired_before_the_commit_runs_again`).
                if !self.still_as_read(found.as_ref().map(Found::node), expected, saw_live, now) {
                    let current = found
                        .as_ref()
                        .map_or(0, |f| self.ext.version(f.node()).unwrap_or(0));
                    return Locked::Stale(node, current);
                }
            }
            match found {
                Some(found) => {
                    let current = self.ext.version(found.node()).unwrap_or(0);
                    // The insert's condition against the entry (`entry_refuses` has the rules).
                    if self.entry_refuses(cond, found.node(), now) {
                        return Locked::Stale(node, current);
                    }
                    updating = true;
                    // An update takes no entry of the budget. One reserved by an earlier
                    // look that missed the key goes back (an `Eq` that answers otherwise
                    // now: found in review, the replace committed it and `len` counted an
                    // entry that did not exist, for good).
                    reservation.give_back_entry();
                    let extra = weight.saturating_sub(self.weight_of(found.node()));
                    // The entry being replaced is spared: evicting it for its own update
                    // reported it as `Capacity` and counted the write as an insert of an
                    // absent key (found by examples/blob_sim.rs; tests/blob_cache.rs).
                    self.make_room(
                        table,
                        table.home(hash),
                        found.node(),
                        &mut reservation,
                        false,
                        extra,
                        notes,
                        guard,
                    );
                    match self.swap_in_locked(table, &found, node, now, notes, guard) {
                        Ok(()) => {
                            reservation.commit();
                            return Locked::Done;
                        }
                        // Evicted meanwhile (removals take this lock): look again. Give the
                        // extra weight back first: an insert must never wait for budget while
                        // holding part of it, or two such inserts can wait on each other
                        // forever (tests/stress.rs, weighted_replaces_...).
                        Err(back) => {
                            node = back;
                            reservation.give_back_weight_above(0);
                        }
                    }
                }
                None => {
                    if let Some(policy) = &self.policy {
                        if !updating
                            && !reservation.has_entry()
                            && !self.admits_heavy(policy, table, hash, weight, now, guard)
                        {
                            policy.arrived(hash, self.policy_entries());
                            return Locked::Rejected(node);
                        }
                    }
                    if !self.make_room(
                        table,
                        table.home(hash),
                        std::ptr::null(),
                        &mut reservation,
                        true,
                        weight,
                        notes,
                        guard,
                    ) {
                        return Locked::Grow(node);
                    }
                    let nslots = table.nslots();
                    let initial_bits = |bucket, pos: &dyn Fn() -> usize| match &self.policy {
                        Some(policy) => policy.window_bits(bucket),
                        None if self.hand.starts_marked(pos(), nslots) => REF,
                        None => 0,
                    };
                    match table.publish(hash, node, initial_bits) {
                        Ok(slot) => {
                            reservation.commit();
                            if let Some(policy) = &self.policy {
                                self.entered_window(policy, table, slot, hash, guard);
                            }
                            if let Some(st) = &self.stats {
                                st.add(Counter::Insert, 1);
                            }
                            return Locked::Done;
                        }
                        // The key's neighbourhood is full. A growable table that is at
                        // least a quarter full grows; otherwise one of the neighbourhood's
                        // entries is evicted (which also gives back budget) and we try again.
                        // A quarter: a good hash almost never fills 56 slots below that load,
                        // and a degenerate one must not make the table grow without end.
                        Err(back) => {
                            node = back;
                            let max_len = self.budget.max_len();
                            if self.can_grow() && self.budget.len() >= max_len / 4 {
                                return Locked::Grow(node);
                            }
                            let expired = |n: &Node<K, V>| self.expired(n, now);
                            let doom = |n: &Node<K, V>, cause| self.entomb(n, cause, notes);
                            let victim = self.hand.evict_near(table, hash, expired, doom, guard);
                            if let Some((victim, cause)) = victim {
                                self.retire_unlinked(victim, cause, notes, guard);
                            }
                        }
                    }
                }
            }
            spin_wait(step);
            step = step.saturating_add(1);
        }
    }

    /// Brings `reservation` to one entry (if `entry`) and exactly `weight`, evicting as needed.
    /// Returns false, having reserved nothing, when the table should grow instead of evicting.
    /// `held` is the home bucket whose lock the caller holds; `spare` (or null) is never
    /// evicted: the entry an update makes room to replace.
    #[allow(clippy::too_many_arguments)]
    fn make_room<'g>(
        &self,
        table: &RawTable<K, V>,
        held: usize,
        spare: *const Node<K, V>,
        reservation: &mut Reservation<'_>,
        entry: bool,
        weight: u64,
        notes: &mut Notes<'g, K, V>,
        guard: &'g Guard,
    ) -> bool {
        let mut step = 0;
        if entry && !reservation.has_entry() {
            loop {
                if self.budget.try_reserve_entry() {
                    reservation.set_entry();
                    break;
                }
                if self.can_grow() {
                    return false;
                }
                // The victim's entry and weight pass straight to this reservation: the shared
                // counters are not written twice (release, then reserve) per eviction.
                if let Some(victim) = self.evict_one(table, held, spare, &mut step, notes, guard) {
                    reservation.set_entry();
                    reservation.take_weight(victim);
                    break;
                }
            }
        }
        while reservation.weight() < weight {
            let more = weight - reservation.weight();
            if self.budget.try_reserve_weight(more) {
                reservation.take_weight(more);
                break;
            }
            match self.evict_one(table, held, spare, &mut step, notes, guard) {
                Some(victim) => {
                    self.budget.release_entry();
                    reservation.take_weight(victim);
                }
                // Nothing to evict: the rest of the budget is held by writers in flight. Give
                // back what this insert gathered before waiting for them, as a replace does
                // (`insert_locked`): two inserts that each held part of the budget, with the
                // table empty, waited for each other forever (tests/stress.rs,
                // `weighted_inserts_of_new_keys_make_progress`).
                None => reservation.give_back_weight_above(0),
            }
        }
        reservation.give_back_weight_above(weight);
        true
    }

    /// True if the table may still grow.
    fn can_grow(&self) -> bool {
        // Relaxed: a flag that only ever turns on; a stale read costs one more failed attempt.
        self.grow_limit
            .is_some_and(|limit| self.budget.max_len() < limit)
            && !self.grow_failed.load(Ordering::Relaxed)
    }

    /// Lets the hand evict one entry (an expired one first) and returns its weight: the caller
    /// now holds the victim's entry and weight in the budget. If the hand found none (every
    /// slot empty or in flight), waits a little for the writers that hold the budget and
    /// returns `None`.
    fn evict_one<'g>(
        &self,
        table: &RawTable<K, V>,
        held: usize,
        spare: *const Node<K, V>,
        step: &mut u32,
        notes: &mut Notes<'g, K, V>,
        guard: &'g Guard,
    ) -> Option<u64> {
        if let Some(policy) = &self.policy {
            let now = self.expiry.as_ref().map(|_| self.clock.now());
            let weight = self.evict_adaptive(policy, table, held, spare, now, notes, guard);
            if weight.is_none() {
                spin_wait(*step);
                *step = step.saturating_add(1);
            }
            return weight;
        }
        let doom = |n: &Node<K, V>, cause| self.entomb(n, cause, notes);
        let victim = match &self.expiry {
            Some(e) => {
                let now = self.clock.now();
                self.hand.evict(
                    table,
                    Some(held),
                    spare,
                    |n| e.is_expired(n, now),
                    doom,
                    guard,
                )
            }
            None => self
                .hand
                .evict(table, Some(held), spare, |_| false, doom, guard),
        };
        match victim {
            Some((node, cause)) => Some(self.retire_owned(node, cause, notes, guard)),
            None => {
                spin_wait(*step);
                *step = step.saturating_add(1);
                None
            }
        }
    }

    /// The hash of a node's key, for the policy's sketch and ghost. A panic in the user's
    /// `Hash` here (a key that hashed fine when it was inserted) costs the key its frequency
    /// estimate, never the cache's consistency.
    fn node_hash(&self, node: &Node<K, V>) -> u64 {
        catch_unwind(AssertUnwindSafe(|| self.hash(&node.kv().0))).unwrap_or(0)
    }

    /// The cache's size in entries, for the adaptive policy's fractions: the entry capacity of a
    /// cache without a weigher, the current count of one with (its weights decide how many
    /// entries it holds).
    fn policy_entries(&self) -> usize {
        if self.weigher.is_some() {
            self.budget.len()
        } else {
            self.budget.max_len()
        }
    }

    /// A new key's node is published in `slot`, in the window: counts the key, lets the
    /// ghost adapt the window (and send a key main evicted a short while ago straight to
    /// main), and while the cache is not full moves the window's oldest
    /// entries beyond its target to main (with no contest: nothing needs to leave).
    fn entered_window(
        &self,
        policy: &Adaptive,
        table: &RawTable<K, V>,
        slot: usize,
        hash: u64,
        guard: &Guard,
    ) {
        let ring = policy.ring_of(slot / SLOTS);
        if policy.arrived(hash, self.policy_entries()) {
            // Main evicted this key a short while ago: straight to main, with no window turn
            // and no contest. Counted into the window and taken out again at once, so the
            // count stays exact whoever takes the `WINDOW` bit (this, or an unlink meanwhile).
            policy.entered_unqueued(ring);
            self.promote(policy, table, slot, guard);
        } else if let Some(overwritten) = policy.entered(ring, slot) {
            self.promote(policy, table, overwritten, guard);
        }
        let (next, after) = policy.next_overwrites(ring);
        table.prefetch_slots(next, after, guard);
        for _ in 0..2 {
            let full = self.budget.len() >= self.budget.max_len()
                || self.budget.weight() >= self.budget.max_weight();
            if full || !policy.over_target(ring) {
                break;
            }
            match policy.oldest(ring) {
                Some(s) => self.promote(policy, table, s, guard),
                None => break,
            }
        }
    }

    /// Moves the node in `slot`, if it is (still) in the window, to the main region.
    fn promote(&self, policy: &Adaptive, table: &RawTable<K, V>, slot: usize, guard: &Guard) {
        // SAFETY: loaded under `guard`; nodes are retired through epoch.
        if let Some(n) = unsafe { table.load_slot(slot, guard).as_ref() } {
            self.promote_node(policy, n);
        }
    }

    /// Puts the window node `node`, in `slot`, back at the end of its queue; a node whose
    /// entry the ring had to overwrite for it leaves the window.
    fn requeue(
        &self,
        policy: &Adaptive,
        table: &RawTable<K, V>,
        node: &Node<K, V>,
        slot: usize,
        guard: &Guard,
    ) {
        if let Some(overwritten) = policy.requeue(node.ring(), slot) {
            self.promote(policy, table, overwritten, guard);
        }
    }

    /// Moves `node` to the main region if it is still in the window. It keeps its place in
    /// the hand's turn. (Starting it marked when that place is just ahead of the hand, as a new
    /// CLOCK entry does, was measured and changed nothing: within 0.1 point on most traces,
    /// multi2 at 100 entries 3.9 points worse.)
    fn promote_node(&self, policy: &Adaptive, node: &Node<K, V>) {
        if node.take_window() {
            policy.left(node.ring());
        }
    }

    /// The adaptive policy's admission of a new entry of `weight` that does not fit the free
    /// weight: the hand picks the victims that would make room (without evicting them, at most
    /// eight); if it takes more than one, the newcomer must be estimated more frequent than the
    /// most frequent of them, or it is not admitted. So a heavy entry that arrives once does
    /// not flush many small, popular ones; one that keeps being requested gets in. One
    /// victim: the ordinary contest at the window's exit decides, as for any entry.
    fn admits_heavy(
        &self,
        policy: &Adaptive,
        table: &RawTable<K, V>,
        hash: u64,
        weight: u64,
        now: u64,
        guard: &Guard,
    ) -> bool {
        let free = self
            .budget
            .max_weight()
            .saturating_sub(self.budget.weight());
        if weight <= free {
            return true;
        }
        let expired = |n: &Node<K, V>| self.expiry.is_some() && self.expired(n, now);
        let harvest = |n: &Node<K, V>| policy.harvest(self.node_hash(n));
        // Only entries estimated at HOT or more recent uses are protected: a newcomer that
        // would displace entries used once or twice (a recency workload's) is admitted, so
        // new entries survive a short while whatever their weight.
        const HOT: u64 = 4;
        let (mut room, mut victims, mut hottest, mut main_hot) = (free, 0, 0, false);
        while room < weight && victims < 8 {
            // Bounded like the contest's search (none in a cache that expires entries), so
            // the check does not cost an insert a sweep of the table. A search that stops
            // having passed mostly recently used main entries means main is hot; one that
            // stops on a sparse or window-filled stretch (a growing table) only ends the look.
            let reach = reach_of(self.expiry.as_ref().map(|_| now));
            let mut passed = Passed::default();
            let Some(v) = self.hand.find_victim(
                table,
                reach,
                std::ptr::null(),
                expired,
                harvest,
                &mut passed,
                guard,
            ) else {
                // A hot main region with no victim found yet: the newcomer is heavy only if
                // no entry the hand passed weighs what it lacks. One that one eviction of such
                // an entry would make room for (every entry of a uniformly weighted cache) is
                // not heavy: the ordinary contest decides, as for any entry. (Found in review:
                // once every entry had been read, 19 of 20 new entries of weight 1 were
                // `Rejected` from a cache of entries of weight 1; tests/policy.rs,
                // `a_light_newcomer_is_admitted_into_a_hot_weighted_cache`.)
                main_hot = passed.hot * 2 >= CONTEST_REACH
                    && (victims > 0 || passed.heaviest < weight - room);
                break;
            };
            // SAFETY: loaded under `guard` by the hand.
            let vn = unsafe { v.node.deref() };
            room = room.saturating_add(vn.weight());
            victims += 1;
            if v.cause != RemovalCause::Expired {
                hottest = hottest.max(policy.frequency(self.node_hash(vn)));
            }
        }
        let newcomer = policy.frequency(hash) + 1;
        if main_hot {
            return newcomer > hottest.max(HOT);
        }
        victims < 2 || hottest < HOT || newcomer > hottest
    }

    /// The adaptive policy's eviction (see `crate::policy`): unlinks one entry and returns its
    /// weight, or `None` if nothing could be unlinked this time. While the window is over its
    /// target, its oldest entry competes with the main region's victim and the loser goes;
    /// otherwise the main region's victim goes. `now`: the clock, if the cache expires entries.
    #[allow(clippy::too_many_arguments)]
    fn evict_adaptive<'g>(
        &self,
        policy: &Adaptive,
        table: &RawTable<K, V>,
        held: usize,
        spare: *const Node<K, V>,
        now: Option<u64>,
        notes: &mut Notes<'g, K, V>,
        guard: &'g Guard,
    ) -> Option<u64> {
        let expired = |n: &Node<K, V>| now.is_some_and(|now| self.expired(n, now));
        let harvest = |n: &Node<K, V>| policy.harvest(self.node_hash(n));
        // Unlinks the node in (`bucket`, `slot`), records it in the ghost, and retires it.
        let mut take = |bucket, slot, node: Shared<'g, Node<K, V>>, hash, cause, from_window| {
            // SAFETY: loaded under `guard`; nodes are retired through epoch.
            self.entomb(unsafe { node.deref() }, cause, notes);
            if !table.unlink(bucket, slot, node, Some(held), guard) {
                return None;
            }
            policy.evicted(hash, from_window);
            Some(self.retire_owned(node, cause, notes, guard))
        };
        const ATTEMPTS: usize = 8;

        // False once this call met `spare` as the window's candidate: from then on it looks
        // in main (and, failing that, at any queue's oldest). A queue over its share whose
        // only node was the update's own entry sent the update back to that entry at every
        // attempt, and it never looked anywhere else: with another update needing this one's
        // room, both waited for good (the configuration fuzzer, seed 2 of the 2026-11-28
        // draws: a 32,768-entry cache with two queues, weights up to 10 of 10).
        let mut window_first = true;
        for attempt in 0..ATTEMPTS {
            // The queue of the inserting key's home bucket first (see `Adaptive`), then the
            // next one at each attempt: a queue whose nodes cannot give this insert its room
            // (its only node weighs nothing, or is locked by a writer waiting for this one)
            // kept every attempt on itself while the node that could sat in another queue
            // (the configuration fuzzer, seed 2 of the 2026-11-28 draws).
            let ring = policy.ring_of(held.wrapping_add(attempt));
            // The window's candidate, if its queue is over its share of the target.
            let candidate = if window_first && policy.over_target(ring) {
                policy.oldest(ring)
            } else {
                None
            };
            if let Some(s) = candidate {
                // The next two candidates' lines, for the evictions to come (as for the
                // queue's overwrites, see `entered_window`).
                let (next, after) = policy.next_oldest(ring);
                table.prefetch_slots(next, after, guard);
                let Some((c, cn)) = window_node(table, s, guard) else {
                    continue; // A stale queue entry: the node left the window already.
                };
                if std::ptr::eq(cn, spare) {
                    // The entry an update is making room to replace: it waits its turn again,
                    // and this call looks elsewhere (see `window_first`).
                    self.requeue(policy, table, cn, s, guard);
                    window_first = false;
                    continue;
                }
                let candidate_expired = expired(cn);
                if !candidate_expired && cn.take_ref() {
                    // Read while in the window: a second turn, and the hit is counted.
                    harvest(cn);
                    self.requeue(policy, table, cn, s, guard);
                    continue;
                }
                let candidate_hash = self.node_hash(cn);
                if !candidate_expired {
                    // A candidate estimated below 2 cannot win (it must beat the victim's
                    // estimate, at least 0, by more than one): it goes without a search for a
                    // victim, unless the cache expires entries, where the search also finds an
                    // expired entry to take first. (Measured: a little better hit ratio, +6
                    // points summed over 55 trace points, as the hand then harvests less often.)
                    let can_win = now.is_some() || policy.frequency(candidate_hash) >= 2;
                    // A bounded search: if the hand finds no cold entry in main within
                    // CONTEST_REACH slots, main is hot and the candidate loses.
                    let victim = can_win
                        .then(|| {
                            self.hand.find_victim(
                                table,
                                reach_of(now),
                                spare,
                                expired,
                                harvest,
                                &mut Passed::default(),
                                guard,
                            )
                        })
                        .flatten();
                    if let Some(v) = victim {
                        // SAFETY: loaded under `guard` by the hand.
                        let victim_hash = self.node_hash(unsafe { v.node.deref() });
                        if v.cause == RemovalCause::Expired
                            || policy.admit(candidate_hash, victim_hash)
                        {
                            let (b, i, node, cause) = (v.bucket, v.slot, v.node, v.cause);
                            if let Some(weight) = take(b, i, node, victim_hash, cause, false) {
                                self.promote_node(policy, cn);
                                return Some(weight);
                            }
                            // The victim went meanwhile: the candidate waits its turn again.
                            self.requeue(policy, table, cn, s, guard);
                            continue;
                        }
                    }
                }
                // The candidate loses (or has expired, or main has no victim).
                let cause = if candidate_expired {
                    RemovalCause::Expired
                } else {
                    RemovalCause::Capacity
                };
                if let Some(weight) = take(s / SLOTS, s % SLOTS, c, candidate_hash, cause, true) {
                    return Some(weight);
                }
                continue;
            }
            // The window is within its target: the main region gives up its victim, if the
            // hand finds a cold one within CONTEST_REACH slots (the last attempt searches as
            // far as it must); else main is hot and the window's oldest goes instead.
            let reach = reach_of(now).filter(|_| attempt + 1 < ATTEMPTS);
            let weight = match self.hand.find_victim(
                table,
                reach,
                spare,
                expired,
                harvest,
                &mut Passed::default(),
                guard,
            ) {
                Some(v) => {
                    // SAFETY: loaded under `guard` by the hand.
                    let hash = self.node_hash(unsafe { v.node.deref() });
                    take(v.bucket, v.slot, v.node, hash, v.cause, false)
                }
                None => {
                    // Main is hot, or every node is in the window (a cache of a few
                    // entries): the window's oldest goes.
                    let Some((s, (c, cn))) = policy
                        .oldest_of_any(ring)
                        .and_then(|s| Some((s, window_node(table, s, guard)?)))
                    else {
                        continue; // The window is empty, or that entry left it already.
                    };
                    if std::ptr::eq(cn, spare) {
                        // The entry an update is making room to replace: back in the queue,
                        // as on the candidate's path above. (It was dropped from the queue
                        // here, and a window node in no queue is never a candidate again:
                        // two updates of window entries that each needed the other's room
                        // waited for each other forever; found by the configuration fuzzer,
                        // seed 20207.)
                        self.requeue(policy, table, cn, s, guard);
                        continue;
                    }
                    let cause = if expired(cn) {
                        RemovalCause::Expired
                    } else {
                        RemovalCause::Capacity
                    };
                    take(s / SLOTS, s % SLOTS, c, self.node_hash(cn), cause, true)
                }
            };
            if weight.is_some() {
                return weight;
            }
        }
        None
    }

    /// Doubles a growable table (up to its limit), or returns at once if another thread grew
    /// `old` first.
    ///
    /// The grower takes every bucket lock of `old` in index order. Every writer (insert,
    /// remove, clear, purge, and eviction, which only runs inside an insert) holds a lock of
    /// the table it writes and never waits for a second lock while holding one, so once the
    /// grower holds them all, `old` is frozen: it copies the node pointers into a new table,
    /// publishes it (Release), and retires `old` with its locks still held, so writers waiting
    /// on them give up and retry on the new table. Readers are never blocked: they see `old`
    /// (frozen, valid) or the new table.
    #[cold]
    fn grow<'g>(&self, old: &RawTable<K, V>, notes: &mut Notes<'g, K, V>, guard: &'g Guard) {
        let Some(limit) = self.grow_limit else { return };
        let mut locks = Vec::with_capacity(old.nbuckets());
        for b in 0..old.nbuckets() {
            match old.lock_bucket(b, || self.replaced(old, guard)) {
                Some(lock) => locks.push(lock),
                None => return,
            }
        }
        if self.replaced(old, guard) {
            return;
        }
        let current = self.budget.max_len();
        let entries = current.saturating_mul(2).min(limit);
        if entries <= current {
            return;
        }
        let Some(new) = RawTable::try_with_entries(entries) else {
            // Relaxed: see `can_grow`.
            self.grow_failed.store(true, Ordering::Relaxed);
            return;
        };
        // Every key is hashed before any node is placed: the user's `Hash` is the only code
        // here that may panic, and a panic must leave `old` current and untouched. (Placing
        // as it hashed, the grower had already rewritten the home distances of the nodes it
        // placed, which `old` still uses to clear spill bits: keys became unreachable and a
        // second insert of one made a duplicate. Found in review; `tests/hostile.rs`,
        // `a_panicking_hash_while_growing_loses_no_key`.) `new` holds copies of pointers only,
        // and a table never frees its nodes on drop.
        let hashed = catch_unwind(AssertUnwindSafe(|| {
            let mut hashed = Vec::with_capacity(self.budget.len());
            for s in 0..old.nslots() {
                let p = old.load_slot(s, guard);
                // SAFETY: loaded under `guard`; nodes are retired through epoch.
                if let Some(node) = unsafe { p.as_ref() } {
                    hashed.push((p, self.hash(&node.kv().0)));
                }
            }
            hashed
        }));
        let hashed = match hashed {
            Ok(hashed) => hashed,
            Err(panic) => {
                drop(new);
                drop(locks);
                resume_unwind(panic);
            }
        };
        let mut homeless = Vec::new();
        for (p, hash) in hashed {
            if !new.place(hash, p) {
                homeless.push(p);
            }
        }
        if let Some(policy) = &self.policy {
            // Slot numbers changed: the window's queue is rebuilt for the new table (every
            // user of the queue holds a lock of `old`, so none is in flight; see `policy`).
            policy.clear_queue();
            for s in 0..new.nslots() {
                // SAFETY: loaded under `guard`; nodes are retired through epoch.
                if let Some((_, n)) = window_node(&new, s, guard) {
                    self.requeue(policy, &new, n, s, guard);
                }
            }
        }
        // Homeless nodes (below) leave with the old table: their tombstones first, as for
        // every eviction (see `entomb`).
        // An expired one leaves as `Expired`, as under the hand. (Found in review: they all
        // left as `Capacity`. Not reproduced: homeless nodes need a hasher that crowds a
        // neighbourhood of the doubled table more than it crowded the old one.)
        let now = self.now();
        let homeless: Vec<_> = homeless
            .into_iter()
            .map(|p| {
                // SAFETY: still in the old table, alive under `guard`.
                let node = unsafe { p.deref() };
                let cause = if self.expired(node, now) {
                    RemovalCause::Expired
                } else {
                    RemovalCause::Capacity
                };
                self.entomb(node, cause, notes);
                (p, cause)
            })
            .collect();
        self.budget.set_max_len(entries);
        // Release: publishes the new table's contents and the raised bound (pairs with the
        // Acquire in `table`).
        let old_ptr = self.table.swap(Owned::new(new), Ordering::Release, guard);
        for lock in locks {
            lock.leak();
        }
        // SAFETY: `old_ptr` is no longer reachable from the cache; threads that still hold it
        // are pinned, and epoch frees it (bucket array only: tables never free nodes on drop)
        // after they unpin.
        unsafe { guard.defer_destroy(old_ptr) };
        crate::sync::note_retired();
        // Nodes whose neighbourhood in the new table was full (a degenerate hasher) are
        // evicted: they are in no current table, and this thread alone could unlink them.
        for (node, cause) in homeless {
            self.retire_unlinked(node, cause, notes, guard);
        }
    }

    /// Records a departing node that this thread unlinked or replaced: counts it and owes the
    /// listener a call. (A versioned entry's tombstone is recorded before the unlink: see
    /// [`Self::entomb`].)
    #[inline(always)]
    fn note<'g>(
        &self,
        node: Shared<'g, Node<K, V>>,
        cause: RemovalCause,
        notes: &mut Notes<'g, K, V>,
    ) {
        if let Some(st) = &self.stats {
            st.removed(cause);
        }
        if let Some(policy) = &self.policy {
            // SAFETY: unlinked or replaced by this thread under the guard `'g`, not yet freed.
            let node = unsafe { node.deref() };
            if node.take_window() {
                policy.left(node.ring());
            }
        }
        notes.push(node, cause);
    }

    /// For a versioned entry the cache is about to drop by its own choice (`cause`: capacity,
    /// expiry), keeps its version as a tombstone, so that a late, older update is still
    /// refused. Call it *before* the unlink (or the replace) that drops `node`.
    ///
    /// Why before: an evicting thread does not hold the key's home lock, so a versioned insert
    /// of the key may run while it evicts. Recorded after the unlink, the insert could find
    /// neither the entry (unlinked) nor the tombstone (not yet recorded), and store an older
    /// version (found in review; `tests/versions.rs`,
    /// `an_evicted_version_refuses_an_older_insert_that_races_the_eviction`). Recorded before,
    /// the insert sees the entry or, if its lookup saw the unlink, the tombstone: it looks
    /// tombstones up after its lookup, behind an Acquire fence (`insert_locked`). A tombstone
    /// recorded for an unlink that then fails (the entry was replaced or removed meanwhile)
    /// only states a version the cache did hold.
    ///
    /// A panic in the key's `Hash`, `Eq` or `Clone` here is caught, so the eviction completes
    /// with nothing leaked or left counted; the tombstone is lost, and the panic is raised when
    /// the operation ends (`Notes::deliver`).
    ///
    /// Inlined, it is one test in a cache without versions (the eviction paths' closures stay
    /// small enough to inline: with the whole body here, the adaptive policy's `take` was no
    /// longer inlined and an evicting insert cost 43 more instructions, callgrind).
    #[inline(always)]
    fn entomb(&self, node: &Node<K, V>, cause: RemovalCause, notes: &mut Notes<'_, K, V>) {
        if self.tombstones.is_some() && cause.was_evicted() {
            self.entomb_versioned(node, notes);
        }
    }

    #[inline(never)]
    fn entomb_versioned(&self, node: &Node<K, V>, notes: &mut Notes<'_, K, V>) {
        let Some(tombs) = &self.tombstones else {
            return;
        };
        let Some(v) = self.ext.version(node).filter(|&v| v > 0) else {
            return;
        };
        let key = &node.kv().0;
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| tombs.record(self.hash(key), key, v))) {
            notes.panicked(p);
        }
    }

    /// Retires a node this thread unlinked and returns its weight; its entry and weight stay
    /// counted in the budget, for the caller to pass on or give back.
    fn retire_owned<'g>(
        &self,
        node: Shared<'g, Node<K, V>>,
        cause: RemovalCause,
        notes: &mut Notes<'g, K, V>,
        guard: &'g Guard,
    ) -> u64 {
        // SAFETY: non-null: it was just unlinked from a slot.
        let weight = self.weight_of(unsafe { node.deref() });
        self.note(node, cause, notes);
        // SAFETY: this thread's CAS unlinked it.
        unsafe { retire(node, guard) };
        weight
    }

    /// Gives back the budget of a node this thread unlinked and retires it.
    fn retire_unlinked<'g>(
        &self,
        node: Shared<'g, Node<K, V>>,
        cause: RemovalCause,
        notes: &mut Notes<'g, K, V>,
        guard: &'g Guard,
    ) {
        let weight = self.retire_owned(node, cause, notes, guard);
        self.budget.release_entry();
        self.budget.release_weight(weight);
    }

    /// Removes `key` under its home lock if `pick` agrees (it sees the node and returns the
    /// removal's cause, or `None` to keep the node). Returns the node, alive under `guard`.
    pub(crate) fn remove_if<'g, Q>(
        &self,
        key: &Q,
        mut pick: impl FnMut(&Node<K, V>) -> Option<RemovalCause>,
        on_locked: impl FnOnce(u64, bool),
        notes: &mut Notes<'g, K, V>,
        guard: &'g Guard,
    ) -> Option<&'g Node<K, V>>
    where
        Q: ?Sized + Hash + Equivalent<K>,
    {
        let hash = self.hash(key);
        let mut step = 0;
        let mut on_locked = Some(on_locked);
        loop {
            let table = self.table(guard);
            // Writers hold a lock of the table they write (see `grow`).
            let Some(_lock) = table.lock(hash, || self.replaced(table, guard)) else {
                continue;
            };
            let found = table.find(hash, |k| key.equivalent(k), guard);
            let cause = found.as_ref().and_then(|f| pick(f.node()));
            if let Some(f) = on_locked.take() {
                f(hash, cause.is_some());
            }
            let (found, cause) = (found?, cause?);
            self.entomb(found.node(), cause, notes);
            if table.unlink(
                found.bucket,
                found.slot,
                found.node,
                Some(table.home(hash)),
                guard,
            ) {
                let node = found.node();
                self.retire_unlinked(found.node, cause, notes, guard);
                return Some(node);
            }
            // Evicted by another thread meanwhile: look again.
            spin_wait(step);
            step = step.saturating_add(1);
        }
    }

    pub(crate) fn remove_with_guard<'g, Q>(
        &self,
        key: &Q,
        guard: &'g Guard,
    ) -> Option<&'g Node<K, V>>
    where
        Q: ?Sized + Hash + Equivalent<K>,
    {
        let mut notes = Notes::new(self.listener.is_some());
        let now = self.now();
        let node = self.remove_if(
            key,
            |_| Some(RemovalCause::Explicit),
            |_, _| {},
            &mut notes,
            guard,
        );
        notes.deliver(self.listener.as_ref());
        node.filter(|n| !self.expired(n, now))
    }

    /// Unlinks, bucket by bucket under each bucket's lock, every entry `pick` names a cause
    /// for; returns how many. Inserts that run concurrently may survive.
    ///
    /// Each bucket's departures are reported once its lock is released. A panic there (the
    /// listener's, or a key's `Hash` while recording a tombstone) does not stop the sweep: the
    /// first is raised once every bucket is done. (It used to unwind out of the sweep at once,
    /// so a listener that panicked once left `clear` with most of the cache still in place;
    /// `tests/listener.rs`, `a_listener_that_panics_does_not_stop_clear_halfway`.)
    fn sweep(&self, pick: impl Fn(&Node<K, V>) -> Option<RemovalCause>) -> usize {
        let mut guard = crate::sync::pin();
        let mut removed = 0;
        let mut first_panic = None;
        // The table being swept, by address and size (tables only grow, so the pair names one
        // table even if a repin lets its address be reused), and the next bucket.
        let mut walking = None;
        let mut b = 0;
        // The guard is renewed after every bucket whose listener calls ran, and every 16
        // buckets otherwise: crossbeam's epoch is process-wide, and one guard held for a whole
        // sweep stopped reclamation in every cache of the process for as long as the walk and
        // its listener calls took (found by the thread-churn dry run: a janitor sweep with a
        // 1 ms listener let an unrelated 100-entry cache pile up 99,000 retired values).
        // Nothing loaded under a guard is used after it is renewed: the table is loaded
        // again, and a grown one restarts the walk, as a replaced one always did.
        let mut unrenewed = 0;
        loop {
            if unrenewed >= 16 {
                guard.repin();
                unrenewed = 0;
            }
            let table = self.table(&guard);
            let id = (table as *const RawTable<K, V>, table.nbuckets());
            if walking != Some(id) {
                walking = Some(id);
                b = 0;
            }
            if b >= table.nbuckets() {
                break;
            }
            // The next bucket's nodes, and the line after it: their loads then overlap with
            // this bucket's work instead of each waiting its turn.
            table.prefetch_walk(b, &guard);
            let mut notes = Notes::new(self.listener.is_some());
            {
                // Writers hold a lock of the table they write (see `grow`).
                let Some(_lock) = table.lock_bucket(b, || self.replaced(table, &guard)) else {
                    walking = None;
                    continue;
                };
                for i in 0..SLOTS {
                    let p = table.load_slot(b * SLOTS + i, &guard);
                    // SAFETY: loaded under `guard`.
                    let Some(cause) = (unsafe { p.as_ref() }).and_then(&pick) else {
                        continue;
                    };
                    // SAFETY: loaded under `guard`.
                    self.entomb(unsafe { p.deref() }, cause, &mut notes);
                    if table.unlink(b, i, p, Some(b), &guard) {
                        self.retire_unlinked(p, cause, &mut notes, &guard);
                        removed += 1;
                    }
                }
            }
            unrenewed += if notes.is_empty() { 1 } else { 16 };
            let listener = self.listener.as_ref();
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| notes.deliver(listener))) {
                first_panic.get_or_insert(p);
            }
            b += 1;
        }
        if let Some(p) = first_panic {
            resume_unwind(p);
        }
        removed
    }

    pub(crate) fn clear(&self) {
        self.sweep(|_| Some(RemovalCause::Cleared));
    }

    pub(crate) fn purge_expired(&self) -> usize {
        if self.expiry.is_none() {
            return 0;
        }
        let now = self.now();
        self.sweep(|n| self.expired(n, now).then(|| RemovalCause::Expired))
    }

    pub(crate) fn listener(&self) -> Option<&Listener<K, V>> {
        self.listener.as_ref()
    }
}

impl<K, V, S> Inner<K, V, S> {
    /// The current table.
    #[inline(always)]
    fn table<'g>(&self, guard: &'g Guard) -> &'g RawTable<K, V> {
        // Acquire: pairs with the Release store of a grown table, so its contents are visible.
        let t = self.table.load(Ordering::Acquire, guard);
        // SAFETY: never null (set in `from_parts`, swapped only for another table), and a
        // replaced table is retired through epoch, so it outlives `guard`.
        unsafe { t.deref() }
    }
}

impl<K, V, S> Drop for Inner<K, V, S> {
    fn drop(&mut self) {
        // SAFETY: `&mut self`: no thread is inside the cache (the janitor was joined by
        // `Cache::drop`, or is the thread dropping this, after its sweep), so the unprotected
        // guard is sound. The current table owns every live
        // node (retired tables never free nodes and only hold copies of pointers that are also
        // here or already retired).
        unsafe {
            let guard = epoch::unprotected();
            let table = self.table.load(Ordering::Relaxed, guard);
            let mut table = table.into_owned();
            table.drop_nodes();
        }
    }
}

impl<K, V, S> Cache<K, V, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
    S: BuildHasher,
{
    /// [`Inner::lookup`], after one branch on the [`Repr`] tag: a plain cache (neither expiry
    /// nor statistics) probes and marks the entry, the core's read path and nothing more.
    ///
    /// A cache with only a packed TTL on the cached tick ([`Inner::ticked`]) compares the
    /// deadline with the tick's milliseconds and takes the plain path otherwise.
    #[inline(always)]
    pub(crate) fn lookup<'g, Q>(
        &self,
        key: &Q,
        at: At,
        read: Read,
        guard: &'g Guard,
    ) -> Option<&'g Node<K, V>>
    where
        Q: ?Sized + Hash + Equivalent<K>,
    {
        let touch = read != Read::Peek;
        let inner = match &self.repr {
            Repr::Plain(inner) => {
                let node = inner.find(key, guard)?;
                if touch {
                    node.touch();
                }
                return Some(node);
            }
            Repr::Inline(inner) if inner.ticked => {
                let node = inner.find(key, guard)?;
                // The deadline is read after the probe, like every other expiry check; the
                // tick (read after it here) may only be later, never earlier, than at the
                // probe, so the answer is one a probe at that instant could have given.
                let now_ms = match at {
                    At::Now => ticker::now_ms(),
                    At::Fixed(nanos) => nanos / MS,
                };
                if Expiry::is_expired_packed_ms(node, now_ms) {
                    return None;
                }
                if touch {
                    node.touch();
                }
                return Some(node);
            }
            Repr::Inline(inner) => inner,
            Repr::Shared(inner) => inner,
        };
        let now = || match at {
            At::Now => inner.now(),
            At::Fixed(nanos) => nanos,
        };
        inner.lookup(key, now, read, guard)
    }

    /// Pins the current thread and returns a handle whose lookups lend references instead of
    /// cloning. Entries stay alive (not necessarily in the cache) while the handle lives, so keep
    /// it short-lived: a long-lived handle delays the reclamation of everything removed meanwhile.
    /// In a cache with expiry the handle reads the clock once: its lookups judge expiry at
    /// the instant it was created.
    #[must_use = "a handle that is not used only delays reclamation"]
    pub fn pin(&self) -> Pinned<'_, K, V, S> {
        Pinned {
            cache: self,
            guard: crate::sync::pin(),
            now: self.inner().now(),
        }
    }

    /// Returns a clone of the value for `key` and marks the entry as recently used. An expired
    /// entry is never returned.
    #[inline(always)]
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        Q: ?Sized + Hash + Equivalent<K>,
        V: Clone,
    {
        let guard = crate::sync::pin();
        let node = self.lookup(key, At::Now, Read::Get, &guard)?;
        Some(node.read(|_, v| v.clone()))
    }

    /// Like [`get`](Self::get), with the version stored with the value, both read from the same
    /// entry (a `get` followed by [`version_of`](Self::version_of) may see two different
    /// entries when a write lands between them). For a fleet-coherence layer that keeps
    /// serving what it read, or forwards the version it answered with. In a cache built without
    /// [`versioned`](Builder::versioned) every entry reads as version 0, as a plain insert is
    /// stored in a versioned one.
    ///
    /// ```
    /// let cache: clockline::Cache<u64, &str> =
    ///     clockline::Cache::builder().max_capacity(100).versioned().build().unwrap();
    /// cache.insert_versioned(1, "row at 7", 7).unwrap();
    /// assert_eq!(cache.get_versioned(&1), Some(("row at 7", 7)));
    /// assert_eq!(cache.get_versioned(&2), None);
    /// ```
    pub fn get_versioned<Q>(&self, key: &Q) -> Option<(V, u64)>
    where
        Q: ?Sized + Hash + Equivalent<K>,
        V: Clone,
    {
        let guard = crate::sync::pin();
        let node = self.lookup(key, At::Now, Read::Get, &guard)?;
        let version = self.inner().ext.version(node).unwrap_or(0);
        Some((node.read(|_, v| v.clone()), version))
    }

    /// Like [`get`](Self::get) (the entry is marked as used and its idle deadline moved), but
    /// counts nothing in the statistics: the loader's lookups after the first, which belong to
    /// a call that has counted its lookup already.
    pub(crate) fn get_uncounted<Q>(&self, key: &Q) -> Option<V>
    where
        Q: ?Sized + Hash + Equivalent<K>,
        V: Clone,
    {
        let guard = crate::sync::pin();
        let node = self.lookup(key, At::Now, Read::Uncounted, &guard)?;
        Some(node.read(|_, v| v.clone()))
    }

    /// Like [`get`](Self::get), but leaves the entry's recency (and statistics) alone.
    pub fn peek<Q>(&self, key: &Q) -> Option<V>
    where
        Q: ?Sized + Hash + Equivalent<K>,
        V: Clone,
    {
        let guard = crate::sync::pin();
        self.lookup(key, At::Now, Read::Peek, &guard)
            .map(|n| n.read(|_, v| v.clone()))
    }

    /// True if `key` is cached and not expired. Leaves recency alone.
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        Q: ?Sized + Hash + Equivalent<K>,
    {
        let guard = crate::sync::pin();
        self.lookup(key, At::Now, Read::Peek, &guard).is_some()
    }

    /// Inserts or replaces the entry for `key`, evicting others if the cache is full. In a cache
    /// with a default [time-to-live](Builder::time_to_live), the entry gets it.
    ///
    /// Only a weighted cache refuses, and a refusal evicts nothing and hands the pair back in
    /// the [`InsertError`]: an entry heavier than `max_weight`
    /// ([`InsertErrorKind::TooHeavy`]), or, under the default adaptive policy, a new key whose
    /// entry would displace entries used more than it ([`InsertErrorKind::Rejected`]; an
    /// update of a present key is never rejected). In a cache without a weigher `insert`
    /// always succeeds, so `.unwrap()` is safe there and only there.
    ///
    /// ```
    /// use clockline::{Cache, InsertErrorKind};
    /// let cache: Cache<&str, Vec<u8>> = Cache::builder()
    ///     .max_weight(100)
    ///     .weigher(|_, v: &Vec<u8>| v.len() as u64)
    ///     .build()
    ///     .unwrap();
    /// cache.insert("small", vec![0; 10]).unwrap();
    /// let e = cache.insert("huge", vec![0; 1000]).unwrap_err();
    /// assert!(matches!(e.kind, InsertErrorKind::TooHeavy { weight: 1000, max_weight: 100 }));
    /// assert_eq!(e.value.len(), 1000, "the value comes back");
    /// ```
    pub fn insert(&self, key: K, value: V) -> Result<(), InsertError<K, V>> {
        let guard = crate::sync::pin();
        self.inner()
            .insert_full(key, value, None, Cond::Always, &guard)
    }

    /// Inserts or replaces the entry for `key` with its own time-to-live, which overrides the
    /// cache's default.
    ///
    /// Needs a cache built with [`Builder::time_to_live`] or [`Builder::expiry`]; otherwise
    /// (its nodes have no deadline word) the pair comes back with
    /// [`InsertErrorKind::ExpiryDisabled`]. A zero `ttl` stores an entry that is already
    /// expired: no lookup returns it and the hand removes it first (with
    /// [`RemovalCause::Expired`]). A `ttl` too large for the clock means "never expires".
    ///
    /// ```
    /// use std::time::Duration;
    /// let cache: clockline::Cache<&str, u32> =
    ///     clockline::Cache::builder().max_capacity(10).expiry().build().unwrap();
    /// cache.insert_with_ttl("session", 7, Duration::from_secs(30)).unwrap();
    /// assert_eq!(cache.get("session"), Some(7));
    /// ```
    pub fn insert_with_ttl(
        &self,
        key: K,
        value: V,
        ttl: Duration,
    ) -> Result<(), InsertError<K, V>> {
        let guard = crate::sync::pin();
        self.inner()
            .insert_full(key, value, Some(ttl), Cond::Always, &guard)
    }

    /// Removes the entry for `key` and returns a clone of its value (`None` if it was absent
    /// or had expired; an expired entry is still removed, with [`RemovalCause::Explicit`]).
    pub fn remove<Q>(&self, key: &Q) -> Option<V>
    where
        Q: ?Sized + Hash + Equivalent<K>,
        V: Clone,
    {
        let guard = crate::sync::pin();
        self.inner()
            .remove_with_guard(key, &guard)
            .map(|n| n.read(|_, v| v.clone()))
    }

    /// Removes every entry. Inserts that run concurrently with `clear` may survive it.
    pub fn clear(&self) {
        self.inner().clear();
    }

    /// Removes every expired entry now, bucket by bucket; returns how many. Without it, expired
    /// entries are removed by the hand as it passes (first, before any live entry), by the
    /// [janitor](Builder::janitor), or when their key is written. Until then they still count in
    /// [`len`](Self::len), but no lookup returns them.
    pub fn purge_expired(&self) -> usize {
        self.inner().purge_expired()
    }

    /// A snapshot of the statistics, or `None` if the cache was built without
    /// [`Builder::record_stats`].
    pub fn stats(&self) -> Option<CacheStats> {
        self.inner().stats.as_ref().map(Stats::snapshot)
    }
}

impl<K, V, S> Cache<K, V, S> {
    #[inline(always)]
    pub(crate) fn inner(&self) -> &Inner<K, V, S> {
        match &self.repr {
            Repr::Plain(i) | Repr::Inline(i) => i,
            Repr::Shared(b) => b,
        }
    }

    /// Entries in the cache now (including inserts in flight that already reserved room, and
    /// expired entries not yet removed).
    pub fn len(&self) -> usize {
        self.inner().budget.len()
    }

    /// True if [`len`](Self::len) is 0.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most entries the cache holds now. Fixed, except in a weight-bounded cache built
    /// without `max_capacity`, whose table grows (and this bound with it) as entries arrive,
    /// and never shrinks, not even after `clear`: there the budget is `max_weight`, and this
    /// is only the table's current size (1,024 entries at first).
    pub fn capacity(&self) -> usize {
        self.inner().budget.max_len()
    }

    /// Total weight of the entries now; 0 in a cache without a weigher.
    pub fn weight(&self) -> u64 {
        self.inner().budget.weight()
    }

    /// The weight budget, if the cache has a weigher.
    pub fn max_weight(&self) -> Option<u64> {
        self.inner()
            .weigher
            .as_ref()
            .map(|_| self.inner().budget.max_weight())
    }

    /// The key hasher.
    pub fn hasher(&self) -> &S {
        &self.inner().hasher
    }

    /// (entries, total distance from home in buckets, spill bits set, buckets):
    /// a diagnostic of probe lengths.
    #[doc(hidden)]
    pub fn probe_stats(&self) -> [usize; 4] {
        let guard = crate::sync::pin();
        let table = self.inner().table(&guard);
        let [a, b, c] = table.probe_stats(&guard);
        [a, b, c, table.nbuckets()]
    }

    /// The number of queues the adaptive policy's window is striped into (0 under
    /// [`Policy::Clock`](crate::Policy::Clock)). For tests.
    #[doc(hidden)]
    pub fn window_queues(&self) -> usize {
        self.inner().policy.as_ref().map_or(0, Adaptive::queues)
    }

    /// Checks the table's invariants without concurrent writers: every published entry is
    /// reachable from its home bucket, no key appears twice, the counters equal the published
    /// totals, and (adaptive policy) each queue of the window counts its nodes exactly and
    /// every window node is in its own queue. For tests.
    #[doc(hidden)]
    pub fn check_invariants(&self) -> Result<usize, String>
    where
        K: Hash + Eq,
        S: BuildHasher,
    {
        let inner = self.inner();
        let guard = crate::sync::pin();
        let table = inner.table(&guard);
        let mut count = 0usize;
        let mut weight = 0u64;
        let mut in_window = 0usize;
        let mut per_ring = vec![0usize; crate::table::RINGS_MAX];
        // A set: a `contains` on the list made this quadratic in the window's size.
        let queued: std::collections::HashSet<(usize, usize)> = inner
            .policy
            .as_ref()
            .map(Adaptive::queued)
            .unwrap_or_default()
            .into_iter()
            .collect();
        for s in 0..table.nslots() {
            let p = table.load_slot(s, &guard);
            // SAFETY: loaded under `guard`.
            if let Some(node) = unsafe { p.as_ref() } {
                count += 1;
                weight += node.weight();
                in_window += usize::from(node.in_window());
                if node.in_window() {
                    per_ring[node.ring()] += 1;
                }
                // A window node the queue does not name could never leave the window: the
                // hand passes window nodes by.
                if node.in_window() && !queued.contains(&(node.ring(), s)) {
                    return Err(format!("slot {s}: a window node missing from the queue"));
                }
                let key = &node.kv().0;
                let hash = inner.hasher.hash_one(key);
                match table.find(hash, |k| k == key, &guard) {
                    Some(f) if f.node == p => {}
                    Some(_) => return Err(format!("slot {s}: key found twice")),
                    None => return Err(format!("slot {s}: key not reachable")),
                }
            }
        }
        // At rest no insert holds a reservation, so the counters equal the published totals:
        // more would be budget leaked for good.
        if count != inner.budget.len() || count > inner.budget.max_len() {
            return Err(format!("{count} entries, len {}", inner.budget.len()));
        }
        if weight != inner.budget.weight() || weight > inner.budget.max_weight() {
            return Err(format!(
                "weight {weight}, counter {}",
                inner.budget.weight()
            ));
        }
        // Quiescent: every window node is counted once, by its own queue, and the count knows
        // no other.
        if let Some(counts) = inner.policy.as_ref().map(Adaptive::nodes_per_ring) {
            for (r, &c) in counts.iter().enumerate() {
                if c != per_ring[r] {
                    return Err(format!(
                        "queue {r}: {} window nodes, count {c}",
                        per_ring[r]
                    ));
                }
            }
            if let Some(r) = (counts.len()..per_ring.len()).find(|&r| per_ring[r] > 0) {
                return Err(format!(
                    "window nodes of queue {r}, of {} queues",
                    counts.len()
                ));
            }
        }
        match inner.policy.as_ref().map(Adaptive::window) {
            Some((len, _, _)) if len != in_window => {
                return Err(format!("{in_window} nodes in the window, count {len}"))
            }
            Some((_, target, most)) if target == 0 || target > most => {
                return Err(format!("window target {target} outside 1..={most}"))
            }
            None if in_window > 0 => return Err(format!("{in_window} window nodes under CLOCK")),
            _ => {}
        }
        Ok(count)
    }
}

impl<K, V, S> Drop for Cache<K, V, S> {
    fn drop(&mut self) {
        // Stop and join the janitor, so that no sweep or listener call outlives the cache
        // (it shares `inner`; on its own thread it is only told to stop: see `janitor`).
        if let Some(j) = self.janitor.take() {
            j.stop();
        }
    }
}

impl<K, V, S> fmt::Debug for Cache<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .field("weight", &self.weight())
            .field("max_weight", &self.max_weight())
            .field("expiry", &self.inner().expiry.is_some())
            .field("versioned", &self.inner().tombstones.is_some())
            .field("stats", &self.inner().stats.is_some())
            .field("janitor", &self.janitor.is_some())
            .finish_non_exhaustive()
    }
}

/// A pinned view of a [`Cache`]: lookups lend `&V` for as long as the handle lives.
///
/// Obtained with [`Cache::pin`]. The handle holds an epoch guard: nothing removed while it lives
/// is freed before it is dropped, from this cache or from any other (the epoch is shared by
/// every cache in the process), so keep it for one request, not for the life of a thread.
/// It is `!Send` (the guard belongs to its thread), so in async code take it inside one
/// synchronous stretch and drop it before the next `.await`.
pub struct Pinned<'c, K, V, S = DefaultHashBuilder> {
    cache: &'c Cache<K, V, S>,
    guard: Guard,
    /// The expiry clock when the handle was made (0 without expiry).
    now: u64,
}

impl<'c, K, V, S> Pinned<'c, K, V, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
    S: BuildHasher,
{
    /// The value for `key`, lent for the life of this handle; marks the entry as recently used.
    #[inline]
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        Q: ?Sized + Hash + Equivalent<K>,
    {
        let node = self
            .cache
            .lookup(key, At::Fixed(self.now), Read::Get, &self.guard)?;
        Some(&node.kv().1)
    }

    /// Like [`get`](Self::get), with the entry's version: see [`Cache::get_versioned`].
    pub fn get_versioned<Q>(&self, key: &Q) -> Option<(&V, u64)>
    where
        Q: ?Sized + Hash + Equivalent<K>,
    {
        let node = self
            .cache
            .lookup(key, At::Fixed(self.now), Read::Get, &self.guard)?;
        let version = self.cache.inner().ext.version(node).unwrap_or(0);
        Some((&node.kv().1, version))
    }

    /// Like [`get`](Self::get), but leaves recency alone.
    pub fn peek<Q>(&self, key: &Q) -> Option<&V>
    where
        Q: ?Sized + Hash + Equivalent<K>,
    {
        self.cache
            .lookup(key, At::Fixed(self.now), Read::Peek, &self.guard)
            .map(|n| &n.kv().1)
    }

    /// True if `key` is cached and not expired.
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        Q: ?Sized + Hash + Equivalent<K>,
    {
        self.cache
            .lookup(key, At::Fixed(self.now), Read::Peek, &self.guard)
            .is_some()
    }

    /// [`Cache::insert`] under this handle's guard.
    pub fn insert(&self, key: K, value: V) -> Result<(), InsertError<K, V>> {
        self.cache
            .inner()
            .insert_full(key, value, None, Cond::Always, &self.guard)
    }

    /// Removes the entry for `key` and lends its value for the life of this handle.
    pub fn remove<Q>(&self, key: &Q) -> Option<&V>
    where
        Q: ?Sized + Hash + Equivalent<K>,
    {
        self.cache
            .inner()
            .remove_with_guard(key, &self.guard)
            .map(|n| &n.kv().1)
    }

    /// Iterates over the live entries in table order. Concurrent writes may or may not be seen;
    /// no entry is seen twice unless it was re-inserted during the walk.
    pub fn iter(&self) -> Iter<'_, K, V> {
        Iter {
            table: self.cache.inner().table(&self.guard),
            guard: &self.guard,
            slot: 0,
            expiry: self.cache.inner().expiry.as_ref(),
            now: self.now,
        }
    }

    /// The cache this handle pins.
    pub fn cache(&self) -> &'c Cache<K, V, S> {
        self.cache
    }
}

impl<K, V, S> fmt::Debug for Pinned<'_, K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pinned").field("cache", self.cache).finish()
    }
}

/// Iterator over a [`Pinned`] cache's live entries.
pub struct Iter<'g, K, V> {
    table: &'g RawTable<K, V>,
    guard: &'g Guard,
    slot: usize,
    expiry: Option<&'g Expiry>,
    now: u64,
}

impl<'g, K, V> Iterator for Iter<'g, K, V> {
    type Item = (&'g K, &'g V);

    fn next(&mut self) -> Option<Self::Item> {
        let nslots = self.table.nslots();
        while self.slot < nslots {
            if self.slot % SLOTS == 0 {
                // Entering a bucket: the next one's nodes start loading now (as the hands do).
                self.table.prefetch_walk(self.slot / SLOTS, self.guard);
            }
            let p = self.table.load_slot(self.slot, self.guard);
            self.slot += 1;
            // SAFETY: loaded under the handle's guard, which outlives `'g`.
            if let Some(node) = unsafe { p.as_ref() } {
                if self.expiry.is_some_and(|e| e.is_expired(node, self.now)) {
                    continue;
                }
                let (k, v) = node.kv();
                return Some((k, v));
            }
        }
        None
    }
}

impl<K, V> fmt::Debug for Iter<'_, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iter").field("slot", &self.slot).finish()
    }
}

#[cfg(all(test, not(clockline_loom)))]
mod tests {
    use super::*;

    #[test]
    fn an_adaptive_table_grows_only_as_far_as_its_queue_can_name_slots() {
        let limit = ring_limit(1024, crate::MAX_WEIGHT as usize);
        assert!(table_fits_ring(limit) && !table_fits_ring(limit + 1));
        assert!(limit > 3_000_000_000, "{limit}");
        assert_eq!(
            ring_limit(1024, 1 << 20),
            1 << 20,
            "a limit that fits is kept"
        );
        let cache: Cache<u64, u64> = Cache::builder()
            .max_weight(crate::MAX_WEIGHT)
            .weigher(|_, _| 1)
            .build()
            .unwrap();
        assert!(cache.inner().policy.is_some());
        assert_eq!(cache.inner().grow_limit, Some(limit));
        let clock: Cache<u64, u64> = Cache::builder()
            .max_weight(crate::MAX_WEIGHT)
            .weigher(|_, _| 1)
            .policy(Policy::Clock)
            .build()
            .unwrap();
        assert_eq!(clock.inner().grow_limit, Some(crate::MAX_WEIGHT as usize));
    }
}
