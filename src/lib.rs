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
//! # Consistency
//!
//! Each operation on one key is linearizable: a `get` that starts after an `insert` of the same
//! key returned sees that value or a newer one, never a torn or freed one. Two concurrent
//! inserts of one key leave exactly one entry. `len`, `weight` and iteration are snapshots that
//! may be stale while writers run. A value returned by reference lives as long as the
//! [`Pinned`] handle, even if it is evicted meanwhile.
//!
//! # Memory
//!
//! Per entry: one node (`K`, `V` and an 8-byte metadata word, padded to the alignment of `K`
//! and `V`; 24 bytes for `u64 -> u64`) plus table slots: 64 bytes per 7 slots, with 1.4 slots
//! per entry of capacity, so about 12.8 bytes per entry of capacity. `u64 -> u64` at capacity
//! costs about 37 bytes per entry (36.8 measured); see `docs/benchmarks.md`.
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
mod error;
pub mod expiry;
mod janitor;
mod listener;
pub mod loader;
mod stats;
mod sync;
mod table;
pub mod versions;
mod warmup;

pub use builder::{Builder, INITIAL_WEIGHTED_ENTRIES};
pub use cache::{Cache, DefaultHashBuilder, Iter, Pinned};
pub use equivalent::Equivalent;
pub use error::{BuildError, InsertError, InsertErrorKind};
pub use expiry::{Clock, CoarseClock};
pub use listener::RemovalCause;
pub use stats::CacheStats;
pub use table::MAX_WEIGHT;
pub use versions::Invalidation;
pub use warmup::{WarmUp, WarmUpReport};

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
