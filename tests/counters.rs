//! The hardware-counter module (`benches/common/counters.rs`) on whatever machine runs the
//! tests: where the kernel refuses counters (VMs without a PMU: ENOENT for every hardware event;
//! `perf_event_paranoid` or seccomp: EACCES/EPERM) it must say which and why, never panic, and
//! render "n/a" rather than 0; where counters exist, a known loop must give plausible counts.

// The test uses only part of the module.
#[allow(dead_code)]
#[path = "../benches/common/counters.rs"]
mod counters;

use counters::{
    cell, errno_meaning, render, scale, Counters, Event, Reading, Row, Single, Unavailable,
};
use std::hint::black_box;

/// Iterations of the measured loop.
const LOOP: u64 = 100_000;

fn spin(n: u64) -> u64 {
    let mut acc = 0u64;
    for i in 0..n {
        acc = black_box(acc.wrapping_mul(31).wrapping_add(i));
    }
    acc
}

#[test]
fn every_event_opens_or_says_why() {
    let c = Counters::open(&Event::ALL);
    let opened = c.opened();
    for e in Event::ALL {
        let refused: Vec<&Unavailable> = c.unavailable().iter().filter(|u| u.event == e).collect();
        assert_eq!(
            opened.contains(&e) as usize + refused.len(),
            1,
            "{e}: opened {opened:?}, refused {refused:?}"
        );
        for u in refused {
            let line = u.to_string();
            assert!(line.contains(e.name()), "{line}");
            assert!(!line.contains('\n'), "one line: {line}");
            if let Some(errno) = u.errno {
                assert!(line.contains(&format!("errno {errno} (")), "{line}");
            }
        }
    }
}

#[test]
fn measured_loop_is_plausible_or_not_available() {
    let mut c = Counters::open(&Event::ALL);
    let (acc, reading) = c.measure(|| spin(LOOP));
    black_box(acc);
    assert_eq!(reading.counts.len(), Event::ALL.len());
    for (e, count) in &reading.counts {
        match count {
            Ok(n) => {
                if *e == Event::Instructions {
                    assert!(*n > LOOP, "{n} instructions for {LOOP} iterations");
                    assert!(*n < 100 * LOOP, "{n} instructions for {LOOP} iterations");
                }
                if *e == Event::Cycles {
                    assert!(*n > 0, "no cycles for {LOOP} iterations");
                }
            }
            Err(u) => {
                assert_eq!(u.event, *e);
                assert!(!u.reason.is_empty());
                // Not measured: rendered as n/a, never as a number.
                assert_eq!(reading.get(*e), None);
                assert_eq!(cell(reading.per_op(*e, LOOP), 3), "n/a");
            }
        }
    }
    // The single-counter form used by the criterion bench agrees on what is available.
    match Single::open(Event::Instructions) {
        Ok(mut s) => {
            let a = s.snapshot().expect("a counter that opened reads");
            black_box(spin(LOOP));
            let b = s.snapshot().expect("a counter that opened reads");
            let n = s.between(a, b).expect("it ran");
            assert!(n > LOOP, "{n} instructions for {LOOP} iterations");
        }
        Err(u) => {
            assert_eq!(u.event, Event::Instructions);
            assert!(u.to_string().contains("instructions"), "{u}");
        }
    }
}

#[test]
fn refusals_name_the_errno() {
    for (errno, name) in [
        (2, "ENOENT"),
        (95, "EOPNOTSUPP"),
        (19, "ENODEV"),
        (13, "EACCES"),
        (1, "EPERM"),
        (38, "ENOSYS"),
    ] {
        assert_eq!(errno_meaning(errno).0, name);
        let line = Unavailable::from_errno(Event::L1dReadMiss, errno).to_string();
        assert!(
            line.starts_with("counter L1D-read-miss unavailable"),
            "{line}"
        );
        assert!(line.contains(&format!("errno {errno} ({name}: ")), "{line}");
    }
    let e = std::io::Error::from_raw_os_error(2);
    let u = Unavailable::from_io(Event::Cycles, "perf_event_open", &e);
    assert_eq!(u.errno, Some(2));
    assert!(u.to_string().contains("cycles") && u.to_string().contains("ENOENT"));
}

#[test]
fn report_renders_missing_counts_as_na() {
    let refused = Unavailable::from_errno(Event::Cycles, 2);
    let reading = Reading {
        nanos: 2_000,
        counts: vec![
            (Event::Instructions, Ok(1_000)),
            (Event::Cycles, Err(refused)),
            (Event::L1dReadMiss, Ok(0)),
        ],
        scaled: false,
    };
    let events = [Event::Instructions, Event::Cycles, Event::L1dReadMiss];
    let table = render(
        &["op", "contender"],
        &events,
        &[Row {
            labels: vec!["get-hit".into(), "clockline".into()],
            ops: 10,
            reading,
        }],
    );
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    let cells: Vec<&str> = lines[1].split_whitespace().collect();
    // op, contender, ns/op, instructions, cycles, L1D: a measured 0 is a number, the refused
    // counter is n/a.
    assert_eq!(
        cells,
        ["get-hit", "clockline", "200.0", "100.0", "n/a", "0.000"],
        "{table}"
    );

    // Everything refused, as on a VM without a PMU: no count anywhere, only n/a.
    let none = Reading {
        nanos: 1_000,
        counts: Event::ALL
            .iter()
            .map(|&e| (e, Err(Unavailable::from_errno(e, 2))))
            .collect(),
        scaled: false,
    };
    let table = render(
        &["op"],
        &Event::ALL,
        &[Row {
            labels: vec!["insert".into()],
            ops: 1,
            reading: none,
        }],
    );
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[2..], ["n/a"; 5], "{table}");
}

#[test]
fn time_shared_counts_are_scaled_and_unscheduled_ones_unavailable() {
    let mut scaled = false;
    assert_eq!(scale(Event::Cycles, 1_000, 10, 10, &mut scaled), Ok(1_000));
    assert!(!scaled);
    // Ran a quarter of the time it was enabled: the estimate is four times the raw count.
    assert_eq!(scale(Event::Cycles, 1_000, 40, 10, &mut scaled), Ok(4_000));
    assert!(scaled);
    // Never scheduled: no count at all, rather than a 0 that looks measured.
    let never = scale(Event::LlcReadMiss, 0, 40, 0, &mut scaled).unwrap_err();
    assert_eq!(never.event, Event::LlcReadMiss);
    assert!(never.to_string().contains("never scheduled"), "{never}");
}
