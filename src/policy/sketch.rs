//! A count-min sketch of 4-bit counters: how often each key hash was seen lately, including
//! keys that are no longer (or never were) in the cache. TinyLFU's frequency filter.
//!
//! The counters of one hash sit in one 64-byte block (eight words), one counter in each of
//! four pairs of words, so an increment or an estimate touches one cache line. The estimate
//! is the smallest of the four. Every `10 * capacity` counted events, every counter is
//! halved, so that old popularity fades (TinyLFU's *reset*).
//!
//! # Orderings
//!
//! Every access is Relaxed, and increments are a load and a store, not a read-modify-write:
//! two threads that raise the same word at once can lose one of the two increments, and a
//! reset that races with increments can lose them too. The sketch is an estimate that orders
//! nothing; a lost increment changes one admission decision at most, never memory safety.

use crate::sync::{AtomicU64, AtomicUsize, Ordering};
use crossbeam_utils::CachePadded;

/// Counters per block: 8 words of 16 nibbles.
const BLOCK_WORDS: usize = 8;
/// Each counter holds 0..=15.
const NIBBLE_MAX: u64 = 15;
/// Only one event in `SAMPLE` (by hash) is counted towards the reset period, so the shared
/// counter is written 16 times less often.
const SAMPLE: u64 = 16;
/// The smallest sketch, in counters: small caches get a wide sketch for next to no memory
/// (32 KiB), and a wide sketch is what keeps small caches' admission decisions clean of
/// collisions (docs/design.md, *Adaptive policy*).
#[cfg(not(clockline_loom))]
const MIN_COUNTERS: usize = 1 << 16;
#[cfg(clockline_loom)]
const MIN_COUNTERS: usize = 128;

/// One hash's counters: a cache line, aligned as one. A plain `Box<[AtomicU64]>` is only
/// 8-byte aligned (glibc puts a large allocation 16 bytes into its pages), so most blocks
/// straddled two lines: 1.97 D1 misses per increment on a cache-aside run (callgrind), against
/// one now.
#[repr(C, align(64))]
struct Block([AtomicU64; BLOCK_WORDS]);

pub(crate) struct Sketch {
    blocks: Box<[Block]>,
    /// Blocks, minus one: the block count is a power of two.
    block_mask: usize,
    /// Sampled events since the last reset.
    events: CachePadded<AtomicUsize>,
    /// Sampled events between resets.
    period: usize,
}

impl Sketch {
    /// A sketch for a cache of `capacity` entries: two counters per entry (one byte), at
    /// least [`MIN_COUNTERS`].
    pub(crate) fn new(capacity: usize) -> Self {
        let counters = capacity
            .saturating_mul(2)
            .max(MIN_COUNTERS)
            .next_power_of_two();
        let blocks = (counters / 16 / BLOCK_WORDS).max(1);
        Self {
            blocks: (0..blocks)
                .map(|_| Block(std::array::from_fn(|_| AtomicU64::new(0))))
                .collect(),
            block_mask: blocks - 1,
            events: CachePadded::new(AtomicUsize::new(0)),
            period: (capacity.saturating_mul(10) / SAMPLE as usize).max(1),
        }
    }

    /// The block of `hash`'s counters, and the mixed hash that places them in it.
    ///
    /// The block is looked up once per estimate or increment, and each row's word is then
    /// an index below 8 into it, which needs no bounds check: looking the block up per row
    /// cost an evicting insert about 40 instructions (callgrind).
    #[inline(always)]
    fn block(&self, hash: u64) -> (&[AtomicU64; BLOCK_WORDS], u64) {
        // A second mix, so the sketch's bits do not repeat the table's (home: high bits; tag:
        // low bits).
        let h = hash.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17);
        (&self.blocks[(h >> 32) as usize & self.block_mask].0, h)
    }

    /// The word and nibble shift of counter `row` (0..4) in the block of mixed hash `h`.
    #[inline(always)]
    fn cell(block: &[AtomicU64; BLOCK_WORDS], h: u64, row: u32) -> (&AtomicU64, u32) {
        let bits = (h >> (row * 8)) as u32;
        let word = 2 * row as usize + (bits & 1) as usize;
        (&block[word], ((bits >> 1) & 15) * 4)
    }

    /// The estimated number of recent events for `hash` (0..=15).
    ///
    /// A plain loop: as an iterator chain (`map`, `min`) LLVM stopped unrolling it once the
    /// node allocation changed what got inlined around it: 148 more instructions per evicting
    /// insert (callgrind, 2^16 entries).
    #[inline]
    pub(crate) fn frequency(&self, hash: u64) -> u64 {
        let (block, h) = self.block(hash);
        let mut least = NIBBLE_MAX;
        for row in 0..4 {
            let (w, shift) = Self::cell(block, h, row);
            // Relaxed: see `# Orderings`.
            least = least.min((w.load(Ordering::Relaxed) >> shift) & NIBBLE_MAX);
        }
        least
    }

    /// Counts one event for `hash`.
    pub(crate) fn increment(&self, hash: u64) {
        let (block, h) = self.block(hash);
        for row in 0..4 {
            let (w, shift) = Self::cell(block, h, row);
            // Relaxed, and not a read-modify-write: see `# Orderings`.
            let word = w.load(Ordering::Relaxed);
            if (word >> shift) & NIBBLE_MAX < NIBBLE_MAX {
                w.store(word + (1 << shift), Ordering::Relaxed);
            }
        }
        if hash % SAMPLE == 0 {
            // Relaxed: a period counter; the thread whose event completes the period halves.
            if self.events.fetch_add(1, Ordering::Relaxed) + 1 == self.period {
                self.reset();
            }
        }
    }

    /// Halves every counter and starts the next period.
    #[cold]
    fn reset(&self) {
        const HALF: u64 = 0x7777_7777_7777_7777;
        for w in self.blocks.iter().flat_map(|b| &b.0) {
            // Relaxed: see `# Orderings`.
            w.store((w.load(Ordering::Relaxed) >> 1) & HALF, Ordering::Relaxed);
        }
        // Relaxed: as in `increment`. Half a period's events stay counted, as in TinyLFU.
        self.events
            .fetch_sub(self.period - self.period / 2, Ordering::Relaxed);
    }

    /// Heap bytes, for the memory accounting in docs.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.blocks.len() * std::mem::size_of::<Block>()
    }
}

#[cfg(all(test, not(clockline_loom)))]
mod tests {
    use super::*;

    /// Every counter of one hash is in one cache line: the blocks start on line boundaries
    /// (an 8-byte-aligned allocation put most blocks across two lines).
    #[test]
    fn a_hashs_counters_share_one_cache_line() {
        let s = Sketch::new(1 << 20);
        assert!(s
            .blocks
            .iter()
            .all(|b| (b as *const Block as usize) % 64 == 0));
        for h in (0..1000u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15)) {
            let (block, mixed) = s.block(h);
            let lines: Vec<usize> = (0..4)
                .map(|row| Sketch::cell(block, mixed, row).0 as *const AtomicU64 as usize / 64)
                .collect();
            assert!(
                lines.iter().all(|&l| l == lines[0]),
                "hash {h:#x}: lines {lines:?}"
            );
        }
    }

    #[test]
    fn counts_saturate_and_reset_halves() {
        let s = Sketch::new(100);
        let h = 0x1234_5678_9abc_def0;
        assert_eq!(s.frequency(h), 0);
        for _ in 0..20 {
            s.increment(h);
        }
        assert_eq!(s.frequency(h), 15);
        s.reset();
        assert_eq!(s.frequency(h), 7);
    }

    #[test]
    fn a_period_of_events_triggers_the_reset() {
        let s = Sketch::new(64);
        let hot = 7 * SAMPLE + 3;
        for _ in 0..3 {
            s.increment(hot);
        }
        assert_eq!(s.frequency(hot), 3);
        // Sampled events (multiples of SAMPLE) of other hashes, one period's worth.
        let mut k = 1;
        while s.events.load(Ordering::Relaxed) + 1 < s.period {
            s.increment(k * SAMPLE);
            k += 1;
        }
        s.increment(k * SAMPLE);
        assert!(s.frequency(hot) <= 1, "halved (collisions aside)");
    }

    #[test]
    fn one_byte_per_entry_when_large() {
        assert_eq!(Sketch::new(1 << 20).bytes(), 1 << 20);
        assert_eq!(Sketch::new(10).bytes(), MIN_COUNTERS / 2);
    }
}
