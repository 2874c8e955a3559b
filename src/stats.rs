//! Statistics: striped, cache-padded counters, switched on with
//! [`Builder::record_stats`](crate::Builder::record_stats).
//!
//! Each live thread holds a small number ([`thread_number`]) and counts into the stripe of that
//! number. The first thread to count into a stripe *owns* it: it alone writes it, so its
//! increments are a plain load and store (no locked instruction; a `fetch_add` cost a read hit
//! 10 to 18 % on the build VM, docs/benchmarks.md). A thread whose stripe a live thread owns
//! (more live threads than stripes) counts into a second, shared set of stripes with
//! `fetch_add`. Every stripe is `CachePadded`, so no two threads' counters share a line and
//! none shares a line with the table.
//!
//! Numbers are recycled: when a thread exits, its number goes back to a free list and the next
//! new thread takes the smallest free one, and with it the stripes the old thread owned in
//! every cache (the old thread will never write them again; the free list's lock orders its
//! last increments before the new owner's first). Numbers of live threads stay distinct and
//! dense. Ownership that outlived its thread instead (as it did before) sent every thread of
//! a pool that replaces its threads to the shared, locked stripes once the first few threads
//! had ended: the showdown, which starts its threads afresh every round, measured a stats
//! hit at 2 threads at 0.83x of a plain one that way (docs/benchmarks.md section 8).
//!
//! Finding the stripe (the thread's number, the owner check) cost more than the increment, so
//! each thread remembers the owned stripe it last counted into, with the id of the cache it
//! belongs to ([`LAST`]). A hit in the same cache then costs a thread-local load, a compare and
//! the increment: 129.7 to 113.7 instructions per stats hit (callgrind, docs/benchmarks.md
//! section 8). Nothing is batched: every count lands in its stripe at once, so there is no
//! flush and no extra staleness.
//!
//! [`Cache::stats`](crate::Cache::stats) sums all stripes: a snapshot that may miss counts still
//! in flight on other threads, never a torn number.

use std::cell::Cell;
use std::time::Duration;

use crossbeam_utils::CachePadded;

use crate::listener::RemovalCause;
use crate::sync::{AtomicU64, AtomicUsize, Ordering};

#[derive(Clone, Copy)]
pub(crate) enum Counter {
    Hit = 0,
    Miss,
    Insert,
    Update,
    LoadOk,
    LoadErr,
    LoadNanos,
    /// Removals by cause, in [`RemovalCause::index`] order.
    Removed,
}

const REMOVED: usize = Counter::Removed as usize;
const COUNTERS: usize = REMOVED + RemovalCause::ALL.len();

type Counters = [AtomicU64; COUNTERS];

struct Owned {
    /// The owning thread's number plus one; 0 while unowned.
    owner: AtomicUsize,
    counters: Counters,
}

pub(crate) struct Stats {
    /// Unique among all `Stats` ever made (never 0, never reused): what [`LAST`] compares.
    /// (The remembered stripe is compiled out under loom.)
    #[cfg_attr(clockline_loom, allow(dead_code))]
    id: u64,
    owned: Box<[CachePadded<Owned>]>,
    shared: Box<[CachePadded<Counters>]>,
}

/// The stripe this thread owns in the cache it last counted in.
#[derive(Clone, Copy)]
#[cfg_attr(clockline_loom, allow(dead_code))]
struct Last {
    /// That cache's [`Stats::id`]; 0 (no cache) at first.
    id: u64,
    /// The counters of the stripe this thread owns there.
    counters: *const Counters,
}

std::thread_local! {
    // Const-initialised and without a destructor: a read is a plain thread-local load, no
    // lazy-init or registration check. One entry: a thread that alternates between two caches
    // with statistics takes the slow path (the stripe lookup) on each switch.
    static LAST: Cell<Last> = const {
        Cell::new(Last {
            id: 0,
            counters: std::ptr::null(),
        })
    };
}

/// Adds `n` to counter `i` of the stripe this thread remembers, if it remembers one of the
/// cache whose [`Stats::id`] is `id`; false if not (the caller then counts the slow way).
///
/// # Safety
/// `id` is [`NO_STATS`] or the id of a `Stats` the caller borrows for the whole call: a
/// remembered pointer into a dropped `Stats` is followed only if its id is passed.
#[inline(always)]
unsafe fn count_last(id: u64, i: usize, n: u64) -> bool {
    // Not under loom: its threads share the OS thread, hence one `LAST`, and would all take
    // the same stripe for their own. The slow path is the protocol loom checks.
    #[cfg(not(clockline_loom))]
    {
        let last = LAST.get();
        if last.id == id {
            // SAFETY: ids are unique and never `NO_STATS`, so `last` was recorded by
            // `count_slow` on the `Stats` with this id, which the caller borrows (this
            // function's contract); `counters` points into its `owned`, a heap slice that
            // lives and stays put as long as it does.
            let c = unsafe { &(*last.counters)[i] };
            // Relaxed, load and store: this thread owns the stripe (`count_slow` recorded
            // it only then, and ownership lasts until this thread gives its number back,
            // which clears `LAST` first), so it is the only writer; readers sum snapshots.
            c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
            return true;
        }
    }
    let _ = (id, i, n);
    false
}

/// Adds one to counter `c` of the stripe this thread remembers for the cache whose stats id
/// is `id`; false if it remembers none (then count through [`Stats::add`]). The read path's
/// count: the id sits in `Inner`'s first line, so a hit in a cache with statistics counts
/// without first testing whether the cache has any (a cache without passes [`NO_STATS`],
/// which no thread remembers).
///
/// # Safety
/// As for [`count_last`]: `id` is `NO_STATS` or the id of a `Stats` the caller borrows.
#[inline(always)]
pub(crate) unsafe fn count_remembered(id: u64, c: Counter) -> bool {
    // SAFETY: this function's contract is `count_last`'s.
    unsafe { count_last(id, c as usize, 1) }
}

/// The id of no `Stats`: what a cache without statistics passes to [`count_remembered`].
pub(crate) const NO_STATS: u64 = u64::MAX;

/// The numbers of live threads that have counted (under [`NUMBERS`]' lock).
struct Numbers {
    /// The smallest number never handed out.
    next: usize,
    /// Numbers given back by threads that exited.
    free: std::collections::BinaryHeap<std::cmp::Reverse<usize>>,
}

static NUMBERS: std::sync::Mutex<Numbers> = std::sync::Mutex::new(Numbers {
    next: 0,
    free: std::collections::BinaryHeap::new(),
});

fn numbers() -> std::sync::MutexGuard<'static, Numbers> {
    // A panic while the lock is held leaves `Numbers` whole (a push or a pop either happened
    // or did not), so a poisoned lock is still good.
    NUMBERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A thread's number: taken on the thread's first count, given back when it exits.
struct ThreadNumber(usize);

impl ThreadNumber {
    fn take() -> Self {
        let mut n = numbers();
        let number = match n.free.pop() {
            Some(std::cmp::Reverse(number)) => number,
            None => {
                n.next += 1;
                n.next - 1
            }
        };
        Self(number)
    }
}

impl Drop for ThreadNumber {
    fn drop(&mut self) {
        // Forget the remembered stripe first: a count later in this thread's teardown (a
        // value's `Drop` run by another thread-local's destructor) must not write a stripe
        // that the number's next holder now owns. It takes the slow path and a shared stripe.
        #[cfg(not(clockline_loom))]
        LAST.set(Last {
            id: 0,
            counters: std::ptr::null(),
        });
        numbers().free.push(std::cmp::Reverse(self.0));
    }
}

std::thread_local! {
    static NUMBER: ThreadNumber = ThreadNumber::take();
}

/// This thread's number: distinct among live threads, smallest free first, so it indexes a
/// small array of stripes. `None` once this thread's thread-locals are being destroyed. Not
/// modeled by loom: its threads share one OS thread, hence one number and one stripe, where
/// their counts may race (each is an atomic load and store, so no UB); no model checks counts.
fn thread_number() -> Option<usize> {
    NUMBER.try_with(|n| n.0).ok()
}

impl Stats {
    pub(crate) fn new() -> Self {
        // Relaxed: a counter that hands out distinct ids; it orders nothing. It starts at 1, so
        // no cache matches `LAST`'s initial id; 2^64 caches never wrap it.
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
        let zero = || std::array::from_fn(|_| AtomicU64::new(0));
        Self {
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            owned: (0..(cores * 4).next_power_of_two().clamp(8, 256))
                .map(|_| {
                    CachePadded::new(Owned {
                        owner: AtomicUsize::new(0),
                        counters: zero(),
                    })
                })
                .collect(),
            shared: (0..(cores * 2).next_power_of_two().clamp(4, 64))
                .map(|_| CachePadded::new(zero()))
                .collect(),
        }
    }

    /// Adds `n` to counter `i` of this thread's stripe: through [`LAST`] if this thread last
    /// counted in this cache, else [`count_slow`](Self::count_slow).
    #[inline(always)]
    fn count(&self, i: usize, n: u64) {
        // SAFETY: `self` is the `Stats` with `self.id`, borrowed for the call.
        if !unsafe { count_last(self.id, i, n) } {
            self.count_slow(i, n);
        }
    }

    /// Finds this thread's stripe, claims it if unowned, counts, and remembers an owned stripe
    /// in [`LAST`]. Out of line: taken once per thread and cache switch, not per hit.
    #[cold]
    #[inline(never)]
    fn count_slow(&self, i: usize, n: u64) {
        let Some(t) = thread_number() else {
            // Thread teardown, after this thread gave its number back: a shared stripe.
            self.shared[0][i].fetch_add(n, Ordering::Relaxed);
            return;
        };
        let me = t + 1;
        let stripe = &self.owned[t & (self.owned.len() - 1)];
        // Relaxed throughout: counters publish nothing, and sums are snapshots. The owner
        // check only decides who may write the stripe; the CAS makes that one thread.
        let owner = stripe.owner.load(Ordering::Relaxed);
        let mine = owner == me
            || (owner == 0
                && stripe
                    .owner
                    .compare_exchange(0, me, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok());
        if mine {
            // The only writer of this stripe: a load and a store, not a locked add.
            let c = &stripe.counters[i];
            c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
            #[cfg(not(clockline_loom))]
            LAST.set(Last {
                id: self.id,
                counters: &stripe.counters,
            });
        } else {
            self.shared[t & (self.shared.len() - 1)][i].fetch_add(n, Ordering::Relaxed);
        }
    }

    #[inline]
    pub(crate) fn add(&self, c: Counter, n: u64) {
        self.count(c as usize, n);
    }

    /// This cache's id, for [`count_remembered`].
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    #[inline]
    pub(crate) fn removed(&self, cause: RemovalCause) {
        self.count(REMOVED + cause.index(), 1);
    }

    pub(crate) fn snapshot(&self) -> CacheStats {
        let mut sum = [0u64; COUNTERS];
        let stripes = self.owned.iter().map(|s| &s.counters);
        for s in stripes.chain(self.shared.iter().map(|s| &**s)) {
            for (acc, c) in sum.iter_mut().zip(s.iter()) {
                *acc = acc.wrapping_add(c.load(Ordering::Relaxed));
            }
        }
        let removed = |c: RemovalCause| sum[REMOVED + c.index()];
        CacheStats {
            hits: sum[Counter::Hit as usize],
            misses: sum[Counter::Miss as usize],
            inserts: sum[Counter::Insert as usize],
            updates: sum[Counter::Update as usize],
            evictions: removed(RemovalCause::Capacity),
            expirations: removed(RemovalCause::Expired),
            removals: removed(RemovalCause::Explicit),
            replacements: removed(RemovalCause::Replaced),
            cleared: removed(RemovalCause::Cleared),
            loads_ok: sum[Counter::LoadOk as usize],
            loads_failed: sum[Counter::LoadErr as usize],
            load_time: Duration::from_nanos(sum[Counter::LoadNanos as usize]),
        }
    }
}

/// A snapshot of a cache's counters, from [`Cache::stats`](crate::Cache::stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Lookups (`get`, the loaders) that found a live entry.
    pub hits: u64,
    /// Lookups that found nothing, or only an expired entry.
    pub misses: u64,
    /// Inserts of a key that was absent.
    pub inserts: u64,
    /// Inserts that replaced a present key, live or expired (the listener hears of an expired
    /// one as [`RemovalCause::Expired`]).
    pub updates: u64,
    /// Entries evicted for room ([`RemovalCause::Capacity`]).
    pub evictions: u64,
    /// Entries removed because they expired ([`RemovalCause::Expired`]).
    pub expirations: u64,
    /// Entries removed by `remove` or `invalidate_versioned` ([`RemovalCause::Explicit`]).
    pub removals: u64,
    /// Entries replaced by an insert of the same key ([`RemovalCause::Replaced`]).
    pub replacements: u64,
    /// Entries removed by `clear` ([`RemovalCause::Cleared`]).
    pub cleared: u64,
    /// Loader calls that returned a value.
    pub loads_ok: u64,
    /// Loader calls that returned an error or panicked.
    pub loads_failed: u64,
    /// Time spent in loader calls: on the injected [`Clock`](crate::Clock) if the cache has
    /// one, else measured with `Instant`.
    pub load_time: Duration,
}

impl CacheStats {
    /// hits / (hits + misses), or 0 before the first lookup.
    pub fn hit_ratio(&self) -> f64 {
        // In floating point: the sum of two counters near `u64::MAX` overflowed (found in
        // review; `tests/stats.rs`, `the_hit_ratio_of_huge_counters_does_not_overflow`).
        let total = self.hits as f64 + self.misses as f64;
        if total == 0.0 {
            0.0
        } else {
            self.hits as f64 / total
        }
    }
}

#[cfg(all(test, not(clockline_loom)))]
mod tests {
    use super::*;

    /// Threads that run one after another reuse the numbers of those that ended, so their
    /// counts keep landing in owned stripes (a plain store), not in the shared, locked ones.
    /// Before numbers were recycled, only the first 8 of these threads (one per stripe) got
    /// an owned stripe.
    #[test]
    fn threads_that_replace_ended_ones_count_into_owned_stripes() {
        let stats = Stats::new();
        let threads = 4 * stats.owned.len();
        let mut numbers = Vec::new();
        for _ in 0..threads {
            let n = std::thread::scope(|s| {
                s.spawn(|| {
                    stats.add(Counter::Hit, 1);
                    stats.add(Counter::Hit, 1); // through `LAST`
                    thread_number()
                })
                .join()
                .unwrap()
            });
            numbers.push(n.expect("a live thread has a number"));
        }
        let shared: u64 = stats
            .shared
            .iter()
            .map(|s| s[Counter::Hit as usize].load(Ordering::Relaxed))
            .sum();
        assert_eq!(stats.snapshot().hits, 2 * threads as u64, "no count lost");
        // Other tests' threads may hold small numbers meanwhile, so allow some misses; without
        // recycling, at least three quarters of the counts went to the shared stripes.
        assert!(
            shared <= threads as u64 / 2,
            "{shared} of {} counts in shared stripes; numbers {numbers:?}",
            2 * threads
        );
        numbers.sort_unstable();
        numbers.dedup();
        assert!(numbers.len() < threads, "no number was reused: {numbers:?}");
    }

    /// A thread's counts made while its thread-locals are destroyed (after it gave its number
    /// back) still count, in a shared stripe.
    #[test]
    fn counts_during_thread_teardown_are_kept() {
        struct CountOnDrop(std::sync::Arc<Stats>);
        impl Drop for CountOnDrop {
            fn drop(&mut self) {
                self.0.add(Counter::Miss, 1);
            }
        }
        std::thread_local! {
            static LATE: std::cell::RefCell<Option<CountOnDrop>> = const { std::cell::RefCell::new(None) };
        }
        let stats = std::sync::Arc::new(Stats::new());
        let s2 = stats.clone();
        std::thread::spawn(move || {
            // Registered before `NUMBER` (first used by the count below), so destroyed after
            // it: thread-local destructors run in reverse order of registration.
            LATE.with(|l| *l.borrow_mut() = Some(CountOnDrop(s2.clone())));
            s2.add(Counter::Miss, 1);
        })
        .join()
        .unwrap();
        assert_eq!(stats.snapshot().misses, 2);
    }
}
