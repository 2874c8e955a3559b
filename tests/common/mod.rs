//! Helpers shared by the feature suites (`mod common;` in each; each uses part of it).
#![allow(dead_code)]

pub mod ledger;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// How long any one watched test may run before the watchdog calls it hung.
pub const WATCHDOG: Duration = Duration::from_secs(10);

/// Runs `f` on its own thread and fails the test if it has not returned within [`WATCHDOG`]
/// (a waiter that is never woken, or a fake clock that sleeps for real, would otherwise hang
/// the suite). A panic in `f` is re-raised.
pub fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, finished) = mpsc::channel();
    let body = thread::spawn(move || {
        let r = f();
        let _ = done.send(());
        r
    });
    match finished.recv_timeout(WATCHDOG) {
        Ok(()) | Err(RecvTimeoutError::Disconnected) => {
            body.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
        }
        Err(RecvTimeoutError::Timeout) => {
            panic!("{what}: still running after {WATCHDOG:?}; some caller waits forever")
        }
    }
}

/// Polls `cond` (every millisecond) until it holds or `limit` has passed; returns whether it
/// holds.
pub fn wait_until(limit: Duration, cond: impl Fn() -> bool) -> bool {
    let end = Instant::now() + limit;
    while !cond() {
        if Instant::now() >= end {
            return false;
        }
        thread::sleep(Duration::from_millis(1));
    }
    true
}

/// A clock the test moves by hand; `sleep` advances it instead of waiting.
#[derive(Default, Debug)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn new() -> Arc<Self> {
        // Start away from zero so "deadline 0" bugs would show.
        Arc::new(Self(AtomicU64::new(1_000_000_000)))
    }

    pub fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_nanos() as u64, Ordering::SeqCst);
    }

    pub fn set_nanos(&self, n: u64) {
        self.0.store(n, Ordering::SeqCst);
    }
}

impl clockline::Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::SeqCst))
    }

    fn sleep(&self, d: Duration) {
        self.advance(d);
    }
}
