#!/usr/bin/env bash
#
# Demonstration: backpressure. A client writes to echo and never reads: the
# server stops reading it once its send buffer is full, the kernels' queues
# fill, and the client ends up blocked in its own send(). The server's memory
# stays flat and other clients are served as fast as before.
#
# Run from anywhere:  scripts/demo-backpressure.sh [--test] [--plot DIR]
# DEMO_PAUSE=SECONDS sets the pause between steps (default 1). --test checks
# the key figures and ends with `N passed, N failed`.
# --plot DIR records the main step (tcp-reactor record) and draws it into
# DIR/backpressure.svg (tcp-reactor plot).
# Needs OpenBSD netcat, ss and python3. Loopback only.

set -uo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_nc
demo_init "$@"

echo "Backpressure: a client that writes and never reads"
echo "=================================================="
explain <<'EOF'
The echo service owes every byte back. A client that sends without ever
reading its replies could make a naive server buffer without limit. Here the
server's two buffers per connection are bounded (64 KiB each): when the send
buffer is full it stops reading that client, the kernel queues in between
fill up, TCP's window closes, and the client's own send() blocks. Watch the
writer's byte count, the server's memory (VmRSS) and the admin row (state
paused, kern_rq = bytes the server's kernel holds but the server won't read).
EOF

GOAL=200000000
# --shutdown-timeout 1: if interrupted, do not wait to flush to the writer.
start_server -l 127.0.0.1:0=echo -l 127.0.0.1:0=admin --shutdown-timeout 1
ECHO=$(port_of echo)
ADMIN=$(port_of admin)
record_start "$ADMIN" backpressure

# Sends up to GOAL bytes without reading; a send() that makes no progress for
# 2 s counts as blocked. Writes "SENT PORT" to OUT.sent; once OUT.go exists,
# reads back what it sent and writes the count to OUT.read; then idles.
WRITER='
import os, socket, sys, time
port, goal, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def publish(suffix, value):
    with open(out + ".tmp", "w") as f:
        f.write(value)
    os.rename(out + ".tmp", out + suffix)
s = socket.create_connection(("127.0.0.1", port))
s.settimeout(2)
chunk, sent = bytes(65536), 0
try:
    while sent < goal:
        sent += s.send(chunk[: goal - sent])
except socket.timeout:
    pass
publish(".sent", f"{sent} {s.getsockname()[1]}")
while not os.path.exists(out + ".go"):
    time.sleep(0.05)
s.settimeout(10)
n = 0
while n < sent and (data := s.recv(1 << 20)):
    n += len(data)
publish(".read", str(n))
time.sleep(60)
'
# Five echo round trips of a short line; prints its port, then each one's
# time in ms.
PINGER='
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.settimeout(5)
times = []
for i in range(5):
    msg, got = b"ping %d\n" % i, b""
    start = time.perf_counter()
    s.sendall(msg)
    while len(got) < len(msg):
        got += s.recv(100)
    times.append((time.perf_counter() - start) * 1000)
print(s.getsockname()[1], " ".join(f"{t:.3f}" for t in times))
'

step "the server is up; its memory before any client"
RSS_BEFORE=$(rss_kb "$SERVER_PID")
echo "    server VmRSS: $RSS_BEFORE kB"

step "a client writes up to $((GOAL / 1000000)) MB to echo and never reads"
start_bg timeout 60 python3 -c "$WRITER" "$ECHO" "$GOAL" "$TMP/writer"
wait_for_file "$TMP/writer.sent" 20 || die "the writer did not report"
read -r SENT WPORT <"$TMP/writer.sent"
plot_label "$WPORT" "the writer"
echo "    the writer's send() calls took $SENT bytes ($((SENT / 1024)) KiB), then"
echo "    send() blocked: no progress for 2 s, $((GOAL - SENT)) bytes short of its goal"

step "the admin view of the blocked connection"
show_clients "$ADMIN"
read -r KRQ RB SB KSQ STATE < <(client_field "$ADMIN" "$WPORT" \
    kernel_recv_queue recv_buf_used send_buf_used kernel_send_queue state)
read -r W_RQ W_SQ < <(sock_queues "$WPORT" "$ECHO")
echo "    where the writer's $SENT bytes are:"
printf '      %-50s %9s\n' "writer's kernel send queue (ss Send-Q)" "$W_SQ" \
    "server's kernel receive queue (kern_rq)" "$KRQ" \
    "server's receive buffer (recv_buf)" "$RB" \
    "server's send buffer (send_buf)" "$SB" \
    "server's kernel send queue (kern_sq)" "$KSQ" \
    "writer's kernel receive queue (ss Recv-Q)" "$W_RQ"
printf '      %-50s %9s\n' "total" $((W_SQ + KRQ + RB + SB + KSQ + W_RQ))
explain <<'EOF'
State paused: the send buffer filled, so the server reads no more from this
client. Its kernel went on accepting bytes (kern_rq) until its receive window
closed; from then on the writer's kernel kept them (Send-Q), and when that
was full too, send() blocked. Of all these bytes only recv_buf and send_buf
(at most 64 KiB each) are the server's own memory; the rest sits in the
kernels, whose queues are bounded too (rcvbuf, sndbuf).
EOF

step "the server's memory now"
RSS_AFTER=$(rss_kb "$SERVER_PID")
echo "    server VmRSS: $RSS_BEFORE kB before, $RSS_AFTER kB now" \
    "(+$((RSS_AFTER - RSS_BEFORE)) kB), while the client pushed $((SENT / 1024)) KiB"

step "another client's echo round trips, while the writer is blocked"
read -r PPORT PINGS < <(timeout 20 python3 -c "$PINGER" "$ECHO")
plot_label "${PPORT:-0}" "another client"
echo "    5 round trips, in ms: ${PINGS:-none (the client failed)}"
explain <<'EOF'
One thread serves both: the blocked connection costs it nothing, because the
server is not waiting on it; it simply stopped asking to read from it.
EOF

step "the writer finally reads its echo"
touch "$TMP/writer.go"
wait_for_file "$TMP/writer.read" 20 || die "the writer did not read back"
READ_BACK=$(cat "$TMP/writer.read")
echo "    the writer read back $READ_BACK of the $SENT bytes it sent"
sleep 0.2
show_clients "$ADMIN"
explain <<'EOF'
Nothing was lost: the pressure went back through every queue to the client,
and as soon as the client read, everything flowed again (state reading).
EOF
record_stop settle
plot_recording backpressure "${RECORD_CSV:-}"

if [ "$DEMO_TEST" = 1 ]; then
    echo
    check_num "the writer blocked before its goal" "$SENT" -lt "$GOAL"
    check "the blocked connection is paused" paused "$STATE"
    check_num "the server's kernel receive queue holds its bytes (kern_rq > 0)" "$KRQ" -gt 0
    check_num "the server's RSS grew by less than 10 MB" $((RSS_AFTER - RSS_BEFORE)) -lt 10240
    check_num "the writer pushed more than 1 MiB" "$SENT" -gt 1048576
    check_num "another client completed 5 round trips" "$(wc -w <<<"$PINGS")" -eq 5
    check "the writer reads back every byte" "$SENT" "$READ_BACK"
    finish
fi
