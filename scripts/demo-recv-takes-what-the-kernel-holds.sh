#!/usr/bin/env bash
#
# Demonstration: one send() of 1 MiB is not one recv() of 1 MiB. A client
# sends 1 MiB to echo in a single sendall() and reads it back; the server's
# trace log (-vv) shows how the bytes actually arrived: many reads, each
# taking what the kernel held, up to the room in the receive buffer.
#
# Run from anywhere:  scripts/demo-recv-takes-what-the-kernel-holds.sh [--test] [--plot DIR]
# DEMO_PAUSE=SECONDS sets the pause between steps (default 1). --test checks
# the key figures and ends with `N passed, N failed`.
# --plot DIR records the main step (tcp-reactor record) and draws it into
# DIR/recv-takes-what-the-kernel-holds.svg (tcp-reactor plot).
# Needs python3. Loopback only.

set -uo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
demo_init "$@"

echo "recv() takes what the kernel holds"
echo "=================================="
explain <<'EOF'
TCP is a byte stream, not a stream of messages. The client below hands the
kernel 1 MiB in ONE call (sendall); the kernel cuts it into segments, and the
server's read() calls each return whatever the kernel had queued at that
moment, but never more than the room left in the receive buffer. First with
a deliberately small receive buffer (--recv-buf 4K), then with a large one
(--recv-buf 1M). Watch the number and sizes of the server's reads.
EOF

SIZE=1048576
# Sends SIZE bytes in one sendall() while a thread reads the echo; prints
# the bytes received, whether they match, and the sizes of its own recv()s.
CLIENT='
import socket, sys, threading
port, size = int(sys.argv[1]), int(sys.argv[2])
data = bytes(range(256)) * (size // 256)
got, sizes = bytearray(), []
s = socket.create_connection(("127.0.0.1", port))
s.settimeout(10)
def reader():
    while len(got) < size and (chunk := s.recv(1 << 20)):
        got.extend(chunk)
        sizes.append(len(chunk))
t = threading.Thread(target=reader)
t.start()
s.sendall(data)   # one call, 1 MiB
t.join()
print(len(got), "same" if got == data else "DIFFERENT", len(sizes), min(sizes), max(sizes))
'

# run RECV_BUF: one transfer against a fresh server; sets ECHOED, READS
# (the server's read sizes, one a line, in $TMP/reads-RECV_BUF).
run() {
    local reads=$TMP/reads-$1 n nr nmin nmax admin_ids others='^$'
    if [ -n "$PLOT_DIR" ]; then
        start_server -l 127.0.0.1:0=echo -l 127.0.0.1:0=admin --recv-buf "$1" -vv
        record_start "$(port_of admin)" "recv-takes-what-the-kernel-holds-$1"
        RECORDINGS+=("$RECORD_CSV")
    else
        start_server -l 127.0.0.1:0=echo --recv-buf "$1" -vv
    fi
    read -r ECHOED same n nmin nmax < <(timeout 20 python3 -c "$CLIENT" "$(port_of echo)" "$SIZE")
    wait_for_log "read 0 bytes (end of input)"
    record_stop now
    # The client's port, from the server's "conn N 127.0.0.1:PORT (echo): opened".
    plot_label "$(sed -n 's/.*conn [0-9]* 127\.0\.0\.1:\([0-9]*\) (echo): opened.*/\1/p' "$SERVER_LOG" | head -n 1)" \
        "--recv-buf $1"
    # Under --plot, the recorder's own admin connection is left out.
    admin_ids=$(sed -n 's/.*conn \([0-9]*\) .* (admin): opened.*/\1/p' "$SERVER_LOG" | paste -sd'|')
    [ -n "$admin_ids" ] && others="conn ($admin_ids): "
    # "conn 0: read 4096 bytes, recv buffer 4096/4096" -> 4096
    grep -Ev -- "$others" "$SERVER_LOG" |
        sed -n 's/.*tcp_reactor.*: read \([1-9][0-9]*\) bytes, recv buffer.*/\1/p' >"$reads"
    READS=$reads
    WOULD_BLOCK=$(grep -Ev -- "$others" "$SERVER_LOG" | grep -c 'read would block')
    nr=$(wc -l <"$reads")
    echo "    client: sent $SIZE bytes in 1 call; got $ECHOED bytes back ($same) in $n recv() calls of $nmin..$nmax bytes"
    echo "    server (--recv-buf $1): $nr reads, $(awk '{ s += $1 } END { print s }' "$reads") bytes," \
        "$(sort -u "$reads" | wc -l) distinct sizes, min $(sort -n "$reads" | head -1)," \
        "max $(sort -n "$reads" | tail -1); reads that would block: $WOULD_BLOCK"
}

# histogram FILE: "count x size" lines, most frequent first.
histogram() {
    echo "    server read sizes (count x bytes):"
    sort -n "$1" | uniq -c | sort -k1,1nr -k2,2nr | head -n "${2:-8}" |
        awk '{ printf "      %5d x %7d bytes\n", $1, $2 }'
    [ "$(sort -u "$1" | wc -l)" -le "${2:-8}" ] || echo "      ..."
}

RECORDINGS=()
step "echo server with --recv-buf 4K -vv; the client sends 1 MiB in one call"
run 4K
echo "    the first lines of the server's trace log:"
grep -E 'tcp_reactor.*conn [0-9]+: (read|wrote)' "$SERVER_LOG" | head -n 6 | sed 's/^/      /'
histogram "$READS"
SMALL_TOTAL=$(awk '{ s += $1 } END { print s + 0 }' "$READS")
SMALL_COUNT=$(wc -l <"$READS")
SMALL_MAX=$(sort -n "$READS" | tail -n 1)
SMALL_ECHOED=$ECHOED
explain <<'EOF'
Almost every read is 4096 bytes: the kernel held more, but the receive
buffer had room for only 4 KiB, so the rest waited in the kernel's queue
until the echo service had moved those bytes on. The odd sizes are reads
made when the kernel held less than 4 KiB. There are few or no "would block"
reads: a read that returns less than it asked for already says the kernel's
queue is empty, so the server does not ask again.
EOF

step "the same transfer with --recv-buf 1M"
run 1M
histogram "$READS"
BIG_COUNT=$(wc -l <"$READS")
explain <<'EOF'
With room to spare, each read returns exactly what the kernel had received
so far, and that depends on timing (how far the client's kernel got while
the server was busy), so the sizes differ from run to run. The client's one
send() became several reads on the server, and the echo came back in yet
other pieces (the client's recv() line). Message boundaries are the
application's job (a length prefix, a newline), never the kernel's.
EOF

plot_recording recv-takes-what-the-kernel-holds "${RECORDINGS[@]}"

if [ "$DEMO_TEST" = 1 ]; then
    echo
    check "4K: the client gets its 1 MiB back" "$SIZE" "$SMALL_ECHOED"
    check "4K: the server read 1 MiB in total" "$SIZE" "$SMALL_TOTAL"
    check_num "4K: in more than one read" "$SMALL_COUNT" -gt 1
    check_num "4K: no read is larger than the receive buffer" "$SMALL_MAX" -le 4096
    check "1M: the client gets its 1 MiB back" "$SIZE" "$ECHOED"
    check_num "1M: fewer reads than with 4K" "$BIG_COUNT" -lt "$SMALL_COUNT"
    finish
fi
