#!/usr/bin/env bash
#
# The one test command: the unit and integration tests (`cargo test`), then
# every netcat test script (scripts/nc-*.sh), the README's console examples
# (scripts/readme-examples.sh), every demo's self-test
# (scripts/demo-*.sh --test), the lab's own tests (scripts/lab-tests.sh),
# the full-screen `top` under tmux (scripts/top-tmux.sh, which installs tmux
# as root or skips) and 20 s of chaos (scripts/chaos.sh 20) against a fresh
# debug build. The lab's tests and demos need root, ip netns and tc tbf
# (scripts/lab.sh); where it cannot be built they exit 77 with one line
# saying why, and are counted as skipped.
#
# Run from anywhere:  scripts/test.sh
# Needs cargo and OpenBSD netcat (`nc -N`); run as root on a machine with
# apt-get, it installs netcat-openbsd itself. Ends with `N passed, N failed,
# N skipped` counting the scripts, and exits non-zero if anything failed.

set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Seconds one script may run before it counts as hung (each takes seconds).
SCRIPT_TIMEOUT=120

# OpenBSD netcat is the `nc` whose -N half-closes at the end of input.
has_openbsd_nc() {
    command -v nc >/dev/null 2>&1 &&
        nc -h 2>&1 | grep -Eq '^[[:space:]]+-N[[:space:]]'
}

if ! has_openbsd_nc; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "== installing netcat-openbsd"
        { apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq netcat-openbsd; } </dev/null ||
            true
    fi
    if ! has_openbsd_nc; then
        echo "tcp-reactor tests need nc: install the netcat-openbsd package" >&2
        exit 1
    fi
fi

echo "== cargo test --locked"
cargo test --locked

echo "== cargo build --locked"
cargo build --locked
# The scripts test this build rather than building again.
export TCP_REACTOR=$PWD/target/debug/tcp-reactor

passed=0
failed=0
skipped=0
failures=()

# Exit status of a script that cannot run here (the lab without root, ip
# netns or tc tbf): counted as skipped, with the line it printed, not failed.
SKIPPED_STATUS=77

# run SCRIPT [ARGS...]: runs one script, shows its output and its result.
run() {
    local status=0
    echo "== $*"
    timeout "$SCRIPT_TIMEOUT" bash "$@" </dev/null || status=$?
    if [ "$status" -eq 0 ]; then
        passed=$((passed + 1))
        echo "PASS $*"
    elif [ "$status" -eq "$SKIPPED_STATUS" ]; then
        skipped=$((skipped + 1))
        echo "SKIP $*"
    else
        failed=$((failed + 1))
        failures+=("$*")
        if [ "$status" -eq 124 ]; then
            echo "FAIL $* (still running after ${SCRIPT_TIMEOUT}s)"
        else
            echo "FAIL $* (exit $status)"
        fi
    fi
}

shopt -s nullglob
for script in scripts/nc-*.sh; do
    run "$script"
done
run scripts/readme-examples.sh
# The lab's own promises (its link, and nothing left behind on any exit);
# skipped, with one line, where the lab cannot be built.
run scripts/lab-tests.sh
run scripts/check-metrics.sh
for script in scripts/demo-*.sh; do
    run "$script" --test
done
run scripts/top-tmux.sh
# Hostile and well-behaved clients against every service at once, 20 s
# (about 25 s with its set-up and checks).
run scripts/chaos.sh 20

echo
if [ "$failed" -gt 0 ]; then
    printf 'failed: %s\n' "${failures[@]}"
fi
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
