# Shared by ci/asan.sh and ci/tsan.sh (sourced, not run): the nightly check, the settings both
# sanitizer runs need, and the run itself.
#
#   sanitizer_setup NAME FLAGS...   skip (exit 0) without nightly; RUSTFLAGS = FLAGS plus
#                                   --cfg clockline_no_pool; target/NAME as the target directory
#   sanitizer_run NAME ARGS...      `cargo +nightly test --locked --target <host> ARGS`, timed;
#                                   exits with the tests' status

# The host target is named explicitly so that build scripts and proc macros, which run on the
# host, are built without the sanitizer (only the tests and their dependencies are instrumented).
sanitizer_target=x86_64-unknown-linux-gnu

sanitizer_setup() {
    local name=$1
    shift
    if ! cargo +nightly --version >/dev/null 2>&1; then
        echo "skipped: no nightly"
        exit 0
    fi
    # clockline_no_pool: freed nodes go back to the allocator instead of a per-thread free list
    # (src/table/pool.rs), so that a node freed too early is memory the sanitizer tracks as
    # freed, not a recycled node.
    export RUSTFLAGS="$* --cfg clockline_no_pool ${RUSTFLAGS:-}"
    # Instrumented artifacts must not mix with ordinary ones ($ASAN_TARGET_DIR, $TSAN_TARGET_DIR).
    local dir_var="${name^^}_TARGET_DIR"
    export CARGO_TARGET_DIR="${!dir_var:-target/$name}"
    # Fewer proptest cases: instrumented code runs several times slower.
    export PROPTEST_CASES="${PROPTEST_CASES:-64}"
    # No backtraces for the tests' intentional panics: under TSan one backtrace takes over
    # 10 s of CPU to symbolize (build-std's debug info), so with RUST_BACKTRACE=1 in the
    # environment two loader tests, which panic on purpose inside a 10 s hang watchdog,
    # failed as "still running after 10s" (2026-11-27; 0.02 s with backtraces off). The
    # sanitizers print their own stacks for what they find.
    export RUST_BACKTRACE=0
}

sanitizer_run() {
    local name=$1 start status=0
    shift
    start=$(date +%s)
    cargo +nightly test --locked --target "$sanitizer_target" "$@" || status=$?
    echo "$name: exit status $status after $(( $(date +%s) - start ))s"
    exit "$status"
}
