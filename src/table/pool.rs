//! A small per-thread cache of freed node allocations, so that an insert usually reuses the
//! memory of a node that the epoch collector freed a moment ago instead of going to the
//! global allocator.
//!
//! Why: every insert allocates a node and every replace or eviction frees one, but not at the
//! same time. The collector frees retired nodes in batches (a bag of 64 at a time, up to eight
//! bags per collection), which overflows glibc's per-thread cache of 7 chunks per size, so the
//! frees go to the shared bins; the collector's own 2 KiB queue nodes then trigger glibc's
//! consolidation of those bins, and the next mallocs take the slow path. In callgrind that was
//! a third of a replace (docs/benchmarks.md section 10(b)). Here a freed node goes onto a
//! free list of the thread that frees it, and the next node of the same layout that thread
//! allocates comes off it: a pointer pop, on memory that is likely still in this core's cache.
//!
//! Bounds: one list per node layout (exact size and alignment, as the global allocator's
//! contract requires), created by the thread's first allocation of that layout, at most 4
//! layouts per thread (a layout keeps its place for the thread's life), each list holding at
//! most 32 KiB. A node larger than 1 KiB, a layout the thread never allocated (a thread that
//! only reads also frees nodes, whenever it collects garbage: it keeps none), a fifth layout, a
//! full list, or a thread whose pool is already torn down goes to the global allocator as
//! before. The lists are freed when the thread exits. So a thread that inserts keeps at most
//! 128 KiB of freed nodes, and one that only reads keeps nothing.
//!
//! Under loom the pool is off: every node comes from and goes to the global allocator. So it is
//! with `--cfg clockline_no_pool`, which both sanitizer runs set (`ci/sanitizer.sh`): a node
//! read after it was freed must reach memory the sanitizer tracks as freed, not a recycled node.

use std::alloc::{self, Layout};

/// Allocates a node's memory for `layout` (non-zero size).
///
/// # Safety
/// As [`std::alloc::alloc`]: `layout` has a non-zero size.
#[inline]
pub(crate) unsafe fn alloc(layout: Layout) -> *mut u8 {
    #[cfg(not(any(clockline_loom, clockline_no_pool)))]
    if layout.size() <= imp::MAX_SIZE {
        // `try_with` fails only during this thread's teardown, after the pool is freed.
        if let Ok(Some(p)) = imp::POOL.try_with(|pool| pool.pop(layout)) {
            return p;
        }
    }
    // SAFETY: the caller's contract.
    unsafe { alloc::alloc(layout) }
}

/// Frees a node's memory.
///
/// # Safety
/// As [`std::alloc::dealloc`]: `p` came from [`alloc`] with this `layout` and is not used
/// again.
#[inline]
pub(crate) unsafe fn dealloc(p: *mut u8, layout: Layout) {
    #[cfg(not(any(clockline_loom, clockline_no_pool)))]
    if layout.size() <= imp::MAX_SIZE {
        // SAFETY: forwarded from the caller's contract.
        if let Ok(true) = imp::POOL.try_with(|pool| unsafe { pool.push(p, layout) }) {
            return;
        }
    }
    // SAFETY: the caller's contract; blocks of the pool came from `alloc::alloc` with the
    // same layout (a list holds one layout only).
    unsafe { alloc::dealloc(p, layout) }
}

#[cfg(not(any(clockline_loom, clockline_no_pool)))]
mod imp {
    use std::alloc::{self, Layout};
    use std::cell::Cell;
    use std::ptr;

    /// Node layouts a thread keeps lists for.
    pub(super) const CLASSES: usize = 4;
    /// The most memory one list holds.
    pub(super) const LIST_BYTES: usize = 32 * 1024;
    /// Larger nodes always go to the global allocator.
    pub(super) const MAX_SIZE: usize = 1024;

    std::thread_local! {
        pub(super) static POOL: Pool = const { Pool::new() };
    }

    /// A freed block: its first word links to the next one.
    struct Free {
        next: *mut Free,
    }

    /// The free list of one layout. `size == 0`: unused.
    struct List {
        size: Cell<usize>,
        align: Cell<usize>,
        head: Cell<*mut Free>,
        len: Cell<usize>,
    }

    pub(super) struct Pool {
        lists: [List; CLASSES],
    }

    impl Pool {
        const fn new() -> Self {
            Self {
                lists: [const {
                    List {
                        size: Cell::new(0),
                        align: Cell::new(0),
                        head: Cell::new(ptr::null_mut()),
                        len: Cell::new(0),
                    }
                }; CLASSES],
            }
        }

        #[inline(always)]
        fn list(&self, layout: Layout) -> Option<&List> {
            self.lists
                .iter()
                .find(|l| l.size.get() == layout.size() && l.align.get() == layout.align())
        }

        /// A block of exactly `layout`, if this thread freed one. The first request for a
        /// layout claims a list for it, if one of the places is free: only a thread that
        /// allocates nodes keeps freed ones (see `push`).
        #[inline]
        pub(super) fn pop(&self, layout: Layout) -> Option<*mut u8> {
            let Some(list) = self.list(layout) else {
                if let Some(l) = self.lists.iter().find(|l| l.size.get() == 0) {
                    l.size.set(layout.size());
                    l.align.set(layout.align());
                }
                return None;
            };
            let head = list.head.get();
            if head.is_null() {
                return None;
            }
            // SAFETY: `head` is a block this list owns; its first word was written by `push`.
            list.head.set(unsafe { (*head).next });
            list.len.set(list.len.get() - 1);
            Some(head.cast())
        }

        /// Keeps `p` for reuse; false if this thread has no list for its layout (it never
        /// allocated one: a thread that only reads, and frees what the collector hands it,
        /// keeps nothing) or the list is full. The caller then frees it.
        ///
        /// # Safety
        /// `p` is an allocation of `layout` from the global allocator that nobody uses any
        /// more, at least 8 bytes and 8-aligned (a node starts with its metadata word).
        #[inline]
        pub(super) unsafe fn push(&self, p: *mut u8, layout: Layout) -> bool {
            debug_assert!(layout.size() >= 8 && layout.align() >= 8);
            let Some(list) = self.list(layout) else {
                return false;
            };
            if (list.len.get() + 1) * layout.size() > LIST_BYTES {
                return false;
            }
            let block = p.cast::<Free>();
            // SAFETY: the caller's contract: the block is ours, large and aligned enough for
            // the link.
            unsafe {
                block.write(Free {
                    next: list.head.get(),
                })
            };
            list.head.set(block);
            list.len.set(list.len.get() + 1);
            true
        }
    }

    impl Drop for Pool {
        fn drop(&mut self) {
            for list in &self.lists {
                let mut p = list.head.replace(ptr::null_mut());
                while !p.is_null() {
                    // SAFETY: every block in the list is owned by it and was allocated with
                    // the list's layout (checked when it was pushed).
                    unsafe {
                        let next = (*p).next;
                        let layout =
                            Layout::from_size_align_unchecked(list.size.get(), list.align.get());
                        alloc::dealloc(p.cast(), layout);
                        p = next;
                    }
                }
                list.len.set(0);
            }
        }
    }
}

#[cfg(all(test, not(any(clockline_loom, clockline_no_pool))))]
mod tests {
    use super::imp::{CLASSES, LIST_BYTES};
    use super::*;

    #[test]
    fn a_freed_block_is_reused_for_the_same_layout_only() {
        // A fresh thread: a fresh pool, whatever other tests left in theirs.
        std::thread::spawn(|| {
            let a = Layout::from_size_align(40, 8).unwrap();
            let b = Layout::from_size_align(48, 8).unwrap();
            // SAFETY: non-zero sizes; each block is freed once with its own layout.
            unsafe {
                let p = alloc(a);
                dealloc(p, a);
                let q = alloc(b);
                assert_ne!(p, q, "a 48-byte request must not get a 40-byte block");
                let r = alloc(a);
                assert_eq!(p, r, "the freed 40-byte block comes back");
                dealloc(q, b);
                dealloc(r, a);
            }
        })
        .join()
        .unwrap();
    }

    /// Every thread collects garbage now and then, readers too: one that never allocates a
    /// node of a layout keeps none of the nodes of that layout it frees.
    #[test]
    fn a_thread_that_only_frees_keeps_nothing() {
        let l = Layout::from_size_align(56, 8).unwrap();
        // SAFETY: non-zero size; the blocks are freed once each, on the other thread.
        let blocks: Vec<usize> = (0..16)
            .map(|_| unsafe { std::alloc::alloc(l) } as usize)
            .collect();
        std::thread::spawn(move || {
            for p in blocks {
                // SAFETY: allocated above with `l` by the global allocator, freed once.
                unsafe { dealloc(p as *mut u8, l) };
            }
            imp::POOL.with(|pool| assert!(pool.pop(l).is_none(), "nothing was kept"));
        })
        .join()
        .unwrap();
    }

    #[test]
    fn lists_are_bounded_in_bytes_and_in_layouts() {
        std::thread::spawn(|| {
            let l = Layout::from_size_align(64, 8).unwrap();
            let n = LIST_BYTES / 64;
            // SAFETY: non-zero sizes; every block freed once with its layout.
            unsafe {
                let blocks: Vec<_> = (0..n + 10).map(|_| alloc(l)).collect();
                for &p in &blocks {
                    dealloc(p, l);
                }
                imp::POOL.with(|pool| {
                    // Only `n` fit; the rest went to the global allocator.
                    let popped: Vec<_> = (0..n + 10).map_while(|_| pool.pop(l)).collect();
                    assert_eq!(popped.len(), n);
                    for p in popped {
                        std::alloc::dealloc(p, l);
                    }
                });
                // Four layouts at most: the 64-byte list holds one place, the first three of
                // these the others, and the last two are never kept.
                let layouts: Vec<_> = (1..=5)
                    .map(|i| Layout::from_size_align(8 * (i + 10), 8).unwrap())
                    .collect();
                for &l in &layouts {
                    dealloc(alloc(l), l);
                }
                imp::POOL.with(|pool| {
                    let kept = layouts
                        .iter()
                        .filter(|&&l| pool.pop(l).map(|p| std::alloc::dealloc(p, l)).is_some())
                        .count();
                    assert_eq!(
                        kept,
                        CLASSES - 1,
                        "the 64-byte list holds one of the four places"
                    );
                });
            }
        })
        .join()
        .unwrap();
    }
}
