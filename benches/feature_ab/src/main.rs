//! The read-hit probe of `benches/feature_ab.sh`: fills a cache of 2^17 with 2^16 keys, then
//! runs `get` over 2^18 skewed keys ten times in one `#[inline(never)] #[no_mangle]` probe per
//! variant (each with a distinct body, so the linker cannot fold them into one symbol).
use std::hint::black_box;
type C = clockline::Cache<u64, u64>;
fn keys() -> Vec<u64> {
    let mut x = 0x1234_5678_9abc_def1u64;
    let n = 1 << 16;
    (0..1 << 18)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let r = x % n;
            let r2 = (x >> 20) % (r + 1);
            r2
        })
        .collect()
}
#[inline(never)]
#[no_mangle]
pub fn probe_plain(c: &C, k: &[u64]) -> usize {
    black_box(1u8);
    k.iter().filter(|k| c.get(*k).is_some()).count()
}
#[cfg(feature = "new")]
#[inline(never)]
#[no_mangle]
pub fn probe_ttl(c: &C, k: &[u64]) -> usize {
    black_box(2u8);
    k.iter().filter(|k| c.get(*k).is_some()).count()
}
#[cfg(feature = "new")]
#[inline(never)]
#[no_mangle]
pub fn probe_stats(c: &C, k: &[u64]) -> usize {
    black_box(3u8);
    k.iter().filter(|k| c.get(*k).is_some()).count()
}
fn fill(c: &C) {
    for k in 0..1u64 << 16 {
        c.insert(k, k).unwrap();
    }
}
fn main() {
    let k = keys();
    let which = std::env::args().nth(1).unwrap_or("plain".into());
    let c: C = match which.as_str() {
        #[cfg(feature = "new")]
        "ttl" => C::builder()
            .max_capacity(1 << 17)
            .time_to_live(std::time::Duration::from_secs(3600))
            .build()
            .unwrap(),
        #[cfg(feature = "new")]
        "stats" => C::builder()
            .max_capacity(1 << 17)
            .record_stats()
            .build()
            .unwrap(),
        #[cfg(feature = "new")]
        "clock" => C::builder()
            .max_capacity(1 << 17)
            .policy(clockline::Policy::Clock)
            .build()
            .unwrap(),
        #[cfg(feature = "new")]
        "coarse" => C::builder()
            .max_capacity(1 << 17)
            .time_to_live(std::time::Duration::from_secs(3600))
            .clock(clockline::CoarseClock::default())
            .build()
            .unwrap(),
        _ => C::new(1 << 17),
    };
    fill(&c);
    let t = std::time::Instant::now();
    let mut n = 0;
    for _ in 0..10 {
        n += match which.as_str() {
            #[cfg(feature = "new")]
            "ttl" | "coarse" => probe_ttl(&c, &k),
            #[cfg(feature = "new")]
            "stats" => probe_stats(&c, &k),
            _ => probe_plain(&c, &k),
        };
    }
    println!(
        "{which} {n} {:.1} ns/get",
        t.elapsed().as_nanos() as f64 / (10.0 * k.len() as f64)
    );
    black_box(n);
}
