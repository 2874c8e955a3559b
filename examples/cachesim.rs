//! Deterministic per-operation cost of `get` hits, `get` misses, replaces and `insert`s, for
//! `benches/cachesim.sh`.
//!
//! ```text
//! cachesim [--entries N] [--accesses N] [CONTENDER...]
//! ```
//!
//! For each contender named (default: all of clockline, clockline_clock (`Policy::Clock`),
//! quick_cache, moka, lru_mutex, papaya),
//! builds a cache of capacity `--entries` (default 2^20) filled with that many keys, then runs
//! the four workloads of `benches/common/per_op.rs` through one `#[inline(never)]`,
//! `#[no_mangle]` probe function each: `cachesim_get_hit_<contender>` (Zipf 0.99 over the
//! resident keys, `--accesses` of them, default 2^18, minus the few a contender did not keep),
//! `cachesim_get_miss_<contender>` (`--accesses` keys never inserted),
//! `cachesim_replace_<contender>` (an `insert` of each get-hit key again: the write of
//! write-50, which replaces a resident entry) and `cachesim_insert_<contender>` (a quarter as
//! many of the get-miss keys, inserted into the full cache).
//! Everything outside the probes (key generation, filling, settling) is left out of the
//! measurement: `benches/cachesim.sh` runs this under callgrind with collection toggled only
//! inside the probes and a profile dumped after each, and divides each dump by the operation
//! count printed on the `ops` lines.
//!
//! Run without valgrind it just checks the workloads: every measured `get-hit` hits and every
//! `get-miss` misses.

#[path = "../benches/common/mod.rs"]
#[allow(dead_code)]
mod common;

use common::per_op::{get_all, insert_all, PerOp};
use common::{ClockPolicy, Clockline, Contender, Featured, Moka, MutexLru, Papaya, QuickCache};

/// clockline under `Policy::Clock`: what the adaptive policy costs per operation.
type ClocklineClock = Featured<ClockPolicy>;
use std::hint::black_box;
use std::process::ExitCode;

/// Four probes for one contender type. `$salt`, distinct per contender, keeps the linker from
/// folding two contenders' identical probes into one symbol (clockline's and clockline_clock's
/// `get` compile to the same code), which would leave callgrind one name for both: each probe
/// passes it through `black_box` once per call, not per operation.
macro_rules! probes {
    ($get_hit:ident, $get_miss:ident, $replace:ident, $insert:ident, $ty:ty, $salt:literal) => {
        #[inline(never)]
        #[no_mangle]
        #[allow(clippy::no_mangle_with_rust_abi)]
        pub fn $get_hit(cache: &$ty, keys: &[u64]) -> usize {
            black_box($salt);
            get_all(cache, keys)
        }

        #[inline(never)]
        #[no_mangle]
        #[allow(clippy::no_mangle_with_rust_abi)]
        pub fn $get_miss(cache: &$ty, keys: &[u64]) -> usize {
            // Counts misses, so that its code differs from the get-hit probe's and the two are
            // not merged into one symbol.
            black_box($salt);
            keys.len() - get_all(cache, keys)
        }

        #[inline(never)]
        #[no_mangle]
        #[allow(clippy::no_mangle_with_rust_abi)]
        pub fn $replace(cache: &$ty, keys: &[u64]) -> usize {
            // Returns the count, so that its code differs from the insert probe's.
            black_box($salt);
            insert_all(cache, keys);
            keys.len()
        }

        #[inline(never)]
        #[no_mangle]
        #[allow(clippy::no_mangle_with_rust_abi)]
        pub fn $insert(cache: &$ty, keys: &[u64]) {
            black_box($salt);
            insert_all(cache, keys)
        }
    };
}

probes!(
    cachesim_get_hit_clockline,
    cachesim_get_miss_clockline,
    cachesim_replace_clockline,
    cachesim_insert_clockline,
    Clockline,
    1u8
);
probes!(
    cachesim_get_hit_clockline_clock,
    cachesim_get_miss_clockline_clock,
    cachesim_replace_clockline_clock,
    cachesim_insert_clockline_clock,
    ClocklineClock,
    2u8
);
probes!(
    cachesim_get_hit_quick_cache,
    cachesim_get_miss_quick_cache,
    cachesim_replace_quick_cache,
    cachesim_insert_quick_cache,
    QuickCache,
    3u8
);
probes!(
    cachesim_get_hit_moka,
    cachesim_get_miss_moka,
    cachesim_replace_moka,
    cachesim_insert_moka,
    Moka,
    4u8
);
probes!(
    cachesim_get_hit_lru_mutex,
    cachesim_get_miss_lru_mutex,
    cachesim_replace_lru_mutex,
    cachesim_insert_lru_mutex,
    MutexLru,
    5u8
);
probes!(
    cachesim_get_hit_papaya,
    cachesim_get_miss_papaya,
    cachesim_replace_papaya,
    cachesim_insert_papaya,
    Papaya,
    6u8
);

/// The four probes of one contender.
struct Probes<C> {
    get_hit: fn(&C, &[u64]) -> usize,
    /// Returns the number of misses.
    get_miss: fn(&C, &[u64]) -> usize,
    /// Returns the number of keys.
    replace: fn(&C, &[u64]) -> usize,
    insert: fn(&C, &[u64]),
}

/// Names as the script and the probe symbols spell them, in report order.
const CONTENDERS: [&str; 6] = [
    "clockline",
    "clockline_clock",
    "quick_cache",
    "moka",
    "lru_mutex",
    "papaya",
];

/// Runs the four probes of one contender; prints one `ops` line per probe. Returns false if a
/// workload did not do what it should (a measured hit that missed, a miss that hit).
fn run<C: Contender>(name: &str, w: &PerOp, p: Probes<C>) -> bool {
    let cache: C = w.build();
    let hit_keys = w.hit_keys(&cache);
    let inserts = (w.miss_keys.len() / 4).max(1);
    let hits = black_box((p.get_hit)(&cache, &hit_keys));
    cache.settle();
    let miss_hits = w.miss_keys.len() - black_box((p.get_miss)(&cache, &w.miss_keys));
    cache.settle();
    black_box((p.replace)(&cache, &hit_keys));
    cache.settle();
    (p.insert)(&cache, &w.miss_keys[..inserts]);
    cache.settle();
    // "ops CONTENDER OP COUNT": what benches/cachesim.sh divides by.
    println!("ops {name} get-hit {}", hit_keys.len());
    println!("ops {name} get-miss {}", w.miss_keys.len());
    println!("ops {name} replace {}", hit_keys.len());
    println!("ops {name} insert {inserts}");
    println!(
        "# {name}: {} of {} Zipf accesses resident; get-hit hits {hits}, get-miss hits {miss_hits}",
        hit_keys.len(),
        w.zipf_keys.len()
    );
    // Dropping a cache of 2^20 entries takes moka half a minute under callgrind; the process is
    // about to end, so leave the memory to it.
    std::mem::forget(cache);
    let ok = hits == hit_keys.len() && miss_hits == 0;
    if !ok {
        eprintln!("cachesim: {name}: a measured hit missed or a miss hit");
    }
    ok
}

fn parse_pow2(flag: &str, v: Option<String>) -> Result<usize, String> {
    let v = v.ok_or(format!("{flag} needs a value"))?;
    v.parse::<usize>()
        .ok()
        .filter(|n| n.is_power_of_two() && *n >= 16)
        .ok_or(format!(
            "{flag} {v:?}: expected a power of two, at least 16"
        ))
}

fn main() -> ExitCode {
    let (mut entries, mut accesses) = (1usize << 20, 1usize << 18);
    let mut names = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let parsed = match a.as_str() {
            "--entries" => parse_pow2("--entries", args.next()).map(|n| entries = n),
            "--accesses" => parse_pow2("--accesses", args.next()).map(|n| accesses = n),
            name if CONTENDERS.contains(&name) => {
                names.push(name.to_string());
                Ok(())
            }
            other => Err(format!(
                "unknown argument {other:?}; usage: cachesim [--entries N] [--accesses N] \
                 [{}]...",
                CONTENDERS.join("|")
            )),
        };
        if let Err(e) = parsed {
            eprintln!("cachesim: {e}");
            return ExitCode::FAILURE;
        }
    }
    if names.is_empty() {
        names = CONTENDERS.iter().map(|s| s.to_string()).collect();
    }
    println!("entries {entries} accesses {accesses}");
    let w = PerOp::new(entries, accesses);
    let mut ok = true;
    for name in &names {
        ok &= match name.as_str() {
            "clockline" => run::<Clockline>(
                name,
                &w,
                Probes {
                    get_hit: cachesim_get_hit_clockline,
                    get_miss: cachesim_get_miss_clockline,
                    replace: cachesim_replace_clockline,
                    insert: cachesim_insert_clockline,
                },
            ),
            "clockline_clock" => run::<ClocklineClock>(
                name,
                &w,
                Probes {
                    get_hit: cachesim_get_hit_clockline_clock,
                    get_miss: cachesim_get_miss_clockline_clock,
                    replace: cachesim_replace_clockline_clock,
                    insert: cachesim_insert_clockline_clock,
                },
            ),
            "quick_cache" => run::<QuickCache>(
                name,
                &w,
                Probes {
                    get_hit: cachesim_get_hit_quick_cache,
                    get_miss: cachesim_get_miss_quick_cache,
                    replace: cachesim_replace_quick_cache,
                    insert: cachesim_insert_quick_cache,
                },
            ),
            "moka" => run::<Moka>(
                name,
                &w,
                Probes {
                    get_hit: cachesim_get_hit_moka,
                    get_miss: cachesim_get_miss_moka,
                    replace: cachesim_replace_moka,
                    insert: cachesim_insert_moka,
                },
            ),
            "lru_mutex" => run::<MutexLru>(
                name,
                &w,
                Probes {
                    get_hit: cachesim_get_hit_lru_mutex,
                    get_miss: cachesim_get_miss_lru_mutex,
                    replace: cachesim_replace_lru_mutex,
                    insert: cachesim_insert_lru_mutex,
                },
            ),
            "papaya" => run::<Papaya>(
                name,
                &w,
                Probes {
                    get_hit: cachesim_get_hit_papaya,
                    get_miss: cachesim_get_miss_papaya,
                    replace: cachesim_replace_papaya,
                    insert: cachesim_insert_papaya,
                },
            ),
            _ => unreachable!("names are checked against CONTENDERS"),
        };
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
