//! Warm-up: preload a cache from a list of keys and a loader, with bounded concurrency and an
//! optional rate limit, so a freshly started instance does not stampede its database.
//!
//! Loads go through [single flight](crate::loader): a request that arrives during warm-up for a
//! key already loaded is a hit, for a key being loaded joins that load, and for any other key
//! runs its own loader as usual. Warm-up itself skips keys already cached.
//!
//! The rate limit spaces load *starts* evenly (one every `1/rate`), measured and waited on the
//! cache's [`Clock`](crate::Clock), so an injected clock makes it testable without sleeping.

use std::cell::Cell;
use std::hash::{BuildHasher, Hash};
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::expiry::deadline;
use crate::loader::Served;
use crate::sync::os_thread;
use crate::Cache;

/// Warm-up settings: how many loads may run at once, and at most how many may start per
/// second. Invalid settings (zero) cannot be expressed.
#[derive(Debug, Clone, Copy)]
pub struct WarmUp {
    concurrency: NonZeroUsize,
    per_second: Option<NonZeroU32>,
}

impl WarmUp {
    /// At most `concurrency` loads at once (that many worker threads), no rate limit.
    pub fn new(concurrency: NonZeroUsize) -> Self {
        Self {
            concurrency,
            per_second: None,
        }
    }

    /// At most `per_second` loads start per second, evenly spaced.
    pub fn rate_limit(mut self, per_second: NonZeroU32) -> Self {
        self.per_second = Some(per_second);
        self
    }
}

/// What a warm-up did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WarmUpReport {
    /// Keys whose value warm-up loaded (or received from a concurrent caller's load). Loaded
    /// is not the same as cached: a value the cache refused (`TooHeavy`, `Rejected`, a newer
    /// write during the load) or evicted again by the time warm-up ends counts here too.
    pub loaded: usize,
    /// Keys whose load failed (or panicked), warm-up's own or a concurrent caller's load it
    /// waited on with the same error type; nothing was cached for them.
    pub failed: usize,
    /// Keys that were already cached.
    pub skipped: usize,
    /// Wall time on the cache's clock. Without an injected clock that is the coarse clock,
    /// whose resolution (the kernel tick, 1-4 ms, [`CoarseClock::resolution`](crate::CoarseClock::resolution)) rounds a short
    /// warm-up down, to 0 at worst.
    pub elapsed: Duration,
}

impl<K, V, S> Cache<K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Sync,
{
    /// Loads `keys` into the cache with `loader`, at most `opts`' concurrency at a time and at
    /// most its rate, and returns when every key is done. A failing or panicking loader counts
    /// as `failed` and caches nothing; the others go on.
    ///
    /// This blocks, and runs one of its workers on the calling thread: from async code, call
    /// it inside `spawn_blocking`. There a loader may bridge to async code with the runtime's
    /// `Handle::block_on`; on a runtime's own thread that call panics, and the keys it was
    /// loading count as `failed` (`tests/warmup.rs`,
    /// `warm_up_called_from_an_async_task_fails_keys_silently`; 197 of 200 keys in the dry run).
    ///
    /// A panic anywhere but in the loader itself (the key's `Hash`, `Eq` or `Drop`, the
    /// value's `Drop`, the eviction listener's when the insert of a value evicted) is not the
    /// loader's: the key does not count as failed, the other keys go on, and the first such
    /// panic is raised once every key is done (instead of the report), as the operation that
    /// ran that code would raise it.
    ///
    /// ```
    /// use std::num::NonZeroUsize;
    /// use clockline::{Cache, WarmUp};
    /// let cache: Cache<u64, u64> = Cache::new(1000);
    /// let report = cache.warm_up(0..100u64, WarmUp::new(NonZeroUsize::new(4).unwrap()), |k| {
    ///     Ok::<_, std::io::Error>(k * 10)
    /// });
    /// assert_eq!((report.loaded, report.failed), (100, 0));
    /// assert_eq!(cache.get(&42), Some(420));
    /// ```
    pub fn warm_up<I, F, E>(&self, keys: I, opts: WarmUp, loader: F) -> WarmUpReport
    where
        I: IntoIterator<Item = K>,
        I::IntoIter: Send,
        F: Fn(&K) -> Result<V, E> + Sync,
        E: Send + Sync + 'static,
    {
        let clock = &self.inner().clock;
        let start = clock.now();
        let keys = Mutex::new(keys.into_iter());
        // The start time of the next load, for the rate limit.
        let next_slot = Mutex::new(start);
        let gap = opts
            .per_second
            .map(|r| Duration::from_nanos(1_000_000_000 / u64::from(r.get())));
        let report = Mutex::new(WarmUpReport::default());
        // The first panic that was not a loader's (see the docs above), raised at the end.
        let foreign_panic = Mutex::new(None);
        let work = || loop {
            let Some(key) = keys.lock().unwrap_or_else(PoisonError::into_inner).next() else {
                return;
            };
            // Everything this key runs is inside `catch_unwind`: the skip check (the key's
            // `Hash` and `Eq`), the load, and the drops of the key and of the returned value
            // (a panic in any of them unwound the worker, which stopped loading keys, and on a
            // spawned worker reached the caller as `thread::scope`'s own panic: found by the
            // hostile dry run, `tests/hostile_drops.rs`). `in_loader`: the loader has started
            // and not returned; only a panic then is the loader's own, which fails the key.
            // Any other is raised at the end (counting every panic as a failed load counted
            // keys whose value was cached, when the insert's listener panicked, and swallowed
            // that panic: `tests/warmup.rs`,
            // `a_panicking_listener_during_warm_up_fails_no_key_and_reaches_the_caller`).
            let in_loader = Cell::new(false);
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let key = key;
                if self.contains_key(&key) {
                    return Ok(Served::Hit);
                }
                if let Some(gap) = gap {
                    let at = {
                        let mut next = next_slot.lock().unwrap_or_else(PoisonError::into_inner);
                        let at = (*next).max(clock.now());
                        *next = deadline(at, gap);
                        at
                    };
                    let now = clock.now();
                    if at > now {
                        clock.sleep(Duration::from_nanos(at - now));
                    }
                }
                let loaded = self.load_sync(key.clone(), false, || {
                    in_loader.set(true);
                    let r = loader(&key);
                    in_loader.set(false);
                    r.map(|v| (v, None))
                });
                // The value and the error are dropped here, inside the `catch_unwind`.
                loaded.map(|(_, served)| served).map_err(drop)
            }));
            let mut r = report.lock().unwrap_or_else(PoisonError::into_inner);
            match outcome {
                Ok(Ok(Served::Hit)) => r.skipped += 1,
                Ok(Ok(_)) => r.loaded += 1,
                Ok(Err(())) => r.failed += 1,
                Err(_) if in_loader.get() => r.failed += 1,
                // Not the loader's: raised at the end, in place of the report, so this key
                // needs no count.
                Err(panic) => {
                    foreign_panic
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .get_or_insert(panic);
                }
            }
        };
        os_thread::scope(|s| {
            for _ in 1..opts.concurrency.get() {
                s.spawn(work);
            }
            work();
        });
        if let Some(panic) = foreign_panic
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
        {
            std::panic::resume_unwind(panic);
        }
        let mut report = report.into_inner().unwrap_or_else(PoisonError::into_inner);
        report.elapsed = Duration::from_nanos(clock.now().saturating_sub(start));
        report
    }
}
