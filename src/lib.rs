//! clockline: a concurrent in-process cache built around memory layout.
//!
//! * **Reads are lock-free and write nothing shared.** A lookup hashes the key, reads its home
//!   bucket (one 64-byte line: a control word of tags plus seven slot pointers), any neighbour
//!   the home's spill bits name, and one node; it takes no lock, does no CAS on shared memory,
//!   and writes the node's CLOCK reference bit only when it is clear. (Its epoch pin writes this
//!   thread's own epoch word, with a locked instruction as the fence on x86: about half the cost
//!   of a hit. A [`Pinned`] handle pays it once for many lookups.)
//! * **Bounded, strictly.** `len()` never exceeds `max_capacity`, and the total weight never
//!   exceeds `max_weight`, also while many threads insert: room is reserved before an entry is
//!   published and given back after one is unlinked. A key lives within eight buckets (56
//!   slots) of its home; an insert that finds them all taken evicts one of them even below
//!   capacity (about 0.02 % of keys when a cache is filled to capacity).
//! * **CLOCK eviction.** A hand sweeps the table's slots, clears reference bits and evicts the
//!   first entry it finds unmarked: an approximation of LRU whose hits cost no write.
//! * **Epoch reclamation.** Removed, replaced and evicted entries are freed by crossbeam-epoch
//!   once no reader can still see them.
//!
//! ```
//! use clockline::Cache;
//!
//! let cache: Cache<u64, String> = Cache::new(10_000);
//! cache.insert(7, "seven".to_string()).unwrap();
//! assert_eq!(cache.get(&7).as_deref(), Some("seven"));
//!
//! // Borrow instead of clone: a pinned handle lends `&V` while it lives.
//! let pinned = cache.pin();
//! assert_eq!(pinned.get(&7).map(String::as_str), Some("seven"));
//! ```
//!
//! # Features for production caching
//!
//! Each is switched on in the [`Builder`] and costs nothing when off: a cache built without
//! expiry or versions carries no per-entry word for them (its `u64 -> u64` nodes stay at 24
//! bytes), and one without statistics or a listener does not count or collect anything.
//!
//! ## Expiry
//!
//! A default [time-to-live](Builder::time_to_live), a per-entry TTL
//! ([`insert_with_ttl`](Cache::insert_with_ttl)), and [time-to-idle](Builder::time_to_idle). An
//! expired entry is never returned; it is removed by the CLOCK hand (expired entries go first),
//! by [`purge_expired`](Cache::purge_expired), or by an optional [janitor](Builder::janitor)
//! thread. Time comes from a [`Clock`], by default a cached tick that a process-wide ticker
//! thread refreshes every millisecond from the kernel's coarse clock: an entry may outlive its
//! deadline by up to about 6 ms while that thread runs on time, more while it is starved of
//! CPU (see [`expiry`], "Precision").
//!
//! ```
//! use std::time::Duration;
//! use clockline::Cache;
//!
//! let sessions: Cache<u64, String> = Cache::builder()
//!     .max_capacity(10_000)
//!     .time_to_live(Duration::from_secs(30 * 60))
//!     .build()
//!     .unwrap();
//! sessions.insert(1, "alice".into()).unwrap();
//! sessions.insert_with_ttl(2, "bob".into(), Duration::from_secs(60)).unwrap();
//! assert_eq!(sessions.get(&2).as_deref(), Some("bob"));
//! ```
//!
//! ## Eviction listener
//!
//! [`eviction_listener`](Builder::eviction_listener) is called once per entry that leaves the
//! cache, with the key, the value and a [`RemovalCause`], after the entry is unlinked and with
//! no lock held.
//!
//! ```
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::sync::Arc;
//! use clockline::{Cache, RemovalCause};
//!
//! let evicted = Arc::new(AtomicUsize::new(0));
//! let counter = evicted.clone();
//! let cache: Cache<u32, u32> = Cache::builder()
//!     .max_capacity(2)
//!     .eviction_listener(move |_k, _v, cause| {
//!         if cause == RemovalCause::Capacity {
//!             counter.fetch_add(1, Ordering::Relaxed);
//!         }
//!     })
//!     .build()
//!     .unwrap();
//! for k in 0..5 {
//!     cache.insert(k, k).unwrap();
//! }
//! assert_eq!(evicted.load(Ordering::Relaxed), 3);
//! ```
//!
//! ## Cache-aside with single flight
//!
//! [`get_or_insert_with`](Cache::get_or_insert_with),
//! [`try_get_or_insert_with`](Cache::try_get_or_insert_with) and their async forms run one
//! loader per key however many callers miss on it at once; the others wait for its value. See
//! [`loader`] for what waiters see when a loader fails, panics or is cancelled.
//!
//! ```
//! use clockline::Cache;
//!
//! let users: Cache<u64, String> = Cache::new(1000);
//! let name = users.get_or_insert_with(42, || "loaded from the database".to_string());
//! assert_eq!(name, "loaded from the database");
//! ```
//!
//! ## Version-guarded updates
//!
//! With a version per key, [`insert_versioned`](Cache::insert_versioned) refuses anything not
//! newer than what the cache knows, and
//! [`invalidate_versioned`](Cache::invalidate_versioned) leaves a tombstone so that a late,
//! older put is refused too. A loader that knows the version of what it read caches it at that
//! version with [`try_get_or_insert_versioned_with`](Cache::try_get_or_insert_versioned_with).
//! See [`versions`].
//!
//! ```
//! use clockline::{Cache, Invalidation};
//!
//! let cache: Cache<&str, &str> = Cache::builder().max_capacity(100).versioned().build().unwrap();
//! cache.insert_versioned("price", "10 EUR", 7).unwrap();
//! assert!(cache.insert_versioned("price", "9 EUR", 6).is_err(), "older: refused");
//! assert_eq!(cache.invalidate_versioned("price", 8), Invalidation::Removed);
//! assert!(cache.insert_versioned("price", "10 EUR", 7).is_err(), "tombstone: refused");
//! ```
//!
//! ## Warm-up
//!
//! [`warm_up`](Cache::warm_up) preloads keys with bounded concurrency and an optional rate
//! limit, through single flight, and returns a [`WarmUpReport`].
//!
//! ```
//! use std::num::{NonZeroU32, NonZeroUsize};
//! use clockline::{Cache, WarmUp};
//!
//! let cache: Cache<u64, u64> = Cache::new(10_000);
//! let opts = WarmUp::new(NonZeroUsize::new(8).unwrap()).rate_limit(NonZeroU32::new(100_000).unwrap());
//! let report = cache.warm_up(0..1000, opts, |k| Ok::<_, std::io::Error>(k * 2));
//! assert_eq!(report.loaded, 1000);
//! ```
//!
//! ## Statistics
//!
//! [`record_stats`](Builder::record_stats) keeps striped, cache-padded counters;
//! [`stats`](Cache::stats) sums them into a [`CacheStats`].
//!
//! ```
//! let cache: clockline::Cache<u64, u64> =
//!     clockline::Cache::builder().max_capacity(100).record_stats().build().unwrap();
//! cache.insert(1, 1).unwrap();
//! cache.get(&1);
//! assert_eq!(cache.stats().unwrap().hit_ratio(), 1.0);
//! ```
//!
//! # Eviction policy
//!
//! The default, [`Policy::Adaptive`], keeps CLOCK's read hit (read a bit, set it only when
//! clear) and adds a probationary window for new entries, a frequency filter (TinyLFU) for
//! who stays when the cache is full, and a ghost of evicted keys' fingerprints that adapts the
//! window's size to the workload: LRU-like on recency workloads, scan- and loop-resistant on
//! frequency ones. [`Policy::Clock`] is classic CLOCK. In a weighted cache the adaptive policy
//! may refuse a heavy newcomer that would displace several more popular entries
//! ([`InsertErrorKind::Rejected`]). Design and measurements: `docs/design.md`,
//! `docs/benchmarks.md`.
//!
//! ```
//! use clockline::{Cache, Policy};
//! let cache: Cache<u64, u64> = Cache::builder().max_capacity(100).build().unwrap();
//! // A hot set read again and again...
//! for _ in 0..5 {
//!     for k in 0..50 {
//!         if cache.get(&k).is_none() {
//!             cache.insert(k, k).unwrap();
//!         }
//!     }
//! }
//! // ...survives a scan of keys read once.
//! for k in 1_000..11_000 {
//!     if cache.get(&k).is_none() {
//!         cache.insert(k, k).unwrap();
//!     }
//! }
//! assert!((0..50).filter(|k| cache.peek(k).is_some()).count() >= 40);
//! # let _ = Policy::Clock;
//! ```
//!
//! # Consistency
//!
//! Each operation on one key is linearizable: a `get` that starts after an `insert` of the same
//! key returned sees that value or a newer one, never a torn or freed one. Two concurrent
//! inserts of one key leave exactly one entry. `len` and `weight` are snapshots that may be
//! stale while writers run; an iteration is not a snapshot: it sees each entry at most once and
//! may include entries added, and miss entries removed, while it walks. A value returned by reference lives as long as the
//! [`Pinned`] handle, even if it is evicted meanwhile.
//!
//! # Memory
//!
//! Per entry: one node (`K`, `V` and an 8-byte metadata word, padded to the alignment of `K`
//! and `V`; 24 bytes for `u64 -> u64`) plus table slots: 64 bytes per 7 slots, with 1.4 slots
//! per entry of capacity, so about 12.8 bytes per entry of capacity; the adaptive policy adds
//! about 2.5 (sketch, ghost, window queue). `u64 -> u64` at capacity costs 39.3 bytes per entry
//! measured (36.8 under [`Policy::Clock`]); see `docs/benchmarks.md`.
//!
//! Freed nodes are kept for reuse by the thread that freed them, if it also inserts: up to
//! 32 KiB per node size, at most four sizes (128 KiB) per thread, returned to the allocator
//! when the thread exits. A thread that only reads keeps none.
//!
//! # User code
//!
//! `Hash`, `Eq`, `Clone`, the weigher and `Drop` of keys and values are user code. If one
//! panics, the cache stays consistent and nothing is leaked or locked for good: the panic
//! propagates from the call that ran it, except a `Drop` run by epoch reclamation, which runs on
//! whichever thread collects garbage and is caught there (the panic hook still reports it). A
//! `Hash` or `Eq` that is not consistent is a logic error: entries may become unreachable until
//! evicted, but there is no undefined behaviour, hang or leak.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, missing_debug_implementations)]

mod budget;
mod builder;
mod cache;
mod clock;
mod compute;
mod error;
pub mod expiry;
mod janitor;
mod listener;
pub mod loader;
pub mod policy;
mod stats;
mod sync;
mod table;
pub mod versions;
mod warmup;

pub use builder::{Builder, INITIAL_WEIGHTED_ENTRIES};
pub use cache::{Cache, DefaultHashBuilder, Iter, Pinned};
pub use compute::{Compute, Computed};
pub use equivalent::Equivalent;
pub use error::{BuildError, InsertError, InsertErrorKind};
pub use expiry::{Clock, CoarseClock};
pub use listener::RemovalCause;
pub use policy::Policy;
pub use stats::CacheStats;
pub use table::MAX_WEIGHT;
pub use versions::Invalidation;
pub use warmup::{WarmUp, WarmUpReport};

/// Hands the values this thread has removed, replaced or evicted to the reclaimer and frees
/// those no reader can still see.
///
/// Removed entries are freed through epoch reclamation: each thread collects what it retires in
/// a small bag, which moves to a global queue when it is full or every so often, and is freed
/// once every thread pinned at the time has moved on. A thread that goes quiet can leave up to
/// a bagful (64) of values alive until it uses a cache again or exits. Call this where that
/// matters, e.g. before checking that a value's `Drop` ran, or before a thread parks for long.
/// clockline pins through its own thread-local handle, so `crossbeam_epoch::pin().flush()`
/// does not reach these values; this does.
///
/// One call frees what the epoch allows: it flushes until three flushes in a row free nothing,
/// at most 1,024 of them, so a backlog of up to about half a million values drains in one call
/// (it used to free at most 512 values per call: found by the thread-churn dry run). While another thread holds a guard (a
/// [`Pinned`] handle, a listener running) nothing retired since can be freed,
/// and the call returns after 16 flushes that free nothing (0.4 µs); call it
/// again later. Three idle flushes end it only once everything queued before the call has
/// left crossbeam's global queue, which other users of its default collector share; with more
/// than about 128 bags (8,000 objects) of their garbage queued in front, 16 flushes that free
/// none of this thread's values end it too, and the next call goes on. Calling it often is
/// cheap in memory too: while the epoch is stalled, repeated calls queue nothing more. Values retired by *other*
/// threads stay in their bags, so in a service with many threads, retired values can outweigh
/// the cache's `max_weight` (a 4 MiB blob cache left 38 MiB of values alive while idle
/// in `examples/service_sim.rs`). With tokio,
/// `runtime::Builder::on_thread_park(clockline::flush_deferred)` hands a worker's bag over
/// whenever it goes idle (9.9 MiB there; the rest sat in `spawn_blocking` threads).
pub fn flush_deferred() {
    sync::flush();
}

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
