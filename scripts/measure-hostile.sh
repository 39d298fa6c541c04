#!/usr/bin/env bash
#
# Measures what hostile (or merely heavy) clients cost everybody else. Each
# row starts a fresh release server on free loopback ports, runs a
# well-behaved echo client (64-byte round trips with TCP_NODELAY, at most one
# a millisecond) while the hostile clients act, and prints one line of
# figures with the targets beside them: the echo client's worst and p99
# round trip, the server's peak RSS growth (VmHWM at the end minus VmRSS at
# the start), and what the hostile and the innocent clients received. A
# second, indented line gives the details.
#
#   paste    2 chat readers; one client pastes 20,000 short lines
#   joins    3,500 chat clients join at once; 2 readers read everything
#   list     LIST of a root with 50,000 empty files, and of /usr
#   admin    `clients json` on admin with 8,000 idle echo connections
#   full     --max-conns 100 filled; the operator asks admin `stats`
#   partial  3,000 ack clients, then 3,000 chat clients, each sending one
#            byte without a newline and staying
#   idleadmin  16 idle admin connections (the whole reserve), then a
#            Prometheus scrape once a second: what it is answered, and when
#            it gets 200 (default flags: --admin-idle-timeout 60)
#   loris    --max-conns 300 filled by 299 files connections that send
#            'GET a.t' and stop (slow loris): how long until a newcomer is
#            served (default flags: --request-timeout 10)
#   pty      the server's stderr a terminal nobody reads (-v): 400 ack
#            clients of 25 logged messages each, one after another
#   fds      1,200 echo clients at once with the default --max-conns under
#            `ulimit -n 1024`: soft only (hard 20,000), then soft and hard;
#            how many are served, refused and left hanging
#   storm    1,500 idle chat members (fewer if the open-file limit says so);
#            a connect/close storm on chat (100,000 cycles or 6 s); members
#            dropped and the bytes the server wrote to chat (admin stats)
#
# A measurement, not a test: it exits non-zero only if it could not run.
# Every client loop is bounded in count and time; everything is on
# 127.0.0.1; every process started is stopped on any exit.
#
# Usage: scripts/measure-hostile.sh [ROW...]    (default: every row)
#        TCP_REACTOR=PATH scripts/measure-hostile.sh ...   to measure another build
# Needs python3 (scripts/measure-hostile.py holds the clients).

set -uo pipefail
all_rows=(paste joins list admin full partial storm idleadmin loris pty fds)
rows=("$@")
[ ${#rows[@]} -gt 0 ] || rows=("${all_rows[@]}")
for row in "${rows[@]}"; do
    case $row in
        paste | joins | list | admin | full | partial | storm | idleadmin | loris | pty | fds) ;;
        *)
            echo "usage: $0 [ROW...]   rows: ${all_rows[*]}" >&2
            exit 2
            ;;
    esac
done

# 8,000 connections are held by one client process and by the server.
hard=$(ulimit -Hn)
want=20000
[ "$hard" = unlimited ] || [ "$hard" -ge 9000 ] ||
    { echo "error: the open-file limit is $hard; the admin row needs 9000" >&2; exit 1; }
[ "$hard" = unlimited ] || [ "$hard" -ge "$want" ] || want=$hard
ulimit -n "$want" || exit 1

if [ -z "${TCP_REACTOR:-}" ]; then
    (cd "$(dirname "${BASH_SOURCE[0]}")/.." && cargo build --release --locked --quiet) ||
        { echo "error: cargo build --release --locked failed" >&2; exit 1; }
    TCP_REACTOR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/release/tcp-reactor
    export TCP_REACTOR
fi
# shellcheck source=scripts/measure-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/measure-lib.sh"
command -v python3 >/dev/null || die "python3 is needed for the clients"
PY=$REPO/scripts/measure-hostile.py
[ -r "$PY" ] || die "no $PY"

# Seconds the echo client runs at most (it stops earlier when told).
PROBE_SECS=120
# Set when a row could not run.
BROKEN=0

# forget PID: takes PID off the list the exit trap stops (it has exited:
# its number may be reused by an unrelated process).
forget() {
    local i
    for i in "${!STARTED_PIDS[@]}"; do
        [ "${STARTED_PIDS[$i]}" = "$1" ] && unset 'STARTED_PIDS[i]'
    done
    STARTED_PIDS=("${STARTED_PIDS[@]}")
}

# stop PID: SIGTERM, 5 s to exit, then SIGKILL; reaped and forgotten.
stop() {
    local pid=$1 i
    kill "$pid" 2>/dev/null
    for ((i = 0; i < 50; i++)); do
        running "$pid" || break
        sleep 0.1
    done
    if running "$pid"; then
        echo "warning: process $pid still running 5 s after SIGTERM; killing it" >&2
        kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
    forget "$pid"
}

# py OUT ARGS...: runs the client script in the background, stdout to OUT,
# registered for the exit trap; sets BG_PID (like lib.sh's start_bg).
py() {
    local out=$1
    shift
    MH_ADMIN=$ADMIN_PORT MH_LOG=$SERVER_LOG \
        python3 "$PY" "$@" </dev/null >"$out" 2>>"$TMP/clients.err" &
    BG_PID=$!
    STARTED_PIDS+=("$BG_PID")
}

# finish_pid PID: waits for a client process (bounded by its own limits, and
# interruptible by a signal), then forgets it; its exit status.
finish_pid() {
    local rc
    wait "$1"
    rc=$?
    forget "$1"
    return "$rc"
}

# fresh ARGS...: a new server (`serve -l 127.0.0.1:0=echo ARGS...`, and an
# admin listener for the server's own counts), after stopping the last.
fresh() {
    [ -n "$SERVER_PID" ] && stop "$SERVER_PID"
    local arg admin=(-l 127.0.0.1:0=admin)
    for arg in "$@"; do
        [ "$arg" = 127.0.0.1:0=admin ] && admin=()
    done
    start_server -l 127.0.0.1:0=echo "${admin[@]}" "$@"
    ADMIN_PORT=$(port_of admin)
}

# probe_start: the innocent echo client, on the current server's echo port.
probe_start() {
    PROBE_READY=$TMP/probe.ready
    PROBE_STOP=$TMP/probe.stop
    PROBE_OUT=$TMP/probe.json
    rm -f -- "$PROBE_READY" "$PROBE_STOP" "$PROBE_OUT"
    py /dev/null probe "$(port_of echo)" "$PROBE_READY" "$PROBE_STOP" "$PROBE_SECS" "$PROBE_OUT"
    PROBE_PID=$BG_PID
    wait_for_file "$PROBE_READY" 10 || echo "warning: the echo client is not ready after 10 s" >&2
}

probe_stop() {
    touch "$PROBE_STOP"
    finish_pid "$PROBE_PID"
}

# hostile ROW ARGS...: runs a hostile row's clients to their end.
hostile() {
    ROW_OUT=$TMP/$1.json
    rm -f -- "$ROW_OUT"
    py /dev/null "$1" "$SERVER_PID" "${@:2}" "$ROW_OUT"
    finish_pid "$BG_PID"
}

# report ROW [LABEL]: the row's figures, or why there are none.
report() {
    if [ -s "$ROW_OUT" ] && [ -s "$PROBE_OUT" ]; then
        MH_LOG=$SERVER_LOG python3 "$PY" report "$1" "$PROBE_OUT" "$ROW_OUT" "${2:-}" ||
            BROKEN=1
    else
        echo "$1${2:+ $2}: could not measure (client errors below)"
        sed 's/^/    /' "$TMP/clients.err"
        BROKEN=1
    fi
    : >"$TMP/clients.err"
    running "$SERVER_PID" || echo "    the server has exited: $(tail -n 3 "$SERVER_LOG")"
}

# measure ROW PORT... [-- LABEL]: probe, hostile clients, report.
measure() {
    local row=$1 label=
    shift
    local args=()
    while [ $# -gt 0 ]; do
        [ "$1" = -- ] && { label=$2; break; }
        args+=("$1")
        shift
    done
    probe_start
    hostile "$row" "${args[@]}"
    probe_stop
    report "$row" "$label"
}

row_paste() {
    fresh -l 127.0.0.1:0=chat
    measure paste "$(port_of chat)"
}

row_joins() {
    fresh -l 127.0.0.1:0=chat
    measure joins "$(port_of chat)"
}

row_list() {
    local root=$TMP/many
    mkdir "$root" || die "mkdir $root"
    (cd "$root" && seq -f 'f%05g' 0 49999 | xargs touch) || die "cannot create 50,000 files"
    fresh -l 127.0.0.1:0=files --root "$root"
    measure list "$(port_of files)" -- "50,000 files"
    rm -rf -- "$root"
    if [ -d /usr ]; then
        fresh -l 127.0.0.1:0=files --root /usr
        measure list "$(port_of files)" -- "--root /usr"
    fi
}

row_admin() {
    fresh -l 127.0.0.1:0=admin --max-conns 0
    measure admin "$(port_of echo)" "$(port_of admin)"
}

row_full() {
    # The echo client is one of the 100; 99 idle clients fill the rest.
    fresh -l 127.0.0.1:0=admin --max-conns 100
    measure full "$(port_of echo)" "$(port_of admin)"
}

row_partial() {
    fresh -l 127.0.0.1:0=ack
    measure partial "$(port_of ack)" ack
    fresh -l 127.0.0.1:0=chat
    measure partial "$(port_of chat)" chat
}

row_idleadmin() {
    fresh
    measure idleadmin "$(port_of admin)"
}

row_loris() {
    local root=$TMP/loris
    mkdir -p "$root" && printf 'hello\n' >"$root/a.t" || die "cannot make $root"
    fresh -l 127.0.0.1:0=files --root "$root" --max-conns 300
    measure loris "$(port_of files)"
}

row_pty() {
    [ -n "$SERVER_PID" ] && stop "$SERVER_PID"
    SERVER_PID=
    local stop_file=$TMP/pty.stop ptyserve i
    rm -f -- "$stop_file"
    SERVER_LOG=$(mktemp "$TMP/server.XXXXXX.log")
    python3 "$PY" ptyserve "$SERVER_LOG" "$stop_file" 600 "$TCP_REACTOR" -v --reply OK \
        -l 127.0.0.1:0=echo -l 127.0.0.1:0=ack -l 127.0.0.1:0=admin \
        </dev/null >/dev/null 2>>"$TMP/clients.err" &
    ptyserve=$!
    STARTED_PIDS+=("$ptyserve")
    for ((i = 0; i < 200; i++)); do
        [ "$(grep -c 'listening on ' "$SERVER_LOG")" -ge 3 ] && break
        sleep 0.05
    done
    [ "$(grep -c 'listening on ' "$SERVER_LOG")" -ge 3 ] ||
        { echo "pty: the server did not start: $(cat "$TMP/clients.err")"; BROKEN=1; return; }
    SERVER_PID=$(pgrep -P "$ptyserve" -x tcp-reactor | head -n 1)
    [ -n "$SERVER_PID" ] || { echo "pty: no server process"; BROKEN=1; return; }
    ADMIN_PORT=$(port_of admin)
    # The log file holds the start only: the rest went to the terminal.
    measure pty "$(port_of ack)"
    touch "$stop_file"
    finish_pid "$ptyserve"
    SERVER_PID=
}

# fds_server HOW: a fresh echo + admin server with the default --max-conns,
# started under `ulimit HOW -n 1024` (-S: the soft limit only; -SH: both).
fds_server() {
    local wrapper=$TMP/ulimit$1
    printf '#!/usr/bin/env bash\nulimit %s -n 1024 || exit 1\nexec "%s" "$@"\n' \
        "$1" "$TCP_REACTOR" >"$wrapper"
    chmod +x "$wrapper"
    local real=$BIN
    BIN=$wrapper
    fresh
    BIN=$real
}

row_fds() {
    fds_server -S
    measure fds "$(port_of echo)" -- "soft limit 1024 (hard $(ulimit -Hn))"
    fds_server -SH
    measure fds "$(port_of echo)" -- "soft and hard limit 1024"
}

row_storm() {
    fresh -l 127.0.0.1:0=chat
    measure storm "$(port_of chat)" "$ADMIN_PORT"
}

ADMIN_PORT=
echo "tcp-reactor hostile clients: $TCP_REACTOR"
echo "($(nproc) CPUs; the clients share them with the server, so a few ms of noise are the machine's)"
start=$SECONDS
for row in "${rows[@]}"; do
    case $row in
        paste) row_paste ;;
        joins) row_joins ;;
        list) row_list ;;
        admin) row_admin ;;
        full) row_full ;;
        partial) row_partial ;;
        idleadmin) row_idleadmin ;;
        loris) row_loris ;;
        pty) row_pty ;;
        fds) row_fds ;;
        storm) row_storm ;;
    esac
done
[ -n "$SERVER_PID" ] && stop "$SERVER_PID"
echo "($((SECONDS - start)) s)"
exit "$BROKEN"
