//! `Cache::builder()`: bounds, weigher and hasher, checked before anything is allocated.

use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::marker::PhantomData;

use crate::error::BuildError;
use crate::{Cache, DefaultHashBuilder, MAX_WEIGHT};

pub(crate) type Weigher<K, V> = Box<dyn Fn(&K, &V) -> u64 + Send + Sync>;

/// Entries the table of a weight-bounded cache without `max_capacity` starts with; it doubles
/// whenever the entry count, not the weight, is what is full. See [`Builder::max_capacity`].
#[cfg(not(clockline_loom))]
pub const INITIAL_WEIGHTED_ENTRIES: usize = 1024;
/// Under loom a growable table starts with room for one entry, so a model grows it with its
/// second insert (see `loom-tests/tests/grow.rs`).
#[cfg(clockline_loom)]
pub const INITIAL_WEIGHTED_ENTRIES: usize = 1;

/// Configures and builds a [`Cache`].
///
/// ```
/// let cache: clockline::Cache<String, Vec<u8>> = clockline::Cache::builder()
///     .max_weight(64 * 1024 * 1024)
///     .weigher(|k: &String, v: &Vec<u8>| (k.len() + v.len()) as u64)
///     .max_capacity(100_000)
///     .build()
///     .unwrap();
/// assert_eq!(cache.max_weight(), Some(64 * 1024 * 1024));
/// ```
pub struct Builder<K, V, S = DefaultHashBuilder> {
    max_capacity: Option<usize>,
    max_weight: Option<u64>,
    weigher: Option<Weigher<K, V>>,
    hasher: S,
    _marker: PhantomData<fn(K, V)>,
}

impl<K, V> Builder<K, V> {
    pub(crate) fn new() -> Self {
        Self {
            max_capacity: None,
            max_weight: None,
            weigher: None,
            hasher: DefaultHashBuilder::default(),
            _marker: PhantomData,
        }
    }
}

impl<K, V, S> Builder<K, V, S> {
    /// The most entries the cache holds at any instant; it also sizes the table, which is
    /// allocated once, up front (about 12.8 bytes per entry of capacity).
    ///
    /// A weight-bounded cache does not need it: without it the table starts with room for
    /// [`INITIAL_WEIGHTED_ENTRIES`] entries and doubles whenever it is full by count but not
    /// by weight, so only the weight budget decides what is evicted. Growing locks out writers
    /// (never readers) for the time it takes to copy the table's pointers; the entry count it
    /// may grow to is `max_weight` (entries of weight 0 still take a slot).
    pub fn max_capacity(mut self, entries: usize) -> Self {
        self.max_capacity = Some(entries);
        self
    }

    /// The most total weight the cache holds at any instant (one global budget). Needs a
    /// [`weigher`](Self::weigher).
    pub fn max_weight(mut self, weight: u64) -> Self {
        self.max_weight = Some(weight);
        self
    }

    /// Gives each entry its weight; called once per insert, before any lock is taken. An entry
    /// heavier than `max_weight` is refused with
    /// [`InsertErrorKind::TooHeavy`](crate::InsertErrorKind::TooHeavy).
    pub fn weigher(mut self, weigher: impl Fn(&K, &V) -> u64 + Send + Sync + 'static) -> Self {
        self.weigher = Some(Box::new(weigher));
        self
    }

    /// The hasher for keys (default: ahash with random keys).
    pub fn hasher<S2>(self, hasher: S2) -> Builder<K, V, S2> {
        Builder {
            max_capacity: self.max_capacity,
            max_weight: self.max_weight,
            weigher: self.weigher,
            hasher,
            _marker: PhantomData,
        }
    }

    /// Checks the configuration and allocates the table.
    pub fn build(self) -> Result<Cache<K, V, S>, BuildError>
    where
        K: Hash + Eq + Send + Sync + 'static,
        V: Send + Sync + 'static,
        S: BuildHasher,
    {
        if self.max_capacity == Some(0) {
            return Err(BuildError::ZeroCapacity);
        }
        match (self.max_weight, self.weigher.is_some()) {
            (Some(0), _) => return Err(BuildError::ZeroWeight),
            (Some(w), _) if w > MAX_WEIGHT => {
                return Err(BuildError::WeightTooLarge { requested: w })
            }
            (Some(_), false) | (None, true) => return Err(BuildError::WeigherMismatch),
            (None, false) if self.max_capacity.is_none() => return Err(BuildError::NoBound),
            _ => {}
        }
        let (entries, grow_limit) = match (self.max_capacity, self.max_weight) {
            (Some(n), _) => (n, None),
            (None, Some(w)) => {
                let limit = usize::try_from(w).unwrap_or(usize::MAX);
                (INITIAL_WEIGHTED_ENTRIES.min(limit), Some(limit))
            }
            (None, None) => unreachable!("checked above"),
        };
        Cache::from_parts(
            entries,
            grow_limit,
            self.max_weight,
            self.weigher,
            self.hasher,
        )
    }
}

impl<K, V, S> fmt::Debug for Builder<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("max_capacity", &self.max_capacity)
            .field("max_weight", &self.max_weight)
            .field("weigher", &self.weigher.is_some())
            .finish_non_exhaustive()
    }
}
