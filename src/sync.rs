//! The one door to atomics, cells, locks and threads.
//!
//! Every atomic, `UnsafeCell`, spin hint and thread in clockline, and the locks of the miss
//! path (the loader's flights, the tombstone store), go through this module, so that the same
//! protocol code runs under [loom] when the crate is built with `--cfg clockline_loom` (see
//! `loom-tests/`). What stays std's is what no model can run: process-wide statics (a loom
//! object lives in one execution of a model), which are the expiry ticker's words and lock
//! (`expiry::ticker`, driven by an OS thread) and the statistics' id counters; and the locks
//! of warm-up and the janitor, which run on OS threads.
//!
//! The std side copies loom's API (`UnsafeCell::with`), not the other way round.
//!
//! [loom]: https://docs.rs/loom

/// An entry's extension word (expiry deadline, idle deadline, version): a plain std atomic in
/// every build, also under loom. These words are written before the node is published (the
/// publish is the Release that loom does model) and afterwards only read, except the idle
/// deadline: reads push it forward with a `fetch_update`, and a `compute` that judged the
/// entry expired settles it with a `compare_exchange` before replacing or removing the entry;
/// that single word's modification order decides between the two (`Expiry::touch`,
/// `# Orderings`). Loom does not explore that race (the word is not a loom atomic: the words
/// live in the node's allocation, after it, at a layout computed from their count); the
/// argument is in `Expiry::touch`, and `tests/compute.rs`
/// (`a_revival_between_the_commit_check_and_the_commit_is_not_overwritten`) lands a read in
/// the window deterministically.
pub(crate) type ExtWord = std::sync::atomic::AtomicU64;

/// The locks, condition variables and shared flights of the miss path: the loader's flight map
/// and each flight's state (`loader.rs`), and the tombstone store (`versions.rs`). loom's under
/// `clockline_loom`, so that the models of single flight and of loads racing invalidations
/// explore every order in which these locks are taken, and report a waiter left waiting as a
/// deadlock; std's otherwise. (`Arc` here is only the flights'; the cache's own handle and
/// the errors handed to callers are std's in every build.)
#[cfg(clockline_loom)]
pub(crate) use loom::sync::{Arc as FlightArc, Condvar, Mutex, MutexGuard};
#[cfg(not(clockline_loom))]
pub(crate) use std::sync::{Arc as FlightArc, Condvar, Mutex, MutexGuard};

/// OS threads, which loom does not model: only the janitor and warm-up start threads, and
/// neither runs inside a loom model.
pub(crate) use std::thread as os_thread;

/// Pins the current thread with crossbeam-epoch's default collector, through clockline's own
/// thread-local handle, always inlined. `epoch::pin()` goes through a generic `with_handle`
/// that LLVM stopped inlining into `get` once the crate had many callers of it: a call and its
/// register saves, 10 of a read hit's ~100 instructions (callgrind, docs/benchmarks.md). Same
/// collector, so guards and deferred frees mix freely with `epoch::pin()`'s; but what this
/// thread retires waits in this handle's bag, which `crossbeam_epoch::pin().flush()` does not
/// reach: [`flush`] (public as `clockline::flush_deferred`) does. Under loom, crossbeam's own
/// loom-aware `pin`.
#[cfg(not(clockline_loom))]
#[inline(always)]
pub(crate) fn pin() -> crossbeam_epoch::Guard {
    HANDLE
        .try_with(crossbeam_epoch::LocalHandle::pin)
        .unwrap_or_else(|_| pin_slow())
}

#[cfg(not(clockline_loom))]
std::thread_local! {
    static HANDLE: crossbeam_epoch::LocalHandle =
        crossbeam_epoch::default_collector().register();
}

/// During thread teardown, once the thread-local handle is gone: a temporary registration.
#[cfg(not(clockline_loom))]
#[cold]
fn pin_slow() -> crossbeam_epoch::Guard {
    crossbeam_epoch::default_collector().register().pin()
}

#[cfg(clockline_loom)]
#[inline(always)]
pub(crate) fn pin() -> crossbeam_epoch::Guard {
    crossbeam_epoch::pin()
}

/// Moves what this thread has retired to the global queue and frees what no reader can see
/// any more: see [`crate::flush_deferred`].
///
/// One `Guard::flush` advances the epoch at most once and frees at most 8 bags (crossbeam's
/// `COLLECT_STEPS`, 512 nodes), so a backlog left by a stalled epoch (a pinned handle held
/// while other threads retire, threads preempted while pinned) took a call per 512 values to
/// drain, and nothing drained it while the process was idle (found by the thread-churn dry
/// run: 196 calls for 100,000 values). So this flushes until three flushes in a row free
/// nothing (two epoch advances are needed before garbage sealed now may be freed), counting
/// the nodes freed by this thread ([`note_freed`], called by `table::retire`'s deferred drop).
/// Bounded at 1,024 flushes (about half a million nodes), so that other threads retiring as
/// fast as this one frees cannot keep it here.
///
/// Idle flushes say "nothing left" only once everything queued before the call has been
/// popped: crossbeam's default collector, and so its global queue of garbage bags, is shared
/// with every other user of it in the process (moka's table, crossbeam-skiplist, ...), and
/// three flushes that free only their garbage (8 bags each) free none of ours. So the call
/// first defers a marker behind all of it (bags leave the queue in order) and counts idle
/// flushes only once the marker has run. (It returned after three flushes of another crate's
/// garbage with this thread's whole backlog still queued; `tests/reclamation.rs`,
/// `one_flush_drains_a_backlog_queued_behind_other_users_of_the_collector`.) While a guard
/// pinned before the call lives, the marker cannot run: then 16 idle flushes end the call (a
/// stalled epoch frees nothing however often it is asked). So do more than about 128 bags of
/// other crates' garbage queued in front (16 flushes pop 128 bags, and their frees are not
/// this thread's): the next call goes on where this one stopped. A call then costs 0.4 µs on
/// the 2-core VM once its marker is kept (below; 1.6 µs when each call deferred its own, 0.09
/// µs before markers; all 1,024 flushes would cost 25 µs), and 0.7 µs with nothing pinned (0.4
/// before markers): `examples/flush_cost.rs`, medians of three runs.
///
/// A marker that has not run when the call returns is kept, and the next call waits for it
/// instead of deferring another, unless this thread has retired a node since ([`RETIRED`]):
/// everything of this thread's is then still queued ahead of it. Each marker fills a bag of
/// its own (the flush pushes the thread's bag, 2 KiB, to the global queue), and a new one per
/// call kept 2 KiB per call alive for as long as the epoch stayed stalled (10,000 calls beside
/// a held guard: 20 MB; `tests/flush_memory.rs`).
#[cfg(not(clockline_loom))]
pub(crate) fn flush() {
    use std::sync::atomic::{AtomicBool, Ordering};
    // The marker: the previous call's, if it has not run yet and this thread has retired
    // nothing since (everything of this thread's is then queued ahead of it), else a new one.
    // A marker is a deferred closure, so deferring one makes this thread's bag non-empty and
    // every flush then pushes a 2 KiB bag to the global queue: one per call, held there while
    // the epoch is stalled (a tokio worker calling this on every park, beside a `Pinned`
    // handle held elsewhere, queued 2 KiB per park; found in review, `tests/flush_memory.rs`).
    let retired = RETIRED.with(std::cell::Cell::get);
    // `try_with`: called from another thread-local's destructor at thread exit, after
    // `MARKER`'s own has run, `with` panicked, which aborts the process there (found in
    // review, `tests/flush_teardown.rs`). Then there is no kept marker, and none is kept.
    let drained = match MARKER.try_with(std::cell::Cell::take).ok().flatten() {
        // Acquire: pairs with the marker's Release store (orders nothing else; a flag).
        Some((marker, at)) if at == retired && !marker.load(Ordering::Acquire) => marker,
        _ => {
            let drained = std::sync::Arc::new(AtomicBool::new(false));
            let marker = drained.clone();
            // Release: pairs with the Acquire loads here (orders nothing else; a flag).
            pin().defer(move || marker.store(true, Ordering::Release));
            drained
        }
    };
    let mut idle = 0;
    for _ in 0..1024 {
        if idle >= 16 || (idle >= 3 && drained.load(Ordering::Acquire)) {
            break;
        }
        let before = FREED.with(std::cell::Cell::get);
        pin().flush();
        if FREED.with(std::cell::Cell::get) == before {
            idle += 1;
        } else {
            idle = 0;
        }
    }
    // Acquire: as above.
    if !drained.load(Ordering::Acquire) {
        let _ = MARKER.try_with(|m| m.set(Some((drained, retired))));
    }
}

/// Under loom: one flush (loom's threads share this OS thread's thread-locals).
#[cfg(clockline_loom)]
pub(crate) fn flush() {
    pin().flush();
}

#[cfg(not(clockline_loom))]
std::thread_local! {
    /// Nodes whose deferred drop ran on this thread: [`flush`]'s progress signal.
    static FREED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    /// Nodes this thread has retired: [`flush`] defers a new marker only if this moved since
    /// its last marker.
    static RETIRED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    /// The last marker [`flush`] deferred that had not run when it returned, and [`RETIRED`]
    /// then.
    #[allow(clippy::type_complexity)]
    static MARKER: std::cell::Cell<Option<(std::sync::Arc<std::sync::atomic::AtomicBool>, u64)>> =
        const { std::cell::Cell::new(None) };
}

/// Takes the next position of a shared sweep counter (the CLOCK hand, the ghost's clocks),
/// claiming `run` positions at a time for this thread: one `fetch_add` per run instead of one
/// per step. `run` 1 is a plain `fetch_add(1)`; callers pass [`RUN`] only where a run is
/// small beside what the counter counts (a large table's turn, a large cache's ghost tick).
/// `id` names the counter (unique for the life of the process: [`claim_id`]); `lane` picks
/// which kind of counter it is (0: a hand, 1 and 2: a ghost's clocks), and each lane keeps
/// runs for up to [`WAYS`] counters, so a thread that serves several caches keeps each one's
/// run (one run per lane let two caches used in turn take each other's runs: the hand then
/// skipped 15 of every 16 positions, and the ghost's ages grew 16-fold; found in review).
///
/// Why: at 16 threads on 16 cores the hand's `fetch_add(1)` per slot was one of the shared
/// lines that every evicting insert wrote several times (the hand passes referenced entries;
/// docs/benchmarks.md section 3.0). A thread now walks a private run of positions and comes
/// back to the shared counter once per run. With one thread serving at most [`WAYS`] caches,
/// the positions come in exactly the order they came in before (the run's rest waits in this
/// thread-local for the next call, and [`claimed_near`] answers where this thread's sweep
/// really is), so the simulator's hit ratios are unchanged. With several, a thread's unfinished run is visited later than the counter says,
/// or, if the thread stops, not this turn: those entries keep their reference bit one turn
/// longer. Runs held by all threads together must stay a small part of a turn: in a 64-entry
/// cache, four threads' runs covered most of the table, two threads' runs came round to the
/// same slots at once, and one cleared a counter's mark just before the other evicted it
/// (`tests/compute.rs`, `concurrent_increments_are_not_lost`, failed in CI). The positions
/// are hints (each eviction is a CAS of the slot, see `clock`'s `# Orderings`), so this moves
/// no bound. Relaxed, as the `fetch_add(1)` was.
///
/// Under loom, one position per call (loom's threads share this OS thread's thread-locals).
#[inline(always)]
pub(crate) fn claim(counter: &AtomicUsize, id: usize, lane: usize, run: usize) -> usize {
    #[cfg(not(clockline_loom))]
    if run > 1 {
        if let Ok(pos) = RUNS.try_with(|r| r[lane].next(counter, id, run)) {
            return pos;
        }
    }
    let _ = (id, lane, run);
    // Relaxed: see above. Also the fallback during thread teardown, one position at a time
    // (a run taken there would be lost with the thread-local, 15 positions skipped per step).
    counter.fetch_add(1, Ordering::Relaxed)
}

/// Where this thread's sweep of `counter` stands: the position [`claim`] would hand it next
/// from its current run, or the counter's own count if it holds no run, or only one it took
/// long ago and has not finished (it stopped sweeping while others went on: no clock any
/// more; "long ago" is more than a run behind the count). The hand's position for
/// `Hand::starts_marked` (which with the counter alone saw the hand up to a run ahead: 113 of
/// 146 simulator points moved, multi2 at 100 entries by 5.3 points) and the ghost's clock for
/// `Ghost::take`. With one thread, exactly where the sweep is. A run's next position above the
/// count cannot be read (the count is loaded after the run was taken), so a wrapped
/// difference never picks the run wrongly.
#[inline(always)]
pub(crate) fn claimed_near(counter: &AtomicUsize, id: usize, lane: usize) -> usize {
    // Relaxed: a hint.
    let shared = counter.load(Ordering::Relaxed);
    #[cfg(not(clockline_loom))]
    if let Ok(Some(mine)) = RUNS.try_with(|r| r[lane].peek(id)) {
        if shared.wrapping_sub(mine) <= RUN {
            return mine;
        }
    }
    let _ = (id, lane);
    shared
}

/// A new counter name for [`claim`]: never 0 (an empty way) and never reused, so a counter
/// freed and another allocated at its address do not share a run.
pub(crate) fn claim_id() -> usize {
    // A process-wide std static, as the statistics' ids (see the module docs); Relaxed: a
    // unique number, nothing published through it.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Positions a [`claim`] run holds where runs pay.
pub(crate) const RUN: usize = 16;

/// [`claim`]'s lanes: the hands', the ghosts' window clocks', the ghosts' main clocks'.
#[cfg(not(clockline_loom))]
const LANES: usize = 3;

/// Counters whose runs one lane of one thread keeps at once.
#[cfg(not(clockline_loom))]
pub(crate) const WAYS: usize = 4;

/// Calls of a counter with no way free before it takes one anyway (see `Lane::next`).
#[cfg(not(clockline_loom))]
const PATIENCE: usize = 256;

/// One lane of a thread's runs: up to [`WAYS`] counters' runs, `(id, next, end)` each (id 0:
/// empty); the way the next newcomer takes when every way holds an unfinished run (round
/// robin), and how many calls found none free.
#[cfg(not(clockline_loom))]
struct Lane {
    ways: [std::cell::Cell<(usize, usize, usize)>; WAYS],
    victim: std::cell::Cell<usize>,
    misses: std::cell::Cell<usize>,
}

#[cfg(not(clockline_loom))]
impl Lane {
    const fn new() -> Self {
        Self {
            ways: [const { std::cell::Cell::new((0, 0, 0)) }; WAYS],
            victim: std::cell::Cell::new(0),
            misses: std::cell::Cell::new(0),
        }
    }

    #[inline(always)]
    fn next(&self, counter: &AtomicUsize, id: usize, run: usize) -> usize {
        let mut spare = None;
        for w in &self.ways {
            let (k, next, end) = w.get();
            if k == id {
                if next != end {
                    w.set((k, next.wrapping_add(1), end));
                    return next;
                }
                spare = Some(w);
                break;
            }
            if spare.is_none() && (k == 0 || next == end) {
                spare = Some(w);
            }
        }
        let w = match spare {
            Some(w) => w,
            None => {
                // Every way holds another counter's unfinished run (five caches or more served
                // by this thread, or runs of caches since dropped). Taking a way at every such
                // call made five caches used in turn skip 87.5 % of their positions (found in
                // review): this counter goes one position at a time instead, as before runs,
                // and only every `PATIENCE`th time takes a way, round-robin, so that the ways
                // of dropped caches come free (at most `run - 1` positions of the way's
                // counter are then skipped for a turn, once per `PATIENCE` calls).
                let misses = self.misses.get().wrapping_add(1);
                self.misses.set(misses);
                if misses % PATIENCE != 0 {
                    // Relaxed: see `claim`.
                    return counter.fetch_add(1, Ordering::Relaxed);
                }
                let v = self.victim.get();
                self.victim.set((v + 1) % WAYS);
                &self.ways[v]
            }
        };
        // Relaxed: see `claim`.
        let start = counter.fetch_add(run, Ordering::Relaxed);
        w.set((id, start.wrapping_add(1), start.wrapping_add(run)));
        start
    }

    #[inline(always)]
    fn peek(&self, id: usize) -> Option<usize> {
        self.ways.iter().find_map(|w| {
            let (k, next, end) = w.get();
            (k == id && next != end).then(|| next)
        })
    }
}

#[cfg(not(clockline_loom))]
std::thread_local! {
    /// [`claim`]'s runs, per lane.
    static RUNS: [Lane; LANES] = const { [const { Lane::new() }; LANES] };
}

/// Counts one node retired by this thread (see [`flush`]). As [`note_freed`], an add to a
/// thread-local address.
#[inline(always)]
pub(crate) fn note_retired() {
    #[cfg(not(clockline_loom))]
    RETIRED.with(|n| n.set(n.get().wrapping_add(1)));
}

/// Counts one node freed on this thread (see [`flush`]). A `const` thread-local without a
/// destructor: an add to a thread-local address, no lazy-initialization check.
#[inline(always)]
pub(crate) fn note_freed() {
    #[cfg(not(clockline_loom))]
    FREED.with(|n| n.set(n.get().wrapping_add(1)));
}

#[cfg(clockline_loom)]
mod imp {
    pub(crate) use loom::cell::UnsafeCell;
    pub(crate) use loom::sync::atomic::{
        fence, AtomicBool, AtomicU16, AtomicU32, AtomicU64, AtomicUsize, Ordering,
    };

    /// Tell the scheduler this thread waits on another one. Loom needs this in every retry
    /// loop, or a model fails with "exceeded maximum number of branches".
    pub(crate) fn spin_wait(_step: u32) {
        loom::thread::yield_now();
    }
}

#[cfg(not(clockline_loom))]
mod imp {
    pub(crate) use std::sync::atomic::{
        fence, AtomicBool, AtomicU16, AtomicU32, AtomicU64, AtomicUsize, Ordering,
    };

    /// `std::cell::UnsafeCell` with loom's closure-based API.
    #[derive(Debug)]
    #[repr(transparent)]
    pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    impl<T> UnsafeCell<T> {
        #[inline(always)]
        pub(crate) fn new(value: T) -> Self {
            Self(std::cell::UnsafeCell::new(value))
        }

        pub(crate) fn into_inner(self) -> T {
            self.0.into_inner()
        }

        /// Runs `f` with a shared raw pointer to the contents.
        #[inline(always)]
        pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }
    }

    /// Back off while another writer finishes: spin a little, then give the core away.
    #[inline]
    pub(crate) fn spin_wait(step: u32) {
        if step < 6 {
            for _ in 0..(1u32 << step) {
                std::hint::spin_loop();
            }
        } else {
            std::thread::yield_now();
        }
    }
}

pub(crate) use imp::*;
