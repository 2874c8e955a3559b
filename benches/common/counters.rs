//! Hardware counters per operation over Linux `perf_event_open` (the `perf-event` crate):
//! instructions, cycles, L1D read misses, LLC read misses and dTLB read misses.
//!
//! * Opening never fails as a whole. Each counter either opens or comes back as an
//!   [`Unavailable`] that names the counter, the errno and what it means; the caller reports it in
//!   one line and goes on with the counters that did open. VMs without a PMU fail every hardware
//!   event with ENOENT; the kernel's `perf_event_paranoid` setting or a seccomp filter gives
//!   EACCES or EPERM.
//! * A count that was not measured is `None` and renders as "n/a", never as 0.
//! * The deterministic fallback, for machines without counters, is `benches/cachesim.sh`:
//!   callgrind's cache simulation, which gives instructions, D1 and LL misses per operation.
//!
//! Counters count the calling thread, in user space only (the `perf-event` defaults exclude the
//! kernel and the hypervisor). [`Counters`] opens all events as one group, so they are enabled and
//! disabled together and cover exactly the same instructions; [`Single`] is one counter on its
//! own, for criterion's `Measurement` in `benches/counters.rs`.
//!
//! This file depends on nothing else in `benches/common`, so `tests/counters.rs` includes it
//! alone by `#[path]`. On systems other than Linux every counter is unavailable ("not Linux").

use std::fmt;
use std::time::Instant;

/// A hardware event counted per operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// Retired instructions.
    Instructions,
    /// CPU cycles (core clock, not wall time).
    Cycles,
    /// Level-1 data cache read misses.
    L1dReadMiss,
    /// Last-level cache read misses.
    LlcReadMiss,
    /// Data TLB read misses.
    DtlbReadMiss,
}

impl Event {
    /// Every event, in report order.
    pub const ALL: [Event; 5] = [
        Event::Instructions,
        Event::Cycles,
        Event::L1dReadMiss,
        Event::LlcReadMiss,
        Event::DtlbReadMiss,
    ];

    /// The name in reports and in `CLOCKLINE_COUNTERS`.
    pub fn name(self) -> &'static str {
        match self {
            Event::Instructions => "instructions",
            Event::Cycles => "cycles",
            Event::L1dReadMiss => "L1D-read-miss",
            Event::LlcReadMiss => "LLC-read-miss",
            Event::DtlbReadMiss => "dTLB-read-miss",
        }
    }

    /// The event called `name` (as [`Event::name`] spells it, any case).
    pub fn from_name(name: &str) -> Option<Event> {
        Event::ALL
            .into_iter()
            .find(|e| e.name().eq_ignore_ascii_case(name.trim()))
    }

    /// Decimals worth printing per operation: instructions and cycles are in the tens or
    /// hundreds, misses are fractions.
    fn decimals(self) -> usize {
        match self {
            Event::Instructions | Event::Cycles => 1,
            _ => 3,
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where to look when counters are missing.
pub const FALLBACK: &str = "fallback: benches/cachesim.sh simulates instructions, D1 and LL \
                            misses per operation with valgrind (deterministic, no PMU needed)";

/// Why a counter gives no count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    pub event: Event,
    /// The errno `perf_event_open` (or a later read) failed with, where there was one.
    pub errno: Option<i32>,
    /// What went wrong, for people: "perf_event_open failed: errno 2 (ENOENT: ...)".
    pub reason: String,
}

impl Unavailable {
    /// The kernel refused `event` with `errno`.
    pub fn from_errno(event: Event, errno: i32) -> Self {
        let (name, meaning) = errno_meaning(errno);
        Self {
            event,
            errno: Some(errno),
            reason: format!("perf_event_open failed: errno {errno} ({name}: {meaning})"),
        }
    }

    /// An I/O error from opening, enabling or reading `event`.
    pub fn from_io(event: Event, what: &str, e: &std::io::Error) -> Self {
        match e.raw_os_error() {
            Some(errno) => {
                let mut u = Self::from_errno(event, errno);
                u.reason = u.reason.replacen("perf_event_open", what, 1);
                u
            }
            None => Self {
                event,
                errno: None,
                reason: format!("{what} failed: {e}"),
            },
        }
    }

    /// `event` could not be used for a reason without an errno.
    pub fn other(event: Event, reason: impl Into<String>) -> Self {
        Self {
            event,
            errno: None,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "counter {} unavailable: {}", self.event, self.reason)
    }
}

/// The symbolic name of a Linux errno that `perf_event_open` returns, and what it means there.
pub fn errno_meaning(errno: i32) -> (&'static str, &'static str) {
    // Linux values, the same on x86-64 and aarch64 (not on MIPS, SPARC, Alpha).
    match errno {
        1 => (
            "EPERM",
            "not permitted: kernel.perf_event_paranoid too high, or a seccomp filter",
        ),
        2 => (
            "ENOENT",
            "no such event here: no PMU, as in a VM without PMU passthrough",
        ),
        13 => (
            "EACCES",
            "access denied: kernel.perf_event_paranoid too high (2 allows user-space counting)",
        ),
        19 => ("ENODEV", "no such device: this CPU's PMU lacks the event"),
        22 => ("EINVAL", "the kernel rejected the event's attributes"),
        24 => ("EMFILE", "too many open files"),
        38 => (
            "ENOSYS",
            "perf_event_open is not implemented by this kernel",
        ),
        95 => ("EOPNOTSUPP", "the PMU does not support this event or mode"),
        _ => ("unexpected errno", "see perf_event_open(2)"),
    }
}

/// Counts read over one measured stretch of code, with its wall time.
#[derive(Debug, Clone)]
pub struct Reading {
    /// Wall-clock nanoseconds of the measured code (always measured).
    pub nanos: u64,
    /// One entry per requested event, in the order [`Counters::open`] was given.
    pub counts: Vec<(Event, Result<u64, Unavailable>)>,
    /// True if the kernel time-shared the counters, so the counts are scaled estimates.
    pub scaled: bool,
}

impl Reading {
    /// The count of `event`; `None` if it was not measured.
    pub fn get(&self, event: Event) -> Option<u64> {
        self.counts
            .iter()
            .find(|(e, _)| *e == event)
            .and_then(|(_, c)| c.as_ref().ok().copied())
    }

    /// `event` per operation over `ops` operations; `None` if not measured.
    pub fn per_op(&self, event: Event, ops: u64) -> Option<f64> {
        self.get(event).map(|c| c as f64 / ops.max(1) as f64)
    }

    /// Wall-clock nanoseconds per operation.
    pub fn nanos_per_op(&self, ops: u64) -> f64 {
        self.nanos as f64 / ops.max(1) as f64
    }
}

/// A count per operation as a table cell: "n/a" where it was not measured.
pub fn cell(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(v) => format!("{v:.decimals$}"),
        None => "n/a".to_string(),
    }
}

/// One row of a per-operation table.
#[derive(Debug, Clone)]
pub struct Row {
    /// The leading text columns (operation, contender, ...).
    pub labels: Vec<String>,
    /// Operations measured.
    pub ops: u64,
    pub reading: Reading,
}

/// Renders `rows` as a right-aligned table: the label columns, ns/op, then one column per event
/// (a count per operation, or "n/a"). Rows whose counts were scaled get a `*`.
pub fn render(label_headers: &[&str], events: &[Event], rows: &[Row]) -> String {
    let mut header: Vec<String> = label_headers.iter().map(|s| s.to_string()).collect();
    header.push("ns/op".to_string());
    header.extend(events.iter().map(|e| e.name().to_string()));
    let mut body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut line = r.labels.clone();
            line.resize(label_headers.len(), String::new());
            line.push(format!("{:.1}", r.reading.nanos_per_op(r.ops)));
            line.extend(
                events
                    .iter()
                    .map(|&e| cell(r.reading.per_op(e, r.ops), e.decimals())),
            );
            if r.reading.scaled {
                line.last_mut().expect("a column").push('*');
            }
            line
        })
        .collect();
    body.insert(0, header);
    let widths: Vec<usize> = (0..body[0].len())
        .map(|c| body.iter().map(|l| l[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for line in &body {
        for (c, text) in line.iter().enumerate() {
            if c < label_headers.len() {
                out.push_str(&format!("{text:<w$}  ", w = widths[c]));
            } else {
                out.push_str(&format!("{text:>w$}  ", w = widths[c]));
            }
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
    }
    if rows.iter().any(|r| r.reading.scaled) {
        out.push_str("* counters were time-shared with other events: counts scaled by time\n");
    }
    out
}

/// A group of counters on the calling thread, enabled and disabled together.
pub struct Counters {
    events: Vec<Event>,
    unavailable: Vec<Unavailable>,
    #[cfg(target_os = "linux")]
    group: Option<perf_event::Group>,
    #[cfg(target_os = "linux")]
    members: Vec<(Event, perf_event::Counter)>,
}

impl fmt::Debug for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Counters")
            .field("opened", &self.opened())
            .field("unavailable", &self.unavailable)
            .finish()
    }
}

impl Counters {
    /// Opens `events` for the calling thread. Never fails: events the kernel refuses are listed
    /// by [`Counters::unavailable`].
    pub fn open(events: &[Event]) -> Counters {
        let mut c = Counters {
            events: events.to_vec(),
            unavailable: Vec::new(),
            #[cfg(target_os = "linux")]
            group: None,
            #[cfg(target_os = "linux")]
            members: Vec::new(),
        };
        c.open_members();
        c
    }

    #[cfg(target_os = "linux")]
    fn open_members(&mut self) {
        // `Group::new` opens a software placeholder event, so it succeeds even without a PMU;
        // each hardware member can still fail, and is checked on its own.
        let mut group = match perf_event::Group::new() {
            Ok(g) => g,
            Err(e) => {
                self.unavailable = self
                    .events
                    .iter()
                    .map(|&ev| Unavailable::from_io(ev, "perf_event_open (group leader)", &e))
                    .collect();
                return;
            }
        };
        for &ev in &self.events {
            match perf_event::Builder::new()
                .group(&mut group)
                .kind(kind(ev))
                .build()
            {
                Ok(counter) => self.members.push((ev, counter)),
                Err(e) => self
                    .unavailable
                    .push(Unavailable::from_io(ev, "perf_event_open", &e)),
            }
        }
        self.group = Some(group);
    }

    #[cfg(not(target_os = "linux"))]
    fn open_members(&mut self) {
        self.unavailable = self
            .events
            .iter()
            .map(|&ev| {
                Unavailable::other(ev, "hardware counters are read through Linux perf_event")
            })
            .collect();
    }

    /// The events that opened, in request order.
    pub fn opened(&self) -> Vec<Event> {
        #[cfg(target_os = "linux")]
        return self.members.iter().map(|m| m.0).collect();
        #[cfg(not(target_os = "linux"))]
        Vec::new()
    }

    /// The events that did not open, with why.
    pub fn unavailable(&self) -> &[Unavailable] {
        &self.unavailable
    }

    /// The requested events.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Runs `f` on this thread with the counters on; returns its result and the counts. Events
    /// that did not open, or that fail now, have an `Err` in the reading.
    pub fn measure<R>(&mut self, f: impl FnOnce() -> R) -> (R, Reading) {
        #[cfg(target_os = "linux")]
        let mut live = self.group.as_mut().filter(|_| !self.members.is_empty());
        // The group is read while disabled before and after `f`: the counts and the enabled and
        // running times are all differences of the two reads (a reset would clear the counts
        // but not the times).
        #[cfg(target_os = "linux")]
        let before = live
            .as_mut()
            .map(|g| g.read().and_then(|c| g.enable().map(|_| c)));
        let start = Instant::now();
        let r = f();
        let nanos = start.elapsed().as_nanos() as u64;
        #[cfg(target_os = "linux")]
        let after = live.as_mut().map(|g| g.disable().and_then(|_| g.read()));
        let mut reading = Reading {
            nanos,
            counts: Vec::with_capacity(self.events.len()),
            scaled: false,
        };
        for &ev in &self.events {
            let count = if let Some(u) = self.unavailable.iter().find(|u| u.event == ev) {
                Err(u.clone())
            } else {
                #[cfg(target_os = "linux")]
                {
                    self.count_of(ev, &before, &after, &mut reading.scaled)
                }
                #[cfg(not(target_os = "linux"))]
                Err(Unavailable::other(ev, "not opened"))
            };
            reading.counts.push((ev, count));
        }
        (r, reading)
    }

    #[cfg(target_os = "linux")]
    fn count_of(
        &self,
        ev: Event,
        before: &Option<std::io::Result<perf_event::Counts>>,
        after: &Option<std::io::Result<perf_event::Counts>>,
        scaled: &mut bool,
    ) -> Result<u64, Unavailable> {
        let (Some(before), Some(after), Some((_, counter))) = (
            before.as_ref(),
            after.as_ref(),
            self.members.iter().find(|(e, _)| *e == ev),
        ) else {
            return Err(Unavailable::other(ev, "not opened"));
        };
        let before = before
            .as_ref()
            .map_err(|e| Unavailable::from_io(ev, "starting the counters", e))?;
        let after = after
            .as_ref()
            .map_err(|e| Unavailable::from_io(ev, "reading the counters", e))?;
        let (Some(&a), Some(&b)) = (before.get(counter), after.get(counter)) else {
            return Err(Unavailable::other(ev, "missing from the group's read"));
        };
        scale(
            ev,
            b.saturating_sub(a),
            after.time_enabled().saturating_sub(before.time_enabled()),
            after.time_running().saturating_sub(before.time_running()),
            scaled,
        )
    }
}

/// Scales a raw count by how long the counter was enabled over how long it ran (the kernel
/// time-shares hardware counters when more are asked for than the PMU has), setting `scaled`
/// when it had to; `Err` if the counter never ran.
pub fn scale(
    ev: Event,
    raw: u64,
    enabled: u64,
    running: u64,
    scaled: &mut bool,
) -> Result<u64, Unavailable> {
    if enabled == 0 {
        // Nothing ran in between (two reads with no time between them).
        return Ok(raw);
    }
    if running == 0 {
        // A group that needs more hardware counters than are free is never scheduled.
        return Err(Unavailable::other(
            ev,
            "opened but never scheduled (time running 0: the PMU had no free counters \
             for the group; an NMI watchdog or another profiler may hold some)",
        ));
    }
    if running < enabled {
        *scaled = true;
        return Ok((raw as u128 * enabled as u128 / running as u128) as u64);
    }
    Ok(raw)
}

#[cfg(target_os = "linux")]
fn kind(ev: Event) -> perf_event::events::Event {
    use perf_event::events::{Cache, CacheOp, CacheResult, Hardware, WhichCache};
    let read_miss = |which| {
        Cache {
            which,
            operation: CacheOp::READ,
            result: CacheResult::MISS,
        }
        .into()
    };
    match ev {
        Event::Instructions => Hardware::INSTRUCTIONS.into(),
        Event::Cycles => Hardware::CPU_CYCLES.into(),
        Event::L1dReadMiss => read_miss(WhichCache::L1D),
        Event::LlcReadMiss => read_miss(WhichCache::LL),
        Event::DtlbReadMiss => read_miss(WhichCache::DTLB),
    }
}

/// One counter on its own, always on, read at the start and end of what it measures: the
/// building block of criterion's `Measurement` in `benches/counters.rs`.
pub struct Single {
    event: Event,
    #[cfg(target_os = "linux")]
    counter: perf_event::Counter,
}

impl fmt::Debug for Single {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Single")
            .field("event", &self.event)
            .finish()
    }
}

/// A snapshot of a [`Single`] counter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    count: u64,
    enabled: u64,
    running: u64,
}

impl Single {
    /// Opens and enables `event` on the calling thread.
    pub fn open(event: Event) -> Result<Single, Unavailable> {
        #[cfg(target_os = "linux")]
        {
            let mut counter = perf_event::Builder::new()
                .kind(kind(event))
                .build()
                .map_err(|e| Unavailable::from_io(event, "perf_event_open", &e))?;
            counter
                .enable()
                .map_err(|e| Unavailable::from_io(event, "enabling the counter", &e))?;
            let mut s = Single { event, counter };
            // A counter that opens but cannot be read is no better than none.
            s.snapshot()?;
            Ok(s)
        }
        #[cfg(not(target_os = "linux"))]
        Err(Unavailable::other(
            event,
            "hardware counters are read through Linux perf_event",
        ))
    }

    pub fn event(&self) -> Event {
        self.event
    }

    /// The running totals now.
    pub fn snapshot(&mut self) -> Result<Snapshot, Unavailable> {
        #[cfg(target_os = "linux")]
        {
            let c = self
                .counter
                .read_count_and_time()
                .map_err(|e| Unavailable::from_io(self.event, "reading the counter", &e))?;
            Ok(Snapshot {
                count: c.count,
                enabled: c.time_enabled,
                running: c.time_running,
            })
        }
        #[cfg(not(target_os = "linux"))]
        Err(Unavailable::other(self.event, "not Linux"))
    }

    /// Events between two snapshots, scaled if the counter was time-shared in between.
    pub fn between(&self, a: Snapshot, b: Snapshot) -> Result<u64, Unavailable> {
        let mut scaled = false;
        scale(
            self.event,
            b.count.saturating_sub(a.count),
            b.enabled.saturating_sub(a.enabled),
            b.running.saturating_sub(a.running),
            &mut scaled,
        )
    }
}
