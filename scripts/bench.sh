#!/usr/bin/env bash
#
# tcp-reactor side by side with the baseline servers under bench/ (tokio
# current_thread, a thread per connection, a minimal mio loop), in one run,
# interleaved (every server at one point, then every server at the next,
# and the whole sweep again REPS times), medians of the repetitions:
#
#   echo     1 / 100 / 1,000 / 10,000 connections x 64 B / 4 KiB messages:
#            msgs/s, p50/p99, server CPU per message, system calls per
#            message, the server's user/system split
#   mixed    8 clients echoing 4 MiB messages and 50 echoing 64 B, at once:
#            the small ones' p50/p99 and the bulk rate; twice: the small
#            clients in a closed loop (each sends again when its echo is
#            back), and paced (`bench --rate MIXED_RATE`, the same load for
#            every server, so the bulk rates compare the servers rather than
#            how the shared client core was split), and the paced small
#            clients alone (no bulk: the machine's own tail); with the share
#            of the server's CPU the hypervisor took (steal, /proc/stat)
#   short    connect, one 64-byte round trip, close (`bench --short`, from
#            several client processes): connections/s, CPU per connection;
#            and once, each server's system calls per connection by name
#            (strace -c, when installed)
#   idle     RSS per idle connection, at 10,000
#   download a sparse 1 GiB file from the files service (copied through
#            the send buffer, and with --sendfile), against
#            `ncat --send-only` serving the same file and raw loopback TCP
#            (bench/'s loopback-send); one reader (bench/'s sink) for all
#
# Writes bench/RESULTS.md (the machine, the date, the command, a table per
# section with medians and ratios tcp-reactor / baseline) and prints it.
#
# Usage:  scripts/bench.sh             full run (REPS=3, about 10 minutes)
#         QUICK=1 scripts/bench.sh     fewer points, 1 repetition, 1 s each
# Environment: REPS (repetitions), SECS (seconds per echo point), SECTIONS
# (default "echo mixed short idle download"),
# SERVER_CPU / LOAD_CPU (default 0 and 1), OUT (default bench/RESULTS.md),
# MIXED_RATE (the paced small clients' round trips per second in all,
# default 5000).
#
# The server runs pinned to SERVER_CPU, every load generator (and this
# script) to LOAD_CPU, with taskset. Server CPU is read from
# /proc/PID/stat (utime, stime) over the load phase only: the window opens
# once the server holds every connection, and closes when the load
# generator exits; for the echo matrix, when it reports, before it closes
# its connections (`bench --hold`), so closing 10,000 connections is not
# counted against the messages. System calls are counted with `perf stat -e
# raw_syscalls:sys_enter -p PID` over the same window when perf works here
# (its tracepoint costs the server a little CPU, the same for every
# server); otherwise from /proc/PID/io's syscr + syscw (reads and writes
# only, no epoll), and RESULTS.md says which. Only 127.0.0.1; every loop is
# bounded by its own --secs and by `timeout`; every process started here is
# killed on exit. Needs: cargo, taskset, python3, ncat (installed with
# apt-get when missing and run as root), perf (optional).

set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
REPO=$PWD

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
    REPS=${REPS:-1}
    SECS=${SECS:-1}
    ECHO_CONNS=${ECHO_CONNS:-"1 10000"}
    ECHO_SIZES=${ECHO_SIZES:-"64 4096"}
else
    REPS=${REPS:-3}
    SECS=${SECS:-3}
    ECHO_CONNS=${ECHO_CONNS:-"1 100 1000 10000"}
    ECHO_SIZES=${ECHO_SIZES:-"64 4096"}
fi
# Which sections to run (a subset, to iterate on one; RESULTS.md then
# holds only those).
SECTIONS=${SECTIONS:-"echo mixed short idle download"}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
OUT=${OUT:-bench/RESULTS.md}
# Short-connection client processes and loops in each: enough that the
# load generator keeps every server busy, on one core.
SHORT_PROCS=${SHORT_PROCS:-4}
SHORT_LOOPS=${SHORT_LOOPS:-8}
MIXED_RATE=${MIXED_RATE:-5000}
IDLE_CONNS=10000
# Short connections whose system calls are counted by name (strace).
SHORT_CALLS_CONNS=${SHORT_CALLS_CONNS:-2000}
DOWNLOAD_BYTES=$((1 << 30))
SERVERS="tcp-reactor tokio threads mio"
# Seconds a server may take to say `listening on`, and a load generator to
# exit past its own --secs, before the run counts as broken.
START_TIMEOUT=10
GRACE=60

if [ "$QUICK" = 1 ]; then
    COMMAND="QUICK=1 REPS=$REPS SECS=$SECS scripts/bench.sh"
else
    COMMAND="REPS=$REPS SECS=$SECS scripts/bench.sh"
fi
if [ "$SECTIONS" != "echo mixed short idle download" ]; then
    COMMAND="SECTIONS='$SECTIONS' $COMMAND"
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/tcp-reactor-bench.XXXXXX")
DATA=$TMP/data.jsonl
STARTED=()

die() {
    echo "error: $*" >&2
    exit 1
}

cleanup() {
    local pid
    trap '' INT TERM
    for pid in "${STARTED[@]}"; do
        kill "$pid" 2>/dev/null
    done
    for pid in "${STARTED[@]}"; do
        wait "$pid" 2>/dev/null
    done
    [ -n "${CGROUP:-}" ] && rmdir "$CGROUP" 2>/dev/null
    rm -rf -- "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for tool in cargo taskset python3; do
    command -v "$tool" >/dev/null || die "$tool is needed"
done
if ! command -v ncat >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "== installing ncat" >&2
        { apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ncat; } </dev/null >&2 ||
            true
    fi
fi
command -v ncat >/dev/null || echo "warning: no ncat; the download skips it" >&2
[ "$(nproc)" -gt "$LOAD_CPU" ] || die "needs CPUs $SERVER_CPU and $LOAD_CPU"

# 10,000 connections on each side, and a thread per connection.
ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -gt $((IDLE_CONNS + 100)) ] || die "ulimit -n is below $((IDLE_CONNS + 100))"

echo "== building (release)" >&2
cargo build --release --locked --quiet || die "cargo build failed"
(cd bench && cargo build --release --locked --quiet) || die "cargo build in bench/ failed"
TR=$REPO/target/release/tcp-reactor
BB=$REPO/bench/target/release

# nproc counts only the CPUs this process may use: read it before pinning.
NPROC=$(nproc)
# This script and every load generator run on LOAD_CPU; only servers on
# SERVER_CPU.
taskset -cp "$LOAD_CPU" $$ >/dev/null || die "taskset failed"

# How system calls are counted. Best: perf's tracepoint for a cgroup v2
# holding the server, which counts every thread, however late it was made
# (`perf stat -p` counts only the threads there when it attaches, which
# misses a thread-per-connection server's). Else `-p`; else /proc/PID/io.
SYSCALLS=io
CGROUP=
if command -v perf >/dev/null &&
    perf stat -e raw_syscalls:sys_enter -x, -o "$TMP/probe" -- true 2>/dev/null &&
    grep -q raw_syscalls "$TMP/probe"; then
    SYSCALLS=perf-pid
    unified=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
    if [ -n "$unified" ] && mkdir "$unified/tcp-reactor-bench.$$" 2>/dev/null; then
        CGROUP=$unified/tcp-reactor-bench.$$
        sleep 1000 &
        probe=$!
        echo "$probe" >"$CGROUP/cgroup.procs" 2>/dev/null &&
            perf stat -e raw_syscalls:sys_enter -x, -o "$TMP/probe" -a -G "${CGROUP##*/}" \
                -- true 2>/dev/null && grep -q raw_syscalls "$TMP/probe" && SYSCALLS=perf-cgroup
        kill "$probe"
        wait "$probe" 2>/dev/null
    fi
fi
CLK_TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------- servers

SERVER_PID=
SERVER_ADDR=

# start_server NAME ARGS...: runs server NAME pinned to SERVER_CPU and sets
# SERVER_PID and SERVER_ADDR from its `listening on ADDR` line.
# start_server_cmd NAME ARGS...: SERVER_CMD, the command line of server NAME.
start_server_cmd() {
    local name=$1
    shift
    case $name in
    tcp-reactor) SERVER_CMD=("$TR" serve --max-conns 0 "$@") ;;
    tokio) SERVER_CMD=("$BB/echo-tokio" --listen 127.0.0.1:0) ;;
    threads) SERVER_CMD=("$BB/echo-threads" --listen 127.0.0.1:0) ;;
    mio) SERVER_CMD=("$BB/echo-mio" --listen 127.0.0.1:0) ;;
    *) die "no server $name" ;;
    esac
}

start_server() {
    local name=$1 log=$TMP/server.log i
    start_server_cmd "$@"
    : >"$log"
    taskset -c "$SERVER_CPU" "${SERVER_CMD[@]}" </dev/null >/dev/null 2>"$log" &
    SERVER_PID=$!
    STARTED+=("$SERVER_PID")
    if [ "$SYSCALLS" = perf-cgroup ]; then
        echo "$SERVER_PID" >"$CGROUP/cgroup.procs" || die "cannot move $name into $CGROUP"
    fi
    SERVER_ADDR=
    for i in $(seq $((START_TIMEOUT * 20))); do
        SERVER_ADDR=$(grep -o 'listening on 127\.0\.0\.1:[0-9]*' "$log" | head -1 | cut -d' ' -f3)
        [ -n "$SERVER_ADDR" ] && break
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.05
    done
    [ -n "$SERVER_ADDR" ] || die "$name did not start: $(head -c 500 "$log")"
}

stop_server() {
    kill "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null
    SERVER_PID=
}

# cpu_ticks PID: "UTIME STIME" in clock ticks, every thread included.
cpu_ticks() {
    local stat fields
    stat=$(cat "/proc/$1/stat") || {
        echo "0 0"
        return
    }
    # After the name: state is field 3 of the line, utime 14, stime 15.
    read -ra fields <<<"${stat##*) }"
    echo "${fields[11]} ${fields[12]}"
}

# open_fds PID: descriptors the process holds.
open_fds() {
    local fds=(/proc/"$1"/fd/*)
    echo "${#fds[@]}"
}

threads_of() {
    awk '/^Threads:/ { print $2 }' "/proc/$1/status"
}

# wait_for_fds PID N CLIENT [THREADS]: until PID holds N descriptors (and,
# if given, runs THREADS threads); false if it dies, if process CLIENT ends
# first, or after GRACE seconds.
wait_for_fds() {
    local end=$((SECONDS + GRACE))
    while [ "$SECONDS" -lt "$end" ]; do
        [ "$(open_fds "$1")" -ge "$2" ] && [ "$(threads_of "$1")" -ge "${4:-0}" ] && return 0
        kill -0 "$1" 2>/dev/null || return 1
        kill -0 "$3" 2>/dev/null || return 1
        sleep 0.02
    done
    return 1
}

vm_rss_kib() {
    awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}

# The measuring window: CPU ticks, the system call count, and how long.
WINDOW_START=
WINDOW_TICKS=
PERF_PID=
IO_START=

# steal_ticks: clock ticks the hypervisor took from SERVER_CPU so far
# (the steal column of /proc/stat; 0 on bare metal).
steal_ticks() {
    awk -v cpu="cpu$SERVER_CPU" '$1 == cpu { print $9 + 0 }' /proc/stat
}

window_open() {
    WINDOW_TICKS=$(cpu_ticks "$SERVER_PID")
    WINDOW_STEAL=$(steal_ticks)
    WINDOW_START=$(date +%s.%N)
    if [ "$SYSCALLS" != io ]; then
        local target=(-p "$SERVER_PID")
        [ "$SYSCALLS" = perf-cgroup ] && target=(-a -G "${CGROUP##*/}")
        perf stat -e raw_syscalls:sys_enter -x, -o "$TMP/perf.out" "${target[@]}" 2>/dev/null &
        PERF_PID=$!
        STARTED+=("$PERF_PID")
        # perf attaches within a few milliseconds.
        sleep 0.05
    else
        IO_START=$(awk '/^sysc[rw]:/ { n += $2 } END { print n }' "/proc/$SERVER_PID/io")
    fi
}

# window_close: sets WINDOW_JSON to the window's JSON fields. (Not in a
# command substitution: only this shell can wait for perf.)
WINDOW_JSON=
window_close() {
    local ticks now syscalls=null t steal
    ticks=$(cpu_ticks "$SERVER_PID")
    steal=$(($(steal_ticks) - WINDOW_STEAL))
    now=$(date +%s.%N)
    if [ "$SYSCALLS" != io ]; then
        kill -INT "$PERF_PID" 2>/dev/null
        wait "$PERF_PID" 2>/dev/null
        syscalls=$(awk -F, '/raw_syscalls:sys_enter/ { print $1 }' "$TMP/perf.out")
        [[ $syscalls =~ ^[0-9]+$ ]] || syscalls=null
    else
        syscalls=$(awk -v s="$IO_START" '/^sysc[rw]:/ { n += $2 } END { print n - s }' \
            "/proc/$SERVER_PID/io")
    fi
    read -ra t <<<"$WINDOW_TICKS $ticks"
    WINDOW_JSON=$(printf '"user_ticks":%d,"sys_ticks":%d,"clk_tck":%d,"window_secs":%s,"syscalls":%s,"steal_ticks":%d' \
        $((t[2] - t[0])) $((t[3] - t[1])) "$CLK_TCK" \
        "$(python3 -c "print(round($now - $WINDOW_START, 6))")" "$syscalls" "$steal")
}

# load ARGS...: one `tcp-reactor bench` on LOAD_CPU, JSON on stdout; a
# broken run still prints a JSON line, with its error.
load() {
    local out
    out=$(timeout $((GRACE + ${SECS%.*} + 10)) "$TR" bench "$@" --json 2>"$TMP/load.err")
    if [ -z "$out" ]; then
        out=$(python3 -c 'import json,sys; print(json.dumps({"errors": 1, "failures": [sys.argv[1]]}))' \
            "$(head -c 300 "$TMP/load.err")")
    fi
    echo "$out"
}

record() {
    echo "$1" >>"$DATA"
}

# ---------------------------------------------------------------- sections

# echo_point SERVER CONNS SIZE REP
echo_point() {
    local server=$1 conns=$2 size=$3 rep=$4 base out
    start_server "$server" -l 127.0.0.1:0=echo
    base=$(open_fds "$SERVER_PID")
    # --hold: the load generator prints its report, then keeps its
    # connections open until its stdin (a fifo held here) ends, so the
    # window closes before the server sees them close: closing 10,000
    # connections is not a cost of a message either.
    rm -f "$TMP/hold.in"
    mkfifo "$TMP/hold.in"
    : >"$TMP/bench.json"
    timeout $((GRACE + ${SECS%.*} + 10)) "$TR" bench "$SERVER_ADDR" \
        --conns "$conns" --size "$size" --secs "$SECS" --json --hold \
        <"$TMP/hold.in" >"$TMP/bench.json" 2>"$TMP/load.err" &
    local bench=$!
    STARTED+=("$bench")
    exec 8>"$TMP/hold.in"
    # The window opens once the server holds every connection (for the
    # thread-per-connection server: once each has its thread): accepting
    # 10,000 is a cost of its own, not of a message.
    local held=true threads=0
    [ "$server" = threads ] && threads=$((conns + 1))
    wait_for_fds "$SERVER_PID" $((base + conns)) "$bench" "$threads" || {
        held=false
        echo "warning: $server never held $conns connections" >&2
    }
    window_open
    # Until the report is out (or the load generator has exited).
    local i
    for i in $(seq $(((GRACE + ${SECS%.*} + 10) * 100))); do
        [ -s "$TMP/bench.json" ] && break
        kill -0 "$bench" 2>/dev/null || break
        sleep 0.01
    done
    window_close
    exec 8>&-
    wait "$bench"
    rm -f "$TMP/hold.in"
    if ! [ -s "$TMP/bench.json" ]; then
        python3 -c 'import json,sys; print(json.dumps({"errors": 1, "failures": [sys.argv[1]]}))' \
            "$(head -c 300 "$TMP/load.err")" >"$TMP/bench.json"
    fi
    out="$WINDOW_JSON,\"held\":$held"
    record "{\"section\":\"echo\",\"server\":\"$server\",\"conns\":$conns,\"size\":$size,\"rep\":$rep,$out,\"bench\":$(cat "$TMP/bench.json")}"
    stop_server
}

# mixed_point SERVER REP [RATE [BULK]]: BULK (default 8) bulk clients (4 MiB)
# and 50 small (64 B) at once; with RATE, the small ones paced at RATE round
# trips/s in all. BULK 0 is the control: the small load alone.
mixed_point() {
    local server=$1 rep=$2 rate=${3:-} conns=${4:-8} out pace=() bulk=
    [ -n "$rate" ] && pace=(--rate "$rate")
    start_server "$server" -l 127.0.0.1:0=echo
    window_open
    if [ "$conns" -gt 0 ]; then
        load "$SERVER_ADDR" --conns "$conns" --size 4M --secs "$SECS" >"$TMP/bulk.json" &
        bulk=$!
        STARTED+=("$bulk")
    else
        echo '{"bytes":0,"secs":null,"errors":0}' >"$TMP/bulk.json"
    fi
    load "$SERVER_ADDR" --conns 50 --size 64 --secs "$SECS" "${pace[@]}" >"$TMP/small.json" &
    local small=$!
    STARTED+=("$small")
    [ -n "$bulk" ] && wait "$bulk"
    wait "$small"
    window_close
    out=$WINDOW_JSON
    record "{\"section\":\"mixed\",\"server\":\"$server\",\"rep\":$rep,\"paced\":${rate:-null},\"bulk_conns\":$conns,$out,\"bulk\":$(cat "$TMP/bulk.json"),\"small\":$(cat "$TMP/small.json")}"
    stop_server
}

# stall_probe: a lone process spinning on SERVER_CPU for 3 s, reading the
# clock: every gap over 0.5 ms is time the CPU was taken from it (by the
# hypervisor, or an interrupt), which no server on that CPU can avoid
# either. Recorded once, as context for the latency tails.
stall_probe() {
    local gaps
    gaps=$(taskset -c "$SERVER_CPU" python3 -c '
import json, time
end = time.perf_counter() + 3.0
last = time.perf_counter()
gaps = []
while last < end:
    t = time.perf_counter()
    if t - last > 0.0005:
        gaps.append(round((t - last) * 1e3, 3))
    last = t
print(json.dumps(gaps))')
    record "{\"section\":\"stalls\",\"secs\":3,\"gaps_ms\":${gaps:-[]}}"
}

# short_point SERVER REP: SHORT_PROCS client processes of short connections.
short_point() {
    local server=$1 rep=$2 out i pids=() parts=()
    start_server "$server" -l 127.0.0.1:0=echo
    window_open
    for i in $(seq "$SHORT_PROCS"); do
        load "$SERVER_ADDR" --short --conns "$SHORT_LOOPS" --size 64 --secs "$SECS" \
            >"$TMP/short.$i.json" &
        pids+=($!)
        STARTED+=($!)
    done
    for i in "${pids[@]}"; do
        wait "$i"
    done
    window_close
    out=$WINDOW_JSON
    for i in $(seq "$SHORT_PROCS"); do
        parts+=("$(cat "$TMP/short.$i.json")")
    done
    record "{\"section\":\"short\",\"server\":\"$server\",\"rep\":$rep,$out,\"clients\":[$(
        IFS=,
        echo "${parts[*]}"
    )]}"
    stop_server
}

# short_calls_point SERVER: the system calls of SHORT_CALLS_CONNS short
# connections, by name, counted by `strace -f -c` (once, not timed: strace
# slows the server). Shows where a connection's calls go: accept, read,
# write, shutdown, epoll_ctl, close, epoll_wait.
short_calls_point() {
    local server=$1 tracer child i
    command -v strace >/dev/null || return 0
    start_server_cmd "$server" -l 127.0.0.1:0=echo
    : >"$TMP/server.log"
    taskset -c "$SERVER_CPU" strace -f -c -o "$TMP/strace.txt" "${SERVER_CMD[@]}" \
        </dev/null >/dev/null 2>"$TMP/server.log" &
    tracer=$!
    STARTED+=("$tracer")
    SERVER_ADDR=
    for i in $(seq $((START_TIMEOUT * 20))); do
        SERVER_ADDR=$(grep -o 'listening on 127\.0\.0\.1:[0-9]*' "$TMP/server.log" | head -1 | cut -d' ' -f3)
        [ -n "$SERVER_ADDR" ] && break
        sleep 0.05
    done
    if [ -n "$SERVER_ADDR" ]; then
        load "$SERVER_ADDR" --short --conns 1 --rounds "$SHORT_CALLS_CONNS" --size 64 \
            --secs "$GRACE" >"$TMP/short-calls.json"
    fi
    child=$(pgrep -P "$tracer" | head -1)
    [ -n "$child" ] && kill "$child" 2>/dev/null
    wait "$tracer" 2>/dev/null
    python3 - "$TMP/strace.txt" "$server" "$SHORT_CALLS_CONNS" >>"$DATA" <<'PY'
import json, sys
path, server, conns = sys.argv[1], sys.argv[2], int(sys.argv[3])
calls = {}
for line in open(path):
    f = line.split()
    if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
        calls[f[-1]] = int(f[3])
print(json.dumps({"section": "short-calls", "server": server, "conns": conns, "calls": calls}))
PY
}

# idle_point SERVER REP: VmRSS before and after IDLE_CONNS idle connections.
idle_point() {
    local server=$1 rep=$2 base rss0 rss1 idle ok=true
    start_server "$server" -l 127.0.0.1:0=echo
    base=$(open_fds "$SERVER_PID")
    rss0=$(vm_rss_kib "$SERVER_PID")
    # Held until its stdin (a fifo this script keeps open) ends, or 120 s.
    mkfifo "$TMP/idle.in"
    "$BB/idle-conns" "$SERVER_ADDR" --conns "$IDLE_CONNS" --secs 120 \
        <"$TMP/idle.in" >"$TMP/idle.out" 2>&1 &
    idle=$!
    STARTED+=("$idle")
    exec 9>"$TMP/idle.in"
    wait_for_fds "$SERVER_PID" $((base + IDLE_CONNS)) "$idle" || ok=false
    # Let lazily freed or lazily taken memory settle.
    sleep 1
    rss1=$(vm_rss_kib "$SERVER_PID")
    exec 9>&-
    wait "$idle"
    rm -f "$TMP/idle.in"
    record "{\"section\":\"idle\",\"server\":\"$server\",\"rep\":$rep,\"conns\":$IDLE_CONNS,\"ok\":$ok,\"rss0_kib\":$rss0,\"rss1_kib\":$rss1}"
    stop_server
}

# A free loopback port, for ncat (which has no port 0 that it reports).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# sink ADDR [REQUEST]: one bounded download, JSON fields on stdout.
sink() {
    local line f
    if [ -n "${2:-}" ]; then
        line=$(timeout $((GRACE * 2)) "$BB/sink" "$1" --request "$2" 2>"$TMP/sink.err")
    else
        line=$(timeout $((GRACE * 2)) "$BB/sink" "$1" 2>"$TMP/sink.err")
    fi
    read -ra f <<<"$line"
    if [ "${f[0]:-}" = bytes ]; then
        printf '"bytes":%s,"secs":%s' "${f[1]}" "${f[3]}"
    else
        printf '"bytes":0,"secs":0,"error":"%s"' "$(head -c 200 "$TMP/sink.err" | tr -d '"\\\n')"
    fi
}

# download_point SENDER REP
download_point() {
    local sender=$1 rep=$2 out port pid i
    # The first read of a hole fills the page cache with zero pages (it
    # took a 1 GiB download 5x as long as the next): read the file first,
    # before every sender, so that none pays that for the others. Once is
    # not enough: a machine may reclaim page cache nobody touched for a
    # while (this VM runs DAMON's `pageout` on physical memory: pages
    # unused for about a minute go), and the sections between two
    # repetitions' downloads take longer than that.
    cat "$TMP/root/big" >/dev/null
    case $sender in
    tcp-reactor)
        start_server tcp-reactor -l 127.0.0.1:0=files --root "$TMP/root"
        out=$(sink "$SERVER_ADDR" "GET big")
        stop_server
        ;;
    sendfile)
        start_server tcp-reactor -l 127.0.0.1:0=files --root "$TMP/root" --sendfile
        out=$(sink "$SERVER_ADDR" "GET big")
        stop_server
        ;;
    ncat)
        command -v ncat >/dev/null || return 0
        port=$(free_port)
        taskset -c "$SERVER_CPU" ncat --send-only -l 127.0.0.1 "$port" <"$TMP/root/big" \
            >/dev/null 2>&1 &
        pid=$!
        STARTED+=("$pid")
        for i in $(seq $((START_TIMEOUT * 20))); do
            ss -Hltn "sport = :$port" 2>/dev/null | grep -q . && break
            sleep 0.05
        done
        out=$(sink "127.0.0.1:$port")
        kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
        ;;
    loopback)
        taskset -c "$SERVER_CPU" "$BB/loopback-send" --listen 127.0.0.1:0 \
            --bytes "$DOWNLOAD_BYTES" </dev/null >/dev/null 2>"$TMP/server.log" &
        pid=$!
        STARTED+=("$pid")
        for i in $(seq $((START_TIMEOUT * 20))); do
            grep -q 'listening on' "$TMP/server.log" && break
            sleep 0.05
        done
        out=$(sink "$(grep -o '127\.0\.0\.1:[0-9]*' "$TMP/server.log" | head -1)")
        kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
        ;;
    esac
    record "{\"section\":\"download\",\"server\":\"$sender\",\"rep\":$rep,$out}"
}

# ---------------------------------------------------------------- the run

mkdir -p "$TMP/root"
truncate -s "$DOWNLOAD_BYTES" "$TMP/root/big"
: >"$DATA"
RUN_START=$(date -u '+%Y-%m-%d %H:%M UTC')
echo "== $COMMAND: started $RUN_START, system calls by $SYSCALLS" >&2

wants() { [[ " $SECTIONS " == *" $1 "* ]]; }

for rep in $(seq "$REPS"); do
    if wants echo; then
        for conns in $ECHO_CONNS; do
            for size in $ECHO_SIZES; do
                for server in $SERVERS; do
                    echo "-- rep $rep: echo $conns x $size B: $server" >&2
                    echo_point "$server" "$conns" "$size" "$rep"
                done
            done
        done
    fi
    if wants mixed; then
        [ "$rep" = 1 ] && stall_probe
        for server in $SERVERS; do
            echo "-- rep $rep: mixed, closed loop: $server" >&2
            mixed_point "$server" "$rep"
            echo "-- rep $rep: mixed, paced at $MIXED_RATE/s: $server" >&2
            mixed_point "$server" "$rep" "$MIXED_RATE"
            echo "-- rep $rep: the paced small clients alone: $server" >&2
            mixed_point "$server" "$rep" "$MIXED_RATE" 0
        done
    fi
    for section in short idle; do
        wants "$section" || continue
        for server in $SERVERS; do
            echo "-- rep $rep: $section: $server" >&2
            "${section}_point" "$server" "$rep"
        done
    done
    if wants download; then
        for sender in tcp-reactor sendfile ncat loopback; do
            echo "-- rep $rep: download: $sender" >&2
            download_point "$sender" "$rep"
        done
    fi
done
if wants short; then
    for server in $SERVERS; do
        echo "-- short: system calls by name: $server" >&2
        short_calls_point "$server"
    done
fi
RUN_END=$(date -u '+%H:%M UTC')

mkdir -p "$(dirname "$OUT")"
python3 - "$DATA" "$OUT" <<EOF || die "could not write $OUT"
import json, statistics, sys

data_path, out_path = sys.argv[1], sys.argv[2]
rows = [json.loads(line) for line in open(data_path) if line.strip()]
SERVERS = "$SERVERS".split()
BASELINES = SERVERS[1:]
SYSCALLS = "$SYSCALLS"


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, digits=1):
    if v is None:
        return "–"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def ratio(a, b):
    if a is None or b in (None, 0):
        return "–"
    return f"{a / b:.2f}"


def cpu_us(r):
    return (r["user_ticks"] + r["sys_ticks"]) * 1e6 / r["clk_tck"]


def errors(r, *keys):
    total = 0
    for k in keys:
        part = r.get(k) or {}
        parts = part if isinstance(part, list) else [part]
        total += sum(p.get("errors", 1) for p in parts)
    return total


lines = []
out = lines.append
out("# tcp-reactor side by side: bench results")
out("")
out(f"- machine: $NPROC CPUs (nproc), {next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), '?')}, "
    f"kernel $(uname -r)")
out(f"- date: $RUN_START to $RUN_END")
out(f"- command: \`$COMMAND\` (servers on CPU $SERVER_CPU, load generators on CPU $LOAD_CPU, "
    f"{$REPS} repetition(s), interleaved, medians; $SECS s per point)")
out(f"- servers: tcp-reactor (release, \`serve -l 127.0.0.1:0=echo --max-conns 0\`), "
    f"tokio = bench/ echo-tokio (current_thread), threads = echo-threads (a thread per connection), "
    f"mio = echo-mio (one loop, a fixed 64 KiB buffer per connection); every baseline reads into 64 KiB")
if SYSCALLS.startswith("perf"):
    how = ("-a -G CGROUP (a cgroup holding the server: every thread counted)" if SYSCALLS == "perf-cgroup"
           else "-p PID (the threads there when perf attached)")
    out(f"- system calls: \`perf stat -e raw_syscalls:sys_enter {how}\` over the load phase "
        "(every system call, epoll_wait included; the tracepoint's own cost is in the CPU figures, for every server alike; "
        "a count below one per round trip, which cannot be, is perf losing events and is shown as –)")
else:
    out("- system calls: /proc/PID/io syscr + syscw over the load phase (reads and writes only; "
        "epoll_wait is not counted, perf did not work here)")
out("- server CPU: /proc/PID/stat utime + stime over the load phase (from the moment the server holds "
    "every connection until the load generator exits; for the echo matrix, until it reports, before it "
    "closes its connections: \`bench --hold\`), in clock ticks of "
    f"{1e3 / int('$CLK_TCK'):.0f} ms")
out("- ratios are tcp-reactor / baseline: above 1 is more for tcp-reactor (better for rates, worse for "
    "latencies, CPU, system calls and memory)")
out("")


def table(title, header, body):
    out(f"### {title}")
    out("")
    out("| " + " | ".join(header) + " |")
    out("|" + "|".join("---" for _ in header) + "|")
    for row in body:
        out("| " + " | ".join(row) + " |")
    out("")


# ---- echo
echo = [r for r in rows if r["section"] == "echo"]
points = sorted({(r["conns"], r["size"]) for r in echo})


def echo_metric(r, m):
    b = r["bench"]
    n = b.get("round_trips") or 0
    lat = b.get("latency_us") or {}
    if m == "rate":
        return b.get("msgs_per_sec")
    if m == "p50":
        return lat.get("p50")
    if m == "p99":
        return lat.get("p99")
    if m == "cpu":
        return cpu_us(r) / n if n else None
    if m == "sys":
        # Fewer calls than round trips cannot be (each message needs at
        # least its read): perf lost the count, as it did once for the
        # threads server's 10,000 threads.
        if not n or r.get("syscalls") is None or r["syscalls"] < n:
            return None
        return r["syscalls"] / n
    if m == "user":
        t = r["user_ticks"] + r["sys_ticks"]
        return 100.0 * r["user_ticks"] / t if t else None


def echo_median(conns, size, server, m):
    return med([echo_metric(r, m) for r in echo
                if r["conns"] == conns and r["size"] == size and r["server"] == server])


if echo:
    out("## Echo")
    out("")
    bad = sum(errors(r, "bench") for r in echo)
    if bad:
        out(f"**{bad} failed connections in the echo runs.**")
        out("")
    unheld = sorted({(r["server"], r["conns"], r["size"]) for r in echo if not r.get("held", True)})
    if unheld:
        out("**Runs whose server never held every connection at once (the window then opened "
            "late, at the load generator's end): " + ", ".join(f"{s} {c} × {z} B" for s, c, z in unheld)
            + ".**")
        out("")
    for m, title, digits in [
        ("rate", "round trips per second (more is better)", 0),
        ("p50", "p50 latency, µs", 0),
        ("p99", "p99 latency, µs", 0),
        ("cpu", "server CPU per message, µs", 2),
        ("sys", "system calls per message" + ("" if SYSCALLS.startswith("perf") else " (read + write only)"), 2),
        ("user", "user share of the server's CPU, %", 0),
    ]:
        body = []
        for conns, size in points:
            vals = [echo_median(conns, size, s, m) for s in SERVERS]
            body.append([f"{conns:,} × {size} B"] + [fmt(v, digits) for v in vals]
                        + [ratio(vals[0], v) for v in vals[1:]])
        table(title, ["point"] + SERVERS + [f"÷ {b}" for b in BASELINES], body)

# ---- mixed
mixed = [r for r in rows if r["section"] == "mixed"]
stalls = next((r for r in rows if r["section"] == "stalls"), None)


def steal_pct(r):
    w = r.get("window_secs")
    return 100.0 * r["steal_ticks"] / (w * r["clk_tck"]) if w and "steal_ticks" in r else None


def mixed_tables(rows_here):
    body = []
    for s in SERVERS:
        rs = [r for r in rows_here if r["server"] == s]
        p50 = med([(r["small"].get("latency_us") or {}).get("p50") for r in rs])
        p99 = med([(r["small"].get("latency_us") or {}).get("p99") for r in rs])
        small = med([r["small"].get("msgs_per_sec") for r in rs])
        bulk = med([r["bulk"].get("bytes", 0) / r["bulk"]["secs"] / 1e9 if r["bulk"].get("secs") else None
                    for r in rs])
        bad = sum(errors(r, "bulk", "small") for r in rs)
        body.append([s, fmt(p50 / 1e3 if p50 is not None else None, 3),
                     fmt(p99 / 1e3 if p99 is not None else None, 3),
                     fmt(small, 0), fmt(bulk, 2), fmt(med([steal_pct(r) for r in rs]), 1), str(bad)])
    table("medians", ["server", "small p50, ms", "small p99, ms", "small msgs/s",
                      "bulk GB/s (each way)", f"CPU $SERVER_CPU stolen, %", "errors"], body)
    base = body[0]

    def num(x):
        try:
            return float(x.replace(",", ""))
        except ValueError:
            return None
    table("tcp-reactor ÷ baseline", ["baseline", "small p50", "small p99", "small msgs/s", "bulk GB/s"],
          [[b[0]] + [ratio(num(base[i]), num(b[i])) for i in range(1, 5)] for b in body[1:]])


if mixed:
    out("## Mixed load: 8 clients echoing 4 MiB + 50 clients echoing 64 B, at once")
    out("")
    out("Closed loop: each small client sends again as soon as its echo is back. Both load generators "
        f"share CPU $LOAD_CPU, so a server that answers the small clients sooner gets more of their "
        "messages, and their generator takes that much of the core from the bulk one.")
    out("")
    mixed_tables([r for r in mixed if r.get("paced") is None])
    paced = [r for r in mixed if r.get("paced") is not None and r.get("bulk_conns", 8) > 0]
    alone = [r for r in mixed if r.get("paced") is not None and r.get("bulk_conns", 8) == 0]
    if paced:
        out(f"Paced: the 50 small clients send {paced[0]['paced']:,} messages/s in all on a fixed "
            "schedule (\`bench --rate\`), the same load for every server; latency counted from each "
            "message's first write.")
        out("")
        mixed_tables(paced)
    if alone:
        out("The control: the same paced small clients with no bulk load at all. Their tail here is the "
            "machine's, not the mixed load's.")
        out("")
        mixed_tables(alone)
    if stalls is not None:
        gaps = stalls["gaps_ms"]
        over = lambda ms: sum(1 for g in gaps if g > ms)
        out(f"The machine's own stalls: a lone process spinning on CPU $SERVER_CPU for {stalls['secs']} s "
            f"lost it {len(gaps)} times for over 0.5 ms ({over(1)} over 1 ms, {over(2)} over 2 ms; "
            f"{sum(gaps):.0f} ms in all, the longest {max(gaps, default=0):.1f} ms). A message that "
            "arrives during such a gap waits it out, whatever the server: once the stolen share of "
            f"CPU $SERVER_CPU passes 1 % in pieces of milliseconds, more than 1 % of the messages arrive "
            "during one, and the p99 is the length of those pieces.")
        out("")

# ---- short
short = [r for r in rows if r["section"] == "short"]
if short:
    out(f"## Short connections: connect, one 64-byte round trip, close "
        f"($SHORT_PROCS client processes × $SHORT_LOOPS loops, on one core)")
    out("")
    body = []
    vals = {}
    for s in SERVERS:
        rs = [r for r in short if r["server"] == s]
        rate = med([sum(c.get("conns_per_sec") or 0 for c in r["clients"]) for r in rs])
        n = lambda r: sum(c.get("round_trips") or 0 for c in r["clients"])
        cpu = med([cpu_us(r) / n(r) if n(r) else None for r in rs])
        sysc = med([r["syscalls"] / n(r) if n(r) and r.get("syscalls") is not None else None for r in rs])
        p50 = med([(c.get("connect_latency_us") or {}).get("p50") for r in rs for c in r["clients"]])
        p99 = med([(c.get("latency_us") or {}).get("p99") for r in rs for c in r["clients"]])
        bad = sum(errors(r, "clients") for r in rs)
        vals[s] = (rate, cpu, sysc)
        body.append([s, fmt(rate, 0), fmt(cpu, 1), fmt(sysc, 1), fmt(p50, 0), fmt(p99, 0), str(bad)])
    table("medians", ["server", "connections/s", "server CPU µs per connection", "system calls per connection",
                      "connect p50, µs", "round trip p99, µs", "errors"], body)
    t = vals[SERVERS[0]]
    table("tcp-reactor ÷ baseline", ["baseline", "connections/s", "CPU per connection", "system calls per connection"],
          [[b, ratio(t[0], vals[b][0]), ratio(t[1], vals[b][1]), ratio(t[2], vals[b][2])] for b in BASELINES])

calls = {r["server"]: r for r in rows if r["section"] == "short-calls" and r["calls"]}
if calls:
    n = next(iter(calls.values()))["conns"]
    names = [("accept4", "accept"), ("recvfrom", "read"), ("read", "read"), ("sendto", "write"),
             ("write", "write"), ("shutdown", "shutdown"), ("epoll_ctl", "epoll_ctl"),
             ("close", "close"), ("epoll_wait", "epoll_wait")]
    cols = ["accept", "read", "write", "shutdown", "epoll_ctl", "close", "epoll_wait"]
    body = []
    for s in SERVERS:
        if s not in calls:
            continue
        c = calls[s]["calls"]
        per = {col: 0 for col in cols}
        for name, col in names:
            per[col] += c.get(name, 0)
        total = sum(c.values())
        body.append([s] + [fmt(per[col] / n, 2) for col in cols] + [fmt(total / n, 2)])
    table(f"system calls per connection by name (strace -f -c over {n:,} connections, one loop; "
          "accept counts the one that finds the queue empty; futex, clone and the like of the "
          "threads server are in the total)",
          ["server"] + cols + ["all"], body)

# ---- idle
idle = [r for r in rows if r["section"] == "idle"]
if idle:
    out(f"## Idle connections: VmRSS growth per connection, at {$IDLE_CONNS:,}")
    out("")
    per = {}
    body = []
    for s in SERVERS:
        rs = [r for r in idle if r["server"] == s]
        per[s] = med([(r["rss1_kib"] - r["rss0_kib"]) * 1024 / r["conns"] for r in rs])
        body.append([s, fmt(per[s], 0), "yes" if all(r["ok"] for r in rs) else "no"])
    table("bytes per idle connection", ["server", "bytes", "all held"], body)
    table("tcp-reactor ÷ baseline", ["baseline", "bytes per connection"],
          [[b, ratio(per[SERVERS[0]], per[b])] for b in BASELINES])

# ---- download
dl = [r for r in rows if r["section"] == "download"]
if dl:
    out("## A 1 GiB download (a sparse file), one reader for all (bench/ sink, 1 MiB reads)")
    out("")
    rates = {}
    body = []
    senders = ["tcp-reactor", "sendfile", "ncat", "loopback"]
    for s in senders:
        rs = [r for r in dl if r["server"] == s]
        if rs:
            rates[s] = med([r["bytes"] / r["secs"] / 1e9 if r.get("secs") else None for r in rs])
    for s in senders:
        if s not in rates:
            continue
        name = {"tcp-reactor": "tcp-reactor files (\`GET big\`)",
                "sendfile": "tcp-reactor files \`--sendfile\`",
                "ncat": "\`ncat --send-only\` < file",
                "loopback": "raw loopback (bench/ loopback-send, 1 MiB writes)"}[s]
        body.append([name, fmt(rates[s], 2), ratio(rates.get("tcp-reactor"), rates[s]),
                     ratio(rates.get("sendfile"), rates[s])])
    table("GB/s", ["sender", "GB/s", "tcp-reactor ÷ it", "--sendfile ÷ it"], body)

open(out_path, "w").write("\n".join(lines))
print("\n".join(lines))
EOF
