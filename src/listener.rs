//! The eviction listener: told once about every entry that leaves the cache, and why.
//!
//! Writers never call the listener while they hold a lock. Every unlink is a CAS, so exactly one
//! thread owns each departing node; that thread records it in its [`Notes`] and, once it has
//! released every lock, calls the listener with `&K`, `&V` and the [`RemovalCause`]. The node is
//! already retired to epoch by then but cannot be freed while the caller's guard lives, so the
//! references are valid for the call. The listener may call back into the cache.
//!
//! A listener that panics does not stop the others in the same batch: each call is caught, the
//! rest are made, and the first panic is raised again from the operation that triggered them
//! (or, on the janitor thread, swallowed after the hook has reported it). The cache is
//! consistent whatever the listener does: the entry is gone and its budget given back before
//! the listener runs.

use std::any::Any;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

use crossbeam_epoch::Shared;

use crate::table::Node;

/// Why an entry left the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RemovalCause {
    /// Evicted by CLOCK to make room (entry count, weight, or a full neighbourhood).
    Capacity,
    /// Its time-to-live or time-to-idle ran out; removed by the hand, a purge or the janitor,
    /// replaced after it had expired, or invalidated after it had expired
    /// ([`invalidate_versioned`](crate::Cache::invalidate_versioned)).
    Expired,
    /// Removed by [`remove`](crate::Cache::remove),
    /// [`invalidate_versioned`](crate::Cache::invalidate_versioned) or
    /// [`compute`](crate::Cache::compute)'s [`Remove`](crate::Compute::Remove).
    Explicit,
    /// Replaced by an insert of the same key.
    Replaced,
    /// Removed by [`clear`](crate::Cache::clear), expired or not.
    Cleared,
}

/// Lower-case words for logs: `capacity`, `expired`, `explicit`, `replaced`, `cleared`.
impl std::fmt::Display for RemovalCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Capacity => "capacity",
            Self::Expired => "expired",
            Self::Explicit => "explicit",
            Self::Replaced => "replaced",
            Self::Cleared => "cleared",
        })
    }
}

impl RemovalCause {
    /// True for the causes the cache chose (capacity, expiry), false for the user's own
    /// removals and replacements.
    pub fn was_evicted(self) -> bool {
        matches!(self, Self::Capacity | Self::Expired)
    }

    pub(crate) const ALL: [Self; 5] = [
        Self::Capacity,
        Self::Expired,
        Self::Explicit,
        Self::Replaced,
        Self::Cleared,
    ];

    pub(crate) fn index(self) -> usize {
        match self {
            Self::Capacity => 0,
            Self::Expired => 1,
            Self::Explicit => 2,
            Self::Replaced => 3,
            Self::Cleared => 4,
        }
    }
}

pub(crate) type Listener<K, V> = Box<dyn Fn(&K, &V, RemovalCause) + Send + Sync>;

/// Departed nodes whose listener calls are still owed, collected while locks are held and
/// delivered after; and the first panic of user code that the operation caught on its way
/// (a key's `Hash`, `Eq` or `Clone` while recording a tombstone), raised after the listener
/// calls. Empty, and never allocating, in a cache without a listener.
pub(crate) struct Notes<'g, K, V> {
    keep: bool,
    list: Vec<(Shared<'g, Node<K, V>>, RemovalCause)>,
    panic: Option<Box<dyn Any + Send>>,
}

impl<'g, K, V> Notes<'g, K, V> {
    pub(crate) fn new(keep: bool) -> Self {
        Self {
            keep,
            list: Vec::new(),
            panic: None,
        }
    }

    /// Keeps a panic of user code to raise once the operation is done and its locks are
    /// released (the first one, if several).
    #[cold]
    pub(crate) fn panicked(&mut self, payload: Box<dyn Any + Send>) {
        self.panic.get_or_insert(payload);
    }

    /// True if no listener call is owed.
    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    #[inline]
    pub(crate) fn push(&mut self, node: Shared<'g, Node<K, V>>, cause: RemovalCause) {
        if self.keep {
            self.list.push((node, cause));
        }
    }

    /// Calls `listener` once per recorded node, every call even if one panics; then raises the
    /// first panic, the operation's own (see [`Self::panicked`]) before a listener's. Call with
    /// no lock held, under the guard the nodes were seen with.
    ///
    /// Without a listener this is two tests and the drop of an empty list, inlined: as a call
    /// it was 20 of a replace's instructions (callgrind).
    #[inline(always)]
    pub(crate) fn deliver(mut self, listener: Option<&Listener<K, V>>) {
        let caught = self.panic.take();
        if let Some(listener) = listener {
            self.call(listener, caught);
        } else if let Some(p) = caught {
            resume_unwind(p);
        }
    }

    #[inline(never)]
    fn call(self, listener: &Listener<K, V>, caught: Option<Box<dyn Any + Send>>) {
        let mut first_panic = caught;
        for (node, cause) in self.list {
            // SAFETY: the node was unlinked and retired by this thread under the guard `'g`,
            // which is still alive, so epoch has not freed it.
            let node = unsafe { node.deref() };
            let (k, v) = node.kv();
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| listener(k, v, cause))) {
                first_panic.get_or_insert(p);
            }
        }
        if let Some(p) = first_panic {
            resume_unwind(p);
        }
    }
}
