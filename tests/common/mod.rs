//! Helpers shared by the feature suites (`mod common;` in each; each uses part of it).
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
