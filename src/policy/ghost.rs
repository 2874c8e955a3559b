//! The ghost: fingerprints of recently evicted keys, with where they were evicted from and
//! when. No keys, no values: two bytes per record.
//!
//! A record is 16 bits: the region (window or main), a 7-bit fingerprint of the key's hash,
//! and an 8-bit coarse timestamp (that region's eviction count divided by a power of two
//! chosen so that 256 ticks span about four times the cache's capacity). Records live in a
//! direct-mapped array indexed by hash, so a new record overwrites whatever shared its index:
//! the ghost forgets, it never grows. A lookup that finds a matching fingerprint answers how
//! many evictions ago (to within a tick) the key left, and from which region; it then clears
//! the record, so one eviction is counted once. A false match (1 in 128 when the index is
//! shared) only nudges the window's size by one step.
//!
//! # Orderings
//!
//! Relaxed throughout: records are hints that decide one step of the window's size. A lookup
//! and a record racing on one index leave either record; both are valid outcomes.

use crate::sync::{AtomicU16, AtomicUsize, Ordering};
use crossbeam_utils::CachePadded;

#[cfg(not(clockline_loom))]
const MIN_RECORDS: usize = 4096;
#[cfg(clockline_loom)]
const MIN_RECORDS: usize = 4;

/// Where an evicted key was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Region {
    Window,
    Main,
}

pub(crate) struct Ghost {
    records: Box<[AtomicU16]>,
    /// Evictions from the window and from main, each a clock for its region's records.
    clocks: [CachePadded<AtomicUsize>; 2],
    /// Ticks are evictions `>> tick_shift`.
    tick_shift: u32,
    /// The clocks' name for `sync::claim` (lanes 1 and 2, by region).
    id: usize,
}

impl Ghost {
    /// A ghost for a cache of `capacity` entries: a record per four entries (half a byte per
    /// entry), at least [`MIN_RECORDS`].
    pub(crate) fn new(capacity: usize) -> Self {
        let n = (capacity / 4).max(MIN_RECORDS);
        Self {
            records: (0..n).map(|_| AtomicU16::new(0)).collect(),
            clocks: [
                CachePadded::new(AtomicUsize::new(0)),
                CachePadded::new(AtomicUsize::new(0)),
            ],
            tick_shift: (capacity / 64).max(1).ilog2(),
            id: crate::sync::claim_id(),
        }
    }

    /// Positions per `sync::claim` run: [`RUN`](crate::sync::RUN) where a tick is at least
    /// 256 evictions (caches of 16,384 entries and more), so that 16 threads' runs stay within
    /// a tick of each other; 1 (a plain `fetch_add`) below, where runs would make ages noise.
    fn run(&self) -> usize {
        if self.tick_shift >= 8 {
            crate::sync::RUN
        } else {
            1
        }
    }

    /// A multiply-shift range reduction of 48 hash bits (the low 16 feed the fingerprint).
    fn index(&self, hash: u64) -> usize {
        (((hash >> 16) as u128 * self.records.len() as u128) >> 48) as usize
    }

    /// Seven bits of the hash, never 0, so an empty record (0) matches nothing.
    fn fingerprint(hash: u64) -> u16 {
        ((hash >> 8) as u16 & 0x7f).max(1)
    }

    /// Remembers that the key with `hash` was just evicted from `region`.
    pub(crate) fn record(&self, hash: u64, region: Region) {
        let r = region as usize;
        // In large caches claimed 16 at a time per thread (`sync::claim`, Relaxed inside):
        // the clock was one more shared line written by every eviction (docs/benchmarks.md
        // section 3.0). With one thread the ticks are what they were (`take` reads this
        // thread's position).
        // A thread that took a run and then stopped evicting stamps its next records (at most
        // a run's worth) with an older tick: those keys look evicted longer ago than they
        // were, which at worst withholds one adaptation step, as a false match may add one.
        let now = crate::sync::claim(&self.clocks[r], self.id, 1 + r, self.run()) + 1;
        let tick = (now >> self.tick_shift) as u16 & 0xff;
        let word = ((r as u16) << 15) | (Self::fingerprint(hash) << 8) | tick;
        self.records[self.index(hash)].store(word, Ordering::Relaxed);
    }

    /// If the key with `hash` was evicted recently, forgets it and says from where and about
    /// how many of that region's evictions ago.
    pub(crate) fn take(&self, hash: u64) -> Option<(Region, usize)> {
        let slot = &self.records[self.index(hash)];
        // Relaxed: see `# Orderings`.
        let word = slot.load(Ordering::Relaxed);
        if (word >> 8) & 0x7f != Self::fingerprint(hash) {
            return None;
        }
        slot.store(0, Ordering::Relaxed);
        let (region, r) = if word >> 15 == 1 {
            (Region::Main, 1)
        } else {
            (Region::Window, 0)
        };
        // This thread's position on the region's clock (see `record`): with one thread, the
        // ticks are exact. A run this thread took long ago and has not finished (it stopped
        // evicting while others went on) is not a clock: then the shared count, which no
        // record is ahead of by more than the runs held (a tick, see `run`), is. Relaxed: a
        // hint, as everything here.
        let at = crate::sync::claimed_near(&self.clocks[r], self.id, 1 + r);
        let now = (at >> self.tick_shift) as u16 & 0xff;
        let ticks = now.wrapping_sub(word & 0xff) & 0xff;
        Some((region, (ticks as usize) << self.tick_shift))
    }
}

#[cfg(all(test, not(clockline_loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_found_once_with_its_region_and_age() {
        let g = Ghost::new(64 * 1024);
        let h = 0xdead_beef_0000_1234u64;
        assert_eq!(g.take(h), None);
        g.record(h, Region::Main);
        // Another key, at another index, evicted 5000 times: only the clock moves for `h`.
        for _ in 0..5000 {
            g.record(h ^ (1 << 63), Region::Main);
        }
        let (region, age) = g.take(h).expect("recorded");
        assert_eq!(region, Region::Main);
        // Ticks of 1024 evictions: 5000 evictions ago reads as 4096 or 5120.
        assert!((4096..=5120).contains(&age), "age {age}");
        assert_eq!(g.take(h), None, "a record answers once");
        g.record(h, Region::Window);
        assert_eq!(g.take(h).map(|r| r.0), Some(Region::Window));
    }
}
