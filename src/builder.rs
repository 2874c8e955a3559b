//! `Cache::builder()`: bounds, weigher and hasher, checked before anything is allocated.

use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use crate::cache::Features;
use crate::error::BuildError;
use crate::expiry::{ClockSource, CoarseClock, Expiry, ExtLayout};
use crate::listener::{Listener, RemovalCause};
use crate::versions::Tombstones;
use crate::{Cache, Clock, DefaultHashBuilder, Policy, MAX_WEIGHT};

pub(crate) type Weigher<K, V> = Box<dyn Fn(&K, &V) -> u64 + Send + Sync>;

/// Entries the table of a weight-bounded cache without `max_capacity` starts with; it doubles
/// whenever the entry count, not the weight, is what is full. See [`Builder::max_capacity`].
#[cfg(not(clockline_loom))]
pub const INITIAL_WEIGHTED_ENTRIES: usize = 1024;
/// Under loom a growable table starts with room for one entry, so a model grows it with its
/// second insert (see `loom-tests/tests/grow.rs`).
#[cfg(clockline_loom)]
pub const INITIAL_WEIGHTED_ENTRIES: usize = 1;

/// Configures and builds a [`Cache`].
///
/// ```
/// let cache: clockline::Cache<String, Vec<u8>> = clockline::Cache::builder()
///     .max_weight(64 * 1024 * 1024)
///     .weigher(|k: &String, v: &Vec<u8>| (k.len() + v.len()) as u64)
///     .max_capacity(100_000)
///     .build()
///     .unwrap();
/// assert_eq!(cache.max_weight(), Some(64 * 1024 * 1024));
/// ```
pub struct Builder<K, V, S = DefaultHashBuilder> {
    max_capacity: Option<usize>,
    max_weight: Option<u64>,
    weigher: Option<Weigher<K, V>>,
    hasher: S,
    more: More<K, V>,
    _marker: PhantomData<fn(K, V)>,
}

/// The feature settings, kept apart so that `hasher` can move them to a new builder type.
struct More<K, V> {
    expiry: bool,
    ttl: Option<Duration>,
    tti: Option<Duration>,
    clock: Option<Arc<dyn Clock>>,
    listener: Option<Listener<K, V>>,
    stats: bool,
    janitor: Option<Duration>,
    versioned: Option<fn(&K) -> K>,
    max_tombstones: Option<usize>,
    policy: Policy,
}

impl<K, V> Builder<K, V> {
    pub(crate) fn new() -> Self {
        Self {
            max_capacity: None,
            max_weight: None,
            weigher: None,
            hasher: DefaultHashBuilder::default(),
            more: More {
                expiry: false,
                ttl: None,
                tti: None,
                clock: None,
                listener: None,
                stats: false,
                janitor: None,
                versioned: None,
                max_tombstones: None,
                policy: Policy::default(),
            },
            _marker: PhantomData,
        }
    }
}

impl<K, V, S> Builder<K, V, S> {
    /// The most entries the cache holds at any instant; it also sizes the table, which is
    /// allocated once, up front (about 12.8 bytes per entry of capacity).
    ///
    /// A weight-bounded cache does not need it: without it the table starts with room for
    /// [`INITIAL_WEIGHTED_ENTRIES`] entries and doubles whenever it is full by count but not
    /// by weight, so only the weight budget decides what is evicted. Growing locks out writers
    /// (never readers) for the time it takes to copy the table's pointers; the entry count it
    /// may grow to is `max_weight` (entries of weight 0 still take a slot), and under the
    /// default adaptive policy at most about 3.07 billion entries, the most whose slots its
    /// window queue can number in 32 bits (beyond that, entries are evicted by count).
    pub fn max_capacity(mut self, entries: usize) -> Self {
        self.max_capacity = Some(entries);
        self
    }

    /// The most total weight the cache holds at any instant (one global budget). Needs a
    /// [`weigher`](Self::weigher).
    pub fn max_weight(mut self, weight: u64) -> Self {
        self.max_weight = Some(weight);
        self
    }

    /// Gives each entry its weight; called once per insert, before any lock is taken. An entry
    /// heavier than `max_weight` is refused with
    /// [`InsertErrorKind::TooHeavy`](crate::InsertErrorKind::TooHeavy).
    pub fn weigher(mut self, weigher: impl Fn(&K, &V) -> u64 + Send + Sync + 'static) -> Self {
        self.weigher = Some(Box::new(weigher));
        self
    }

    /// The hasher for keys (default: ahash with random keys).
    pub fn hasher<S2>(self, hasher: S2) -> Builder<K, V, S2> {
        Builder {
            max_capacity: self.max_capacity,
            max_weight: self.max_weight,
            weigher: self.weigher,
            hasher,
            more: self.more,
            _marker: PhantomData,
        }
    }

    /// Every entry expires this long after it was inserted (unless
    /// [`insert_with_ttl`](Cache::insert_with_ttl) gives it its own TTL). In a cache with a
    /// weigher this adds one 8-byte deadline word to each entry; without one, the deadline
    /// goes in the entry's unused weight bits (whole milliseconds) and costs no memory. Zero is refused ([`BuildError::ZeroTimeToLive`]); a TTL too
    /// long for the clock means "never". Precision: see [`expiry`](crate::expiry).
    ///
    /// ```
    /// use std::time::Duration;
    /// let cache: clockline::Cache<u64, u64> = clockline::Cache::builder()
    ///     .max_capacity(1000)
    ///     .time_to_live(Duration::from_secs(300))
    ///     .build()
    ///     .unwrap();
    /// cache.insert(1, 1).unwrap();
    /// assert_eq!(cache.get(&1), Some(1));
    /// ```
    pub fn time_to_live(mut self, ttl: Duration) -> Self {
        self.more.ttl = Some(ttl);
        self
    }

    /// Every entry expires when it has not been read (`get`, `get_versioned`, a
    /// [`Pinned`](crate::Pinned) handle's `get`, a loader's hit; not `peek` or `contains_key`)
    /// for this long, never earlier, and at most a sixteenth of it later. Adds one 8-byte word
    /// to each entry, which hits rewrite about sixteen times per TTI at most. Zero is refused.
    ///
    /// A read takes no lock, so one that races the idle deadline (it reads the clock just
    /// before the deadline while the hand, a purge or the janitor judges the entry just after
    /// it) returns the value, and the entry may still leave as `Expired` right after: a read
    /// extends the entry's life only once its mark has landed.
    pub fn time_to_idle(mut self, tti: Duration) -> Self {
        self.more.tti = Some(tti);
        self
    }

    /// Per-entry expiry without a default TTL: entries from [`insert`](Cache::insert) never
    /// expire, those from [`insert_with_ttl`](Cache::insert_with_ttl) do. Adds the deadline
    /// word; [`time_to_live`](Self::time_to_live) implies it.
    pub fn expiry(mut self) -> Self {
        self.more.expiry = true;
        self
    }

    /// The clock expiry and warm-up's rate limit are measured with. By default a cache with
    /// expiry reads a process-wide cached tick refreshed every millisecond by a ticker thread
    /// (see [`expiry`](crate::expiry), "Precision"); pass [`CoarseClock`] to read the kernel's
    /// coarse clock on every hit instead, with no thread, or your own [`Clock`] to move time in
    /// tests.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.more.clock = Some(Arc::new(clock));
        self
    }

    /// Called once for every entry that leaves the cache, with its key, value and
    /// [`RemovalCause`]; after the entry is unlinked and with no lock held, so it may call
    /// back into the cache. Entries still cached when the cache is dropped are not reported.
    ///
    /// It runs pinned (it borrows the departing key and value, which epoch reclamation keeps
    /// alive for it), and the epoch is shared by every cache in the process: while a listener
    /// call runs, nothing any cache retires can be freed. Keep it short; hand slow work (I/O)
    /// to another thread. (A sweep renews its guard between buckets, so a slow listener holds
    /// reclamation back for one bucket's calls at a time, not the whole sweep.)
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use clockline::RemovalCause;
    /// let log = Arc::new(Mutex::new(Vec::new()));
    /// let seen = log.clone();
    /// let cache: clockline::Cache<u32, u32> = clockline::Cache::builder()
    ///     .max_capacity(10)
    ///     .eviction_listener(move |k: &u32, _v: &u32, cause| seen.lock().unwrap().push((*k, cause)))
    ///     .build()
    ///     .unwrap();
    /// cache.insert(1, 10).unwrap();
    /// cache.insert(1, 11).unwrap();
    /// cache.remove(&1);
    /// assert_eq!(*log.lock().unwrap(), [(1, RemovalCause::Replaced), (1, RemovalCause::Explicit)]);
    /// ```
    pub fn eviction_listener(
        mut self,
        listener: impl Fn(&K, &V, RemovalCause) + Send + Sync + 'static,
    ) -> Self {
        self.more.listener = Some(Box::new(listener));
        self
    }

    /// Keep [statistics](Cache::stats): striped, cache-padded counters; a hit adds one to its
    /// thread's stripe.
    ///
    /// ```
    /// let cache: clockline::Cache<u32, u32> =
    ///     clockline::Cache::builder().max_capacity(10).record_stats().build().unwrap();
    /// cache.insert(1, 1).unwrap();
    /// cache.get(&1);
    /// cache.get(&2);
    /// let s = cache.stats().unwrap();
    /// assert_eq!((s.hits, s.misses, s.inserts), (1, 1, 1));
    /// assert_eq!(s.hit_ratio(), 0.5);
    /// ```
    pub fn record_stats(mut self) -> Self {
        self.more.stats = true;
        self
    }

    /// A background thread that purges expired entries every `interval` (wall time), stopped
    /// and joined when the cache is dropped. Needs expiry; zero is refused. Without it,
    /// expired entries are removed by the CLOCK hand, by writes of their key, or by
    /// [`purge_expired`](Cache::purge_expired).
    pub fn janitor(mut self, interval: Duration) -> Self {
        self.more.janitor = Some(interval);
        self
    }

    /// Keep a version per entry for [`insert_versioned`](Cache::insert_versioned) and
    /// [`invalidate_versioned`](Cache::invalidate_versioned): one 8-byte word per entry, plus
    /// the tombstones.
    pub fn versioned(mut self) -> Self
    where
        K: Clone,
    {
        self.more.versioned = Some(K::clone);
        self
    }

    /// The most tombstones a versioned cache keeps (default: an eighth of `max_capacity`,
    /// between 64 and 65,536; 4,096 for a cache bounded by weight alone). The store is 16
    /// shards (by key hash) of `n / 16`, rounded up, each a FIFO: the oldest tombstone *of a
    /// shard* goes when that shard is full, so a key's tombstone can be dropped while the
    /// store as a whole holds fewer than `n` (keys that crowd one shard). Size it with room to
    /// spare for the invalidations a version must outlive.
    pub fn max_tombstones(mut self, n: usize) -> Self {
        self.more.max_tombstones = Some(n);
        self
    }

    /// The eviction policy (default: [`Policy::Adaptive`]). [`Policy::Clock`] gives classic
    /// CLOCK, an approximation of LRU, without the adaptive policy's 2.5 bytes per entry.
    ///
    /// ```
    /// use clockline::{Cache, Policy};
    /// let lru_like: Cache<u64, u64> = Cache::builder()
    ///     .max_capacity(1000)
    ///     .policy(Policy::Clock)
    ///     .build()
    ///     .unwrap();
    /// # let _ = lru_like;
    /// ```
    pub fn policy(mut self, policy: Policy) -> Self {
        self.more.policy = policy;
        self
    }

    /// Checks the configuration and allocates the table.
    pub fn build(self) -> Result<Cache<K, V, S>, BuildError>
    where
        K: Hash + Eq + Send + Sync + 'static,
        V: Send + Sync + 'static,
        S: BuildHasher + Send + Sync + 'static,
    {
        if self.max_capacity == Some(0) {
            return Err(BuildError::ZeroCapacity);
        }
        match (self.max_weight, self.weigher.is_some()) {
            (Some(0), _) => return Err(BuildError::ZeroWeight),
            (Some(w), _) if w > MAX_WEIGHT => {
                return Err(BuildError::WeightTooLarge { requested: w })
            }
            (Some(_), false) | (None, true) => return Err(BuildError::WeigherMismatch),
            (None, false) if self.max_capacity.is_none() => return Err(BuildError::NoBound),
            _ => {}
        }
        let (entries, grow_limit) = match (self.max_capacity, self.max_weight) {
            (Some(n), _) => (n, None),
            (None, Some(w)) => {
                let limit = usize::try_from(w).unwrap_or(usize::MAX);
                (INITIAL_WEIGHTED_ENTRIES.min(limit), Some(limit))
            }
            (None, None) => unreachable!("checked above"),
        };
        let more = self.more;
        if more.ttl == Some(Duration::ZERO) {
            return Err(BuildError::ZeroTimeToLive);
        }
        if more.tti == Some(Duration::ZERO) {
            return Err(BuildError::ZeroTimeToIdle);
        }
        let deadline = more.expiry || more.ttl.is_some();
        let expiry = (deadline || more.tti.is_some()).then(|| Expiry {
            ttl: more.ttl,
            tti: more.tti,
            layout: ExtLayout::new(deadline, more.tti.is_some(), false, false),
            only_packed: false,
        });
        match more.janitor {
            Some(d) if d.is_zero() => return Err(BuildError::ZeroJanitorInterval),
            Some(_) if expiry.is_none() => return Err(BuildError::JanitorWithoutExpiry),
            _ => {}
        }
        let versioned = match (more.versioned, more.max_tombstones) {
            (None, Some(_)) => return Err(BuildError::TombstonesWithoutVersions),
            (Some(_), Some(0)) => return Err(BuildError::ZeroTombstones),
            (Some(clone_key), n) => {
                let default = match self.max_capacity {
                    Some(c) => (c / 8).clamp(64, 1 << 16),
                    None => 4096,
                };
                Some(Tombstones::new(n.unwrap_or(default), clone_key))
            }
            (None, None) => None,
        };
        let clock = match more.clock {
            Some(c) => ClockSource::Custom(c),
            None if expiry.is_some() => ClockSource::default_for_expiry(),
            None => ClockSource::Coarse(CoarseClock::default()),
        };
        Cache::from_parts(
            entries,
            grow_limit,
            self.max_weight,
            self.weigher,
            self.hasher,
            Features {
                expiry,
                clock,
                versioned,
                listener: more.listener,
                stats: more.stats,
                janitor: more.janitor,
                policy: more.policy,
            },
        )
    }
}

impl<K, V, S> fmt::Debug for Builder<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("max_capacity", &self.max_capacity)
            .field("max_weight", &self.max_weight)
            .field("weigher", &self.weigher.is_some())
            .field("time_to_live", &self.more.ttl)
            .field("time_to_idle", &self.more.tti)
            .field("expiry", &self.more.expiry)
            .field("eviction_listener", &self.more.listener.is_some())
            .field("record_stats", &self.more.stats)
            .field("janitor", &self.more.janitor)
            .field("versioned", &self.more.versioned.is_some())
            .field("policy", &self.more.policy)
            .finish_non_exhaustive()
    }
}
