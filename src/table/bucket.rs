//! One bucket = one cache line: a control word and the slot pointers.
//!
//! ```text
//! byte  0        8        16       24       32       40       48       56      63
//!       +--------+--------+--------+--------+--------+--------+--------+--------+
//!       | ctrl   | slot 0 | slot 1 | slot 2 | slot 3 | slot 4 | slot 5 | slot 6 |
//!       +--------+--------+--------+--------+--------+--------+--------+--------+
//!
//! ctrl (one AtomicU64):
//!   bits  0..56  seven tag bytes; byte i is the tag of slot i, 0 when the slot is free
//!   bits 56..63  spill bits: bit d-1 set when a key whose home is this bucket may live in the
//!                bucket d places further on (d = 1..7, the rest of its neighbourhood)
//!   bit  63      writer lock for keys whose home bucket is this one
//! ```
//!
//! A tag is `0x80 | (hash & 0x7f)`: never zero, so a free slot never matches, and a lookup
//! compares the key of one node in about 128 non-matching occupied slots.

use crate::sync::{AtomicU64, Ordering};
use crossbeam_epoch::Atomic;

use super::node::Node;

/// Slots per bucket: seven 8-byte pointers after the 8-byte control word fill 64 bytes.
/// Under loom a bucket has two slots, so a model reaches a full table in a few steps.
#[cfg(not(clockline_loom))]
pub(crate) const SLOTS: usize = 7;
#[cfg(clockline_loom)]
pub(crate) const SLOTS: usize = 2;

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;
/// The tag bytes that belong to real slots.
const TAG_BYTES: u64 = (1u64 << (8 * SLOTS)) - 1;

pub(crate) const LOCK: u64 = 1 << 63;
const SPILL_SHIFT: u32 = 56;
const SPILL_MASK: u64 = 0x7f << SPILL_SHIFT;

/// A slot: one epoch pointer to a node.
#[cfg(not(clockline_padded_slots))]
pub(crate) type Slot<K, V> = Atomic<Node<K, V>>;
/// The rejected layout, kept buildable for the measurement in `docs/design.md`
/// (`--cfg clockline_padded_slots`): every slot and the control word on a line of its own.
#[cfg(clockline_padded_slots)]
pub(crate) type Slot<K, V> = crossbeam_utils::CachePadded<Atomic<Node<K, V>>>;
#[cfg(not(clockline_padded_slots))]
type Ctrl = AtomicU64;
#[cfg(clockline_padded_slots)]
type Ctrl = crossbeam_utils::CachePadded<AtomicU64>;

#[repr(C, align(64))]
pub(crate) struct Bucket<K, V> {
    pub(crate) ctrl: Ctrl,
    pub(crate) slots: [Slot<K, V>; SLOTS],
}

impl<K, V> Bucket<K, V> {
    pub(crate) fn new() -> Self {
        Self {
            #[allow(clippy::useless_conversion)] // a conversion only under the padded cfg
            ctrl: AtomicU64::new(0).into(),
            #[allow(clippy::useless_conversion)]
            slots: std::array::from_fn(|_| Atomic::null().into()),
        }
    }
}

/// The tag stored for `hash`.
#[inline(always)]
pub(crate) fn tag_of(hash: u64) -> u8 {
    0x80 | (hash as u8 & 0x7f)
}

/// A mask with the high bit set in every byte of `ctrl` whose tag may equal `tag`.
///
/// SWAR zero-byte search: exact for the lowest match, and a borrow can add a false match
/// above a true one. Callers confirm every match by comparing keys, so false matches cost
/// time, never correctness.
#[inline(always)]
pub(crate) fn match_tag(ctrl: u64, tag: u8) -> u64 {
    let x = (ctrl & TAG_BYTES) ^ (LO.wrapping_mul(tag as u64) & TAG_BYTES);
    x.wrapping_sub(LO) & !x & HI & TAG_BYTES
}

/// A mask with the high bit set in every byte of a free slot (tag 0).
///
/// Exact SWAR: `(b & 0x7f) + 0x7f` carries into the high bit of a byte iff its low seven bits
/// are not all zero, and never into the next byte; or-ing `b` adds its own high bit. A byte
/// loop cost an evicting insert about 70 instructions (callgrind: the hand and `claim` call it
/// once per bucket they look at).
#[inline(always)]
pub(crate) fn match_free(ctrl: u64) -> u64 {
    const LOW7: u64 = !HI;
    let nonzero = ((ctrl & LOW7) + LOW7) | ctrl;
    !nonzero & HI & TAG_BYTES
}

/// Slot index of the lowest byte set in a mask from `match_tag`/`match_free`.
#[inline(always)]
pub(crate) fn lowest(mask: u64) -> usize {
    (mask.trailing_zeros() / 8) as usize
}

/// The spill bits of a control word: bit `d - 1` set when a key homed in this bucket may live
/// `d` buckets further on.
#[inline(always)]
pub(crate) fn spill_mask(ctrl: u64) -> u64 {
    (ctrl & SPILL_MASK) >> SPILL_SHIFT
}

impl<K, V> Bucket<K, V> {
    /// Records that a key homed here was claimed a slot `d` buckets further on. Runs under this
    /// (home) bucket's lock, after the claim and before the publish.
    pub(crate) fn spill_set(&self, d: usize) {
        debug_assert!((1..=7).contains(&d));
        // Relaxed: readers treat the bit as a hint; the key's publish (Release) follows.
        self.ctrl
            .fetch_or(1 << (SPILL_SHIFT + d as u32 - 1), Ordering::Relaxed);
    }

    /// Clears spill bit `d`. Only under this (home) bucket's lock, which excludes every claim
    /// of a slot for a key of this home, after checking that no key of this home lives `d`
    /// buckets on.
    pub(crate) fn spill_clear(&self, d: usize) {
        // Relaxed: the lock orders this with the claims that set the bit.
        self.ctrl
            .fetch_and(!(1 << (SPILL_SHIFT + d as u32 - 1)), Ordering::Relaxed);
    }

    /// The tag bytes of the slots in use (claimed, published, or being unlinked).
    #[inline]
    pub(crate) fn used(&self) -> u64 {
        // Relaxed: the caller validates each slot through its pointer.
        let ctrl = self.ctrl.load(Ordering::Relaxed);
        !match_free(ctrl) & HI & TAG_BYTES
    }

    /// Claims a free slot for `tag`, or returns `None` when the bucket is full.
    pub(crate) fn claim(&self, tag: u8) -> Option<usize> {
        let mut cur = self.ctrl.load(Ordering::Relaxed);
        loop {
            let free = match_free(cur);
            if free == 0 {
                return None;
            }
            let i = lowest(free);
            let new = cur | (tag as u64) << (8 * i);
            // Acquire: the claim makes this thread the slot's only writer until it clears the
            // tag, and orders it after the Release that cleared the tag, so the slot pointer is
            // already null when we see the byte free (loom: with Release alone,
            // `evict_vs_insert_into_freed_slot` fails). The Release half is not needed
            // by anyone (the node is published by the slot's own Release store, the claimant's
            // section by its unlock; every write of this word is an RMW, so release sequences
            // survive it; with Acquire alone every model passes, loom-tests/README.md); it is
            // kept as AcqRel because an x86 `lock cmpxchg` costs the same either way.
            match self
                .ctrl
                .compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Some(i),
                Err(actual) => cur = actual,
            }
        }
    }

    /// Frees slot `i` after its pointer was set to null by the thread that owns it.
    pub(crate) fn release(&self, i: usize) {
        // Release: pairs with the Acquire in `claim`, so the next claimant sees the null
        // pointer this thread stored before. Only the owner touches this byte, so a single
        // `fetch_and` is exact.
        self.ctrl
            .fetch_and(!(0xffu64 << (8 * i)), Ordering::Release);
    }

    /// Takes the writer lock of this bucket, or gives up and returns `None` as soon as
    /// `abandon()` is true while waiting (the table was replaced by a grown one, whose grower
    /// keeps every lock of the old table for good). Readers never look at the bit.
    pub(crate) fn lock(&self, abandon: impl Fn() -> bool) -> Option<LockGuard<'_, K, V>> {
        let mut step = 0;
        loop {
            // Acquire: pairs with the Release in `LockGuard::drop`, so this critical section
            // sees everything the previous one did.
            let cur = self.ctrl.fetch_or(LOCK, Ordering::Acquire);
            if cur & LOCK == 0 {
                return Some(LockGuard { bucket: self });
            }
            while self.ctrl.load(Ordering::Relaxed) & LOCK != 0 {
                if abandon() {
                    return None;
                }
                crate::sync::spin_wait(step);
                step = step.saturating_add(1);
            }
        }
    }
}

impl<K, V> Bucket<K, V> {
    /// Takes the writer lock if it is free, without waiting.
    pub(crate) fn try_lock(&self) -> Option<LockGuard<'_, K, V>> {
        // Acquire: as in `lock`.
        let cur = self.ctrl.fetch_or(LOCK, Ordering::Acquire);
        // Not `bool::then_some(LockGuard { .. })`: its argument is built either way, and
        // dropping the unused guard would unlock the lock's holder.
        if cur & LOCK == 0 {
            Some(LockGuard { bucket: self })
        } else {
            None
        }
    }
}

/// Releases the bucket's writer lock when dropped, also while unwinding from a panic in user
/// code (`Eq`, `Hash`) inside the critical section.
pub(crate) struct LockGuard<'a, K, V> {
    bucket: &'a Bucket<K, V>,
}

impl<K, V> Drop for LockGuard<'_, K, V> {
    fn drop(&mut self) {
        // Release: publishes the critical section to the next holder (see `lock`).
        self.bucket.ctrl.fetch_and(!LOCK, Ordering::Release);
    }
}

impl<K, V> LockGuard<'_, K, V> {
    /// Keeps the bucket locked for good: used by a grower on the table it retires.
    pub(crate) fn leak(self) {
        std::mem::forget(self);
    }
}

#[cfg(all(test, not(clockline_loom)))]
mod tests {
    use super::*;

    #[test]
    #[cfg(not(clockline_padded_slots))]
    fn bucket_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Bucket<u64, u64>>(), 64);
        assert_eq!(std::mem::align_of::<Bucket<u64, u64>>(), 64);
    }

    #[test]
    fn match_tag_finds_every_true_match() {
        for tag in [0x80u8, 0x81, 0xff, 0xa5] {
            for pattern in 0u32..(1 << SLOTS) {
                let mut ctrl = LOCK | (5 << SPILL_SHIFT);
                for i in 0..SLOTS {
                    let t = if pattern >> i & 1 == 1 {
                        tag
                    } else {
                        tag ^ 0x01
                    };
                    ctrl |= (t as u64) << (8 * i);
                }
                let m = match_tag(ctrl, tag);
                for i in 0..SLOTS {
                    if pattern >> i & 1 == 1 {
                        assert_ne!(m & (0x80 << (8 * i)), 0, "missed slot {i}");
                    }
                }
                assert_eq!(m & !TAG_BYTES, 0, "matched the control byte");
            }
        }
    }

    #[test]
    fn tags_are_never_zero() {
        for h in 0..=255u64 {
            assert_ne!(tag_of(h), 0);
        }
    }

    /// The SWAR `match_free` against a byte loop, on every single-byte pattern and on
    /// pseudo-random words (including spill and lock bits above the slots).
    #[test]
    fn match_free_is_exact() {
        let naive = |ctrl: u64| {
            (0..SLOTS)
                .filter(|i| (ctrl >> (8 * i)) as u8 == 0)
                .fold(0u64, |m, i| m | 0x80 << (8 * i))
        };
        let mut words: Vec<u64> = (0..SLOTS)
            .flat_map(|i| (0..=255u64).map(move |b| b << (8 * i)))
            .collect();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Zero some bytes, keep others: free and used slots side by side.
            words.push(x & (x >> 3).wrapping_mul(0xff));
            words.push(x);
        }
        words.extend([
            0,
            u64::MAX,
            LOCK,
            SPILL_MASK,
            0x8080_8080_8080_8080,
            0x0101_0101_0101_0101,
        ]);
        for w in words {
            assert_eq!(match_free(w), naive(w), "ctrl {w:#018x}");
        }
    }

    #[test]
    fn claim_release_and_spill_bits() {
        let b = Bucket::<u64, u64>::new();
        let mut got = vec![];
        while let Some(i) = b.claim(0x9a) {
            got.push(i);
        }
        assert_eq!(got, (0..SLOTS).collect::<Vec<_>>());
        b.release(3 % SLOTS);
        assert_eq!(b.claim(0x9b), Some(3 % SLOTS));
        b.spill_set(1);
        b.spill_set(7);
        assert_eq!(spill_mask(b.ctrl.load(Ordering::Relaxed)), 0b100_0001);
        b.spill_clear(7);
        assert_eq!(spill_mask(b.ctrl.load(Ordering::Relaxed)), 0b000_0001);
        {
            let _g = b.try_lock().unwrap();
            assert!(b.try_lock().is_none());
        }
        assert!(b.try_lock().is_some());
        assert_eq!(b.claim(0x9c), None, "spill bits do not free a slot");
        assert_eq!(b.used().count_ones() as usize, SLOTS);
        {
            let _g = b.lock(|| false).unwrap();
            assert_ne!(b.ctrl.load(Ordering::Relaxed) & LOCK, 0);
        }
        assert_eq!(b.ctrl.load(Ordering::Relaxed) & LOCK, 0);
    }

    /// A try-lock that finds the lock taken must leave it with its holder. (It once built its
    /// guard before testing the bit, and dropping the unused guard unlocked the holder's lock:
    /// two inserts of one key then ran at once and left two entries.)
    #[test]
    fn a_failed_try_lock_leaves_the_holders_lock() {
        let b = Bucket::<u64, u64>::new();
        let held = b.lock(|| false).unwrap();
        for _ in 0..2 {
            assert!(b.try_lock().is_none());
            assert_ne!(b.ctrl.load(Ordering::Relaxed) & LOCK, 0, "still locked");
        }
        assert!(b.lock(|| true).is_none(), "a waiter still waits");
        drop(held);
        assert_eq!(b.ctrl.load(Ordering::Relaxed) & LOCK, 0);
        assert!(b.try_lock().is_some());
    }
}
