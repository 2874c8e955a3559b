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
//!   bits 56..63  overflow count: keys whose home is this bucket or an earlier one that live
//!                in a later bucket (saturates, then stays, at 127)
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
const OVF_SHIFT: u32 = 56;
const OVF_MAX: u64 = 0x7f;
const OVF_MASK: u64 = OVF_MAX << OVF_SHIFT;

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
            ctrl: AtomicU64::new(0).into(),
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
#[inline(always)]
pub(crate) fn match_free(ctrl: u64) -> u64 {
    let mut m = 0;
    for i in 0..SLOTS {
        if (ctrl >> (8 * i)) as u8 == 0 {
            m |= 0x80 << (8 * i);
        }
    }
    m
}

/// Slot index of the lowest byte set in a mask from `match_tag`/`match_free`.
#[inline(always)]
pub(crate) fn lowest(mask: u64) -> usize {
    (mask.trailing_zeros() / 8) as usize
}

#[inline(always)]
pub(crate) fn overflow(ctrl: u64) -> u64 {
    (ctrl & OVF_MASK) >> OVF_SHIFT
}

impl<K, V> Bucket<K, V> {
    /// Records that one more key passed this bucket on its probe. Saturates at `OVF_MAX` and
    /// then stays there for good: a count that is too high only makes lookups probe further.
    pub(crate) fn overflow_inc(&self) {
        // Relaxed loads and AcqRel CAS: the count is ordered with the slot publish that follows
        // by that publish's Release store (see the table's `# Orderings`).
        let mut cur = self.ctrl.load(Ordering::Relaxed);
        loop {
            if overflow(cur) == OVF_MAX {
                return;
            }
            let new = cur + (1 << OVF_SHIFT);
            match self
                .ctrl
                .compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Undoes one `overflow_inc` once the displaced key is gone. A saturated count stays.
    pub(crate) fn overflow_dec(&self) {
        let mut cur = self.ctrl.load(Ordering::Relaxed);
        loop {
            let n = overflow(cur);
            debug_assert!(n > 0, "overflow count underflow");
            if n == OVF_MAX || n == 0 {
                return;
            }
            let new = cur - (1 << OVF_SHIFT);
            match self
                .ctrl
                .compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
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
            // AcqRel: the claim makes this thread the slot's only writer until it clears the
            // tag; Acquire orders it after the Release that cleared the tag, so the slot pointer
            // is already null when we see the byte free.
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
        self.ctrl.fetch_and(!(0xffu64 << (8 * i)), Ordering::Release);
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
                let mut ctrl = LOCK | (5 << OVF_SHIFT);
                for i in 0..SLOTS {
                    let t = if pattern >> i & 1 == 1 { tag } else { tag ^ 0x01 };
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

    #[test]
    fn claim_release_and_overflow() {
        let b = Bucket::<u64, u64>::new();
        let mut got = vec![];
        while let Some(i) = b.claim(0x9a) {
            got.push(i);
        }
        assert_eq!(got, (0..SLOTS).collect::<Vec<_>>());
        b.release(3 % SLOTS);
        assert_eq!(b.claim(0x9b), Some(3 % SLOTS));
        for _ in 0..200 {
            b.overflow_inc();
        }
        assert_eq!(overflow(b.ctrl.load(Ordering::Relaxed)), OVF_MAX);
        b.overflow_dec();
        assert_eq!(overflow(b.ctrl.load(Ordering::Relaxed)), OVF_MAX, "saturated count stays");
        let b = Bucket::<u64, u64>::new();
        b.overflow_inc();
        b.overflow_inc();
        b.overflow_dec();
        assert_eq!(overflow(b.ctrl.load(Ordering::Relaxed)), 1);
        {
            let _g = b.lock(|| false).unwrap();
            assert_ne!(b.ctrl.load(Ordering::Relaxed) & LOCK, 0);
        }
        assert_eq!(b.ctrl.load(Ordering::Relaxed) & LOCK, 0);
    }
}
