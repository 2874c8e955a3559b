//! Version-guarded updates: a late, older update never overwrites a newer one.
//!
//! When updates are broadcast to every instance of a service (etcd, Redis pub/sub, a message
//! bus), the notification sent at T1 can arrive after the one sent at T2. With a version per key
//! that grows with every change at the source, [`Cache::insert_versioned`] stores only what is
//! newer than what the cache knows, and [`Cache::invalidate_versioned`] removes an entry and
//! leaves a *tombstone* (key and version) so that a late insert of an older version is still
//! refused: the load, invalidate, stale-put race of cache-aside.
//!
//! What the cache knows of a key's version: the version of its entry, or of its tombstone. A
//! versioned cache (built with [`Builder::versioned`](crate::Builder::versioned)) carries one
//! extra word per entry for it. Tombstones live in a separate bounded store of 16 FIFO shards
//! ([`Builder::max_tombstones`](crate::Builder::max_tombstones)): the oldest of a shard goes
//! when that shard is full. An entry that the cache evicts (capacity, expiry) leaves a
//! tombstone too, so its version outlives it. An expired entry that nothing has removed yet
//! still counts as the tombstone it will leave: lookups treat it as absent, but its version
//! refuses older versioned inserts (and accepts its own, as that tombstone will), and
//! `invalidate_versioned` removes it as a sweep would (`Absent`, reported as `Expired`). Knowledge is
//! still bounded: once a key's entry and tombstone are both gone, any version is accepted
//! again, as for a key never seen.
//!
//! Rules, all checked under the key's home bucket lock, so they are atomic with respect to each
//! other and to plain writes of the key:
//! * `insert_versioned(k, v, n)` stores if `n` is greater than the live entry's version (not
//!   below an expired entry's) and not below the tombstone's; otherwise it hands the pair back
//!   with [`InsertErrorKind::Stale`]. Equal to a live entry's is stale: a redelivered
//!   notification changes nothing. Equal to the tombstone's (or to an expired entry's, which
//!   becomes that tombstone once swept: the answer must not depend on whether a sweep has come
//!   by; found in review, 2026-11-28) is not: a tombstone `n` says the source holds `n` (an invalidation announcing
//!   it, or the eviction of the entry at `n`), so a value of version `n` is that very data: a
//!   second tier handing an evicted entry back, a redelivery after an eviction. (A tombstone
//!   refused its own version until 2026-11-27, which left a two-tier cache unable to promote
//!   an evicted entry back with `insert_versioned`: `examples/tier_sim.rs`, `tests/versions.rs`
//!   `a_versioned_insert_of_the_tombstones_own_version_is_stored`.)
//!   A versioned insert refused for its weight (`TooHeavy`, or `Rejected` by admission) acts
//!   as `invalidate_versioned(k, n)` before it hands the pair back: the cache knows `n` exists.
//!   So does a versioned load refused for its weight (since 2026-11-28; before, a late older
//!   broadcast was cached after it).
//! * `invalidate_versioned(k, n)` removes the entry if its version is below `n` and records a
//!   tombstone `n` (kept at the larger of old and new); an entry at `n` or above is newer than
//!   the invalidation and stays ([`Invalidation::Stale`]). `n` is the version the source holds
//!   now.
//! * A loader that tells the version it read
//!   ([`Cache::try_get_or_insert_versioned_with`]) stores as `insert_versioned` does against
//!   the entry and the tombstones (a tombstone refuses only *older* versions: the value was
//!   read from the source at `n`, so it is the data a tombstone `n` announced, an
//!   invalidation to `n`, or recorded, an eviction at `n`).
//!   An invalidation that arrived during the load refuses it even once the bounded store has
//!   dropped its tombstone (conservatively: a drop, during the load, of any tombstone of the
//!   shard newer than `n` refuses it). A loaded value the cache refused is still returned to
//!   the loader's caller, but not to callers waiting on that load: they look again.
//! * A plain [`insert`](Cache::insert) is unversioned: it stores version 0, which every
//!   versioned insert replaces; a plain [`remove`](Cache::remove) leaves no tombstone, and
//!   neither does [`clear`](Cache::clear): both are the user's own removals and forget what
//!   version the cache knew, so an older versioned insert after them is accepted. To remove
//!   and keep that knowledge, use `invalidate_versioned`. (Evictions, which the user did not
//!   ask for, do leave tombstones; see above.)
//! * Version 0 is the oldest: `insert_versioned(k, v, 0)` succeeds only when the cache knows no
//!   version of `k` above 0 and holds no live entry of version 0. `u64::MAX` is the newest: nothing versioned replaces it.

use crate::sync::{Mutex, MutexGuard};
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash};
use std::sync::PoisonError;

use crate::cache::{Cond, Read};
use crate::error::{InsertError, InsertErrorKind};
use crate::listener::{Notes, RemovalCause};
use crate::Cache;

const SHARDS: usize = 16;

/// What [`Cache::invalidate_versioned`] did.
#[must_use = "an invalidation may be refused (`Stale`) or keep no version (`NotVersioned`)"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalidation {
    /// The entry was older and is gone; a tombstone keeps the version.
    Removed,
    /// There was no entry; a tombstone keeps the version (or the newer one it already held:
    /// a tombstone's version never goes back).
    Absent,
    /// The entry is as new as the invalidation or newer, and stays.
    Stale {
        /// The entry's version.
        current: u64,
    },
    /// The cache was built without [`Builder::versioned`](crate::Builder::versioned), so it
    /// cannot compare versions: the entry was removed (as by [`Cache::remove`]; the listener
    /// hears [`RemovalCause::Explicit`]) and no tombstone is kept, so a later older
    /// `insert` is not refused.
    NotVersioned,
}

struct Shard<K> {
    /// Key -> (version, stamp of its latest record).
    map: HashMap<K, (u64, u64), ahash::RandomState>,
    /// Keys in the order they were recorded, with the stamp of that record and the key's hash.
    /// A key recorded again (its tombstone raised) is queued again with a new stamp; the older
    /// queue entry is then stale and skipped when it reaches the front.
    fifo: VecDeque<(K, u64, u64)>,
    /// The next record's stamp.
    stamp: u64,
    /// Tombstones dropped so far (the bound at work), for [`Tombstones::since`].
    dropped: u64,
    /// The newest version among them.
    dropped_max: u64,
    /// The last [`RECENT`] of them, by key hash and version: drop number `n` at `n % RECENT`.
    recent: [(u64, u64); RECENT],
}

/// Drops remembered per shard (see [`Tombstones::since`]): a load that sees at most this many
/// drops in its key's shard knows exactly whether its key's tombstone was among them.
const RECENT: usize = 32;

impl<K: Hash + Eq> Shard<K> {
    /// Drops the oldest live tombstone (skipping stale queue entries). False if none is left.
    /// The front entry leaves the queue only after the lookup (the user's `Hash` and `Eq`)
    /// returned: a panic there loses nothing.
    fn drop_oldest(&mut self) -> bool {
        while let Some((key, stamp, _)) = self.fifo.front() {
            let live = self.map.get(key).is_some_and(|&(_, s)| s == *stamp);
            let (key, _, hash) = self.fifo.pop_front().expect("the front was just seen");
            if live {
                let version = self.map.remove(&key).map_or(0, |(v, _)| v);
                self.dropped_max = self.dropped_max.max(version);
                self.recent[self.dropped as usize % RECENT] = (hash, version);
                self.dropped += 1;
                return true;
            }
        }
        false
    }
}

/// What the tombstones know of a key at one instant (see [`Tombstones::snapshot`]): what a
/// load takes when it begins, for [`Tombstones::since`] when it ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Snapshot {
    /// The key's tombstone.
    version: Option<u64>,
    /// Tombstones its shard had dropped.
    dropped: u64,
}

/// What the tombstones learned of a key since a [`Snapshot`]: its tombstone now, and whether
/// its shard dropped a tombstone of the key meanwhile (one recorded during the load and
/// already pushed out of the bounded store, or one the key had when the load began).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Since {
    /// The key's tombstone now.
    version: Option<u64>,
    /// The newest version the shard dropped for the key's hash since the snapshot: `None` if
    /// none, and if more than [`RECENT`] drops happened meanwhile (too many to tell), the
    /// newest the shard ever dropped, for any key.
    dropped: Option<u64>,
}

impl Since {
    /// The key's tombstone now.
    pub(crate) fn version(self) -> Option<u64> {
        self.version
    }

    /// Whether a value of version `v`, read from the source by a load that began at `began`,
    /// is refused: the key's tombstone now is newer than `v`, or a tombstone dropped during the
    /// load may have been (an invalidation that arrived during the load and was pushed out of
    /// the bounded store before it ended). A tombstone of `v` itself does not refuse it: the
    /// loader read version `v` from the source *now*, which an eviction's tombstone (the same
    /// data, evicted) or an invalidation announcing `v` (the data the source holds since) does
    /// not make stale. Versioned inserts follow the same rule against the tombstone (but not
    /// the drops: a broadcast is not a read that began earlier). (Found by a dry run of the fleet coherence layer: the
    /// versioned loader ignored drops, so an invalidation pushed out during its load let the
    /// older value in for good; and a tombstone of `v` refused `v`, so an evicted or
    /// invalidated key was reloaded on every lookup; `tests/versions.rs`.)
    pub(crate) fn refuses_load_at(self, v: u64) -> bool {
        self.version.is_some_and(|t| v < t) || self.dropped.is_some_and(|t| v < t)
    }

    /// Whether a loaded value whose version is unknown is refused: the key's tombstone changed
    /// since the load began, or one of the key's was dropped meanwhile (or, past [`RECENT`]
    /// drops in the shard, any was).
    pub(crate) fn refuses_unversioned_load(self, began: Snapshot) -> bool {
        self.version != began.version || self.dropped.is_some()
    }
}

/// The bounded tombstone store: `SHARDS` FIFOs under their own locks.
pub(crate) struct Tombstones<K> {
    shards: Box<[Mutex<Shard<K>>]>,
    per_shard: usize,
    clone_key: fn(&K) -> K,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // No user code other than `Hash`/`Eq`/`Clone` of keys runs under these locks. If one of
    // those panics, the shard is still sound: clones are made before anything changes, a queue
    // entry leaves only after the lookup that decides its fate, and a panic inside the map's or
    // the queue's own operations leaves each of them valid (a compaction's `retain` may lose a
    // queue entry, whose tombstone then stays until the key is recorded again). So the poison
    // is ignored.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<K: Hash + Eq> Tombstones<K> {
    pub(crate) fn new(max: usize, clone_key: fn(&K) -> K) -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        map: HashMap::with_hasher(ahash::RandomState::new()),
                        fifo: VecDeque::new(),
                        stamp: 0,
                        dropped: 0,
                        dropped_max: 0,
                        recent: [(0, 0); RECENT],
                    })
                })
                .collect(),
            per_shard: max.div_ceil(SHARDS).max(1),
            clone_key,
        }
    }

    fn shard(&self, hash: u64) -> &Mutex<Shard<K>> {
        &self.shards[(hash >> 58) as usize % SHARDS]
    }

    /// The tombstone version of `key`, if any.
    pub(crate) fn get(&self, hash: u64, key: &K) -> Option<u64> {
        lock(self.shard(hash)).map.get(key).map(|&(v, _)| v)
    }

    /// What the cache knows of `key` beyond its entry when a load begins: its tombstone, and
    /// how many tombstones its shard has dropped (see [`Self::since`]).
    pub(crate) fn snapshot(&self, hash: u64, key: &K) -> Snapshot {
        let shard = lock(self.shard(hash));
        Snapshot {
            version: shard.map.get(key).map(|&(v, _)| v),
            dropped: shard.dropped,
        }
    }

    /// What the tombstones learned of `key` since `began`, when a load ends: its tombstone now,
    /// and the tombstones of its hash that the shard dropped meanwhile, from the shard's record
    /// of its last [`RECENT`] drops. A tombstone recorded during the load and already dropped
    /// again is seen there. Past `RECENT` drops in the shard during one load it cannot tell
    /// whose they were, and answers with the newest version the shard ever dropped
    /// (conservative: the load's value is then simply not cached). A hash shared with another
    /// key errs the same way. (Until 2026-11-27 any drop in the shard during a load refused
    /// its value: under a stream of invalidations of keys it did not hold, 45 % of a
    /// simulated fleet's loads went uncached.)
    pub(crate) fn since(&self, hash: u64, key: &K, began: Snapshot) -> Since {
        let shard = lock(self.shard(hash));
        let drops = shard.dropped - began.dropped;
        let dropped = if drops > RECENT as u64 {
            Some(shard.dropped_max)
        } else {
            (began.dropped..shard.dropped)
                .map(|n| shard.recent[n as usize % RECENT])
                .filter(|&(h, _)| h == hash)
                .map(|(_, v)| v)
                .max()
        };
        Since {
            version: shard.map.get(key).map(|&(v, _)| v),
            dropped,
        }
    }

    /// Records (or raises) the tombstone of `key` to `version`, dropping the oldest tombstone
    /// of the shard if it is full. A raised tombstone counts as recorded now: it goes to the
    /// back of the queue. (It used to keep its old place, so the newest knowledge of a key
    /// could be the first dropped; found in review, `tests/versions.rs`,
    /// `a_raised_tombstone_is_the_newest`.)
    pub(crate) fn record(&self, hash: u64, key: &K, version: u64) {
        let queued = (self.clone_key)(key);
        let mut shard = lock(self.shard(hash));
        let shard = &mut *shard;
        let stamp = shard.stamp;
        shard.stamp += 1;
        if let Some((v, s)) = shard.map.get_mut(key) {
            *v = (*v).max(version);
            *s = stamp;
            shard.fifo.push_back((queued, stamp, hash));
            // Raises queue stale entries; compact once they are as many as the live ones, so
            // the queue stays within twice the tombstones (amortized: each compaction removes
            // at least half of what it scans).
            if shard.fifo.len() > 2 * self.per_shard.max(shard.map.len()) {
                let map = &shard.map;
                shard
                    .fifo
                    .retain(|(k, s, _)| map.get(k).is_some_and(|&(_, live)| live == *s));
            }
            return;
        }
        let kept = (self.clone_key)(key);
        if shard.map.len() >= self.per_shard {
            shard.drop_oldest();
        }
        shard.map.insert(kept, (version, stamp));
        shard.fifo.push_back((queued, stamp, hash));
    }

    /// Tombstones held now.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).map.len()).sum()
    }
}

impl<K, V, S> Cache<K, V, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
    S: BuildHasher,
{
    /// Stores `value` for `key` only if `version` is newer than its live entry's version and
    /// not older than what else the cache knows of `key` (an expired entry's version, or its
    /// tombstone's: a tombstone `n` accepts `n`, see the [module docs](crate::versions));
    /// otherwise hands the pair back with
    /// [`InsertErrorKind::Stale`](crate::InsertErrorKind::Stale). Needs a cache built with
    /// [`Builder::versioned`](crate::Builder::versioned)
    /// ([`InsertErrorKind::NotVersioned`](crate::InsertErrorKind::NotVersioned) otherwise).
    /// See the [module docs](crate::versions).
    ///
    /// ```
    /// use clockline::{Cache, InsertErrorKind};
    /// let cache: Cache<&str, &str> = Cache::builder().max_capacity(100).versioned().build().unwrap();
    /// cache.insert_versioned("user:1", "v2", 2).unwrap();
    /// // The update sent first arrives last: refused.
    /// let late = cache.insert_versioned("user:1", "v1", 1).unwrap_err();
    /// assert_eq!(late.kind, InsertErrorKind::Stale { version: 1, current: 2 });
    /// assert_eq!(cache.get("user:1"), Some("v2"));
    /// ```
    ///
    /// An insert refused for its weight ([`TooHeavy`](crate::InsertErrorKind::TooHeavy), or
    /// [`Rejected`](crate::InsertErrorKind::Rejected) by the adaptive policy's admission) is
    /// still news of `version`: the cache does what
    /// [`invalidate_versioned(key, version)`](Self::invalidate_versioned) does (removes an older
    /// entry, keeps a tombstone), then hands the pair back with that error. Otherwise the older
    /// entry would go on being served, and a late broadcast of an older version would be
    /// accepted. A second `insert_versioned` of the same version, a newer version, or a loader
    /// that reads this one from the source may still get in (a tombstone does not refuse its
    /// own version). (Found by a dry run of the fleet coherence layer; `tests/versions.rs`,
    /// `a_versioned_insert_refused_for_its_weight_still_invalidates_older_versions`.)
    pub fn insert_versioned(
        &self,
        key: K,
        value: V,
        version: u64,
    ) -> Result<(), InsertError<K, V>> {
        self.insert_versioned_full(key, value, version, None)
    }

    /// [`insert_versioned`](Self::insert_versioned) with the entry's own time-to-live, as
    /// [`insert_with_ttl`](Self::insert_with_ttl) gives it: for a fleet whose broadcasts carry
    /// how long their data may be served. Needs a cache built with versions and expiry
    /// ([`InsertErrorKind::NotVersioned`] or [`InsertErrorKind::ExpiryDisabled`] otherwise).
    ///
    /// ```
    /// use std::time::Duration;
    /// let cache: clockline::Cache<&str, u32> =
    ///     clockline::Cache::builder().max_capacity(10).expiry().versioned().build().unwrap();
    /// cache.insert_versioned_with_ttl("price", 10, 7, Duration::from_secs(30)).unwrap();
    /// assert_eq!(cache.get_versioned("price"), Some((10, 7)));
    /// ```
    pub fn insert_versioned_with_ttl(
        &self,
        key: K,
        value: V,
        version: u64,
        ttl: std::time::Duration,
    ) -> Result<(), InsertError<K, V>> {
        self.insert_versioned_full(key, value, version, Some(ttl))
    }

    fn insert_versioned_full(
        &self,
        key: K,
        value: V,
        version: u64,
        ttl: Option<std::time::Duration>,
    ) -> Result<(), InsertError<K, V>> {
        let guard = crate::sync::pin();
        let result = self
            .inner()
            .insert_full(key, value, ttl, Cond::Newer(version), &guard);
        self.refused_is_news(&result, version);
        result
    }

    /// A versioned write (an insert, or a loader's value of a known version) refused for its
    /// weight (`TooHeavy`, or `Rejected` by admission) is still news that the source holds
    /// `version`: it acts as `invalidate_versioned(k, version)`, so an older entry goes and a
    /// tombstone refuses a late, older broadcast. Nothing in a cache without versions (there an
    /// invalidation would remove whatever entry is there). Whatever it finds, the refused write
    /// stays the caller's answer.
    pub(crate) fn refused_is_news(&self, result: &Result<(), InsertError<K, V>>, version: u64) {
        if let Err(e) = result {
            if self.inner().tombstones.is_some()
                && matches!(
                    e.kind,
                    InsertErrorKind::TooHeavy { .. } | InsertErrorKind::Rejected { .. }
                )
            {
                let _ = self.invalidate_key(&e.key, version);
            }
        }
    }

    /// Removes the entry for `key` if it is older than `version`, and keeps a tombstone of
    /// `version` so that a late [`insert_versioned`](Self::insert_versioned) of an older
    /// version is still refused. The listener hears [`RemovalCause::Explicit`]. An expired
    /// entry is removed whatever its version, as a sweep would remove it
    /// ([`RemovalCause::Expired`], its version kept as a tombstone too), and the answer is
    /// then [`Invalidation::Absent`], as it is once a sweep has come by.
    ///
    /// `version` is the version the key's source holds now (the write's new version, as a
    /// fleet broadcasts it): the tombstone refuses every older version, from
    /// [`insert_versioned`](Self::insert_versioned) and from loaders alike, but not a value of
    /// `version` itself (a broadcast of the same write, or a loader's value read from the
    /// source at `version` with
    /// [`try_get_or_insert_versioned_with`](Self::try_get_or_insert_versioned_with)), which
    /// is the current data.
    ///
    /// ```
    /// use clockline::{Cache, Invalidation};
    /// let cache: Cache<u64, &str> = Cache::builder().max_capacity(100).versioned().build().unwrap();
    /// // A loader read version 4 from the database; meanwhile the row changed to version 5,
    /// // and the invalidation arrives before the loader's put.
    /// assert_eq!(cache.invalidate_versioned(9, 5), Invalidation::Absent);
    /// assert!(cache.insert_versioned(9, "stale row", 4).is_err());
    /// // The next miss reads the row at version 5: cached.
    /// let row = cache.try_get_or_insert_versioned_with(9, || Ok::<_, ()>(("fresh row", 5)));
    /// assert_eq!(row.unwrap(), "fresh row");
    /// assert_eq!(cache.version_of(&9), Some(5));
    /// ```
    pub fn invalidate_versioned(&self, key: K, version: u64) -> Invalidation {
        self.invalidate_key(&key, version)
    }

    /// [`Self::invalidate_versioned`] by reference.
    fn invalidate_key(&self, key: &K, version: u64) -> Invalidation {
        let inner = self.inner();
        let Some(tombs) = &inner.tombstones else {
            // No versions to compare: remove, so that an invalidation never leaves a value
            // the source has replaced (doing nothing served the old value: found in review).
            let guard = crate::sync::pin();
            inner.remove_with_guard(key, &guard);
            return Invalidation::NotVersioned;
        };
        let guard = crate::sync::pin();
        let mut notes = Notes::new(inner.listener().is_some());
        let stale = std::cell::Cell::new(None);
        let expired = std::cell::Cell::new(false);
        let now = inner.now();
        let removed = inner.remove_if(
            key,
            |node| {
                // An expired entry is what a sweep would have removed: it goes as `Expired`,
                // leaving the tombstone of its version beside this one, and the answer is
                // `Absent`, as after the sweep. (It was compared like a live entry: `Stale`
                // or `Removed` unswept, `Absent` swept; found in review.) Settled, so that a
                // read judging an earlier instant cannot revive it before the unlink (see
                // `Expiry::settle_expired`).
                if inner
                    .expiry
                    .as_ref()
                    .is_some_and(|e| e.settle_expired(node, now))
                {
                    expired.set(true);
                    return Some(RemovalCause::Expired);
                }
                let current = inner.ext.version(node).unwrap_or(0);
                if current < version {
                    Some(RemovalCause::Explicit)
                } else {
                    stale.set(Some(current));
                    None
                }
            },
            |hash, _| {
                // Under the key's home lock, so atomic with versioned inserts of the key.
                if stale.get().is_none() {
                    tombs.record(hash, key, version);
                }
            },
            &mut notes,
            &guard,
        );
        notes.deliver(inner.listener());
        match (removed, stale.get()) {
            (Some(_), _) if expired.get() => Invalidation::Absent,
            (Some(_), _) => Invalidation::Removed,
            (None, Some(current)) => Invalidation::Stale { current },
            (None, None) => Invalidation::Absent,
        }
    }

    /// The version stored with `key`'s live entry (0 for an unversioned insert), or `None` if
    /// absent, expired, or the cache keeps no versions. A tombstone is not an entry: after
    /// `invalidate_versioned(k, 5)` this is `None`, though an `insert_versioned` of `k` below 5
    /// is refused.
    pub fn version_of<Q>(&self, key: &Q) -> Option<u64>
    where
        Q: ?Sized + Hash + equivalent::Equivalent<K>,
    {
        let guard = crate::sync::pin();
        let node = self
            .inner()
            .lookup(key, || self.inner().now(), Read::Peek, &guard)?;
        self.inner().ext.version(node)
    }

    /// Tombstones held now (at most [`Builder::max_tombstones`](crate::Builder::max_tombstones),
    /// rounded up to a multiple of 16).
    pub fn tombstones(&self) -> usize {
        self.inner().tombstones.as_ref().map_or(0, Tombstones::len)
    }
}
