#!/usr/bin/env bash
#
# Soak: chaos's clients (scripts/chaos.py) in a steady mix against one
# release server for MINUTES, and every 10 s one line of the server's open
# descriptors, RSS, CPU seconds used, connections active (admin `stats`),
# and the errors its clients have seen so far. At the end, a verdict on
# each figure: it "grows without bound" if, after a warm-up of 3 samples,
# the median of the last third of the samples is above the largest of the
# first third by more than a tolerance (a level: descriptors, RSS,
# connections) or the same holds for its rate per interval (a counter: CPU
# seconds, errors); see verdict() in chaos.py for the tolerances and why.
# Also fails on any violation by a well-behaved client, a server that exits,
# or one that does not answer `stats` at the end. Run by hand, not by
# scripts/test.sh.
#
# Usage: scripts/soak.sh MINUTES      (at least 2, for 9 samples)
#        TCP_REACTOR=PATH scripts/soak.sh MINUTES   to soak another build
# Concurrency: SOAK_HOSTILE (default 100) and SOAK_GOOD (default 20) clients.

set -uo pipefail
MINUTES=${1:-}
if ! [[ $MINUTES =~ ^[0-9]+$ ]] || [ "$MINUTES" -lt 2 ] || [ "$MINUTES" -gt 1440 ]; then
    echo "usage: $0 MINUTES   (2 to 1440)" >&2
    exit 2
fi
if [ -z "${TCP_REACTOR:-}" ]; then
    (cd "$(dirname "${BASH_SOURCE[0]}")/.." && cargo build --release --locked --quiet) ||
        { echo "error: cargo build --release --locked failed" >&2; exit 1; }
    TCP_REACTOR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/release/tcp-reactor
    export TCP_REACTOR
fi
# The helpers (and lib.sh's server start and clean-up on exit).
# shellcheck source=scripts/chaos.sh
. "$(dirname "${BASH_SOURCE[0]}")/chaos.sh" 1
need_nc

SECS=$((MINUTES * 60))
ROOT=$TMP/root
chaos_root "$ROOT"
start_chaos_server
echo "soak: $MINUTES min, ${SOAK_HOSTILE:-100} hostile and ${SOAK_GOOD:-20} well-behaved clients at a time, $BIN"
start_reader
client good good "$PORTS" "$ROOT" "$SECS" "${SOAK_GOOD:-20}" "$TMP/good.json" "$TMP/good.progress"
GOOD_PID=$BG_PID
client hostile hostile "$PORTS" "$ROOT" "$SECS" "${SOAK_HOSTILE:-100}" "$TMP/hostile.json" \
    "$TMP/hostile.progress"
HOSTILE_PID=$BG_PID

SAMPLES=$TMP/samples.jsonl
status=0
start=$SECONDS
printf '%6s %6s %10s %8s %7s %7s %9s\n' time fds rss_MB cpu_s active errors ops
# One sample every 10 s (on the clock, whatever a sample takes), until the
# clients end (they stop at SECS).
tick=$start
while running "$GOOD_PID" || running "$HOSTILE_PID"; do
    if ! running "$SERVER_PID"; then
        echo "VIOLATION: the server exited: $(tail -n 5 "$SERVER_LOG")"
        status=1
        break
    fi
    if [ $((SECONDS - start)) -gt $((SECS + 60)) ]; then
        echo "VIOLATION: the clients still run $((SECS + 60)) s after the start"
        status=1
        break
    fi
    tick=$((tick + 10))
    [ "$tick" -gt "$SECONDS" ] && sleep $((tick - SECONDS))
    # A sample of the load only: none once the clients are ending.
    { running "$GOOD_PID" && running "$HOSTILE_PID"; } || break
    python3 "$PY" sample "$SAMPLES" "$((SECONDS - start))" "$SERVER_PID" "$ADMIN_PORT" \
        "$TMP/good.progress" "$TMP/hostile.progress" || echo "could not sample"
done
touch "$TMP/reader.stop"
wait_clients 40 "$GOOD_PID" "$HOSTILE_PID" "$READER_PID" ||
    { echo "VIOLATION: the clients did not finish"; status=1; }
echo "verdict, after $((SECONDS - start)) s:"
python3 "$PY" verdict "$SAMPLES" || status=1
python3 "$PY" report "$TMP/good.json" "$TMP/hostile.json" "$TMP/reader.json" || status=1
server_verdict || status=1
if [ "$status" = 0 ]; then
    echo "soak: PASS"
else
    keep_log
    echo "soak: FAIL"
fi
exit "$status"
