//! Typed errors: what the builder refuses and what an insert can refuse.

use std::fmt;

/// Why [`Builder::build`](crate::Builder::build) refused a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// `max_capacity(0)`: a cache that can hold nothing would silently drop every insert.
    ZeroCapacity,
    /// `max_weight(0)`: as above, by weight.
    ZeroWeight,
    /// Neither `max_capacity` nor `max_weight` was given: the cache would be unbounded.
    NoBound,
    /// A `weigher` without `max_weight`, or `max_weight` without a `weigher`.
    WeigherMismatch,
    /// `max_weight` above [`MAX_WEIGHT`](crate::MAX_WEIGHT), the largest weight the cache can
    /// count per entry.
    WeightTooLarge {
        /// What was asked for.
        requested: u64,
    },
    /// The table for this many entries cannot be allocated.
    CapacityTooLarge {
        /// What was asked for.
        requested: usize,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroCapacity => write!(f, "max_capacity must be at least 1"),
            Self::ZeroWeight => write!(f, "max_weight must be at least 1"),
            Self::NoBound => write!(f, "a cache needs max_capacity, max_weight, or both"),
            Self::WeigherMismatch => {
                write!(f, "max_weight and weigher must be given together")
            }
            Self::WeightTooLarge { requested } => write!(
                f,
                "max_weight {requested} exceeds the largest supported weight {}",
                crate::MAX_WEIGHT
            ),
            Self::CapacityTooLarge { requested } => {
                write!(f, "cannot allocate a table for {requested} entries")
            }
        }
    }
}

impl std::error::Error for BuildError {}

/// Why an insert was refused. The key and value are handed back.
pub struct InsertError<K, V> {
    /// The key that was not inserted.
    pub key: K,
    /// The value that was not inserted.
    pub value: V,
    /// Why.
    pub kind: InsertErrorKind,
}

/// The reason inside an [`InsertError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InsertErrorKind {
    /// The entry alone weighs more than the whole budget; nothing was evicted for it.
    TooHeavy {
        /// The weigher's answer for this entry.
        weight: u64,
        /// The cache's `max_weight`.
        max_weight: u64,
    },
}

impl<K, V> fmt::Debug for InsertError<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InsertError")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl<K, V> fmt::Display for InsertError<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            InsertErrorKind::TooHeavy { weight, max_weight } => write!(
                f,
                "entry of weight {weight} exceeds the cache's max_weight {max_weight}"
            ),
        }
    }
}

impl<K, V> std::error::Error for InsertError<K, V> {}
