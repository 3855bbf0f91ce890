#!/usr/bin/env bash
# Runs the whole test suite for riscv64 or aarch64 under QEMU RUNS times in a row (debug),
# while a busy loop keeps one CPU (the last) fully loaded, and fails unless every run
# passes. Timing-dependent tests must synchronise on events, not on how fast QEMU runs:
# this is the check that they do. Not part of .ci/run (it takes RUNS times a cross suite);
# run it on a development machine after changing a test or the scheduler.
#
#   scripts/cross-under-load.sh riscv64 10
#
# Each run's output goes to target/cross-under-load/run-N.log. Needs what
# scripts/test-cross.sh installs (run that once first).
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
    riscv64) target=riscv64gc-unknown-linux-gnu ;;
    aarch64) target=aarch64-unknown-linux-gnu ;;
    *) echo "usage: $0 riscv64|aarch64 [RUNS]" >&2; exit 2 ;;
esac
runs=${2:-10}
case "$runs" in
    '' | *[!0-9]* | 0) echo "RUNS must be a positive whole number, not '$runs'" >&2; exit 2 ;;
esac

logs=target/cross-under-load
mkdir -p "$logs"
echo "== building the $target tests"
cargo test --target "$target" --no-run -q

busy_cpu=$(($(nproc) - 1))
taskset -c "$busy_cpu" bash -c 'while :; do :; done' &
busy=$!
trap 'kill "$busy" 2>/dev/null || true' EXIT

passed=0
for run in $(seq "$runs"); do
    start=$(date +%s)
    if cargo test --target "$target" >"$logs/run-$run.log" 2>&1; then
        verdict=ok
        passed=$((passed + 1))
    else
        verdict="FAILED (see $logs/run-$run.log)"
    fi
    load=$(cut -d' ' -f1 /proc/loadavg)
    echo "run $run/$runs: $verdict in $(($(date +%s) - start)) s, load average $load"
done
echo "passed $passed of $runs runs with CPU $busy_cpu busy"
[ "$passed" -eq "$runs" ]
