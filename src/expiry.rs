//! Expiry: time-to-live, time-to-idle, the clock they are measured with, and the per-entry
//! words that carry deadlines (only in caches that use them).
//!
//! An entry's deadline is a `u64` of nanoseconds on the cache's [`Clock`], stored in an
//! extension word after the node (`ExtLayout`); `NEVER` means no deadline. In a cache
//! without a weigher, whose entries all weigh 0, the TTL deadline goes in the node's weight bits
//! instead, in whole milliseconds rounded up, so expiry adds no word at all (39.3 bytes per
//! `u64 -> u64` entry with or without it; 36.8 under `Policy::Clock`). A read compares
//! it with the clock and treats an entry at or past its deadline as absent; it does not remove
//! it (a read writes nothing shared). The CLOCK hand takes expired entries first when it passes
//! them, [`Cache::purge_expired`](crate::Cache::purge_expired) sweeps on demand, and an optional
//! janitor thread sweeps periodically.
//!
//! # Precision, and what a hit pays for it
//!
//! Reading a clock on every hit costs about as much as the hit: on the project's build VMs
//! `CLOCK_MONOTONIC_COARSE` takes 12.5 ns, `rdtsc` 19 ns and `Instant::now` 57 ns, against a
//! read hit of about 30 ns. So by default a cache with expiry reads a *cached tick*: one
//! process-wide `AtomicU64` that a ticker thread (`clockline-ticker`) refreshes from
//! [`CoarseClock`] every millisecond. A hit loads that word (a line every core keeps shared,
//! written 1,000 times a second) and compares it with the entry's deadline. The ticker starts
//! when the first cache with expiry and the default clock is built, and stops about a second
//! after the last one is dropped; without expiry there is no ticker.
//!
//! An entry is treated as expired from the first tick at or after its deadline: never early,
//! and late by at most 1 ms of rounding (a cache without a weigher keeps the TTL deadline in the
//! node's unused weight bits, in whole milliseconds rounded up), plus the coarse clock's
//! resolution (the kernel tick, 1 to 4 ms;
//! [`CoarseClock::resolution`]) plus the ticker's period (1 ms), unless the ticker thread is
//! starved of CPU for longer. The deadline itself is set from the tick that the insert (or, for
//! the time-to-idle, the read) saw, which trails real time by up to that same lag: measured
//! against real time, an entry may so also expire up to the lag *before* its TTL has passed
//! since its insert, or its TTI since its last read (`examples/service_sim.rs
//! --default-clock 1` on a loaded 2-core VM: up to 4.3 ms, once 6.6 ms). Where that is not
//! acceptable, pass [`CoarseClock`] (read on every hit, no thread; the same lag, without the
//! ticker's period) or another [`Clock`] to [`Builder::clock`](crate::Builder::clock).
//! `docs/benchmarks.md` has the measured cost of each.
//!
//! A [`Pinned`](crate::Pinned) handle reads the clock once, when it is created, and judges every
//! lookup through it at that instant: time stands still for the life of a handle, which is one
//! request.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::sync::Ordering;
use crate::table::Node;

/// The deadline of an entry that never expires.
pub(crate) const NEVER: u64 = u64::MAX;
/// An idle deadline that a writer has settled: expired at every instant, and never moved
/// again ([`Expiry::settle_expired`]). No entry is born with it (a TTI's deadline is at least
/// the TTI after the clock's start, and a zero TTI at 0 is expired at every instant anyway).
pub(crate) const SETTLED: u64 = 0;

/// Nanoseconds per millisecond: the unit of a deadline packed into a node's weight bits.
pub(crate) const MS: u64 = 1_000_000;

/// A monotonic time source for expiry. Inject one with
/// [`Builder::clock`](crate::Builder::clock) to move time in tests without sleeping.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// #[derive(Default)]
/// struct Manual(AtomicU64);
/// impl clockline::Clock for Manual {
///     fn now(&self) -> Duration {
///         Duration::from_nanos(self.0.load(Ordering::Relaxed))
///     }
/// }
///
/// let clock = Arc::new(Manual::default());
/// let cache: clockline::Cache<u32, u32> = clockline::Cache::builder()
///     .max_capacity(100)
///     .time_to_live(Duration::from_secs(60))
///     .clock(clock.clone())
///     .build()
///     .unwrap();
/// cache.insert(1, 1).unwrap();
/// clock.0.store(Duration::from_secs(60).as_nanos() as u64, Ordering::Relaxed);
/// assert_eq!(cache.get(&1), None, "expired at its deadline");
/// ```
pub trait Clock: Send + Sync + 'static {
    /// Time since an arbitrary fixed origin. Must never go backwards.
    fn now(&self) -> Duration;

    /// Waits `d` on this clock. Used by [warm-up](crate::WarmUp)'s rate limit, which sleeps
    /// until its next start time on this clock: a clock whose time does not pass on its own (a
    /// test's manual clock) must override this to advance itself by `d`, or the default
    /// real-time sleep lets that schedule fall further behind with every key (a session-store
    /// dry run: 20 keys at 100 per second took 1.9 s instead of 0.2 s).
    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> Duration {
        (**self).now()
    }
    fn sleep(&self, d: Duration) {
        (**self).sleep(d)
    }
}

/// The default clock: the kernel's coarse monotonic clock on Linux (one read of the vDSO page,
/// no system call, tick resolution), `Instant` elsewhere.
#[derive(Clone, Copy, Debug, Default)]
pub struct CoarseClock {
    #[cfg(not(target_os = "linux"))]
    origin: Option<std::time::Instant>,
}

impl CoarseClock {
    /// The clock's resolution: the kernel tick on Linux (typically 1 to 4 ms).
    pub fn resolution() -> Duration {
        // Miri runs `clock_gettime` but not `clock_getres`: it gets the fallback below.
        #[cfg(all(target_os = "linux", not(miri)))]
        {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: `ts` is a valid, writable timespec.
            if unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut ts) } == 0 {
                return Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32);
            }
            Duration::from_millis(4)
        }
        #[cfg(all(target_os = "linux", miri))]
        {
            Duration::from_millis(4)
        }
        #[cfg(not(target_os = "linux"))]
        {
            Duration::from_nanos(1)
        }
    }

    #[inline]
    fn nanos(&self) -> u64 {
        #[cfg(target_os = "linux")]
        {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC_COARSE exists on
            // every Linux since 2.6.32 and cannot fail with a valid pointer.
            unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
            (ts.tv_sec as u64)
                .saturating_mul(1_000_000_000)
                .saturating_add(ts.tv_nsec as u64)
        }
        #[cfg(not(target_os = "linux"))]
        {
            use std::sync::OnceLock;
            static ORIGIN: OnceLock<std::time::Instant> = OnceLock::new();
            let origin = self
                .origin
                .unwrap_or_else(|| *ORIGIN.get_or_init(std::time::Instant::now));
            u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX - 1)
        }
    }
}

impl Clock for CoarseClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos())
    }
}

/// The process-wide cached tick (see the module docs, "Precision").
pub(crate) mod ticker {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Mutex, PoisonError};
    use std::time::Duration;

    use crossbeam_utils::CachePadded;

    use super::CoarseClock;
    use crate::sync::os_thread;

    pub(super) const PERIOD: Duration = Duration::from_millis(1);

    /// Idle ticks (no cache registered) before the thread stops: about a second.
    const LINGER: u32 = 1_000;

    /// The last coarse-clock reading, in nanoseconds and in whole milliseconds (its floor):
    /// one line, written together, so a hit that reads either loads a line it already shares.
    /// The milliseconds spare a packed-TTL hit the division (`Cache::lookup`). Not loom types:
    /// the ticker is a real thread and no model uses it (models inject their own clock).
    struct Tick {
        nanos: AtomicU64,
        ms: AtomicU64,
    }
    static NOW: CachePadded<Tick> = CachePadded::new(Tick {
        nanos: AtomicU64::new(0),
        ms: AtomicU64::new(0),
    });
    /// (caches using the tick, whether the thread runs)
    static STATE: Mutex<(usize, bool)> = Mutex::new((0, false));

    #[inline(always)]
    pub(super) fn now() -> u64 {
        // Acquire: pairs with `refresh`'s Release, so that whoever reads a tick here (an
        // insert computing a deadline) also sees the milliseconds word at least as far on,
        // and so does every thread that later acquires what it published (see `refresh`).
        // A reader may see the tick up to one period stale, which the precision statement
        // includes.
        NOW.nanos.load(Ordering::Acquire)
    }

    /// `now() / MS`, without the division. Never behind what `now()` has shown a thread that
    /// this one synchronized with (see `refresh`); it may be a tick ahead of `now()`.
    #[inline(always)]
    pub(crate) fn now_ms() -> u64 {
        // Relaxed: a timestamp; its lower bound comes from the happens-before described in
        // `refresh`, not from this load.
        NOW.ms.load(Ordering::Relaxed)
    }

    /// Moves the tick on: the milliseconds word first, then the nanoseconds with Release.
    ///
    /// # Orderings
    ///
    /// An insert reads `now()` (Acquire) and publishes its node (Release); a lookup on the
    /// packed path acquires the node and then reads `now_ms()`. If the insert read a tick `t`,
    /// the store of `t / MS` (or more) happened before it, and so before the lookup's read:
    /// the lookup sees at least `t / MS`. So an entry inserted with a zero TTL (deadline
    /// `t / MS`) is expired for every lookup that can find it. With the words stored the other
    /// way round (nanoseconds first, both Relaxed), a lookup could read the previous
    /// millisecond and return that entry (found in review; not reproduced: the window is the
    /// ticker being descheduled between its two stores). `fetch_max`: neither word goes
    /// backwards when two refreshes race (the ticker and `acquire`).
    fn refresh() {
        let nanos = CoarseClock::default().nanos();
        // Relaxed: published by the Release below.
        NOW.ms.fetch_max(nanos / super::MS, Ordering::Relaxed);
        // Release: see `# Orderings` above.
        NOW.nanos.fetch_max(nanos, Ordering::Release);
    }

    /// Registers one more cache; starts the thread if none runs. False if it cannot start.
    pub(super) fn acquire() -> bool {
        let mut st = STATE.lock().unwrap_or_else(PoisonError::into_inner);
        refresh();
        if !st.1 {
            let spawned = os_thread::Builder::new()
                .name("clockline-ticker".into())
                .spawn(|| {
                    // Ticks in a row with no cache registered. The thread stops after
                    // `LINGER` of them, not at the first: a program that builds and drops
                    // short-lived caches one after another started a thread for nearly each
                    // (779 spawns for 1,000 caches made 2 ms apart, in the thread-churn dry
                    // run).
                    let mut idle = 0;
                    loop {
                        os_thread::sleep(PERIOD);
                        let st = STATE.lock().unwrap_or_else(PoisonError::into_inner);
                        if st.0 == 0 {
                            idle += 1;
                            if idle >= LINGER {
                                // Decided under the lock, so `acquire` either sees `running`
                                // still true before this (and the count it raised keeps us
                                // going) or false after it (and starts a new thread).
                                drop(StopGuard(st));
                                return;
                            }
                        } else {
                            idle = 0;
                        }
                        drop(st);
                        refresh();
                    }
                });
            if spawned.is_err() {
                return false;
            }
            st.1 = true;
        }
        st.0 += 1;
        true
    }

    struct StopGuard<'a>(std::sync::MutexGuard<'a, (usize, bool)>);
    impl Drop for StopGuard<'_> {
        fn drop(&mut self) {
            self.0 .1 = false;
        }
    }

    pub(super) fn release() {
        STATE.lock().unwrap_or_else(PoisonError::into_inner).0 -= 1;
    }
}

/// A cache's share of the process-wide ticker: registered on creation, released on drop.
pub(crate) struct TickerHandle(());

impl TickerHandle {
    fn new() -> Option<Self> {
        // Not `then_some(Self(()))`: that builds the handle either way, and dropping the
        // unused one would release a registration that was never made.
        if ticker::acquire() {
            Some(Self(()))
        } else {
            None
        }
    }
}

impl Drop for TickerHandle {
    fn drop(&mut self) {
        ticker::release();
    }
}

/// Which clock a cache reads: the cached tick, the coarse clock inline, or the user's through a
/// pointer.
pub(crate) enum ClockSource {
    Ticker(TickerHandle),
    Coarse(CoarseClock),
    Custom(Arc<dyn Clock>),
}

impl ClockSource {
    /// Now, in nanoseconds on this clock; never [`NEVER`].
    /// The default for a cache with expiry: the cached tick, or the coarse clock if the ticker
    /// thread cannot be started.
    pub(crate) fn default_for_expiry() -> Self {
        match TickerHandle::new() {
            Some(t) => Self::Ticker(t),
            None => Self::Coarse(CoarseClock::default()),
        }
    }

    #[inline]
    pub(crate) fn now(&self) -> u64 {
        let n = match self {
            Self::Ticker(_) => ticker::now(),
            Self::Coarse(c) => c.nanos(),
            Self::Custom(c) => u64::try_from(c.now().as_nanos()).unwrap_or(u64::MAX),
        };
        n.min(NEVER - 1)
    }

    /// True for the cached tick, whose milliseconds [`ticker::now_ms`] reads directly.
    pub(crate) fn is_ticker(&self) -> bool {
        matches!(self, Self::Ticker(_))
    }

    /// Starts timing something (a load): on the injected clock if there is one, else with
    /// `Instant`, which is finer than the coarse clock's tick.
    pub(crate) fn stopwatch(&self) -> Stopwatch {
        match self {
            Self::Ticker(_) | Self::Coarse(_) => Stopwatch::Real(std::time::Instant::now()),
            Self::Custom(_) => Stopwatch::Clock(self.now()),
        }
    }

    /// Nanoseconds since `start`.
    pub(crate) fn elapsed(&self, start: &Stopwatch) -> u64 {
        match start {
            Stopwatch::Real(t) => u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX),
            Stopwatch::Clock(t) => self.now().saturating_sub(*t),
        }
    }

    pub(crate) fn sleep(&self, d: Duration) {
        match self {
            Self::Ticker(_) | Self::Coarse(_) => std::thread::sleep(d),
            Self::Custom(c) => c.sleep(d),
        }
    }
}

impl fmt::Debug for ClockSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ticker(_) => f.write_str("cached tick"),
            Self::Coarse(_) => f.write_str("CoarseClock"),
            Self::Custom(_) => f.write_str("custom Clock"),
        }
    }
}

/// A start time from [`ClockSource::stopwatch`].
pub(crate) enum Stopwatch {
    Real(std::time::Instant),
    Clock(u64),
}

/// `now + d` in clock nanoseconds, saturating to [`NEVER`]: a TTL too large for the clock
/// means "never expires", not a wrap to the past.
pub(crate) fn deadline(now: u64, d: Duration) -> u64 {
    let d = u64::try_from(d.as_nanos()).unwrap_or(NEVER);
    now.saturating_add(d)
}

/// Which extension words a cache's nodes carry, and where. Every node of one cache has the
/// same layout; a plain cache has none.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ExtLayout {
    pub(crate) len: usize,
    /// The TTL deadline lives in the node's weight bits, in milliseconds (a cache without a
    /// weigher, whose weights are all 0): no word for it.
    pub(crate) packed_deadline: bool,
    pub(crate) deadline: Option<usize>,
    pub(crate) idle: Option<usize>,
    pub(crate) version: Option<usize>,
}

impl ExtLayout {
    /// `pack`: the cache has no weigher, so a TTL deadline can go in the weight bits.
    pub(crate) fn new(deadline: bool, idle: bool, version: bool, pack: bool) -> Self {
        let mut l = Self {
            packed_deadline: deadline && pack,
            ..Self::default()
        };
        for (on, field) in [
            (deadline && !pack, &mut l.deadline),
            (idle, &mut l.idle),
            (version, &mut l.version),
        ] {
            if on {
                *field = Some(l.len);
                l.len += 1;
            }
        }
        l
    }

    /// True if entries can carry a TTL deadline.
    pub(crate) fn has_deadline(&self) -> bool {
        self.packed_deadline || self.deadline.is_some()
    }

    /// The version stored with `node`, if this cache keeps versions.
    pub(crate) fn version<K, V>(&self, node: &Node<K, V>) -> Option<u64> {
        // Relaxed: written before the node's Release publish; the reader found the node
        // through an Acquire load.
        self.version.map(|i| node.ext(i).load(Ordering::Relaxed))
    }
}

/// A cache's expiry settings (the clock is the cache's, see `Inner::now`).
#[derive(Debug)]
pub(crate) struct Expiry {
    /// Default time-to-live.
    pub(crate) ttl: Option<Duration>,
    /// Time-to-idle.
    pub(crate) tti: Option<Duration>,
    pub(crate) layout: ExtLayout,
    /// The common case, decided once per cache by [`Expiry::set_layout`]: a TTL kept in the
    /// weight bits and nothing else (no deadline or idle word), so a hit is one comparison and
    /// touches nothing.
    pub(crate) only_packed: bool,
}

impl Expiry {
    pub(crate) fn set_layout(&mut self, layout: ExtLayout) {
        self.layout = layout;
        self.only_packed =
            layout.packed_deadline && layout.deadline.is_none() && layout.idle.is_none();
    }

    /// The packed deadline's test: whole milliseconds, rounded up when stored, so never early.
    /// `MAX_WEIGHT` is "never" and is above any `now` in milliseconds (2^46 ms is 2,230 years).
    /// Alone, it is the whole test of a cache where `only_packed` holds.
    #[inline(always)]
    pub(crate) fn is_expired_packed<K, V>(node: &Node<K, V>, now: u64) -> bool {
        Self::is_expired_packed_ms(node, now / MS)
    }

    /// [`is_expired_packed`](Self::is_expired_packed) with `now` already in whole
    /// milliseconds (rounded down).
    #[inline(always)]
    pub(crate) fn is_expired_packed_ms<K, V>(node: &Node<K, V>, now_ms: u64) -> bool {
        node.packed_deadline() <= now_ms
    }

    /// True if `node` is at or past one of its deadlines at `now`.
    #[inline]
    pub(crate) fn is_expired<K, V>(&self, node: &Node<K, V>, now: u64) -> bool {
        // Relaxed: the idle deadline is moved only by `touch` and `settle_expired`, whose
        // `# Orderings` rest on that word alone.
        self.ttl_passed(node, now)
            || self
                .layout
                .idle
                .is_some_and(|i| node.ext(i).load(Ordering::Relaxed) <= now)
    }

    /// True if `node`'s TTL deadline (packed or in its word) is at or before `now`: a deadline
    /// no read moves.
    #[inline]
    fn ttl_passed<K, V>(&self, node: &Node<K, V>, now: u64) -> bool {
        // Relaxed: written before the node's Release publish, never changed after.
        (self.layout.packed_deadline && Self::is_expired_packed(node, now))
            || self
                .layout
                .deadline
                .is_some_and(|i| node.ext(i).load(Ordering::Relaxed) <= now)
    }

    /// After a hit: makes sure the idle deadline is at least `now + tti`, so an entry never
    /// expires less than a TTI after its last read. A write, when one is needed, pushes the
    /// deadline a sixteenth of the TTI further than that, so a hot entry's node is written about
    /// sixteen times per TTI at most, not on every read; an entry may so expire up to a
    /// sixteenth of the TTI late, never early.
    ///
    /// (It used to write only when `now + tti` passed the stored deadline by more than the
    /// sixteenth, and wrote exactly `now + tti`: an entry read a moment after a write kept the
    /// older deadline and expired up to a sixteenth of the TTI early. Found in review:
    /// `tests/expiry.rs`, `a_recently_read_entry_never_expires_early`.)
    ///
    /// False if the deadline is [`SETTLED`]: a writer ([`Self::settle_expired`]) has judged
    /// the entry expired and is replacing or removing it, so this read must not return it.
    ///
    /// # Orderings
    ///
    /// The raise is a `fetch_update` and the settling a `compare_exchange`, both on the idle
    /// word, so the two are ordered by that word's modification order whatever else happens:
    /// either the raise comes first, and the writer's exchange (from the deadline it judged
    /// expired) fails and it looks again, finding the entry live; or the settling comes first,
    /// and the raise sees [`SETTLED`] and the read answers `None`. Relaxed suffices for both:
    /// the decision rests on that single word, and the value itself is reached through the
    /// node's publication as for any read.
    #[inline]
    pub(crate) fn touch<K, V>(&self, node: &Node<K, V>, now: u64) -> bool {
        if let (Some(i), Some(tti)) = (self.layout.idle, self.tti) {
            let word = node.ext(i);
            let want = deadline(now, tti);
            // Relaxed: see `# Orderings`.
            let current = word.load(Ordering::Relaxed);
            if current < want {
                if current == SETTLED {
                    return false;
                }
                let target =
                    want.saturating_add(u64::try_from(tti.as_nanos() / 16).unwrap_or(NEVER));
                // Only forward, never from SETTLED: a reader whose `now` is older (preempted,
                // or a `Pinned` handle's fixed instant) must not move the deadline back.
                // Relaxed: see `# Orderings`.
                let raised = word.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| {
                    (d != SETTLED && d < target).then(|| target)
                });
                if raised == Err(SETTLED) {
                    return false;
                }
            }
        }
        true
    }

    /// For a writer about to replace or remove `node` because it judged it expired at `now`
    /// ([`Cache::compute`] over an entry its closure saw as absent): true if the node is
    /// expired at `now` and no read can revive it any more. A read that judges expiry at an
    /// earlier instant than `now` (a `Pinned` handle's, or a `get` preempted between its
    /// clock read and its touch) may still find the entry live and push its idle deadline
    /// past `now`; the writer then replaced (or removed) a live entry its closure never saw.
    /// So the idle deadline the writer judged is swapped for [`SETTLED`] (expired at every
    /// instant); if a read moved it first, the exchange fails and this says false: the writer
    /// looks again. A TTL deadline needs nothing: no read moves it. (Found in review:
    /// `tests/compute.rs`, `a_revival_between_the_commit_check_and_the_commit_is_not_overwritten`.)
    pub(crate) fn settle_expired<K, V>(&self, node: &Node<K, V>, now: u64) -> bool {
        if self.ttl_passed(node, now) {
            return true;
        }
        let Some(i) = self.layout.idle else {
            return false;
        };
        let word = node.ext(i);
        // Relaxed: see `touch`'s `# Orderings`.
        let idle = word.load(Ordering::Relaxed);
        idle <= now
            && (idle == SETTLED
                || word
                    .compare_exchange(idle, SETTLED, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok())
    }

    /// The extension words of a new entry: deadline from `ttl` (or the default TTL), idle
    /// deadline from the TTI. Returns the deadline to pack into the weight bits, in whole
    /// milliseconds rounded up, when the layout packs it; and the entry's earliest deadline
    /// (its TTL's or its TTI's, [`NEVER`] if neither) in nanoseconds, before any rounding up:
    /// never later than its real expiry (the loader gives it to waiters, `loader::Outcome`).
    pub(crate) fn fill(
        &self,
        words: &mut [u64; 3],
        now: u64,
        ttl: Option<Duration>,
    ) -> (Option<u64>, u64) {
        // A zero TTL gets deadline 0, not `now`: expired at every instant, also for a pinned
        // handle made before the insert, which judges at its older instant (with `now` it
        // returned the entry: found by the session-store dry run; `tests/expiry.rs`,
        // `a_pinned_handle_never_returns_a_zero_ttl_entry_inserted_after_it`).
        let due = ttl
            .or(self.ttl)
            .map_or(NEVER, |d| if d.is_zero() { 0 } else { deadline(now, d) });
        let idle = self.tti.map_or(NEVER, |d| deadline(now, d));
        if let Some(i) = self.layout.deadline {
            words[i] = due;
        }
        if let Some(i) = self.layout.idle {
            words[i] = idle;
        }
        let packed = self.layout.packed_deadline.then(|| {
            // A zero TTL's deadline 0 packs as 0, which every test fails. (It was `now`, and
            // rounded up it could lie in the current millisecond, which the test, rounded
            // down, does not reach yet: returned for up to 1 ms; `tests/expiry.rs`,
            // `a_zero_ttl_is_never_returned_between_milliseconds`. A positive TTL's deadline
            // is always after `now`.)
            if due == NEVER {
                u64::MAX
            } else {
                due.div_ceil(MS)
            }
        });
        (packed, due.min(idle))
    }
}

#[cfg(all(test, not(clockline_loom)))]
mod tests {
    use super::*;

    #[test]
    fn deadlines_saturate_instead_of_wrapping() {
        assert_eq!(deadline(5, Duration::MAX), NEVER);
        assert_eq!(deadline(NEVER - 1, Duration::from_nanos(10)), NEVER);
        assert_eq!(deadline(5, Duration::from_nanos(10)), 15);
    }

    #[test]
    fn coarse_clock_moves_forward() {
        let c = CoarseClock::default();
        let a = c.now();
        std::thread::sleep(CoarseClock::resolution() * 3);
        assert!(c.now() > a);
        assert!(CoarseClock::resolution() <= Duration::from_millis(100));
    }

    #[test]
    fn the_cached_tick_follows_the_coarse_clock() {
        let a = ClockSource::default_for_expiry();
        let t0 = a.now();
        // Polled for up to a second, not one sleep of a few ticks: under AddressSanitizer on
        // a loaded 2-core machine the ticker thread once went unscheduled for all of 13 ms.
        let start = std::time::Instant::now();
        let mut t1 = a.now();
        while t1 <= t0 && start.elapsed() < Duration::from_secs(1) {
            std::thread::sleep(CoarseClock::resolution() * 2 + ticker::PERIOD * 5);
            t1 = a.now();
        }
        assert!(t1 > t0, "the tick moved");
        let lag = CoarseClock::default().nanos().saturating_sub(t1);
        assert!(lag < 1_000_000_000, "tick {lag} ns behind the coarse clock");
        drop(a);
    }

    #[test]
    fn layout_numbers_words_in_order() {
        let l = ExtLayout::new(true, false, true, false);
        assert_eq!(
            (l.len, l.deadline, l.idle, l.version),
            (2, Some(0), None, Some(1))
        );
        assert_eq!(ExtLayout::new(false, false, false, false).len, 0);
        let packed = ExtLayout::new(true, true, false, true);
        assert_eq!(
            (packed.len, packed.deadline, packed.idle),
            (1, None, Some(0))
        );
        assert!(packed.packed_deadline && packed.has_deadline());
    }
}
