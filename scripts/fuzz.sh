#!/usr/bin/env bash
#
# Builds and runs every fuzz target in fuzz/ for SECONDS each, one after
# another, and fails if any of them finds a crash (libFuzzer writes it to
# fuzz/artifacts/TARGET/). Needs a nightly toolchain; installs cargo-fuzz
# from crates.io if it is missing. Not part of scripts/test.sh: run by hand.
#
# Usage: scripts/fuzz.sh SECONDS [TARGET...]    (default: every target)

set -uo pipefail
secs=${1:?usage: scripts/fuzz.sh SECONDS [TARGET...]}
shift
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked || exit 1
fi
cargo +nightly fuzz build || exit 1

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
failed=()
for target in "${targets[@]}"; do
    echo "== $target: ${secs}s" >&2
    log=$(mktemp)
    cargo +nightly fuzz run "$target" -- -max_total_time="$secs" -print_final_stats=1 2>&1 | tee "$log" | grep -E 'panicked|SUMMARY|Test unit written' >&2
    status=${PIPESTATUS[0]}
    grep -E "stat::(number_of_executed_units|average_exec_per_sec)|Done [0-9]+ runs" "$log" >&2
    rm -f "$log"
    if [ "$status" -ne 0 ]; then
        failed+=("$target")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "crashes in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "no crash in ${#targets[@]} targets" >&2
