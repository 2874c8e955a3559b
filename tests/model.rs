//! Single-threaded behaviour against a model, driven by proptest.
//!
//! The model is a `HashMap` of what the cache holds plus its bounds. Reads, removes and `clear`
//! must match it exactly. An insert may evict, so after each insert the test takes the cache's
//! contents (through `pin().iter()`) and checks them against the model before adopting them:
//!
//! * the new value is there, and every other entry was already in the model with the same value
//!   (nothing stale, nothing resurrected, nothing invented);
//! * nothing was evicted when the entry fitted (count below `max_capacity`, or the key already
//!   present, and the weight within `max_weight`); at most one entry was evicted for a count-only
//!   insert; and at least one evicted entry was necessary (putting it back breaks a bound);
//! * a refused insert (`TooHeavy`) hands back the pair and changes nothing.
//!
//! After every operation: `len()`, `weight()` and `check_invariants()` agree with the contents,
//! and the bounds hold. The differential tests use a capacity that holds the whole key space:
//! then the cache must equal a plain `HashMap` after every operation.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

use clockline::{Cache, InsertErrorKind};
use proptest::prelude::*;

/// A value that names its key, the insert that made it, and its weight.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Val {
    key: u8,
    seq: u64,
    weight: u64,
}

/// SipHash with fixed keys: a failing case replays the same way.
type Fixed = BuildHasherDefault<DefaultHasher>;

/// Sends the keys to a handful of hashes, so that many keys share a home bucket and tag: every
/// probe, overflow count and unlink path is taken.
#[derive(Clone, Default)]
struct FewHashes;

struct FewHasher(u64);

impl Hasher for FewHasher {
    fn finish(&self) -> u64 {
        // Three distinct hashes, with different home buckets and tags.
        (self.0 % 3).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.wrapping_mul(31).wrapping_add(u64::from(b));
        }
    }
}

impl BuildHasher for FewHashes {
    type Hasher = FewHasher;
    fn build_hasher(&self) -> FewHasher {
        FewHasher(0)
    }
}

#[derive(Clone, Debug)]
enum Op {
    Insert(u8, u64),
    PinnedInsert(u8, u64),
    Get(u8),
    PinnedGet(u8),
    Peek(u8),
    PinnedPeek(u8),
    Contains(u8),
    PinnedContains(u8),
    Remove(u8),
    PinnedRemove(u8),
    Clear,
}

/// Operations over keys `0..keys`, with weights `0..=max_w` (heavier than some budgets).
///
/// Generated as plain tuples and mapped: proptest's `prop_oneof!` is several times slower to
/// generate in a debug build, and this keeps shrinking (towards `Insert(0, 0)`) intact.
fn ops(keys: u8, max_w: u64, len: usize) -> impl Strategy<Value = Vec<Op>> {
    let op = (0u8..24, 0..keys, 0..=max_w).prop_map(|(kind, k, w)| match kind {
        0..=5 => Op::Insert(k, w),
        6..=7 => Op::PinnedInsert(k, w),
        8..=10 => Op::Get(k),
        11 => Op::PinnedGet(k),
        12 => Op::Peek(k),
        13 => Op::PinnedPeek(k),
        14 => Op::Contains(k),
        15 => Op::PinnedContains(k),
        16..=18 => Op::Remove(k),
        19 => Op::PinnedRemove(k),
        20 => Op::Clear,
        _ => Op::Get(k),
    });
    prop::collection::vec(op, 1..len)
}

/// The cache's bounds and what it holds.
struct Model {
    cap: usize,
    max_weight: Option<u64>,
    map: HashMap<u8, Val>,
    seq: u64,
    /// When set, the cache holds the whole key space and must never evict.
    exact: bool,
}

impl Model {
    fn new(cap: usize, max_weight: Option<u64>, exact: bool) -> Self {
        Self {
            cap,
            max_weight,
            map: HashMap::new(),
            seq: 0,
            exact,
        }
    }

    fn weight_of(map: &HashMap<u8, Val>) -> u64 {
        map.values().map(|v| v.weight).sum()
    }

    fn weighted(&self) -> bool {
        self.max_weight.is_some()
    }
}

/// `cap: None` builds a weight-bounded cache without `max_capacity`: its table starts with room
/// for `min(INITIAL_WEIGHTED_ENTRIES, max_weight)` entries (the budgets here never let it grow).
fn build<S: BuildHasher + Send + Sync + 'static>(
    cap: Option<usize>,
    max_weight: Option<u64>,
    hasher: S,
) -> Cache<u8, Val, S> {
    let mut b = Cache::builder();
    if let Some(cap) = cap {
        b = b.max_capacity(cap);
    }
    match max_weight {
        Some(w) => b
            .max_weight(w)
            .weigher(|_: &u8, v: &Val| v.weight)
            .hasher(hasher)
            .build(),
        None => b.hasher(hasher).build(),
    }
    .expect("valid configuration")
}

/// The cache's contents, checked for duplicates and for values that name another key.
fn contents<S: BuildHasher>(cache: &Cache<u8, Val, S>) -> HashMap<u8, Val> {
    let pinned = cache.pin();
    let mut out = HashMap::new();
    for (k, v) in pinned.iter() {
        assert_eq!(*k, v.key, "value {v:?} found under key {k}");
        assert!(out.insert(*k, v.clone()).is_none(), "key {k} seen twice");
    }
    out
}

/// Checks everything that must hold between operations; returns the contents.
fn check_state<S: BuildHasher>(cache: &Cache<u8, Val, S>, m: &Model) -> HashMap<u8, Val> {
    let now = contents(cache);
    assert_eq!(cache.len(), now.len(), "len() against the entries");
    assert_eq!(cache.is_empty(), now.is_empty());
    assert!(
        cache.len() <= m.cap,
        "len {} > capacity {}",
        cache.len(),
        m.cap
    );
    assert_eq!(cache.capacity(), m.cap);
    assert_eq!(cache.max_weight(), m.max_weight);
    match m.max_weight {
        Some(max) => {
            assert_eq!(
                cache.weight(),
                Model::weight_of(&now),
                "weight() against the entries"
            );
            assert!(cache.weight() <= max, "weight {} > {max}", cache.weight());
        }
        None => assert_eq!(cache.weight(), 0),
    }
    assert_eq!(cache.check_invariants(), Ok(now.len()));
    now
}

/// Applies `op` to the cache and the model and checks the outcome.
fn step<S: BuildHasher>(cache: &Cache<u8, Val, S>, m: &mut Model, op: &Op) {
    match *op {
        Op::Insert(k, w) | Op::PinnedInsert(k, w) => {
            m.seq += 1;
            let v = Val {
                key: k,
                seq: m.seq,
                weight: w,
            };
            let res = if matches!(op, Op::Insert(..)) {
                cache.insert(k, v.clone())
            } else {
                cache.pin().insert(k, v.clone())
            };
            let prev = std::mem::take(&mut m.map);
            match m.max_weight {
                Some(max) if w > max => {
                    let err = res.expect_err("an entry heavier than max_weight is refused");
                    assert_eq!(
                        err.kind,
                        InsertErrorKind::TooHeavy {
                            weight: w,
                            max_weight: max
                        }
                    );
                    assert_eq!((err.key, &err.value), (k, &v), "the pair is handed back");
                    let now = check_state(cache, m);
                    assert_eq!(now, prev, "a refused insert changes nothing");
                    m.map = now;
                    return;
                }
                Some(_) if matches!(&res, Err(e) if e.kind == InsertErrorKind::Rejected { weight: w }) =>
                {
                    // The adaptive policy did not admit a heavy newcomer (tests/policy.rs).
                    let err = res.unwrap_err();
                    assert_eq!((err.key, &err.value), (k, &v), "the pair is handed back");
                    assert!(
                        !prev.contains_key(&k),
                        "only a new key is refused admission"
                    );
                    let now = check_state(cache, m);
                    assert_eq!(now, prev, "a refused insert changes nothing");
                    m.map = now;
                    return;
                }
                _ => res.expect("insert succeeds"),
            }
            let now = check_state(cache, m);
            assert_eq!(now.get(&k), Some(&v), "the inserted value is there");
            for (key, val) in &now {
                if *key != k {
                    assert_eq!(prev.get(key), Some(val), "entry {key} is stale or invented");
                }
            }
            let evicted: Vec<&Val> = prev
                .iter()
                .filter(|(key, _)| **key != k && !now.contains_key(key))
                .map(|(_, v)| v)
                .collect();
            let old_w = prev.get(&k).map_or(0, |o| o.weight);
            let count_fits = prev.contains_key(&k) || prev.len() < m.cap;
            let weight_fits = m
                .max_weight
                .map_or(true, |max| Model::weight_of(&prev) - old_w + w <= max);
            if count_fits && weight_fits {
                assert!(
                    evicted.is_empty(),
                    "insert of {k} (weight {w}) fitted but evicted {evicted:?}; before: {prev:?}"
                );
            }
            if !m.weighted() {
                assert!(evicted.len() <= 1, "count-only insert evicted {evicted:?}");
            }
            if !evicted.is_empty() {
                let weight_now = Model::weight_of(&now);
                let needed = evicted.iter().any(|e| {
                    now.len() + 1 > m.cap
                        || m.max_weight.is_some_and(|max| weight_now + e.weight > max)
                });
                assert!(
                    needed,
                    "insert of {k} (weight {w}) evicted more than it needed: {evicted:?}; \
                     before: {prev:?}; after: {now:?}"
                );
            }
            if m.exact {
                assert!(evicted.is_empty(), "evicted {evicted:?} below capacity");
            }
            m.map = now;
            return;
        }
        Op::Get(k) => {
            assert_eq!(cache.get(&k), m.map.get(&k).cloned(), "get({k})");
        }
        Op::PinnedGet(k) => {
            assert_eq!(cache.pin().get(&k), m.map.get(&k), "pinned get({k})");
        }
        Op::Peek(k) => {
            assert_eq!(cache.peek(&k), m.map.get(&k).cloned(), "peek({k})");
        }
        Op::PinnedPeek(k) => {
            assert_eq!(cache.pin().peek(&k), m.map.get(&k), "pinned peek({k})");
        }
        Op::Contains(k) => {
            assert_eq!(
                cache.contains_key(&k),
                m.map.contains_key(&k),
                "contains_key({k})"
            );
        }
        Op::PinnedContains(k) => {
            let pinned = cache.pin();
            assert_eq!(
                pinned.contains_key(&k),
                m.map.contains_key(&k),
                "pinned contains({k})"
            );
        }
        Op::Remove(k) => {
            assert_eq!(cache.remove(&k), m.map.remove(&k), "remove({k})");
        }
        Op::PinnedRemove(k) => {
            let expected = m.map.remove(&k);
            assert_eq!(
                cache.pin().remove(&k),
                expected.as_ref(),
                "pinned remove({k})"
            );
        }
        Op::Clear => {
            cache.clear();
            m.map.clear();
            assert!(cache.is_empty());
        }
    }
    // Reads, removes and clear evict nothing: the cache is exactly the model.
    let now = check_state(cache, m);
    assert_eq!(now, m.map, "after {op:?}");
}

fn run<S: BuildHasher + Send + Sync + 'static>(
    cap: Option<usize>,
    max_weight: Option<u64>,
    hasher: S,
    ops: &[Op],
    exact: bool,
) {
    let cache = build(cap, max_weight, hasher);
    if let Some(cap) = cap {
        assert_eq!(cache.capacity(), cap);
    }
    let mut m = Model::new(cache.capacity(), max_weight, exact);
    check_state(&cache, &m);
    for op in ops {
        step(&cache, &mut m, op);
    }
    if exact {
        // With room for every key the cache is the model: compare lookups key by key too.
        for k in 0..=u8::MAX {
            assert_eq!(cache.peek(&k), m.map.get(&k).cloned());
        }
    }
}

/// proptest's defaults: 256 cases, or `PROPTEST_CASES`.
fn config() -> ProptestConfig {
    ProptestConfig::default()
}

proptest! {
    #![proptest_config(config())]

    /// Count-bounded caches smaller than the key space: evictions checked as above.
    #[test]
    fn count_bounded(cap in 1usize..20, ops in ops(24, 0, 300)) {
        run(Some(cap), None, Fixed::default(), &ops, false);
    }

    /// Count- and weight-bounded caches: weights 0..=12 against budgets of 1..=30, so some
    /// inserts are refused and some evict several entries.
    #[test]
    fn weight_bounded(cap in 1usize..20, max_w in 1u64..=30, ops in ops(24, 12, 300)) {
        run(Some(cap), Some(max_w), Fixed::default(), &ops, false);
    }

    /// Weight-bounded without `max_capacity`: the table's entry bound is `max_weight` (entries
    /// of weight 0 still take a slot), so both bounds evict.
    #[test]
    fn weight_only(max_w in 1u64..=30, ops in ops(24, 12, 300)) {
        run(None, Some(max_w), Fixed::default(), &ops, false);
    }

    /// As `count_bounded` and `weight_bounded`, with three hashes for all keys: long probes,
    /// shared tags, overflow counts going up and down.
    #[test]
    fn colliding_hashes(cap in 1usize..20, max_w in 1u64..=30, weighted: bool,
                        ops in ops(24, 12, 300)) {
        run(Some(cap), weighted.then(|| max_w), FewHashes, &ops, false);
    }

    /// Room for the whole key space: the cache must equal a HashMap exactly.
    #[test]
    fn differential_count(cap in 16usize..64, ops in ops(16, 0, 300)) {
        run(Some(cap), None, Fixed::default(), &ops, true);
    }

    /// Room for the whole key space by count and by weight (16 keys of at most 12).
    #[test]
    fn differential_weighted(cap in 16usize..64, extra in 0u64..100, ops in ops(16, 12, 300)) {
        run(Some(cap), Some(16 * 12 + extra), Fixed::default(), &ops, true);
    }

    /// The default (randomly seeded) hasher, both ways.
    #[test]
    fn default_hasher(cap in 1usize..20, ops in ops(24, 0, 200)) {
        run(Some(cap), None, clockline::DefaultHashBuilder::default(), &ops, false);
        run(Some(64), None, clockline::DefaultHashBuilder::default(), &ops, true);
    }
}

/// A fixed sequence that fills a cache one below capacity, then checks that the last insert
/// before the bound evicts nothing and the next one evicts exactly one.
#[test]
fn fill_to_capacity_evicts_only_beyond_it() {
    for cap in 1..40 {
        let cache = build(Some(cap), None, Fixed::default());
        let mut m = Model::new(cap, None, false);
        for k in 0..cap as u8 {
            step(&cache, &mut m, &Op::Insert(k, 0));
            assert_eq!(cache.len(), usize::from(k) + 1);
        }
        step(&cache, &mut m, &Op::Insert(200, 0));
        assert_eq!(cache.len(), cap);
        assert!(cache.contains_key(&200));
    }
}
