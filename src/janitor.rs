//! The optional janitor: a thread that purges expired entries periodically (go-cache's model),
//! switched on with [`Builder::janitor`](crate::Builder::janitor).
//!
//! A cache with a janitor keeps its `Inner` in an `Arc`; the thread holds a `Weak` and upgrades
//! it for each sweep. `Cache`'s `Drop` tells the thread to stop and joins it, so no sweep (and
//! no listener call) outlives the drop, except on the janitor thread itself: a listener that
//! the janitor's sweep calls may drop the last handle of the cache (a listener holding a
//! `Weak<Cache>`, the documented way to call back in). That drop cannot join its own thread; it
//! only signals the stop, and the `Inner` it would have freed stays alive through the sweep's
//! strong reference and is freed, on the janitor thread, when the sweep returns. (Before, the
//! thread swept through a raw pointer, and that drop freed the cache under the running sweep:
//! a use after free, found in review and kept as `tests/expiry.rs`,
//! `the_last_handle_may_drop_in_a_listener_on_the_janitor_thread`.)
//!
//! The period is wall time (a `Condvar` timeout); what counts as expired is decided by the
//! cache's clock, injected or not. Listener calls for what it removes run on the janitor thread;
//! a panicking listener is caught there (the panic hook reports it) and the janitor goes on.

use std::hash::{BuildHasher, Hash};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, PoisonError, Weak};
use std::time::Duration;

use crate::cache::Inner;
use crate::error::BuildError;
use crate::sync::os_thread;

pub(crate) struct Janitor {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<os_thread::JoinHandle<()>>,
}

impl Janitor {
    pub(crate) fn start<K, V, S>(
        inner: &Arc<Inner<K, V, S>>,
        every: Duration,
    ) -> Result<Self, BuildError>
    where
        K: Hash + Eq + Send + Sync + 'static,
        V: Send + Sync + 'static,
        S: BuildHasher + Send + Sync + 'static,
    {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let inner: Weak<Inner<K, V, S>> = Arc::downgrade(inner);
        let signal = stop.clone();
        let thread = os_thread::Builder::new()
            .name("clockline-janitor".into())
            .spawn(move || {
                let (lock, cv) = &*signal;
                let mut stopped = lock.lock().unwrap_or_else(PoisonError::into_inner);
                // The flag is checked before every wait: `stop` may have run before this
                // thread first took the lock, and its notification is then long gone.
                while !*stopped {
                    let (s, timeout) = cv
                        .wait_timeout(stopped, every)
                        .unwrap_or_else(PoisonError::into_inner);
                    stopped = s;
                    if *stopped || !timeout.timed_out() {
                        continue;
                    }
                    drop(stopped);
                    // Gone only if the cache was dropped on this thread (see the module docs),
                    // which also set the flag.
                    let Some(inner) = inner.upgrade() else {
                        return;
                    };
                    let _ = catch_unwind(AssertUnwindSafe(|| inner.purge_expired()));
                    // The last reference if the sweep's listener dropped the cache: the cache
                    // is freed here, after the sweep, with no lock of ours held. A value's
                    // panicking `Drop` then is reported by the hook and caught, as a listener's.
                    let _ = catch_unwind(AssertUnwindSafe(|| drop(inner)));
                    stopped = lock.lock().unwrap_or_else(PoisonError::into_inner);
                }
            })
            .map_err(|e| BuildError::JanitorSpawn(e.to_string()))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Tells the thread to stop and waits for it (at most one sweep), unless this is the
    /// janitor thread itself: see the module docs.
    pub(crate) fn stop(mut self) {
        let (lock, cv) = &*self.stop;
        *lock.lock().unwrap_or_else(PoisonError::into_inner) = true;
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            if t.thread().id() != os_thread::current().id() {
                let _ = t.join();
            }
        }
    }
}
