# shellcheck shell=bash
#
# Shared helpers for the netcat test scripts and demos in scripts/. Not run on
# its own: a script sources it with
#
#     . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# and gets:
#   REPO, BIN        the repository root and the tcp-reactor binary to test
#                    (TCP_REACTOR=/path/to/binary overrides; otherwise
#                    target/debug/tcp-reactor, brought up to date by
#                    `cargo build` so a stale binary is never tested)
#   TMP              a private temporary directory, removed on exit
#   need_nc          stop unless `nc` is OpenBSD netcat (it has -N)
#   start_server     run `tcp-reactor serve ARGS...` in the background and
#                    wait until every listener is bound
#   start_server_expecting  the same for a command line without -l
#   port_of          the port a running server bound for a service
#   nc_send          a bounded `nc -N` to a loopback port
#   check*, skip     assertions that print `ok NAME` or `FAIL NAME` + a diff
#   finish           print `N passed, N failed`; exit 1 if any failed
#
# Every process started here is killed, and $TMP removed, when the script
# exits for any reason: success, failure, Ctrl-C or SIGTERM.
#
# Scripts use `set -uo pipefail` but not `set -e`: a failed check is counted
# and the run goes on, so one broken behaviour does not hide the others.
# Set-up steps that must work call `die` themselves.

# Seconds any single nc exchange may take before it counts as hung.
NC_TIMEOUT=${NC_TIMEOUT:-10}
# Seconds a server may take to log all of its `listening on` lines.
START_TIMEOUT=${START_TIMEOUT:-10}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PASSED=0
FAILED=0
STARTED_PIDS=()

# The log of the server started last, and its process id.
SERVER_LOG=
SERVER_PID=

die() {
    echo "error: $*" >&2
    exit 1
}

# running PID: the process exists and has not exited. (`kill -0` is not
# enough: it also succeeds on a child that exited but is not yet reaped.)
running() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [ "${stat%% *}" != Z ]
}

cleanup() {
    local pid i
    # A second Ctrl-C must not cut the clean-up short; it is bounded anyway.
    trap '' INT TERM
    for pid in "${STARTED_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || continue
        # A server flushes what it owes on SIGTERM; give it 2 s, then insist.
        for i in $(seq 20); do
            running "$pid" || break
            sleep 0.1
        done
        if running "$pid"; then
            echo "warning: process $pid still running 2 s after SIGTERM; killing it" >&2
            kill -KILL "$pid" 2>/dev/null
        fi
        wait "$pid" 2>/dev/null
    done
    [ -n "${TMP:-}" ] && rm -rf -- "$TMP"
}
trap cleanup EXIT
# Turn signals into an ordinary exit so the EXIT trap runs exactly once.
trap 'exit 130' INT
trap 'exit 143' TERM

TMP=$(mktemp -d "${TMPDIR:-/tmp}/tcp-reactor-test.XXXXXX") || die "mktemp failed"

if [ -n "${TCP_REACTOR:-}" ]; then
    BIN=$TCP_REACTOR
else
    BIN=$REPO/target/debug/tcp-reactor
    (cd "$REPO" && cargo build --quiet) || die "cargo build failed"
fi
[ -x "$BIN" ] || die "no tcp-reactor binary at $BIN"

# True when `nc` is OpenBSD netcat, the one whose -N half-closes the
# connection at the end of input (traditional netcat and ncat lack it).
has_openbsd_nc() {
    command -v nc >/dev/null 2>&1 &&
        nc -h 2>&1 | grep -Eq '^[[:space:]]+-N[[:space:]]'
}

need_nc() {
    has_openbsd_nc || die "these tests need nc with -N: install the netcat-openbsd package"
}

# start_server ARGS...: runs `tcp-reactor serve ARGS...` with its output in a
# fresh log, waits until it has logged one `listening on` line per -l, and
# sets SERVER_PID and SERVER_LOG; call it from the script itself, not from a
# subshell such as $(...), or the exit trap cannot stop the server. Listen
# addresses must be loopback; use port 0 and ask port_of for the real port.
# Dies if the server exits or is slow to listen.
start_server() {
    local arg want=0 expect_addr=0
    for arg in "$@"; do
        if [ "$expect_addr" = 1 ]; then
            expect_addr=0
        elif [[ $arg == -l || $arg == --listen ]]; then
            expect_addr=1
            want=$((want + 1))
            continue
        elif [[ $arg == --listen=* || $arg == -l?* ]]; then
            arg=${arg#--listen=}
            arg=${arg#-l}
            want=$((want + 1))
        else
            continue
        fi
        [[ $arg == 127.* || $arg == '[::1]':* ]] ||
            die "start_server: $arg is not a loopback address"
    done
    [ "$want" -gt 0 ] || die "start_server: give every listener with -l ADDR=SERVICE"
    start_server_expecting "$want" "$@"
}

# start_server_expecting COUNT ARGS...: start_server for a command line that
# opens listeners it does not name with -l (`serve` alone opens the
# defaults): waits for COUNT `listening on` lines, and checks no address. The
# caller reads the addresses from $SERVER_LOG and checks they are loopback.
start_server_expecting() {
    local want=$1 n=0 waited=0
    shift
    SERVER_LOG=$(mktemp "$TMP/server.XXXXXX.log")
    "$BIN" serve "$@" </dev/null >"$SERVER_LOG" 2>&1 &
    SERVER_PID=$!
    STARTED_PIDS+=("$SERVER_PID")

    while :; do
        n=$(grep -c 'listening on ' "$SERVER_LOG")
        [ "$n" -ge "$want" ] && return 0
        if ! running "$SERVER_PID"; then
            cat "$SERVER_LOG" >&2
            die "server exited before listening (tcp-reactor serve $*)"
        fi
        if [ "$waited" -ge $((START_TIMEOUT * 20)) ]; then
            cat "$SERVER_LOG" >&2
            die "server logged $n of $want 'listening on' lines in ${START_TIMEOUT}s"
        fi
        sleep 0.05
        waited=$((waited + 1))
    done
}

# port_of SERVICE [HOST [LOG]]: the port the server bound for SERVICE on HOST
# (default 127.0.0.1; write IPv6 as [::1]), read from the log line
# `listening on HOST:PORT (SERVICE)`. Dies if there is none.
port_of() {
    local service=$1 host=${2:-127.0.0.1} log=${3:-$SERVER_LOG} port
    port=$(grep -F "listening on $host:" "$log" |
        grep -F "($service)" |
        sed -n 's/.*listening on .*:\([0-9][0-9]*\) (.*/\1/p' |
        head -n 1)
    [ -n "$port" ] || die "no '$service' listener on $host in $log"
    echo "$port"
}

# nc_send HOST PORT [NC-OPTIONS...]: stdin to the server, the reply to
# stdout; half-closes at the end of input (-N) and gives up after
# NC_TIMEOUT seconds (exit status 124).
nc_send() {
    local host=$1 port=$2
    shift 2
    timeout "$NC_TIMEOUT" nc -N "$@" "$host" "$port"
}

# wait_for_log FIXED-STRING [LOG]: waits up to 5 s for the text to appear.
wait_for_log() {
    local text=$1 log=${2:-$SERVER_LOG} i
    for i in $(seq 50); do
        grep -qF -- "$text" "$log" && return 0
        [ "$i" -lt 50 ] && sleep 0.1
    done
    return 1
}

pass() {
    PASSED=$((PASSED + 1))
    echo "ok $1"
}

# fail NAME [DETAIL...]: counts a failure; each detail is printed indented.
fail() {
    local name=$1
    shift
    FAILED=$((FAILED + 1))
    echo "FAIL $name"
    local line
    for line in "$@"; do
        printf '%s\n' "$line" | sed 's/^/    /'
    done
}

skip() {
    echo "skip $1: $2"
}

# dump FILE [FROM]: od -c of 64 bytes of FILE starting at byte FROM (default
# 0), with decimal offsets, for failure messages.
dump() {
    od -A d -j "${2:-0}" -N 64 -c -- "$1" | sed 's/[[:space:]]*$//'
}

# check NAME EXPECTED ACTUAL: equal strings (exit codes, counts, one line).
check() {
    if [ "$2" = "$3" ]; then
        pass "$1"
    else
        fail "$1" "expected: $(printf '%s' "$2" | od -An -c)" \
            "actual:   $(printf '%s' "$3" | od -An -c)"
    fi
}

# check_file NAME EXPECTED-FILE ACTUAL-FILE: byte-identical files. On a
# difference, shows both sizes and both files around the first differing byte.
check_file() {
    local name=$1 expected=$2 actual=$3 first from
    if cmp -s -- "$expected" "$actual"; then
        pass "$name"
        return
    fi
    # `cmp` says "... differ: byte N, line L" or "EOF on FILE after byte N".
    first=$(cmp -- "$expected" "$actual" 2>&1 | sed -n 's/.*byte \([0-9][0-9]*\).*/\1/p')
    from=$(( ${first:-1} > 16 ? ${first:-1} - 16 : 0 ))
    fail "$name" "first difference at byte ${first:-1} (counting from 1)" \
        "expected, $(wc -c <"$expected") bytes, from offset $from:" "$(dump "$expected" "$from")" \
        "actual, $(wc -c <"$actual") bytes, from offset $from:" "$(dump "$actual" "$from")"
}

# check_bytes NAME EXPECTED-TEXT ACTUAL-FILE: the file holds exactly the
# text (write it with $'...' for escapes; it cannot hold NUL bytes).
check_bytes() {
    local expected
    expected=$(mktemp "$TMP/expected.XXXXXX")
    printf '%s' "$2" >"$expected"
    check_file "$1" "$expected" "$3"
}

# check_hex NAME "HEX BYTES" ACTUAL-FILE: the file's bytes, as lowercase hex
# separated by single spaces, e.g. "ca d5 0a".
check_hex() {
    local actual
    actual=$(od -An -v -tx1 -- "$3" | tr -s ' \n' '  ' | sed 's/^ //; s/ $//')
    if [ "$2" = "$actual" ]; then
        pass "$1"
    else
        fail "$1" "expected: $2" "actual:   $actual"
    fi
}

# check_match NAME EXTENDED-REGEX FILE: some line of the file matches.
check_match() {
    if grep -Eq -- "$2" "$3"; then
        pass "$1"
    else
        fail "$1" "no line matches /$2/ in:" "$(tail -n 20 -- "$3")"
    fi
}

# check_no_match NAME EXTENDED-REGEX FILE: no line of the file matches.
check_no_match() {
    if grep -Eq -- "$2" "$3"; then
        fail "$1" "unexpected line matching /$2/:" "$(grep -E -m 5 -- "$2" "$3")"
    else
        pass "$1"
    fi
}

# check_lines NAME COUNT FILE: the file has exactly COUNT lines.
check_lines() {
    local n
    n=$(wc -l <"$3")
    if [ "$n" -eq "$2" ]; then
        pass "$1"
    else
        fail "$1" "expected $2 lines, got $n:" "$(dump "$3")"
    fi
}

# check_alive NAME [PID]: the process (default: the server started last)
# is still running.
check_alive() {
    local pid=${2:-$SERVER_PID}
    if running "$pid"; then
        pass "$1"
    else
        fail "$1" "process $pid has exited"
    fi
}

# finish: the closing summary; exit status 1 if any check failed.
finish() {
    echo "$PASSED passed, $FAILED failed"
    exit $((FAILED > 0 ? 1 : 0))
}

# ---------------------------------------------------------------------------
# Helpers for the buffer demonstrations (scripts/demo-*.sh). A demo calls
# `demo_init "$@"` first; with --test it runs quietly and without pauses.

# check_num NAME A OP B: the integers compare as `[ A OP B ]` (OP: -eq -ne
# -lt -le -gt -ge), e.g. check_num "queue is not empty" "$queued" -gt 0.
check_num() {
    local name=$1 a=$2 op=$3 b=$4
    if [[ $a =~ ^-?[0-9]+$ && $b =~ ^-?[0-9]+$ ]] && test "$a" "$op" "$b"; then
        pass "$name"
    else
        fail "$name" "expected: '$a' $op '$b'"
    fi
}

# demo_init "$@": sets DEMO_TEST=1 for --test (no explanations, no pauses);
# DEMO_PAUSE (default 1) is the pause in seconds before each step otherwise.
# --plot DIR sets PLOT_DIR (absolute, created): the demo records its main
# step with `tcp-reactor record` and draws it into DIR/<demo>.svg (see
# record_start, record_stop and plot_recording, which do nothing without it).
demo_init() {
    DEMO_TEST=0
    DEMO_STEP=0
    DEMO_PAUSE=${DEMO_PAUSE:-1}
    PLOT_DIR=
    while [ $# -gt 0 ]; do
        case "$1" in
            --test) DEMO_TEST=1 ;;
            --plot)
                [ $# -ge 2 ] || { echo "usage: $0 [--test] [--plot DIR]" >&2; exit 2; }
                PLOT_DIR=$2
                shift
                ;;
            *) echo "usage: $0 [--test] [--plot DIR]" >&2; exit 2 ;;
        esac
        shift
    done
    if [ -n "$PLOT_DIR" ]; then
        mkdir -p -- "$PLOT_DIR" || die "cannot create $PLOT_DIR"
        PLOT_DIR=$(cd -- "$PLOT_DIR" && pwd)
    fi
}

# Milliseconds between the snapshots a demo records: the admin service's
# shortest interval, since the demos' transfers take well under a second.
RECORD_INTERVAL=50

# record_start ADMIN-PORT NAME: under --plot, records every connection but
# admin ones of the server at ADMIN-PORT into $TMP/NAME.csv, in the
# background until record_stop (sets RECORD_PID, RECORD_CSV). Returns once
# the recorder is connected, so what follows is recorded. Call it from the
# script itself, not a subshell.
record_start() {
    [ -n "$PLOT_DIR" ] || return 0
    RECORD_CSV=$TMP/$2.csv
    "$BIN" record "127.0.0.1:$1" --interval "$RECORD_INTERVAL" --secs 300 \
        -o "$RECORD_CSV" </dev/null 2>"$TMP/$2.record.log" &
    RECORD_PID=$!
    STARTED_PIDS+=("$RECORD_PID")
    # The file is created once the recorder has its first snapshot.
    wait_for_file "$RECORD_CSV" 10 || die "record did not start: $(cat "$TMP/$2.record.log")"
}

# record_stop settle|now: under --plot, with `settle` waits (up to 5 s) until
# the recording has one more snapshot with rows in it than now, so the
# step's last event is in it (`now`: no wait, for a step whose connections
# are all gone), then
# stops it (SIGTERM: it ends at a whole snapshot) and waits for it.
record_stop() {
    [ -n "$PLOT_DIR" ] || return 0
    local rows i
    rows=$(wc -l <"$RECORD_CSV")
    for i in $(seq 100); do
        [ "$1" = now ] || [ "$(wc -l <"$RECORD_CSV")" -gt "$rows" ] && break
        sleep 0.05
    done
    kill -TERM "$RECORD_PID" 2>/dev/null
    for i in $(seq 50); do
        running "$RECORD_PID" || break
        sleep 0.1
    done
    running "$RECORD_PID" && kill -KILL "$RECORD_PID" 2>/dev/null
    wait "$RECORD_PID" 2>/dev/null
}

# plot_label PORT NAME: under --plot, titles the panel of the client whose
# local port is PORT (on 127.0.0.1) "NAME: connection ...", so the picture
# says what the text does (client A, B, C) rather than the server's ids.
PLOT_LABELS=()
plot_label() {
    [ -n "$PLOT_DIR" ] || return 0
    PLOT_LABELS+=(--label "127.0.0.1:$1=$2")
}

# plot_recording NAME CSV...: under --plot, draws the recordings (one CSV,
# or several, each timed from its own start) into $PLOT_DIR/NAME.svg, with
# the labels plot_label gave.
plot_recording() {
    [ -n "$PLOT_DIR" ] || return 0
    local name=$1 all=$TMP/plot/$1.csv f
    shift
    mkdir -p "$TMP/plot"
    head -n 1 -- "$1" >"$all"
    for f in "$@"; do
        tail -n +2 -- "$f" >>"$all"
    done
    "$BIN" plot "$all" -o "$PLOT_DIR/$name.svg" "${PLOT_LABELS[@]}" 2>"$TMP/$name.plot.log" ||
        die "plot failed: $(cat "$TMP/$name.plot.log")"
    echo
    echo "picture of this run: $PLOT_DIR/$name.svg"
}

# explain: prints its standard input (a here-document), except under --test.
explain() {
    if [ "$DEMO_TEST" = 1 ]; then
        cat >/dev/null
    else
        cat
    fi
}

# step TITLE: a numbered step heading, after a pause of DEMO_PAUSE seconds
# (none before the first step, none under --test).
step() {
    DEMO_STEP=$((DEMO_STEP + 1))
    if [ "$DEMO_TEST" = 0 ] && [ "$DEMO_STEP" -gt 1 ]; then
        sleep "$DEMO_PAUSE"
    fi
    printf '\n== Step %d: %s\n' "$DEMO_STEP" "$1"
}

# start_bg COMMAND...: runs COMMAND in the background, killed at exit like
# the servers; sets BG_PID. Call it from the script itself, not a subshell.
start_bg() {
    "$@" </dev/null &
    BG_PID=$!
    STARTED_PIDS+=("$BG_PID")
}

# wait_for_file FILE [SECONDS]: waits (default 10 s) until FILE exists.
wait_for_file() {
    local i
    for ((i = 0; i < ${2:-10} * 20; i++)); do
        [ -e "$1" ] && return 0
        sleep 0.05
    done
    return 1
}

# admin PORT COMMAND: one admin command (`clients`, `stats json`, ...); the
# answer goes to stdout.
admin() {
    printf '%s\n' "$2" | timeout "$NC_TIMEOUT" nc -N 127.0.0.1 "$1"
}

# show_clients PORT: the admin `clients` table without the admin's own
# connections and without the footnote, indented.
show_clients() {
    admin "$1" clients | awk 'NR == 1 || ($3 != "admin" && $1 ~ /^[0-9]+$/)' |
        sed 's/^/    /'
}

# client_field PORT PEER-PORT FIELD...: the fields, on one line, of the
# connection from 127.0.0.1:PEER-PORT in `clients json` (nothing if none).
client_field() {
    local port=$1
    shift
    admin "$port" 'clients json' | python3 -c '
import json, sys
for c in json.load(sys.stdin)["clients"]:
    if c["peer"] == "127.0.0.1:" + sys.argv[1]:
        print(*(c[f] for f in sys.argv[2:]))' "$@"
}

# sock_queues LOCAL-PORT PEER-PORT: "RECV-Q SEND-Q" of that loopback TCP
# socket, as `ss -tn` shows them.
sock_queues() {
    ss -tnH "( sport = :$1 and dport = :$2 )" | awk 'NR == 1 { print $2, $3 }'
}

# rss_kb PID: the process's resident memory in kB (VmRSS).
rss_kb() {
    awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}
