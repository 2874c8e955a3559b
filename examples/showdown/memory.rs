//! Heap bytes per entry for `u64 -> u64` at 1,000,000 entries.
//!
//! Counted by [`Counting`], a global allocator over `System` that keeps the requested bytes
//! (`layout.size()`) of live allocations; the showdown's `main.rs` installs it with
//! `#[global_allocator] static A: memory::Counting = memory::Counting;`. Allocator overhead
//! (size classes, headers) is not included, for any contender.
//!
//! Each contender is measured from before it is constructed: build it for 1,000,000 entries,
//! insert the keys `0..1_000_000` (value = key), let deferred work finish (moka's pending tasks;
//! three epoch flushes for crossbeam-epoch, which clockline and moka use), then
//! bytes per entry = (live after − live before) / 1,000,000. The peak column is the highest live
//! count on the way, over the same base.

use std::alloc::{GlobalAlloc, Layout, System};
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Entries each contender is filled with.
const ENTRIES: u64 = 1_000_000;

/// The target for clockline, in bytes per entry.
pub const TARGET_BYTES_PER_ENTRY: f64 = 40.0;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// Counting is off outside this section: two shared atomic RMWs per allocation would slow the
/// contenders that allocate per insert (clockline, moka, papaya) in the throughput section,
/// and more so the more threads run.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// A global allocator over [`System`] that counts the requested bytes of live allocations.
// Constructed only by the `#[global_allocator]` static in main.rs; without it `run` says so.
#[allow(dead_code)]
#[derive(Debug)]
pub struct Counting;

fn added(size: usize) {
    // Relaxed: a statistic; the measuring thread reads it after its own allocations.
    if ENABLED.load(Ordering::Relaxed) {
        let now = LIVE.fetch_add(size, Ordering::Relaxed).wrapping_add(size);
        PEAK.fetch_max(now, Ordering::Relaxed);
    }
}

fn removed(size: usize) {
    // Relaxed: as in `added`. Wraps if a block from before counting started is freed; the
    // measurements only use differences taken while counting.
    if ENABLED.load(Ordering::Relaxed) {
        LIVE.fetch_sub(size, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so `System`'s
// guarantees carry over; the counters are side effects that never touch the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which we pass on.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            added(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            added(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller passes a block this allocator (that is, `System`) returned, with
        // its layout.
        unsafe { System.dealloc(ptr, layout) };
        removed(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as in `dealloc`, plus the caller's guarantees on `new_size`.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            added(new_size);
            removed(layout.size());
        }
        p
    }
}

/// Requested bytes of all live heap allocations (0 unless [`Counting`] is the global allocator).
pub fn live_bytes() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// The highest [`live_bytes`] since the last [`reset_peak`].
pub fn peak_bytes() -> usize {
    PEAK.load(Ordering::Relaxed)
}

/// Restarts [`peak_bytes`] from the current live count.
pub fn reset_peak() {
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
}

/// Whether [`Counting`] is the global allocator: a 4 KiB allocation must show up.
pub fn counting_installed() -> bool {
    let before = live_bytes();
    let v: Vec<u8> = std::hint::black_box(Vec::with_capacity(4096));
    let seen = live_bytes().wrapping_sub(before) >= 4096;
    drop(v);
    seen
}

/// Lets deferred frees run: crossbeam-epoch garbage of this thread (clockline, moka).
fn settle() {
    for _ in 0..3 {
        clockline::flush_deferred();
    }
}

struct Measured {
    name: &'static str,
    len: usize,
    bytes: usize,
    peak: usize,
}

/// Builds a contender with `build`, fills it with `fill` (which returns its length), and
/// measures. The contender is dropped after the measurement.
fn measure<C>(
    name: &'static str,
    build: impl FnOnce() -> C,
    fill: impl FnOnce(&C) -> usize,
) -> Measured {
    settle();
    let before = live_bytes();
    reset_peak();
    let cache = build();
    let len = fill(&cache);
    settle();
    let bytes = live_bytes().wrapping_sub(before);
    let peak = peak_bytes().wrapping_sub(before);
    drop(cache);
    Measured {
        name,
        len,
        bytes,
        peak,
    }
}

/// Measures every contender and prints the table; with `csv`, also writes
/// `contender,entries,bytes_per_entry` there (entries held, and the table's B/entry). See the
/// module docs.
pub fn run(csv: Option<&Path>) {
    // Start far from zero, so frees of blocks allocated before counting began cannot wrap the
    // count below the base that the measurements subtract.
    LIVE.store(1 << 62, Ordering::Relaxed);
    ENABLED.store(true, Ordering::Relaxed);
    let rows = run_counted();
    ENABLED.store(false, Ordering::Relaxed);
    if let (Some(path), Some(rows)) = (csv, rows) {
        let lines: Vec<String> = rows
            .iter()
            .map(|m| {
                let per = m.bytes as f64 / ENTRIES as f64;
                format!("{},{},{per:.2}", csv_name(m.name), m.len)
            })
            .collect();
        match crate::csv::write_lines(path, "contender,entries,bytes_per_entry", &lines) {
            Ok(()) => println!("  wrote {} rows to {}", lines.len(), path.display()),
            Err(e) => println!("  could not write {}: {e}", path.display()),
        }
    }
}

/// A contender's name in the CSV: as the throughput section and the plots name it.
fn csv_name(name: &str) -> &str {
    match name {
        "quick_cache::sync" => "quick_cache",
        "moka::sync" => "moka",
        "Mutex<lru::LruCache>" => "lru+mutex",
        "papaya::HashMap::new" => "papaya",
        "papaya (with_capacity)" => "papaya-presized",
        other => other,
    }
}

/// The table's rows, or `None` when the counting allocator is missing.
fn run_counted() -> Option<[Measured; 8]> {
    if !counting_installed() {
        println!(
            "memory: skipped, the counting allocator is not installed \
             (main.rs needs `#[global_allocator] static A: memory::Counting = memory::Counting;`)"
        );
        return None;
    }
    let n = ENTRIES as usize;
    // Warm up what every process pays once: crossbeam-epoch's global collector and this
    // thread's handle, so they are not charged to the first contender.
    {
        let warm: clockline::Cache<u64, u64> = clockline::Cache::new(16);
        warm.insert(1, 1).expect("unweighted insert");
        settle();
    }
    let rows = [
        measure(
            "clockline",
            || clockline::Cache::<u64, u64>::new(n),
            |c| {
                for k in 0..ENTRIES {
                    c.insert(k, k)
                        .expect("an unweighted insert is never refused");
                }
                c.len()
            },
        ),
        // Issue #3: the price of expiry (one deadline word per entry) and of versions (one
        // version word), each switched on alone.
        measure(
            "clockline+ttl",
            || {
                clockline::Cache::<u64, u64>::builder()
                    .max_capacity(n)
                    .time_to_live(std::time::Duration::from_secs(3600))
                    .clock(clockline::CoarseClock::default())
                    .build()
                    .expect("valid bounds")
            },
            |c| {
                for k in 0..ENTRIES {
                    c.insert(k, k)
                        .expect("an unweighted insert is never refused");
                }
                c.len()
            },
        ),
        measure(
            "clockline+versioned",
            || {
                clockline::Cache::<u64, u64>::builder()
                    .max_capacity(n)
                    .versioned()
                    .build()
                    .expect("valid bounds")
            },
            |c| {
                for k in 0..ENTRIES {
                    c.insert_versioned(k, k, 1)
                        .expect("a first version is never stale");
                }
                c.len()
            },
        ),
        measure(
            "quick_cache::sync",
            || quick_cache::sync::Cache::<u64, u64>::new(n),
            |c| {
                for k in 0..ENTRIES {
                    c.insert(k, k);
                }
                c.len()
            },
        ),
        measure(
            "moka::sync",
            || {
                moka::sync::Cache::<u64, u64>::builder()
                    .max_capacity(ENTRIES)
                    .build()
            },
            |c| {
                for k in 0..ENTRIES {
                    c.insert(k, k);
                }
                c.run_pending_tasks();
                c.entry_count() as usize
            },
        ),
        measure(
            "Mutex<lru::LruCache>",
            || {
                Mutex::new(lru::LruCache::<u64, u64>::new(
                    NonZeroUsize::new(n).unwrap(),
                ))
            },
            |c| {
                for k in 0..ENTRIES {
                    c.lock().unwrap().put(k, k);
                }
                let len = c.lock().unwrap().len();
                len
            },
        ),
        measure(
            "papaya::HashMap::new",
            papaya::HashMap::<u64, u64>::new,
            |m| {
                let pinned = m.pin();
                for k in 0..ENTRIES {
                    pinned.insert(k, k);
                }
                pinned.len()
            },
        ),
        measure(
            "papaya (with_capacity)",
            || papaya::HashMap::<u64, u64>::with_capacity(n),
            |m| {
                let pinned = m.pin();
                for k in 0..ENTRIES {
                    pinned.insert(k, k);
                }
                pinned.len()
            },
        ),
    ];
    println!(
        "memory: heap bytes per entry, u64 -> u64, {ENTRIES} inserts into a cache built for {ENTRIES} \
         (requested bytes of live allocations, from before construction)"
    );
    println!(
        "{:<24} {:>9} {:>12} {:>8} {:>11}  target: clockline <= {TARGET_BYTES_PER_ENTRY} B",
        "contender", "len", "bytes", "B/entry", "peak B/ent"
    );
    for m in &rows {
        let per = m.bytes as f64 / ENTRIES as f64;
        let verdict = if m.name == "clockline" {
            if per <= TARGET_BYTES_PER_ENTRY {
                "PASS"
            } else {
                "MISS"
            }
        } else {
            ""
        };
        println!(
            "{:<24} {:>9} {:>12} {:>8.1} {:>11.1}  {verdict}",
            m.name,
            m.len,
            m.bytes,
            per,
            m.peak as f64 / ENTRIES as f64,
        );
    }
    println!(
        "  B/entry = bytes / {ENTRIES} inserts, whatever len is (a cache that holds fewer keeps \
         fewer); peak: the most live bytes during construction and inserts, over the same base."
    );
    Some(rows)
}
