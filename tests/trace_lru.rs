//! The exact LRU that the showdown's hit-ratio table measures clockline against
//! (`examples/showdown/hit_ratio.rs`) reproduces the LRU hit ratios in
//! `../shared/traces/README.md`: the published ones (OLTP from BitFaster and the ARC paper,
//! glimpse from BitFaster, loop from dw-cache) and the README's computed baselines for the small
//! traces. Values are rounded to two decimals at the source, so a replay must round to them:
//! |ours − published| ≤ 0.005.
//!
//! Skips (prints why and passes) when the traces are not next to the repository; set
//! `CLOCKLINE_TRACES` to point elsewhere.

#[allow(dead_code)]
#[path = "../examples/showdown/hit_ratio.rs"]
mod hit_ratio;

use hit_ratio::{Published, Reference};

/// Published values carry two decimals (loop: one, and its values are exactly 0.0 and 99.8).
const TOLERANCE: f64 = 0.005 + 1e-9;

/// The capacities of `trace` that `pick` selects, replayed through the exact LRU, each compared
/// with the value `want` gives (if any). Returns the mismatches; `None` if there are no traces.
fn check(
    trace: &str,
    pick: impl Fn(&Reference) -> bool,
    want: impl Fn(&Reference) -> Option<f64>,
) -> Option<Vec<String>> {
    let Some(dir) = hit_ratio::traces_dir() else {
        println!("skipped: no traces at ../shared/traces/normalized (set CLOCKLINE_TRACES)");
        return None;
    };
    let path = dir.join(format!("{trace}.keys.bin.gz"));
    if !path.is_file() {
        println!("skipped: {} missing", path.display());
        return None;
    }
    let keys = hit_ratio::load_keys(&path).expect("trace decodes");
    let rows = hit_ratio::references(trace).expect("the README has a table for this trace");
    let mut failures = Vec::new();
    let mut checked = 0;
    for row in rows.iter().filter(|r| pick(r)) {
        let Some(expected) = want(row) else { continue };
        let got = hit_ratio::replay_lru(&keys, row.capacity);
        checked += 1;
        if (got - expected).abs() > TOLERANCE {
            failures.push(format!(
                "{trace} at {}: LRU {got:.4}, expected {expected:.2}",
                row.capacity
            ));
        }
    }
    assert!(checked > 0, "{trace}: nothing to check");
    Some(failures)
}

fn published(row: &Reference) -> Option<f64> {
    match row.lru_published {
        Published::Exact(x) => Some(x),
        Published::Chart(_) | Published::Unpublished => None,
    }
}

fn assert_none(failures: Option<Vec<String>>) {
    if let Some(failures) = failures {
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}

/// OLTP: BitFaster's LRU column (250…2000) and the ARC paper (1000, 2000, 5000, 10000, 15000).
/// Two capacities only, to stay fast in debug builds (one from each source at 1000 and 2000,
/// where they agree); the showdown compares all of them.
#[test]
fn lru_reproduces_published_oltp() {
    assert_none(check(
        "arc-OLTP",
        |r| [1000, 2000].contains(&r.capacity),
        published,
    ));
}

/// Glimpse: BitFaster PR #131, every capacity from 250 to 2000.
#[test]
fn lru_reproduces_published_glimpse() {
    assert_none(check("lirs-gli", |_| true, published));
}

/// Loop: 0.0 below the loop length, 99.8 from 1,250 (dw-cache); the two capacities either side
/// of the loop length of 1,011 keys.
#[test]
fn lru_reproduces_published_loop() {
    assert_none(check(
        "lirs-loop",
        |r| [1000, 1250].contains(&r.capacity),
        published,
    ));
}

/// No per-policy numbers are published for these; the README's baseline model, which reproduces
/// every exact published value, gives their LRU columns. Every capacity of the short traces,
/// three of the longer `2_pools` and `corda`.
#[test]
fn lru_reproduces_readme_baselines_on_small_traces() {
    let few = [250, 1000, 2000, 10000];
    let failures: Vec<Option<Vec<String>>> = [
        ("lirs-multi2", false),
        ("lirs-sprite", false),
        ("lirs-2_pools", true),
        ("corda-trace_vaultservice", true),
        ("cache2k-web07", false),
    ]
    .map(|(t, some)| {
        check(
            t,
            |r| !some || few.contains(&r.capacity),
            |r| Some(r.lru_baseline),
        )
    })
    .into();
    if failures.iter().all(Option::is_none) {
        return;
    }
    let all: Vec<String> = failures.into_iter().flatten().flatten().collect();
    assert!(all.is_empty(), "{}", all.join("\n"));
}
