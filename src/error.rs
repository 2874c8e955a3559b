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
    /// `time_to_live(Duration::ZERO)`: every entry would be born expired. (A zero TTL on one
    /// entry, through `insert_with_ttl`, is allowed: that entry is stored already expired.)
    ZeroTimeToLive,
    /// `time_to_idle(Duration::ZERO)`: as above.
    ZeroTimeToIdle,
    /// `janitor(Duration::ZERO)`: a janitor that never sleeps would spin a core.
    ZeroJanitorInterval,
    /// A janitor on a cache without expiry would have nothing to do.
    JanitorWithoutExpiry,
    /// `max_tombstones(0)`: a versioned cache needs room for at least one tombstone.
    ZeroTombstones,
    /// `max_tombstones` without `versioned`.
    TombstonesWithoutVersions,
    /// The janitor thread could not be started.
    JanitorSpawn(String),
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
            Self::ZeroTimeToLive => write!(f, "time_to_live must be longer than zero"),
            Self::ZeroTimeToIdle => write!(f, "time_to_idle must be longer than zero"),
            Self::ZeroJanitorInterval => write!(f, "the janitor interval must be longer than zero"),
            Self::JanitorWithoutExpiry => write!(
                f,
                "a janitor needs expiry (time_to_live, time_to_idle or expiry)"
            ),
            Self::ZeroTombstones => write!(f, "max_tombstones must be at least 1"),
            Self::TombstonesWithoutVersions => {
                write!(f, "max_tombstones needs a versioned cache")
            }
            Self::JanitorSpawn(e) => write!(f, "cannot start the janitor thread: {e}"),
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
    /// `insert_with_ttl` on a cache built without expiry: its entries have no deadline word.
    ExpiryDisabled,
    /// `insert_versioned` on a cache built without `versioned()`: its entries have no version.
    NotVersioned,
    /// The adaptive policy did not admit a new entry that needed more than one entry evicted
    /// to fit: its estimated recent frequency did not beat that of the most popular entry it
    /// would have displaced (see [`Policy::Adaptive`](crate::Policy::Adaptive)). Nothing was
    /// evicted for it, and the attempt counts: a key requested often enough gets in. Only
    /// caches with a weigher see this; under [`Policy::Clock`](crate::Policy::Clock) every
    /// entry that fits `max_weight` is admitted.
    Rejected {
        /// The weigher's answer for this entry.
        weight: u64,
    },
    /// A versioned insert no newer than what the cache knows of the key (its entry's or its
    /// tombstone's version). Nothing changed.
    Stale {
        /// The version offered.
        version: u64,
        /// The version the cache knows.
        current: u64,
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
            InsertErrorKind::ExpiryDisabled => {
                write!(
                    f,
                    "a per-entry time-to-live needs a cache built with time_to_live() or expiry()"
                )
            }
            InsertErrorKind::NotVersioned => {
                write!(f, "insert_versioned needs a cache built with versioned()")
            }
            InsertErrorKind::Rejected { weight } => write!(
                f,
                "entry of weight {weight} not admitted: the entries it would displace are used more"
            ),
            InsertErrorKind::Stale { version, current } => write!(
                f,
                "stale write: version {version} is not newer than the known version {current}"
            ),
        }
    }
}

impl<K, V> std::error::Error for InsertError<K, V> {}
