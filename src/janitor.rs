//! The optional janitor: a thread that purges expired entries periodically (go-cache's model),
//! switched on with [`Builder::janitor`](crate::Builder::janitor).
//!
//! It sweeps the cache's boxed `Inner` through a raw pointer. That is sound because `Cache`'s
//! `Drop` stops and joins the thread before the box is freed, and the box never moves. The
//! period is wall time (a `Condvar` timeout); what counts as expired is decided by the cache's
//! clock, injected or not. Listener calls for what it removes run on the janitor thread; a
//! panicking listener is caught there (the panic hook reports it) and the janitor goes on.

use std::hash::{BuildHasher, Hash};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use crate::cache::Inner;
use crate::error::BuildError;
use crate::sync::os_thread;

pub(crate) struct Janitor {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<os_thread::JoinHandle<()>>,
}

/// The cache's address, for the janitor thread.
struct InnerPtr<T>(*const T);
// SAFETY: the janitor only makes shared references from it, and `Inner` is `Sync` whenever the
// cache is (checked by the bounds of `start`); `Cache::drop` joins the thread before freeing.
unsafe impl<T: Sync> Send for InnerPtr<T> {}

impl Janitor {
    pub(crate) fn start<K, V, S>(
        inner: &Inner<K, V, S>,
        every: Duration,
    ) -> Result<Self, BuildError>
    where
        K: Hash + Eq + Send + Sync + 'static,
        V: Send + Sync + 'static,
        S: BuildHasher + Send + Sync + 'static,
    {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let ptr = InnerPtr(inner as *const Inner<K, V, S>);
        let signal = stop.clone();
        let thread = os_thread::Builder::new()
            .name("clockline-janitor".into())
            .spawn(move || {
                let ptr = ptr;
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
                    // SAFETY: see `InnerPtr`: the cache outlives this thread.
                    let inner = unsafe { &*ptr.0 };
                    let _ = catch_unwind(AssertUnwindSafe(|| inner.purge_expired()));
                    stopped = lock.lock().unwrap_or_else(PoisonError::into_inner);
                }
            })
            .map_err(|e| BuildError::JanitorSpawn(e.to_string()))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Tells the thread to stop and waits for it (at most one sweep).
    pub(crate) fn stop(mut self) {
        let (lock, cv) = &*self.stop;
        *lock.lock().unwrap_or_else(PoisonError::into_inner) = true;
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
