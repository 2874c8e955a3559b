//! `flush_deferred` called from another thread-local's destructor at thread exit, after
//! clockline's own thread-locals are gone: it must still work (it is the natural place for a
//! per-thread wrapper to hand its values over). It aborted the process once, when `flush`
//! reached a thread-local with a destructor through `with` (found in review, 2026-11-28). The
//! scenario runs in a child process, since an abort would take the test harness with it.

use std::cell::RefCell;

struct FlushOnDrop;

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        clockline::flush_deferred();
    }
}

std::thread_local! {
    static LATE: RefCell<Option<FlushOnDrop>> = const { RefCell::new(None) };
}

fn scenario() {
    std::thread::spawn(|| {
        // Registered before clockline's thread-locals, so destroyed after them.
        LATE.with(|l| *l.borrow_mut() = Some(FlushOnDrop));
        let cache: clockline::Cache<u64, u64> = clockline::Cache::new(100);
        for i in 0..1_000 {
            cache.insert(i % 200, i).unwrap();
        }
        // Leaves a marker kept in a thread-local when a guard elsewhere stalls the epoch, and
        // in any case registers clockline's thread-locals after `LATE`.
        clockline::flush_deferred();
    })
    .join()
    .unwrap();
}

#[test]
fn flush_deferred_from_a_thread_local_destructor_at_thread_exit() {
    if std::env::var_os("CLOCKLINE_TEARDOWN_CHILD").is_some() {
        scenario();
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "flush_deferred_from_a_thread_local_destructor_at_thread_exit",
            "--test-threads=1",
            "--nocapture",
        ])
        .env("CLOCKLINE_TEARDOWN_CHILD", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the child died: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
