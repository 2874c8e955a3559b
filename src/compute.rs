//! Atomic read-modify-write of one key: [`Cache::compute`].
//!
//! A counter, a rate limiter or a list appended to by many threads cannot be kept with `get`
//! then `insert`: two threads that read the same value both write their own update, and one
//! is lost. `compute` gives the closure the key's current value and commits what it returns
//! only if the key still holds that entry; otherwise it runs the closure again on the new one,
//! as [`AtomicU64::fetch_update`](std::sync::atomic::AtomicU64::fetch_update) does. No lock is
//! held while the closure runs, so it may call into the cache or panic. It does run pinned
//! (it borrows the value), and the epoch is shared by every cache in the process: a slow
//! closure holds back reclamation everywhere while it runs, so keep it short.
//!
//! # Protocol
//!
//! 1. Pin, and find the key's node, expired or not (`expected`: its address, or none). The
//!    closure sees the value if the node is live, `None` if it is absent or expired.
//! 2. [`Compute::Put`]: an insert with [`Cond::Unchanged`]`(expected, saw_live)`. Under the
//!    key's home bucket lock (which every insert and removal of the key takes) the insert
//!    looks the key up again and stores only if it finds the same node (or, for none, no node)
//!    and live exactly if the closure saw it live (not expired since, nor revived by a read
//!    that judges expiry at an earlier instant); otherwise it hands the pair back
//!    and the call starts over at 1. A node the closure saw expired is *settled* by that check
//!    (its idle deadline swapped for "expired at every instant", `Expiry::settle_expired`),
//!    so that no read revives it between the check and the commit; a read that revived it
//!    first makes the swap fail, and the call starts over.
//!    [`Compute::Remove`]: a removal under the same lock, on the same conditions.
//!    [`Compute::Keep`]: nothing.
//!
//! # Orderings
//!
//! Nothing new: step 1 is a lookup (its Acquire loads of the slot and node, see
//! `table/mod.rs`), step 2 an insert or removal under the bucket lock (the lock's Acquire and
//! Release order it with every other write of the key). Comparing addresses is sound because
//! the guard of step 1 is held until step 2 ends: the node seen at step 1 cannot be reclaimed,
//! so its address cannot be reused by a new node (nodes are recycled only after reclamation)
//! while it is compared. The loom model `compute_increments_are_not_lost`
//! (`loom-tests/tests/features.rs`) runs two computes of one key against each other.

use std::hash::{BuildHasher, Hash};

use crate::cache::Cond;
use crate::error::{InsertError, InsertErrorKind};
use crate::listener::{Notes, RemovalCause};
use crate::Cache;

/// What a [`Cache::compute`] closure wants done with the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compute<V> {
    /// Store this value (insert, or replace the value the closure saw), with the cache's
    /// default time-to-live, if any: every put starts a new one.
    Put(V),
    /// Store this value with its own time-to-live, as
    /// [`insert_with_ttl`](Cache::insert_with_ttl) does (needs a cache with expiry). A fixed
    /// window keeps its end this way: `PutWithTtl(count + 1, window_end - now)`, where a plain
    /// `Put` would give each increment a fresh default TTL, and a window kept busy would never
    /// close.
    PutWithTtl(V, std::time::Duration),
    /// Remove the entry the closure saw (nothing if it saw none).
    Remove,
    /// Leave the key as it is.
    Keep,
}

/// What [`Cache::compute`] did.
#[must_use = "a put may still be refused by a weighted cache"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Computed {
    /// The closure saw no live entry, and its value was stored.
    Inserted,
    /// The closure saw a live entry, and its value replaced it.
    Updated,
    /// The closure saw a live entry, and it was removed.
    Removed,
    /// [`Compute::Keep`], or [`Compute::Remove`] when the closure saw no live entry: nothing
    /// it saw changed (an expired entry found is removed all the same, as by
    /// [`remove`](Cache::remove), and reported as [`RemovalCause::Explicit`]).
    Unchanged,
}

impl<K, V, S> Cache<K, V, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
    S: BuildHasher,
{
    /// Computes the key's new value from its current one, atomically: `f` gets the live value
    /// (`None` if the key is absent or expired) and returns what to do. What it returns is
    /// committed only if the key still holds the entry `f` saw; if another write of the key
    /// came first, or the live value `f` saw has expired since, `f` runs again on what is
    /// there now, so `f` may run more than once and should not have effects beyond its
    /// result. No lock is held while `f` runs: it may call into the cache (though a closure
    /// that writes its own key on every run never commits: each write makes the next run's
    /// read stale), and a panic in it changes nothing and reaches the caller. `f` runs pinned,
    /// which holds back the reclamation of what every cache of the process retires meanwhile:
    /// keep it short, and do slow work (I/O) before the call.
    ///
    /// A put is an [`insert`](Self::insert) (the cache's default time-to-live, which each put
    /// starts anew, or [`Compute::PutWithTtl`]'s; the weigher; admission): a weighted cache may
    /// refuse it, and the error hands the key and the value back. A removal is reported to the
    /// listener as [`RemovalCause::Explicit`]. `compute` counts no hit or miss in the
    /// statistics (it is a write; a put over an expired entry counts as an update there, as
    /// an insert over one does, though it returns [`Computed::Inserted`]). A put's new entry
    /// starts marked as used, as every replace's does; [`Compute::Keep`] leaves the entry as it
    /// was.
    ///
    /// ```
    /// use clockline::{Cache, Compute, Computed};
    /// let hits: Cache<&str, u64> = Cache::new(1_000);
    /// let bump = |n: Option<&u64>| Compute::Put(n.copied().unwrap_or(0) + 1);
    /// assert_eq!(hits.compute("/", bump).unwrap(), Computed::Inserted);
    /// assert_eq!(hits.compute("/", bump).unwrap(), Computed::Updated);
    /// assert_eq!(hits.get("/"), Some(2));
    /// // Remove once the count reaches a limit, keep otherwise.
    /// let drop_at_2 = |n: Option<&u64>| if n == Some(&2) { Compute::Remove } else { Compute::Keep };
    /// assert_eq!(hits.compute("/", drop_at_2).unwrap(), Computed::Removed);
    /// assert_eq!(hits.compute("/", drop_at_2).unwrap(), Computed::Unchanged);
    /// ```
    pub fn compute(
        &self,
        key: K,
        mut f: impl FnMut(Option<&V>) -> Compute<V>,
    ) -> Result<Computed, InsertError<K, V>> {
        let inner = self.inner();
        let mut key = key;
        loop {
            let guard = crate::sync::pin();
            let node = inner.find(&key, &guard);
            let live = node.filter(|n| !inner.expired(n, inner.now()));
            let expected = node.map_or(0, |n| n as *const _ as usize);
            let todo = match live {
                Some(n) => n.read(|_, v| f(Some(v))),
                None => f(None),
            };
            let (value, ttl) = match todo {
                Compute::Keep => return Ok(Computed::Unchanged),
                Compute::Remove if node.is_none() => return Ok(Computed::Unchanged),
                Compute::Remove => {
                    let mut notes = Notes::new(inner.listener().is_some());
                    let removed = inner.remove_if(
                        &key,
                        // Not if `f` saw it live and it has expired since, or saw it expired
                        // and a read revived it since: `f` runs again on what it is now. (One
                        // `f` saw expired is removed, as by `remove`, with `Explicit`.)
                        |n| {
                            inner
                                .still_as_read(Some(n), expected, live.is_some(), inner.now())
                                .then(|| RemovalCause::Explicit)
                        },
                        |_, _| {},
                        &mut notes,
                        &guard,
                    );
                    notes.deliver(inner.listener());
                    match (removed, live) {
                        (Some(_), Some(_)) => return Ok(Computed::Removed),
                        // An expired entry, which `f` saw as absent: gone, nothing it saw
                        // changed.
                        (Some(_), None) => return Ok(Computed::Unchanged),
                        // Changed (or expired) meanwhile: run `f` again on what is there now.
                        (None, _) => continue,
                    }
                }
                Compute::Put(value) => (value, None),
                Compute::PutWithTtl(value, ttl) => (value, Some(ttl)),
            };
            let cond = Cond::Unchanged(expected, live.is_some());
            match inner.insert_full(key, value, ttl, cond, &guard) {
                Ok(()) if live.is_some() => return Ok(Computed::Updated),
                Ok(()) => return Ok(Computed::Inserted),
                // Changed (or expired) meanwhile: the pair comes back; run `f` again.
                Err(InsertError {
                    key: back,
                    kind: InsertErrorKind::Stale { .. },
                    ..
                }) => key = back,
                Err(refused) => return Err(refused),
            }
        }
    }
}
