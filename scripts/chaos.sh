#!/usr/bin/env bash
#
# Chaos: one server with every service, and for SECONDS a few hundred
# concurrent clients doing random hostile things to all of them at once
# (clean closes, resets, half-closes, stalls, slowloris, floods without
# reading, chat pastes, chat connect/close storms, over-long lines, resets
# mid-download and mid-line, bad admin commands, hostile file names, files
# requests left half-sent, idle admin connections, HTTP on admin that is not
# a scrape), while well-behaved clients check every byte: echo byte for
# byte, ack one reply per message, GET and bare downloads byte-exact or a
# clean ERR, LIST exact, admin answers, a Prometheus scrape, and a chat
# member that reads as fast as it can gets every line of every well-behaved
# sender, in order, intact, and is never dropped.
#
# Prints counts per behaviour (attempted, ok, refused, errors, violations)
# and exits non-zero on any violation, a server that crashed or exited, or a
# server that does not answer admin `stats` at the end.
#
# Usage: scripts/chaos.sh SECONDS     (scripts/test.sh runs `chaos.sh 20`)
#        TCP_REACTOR=PATH scripts/chaos.sh SECONDS   to test another build
# Needs python3 (scripts/chaos.py holds the clients) and nc. Everything is on
# 127.0.0.1; every client stops by itself (its own alarm), every wait here is
# bounded, and every process started is stopped on any exit.

set -uo pipefail
SECS=${1:-}
if ! [[ $SECS =~ ^[0-9]+$ ]] || [ "$SECS" -lt 1 ] || [ "$SECS" -gt 86400 ]; then
    echo "usage: $0 SECONDS   (1 to 86400)" >&2
    exit 2
fi
# Concurrent clients in each process (CHAOS_HOSTILE, CHAOS_GOOD override).
HOSTILE=${CHAOS_HOSTILE:-250}
GOOD=${CHAOS_GOOD:-30}
# The server's request and admin idle deadlines, short so that slow loris
# and idle admin clients see them kept (and not broken early) many times in
# a 20 s run; chaos.py reads them too. 3 s also cuts off some of the
# slowloris clients that trickle a request over up to 4 s.
export CHAOS_REQUEST_TIMEOUT=${CHAOS_REQUEST_TIMEOUT:-3}
export CHAOS_ADMIN_IDLE_TIMEOUT=${CHAOS_ADMIN_IDLE_TIMEOUT:-2}

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
command -v python3 >/dev/null || die "python3 is needed for the clients"
PY=$REPO/scripts/chaos.py
ulimit -n 8192 2>/dev/null || ulimit -n "$(ulimit -Hn)" || die "cannot raise the open-file limit"

# chaos_root DIR: files of known content, and names that lead out of it.
chaos_root() {
    local root=$1
    mkdir -p "$root/sub" || die "mkdir $root"
    printf 'hello chaos\n' >"$root/small.txt"
    : >"$root/empty.txt"
    head -c 1000 /dev/urandom >"$root/sub/data.bin"
    head -c 200000 /dev/urandom >"$root/medium.bin"
    head -c 3000000 /dev/urandom >"$root/big.bin"
    ln -s /etc/passwd "$root/evil"
    ln -s /etc "$root/evil-dir"
    ln -s /proc/self "$root/proc-self"
    mkfifo "$root/fifo" || die "mkfifo"
}

# start_chaos_server: every service on port 0, with the root; sets PORTS
# (a JSON file of service -> port) and ADMIN_PORT.
start_chaos_server() {
    local svc
    start_server -l 127.0.0.1:0=echo -l 127.0.0.1:0=ack -l 127.0.0.1:0=files \
        -l 127.0.0.1:0=chat -l 127.0.0.1:0=admin --root "$ROOT" \
        --request-timeout "$CHAOS_REQUEST_TIMEOUT" --admin-idle-timeout "$CHAOS_ADMIN_IDLE_TIMEOUT"
    PORTS=$TMP/ports.json
    {
        printf '{'
        for svc in echo ack files chat; do
            printf '"%s": %s, ' "$svc" "$(port_of "$svc")"
        done
        printf '"admin": %s}\n' "$(port_of admin)"
    } >"$PORTS"
    ADMIN_PORT=$(port_of admin)
}

# client NAME ARGS...: chaos.py ARGS in the background, output in
# $TMP/NAME.log, stopped at exit; sets BG_PID.
client() {
    local name=$1
    shift
    python3 "$PY" "$@" </dev/null >"$TMP/$name.log" 2>&1 &
    BG_PID=$!
    STARTED_PIDS+=("$BG_PID")
}

# wait_clients SECS PID...: waits until every PID has exited, at most SECS
# seconds; fails at once if the server exits meanwhile.
wait_clients() {
    local limit=$1 pid alive i
    shift
    for ((i = 0; i < limit * 10; i++)); do
        running "$SERVER_PID" || return 1
        alive=0
        for pid in "$@"; do
            running "$pid" && alive=1
        done
        [ "$alive" = 0 ] && return 0
        sleep 0.1
    done
    return 1
}

# start_reader: the checking chat member, in the room before anyone sends.
start_reader() {
    client reader reader "$(port_of chat)" "$TMP/reader.ready" "$TMP/reader.stop" \
        "$TMP/good.json" "$TMP/reader.json"
    READER_PID=$BG_PID
    wait_for_file "$TMP/reader.ready" 20 || die "the chat reader is not ready after 20 s"
}

# server_verdict: 0 if the server runs, has not panicked and answers stats.
server_verdict() {
    local ok=0 answer
    if ! running "$SERVER_PID"; then
        echo "VIOLATION: the server exited: $(tail -n 5 "$SERVER_LOG")"
        ok=1
    fi
    if grep -Eq '^[^ ]+ ERROR |panicked at' "$SERVER_LOG"; then
        echo "VIOLATION: the server logged: $(grep -E -m 3 '^[^ ]+ ERROR |panicked at' "$SERVER_LOG")"
        ok=1
    fi
    answer=$(admin "$ADMIN_PORT" stats 2>&1)
    if [[ $answer != uptime* ]]; then
        echo "VIOLATION: admin stats at the end answered: ${answer:0:200}"
        ok=1
    else
        echo "admin stats at the end:"
        printf '%s\n' "$answer" | sed 's/^/    /'
    fi
    return "$ok"
}

# keep_log: a copy of the server's log outside $TMP (removed at exit), to
# look into a failure.
keep_log() {
    local kept=${TMPDIR:-/tmp}/tcp-reactor-chaos.$$.log
    cp -- "$SERVER_LOG" "$kept" && echo "server log kept in $kept"
}

# Sourced by soak.sh for the helpers above; run, it is the chaos test.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    need_nc
    ROOT=$TMP/root
    chaos_root "$ROOT"
    start_chaos_server
    echo "chaos: $SECS s, $HOSTILE hostile and $GOOD well-behaved clients at a time, $BIN"
    start_reader
    client good good "$PORTS" "$ROOT" "$SECS" "$GOOD" "$TMP/good.json"
    GOOD_PID=$BG_PID
    client hostile hostile "$PORTS" "$ROOT" "$SECS" "$HOSTILE" "$TMP/hostile.json"
    HOSTILE_PID=$BG_PID
    status=0
    # Well-behaved clients may take GOOD_TIMEOUT (20 s) past the end.
    wait_clients $((SECS + 40)) "$GOOD_PID" "$HOSTILE_PID" ||
        { echo "VIOLATION: the clients did not finish in $((SECS + 40)) s, or the server exited"; status=1; }
    touch "$TMP/reader.stop"
    wait_clients 30 "$READER_PID" || { echo "VIOLATION: the chat reader did not finish"; status=1; }
    python3 "$PY" report "$TMP/good.json" "$TMP/hostile.json" "$TMP/reader.json" || status=1
    for name in good hostile reader; do
        if [ -s "$TMP/$name.log" ]; then
            echo "$name client output:"
            head -n 20 "$TMP/$name.log" | sed 's/^/    /'
        fi
    done
    server_verdict || status=1
    echo "server log: $(grep -c ' WARN ' "$SERVER_LOG") warnings, $(wc -l <"$SERVER_LOG") lines"
    if [ "$status" = 0 ]; then
        echo "chaos: PASS"
    else
        keep_log
        echo "chaos: FAIL"
    fi
    exit "$status"
fi
