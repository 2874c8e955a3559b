//! `flush_deferred` called again and again while the epoch is stalled (a guard held on another
//! thread) must not queue memory per call. Every call deferred a marker of its own, which made
//! the thread's bag non-empty, so each flush pushed a 2 KiB bag to crossbeam's global queue,
//! held there until the stall ended: a tokio worker calling it on every park beside a held
//! `Pinned` handle leaked 2 KiB per park meanwhile (found in review: 10,000 calls, 20 MB). Its
//! own file: it installs a counting global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Barrier};
use std::thread;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator, counting the bytes requested and freed.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, SeqCst);
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc(l) }
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, SeqCst);
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

#[test]
fn flushes_while_the_epoch_is_stalled_queue_nothing_per_call() {
    let cache: clockline::Cache<u64, u64> = clockline::Cache::new(100);
    for i in 0..1_000 {
        cache.insert(i % 200, i).unwrap();
    }
    clockline::flush_deferred();
    let pinned = Arc::new(Barrier::new(2));
    let (release, wait) = mpsc::channel::<()>();
    let p = pinned.clone();
    let holder = thread::spawn(move || {
        let _guard = crossbeam_epoch::pin();
        p.wait();
        wait.recv().unwrap();
    });
    pinned.wait();
    // Some garbage of this thread's retired while stalled: the first call defers a marker
    // for it, the others find nothing new to wait for.
    for i in 0..100 {
        cache.insert(i, i).unwrap();
    }
    clockline::flush_deferred();
    let before = LIVE.load(SeqCst);
    for _ in 0..10_000 {
        clockline::flush_deferred();
    }
    let grown = LIVE.load(SeqCst) - before;
    release.send(()).unwrap();
    holder.join().unwrap();
    assert!(
        grown < 100_000,
        "10,000 calls while stalled left {grown} bytes queued ({} per call)",
        grown / 10_000
    );
    // Once the stall ends, one call drains what waited.
    clockline::flush_deferred();
}
