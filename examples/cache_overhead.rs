//! The fixed heap cost of one empty cache, by capacity and policy, measured with a counting
//! global allocator (requested bytes): what a program with many small caches (one per tenant,
//! per connection, per request type) pays before it stores anything. The per-entry cost at
//! 1,000,000 entries is `showdown --only memory`'s.
//!
//! `cargo run --release --example cache_overhead`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts the requested sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn main() {
    println!("heap bytes of one empty Cache<u64, u64> (requested, counting allocator)");
    println!("{:>9} {:>12} {:>12}", "capacity", "Adaptive", "Clock");
    for capacity in [1usize, 16, 100, 1_000, 10_000, 100_000] {
        let mut row = Vec::new();
        for policy in [clockline::Policy::Adaptive, clockline::Policy::Clock] {
            let before = LIVE.load(Ordering::Relaxed);
            let cache: clockline::Cache<u64, u64> = clockline::Cache::builder()
                .max_capacity(capacity)
                .policy(policy)
                .build()
                .expect("valid capacity");
            row.push(LIVE.load(Ordering::Relaxed) - before);
            drop(cache);
        }
        println!("{capacity:>9} {:>12} {:>12}", row[0], row[1]);
    }
}
