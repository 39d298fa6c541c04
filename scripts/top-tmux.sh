#!/usr/bin/env bash
#
# `tcp-reactor top` full screen, in a real terminal: tmux runs it at
# 160x40, send-keys types, capture-pane reads the screen. Checks that the
# header and the rows appear (an idle echo client and one paused by
# backpressure), that `a`/`o` re-sort and `f` filters, that Enter opens the
# detail pane with a sparkline per layer and Esc closes it, and that `q`
# quits with the shell prompt back and the terminal out of raw mode.
#
# Needs tmux and python3 (for the two echo clients); run as root on a
# machine with apt-get, it installs tmux itself, else it skips visibly.
# TOP_CAPTURE_DIR=DIR keeps the screens it read there.
#
# Usage: scripts/top-tmux.sh

set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Seconds any one screen may take to show what is waited for.
SCREEN_TIMEOUT=${SCREEN_TIMEOUT:-10}

if ! command -v tmux >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "== installing tmux"
        { apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tmux; } </dev/null ||
            true
    fi
    if ! command -v tmux >/dev/null 2>&1; then
        skip "top full screen" "tmux is not installed (not root, or no apt-get)"
        finish
    fi
fi
command -v python3 >/dev/null 2>&1 || die "this test needs python3"

# A tmux server of our own (-L), so no user's session is touched; killed on
# exit before lib.sh's clean-up stops the server and the clients.
SOCKET=tcp-reactor-top-$$
tm() {
    tmux -L "$SOCKET" "$@"
}
trap 'tm kill-server 2>/dev/null; cleanup' EXIT

# A short --shutdown-timeout: the hog never reads what it is owed.
start_server -l 127.0.0.1:0=admin -l 127.0.0.1:0=echo --send-buf 32K --shutdown-timeout 0.5
ADMIN=$(port_of admin)
ECHO=$(port_of echo)

# echo_client MODE PORTFILE: an echo client that writes its local port to
# PORTFILE, then holds the connection (idle) or writes without reading
# until its own send blocks (hog), then holds it.
CLIENT='
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
if sys.argv[2] == "hog":
    s.setblocking(False)
    for _ in range(2):
        try:
            while True:
                s.send(b"z" * 65536)
        except BlockingIOError:
            time.sleep(0.3)
open(sys.argv[3], "w").write(str(s.getsockname()[1]))
time.sleep(120)
'
# The idle client first, so that it is the oldest.
start_bg python3 -c "$CLIENT" "$ECHO" idle "$TMP/idle.port"
wait_for_file "$TMP/idle.port" || die "the idle echo client did not connect"
start_bg python3 -c "$CLIENT" "$ECHO" hog "$TMP/hog.port"
wait_for_file "$TMP/hog.port" || die "the hog did not connect"
IDLE_PORT=$(cat "$TMP/idle.port")
HOG_PORT=$(cat "$TMP/hog.port")

SCREEN=$TMP/screen.txt
capture() {
    tm capture-pane -t top -p >"$SCREEN"
}

# wait_screen NAME EXTENDED-REGEX: polls the screen until a line matches,
# for at most SCREEN_TIMEOUT seconds; a check either way.
wait_screen() {
    local i
    for ((i = 0; i < SCREEN_TIMEOUT * 10; i++)); do
        capture
        if grep -Eq -- "$2" "$SCREEN"; then
            pass "$1"
            return 0
        fi
        sleep 0.1
    done
    fail "$1" "no line matches /$2/ on the screen:" "$(cat "$SCREEN")"
    return 1
}

# wait_screen_without NAME EXTENDED-REGEX: polls until no line matches.
wait_screen_without() {
    local i
    for ((i = 0; i < SCREEN_TIMEOUT * 10; i++)); do
        capture
        if ! grep -Eq -- "$2" "$SCREEN"; then
            pass "$1"
            return 0
        fi
        sleep 0.1
    done
    fail "$1" "a line still matches /$2/:" "$(cat "$SCREEN")"
    return 1
}

# first_row: the first connection row of the table.
first_row() {
    capture
    grep -E '^(> )? +[0-9]+ 127\.0\.0\.1:' "$SCREEN" | head -n 1
}

keep() {
    [ -n "${TOP_CAPTURE_DIR:-}" ] && mkdir -p "$TOP_CAPTURE_DIR" && cp "$SCREEN" "$TOP_CAPTURE_DIR/$1.txt"
    return 0
}

# A plain shell with a known prompt, in a terminal of 160x40.
tm new-session -d -s top -x 160 -y 40 "env PS1='top-test\$ ' bash --norc --noprofile -i" ||
    die "tmux new-session failed"
wait_screen "the shell is ready" '^top-test\$' || finish
tm send-keys -t top "$BIN top 127.0.0.1:$ADMIN" Enter

wait_screen "header" "^tcp-reactor top 127\\.0\\.0\\.1:$ADMIN  uptime .* 3 connections  rates over "
wait_screen "totals in the header" '^total: accepted 3 \(.*/s\)  active 3  in .*/s  out .*/s'
wait_screen "the idle echo client's row" "127\\.0\\.0\\.1:$IDLE_PORT +echo +reading +idle "
wait_screen "the hog's row, paused by its shut window" \
    "127\\.0\\.0\\.1:$HOG_PORT +echo +paused +peer-window .*\\[K+"
check_match "the key help in the footer" 'o owed  r rate  a age  t rtt  f filter' "$SCREEN"
keep live

tm send-keys -t top a
wait_screen "a sorts by age" '  sort age  '
check_match "oldest first: the idle client" "127\\.0\\.0\\.1:$IDLE_PORT " <(first_row)
tm send-keys -t top o
wait_screen "o sorts by bytes owed" '  sort owed  '
check_match "most owed first: the hog" "127\\.0\\.0\\.1:$HOG_PORT " <(first_row)

tm send-keys -t top f
wait_screen "f shows one service" '  filter admin'
wait_screen_without "only admin rows" "127\\.0\\.0\\.1:$HOG_PORT "
tm send-keys -t top f
wait_screen "f shows the next service" '  filter echo'
wait_screen_without "no admin row" ' admin\* '
tm send-keys -t top f
wait_screen "f cycles back to all" '  filter all'

tm send-keys -t top Enter
wait_screen "Enter opens the hog's detail pane" \
    "connection [0-9]+ 127\\.0\\.0\\.1:$HOG_PORT \\(echo\\) paused peer-window"
wait_screen "the pane has a sparkline per layer" '[▁▂▃▄▅▆▇█]{8}'
for layer in "kernel receive queue" "receive buffer" "send buffer" "kernel unsent" "in flight"; do
    check_match "the pane shows the $layer" "[KRSUF] $layer" "$SCREEN"
done
check_match "its send buffer is full" 'now 32\.0K peak 32\.0K of 32\.0K' "$SCREEN"
keep detail
tm send-keys -t top Escape
wait_screen_without "Esc closes the pane" 'Esc closes '

tm send-keys -t top q
wait_screen_without "q leaves the full screen" '^tcp-reactor top '
wait_screen "the prompt is back" '^top-test\$ ?$'
tm send-keys -t top 'stty -a | grep -Eo "(-)?icanon" | sed "s/^/mode:/"' Enter
wait_screen "the terminal is out of raw mode" '^mode:icanon$'

finish
