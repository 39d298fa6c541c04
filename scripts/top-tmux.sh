#!/usr/bin/env bash
#
# `tcp-reactor top` full screen, in a real terminal: tmux runs it,
# send-keys types, capture-pane reads the screen.
#
# At 160x40: the header and the rows appear (an idle echo client and one
# paused by backpressure), `a`/`o` re-sort and `f` filters, Enter opens
# the detail pane with a sparkline per layer and Esc closes it, and `q`
# quits with the shell prompt back and the terminal out of raw mode.
#
# Then, run again at 80x24 (the default terminal) and 60x15: every row
# keeps its whole layer bar (four parts of one width), and the figures are
# exact and whole: each row's id, the hog's bytes owed as the admin
# service reports them (`4.0M`, or `4M` where the column is narrow), the
# pane's `ssthresh ∞` and full send buffer; no peer is shown cut. The
# selection follows its connection across re-sorts; End, Home, PageDown
# and PageUp move it; with the clients gone the header says
# `1 connection`; and when the server goes away, top restores the
# terminal at once, prints the one line and exits 1.
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
IDLE_PID=$BG_PID
wait_for_file "$TMP/idle.port" || die "the idle echo client did not connect"
start_bg python3 -c "$CLIENT" "$ECHO" hog "$TMP/hog.port"
HOG_PID=$BG_PID
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
    "connection [0-9]+ 127\\.0\\.0\\.1:$HOG_PORT \\(echo\\) Esc closes"
check_match "its state and limit" 'state paused  limit peer-window' "$SCREEN"
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

# ---- 80x24 and 60x15 ----

# conn PEER-PORT: "ID OWED OWED-SHORT" of the connection from that port,
# from the admin service's `clients json`, owed formatted as top formats
# it (one decimal; none where the column is narrow). The hog's figures
# hold still: its window is shut, so nothing moves.
CONN='
import json, socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
s.sendall(b"clients json\n")
line = b""
while not line.endswith(b"\n"):
    chunk = s.recv(1 << 16)
    if not chunk:
        break
    line += chunk
def full(n):
    if n < 1024:
        return str(n)
    v, u = n / 1024, 0
    while v >= 1024 and u < 3:
        v, u = v / 1024, u + 1
    return "%.1f%s" % (v, "KMGT"[u])
def short(n):
    if round(n) < 1024:
        return str(n)
    v, u = n / 1024, 0
    while round(v) >= 1024 and u < 3:
        v, u = v / 1024, u + 1
    return "%.0f%s" % (v, "KMGT"[u])
for c in json.loads(line)["clients"]:
    if c["peer"] == "127.0.0.1:" + sys.argv[2]:
        owed = c["send_buf_used"] + (c["kernel_send_queue"] or 0)
        print(c["id"], full(owed), short(owed))
'
conn() {
    python3 -c "$CONN" "$ADMIN" "$1"
}

# bar_ok NAME REGEX: the first screen line matching REGEX ends in a whole
# bar: four parts of one width, at least 4 cells each, within brackets.
BAR='
import re, sys
m = re.search(r"\[([^]]*)\]\s*$", sys.argv[1])
parts = m.group(1).split("|") if m else []
ok = len(parts) == 4 and len({len(p) for p in parts}) == 1 and len(parts[0]) >= 4
sys.exit(0 if ok else 1)
'
bar_ok() {
    local row
    row=$(grep -E -m 1 -- "$2" "$SCREEN")
    if [ -n "$row" ] && python3 -c "$BAR" "$row"; then
        pass "$1"
    else
        fail "$1" "no whole bar on the line matching /$2/:" "$(cat "$SCREEN")"
    fi
}

read -r HOG_ID _ _ <<<"$(conn "$HOG_PORT")"
read -r IDLE_ID _ _ <<<"$(conn "$IDLE_PORT")"
[ -n "$HOG_ID" ] && [ -n "$IDLE_ID" ] || die "the admin service does not list the echo clients"
echo "== the hog is connection $HOG_ID; the idle client is $IDLE_ID"

# wait_owed NAME BEFORE AFTER: polls, for at most SCREEN_TIMEOUT seconds,
# until a line matches BEFORE, the hog's bytes owed as the admin service
# reports them at that moment (full, or short where the column is
# narrow), then AFTER. Asked afresh each time: the kernel's share can
# still creep while its window is shut.
wait_owed() {
    local i owed short re
    for ((i = 0; i < SCREEN_TIMEOUT * 5; i++)); do
        read -r _ owed short <<<"$(conn "$HOG_PORT")"
        re="($(printf '%s' "$owed" | sed 's/[.]/\\./g')|$(printf '%s' "$short" | sed 's/[.]/\\./g'))"
        capture
        if grep -Eq -- "$2$re$3" "$SCREEN"; then
            pass "$1 ($owed)"
            return 0
        fi
        sleep 0.1
    done
    fail "$1" "no line matches /$2$re$3/ on the screen:" "$(cat "$SCREEN")"
    return 1
}

tm resize-window -t top -x 80 -y 24 || die "tmux resize-window failed"
tm send-keys -t top "$BIN top 127.0.0.1:$ADMIN; echo status:\$?" Enter
wait_screen "80x24: the header" \
    "^tcp-reactor top 127\\.0\\.0\\.1:$ADMIN  uptime [0-9.]+s  3 connections"
wait_owed "80x24: the hog's row, whole, with its exact bytes owed" \
    "^(> )? +$HOG_ID +echo +paused +peer-window +[0-9]+\\.[0-9]s +[0-9]+\\.[0-9]{2} +" ' \[K'
bar_ok "80x24: the hog's bar is whole" "^(> )? +$HOG_ID +echo "
check_match "80x24: its send buffer part is full" "^(> )? +$HOG_ID .*\\|S{4,}\\|" "$SCREEN"
check_match "80x24: the idle client's row, whole" \
    "^(> )? +$IDLE_ID +echo +reading +idle +[0-9]+\\.[0-9]s +[0-9]+\\.[0-9]{2} +0 \\[·+\\|·+\\|·+\\|·+\\]$" "$SCREEN"
bar_ok "80x24: the idle client's bar is whole" "^(> )? +$IDLE_ID +echo "
check_no_match "80x24: no peer, whole or cut, in the table" '^(> )? +[0-9]+ .*127\.0' "$SCREEN"
check_match "80x24: the footer ends with q quit" 'q quit$' "$SCREEN"
keep live-80x24

# Sorted by age: the idle client, the hog, top's own connection.
tm send-keys -t top a
wait_screen "80x24: a sorts by age" '(^|  )sort age(  |$)'
tm send-keys -t top End
wait_screen "End selects the last row" '^> +[0-9]+ +admin\* '
tm send-keys -t top Home
wait_screen "Home selects the first row" "^> +$IDLE_ID +echo "
tm send-keys -t top PageDown
wait_screen "PageDown goes a page down, to the last row" '^> +[0-9]+ +admin\* '
tm send-keys -t top PageUp
wait_screen "PageUp goes a page up, to the first row" "^> +$IDLE_ID +echo "
tm send-keys -t top Down
wait_screen "Down selects the hog" "^> +$HOG_ID +echo "
tm send-keys -t top o
wait_screen "o sorts by owed: the hog first" '(^|  )sort owed(  |$)'
wait_screen "the selection followed the hog" "^> +$HOG_ID +echo "
tm send-keys -t top a
wait_screen "a sorts by age again" '(^|  )sort age(  |$)'
wait_screen "the selection followed the hog back down" "^> +$HOG_ID +echo "

tm resize-window -t top -x 60 -y 15
wait_screen "60x15: the layout for 60 columns" '^ +id +svc +state +limit +owed bar$'
wait_owed "60x15: the hog's row, with its exact bytes owed, whole" \
    "^> +$HOG_ID +echo +paused +peer-window +" ' \[K'
bar_ok "60x15: the hog's bar is whole" "^> +$HOG_ID +echo "
bar_ok "60x15: the idle client's bar is whole" "^ +$IDLE_ID +echo "
check_no_match "60x15: no peer in the table" '^(> )? +[0-9]+ .*127\.0' "$SCREEN"
check_no_match "60x15: no number cut to its tail" ' \.[0-9]' "$SCREEN"
keep live-60x15
tm send-keys -t top Enter
wait_screen "60x15: Enter opens the hog's pane" "connection $HOG_ID "
check_match "60x15: ssthresh is infinite, not 2147483647" 'ssthresh ∞' "$SCREEN"
check_match "60x15: every layer is in the pane" '│F ' "$SCREEN"
check_match "60x15: its send buffer is full" 'S .*now 32\.0K peak 32\.0K of 32\.0K' "$SCREEN"
keep detail-60x15
tm send-keys -t top Escape

# The clients go: the header counts one connection, top's own.
kill "$IDLE_PID" "$HOG_PID" 2>/dev/null
wait_screen "the header says 1 connection" '(^|  )1 connection(  |$)'

# The server goes away: the terminal is back at once with one log line
# (wrapped at 60 columns, so only its start is matched), and status 1. "At once": well within top's 10 s stall timeout.
kill -TERM "$SERVER_PID"
SCREEN_TIMEOUT=5 wait_screen "the server gone, top says so in one line" \
    'ERROR \[tcp_reactor[a-z_:]*\] c'
wait_screen "and exits 1" '^status:1$'
keep gone
wait_screen_without "no full screen left behind" '^tcp-reactor top '
tm send-keys -t top 'stty -a | grep -Eo "(-)?icanon" | sed "s/^/mode:/"' Enter
wait_screen "the terminal is out of raw mode again" '^mode:icanon$'

finish
