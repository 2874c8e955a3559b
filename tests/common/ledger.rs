//! Values for the drop-counting suites (`tests/miri.rs`, `tests/miri_features.rs`): each knows
//! its key and a count, checks them when read, and counts in its ledger every instance made
//! (clones too) and every drop.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// A value that knows its key and a count, and counts in its ledger every instance made
/// (clones too) and every drop.
#[derive(Debug)]
pub struct Val {
    pub key: u64,
    pub n: u64,
    text: String,
    ledger: Arc<Counts>,
}

#[derive(Debug, Default)]
pub struct Counts {
    made: AtomicUsize,
    dropped: AtomicUsize,
}

impl Val {
    pub fn check(&self, key: u64) {
        assert_eq!(self.key, key, "a value read under another key");
        assert_eq!(
            self.text,
            format!("value {key}/{}", self.n),
            "a torn or freed value"
        );
    }
}

impl Clone for Val {
    fn clone(&self) -> Self {
        Ledger(self.ledger.clone()).val_n(self.key, self.n)
    }
}

impl Drop for Val {
    fn drop(&mut self) {
        self.ledger.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

pub struct Ledger(Arc<Counts>);

impl Ledger {
    pub fn new() -> Self {
        Self(Arc::default())
    }

    pub fn val(&self, key: u64) -> Val {
        self.val_n(key, 0)
    }

    pub fn val_n(&self, key: u64, n: u64) -> Val {
        self.0.made.fetch_add(1, Ordering::Relaxed);
        Val {
            key,
            n,
            text: format!("value {key}/{n}"),
            ledger: self.0.clone(),
        }
    }

    /// After the cache is gone: every value made was dropped exactly once. (Other tests of
    /// the binary pin as they run, which holds reclamation back: flush until the counts
    /// meet, for a while.)
    pub fn settle(&self) {
        let made = self.0.made.load(Ordering::Relaxed);
        for _ in 0..5_000 {
            clockline::flush_deferred();
            if self.0.dropped.load(Ordering::Relaxed) >= made {
                break;
            }
            thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(
            self.0.dropped.load(Ordering::Relaxed),
            made,
            "values leaked or dropped twice"
        );
    }
}
