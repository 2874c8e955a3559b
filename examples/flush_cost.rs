//! What one `flush_deferred` call costs with nothing pinned and with a guard pinned on another
//! thread (docs in `src/sync.rs`, `flush`): `cargo run --release --example flush_cost`.

use std::time::Instant;
fn main() {
    let c: clockline::Cache<u64, u64> = clockline::Cache::new(1000);
    for i in 0..10_000 {
        c.insert(i, i).unwrap();
    }
    clockline::flush_deferred();
    for label in ["nothing pinned", "a guard pinned on another thread"] {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
        let c2 = &c;
        std::thread::scope(|s| {
            if label.starts_with('a') {
                s.spawn(move || {
                    let _p = c2.pin();
                    ready_tx.send(()).unwrap();
                    let _ = rx.recv();
                });
                ready_rx.recv().unwrap();
            } else {
                drop(ready_tx);
            }
            let mut v = Vec::new();
            for _ in 0..5 {
                let t = Instant::now();
                for _ in 0..1000 {
                    clockline::flush_deferred();
                }
                v.push(t.elapsed().as_secs_f64() * 1e6 / 1000.0);
            }
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            println!("{label}: median {:.2} us per call (5 x 1000 calls)", v[2]);
            drop(tx);
        });
    }
}
