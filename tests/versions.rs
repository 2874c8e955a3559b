//! Version-guarded updates (issue #3): a late, older update never overwrites a newer one, an
//! invalidation leaves a tombstone that refuses older inserts, tombstones are bounded, and the
//! T1/T2 and load/invalidate/stale-put races hold under concurrency.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};

use clockline::{BuildError, Cache, InsertErrorKind, Invalidation, RemovalCause};

mod common;

fn versioned(cap: usize) -> Cache<u64, u64> {
    Cache::builder()
        .max_capacity(cap)
        .versioned()
        .build()
        .unwrap()
}

#[test]
fn newer_wins_older_and_equal_are_stale() {
    let cache = versioned(10);
    cache.insert_versioned(1, 20, 2).unwrap();
    let e = cache.insert_versioned(1, 10, 1).unwrap_err();
    assert_eq!(
        e.kind,
        InsertErrorKind::Stale {
            version: 1,
            current: 2
        }
    );
    assert_eq!((e.key, e.value), (1, 10), "the pair comes back");
    let e = cache.insert_versioned(1, 21, 2).unwrap_err();
    assert_eq!(
        e.kind,
        InsertErrorKind::Stale {
            version: 2,
            current: 2
        }
    );
    cache.insert_versioned(1, 30, 3).unwrap();
    assert_eq!((cache.get(&1), cache.version_of(&1)), (Some(30), Some(3)));
}

#[test]
fn version_zero_and_max() {
    let cache = versioned(10);
    cache.insert_versioned(1, 1, 0).unwrap();
    assert!(
        cache.insert_versioned(1, 2, 0).is_err(),
        "0 is only for unknown keys"
    );
    cache.insert_versioned(1, 3, u64::MAX).unwrap();
    assert!(cache.insert_versioned(1, 4, u64::MAX).is_err());
    // A plain insert is unversioned (version 0) and any versioned insert replaces it.
    cache.insert(2, 5).unwrap();
    assert_eq!(cache.version_of(&2), Some(0));
    cache.insert_versioned(2, 6, 1).unwrap();
    assert_eq!(cache.get(&2), Some(6));
}

#[test]
fn invalidation_leaves_a_tombstone() {
    let cache = versioned(10);
    cache.insert_versioned(1, 10, 1).unwrap();
    assert_eq!(cache.invalidate_versioned(1, 2), Invalidation::Removed);
    assert_eq!(cache.get(&1), None);
    let e = cache.insert_versioned(1, 11, 1).unwrap_err();
    assert_eq!(
        e.kind,
        InsertErrorKind::Stale {
            version: 1,
            current: 2
        }
    );
    // Equal to the tombstone: the data the invalidation announced.
    cache.insert_versioned(1, 12, 2).unwrap();
    assert_eq!(cache.get(&1), Some(12));
    cache.insert_versioned(1, 13, 3).unwrap();
    assert_eq!(
        cache.invalidate_versioned(1, 3),
        Invalidation::Stale { current: 3 }
    );
    assert_eq!(
        cache.get(&1),
        Some(13),
        "an older invalidation leaves a newer entry"
    );
    assert_eq!(cache.invalidate_versioned(7, 5), Invalidation::Absent);
    assert!(cache.insert_versioned(7, 1, 4).is_err());
}

#[test]
fn unversioned_caches_say_so() {
    let cache: Cache<u64, u64> = Cache::new(10);
    let e = cache.insert_versioned(1, 1, 1).unwrap_err();
    assert_eq!(e.kind, InsertErrorKind::NotVersioned);
    assert_eq!(cache.invalidate_versioned(1, 1), Invalidation::NotVersioned);
    assert_eq!(cache.version_of(&1), None);
    // Without versions to compare, an invalidation still removes what it names: serving the
    // replaced value would be worse than a miss.
    cache.insert(2, 20).unwrap();
    assert_eq!(cache.invalidate_versioned(2, 1), Invalidation::NotVersioned);
    assert_eq!(
        cache.get(&2),
        None,
        "an invalidation of an unversioned cache removes"
    );
    cache.insert(2, 21).unwrap();
    assert_eq!(cache.get(&2), Some(21), "and leaves no tombstone");
    let b = || Cache::<u64, u64>::builder().max_capacity(10);
    assert_eq!(
        b().max_tombstones(5).build().unwrap_err(),
        BuildError::TombstonesWithoutVersions
    );
    assert_eq!(
        b().versioned().max_tombstones(0).build().unwrap_err(),
        BuildError::ZeroTombstones
    );
}

#[test]
fn tombstones_are_bounded() {
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(100)
        .versioned()
        .max_tombstones(64)
        .build()
        .unwrap();
    for k in 0..10_000 {
        let _ = cache.invalidate_versioned(k, 1);
    }
    assert!(
        cache.tombstones() <= 64,
        "{} tombstones",
        cache.tombstones()
    );
    // The newest ones are kept (FIFO).
    assert!(cache.insert_versioned(9_999, 1, 0).is_err());
    assert!(
        cache.insert_versioned(0, 1, 0).is_ok(),
        "the oldest was dropped"
    );
}

#[test]
fn an_evicted_entry_leaves_its_version_behind() {
    // CLOCK: a stream of new keys evicts the old entry. (The adaptive policy would keep it:
    // one-time keys lose the admission contest; tests/policy.rs.)
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(4)
        .versioned()
        .policy(clockline::Policy::Clock)
        .build()
        .unwrap();
    cache.insert_versioned(1, 10, 5).unwrap();
    for k in 100..120 {
        cache.insert(k, k).unwrap();
    }
    assert_eq!(cache.get(&1), None, "evicted");
    let e = cache.insert_versioned(1, 9, 4).unwrap_err();
    assert_eq!(
        e.kind,
        InsertErrorKind::Stale {
            version: 4,
            current: 5
        }
    );
    cache.insert_versioned(1, 11, 6).unwrap();
}

/// T1/T2: notifications for many keys arrive in both orders on two threads at once. Whatever
/// the interleaving, each key ends with its newest value.
#[test]
fn t1_t2_reordered_notifications_under_concurrency() {
    const KEYS: u64 = 500;
    const VERSIONS: u64 = 20;
    for round in 0..4 {
        let cache = Arc::new(versioned(2 * KEYS as usize));
        let start = Arc::new(Barrier::new(2));
        let threads: Vec<_> = [false, true]
            .into_iter()
            .map(|reverse| {
                let (cache, start) = (cache.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    for i in 0..VERSIONS {
                        let v = if reverse { VERSIONS - i } else { i + 1 };
                        for k in 0..KEYS {
                            let _ = cache.insert_versioned(k, v * 1000 + k, v);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        for k in 0..KEYS {
            assert_eq!(
                cache.get(&k),
                Some(VERSIONS * 1000 + k),
                "round {round}: key {k} lost its newest version"
            );
        }
    }
}

/// The cache-aside race: a loader reads version n from the source and puts it late; meanwhile
/// a writer moves the source to n+1 and invalidates with n+1. The cache must never end up
/// holding version n after the invalidation.
#[test]
fn load_invalidate_stale_put_race() {
    let cache = Arc::new(versioned(64));
    for round in 0..2000u64 {
        let key = round % 16;
        let source = Arc::new(AtomicU64::new(round * 2 + 1));
        let go = Arc::new(Barrier::new(2));
        let loader = {
            let (cache, source, go) = (cache.clone(), source.clone(), go.clone());
            std::thread::spawn(move || {
                let v = source.load(Ordering::SeqCst);
                go.wait();
                let _ = cache.insert_versioned(key, v, v);
            })
        };
        let writer = {
            let (cache, source, go) = (cache.clone(), source.clone(), go.clone());
            std::thread::spawn(move || {
                go.wait();
                let v = source.fetch_add(1, Ordering::SeqCst) + 1;
                let _ = cache.invalidate_versioned(key, v);
            })
        };
        loader.join().unwrap();
        writer.join().unwrap();
        let newest = source.load(Ordering::SeqCst);
        if let Some(v) = cache.get(&key) {
            assert!(
                v >= newest,
                "round {round}: stale version {v} survived invalidation {newest}"
            );
        }
    }
}

thread_local! {
    /// Set on the evicting thread of the test below: there, hashing key 0 is slow.
    static SLOW_HASH: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A key whose `Hash` sleeps for key 0 on threads that ask for it: it widens the window between
/// an eviction's unlink and the tombstone it records (which hashes the key).
#[derive(Clone, Debug, PartialEq, Eq)]
struct SlowKey(u64);

impl std::hash::Hash for SlowKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        if self.0 == 0 && SLOW_HASH.with(|s| s.get()) {
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        self.0.hash(h)
    }
}

/// Found in review: an evicting thread recorded the evicted entry's tombstone after the unlink,
/// and it does not hold the key's home lock. A versioned insert of the key in between found
/// neither the entry nor the tombstone and stored an older version. Now the tombstone is
/// recorded before the unlink and looked up after the insert's lookup.
#[test]
fn an_evicted_version_refuses_an_older_insert_that_races_the_eviction() {
    use std::time::{Duration, Instant};
    for policy in [clockline::Policy::Clock, clockline::Policy::Adaptive] {
        let cache: Arc<Cache<SlowKey, u64>> = Arc::new(
            Cache::builder()
                .max_capacity(1024) // many buckets: the evictor holds another home's lock
                .versioned()
                .max_tombstones(1 << 12)
                .policy(policy)
                .build()
                .unwrap(),
        );
        // Full first, so that key 0 arrives in a full cache: under the adaptive policy it then
        // leaves through the window's contest, which a key seen once loses.
        for k in 10_000..10_000 + 1024 {
            cache.insert(SlowKey(k), k).unwrap();
        }
        cache.insert_versioned(SlowKey(0), 500, 5).unwrap();
        let c = cache.clone();
        let evictor = std::thread::spawn(move || {
            SLOW_HASH.with(|s| s.set(true));
            for k in 100..5000 {
                c.insert(SlowKey(k), k).unwrap();
            }
        });
        let t = Instant::now();
        while cache.contains_key(&SlowKey(0)) {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "{policy:?}: key 0 never evicted"
            );
            std::hint::spin_loop();
        }
        // Version 5 left by eviction: the cache must still refuse version 3.
        let late = cache.insert_versioned(SlowKey(0), 300, 3);
        evictor.join().unwrap();
        assert!(
            matches!(&late, Err(e) if matches!(e.kind, InsertErrorKind::Stale { .. })),
            "{policy:?}: version 3 accepted after version 5 was evicted: now {:?}, version {:?}",
            cache.get(&SlowKey(0)),
            cache.version_of(&SlowKey(0))
        );
    }
}

/// A key whose `Clone` panics while `PANIC_CLONE` is set.
#[derive(PartialEq, Eq, Hash, Debug)]
struct FragileKey(u64);

static PANIC_CLONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl Clone for FragileKey {
    fn clone(&self) -> Self {
        if PANIC_CLONE.load(Ordering::SeqCst) {
            panic!("intentional: Clone of key {}", self.0);
        }
        FragileKey(self.0)
    }
}

/// Found in review: a panic in the key's `Clone` (or `Hash`, `Eq`) while recording an evicted
/// entry's tombstone, after the unlink, left the entry counted and its node unretired: `len()`
/// counted entries that were gone, and the next insert into the full cache spun forever. Now the
/// panic is caught, the eviction completes, and the panic reaches the caller afterwards.
#[test]
fn a_panic_while_recording_a_tombstone_leaks_nothing() {
    for policy in [clockline::Policy::Clock, clockline::Policy::Adaptive] {
        let cache: Cache<FragileKey, u64> = Cache::builder()
            .max_capacity(4)
            .versioned()
            .policy(policy)
            .build()
            .unwrap();
        for k in 0..4 {
            cache.insert_versioned(FragileKey(k), k, 1).unwrap();
        }
        PANIC_CLONE.store(true, Ordering::SeqCst);
        let mut panics = 0;
        for k in 4..12 {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                cache.insert_versioned(FragileKey(k), k, 1)
            }));
            panics += usize::from(r.is_err());
        }
        PANIC_CLONE.store(false, Ordering::SeqCst);
        assert!(panics > 0, "{policy:?}: no tombstone was recorded");
        cache.check_invariants().unwrap();
        let entries = cache.pin().iter().count();
        assert_eq!(
            cache.len(),
            entries,
            "{policy:?}: len() counts entries that are gone"
        );
        // The cache still takes inserts (this spun forever before).
        cache.insert_versioned(FragileKey(100), 0, 1).unwrap();
        assert!(cache.len() <= 4);
    }
}

/// Hashes a `u64` key to itself: small keys then share a tombstone shard (the top bits pick it).
#[derive(Clone, Default)]
struct Identity;

struct IdentityHasher(u64);

impl std::hash::Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl std::hash::BuildHasher for Identity {
    type Hasher = IdentityHasher;
    fn build_hasher(&self) -> IdentityHasher {
        IdentityHasher(0)
    }
}

/// Found in review: raising a key's tombstone left it at its old place in the shard's queue,
/// so the newest knowledge of a key could be the first tombstone dropped, and an update older
/// than that knowledge was then accepted.
#[test]
fn a_raised_tombstone_is_the_newest() {
    // 32 tombstones: 2 per shard, and every key below is in shard 0.
    let cache: Cache<u64, u64, Identity> = Cache::builder()
        .max_capacity(64)
        .hasher(Identity)
        .versioned()
        .max_tombstones(32)
        .build()
        .unwrap();
    let _ = cache.invalidate_versioned(1, 1);
    let _ = cache.invalidate_versioned(2, 1);
    let _ = cache.invalidate_versioned(1, 10); // raised: now the newest of the shard
    let _ = cache.invalidate_versioned(3, 1); // the shard is full: the oldest, key 2's, goes
    assert!(
        cache.insert_versioned(1, 9, 9).is_err(),
        "key 1's raised tombstone (10) was dropped first; version 9 accepted"
    );
    assert!(
        cache.insert_versioned(2, 9, 1).is_ok(),
        "key 2's tombstone was the oldest"
    );
    // Raising one key over and over keeps the shard bounded.
    for v in 11..10_000 {
        let _ = cache.invalidate_versioned(1, v);
    }
    assert!(cache.insert_versioned(1, 0, 9_998).is_err());
    assert!(
        cache.insert_versioned(3, 0, 0).is_err(),
        "key 3's tombstone is still kept"
    );
}

/// Found in review: the single-flight loader cached its value with a plain insert (version 0),
/// over a newer versioned entry that arrived during the load, or in spite of an invalidation
/// made during the load. In a versioned cache a loaded value is now cached only if nothing
/// newer arrived meanwhile; its callers still get it.
#[test]
fn a_load_never_overwrites_what_arrived_meanwhile() {
    // A versioned update lands while the value loads.
    let cache = versioned(64);
    let got = cache.get_or_insert_with(1, || {
        cache.insert_versioned(1, 500, 5).unwrap();
        400
    });
    assert_eq!(got, 400, "the caller gets what it loaded");
    assert_eq!((cache.get(&1), cache.version_of(&1)), (Some(500), Some(5)));

    // An invalidation lands while the value loads: the stale load is not cached.
    let cache = versioned(64);
    let got = cache.get_or_insert_with(1, || {
        assert_eq!(cache.invalidate_versioned(1, 5), Invalidation::Absent);
        400
    });
    assert_eq!(got, 400);
    assert_eq!(
        cache.get(&1),
        None,
        "a load that raced an invalidation was cached"
    );
    assert!(
        cache.insert_versioned(1, 0, 4).is_err(),
        "the tombstone stays"
    );

    // Nothing arrives: the load is cached (at version 0), also over an old tombstone.
    let cache = versioned(64);
    let _ = cache.invalidate_versioned(2, 3);
    assert_eq!(cache.get_or_insert_with(2, || 20), 20);
    assert_eq!((cache.get(&2), cache.version_of(&2)), (Some(20), Some(0)));
    assert!(
        cache.insert_versioned(2, 21, 2).is_err(),
        "the old tombstone still counts"
    );
    cache.insert_versioned(2, 22, 4).unwrap();
    assert_eq!(cache.get(&2), Some(22));
}

/// Found in review of the fix above: a loaded value was refused whenever the key had an entry,
/// also an expired one (which lookups treat as absent: that is why it was loaded), so in a
/// versioned cache with a TTL an expired key was loaded again on every lookup until something
/// purged it. An expired entry is now what the loaded value replaces.
#[test]
fn a_load_replaces_an_expired_entry() {
    let (cache, clock) = versioned_with_ttl_10s();
    cache.insert_versioned(1, 10, 3).unwrap();
    clock.advance(std::time::Duration::from_secs(11));
    assert_eq!(cache.get(&1), None, "expired");
    assert_eq!(cache.get_or_insert_with(1, || 11), 11);
    assert_eq!(
        cache.get_or_insert_with(1, || 12),
        11,
        "the reloaded value is cached"
    );
    assert_eq!(cache.version_of(&1), Some(0));
    assert!(
        cache.insert_versioned(1, 0, 2).is_err(),
        "the expired entry's version stays known (its tombstone)"
    );
}

/// Found in review: a load compared only the key's tombstone at its start and end, so an
/// invalidation during the load whose tombstone the bounded store had already dropped again
/// went unseen, and the stale value was cached. The snapshot now also counts the shard's
/// drops.
#[test]
fn an_invalidation_during_a_load_wins_even_once_its_tombstone_is_gone() {
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(1000)
        .versioned()
        .max_tombstones(16)
        .build()
        .unwrap();
    let got = cache.get_or_insert_with(1, || {
        assert_eq!(cache.invalidate_versioned(1, 5), Invalidation::Absent);
        for k in 100..2000 {
            let _ = cache.invalidate_versioned(k, 1);
        }
        400
    });
    assert_eq!(got, 400);
    assert_eq!(
        cache.get(&1),
        None,
        "a load that raced an invalidation was cached"
    );
}

static HASH_7_PANICS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A key whose `Hash` panics for 7 while `HASH_7_PANICS` is set.
#[derive(Clone, PartialEq, Eq, Debug)]
struct Key7(u64);

impl std::hash::Hash for Key7 {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        if self.0 == 7 && HASH_7_PANICS.load(Ordering::SeqCst) {
            panic!("intentional: hash of 7");
        }
        self.0.hash(h)
    }
}

/// Found in review: dropping the oldest tombstone took its queue entry off before looking the
/// key up; a panicking `Hash` there lost the entry, and that tombstone then stayed for good, the
/// store over its bound. The entry now leaves the queue only after the lookup.
#[test]
fn a_panicking_hash_while_dropping_a_tombstone_loses_no_queue_entry() {
    let cache: Cache<Key7, u64> = Cache::builder()
        .max_capacity(1000)
        .versioned()
        .max_tombstones(16)
        .build()
        .unwrap();
    let _ = cache.invalidate_versioned(Key7(7), 5);
    HASH_7_PANICS.store(true, Ordering::SeqCst);
    let mut panics = 0;
    for k in 100..2000 {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = cache.invalidate_versioned(Key7(k), 1);
        }));
        panics += usize::from(r.is_err());
    }
    HASH_7_PANICS.store(false, Ordering::SeqCst);
    assert!(
        panics > 0,
        "key 7's tombstone was never the oldest of its shard"
    );
    for k in 3000..6000 {
        let _ = cache.invalidate_versioned(Key7(k), 1);
    }
    assert!(
        cache.insert_versioned(Key7(7), 0, 3).is_ok(),
        "key 7's tombstone outlived 3,000 newer ones"
    );
}

/// Found in review: a load replaced any expired entry it found, so a versioned insert that
/// arrived during the load and expired before the load ended lost to the (older) loaded value,
/// which was then cached for a whole time-to-live. Only if an eviction or a purge had removed
/// the expired entry first (recording its tombstone) was the loaded value refused. The load now
/// replaces only the entry it began with.
#[test]
fn a_versioned_insert_during_a_load_wins_even_once_it_has_expired() {
    let (cache, clock) = versioned_with_ttl_10s();
    let loaded = cache.get_or_insert_with(1, || {
        // The loader read the old row; meanwhile a newer version is written and expires.
        cache.insert_versioned(1, 500, 5).unwrap();
        clock.advance(std::time::Duration::from_secs(11));
        400
    });
    assert_eq!(loaded, 400, "the callers still get what was loaded");
    assert_eq!(cache.get(&1), None, "the older loaded value is not cached");
    assert!(
        cache.insert_versioned(1, 0, 4).is_err(),
        "version 5 stays known: older ones are refused"
    );
}

/// The other side of the rule above: an entry that had expired before the load began is what
/// the load replaces, also when it was written with a version.
#[test]
fn a_load_still_replaces_the_expired_entry_it_began_with() {
    let (cache, clock) = versioned_with_ttl_10s();
    cache.insert_versioned(1, 500, 5).unwrap();
    clock.advance(std::time::Duration::from_secs(11));
    assert_eq!(cache.get_or_insert_with(1, || 400), 400);
    assert_eq!(cache.get(&1), Some(400), "the reload is cached");
}

/// A versioned cache of 100 entries with a 10 s time-to-live on a manual clock.
fn versioned_with_ttl_10s() -> (Cache<u64, u64>, std::sync::Arc<common::ManualClock>) {
    let clock = common::ManualClock::new();
    let cache = Cache::builder()
        .max_capacity(100)
        .time_to_live(std::time::Duration::from_secs(10))
        .clock(clock.clone())
        .versioned()
        .build()
        .unwrap();
    (cache, clock)
}

/// A loader that tells its value's version (`try_get_or_insert_versioned_with`) caches the value
/// at that version: an older versioned insert after it is refused, a newer one replaces it.
#[test]
fn a_versioned_load_stores_its_version() {
    let cache = versioned(100);
    let v = cache.try_get_or_insert_versioned_with(1, || Ok::<_, ()>((10, 7)));
    assert_eq!(v, Ok(10));
    assert_eq!(cache.version_of(&1), Some(7));
    let refused = cache.insert_versioned(1, 60, 6).unwrap_err();
    assert_eq!(
        refused.kind,
        InsertErrorKind::Stale {
            version: 6,
            current: 7
        }
    );
    cache.insert_versioned(1, 80, 8).unwrap();
    assert_eq!(cache.get(&1), Some(80));
    // A hit returns the cached value; the loader is not run.
    let hit = cache.try_get_or_insert_versioned_with(1, || -> Result<(u64, u64), ()> {
        unreachable!("the key is cached")
    });
    assert_eq!(hit, Ok(80));
}

/// What arrives during a versioned load is weighed by version, as for `insert_versioned`: a
/// newer invalidation wins (the loaded value is returned but not cached), an older versioned
/// insert loses to the loaded value.
#[test]
fn a_versioned_load_weighs_what_arrived_during_it_by_version() {
    let cache = versioned(100);
    let v = cache.try_get_or_insert_versioned_with(1, || {
        assert_eq!(cache.invalidate_versioned(1, 9), Invalidation::Absent);
        Ok::<_, ()>((10, 7))
    });
    assert_eq!(v, Ok(10), "the caller still gets what it loaded");
    assert_eq!(
        cache.get(&1),
        None,
        "version 7 is older than the invalidation at 9"
    );

    let v = cache.try_get_or_insert_versioned_with(2, || {
        cache.insert_versioned(2, 30, 3).unwrap();
        Ok::<_, ()>((20, 7))
    });
    assert_eq!(v, Ok(20));
    assert_eq!(
        cache.get(&2),
        Some(20),
        "version 7 replaces the older version 3"
    );
    assert_eq!(cache.version_of(&2), Some(7));
    assert_eq!(cache.check_invariants(), Ok(1));
}

/// A versioned load replaces an expired entry of its own version: the same data, loaded again.
/// (Refused as "equal is stale", the key would be loaded again on every lookup until something
/// removed the expired entry.) An expired entry of a newer version still wins.
#[test]
fn a_versioned_load_replaces_an_expired_entry_of_the_same_version() {
    let (cache, clock) = versioned_with_ttl_10s();
    cache.insert_versioned(1, 10, 5).unwrap();
    cache.insert_versioned(2, 20, 6).unwrap();
    clock.advance(std::time::Duration::from_secs(11));
    assert_eq!(cache.get(&1), None, "expired");
    let v = cache.try_get_or_insert_versioned_with(1, || Ok::<_, ()>((11, 5)));
    assert_eq!(v, Ok(11));
    assert_eq!(cache.get(&1), Some(11), "cached again at the same version");
    let v = cache.try_get_or_insert_versioned_with(2, || Ok::<_, ()>((21, 5)));
    assert_eq!(v, Ok(21));
    assert_eq!(
        cache.get(&2),
        None,
        "version 5 is older than the expired entry's 6"
    );
    assert!(
        cache.insert_versioned(2, 22, 5).is_err(),
        "the expired entry's version 6 still refuses older ones"
    );
    cache
        .insert_versioned(2, 22, 6)
        .expect("its own version gets in, as it would past its tombstone");
    assert_eq!(cache.get(&2), Some(22));
}

/// A versioned insert of an expired entry's own version gets the same answer whether or not
/// the entry has been swept yet: swept, it left a tombstone of that version, which accepts
/// it; unswept, the entry itself accepts it. (It was refused until a sweep came by, so
/// whether a redelivered broadcast brought the data back for another TTL depended on the
/// janitor's timing: found in review.) A live entry of that version still refuses it.
#[test]
fn an_expired_entrys_own_version_is_accepted_swept_or_not() {
    let (swept, clock_s) = versioned_with_ttl_10s();
    let (unswept, clock_u) = versioned_with_ttl_10s();
    for (c, clock) in [(&swept, &clock_s), (&unswept, &clock_u)] {
        c.insert_versioned(1, 10, 5).unwrap();
        assert!(
            c.insert_versioned(1, 11, 5).is_err(),
            "live: equal is stale"
        );
        clock.advance(std::time::Duration::from_secs(11));
        assert_eq!(c.get(&1), None, "expired");
    }
    assert_eq!(swept.purge_expired(), 1, "leaves a tombstone of 5");
    for c in [&swept, &unswept] {
        assert!(
            c.insert_versioned(1, 12, 4).is_err(),
            "older is stale either way"
        );
        c.insert_versioned(1, 12, 5)
            .expect("the expired entry's own version is accepted, swept or not");
        assert_eq!(c.get(&1), Some(12));
        assert_eq!(c.check_invariants(), Ok(1));
    }
}

/// In a cache built without `versioned()` the loader's version is ignored: the value is cached
/// as `try_get_or_insert_with` would cache it.
#[test]
fn a_versioned_load_in_an_unversioned_cache_caches_the_value() {
    let cache: Cache<u64, u64> = Cache::new(100);
    let v = cache.try_get_or_insert_versioned_with(1, || Ok::<_, ()>((10, 7)));
    assert_eq!(v, Ok(10));
    assert_eq!(cache.get(&1), Some(10));
    assert_eq!(cache.version_of(&1), None);
}

// Found by a dry run of the fleet coherence layer (2026-11-27): a simulated fleet of caches in
// front of a database, with versioned broadcasts delayed, reordered and duplicated.

/// A versioned loader over `cache` that counts its calls and reads `(value, version)`.
fn load_counted(cache: &Cache<u64, u64>, key: u64, row: (u64, u64), calls: &AtomicU64) -> u64 {
    cache
        .try_get_or_insert_versioned_with(key, || {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok::<_, ()>(row)
        })
        .unwrap()
}

/// An eviction leaves a tombstone of the entry's version; the unchanged row, loaded again at
/// that same version, is the same data and is cached. (It was refused as "equal is stale", so
/// the key went to the source on every lookup until its tombstone left the store.)
#[test]
fn an_evicted_key_reloaded_at_its_unchanged_version_is_cached_again() {
    let cache = versioned(1);
    let calls = AtomicU64::new(0);
    assert_eq!(load_counted(&cache, 1, (100, 7), &calls), 100);
    cache.insert_versioned(2, 200, 3).unwrap();
    assert_eq!(cache.version_of(&1), None, "key 1 was evicted");
    assert!(cache.tombstones() >= 1, "and left a tombstone of version 7");
    assert_eq!(load_counted(&cache, 1, (100, 7), &calls), 100);
    assert_eq!(cache.version_of(&1), Some(7), "the reload is cached");
    assert_eq!(load_counted(&cache, 1, (100, 7), &calls), 100);
    assert_eq!(calls.load(Ordering::SeqCst), 2, "the third call hit");
    // Evicted again: a broadcast of version 7 (a redelivery, or a second tier handing the
    // entry back) brings the same data back; an older one stays refused.
    assert!(cache.insert_versioned(3, 0, 0).is_ok());
    assert!(matches!(
        cache.insert_versioned(1, 99, 6).unwrap_err().kind,
        InsertErrorKind::Stale { .. }
    ));
    cache.insert_versioned(1, 100, 7).unwrap();
    assert_eq!(cache.version_of(&1), Some(7));
}

/// The same once an expired entry has been removed (`purge_expired`; the janitor or the hand
/// in production): its tombstone does not refuse the unchanged row loaded again.
#[test]
fn a_purged_expired_key_reloaded_at_its_unchanged_version_is_cached_again() {
    let (cache, clock) = versioned_with_ttl_10s();
    let calls = AtomicU64::new(0);
    load_counted(&cache, 1, (100, 7), &calls);
    clock.advance(std::time::Duration::from_secs(11));
    assert_eq!(cache.purge_expired(), 1);
    load_counted(&cache, 1, (100, 7), &calls);
    load_counted(&cache, 1, (100, 7), &calls);
    assert_eq!(calls.load(Ordering::SeqCst), 2, "the reload was not cached");
}

/// A fleet broadcasts a write as "key k is now at version n" (`invalidate_versioned(k, n)`);
/// the next miss reads the row at exactly `n`, the current data: cached. Older versions stay
/// refused; a versioned insert of `n` (a broadcast of the same write) is stored too.
#[test]
fn a_load_at_the_invalidated_version_is_cached() {
    let cache = versioned(100);
    let calls = AtomicU64::new(0);
    load_counted(&cache, 1, (100, 4), &calls);
    assert_eq!(cache.invalidate_versioned(1, 5), Invalidation::Removed);
    assert_eq!(load_counted(&cache, 1, (105, 5), &calls), 105);
    assert_eq!(load_counted(&cache, 1, (105, 5), &calls), 105);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the row at 5 was not cached"
    );
    assert_eq!(cache.version_of(&1), Some(5));
    let _ = cache.invalidate_versioned(2, 5);
    assert_eq!(load_counted(&cache, 2, (204, 4), &calls), 204);
    assert_eq!(cache.get(&2), None, "version 4 is older than the tombstone");
    // A broadcast of version 5 itself is the same data: stored.
    cache.insert_versioned(2, 205, 5).unwrap();
    assert_eq!(cache.get(&2), Some(205));
}

/// An invalidation that arrives during a *versioned* load wins even once the bounded store has
/// dropped its tombstone (the unversioned loader already kept the shard's drop count; the
/// versioned one did not, and cached version 4 after the invalidation to 5).
#[test]
fn an_invalidation_during_a_versioned_load_wins_even_once_its_tombstone_is_gone() {
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(100)
        .versioned()
        .max_tombstones(16) // one per shard
        .build()
        .unwrap();
    let got = cache
        .try_get_or_insert_versioned_with(1, || {
            assert_eq!(cache.invalidate_versioned(1, 5), Invalidation::Absent);
            for k in 100..2000 {
                let _ = cache.invalidate_versioned(k, 9);
            }
            Ok::<_, ()>((104, 4))
        })
        .unwrap();
    assert_eq!(got, 104, "the caller still gets what it loaded");
    assert_eq!(
        cache.version_of(&1),
        None,
        "version 4 outlived the invalidation to 5"
    );
}

/// The drop rule is no more conservative than it must be: tombstones dropped during a load
/// refuse its value only if one of them was newer than the version it read.
#[test]
fn tombstones_dropped_during_a_load_refuse_only_an_older_value() {
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(100)
        .versioned()
        .max_tombstones(16)
        .build()
        .unwrap();
    let got = cache
        .try_get_or_insert_versioned_with(1, || {
            for k in 100..2000 {
                let _ = cache.invalidate_versioned(k, 3);
            }
            Ok::<_, ()>((104, 4))
        })
        .unwrap();
    assert_eq!(got, 104);
    assert_eq!(
        cache.version_of(&1),
        Some(4),
        "every dropped tombstone was older"
    );
}

/// A versioned cache of byte vectors weighed by length, 100 bytes in all: a value of 200
/// bytes is too heavy for it.
fn bytes_versioned_100() -> Cache<u64, Vec<u8>> {
    Cache::builder()
        .max_weight(100)
        .weigher(|_, v: &Vec<u8>| v.len() as u64)
        .versioned()
        .build()
        .unwrap()
}

/// A versioned insert refused for its weight is still news of its version: the older entry is
/// removed and a tombstone refuses a late, older broadcast. (Both used to survive: the cache
/// went on serving version 3 after refusing version 5, and accepted version 4 afterwards.)
#[test]
fn a_versioned_insert_refused_for_its_weight_still_invalidates_older_versions() {
    let cache = bytes_versioned_100();
    cache.insert_versioned(1, vec![3; 10], 3).unwrap();
    let e = cache.insert_versioned(1, vec![5; 200], 5).unwrap_err();
    assert!(matches!(e.kind, InsertErrorKind::TooHeavy { .. }));
    assert_eq!(cache.get(&1), None, "version 3 is stale once 5 exists");
    assert!(
        cache.insert_versioned(1, vec![4; 10], 4).is_err(),
        "version 4 accepted after version 5 was seen"
    );
    // Not for a newer entry: refusing an older heavy version removes nothing.
    cache.insert_versioned(2, vec![8; 10], 8).unwrap();
    assert!(cache.insert_versioned(2, vec![6; 200], 6).is_err());
    assert_eq!(cache.get(&2), Some(vec![8; 10]));
}

/// The same for a versioned *load*: a loader that read version 5 from the source and whose
/// value the cache refused for its weight has still learned that the source holds 5. An older
/// entry goes and a tombstone refuses a late, older broadcast, as after a refused
/// `insert_versioned`. (Found in review: nothing was recorded, and a late version 4 was cached
/// and served after the load of 5.)
#[test]
fn a_versioned_load_refused_for_its_weight_is_news_of_its_version() {
    let cache = bytes_versioned_100();
    // Absent key: the load is refused, a tombstone of 5 stays.
    let v = cache.try_get_or_insert_versioned_with(2, || Ok::<_, ()>((vec![5; 200], 5)));
    assert_eq!(
        v.map(|v| v.len()),
        Ok(200),
        "the caller still gets the loaded value"
    );
    assert_eq!(cache.get(&2), None, "not cached: too heavy");
    assert!(
        cache.insert_versioned(2, vec![4; 10], 4).is_err(),
        "a late version 4 was accepted after a load of version 5"
    );
    assert!(
        cache.insert_versioned(2, vec![5; 10], 5).is_ok(),
        "version 5 itself gets in"
    );
    // An older entry of the key goes too (the loader runs on a miss only, so
    // the older entry arrives during the load).
    let c = &cache;
    let v = cache.try_get_or_insert_versioned_with(3, || {
        c.insert_versioned(3, vec![3; 10], 3).unwrap();
        Ok::<_, ()>((vec![5; 200], 5))
    });
    assert_eq!(v.map(|v| v.len()), Ok(200));
    assert_eq!(
        cache.get(&3),
        None,
        "version 3 is stale once the load saw 5"
    );
    assert!(cache.insert_versioned(3, vec![4; 10], 4).is_err());
    // A heavy load of a version older than what arrived meanwhile removes nothing newer.
    let v = cache.try_get_or_insert_versioned_with(4, || {
        c.insert_versioned(4, vec![8; 10], 8).unwrap();
        Ok::<_, ()>((vec![6; 200], 6))
    });
    assert_eq!(v.map(|v| v.len()), Ok(200));
    assert_eq!(cache.get(&4), Some(vec![8; 10]), "version 8 stays");
}

/// `get_versioned` reads the value and its version from the same entry: under a writer that
/// keeps replacing the entry, they always match (value = 10 × version). A `get` and a
/// `version_of` in turn would not. Expired and absent keys give `None`, an unversioned cache
/// version 0, and it counts as a `get` in the statistics.
#[test]
fn get_versioned_reads_value_and_version_from_one_entry() {
    let cache: Arc<Cache<u64, u64>> = Arc::new(
        Cache::builder()
            .max_capacity(100)
            .versioned()
            .record_stats()
            .build()
            .unwrap(),
    );
    cache.insert_versioned(1, 10, 1).unwrap();
    let writer = {
        let cache = cache.clone();
        std::thread::spawn(move || {
            for n in 2..200_000u64 {
                cache.insert_versioned(1, 10 * n, n).unwrap();
            }
        })
    };
    let mut reads = 0u64;
    while !writer.is_finished() {
        let (v, n) = cache.get_versioned(&1).expect("always present");
        assert_eq!(v, 10 * n, "value and version from two different entries");
        let pinned = cache.pin();
        let (v, n) = pinned.get_versioned(&1).expect("always present");
        assert_eq!(*v, 10 * n);
        reads += 2;
    }
    writer.join().unwrap();
    assert_eq!(cache.get_versioned(&2), None);
    assert_eq!(cache.stats().unwrap().hits, reads);
    assert_eq!(cache.stats().unwrap().misses, 1);

    let (ttl, clock) = versioned_with_ttl_10s();
    ttl.insert_versioned(1, 10, 1).unwrap();
    clock.advance(std::time::Duration::from_secs(11));
    assert_eq!(ttl.get_versioned(&1), None, "expired");

    let plain: Cache<u64, u64> = Cache::new(10);
    plain.insert(1, 10).unwrap();
    assert_eq!(plain.get_versioned(&1), Some((10, 0)));
}

/// The shard of the tombstone store that holds `key`'s tombstone (the hash's top bits).
fn shard_of(cache: &Cache<u64, u64>, key: u64) -> u64 {
    (cache.hasher().hash_one(key) >> 58) % 16
}

/// Keys whose tombstones share `key`'s shard of the store.
fn same_shard(cache: &Cache<u64, u64>, key: u64, n: usize) -> Vec<u64> {
    (1000..)
        .filter(|&k| shard_of(cache, k) == shard_of(cache, key))
        .take(n)
        .collect()
}

/// A load compares the drops of its key's shard during the load against the shard's record of
/// its last drops: only a drop of *this* key's tombstone refuses the value, for a plain loader
/// as for a versioned one. (Any drop in the shard used to refuse it: a stream of invalidations
/// of keys an instance does not hold left 45 % of a simulated fleet's loads uncached.)
#[test]
fn a_load_is_refused_by_drops_of_its_own_tombstones_only() {
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(100)
        .versioned()
        .max_tombstones(16) // one per shard: each record drops the shard's previous one
        .build()
        .unwrap();
    let others = same_shard(&cache, 1, 10);
    // Other keys' tombstones come and go during the load: cached.
    let got = cache.get_or_insert_with(1, || {
        for &k in &others {
            let _ = cache.invalidate_versioned(k, 9);
        }
        10
    });
    assert_eq!(got, 10);
    assert_eq!(
        cache.get(&1),
        Some(10),
        "other keys' drops refused the load"
    );
    let got = cache
        .try_get_or_insert_versioned_with(2, || {
            for &k in &same_shard(&cache, 2, 10) {
                let _ = cache.invalidate_versioned(k, 9);
            }
            Ok::<_, ()>((20, 4))
        })
        .unwrap();
    assert_eq!(got, 20);
    assert_eq!(
        cache.version_of(&2),
        Some(4),
        "other keys' drops refused the load"
    );
    // The key's own tombstone, recorded and dropped again during the load: refused.
    cache.remove(&1);
    // One tombstone per shard: key 1's goes when the other key's takes its place. (Key 2's
    // shard keeps one of its own, unless the hasher's random seed put keys 1 and 2 together.)
    let held = if shard_of(&cache, 1) == shard_of(&cache, 2) {
        1
    } else {
        2
    };
    let got = cache.get_or_insert_with(1, || {
        let _ = cache.invalidate_versioned(1, 5);
        let _ = cache.invalidate_versioned(others[0], 9);
        assert_eq!(cache.tombstones(), held, "key 1's tombstone was dropped");
        11
    });
    assert_eq!(got, 11);
    assert_eq!(
        cache.get(&1),
        None,
        "an invalidation during the load was lost"
    );
}

/// `insert_versioned_with_ttl`: the version rules of `insert_versioned` with the entry's own
/// time-to-live; the version outlives the expiry (an expired entry still counts for versions);
/// typed refusals without versions or without expiry.
#[test]
fn insert_versioned_with_ttl_keeps_both_rules() {
    use std::time::Duration;
    let (cache, clock) = versioned_with_ttl_10s();
    cache
        .insert_versioned_with_ttl(1, 10, 5, Duration::from_secs(2))
        .unwrap();
    assert_eq!(cache.get_versioned(&1), Some((10, 5)));
    let e = cache
        .insert_versioned_with_ttl(1, 9, 4, Duration::from_secs(60))
        .unwrap_err();
    assert!(matches!(
        e.kind,
        InsertErrorKind::Stale {
            version: 4,
            current: 5
        }
    ));
    clock.advance(Duration::from_secs(3));
    assert_eq!(cache.get(&1), None, "its own 2 s, not the cache's 10 s");
    assert!(
        cache.insert_versioned(1, 9, 4).is_err(),
        "the expired entry's version still counts"
    );
    cache.insert_versioned(1, 11, 6).unwrap();
    clock.advance(Duration::from_secs(9));
    assert_eq!(
        cache.get(&1),
        Some(11),
        "a plain versioned insert gets the default 10 s"
    );

    let no_expiry = versioned(10);
    let e = no_expiry
        .insert_versioned_with_ttl(1, 1, 1, Duration::from_secs(1))
        .unwrap_err();
    assert_eq!(e.kind, InsertErrorKind::ExpiryDisabled);
    let no_versions: Cache<u64, u64> = Cache::builder().max_capacity(10).expiry().build().unwrap();
    let e = no_versions
        .insert_versioned_with_ttl(1, 1, 1, Duration::from_secs(1))
        .unwrap_err();
    assert_eq!(e.kind, InsertErrorKind::NotVersioned);
}

/// A tombstone says the source holds its version: a versioned insert of that very version is
/// its data and is stored, whether the tombstone came from an invalidation or from the entry's
/// eviction; an entry of that version still refuses it (a redelivery changes nothing). Until
/// 2026-11-27 a tombstone refused its own version too, so a two-tier cache could never hand an
/// entry the first tier had evicted back to it with `insert_versioned` (every one of 2.6
/// million promotions refused in `examples/tier_sim.rs`).
#[test]
fn a_versioned_insert_of_the_tombstones_own_version_is_stored() {
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(2)
        .versioned()
        .policy(clockline::Policy::Clock)
        .build()
        .unwrap();
    cache.insert_versioned(1, 10, 5).unwrap();
    assert!(matches!(
        cache.insert_versioned(1, 11, 5).unwrap_err().kind,
        InsertErrorKind::Stale {
            version: 5,
            current: 5
        }
    ));
    for k in 100..110 {
        cache.insert(k, k).unwrap();
    }
    assert_eq!(cache.get(&1), None, "evicted, leaving a tombstone of 5");
    assert!(cache.insert_versioned(1, 9, 4).is_err(), "older: refused");
    cache.insert_versioned(1, 10, 5).unwrap();
    assert_eq!((cache.get(&1), cache.version_of(&1)), (Some(10), Some(5)));

    assert_eq!(cache.invalidate_versioned(2, 8), Invalidation::Absent);
    assert!(cache.insert_versioned(2, 7, 7).is_err(), "older: refused");
    cache.insert_versioned(2, 8, 8).unwrap();
    assert_eq!(cache.get(&2), Some(8));
}

/// A waiter that joined a versioned load after seeing an invalidation to a newer version
/// never gets the older loaded value, also when that value is too heavy to cache: a heavy
/// value was refused before the version checks ran, so its flight ended as if it were
/// current, and the waiter got version 1 (found in review). With a light value the same
/// history already made the waiter load version 2.
#[test]
fn a_waiter_never_gets_a_heavy_value_older_than_an_invalidation_it_saw() {
    use std::sync::mpsc;
    for heavy in [false, true] {
        let cache = bytes_versioned_100();
        let old_len = if heavy { 200 } else { 10 };
        let (go, wait) = mpsc::channel::<()>();
        let (started, is_started) = mpsc::channel::<()>();
        let got = std::thread::scope(|s| {
            let c = &cache;
            let leader = s.spawn(move || {
                c.try_get_or_insert_versioned_with(1, || {
                    started.send(()).unwrap();
                    wait.recv().unwrap();
                    Ok::<_, ()>((vec![1u8; old_len], 1)) // read at version 1
                })
            });
            is_started.recv().unwrap();
            assert_eq!(c.invalidate_versioned(1, 2), Invalidation::Absent);
            let waiter = s.spawn(move || {
                c.try_get_or_insert_versioned_with(1, || Ok::<_, ()>((vec![2u8; 10], 2)))
            });
            // Time for the waiter to join the flight (if it does not, it loads version 2
            // itself after the leader, and the test checks nothing).
            std::thread::sleep(std::time::Duration::from_millis(200));
            go.send(()).unwrap();
            leader.join().unwrap().unwrap();
            waiter.join().unwrap().unwrap()
        });
        assert_eq!(
            got[0], 2,
            "heavy = {heavy}: the waiter, which asked after the invalidation to version 2, got version {}",
            got[0]
        );
    }
}

/// `invalidate_versioned` of an expired entry answers as it does once a sweep has removed the
/// entry: `Absent`, for an older, equal or newer version alike, and what the cache knows
/// afterwards is the larger of the two versions. (Unswept it answered `Stale { current }` or
/// `Removed`, reported as `Explicit`; found in review.) The entry leaves as `Expired`.
#[test]
fn invalidating_an_expired_entry_answers_alike_swept_or_not() {
    for n in [3, 5, 7] {
        let mut answers = Vec::new();
        for sweep in [true, false] {
            let clock = common::ManualClock::new();
            let heard = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let h = heard.clone();
            let cache: Cache<u64, u64> = Cache::builder()
                .max_capacity(100)
                .time_to_live(std::time::Duration::from_secs(10))
                .clock(clock.clone())
                .versioned()
                .eviction_listener(move |_, _, cause| h.lock().unwrap().push(cause))
                .build()
                .unwrap();
            cache.insert_versioned(1, 10, 5).unwrap();
            clock.advance(std::time::Duration::from_secs(11));
            if sweep {
                assert_eq!(cache.purge_expired(), 1);
            }
            let answer = cache.invalidate_versioned(1, n);
            let known = n.max(5);
            let older = cache.insert_versioned(1, 0, known - 1).is_err();
            let own = cache.insert_versioned(1, 0, known).is_ok();
            answers.push((answer, older, own, heard.lock().unwrap().clone()));
        }
        assert_eq!(answers[0], answers[1], "n = {n}: swept vs unswept");
        assert_eq!(answers[0].0, Invalidation::Absent, "n = {n}");
        assert_eq!(answers[0].3, vec![RemovalCause::Expired], "n = {n}");
        assert!(answers[0].1 && answers[0].2, "n = {n}: knows {}", n.max(5));
    }
}
