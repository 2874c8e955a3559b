//! An entry: key, value, one metadata word and the feature words the cache was built with, in
//! one heap allocation reclaimed by epoch.
//!
//! ```text
//! Node<u64, u64> (24 bytes, plus 8 per extension word):
//!   meta: AtomicU64   bit 0       CLOCK reference bit (set by reads, cleared by the hand)
//!                     bit 1       PACKED: bits 18..64 hold the expiry deadline, not a weight
//!                     bits 2..8   distance: buckets between the home bucket and this node's
//!                                 bucket (below `NEIGHBOURHOOD`)
//!                     bit 8       WINDOW: the adaptive policy's probationary window holds it
//!                     bits 9..11  frequency: the adaptive policy's saturating counter (0..=1),
//!                                 raised by the hand when it finds the reference bit set
//!                     bits 11..16 ring: which of the window's queues holds it (see
//!                                 `crate::policy`), fixed while it is published
//!                     bits 16..18 number of extension words after the node (0..=3)
//!                     bits 18..64 weight (at most MAX_WEIGHT), or, in a cache without a
//!                                 weigher (every weight 0), the expiry deadline in whole
//!                                 milliseconds of the cache's clock (all ones: never), so
//!                                 that expiry costs such a cache no extra word
//!   kv:   (K, V)      immutable after publication; replaced as a whole by a new node
//!   ext:  [u64; n]    only as many words as the cache's features need: expiry deadline,
//!                     idle deadline, version (see `ExtLayout`); none for a plain cache
//! ```
//!
//! Pay for what you use: the extension words are allocated after the node (one allocation, a
//! layout computed from `n`), so a cache built without expiry or versions carries none.

use std::alloc::{self, Layout};
use std::ptr::NonNull;

use super::pool;
use crate::sync::{AtomicU64, ExtWord, Ordering, UnsafeCell};

/// The CLOCK reference bit.
pub(crate) const REF: u64 = 1;
const PACKED: u64 = 2;
const DIST_SHIFT: u32 = 2;
const DIST_MAX: u64 = 0x3f;
/// The node is in the adaptive policy's window (see `crate::policy`).
pub(crate) const WINDOW: u64 = 1 << 8;
/// The window's queue a window node is in (see `crate::policy`): set before publication,
/// never changed after.
const RING_SHIFT: u32 = 11;
/// The most queues the window has: 32.
pub(crate) const RINGS_MAX: usize = 32;
const RING_MASK: u64 = (RINGS_MAX as u64 - 1) << RING_SHIFT;
const FREQ_SHIFT: u32 = 9;

/// The bits that put a new node in the window, queued in ring `ring` (below [`RINGS_MAX`]),
/// for [`NodeBox::place`].
pub(crate) fn window_bits(ring: usize) -> u64 {
    debug_assert!(ring < RINGS_MAX);
    WINDOW | ((ring as u64) << RING_SHIFT)
}
const FREQ_MASK: u64 = 3 << FREQ_SHIFT;
/// The most the frequency counter counts to. 2 gave the same hit ratios (within 1 point on
/// every trace but two) and made the hand pass twice as many nodes per eviction: cache-aside
/// throughput 0.44 to 0.57 of CLOCK's, against 0.64 to 0.78 with 1 (docs/design.md).
const FREQ_MAX: u64 = 1;
const EXT_SHIFT: u32 = 16;
const EXT_MAX: u64 = 3;
const WEIGHT_SHIFT: u32 = 18;
/// The largest weight one entry, and so the whole cache, can have: 2^46 - 1.
pub const MAX_WEIGHT: u64 = (1 << (64 - WEIGHT_SHIFT)) - 1;

#[repr(C)]
pub(crate) struct Node<K, V> {
    meta: AtomicU64,
    kv: UnsafeCell<(K, V)>,
}

/// An owned node that is not (or no longer) in any table: frees itself, extension words
/// included, on drop. `Owned<Node>` cannot be used: it would free with `Node`'s layout alone.
pub(crate) struct NodeBox<K, V> {
    ptr: NonNull<Node<K, V>>,
}

// SAFETY: a NodeBox owns its node exactly as a Box would.
unsafe impl<K: Send, V: Send> Send for NodeBox<K, V> {}

impl<K, V> NodeBox<K, V> {
    /// A new node with `ext` as its extension words (at most three). `packed`: an expiry
    /// deadline in milliseconds to keep in the weight bits (then `weight` must be 0).
    #[inline]
    pub(crate) fn new(key: K, value: V, weight: u64, ext: &[u64], packed: Option<u64>) -> Self {
        debug_assert!(weight <= MAX_WEIGHT);
        debug_assert!(packed.is_none() || weight == 0);
        let weight_bits = match packed {
            Some(ms) => (ms.min(MAX_WEIGHT) << WEIGHT_SHIFT) | PACKED,
            None => weight << WEIGHT_SHIFT,
        };
        assert!(ext.len() as u64 <= EXT_MAX);
        let layout = Node::<K, V>::layout(ext.len());
        // SAFETY: the layout has a non-zero size (the metadata word alone is 8 bytes).
        let raw = unsafe { pool::alloc(layout) } as *mut Node<K, V>;
        let Some(ptr) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout)
        };
        // Expose the allocation's provenance: `Node::ext` reaches the words after the node
        // from a `&Node`, whose provenance covers the node alone (see there).
        // (`raw.expose_provenance()` from Rust 1.84 on; the `as` cast does the same.)
        let _ = raw as usize;
        let meta = weight_bits | ((ext.len() as u64) << EXT_SHIFT);
        // SAFETY: `raw` is a fresh allocation of `layout`, which starts with a `Node` and
        // continues with `ext.len()` u64 words at `Node::ext_offset()`, both suitably aligned
        // (`Node` is at least 8-aligned, and its size is a multiple of its alignment).
        unsafe {
            raw.write(Node {
                meta: AtomicU64::new(meta),
                kv: UnsafeCell::new((key, value)),
            });
            let words = raw
                .cast::<u8>()
                .add(Node::<K, V>::ext_offset())
                .cast::<ExtWord>();
            for (i, w) in ext.iter().enumerate() {
                words.add(i).write(ExtWord::new(*w));
            }
        }
        Self { ptr }
    }

    /// Gives up ownership: the caller has published the node (or will free it with
    /// [`NodeBox::from_raw`]).
    pub(crate) fn into_raw(self) -> *mut Node<K, V> {
        let p = self.ptr.as_ptr();
        std::mem::forget(self);
        p
    }

    /// Takes back ownership of a node.
    ///
    /// # Safety
    /// `p` came from [`NodeBox::into_raw`] and nothing else owns or can reach it any more.
    pub(crate) unsafe fn from_raw(p: *mut Node<K, V>) -> Self {
        // SAFETY: non-null: it came from `into_raw`.
        Self {
            ptr: unsafe { NonNull::new_unchecked(p) },
        }
    }

    /// Takes the key and value out and frees the node.
    pub(crate) fn into_kv(self) -> (K, V) {
        let layout = Node::<K, V>::layout(self.ext_len());
        let raw = self.into_raw();
        // SAFETY: we own the node; the pair is read out exactly once and the allocation freed
        // without dropping it again (the metadata atomic needs no drop under std; under loom
        // the node is dropped in place minus the pair, see below).
        unsafe {
            let kv = std::ptr::addr_of!((*raw).kv).read().into_inner();
            std::ptr::drop_in_place(std::ptr::addr_of_mut!((*raw).meta));
            pool::dealloc(raw.cast(), layout);
            kv
        }
    }

    /// Records the probe distance of a node about to be published and gives it exactly
    /// `bits` of the reference and window bits (a node a failed replace handed back, already
    /// marked, starts as its new publication says), with a plain load and store where
    /// [`Node::set_dist`] and `Node::set_bits` would take an atomic read-modify-write each: a `NodeBox` is not yet
    /// published (`&mut self`: no other thread can reach the node, so no reader can set its
    /// reference bit in between), and the Release publish (or replace) that follows orders
    /// the store before any other thread's read. Saves one or two `lock`ed instructions per
    /// insert.
    #[inline(always)]
    pub(crate) fn place(&mut self, dist: usize, bits: u64) {
        debug_assert!(dist as u64 <= DIST_MAX);
        debug_assert_eq!(bits & !(REF | WINDOW | RING_MASK), 0);
        let d = dist as u64 & DIST_MAX;
        // Relaxed: private to this thread (see above).
        let cur = self.meta.load(Ordering::Relaxed);
        let new = (cur & !((DIST_MAX << DIST_SHIFT) | REF | WINDOW | RING_MASK))
            | (d << DIST_SHIFT)
            | bits;
        self.meta.store(new, Ordering::Relaxed);
    }

    /// Frees a node that has no drop glue (`!needs_drop::<Node<K, V>>()`, checked by the
    /// caller): only the allocation goes back, and nothing runs that could panic, so the
    /// reclamation closure needs no `catch_unwind` (see `table::retire`). Always inlined
    /// there: as a call, `NodeBox::drop` cost each retired node about 15 instructions of
    /// call and register saves (callgrind).
    #[inline(always)]
    pub(crate) fn free_plain(self) {
        debug_assert!(!std::mem::needs_drop::<Node<K, V>>());
        let layout = Node::<K, V>::layout(self.ext_len());
        let raw = self.into_raw();
        // SAFETY: allocated in `NodeBox::new` with this layout, and owned by `self`, so freed
        // once; nothing needs dropping first, as the node has no drop glue.
        unsafe { pool::dealloc(raw.cast(), layout) }
    }

    pub(crate) fn as_ptr(&self) -> *const Node<K, V> {
        self.ptr.as_ptr()
    }
}

impl<K, V> std::ops::Deref for NodeBox<K, V> {
    type Target = Node<K, V>;
    fn deref(&self) -> &Node<K, V> {
        // SAFETY: the box owns a live node.
        unsafe { self.ptr.as_ref() }
    }
}

impl<K, V> Drop for NodeBox<K, V> {
    fn drop(&mut self) {
        let layout = Node::<K, V>::layout(self.ext_len());
        let raw = self.ptr.as_ptr();
        // Frees the allocation even if dropping the key or value panics.
        struct Free(*mut u8, Layout);
        impl Drop for Free {
            #[inline(always)]
            fn drop(&mut self) {
                // SAFETY: allocated in `NodeBox::new` with this layout; freed once.
                unsafe { pool::dealloc(self.0, self.1) }
            }
        }
        let _free = Free(raw.cast(), layout);
        // SAFETY: the box owns the node; extension words need no drop (plain atomics).
        unsafe { std::ptr::drop_in_place(raw) };
    }
}

impl<K, V> Node<K, V> {
    fn ext_offset() -> usize {
        // `Node` is `repr(C)` with an 8-byte first field, so its size is a multiple of 8.
        std::mem::size_of::<Self>()
    }

    fn layout(ext: usize) -> Layout {
        let size = Self::ext_offset() + ext * std::mem::size_of::<ExtWord>();
        match Layout::from_size_align(size, std::mem::align_of::<Self>()) {
            Ok(l) => l,
            Err(_) => panic!("node layout overflow"),
        }
    }

    fn ext_len(&self) -> usize {
        // Relaxed: fixed at allocation.
        ((self.meta.load(Ordering::Relaxed) >> EXT_SHIFT) & EXT_MAX) as usize
    }

    /// Extension word `i` (below the count the node was built with).
    #[inline(always)]
    pub(crate) fn ext(&self, i: usize) -> &ExtWord {
        debug_assert!(i < self.ext_len());
        // The words lie outside the `Node` that `self` refers to, so a pointer derived from
        // `self` may not reach them (Stacked Borrows: the reference's tag covers
        // `size_of::<Node>()` bytes; Miri reports the access as undefined behaviour). The
        // address is turned back into a pointer with the provenance `NodeBox::new` exposed,
        // which covers the whole allocation.
        let addr =
            self as *const Self as usize + Self::ext_offset() + i * std::mem::size_of::<ExtWord>();
        // SAFETY: the node was allocated by `NodeBox::new` with at least `i + 1` words after
        // it (every node of a cache has the cache's layout), initialised there, and they live
        // as long as the node; `new` exposed the allocation's provenance.
        // (`std::ptr::with_exposed_provenance` from Rust 1.84 on; the `as` cast does the same.)
        unsafe { &*(addr as *const ExtWord) }
    }

    /// The key and value. Shared references are all anyone ever takes after publication.
    #[inline(always)]
    pub(crate) fn kv(&self) -> &(K, V) {
        // SAFETY: the pair is written once, in `new`, before the node is published with a
        // Release store; afterwards it is only read, until the node is reclaimed, which epoch
        // delays until no guard that could reach it is alive (the caller holds one).
        self.kv.with(|p| unsafe { &*p })
    }

    /// Reads the pair through loom's tracked cell (so a model sees the access) and maps it.
    #[inline(always)]
    pub(crate) fn read<R>(&self, f: impl FnOnce(&K, &V) -> R) -> R {
        // SAFETY: as in `kv`.
        self.kv.with(|p| unsafe { f(&(*p).0, &(*p).1) })
    }

    #[inline(always)]
    pub(crate) fn weight(&self) -> u64 {
        // Relaxed: the weight bits never change after `new`.
        let meta = self.meta.load(Ordering::Relaxed);
        if meta & PACKED != 0 {
            0
        } else {
            meta >> WEIGHT_SHIFT
        }
    }

    /// The expiry deadline kept in the weight bits, in milliseconds ([`MAX_WEIGHT`]: never).
    #[inline(always)]
    pub(crate) fn packed_deadline(&self) -> u64 {
        // Relaxed: fixed at `new`, before the Release publish.
        let meta = self.meta.load(Ordering::Relaxed);
        debug_assert!(meta & PACKED != 0);
        meta >> WEIGHT_SHIFT
    }

    /// Distance from the home bucket recorded at publication.
    #[inline(always)]
    pub(crate) fn dist(&self) -> usize {
        // Relaxed: written before the Release publish (or the grown table's), and read only by
        // writers, which are ordered after it.
        ((self.meta.load(Ordering::Relaxed) >> DIST_SHIFT) & DIST_MAX) as usize
    }

    /// Sets `bits` (the reference bit, [`WINDOW`]) of a node (tests; a node not yet published
    /// takes [`NodeBox::place`]).
    #[cfg(test)]
    pub(crate) fn set_bits(&self, bits: u64) {
        debug_assert_eq!(bits & !(REF | WINDOW), 0);
        // Relaxed: the node is still private to this thread; the publish is the Release.
        self.meta.fetch_or(bits, Ordering::Relaxed);
    }

    /// The window's queue this node was put in (meaningful while [`Self::in_window`]).
    #[inline]
    pub(crate) fn ring(&self) -> usize {
        // Relaxed: written before publication (the Release publish orders it), never after.
        ((self.meta.load(Ordering::Relaxed) & RING_MASK) >> RING_SHIFT) as usize
    }

    /// True while the adaptive policy's window holds the node.
    #[inline]
    pub(crate) fn in_window(&self) -> bool {
        // Relaxed: membership is a policy hint; the window's count is kept exact by
        // `take_window` alone.
        self.meta.load(Ordering::Relaxed) & WINDOW != 0
    }

    /// Takes the node out of the window: true for exactly one caller (a promotion, or the
    /// thread that unlinked the node), which then owns the decrement of the window's count.
    #[inline]
    pub(crate) fn take_window(&self) -> bool {
        // Relaxed: the RMW itself makes the decision exactly once; it publishes nothing.
        self.meta.load(Ordering::Relaxed) & WINDOW != 0
            && self.meta.fetch_and(!WINDOW, Ordering::Relaxed) & WINDOW != 0
    }

    /// The adaptive policy's frequency counter (0..=1).
    #[cfg(test)]
    pub(crate) fn freq(&self) -> u64 {
        // Relaxed: a hint read by the hand.
        (self.meta.load(Ordering::Relaxed) & FREQ_MASK) >> FREQ_SHIFT
    }

    /// Raises the frequency counter by one, up to its maximum.
    pub(crate) fn bump_freq(&self) {
        self.update_freq(|f| (f < FREQ_MAX).then(|| f + 1));
    }

    /// Lowers the frequency counter by one; false if it was already 0.
    pub(crate) fn drop_freq(&self) -> bool {
        self.update_freq(|f| f.checked_sub(1))
    }

    fn update_freq(&self, f: impl Fn(u64) -> Option<u64>) -> bool {
        // Relaxed: a hint; a CAS because readers set the reference bit in the same word and
        // two hands may pass the node at once.
        self.meta
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |m| {
                let next = f((m & FREQ_MASK) >> FREQ_SHIFT)?;
                Some((m & !FREQ_MASK) | (next << FREQ_SHIFT))
            })
            .is_ok()
    }

    /// Records the probe distance of a published node while a table grows (with every writer
    /// locked out, but readers may set the reference bit meanwhile). A node not yet published
    /// takes the cheaper [`NodeBox::place`].
    pub(crate) fn set_dist(&self, dist: usize) {
        debug_assert!(dist as u64 <= DIST_MAX);
        let d = dist as u64 & DIST_MAX;
        // Relaxed: the distance is read only by writers, which are ordered after this by the
        // Release publish of the node or of the grown table. A CAS, because a concurrent reader
        // may set the reference bit in the same word.
        let mut cur = self.meta.load(Ordering::Relaxed);
        loop {
            let new = (cur & !(DIST_MAX << DIST_SHIFT)) | (d << DIST_SHIFT);
            match self
                .meta
                .compare_exchange_weak(cur, new, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Marks the node as recently used. Writes only when the bit is clear, so a hot entry's
    /// line stays shared in every reader's cache.
    #[inline(always)]
    pub(crate) fn touch(&self) {
        // Relaxed: the bit is a hint for the hand and publishes no data.
        if self.meta.load(Ordering::Relaxed) & REF == 0 {
            self.meta.fetch_or(REF, Ordering::Relaxed);
        }
    }

    /// True if the reference bit is set.
    #[inline]
    pub(crate) fn is_marked(&self) -> bool {
        // Relaxed: a hint, as in `touch`.
        self.meta.load(Ordering::Relaxed) & REF != 0
    }

    /// The hand's test-and-clear: true if the node was referenced since the last pass.
    #[inline]
    pub(crate) fn take_ref(&self) -> bool {
        // Relaxed: a hint, as in `touch`; a race only costs one more round for this node.
        if self.meta.load(Ordering::Relaxed) & REF != 0 {
            self.meta.fetch_and(!REF, Ordering::Relaxed);
            true
        } else {
            false
        }
    }
}

#[cfg(all(test, not(clockline_loom)))]
mod tests {
    use super::*;

    #[test]
    fn node_u64_u64_is_24_bytes() {
        assert_eq!(std::mem::size_of::<Node<u64, u64>>(), 24);
        assert_eq!(Node::<u64, u64>::layout(0).size(), 24);
        assert_eq!(Node::<u64, u64>::layout(1).size(), 32);
    }

    #[test]
    fn ext_words_follow_the_node() {
        let n = NodeBox::new(1u8, 2u8, 5, &[7, 8, 9], None);
        assert_eq!(n.ext_len(), 3);
        assert_eq!(n.weight(), 5);
        for (i, want) in [7, 8, 9].into_iter().enumerate() {
            assert_eq!(n.ext(i).load(Ordering::Relaxed), want);
        }
        assert_eq!(n.kv(), &(1, 2));
    }

    #[test]
    fn a_packed_deadline_is_not_a_weight() {
        let n = NodeBox::new(1u64, 2u64, 0, &[], Some(12_345));
        n.set_dist(3);
        n.touch();
        assert_eq!((n.weight(), n.packed_deadline(), n.dist()), (0, 12_345, 3));
        assert!(n.take_ref());
        let never = NodeBox::new(1u64, 2u64, 0, &[], Some(u64::MAX));
        assert_eq!(never.packed_deadline(), MAX_WEIGHT);
    }

    #[test]
    fn meta_fields_do_not_overlap() {
        let n = NodeBox::new(1u64, 2u64, MAX_WEIGHT, &[0, 0, 0], None);
        n.set_dist(DIST_MAX as usize);
        assert!(!n.take_ref(), "new nodes start unreferenced");
        n.touch();
        n.set_bits(WINDOW);
        for _ in 0..=FREQ_MAX {
            n.bump_freq();
        }
        assert_eq!(n.freq(), FREQ_MAX, "the counter saturates");
        assert_eq!(n.weight(), MAX_WEIGHT);
        assert_eq!(n.dist(), DIST_MAX as usize);
        assert!(n.in_window());
        assert!(n.take_window());
        assert!(
            !n.take_window(),
            "only one caller takes a node out of the window"
        );
        for _ in 0..FREQ_MAX {
            assert!(n.drop_freq());
        }
        assert!(!n.drop_freq());
        assert_eq!(n.ext_len(), 3);
        assert!(n.take_ref());
        assert!(!n.take_ref());
        n.set_dist(3);
        assert_eq!(n.dist(), 3);
        assert_eq!(n.weight(), MAX_WEIGHT);
        assert_eq!(n.kv(), &(1, 2));
    }
}
