//! CLOCK eviction: a hand sweeps the table's slots and evicts the first entry whose reference
//! bit is clear, clearing the bits it passes.
//!
//! The clock order is a fixed scattered order of the table's buckets (see
//! `RawTable::hand_slot`), all seven slots of a bucket together. New entries start with their bit set (they may
//! land just ahead of the hand), reads set the bit only when it is clear, and the hand is the only
//! writer that clears it. The hand is one `CachePadded` counter advanced with `fetch_add`, in
//! large tables a run of positions per thread at a time (`sync::claim`); it is
//! touched only by inserts that must make room, never by reads.
//!
//! # Orderings
//!
//! The hand index is Relaxed: two evicting threads may look at neighbouring slots in any order;
//! each slot is unlinked by at most one of them, because unlinking is a CAS of the slot pointer
//! (see the table's `# Orderings`). Reference bits are Relaxed hints: a read that races with the
//! hand may lose its mark, which costs the entry one round, never memory safety.

use crate::listener::RemovalCause;
use crate::sync::AtomicUsize;
use crate::table::{Node, RawTable, SLOTS};
use crossbeam_epoch::{Guard, Shared};
use crossbeam_utils::CachePadded;

/// How many positions of the hand a thread claims at a time (`sync::claim`) in a table of
/// `nslots` slots: [`RUN`](crate::sync::RUN) from 4,096 slots on, where 16 threads' runs
/// together are at most a sixteenth of a turn; one below, where a few threads' runs covered
/// most of a small table and the hand's second chance with it (`sync::claim` says how that
/// showed).
#[inline(always)]
fn run_for(nslots: usize) -> usize {
    if nslots >= 4096 {
        crate::sync::RUN
    } else {
        1
    }
}

/// A node the hand chose, not yet unlinked.
pub(crate) struct Victim<'g, K, V> {
    pub(crate) bucket: usize,
    pub(crate) slot: usize,
    pub(crate) node: Shared<'g, Node<K, V>>,
    pub(crate) cause: RemovalCause,
}

/// What [`Hand::find_victim`] passed by as recently used: how many main nodes, and the
/// heaviest of their weights.
#[derive(Default)]
pub(crate) struct Passed {
    pub(crate) hot: usize,
    pub(crate) heaviest: u64,
}

impl Passed {
    #[inline(always)]
    fn hot<K, V>(&mut self, node: &Node<K, V>) {
        self.hot += 1;
        self.heaviest = self.heaviest.max(node.weight());
    }
}

pub(crate) struct Hand {
    pos: CachePadded<AtomicUsize>,
    /// This hand's name for `sync::claim`'s per-thread runs of positions.
    id: usize,
}

impl Hand {
    pub(crate) fn new() -> Self {
        Self {
            pos: CachePadded::new(AtomicUsize::new(0)),
            id: crate::sync::claim_id(),
        }
    }

    /// Whether a new entry at position `pos` of the hand's turn starts referenced.
    ///
    /// Classic CLOCK puts a new page right behind the hand, which gives it exactly one turn
    /// (`nslots` steps) before the hand considers it. Here a node lands where its hash puts it,
    /// `t` steps ahead of the hand. Starting clear, it is considered after `t` steps; starting
    /// marked, after `t + nslots`. It starts marked when `t < 0.4 * nslots`, which gives a grace
    /// between 0.4 and 1.4 turns (0.9 on average). The split was measured on the 73 trace and
    /// capacity points of `../shared/traces` (docs/design.md): 0.4 beat 0.3, 0.45, 0.5, 0.55,
    /// 0.6 and 0.7, by 0.2 points on average over 0.5.
    pub(crate) fn starts_marked(&self, pos: usize, nslots: usize) -> bool {
        // This thread's position in its run of the hand while that run is current, else the
        // counter's (`sync::claimed_near`; Relaxed: a hint; an out-of-date position only moves
        // the grace by a few slots).
        let hand = crate::sync::claimed_near(&self.pos, self.id, 0) % nslots;
        let ahead = (pos + nslots - hand) % nslots;
        ahead * 5 < nslots * 2
    }

    /// Sweeps until it unlinks one entry and returns it, with why; the caller owns it and must
    /// release its budget and retire it. An entry that `expired` says has expired goes first,
    /// whatever its reference bit. Returns `None` after two full turns found nothing to evict
    /// (every slot empty or being written), so a caller never spins here forever.
    /// `doom` is told about the victim, with its cause, right before the unlink (for its
    /// tombstone, see `Inner::entomb`); it may be told and the unlink then fail. `spare` (or
    /// null) is never taken: the entry an update is making room to replace.
    pub(crate) fn evict<'g, K, V>(
        &self,
        table: &RawTable<K, V>,
        held: Option<usize>,
        spare: *const Node<K, V>,
        expired: impl Fn(&Node<K, V>) -> bool,
        mut doom: impl FnMut(&Node<K, V>, RemovalCause),
        guard: &'g Guard,
    ) -> Option<(Shared<'g, Node<K, V>>, RemovalCause)> {
        let nslots = table.nslots();
        let run = run_for(nslots);
        let mut walk = Walk::default();
        for _ in 0..2 * nslots + 1 {
            // Relaxed (inside `claim`): see `# Orderings`.
            let pos = crate::sync::claim(&self.pos, self.id, 0, run) % nslots;
            let (b, i) = walk.slot(table, pos);
            if i == 0 {
                // Entering a bucket: its nodes are loaded one per step from here on.
                table.prefetch_ahead(b, table.hand_next_bucket(b), guard);
            }
            let p = table.load(b, i, guard);
            // SAFETY: loaded under `guard`; nodes are retired through epoch.
            let Some(node) = (unsafe { p.as_ref() }) else {
                continue;
            };
            if std::ptr::eq(node, spare) {
                continue;
            }
            let cause = if expired(node) {
                RemovalCause::Expired
            } else if node.take_ref() {
                continue;
            } else {
                RemovalCause::Capacity
            };
            doom(node, cause);
            if table.unlink(b, i, p, held, guard) {
                return Some((p, cause));
            }
        }
        None
    }

    /// The adaptive policy's hand (see `crate::policy`): sweeps until it finds a victim in the
    /// main region and returns it *without* unlinking it, for the caller to weigh against a
    /// candidate from the window. Window nodes are passed by. A referenced node has its bit
    /// cleared and its frequency raised, and `harvest` is told (the hit reaches the sketch);
    /// an unreferenced node with a non-zero frequency has it lowered; an unreferenced node
    /// with none is the victim. An expired node is the victim at once. `None` after `limit`
    /// slots, or two full turns, without a victim (every node in the window, in flight, gone,
    /// or, with a limit, recently used). `passed` counts the main nodes passed because they were
    /// recently used, so a caller can tell a hot main region from a sparse stretch, and keeps the
    /// heaviest of their weights.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn find_victim<'g, K, V>(
        &self,
        table: &RawTable<K, V>,
        limit: Option<usize>,
        spare: *const Node<K, V>,
        expired: impl Fn(&Node<K, V>) -> bool,
        harvest: impl Fn(&Node<K, V>),
        passed: &mut Passed,
        guard: &'g Guard,
    ) -> Option<Victim<'g, K, V>> {
        let nslots = table.nslots();
        let run = run_for(nslots);
        let steps = (2 * nslots + 1).min(limit.unwrap_or(usize::MAX));
        let mut walk = Walk::default();
        for _ in 0..steps {
            // Relaxed (inside `claim`): see `# Orderings`.
            let pos = crate::sync::claim(&self.pos, self.id, 0, run) % nslots;
            let (bucket, slot) = walk.slot(table, pos);
            if slot == 0 {
                // Entering a bucket: its nodes are loaded one per step from here on.
                table.prefetch_ahead(bucket, table.hand_next_bucket(bucket), guard);
            }
            let node = table.load(bucket, slot, guard);
            // SAFETY: loaded under `guard`; nodes are retired through epoch.
            let Some(n) = (unsafe { node.as_ref() }) else {
                continue;
            };
            if std::ptr::eq(n, spare) {
                continue;
            }
            let cause = if expired(n) {
                RemovalCause::Expired
            } else if n.in_window() {
                continue;
            } else if n.take_ref() {
                n.bump_freq();
                harvest(n);
                passed.hot(n);
                continue;
            } else if n.drop_freq() {
                passed.hot(n);
                continue;
            } else {
                RemovalCause::Capacity
            };
            return Some(Victim {
                bucket,
                slot,
                node,
                cause,
            });
        }
        None
    }

    /// Evicts one entry of the neighbourhood of `hash`, whose buckets are all full, so that a
    /// new key of that neighbourhood has a slot. An expired entry first; then the CLOCK rule,
    /// applied to the neighbourhood:
    /// the first unmarked entry goes; if every entry is marked, all are cleared and the first
    /// goes. Returns `None` if nothing could be unlinked (every slot in flight).
    ///
    /// This is rare at the table's load (at most 0.71) with a good hash, and it is the price of
    /// bounded probes; with a degenerate hash it is how the cache stays correct, and small.
    ///
    /// Returns the victim with its cause. `doom` is told about the victim right before the
    /// unlink, as in [`Self::evict`].
    pub(crate) fn evict_near<'g, K, V>(
        &self,
        table: &RawTable<K, V>,
        hash: u64,
        expired: impl Fn(&Node<K, V>) -> bool,
        mut doom: impl FnMut(&Node<K, V>, RemovalCause),
        guard: &'g Guard,
    ) -> Option<(Shared<'g, Node<K, V>>, RemovalCause)> {
        let held = Some(table.home(hash));
        // An expired entry of the neighbourhood goes first, as under the hand.
        for b in table.neighbourhood(hash) {
            for i in 0..crate::table::SLOTS {
                let p = table.load(b, i, guard);
                // SAFETY: loaded under `guard`; nodes are retired through epoch.
                let Some(node) = (unsafe { p.as_ref() }).filter(|n| expired(n)) else {
                    continue;
                };
                doom(node, RemovalCause::Expired);
                if table.unlink(b, i, p, held, guard) {
                    return Some((p, RemovalCause::Expired));
                }
            }
        }
        for clear in [false, true] {
            for b in table.neighbourhood(hash) {
                for i in 0..crate::table::SLOTS {
                    let p = table.load(b, i, guard);
                    // SAFETY: loaded under `guard`; nodes are retired through epoch.
                    let Some(node) = (unsafe { p.as_ref() }) else {
                        continue;
                    };
                    let marked = if clear {
                        node.take_ref();
                        false
                    } else {
                        node.is_marked()
                    };
                    if marked {
                        continue;
                    }
                    doom(node, RemovalCause::Capacity);
                    if table.unlink(b, i, p, held, guard) {
                        return Some((p, RemovalCause::Capacity));
                    }
                }
            }
        }
        None
    }
}

/// One sweep's memory of where its last step was: the turn's bucket index (`pos / SLOTS`)
/// and that bucket. The next step is almost always in the same bucket or the next one, found
/// without [`RawTable::hand_slot`]'s multiplication and division; after another thread's
/// steps in between (or the turn's end) it looks the bucket up again.
#[derive(Default)]
struct Walk {
    last: Option<(usize, usize)>,
}

impl Walk {
    /// [`RawTable::hand_slot`] of `pos`.
    #[inline(always)]
    fn slot<K, V>(&mut self, table: &RawTable<K, V>, pos: usize) -> (usize, usize) {
        let (k, slot) = (pos / SLOTS, pos % SLOTS);
        let bucket = match self.last {
            Some((lk, lb)) if lk == k => lb,
            Some((lk, lb)) if lk + 1 == k => table.hand_next_bucket(lb),
            _ => table.hand_slot(pos).0,
        };
        debug_assert_eq!((bucket, slot), table.hand_slot(pos));
        self.last = Some((k, bucket));
        (bucket, slot)
    }
}
