#!/usr/bin/env bash
#
# Demonstration: the kernel's send buffer size (SO_SNDBUF) decides how much
# a write() can hand over before it would block. The same 4 MiB download is
# run against a server with --so-sndbuf 4K and against one with the kernel's
# default (autotuning); the trace logs (-vv) count the writes and the writes
# that would block, side by side.
#
# Run from anywhere:  scripts/demo-kernel-buffer-sizes.sh [--test] [--plot DIR]
# DEMO_PAUSE=SECONDS sets the pause between steps (default 1). --test checks
# the key figures and ends with `N passed, N failed`.
# --plot DIR records the main step (tcp-reactor record) and draws it into
# DIR/kernel-buffer-sizes.svg (tcp-reactor plot).
# Needs OpenBSD netcat and python3 (Linux: TCP_QUICKACK). Loopback only.

set -uo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_nc
demo_init "$@"

echo "Kernel buffer sizes: --so-sndbuf 4K against the default"
echo "======================================================="
explain <<'EOF'
Between the server's send buffer and the wire sits the kernel's send queue,
whose size is SO_SNDBUF. A write() returns at once while the queue has room
and would block when it is full; the server then waits for the client's ACKs
to free room. The same 4 MiB download runs against a server with a tiny
kernel send buffer (--so-sndbuf 4K) and one with the default. First, in each,
a client that asks for the file and reads nothing shows the connection at
rest in the admin table (sndbuf, kern_sq); then a client downloads the file
as fast as it can, and the server's trace log counts the writes.
EOF

ROOT=$TMP/root
mkdir -p "$ROOT"
truncate -s 4M "$ROOT/4M.bin"
SIZE=$((4 * 1048576 + 11)) # with the "OK 4194304\n" header

# Asks for 4M.bin and writes its port to OUT.port. Mode stall: reads nothing
# (it is killed). Modes read and quickack: reads to the end, the latter
# asking the kernel to acknowledge at once, and prints "BYTES MILLISECONDS".
CLIENT='
import os, socket, sys, time
port, out, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
s = socket.create_connection(("127.0.0.1", port))
s.sendall(b"GET 4M.bin\n")
with open(out + ".tmp", "w") as f:
    f.write(str(s.getsockname()[1]))
os.rename(out + ".tmp", out + ".port")
if mode == "stall":
    time.sleep(60)
s.settimeout(10)
start, n = time.perf_counter(), 0
while True:
    if mode == "quickack":   # Linux resets it after a while: set it each time
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
    data = s.recv(1 << 20)
    if not data:
        break
    n += len(data)
print(n, round((time.perf_counter() - start) * 1000))
'

# download NAME MODE [SERVE-OPTIONS...]: a fresh server; unless MODE is
# quickack, the admin table with a client that reads nothing; then one
# download by a MODE client. Sets NAME_{SNDBUF,WRITES,BLOCKS,BYTES,MS}.
download() {
    local name=$1 mode=$2 files admin id sndbuf=- bytes ms
    shift 2
    start_server -l 127.0.0.1:0=files -l 127.0.0.1:0=admin --root "$ROOT" -vv "$@"
    files=$(port_of files)
    admin=$(port_of admin)
    record_start "$admin" "kernel-buffer-sizes-$name"
    RECORDINGS+=("${RECORD_CSV:-}")
    echo "    tcp-reactor serve -l 127.0.0.1:0=files -l 127.0.0.1:0=admin --root DIR -vv${*:+ $*}"
    if [ "$mode" != quickack ]; then
        start_bg timeout 30 python3 -c "$CLIENT" "$files" "$TMP/$name-stall" stall
        wait_for_file "$TMP/$name-stall.port" || die "the client did not connect"
        plot_label "$(cat "$TMP/$name-stall.port")" "${*:-default}, reads nothing"
        sleep 0.5
        echo "    a client that asked for 4M.bin and reads nothing:"
        show_clients "$admin"
        sndbuf=$(client_field "$admin" "$(cat "$TMP/$name-stall.port")" so_sndbuf)
        kill "$BG_PID"
    fi
    read -r bytes ms < <(timeout 30 python3 -c "$CLIENT" "$files" "$TMP/$name" "$mode")
    plot_label "$(cat "$TMP/$name.port")" "${*:-default}, downloads ($mode)"
    echo "    a client that reads at once ($mode): $bytes bytes in $ms ms"
    # The download's own log lines: from its "conn N 127.0.0.1:PORT (files):
    # opened" on (N may be reused from the stalled client, closed before).
    sed -n "/conn [0-9]* 127\.0\.0\.1:$(cat "$TMP/$name.port") (files): opened/,\$p" \
        "$SERVER_LOG" >"$TMP/$name.log"
    id=$(sed -n '1s/.*conn \([0-9]*\) .*/\1/p' "$TMP/$name.log")
    printf -v "${name}_SNDBUF" %s "$sndbuf"
    printf -v "${name}_WRITES" %s "$(grep -c "tcp_reactor.*conn $id: wrote [0-9]* bytes" "$TMP/$name.log")"
    printf -v "${name}_BLOCKS" %s "$(grep -c "tcp_reactor.*conn $id: write would block" "$TMP/$name.log")"
    printf -v "${name}_BYTES" %s "$bytes"
    printf -v "${name}_MS" %s "$ms"
    record_stop now
}
RECORDINGS=()

step "a server with --so-sndbuf 4K"
download SMALL read --so-sndbuf 4K
explain <<'EOF'
sndbuf says 8192, not 4096: Linux doubles the size a program asks for, to
leave room for its own bookkeeping (and setting it turns off the kernel's
autotuning for the socket). kern_sq stays small, tens of KiB: the kernel
checks for room before it takes a write, so one write can overshoot sndbuf,
but then it takes no more. The rest of what the server read from the file
waits in its own send buffer (send_buf).
EOF

step "the same server settings, but the client acknowledges at once"
download QUICK quickack --so-sndbuf 4K
explain <<'EOF'
Same tiny buffer, but this client's kernel acknowledges every packet at once
(TCP_QUICKACK) instead of delaying its ACKs. It takes about as long as the
step before: the server writes whole TCP segments, so no ACK is waited for
(see the side by side below for what delayed ACKs once cost).
EOF

step "a server with the kernel's default"
download DEFAULT read
explain <<'EOF'
Without --so-sndbuf the kernel autotunes SO_SNDBUF (up to the maximum in
net.ipv4.tcp_wmem), so megabytes fit in kern_sq before a write would block.
EOF

step "side by side (the downloading connection, from the trace logs)"
printf '    %-30s %15s %15s %15s\n' "" "--so-sndbuf 4K" "4K, quick ACKs" "default" \
    "SO_SNDBUF the kernel reports" "$SMALL_SNDBUF" "(same)" "$DEFAULT_SNDBUF" \
    "write() calls" "$SMALL_WRITES" "$QUICK_WRITES" "$DEFAULT_WRITES" \
    "writes that would block" "$SMALL_BLOCKS" "$QUICK_BLOCKS" "$DEFAULT_BLOCKS" \
    "bytes the client read" "$SMALL_BYTES" "$QUICK_BYTES" "$DEFAULT_BYTES" \
    "download time" "$SMALL_MS ms" "$QUICK_MS ms" "$DEFAULT_MS ms"
explain <<'EOF'
With a small kernel buffer the server keeps running into a full queue: most
of its writes would block, and after each it must wait for an ACK to free
room, so the download takes longer than with the default buffer, where the
server hardly ever waits. (About as many writes succeed either way: the
server writes whole TCP segments, and the kernel takes one even into a small
queue once the queue has drained.) Quick ACKs make no difference now. They
did when the server wrote its 64 KiB buffer as it stood: one full segment
and a 53-byte runt, which Nagle's algorithm holds until the client has
acknowledged what went before, while a Linux receiver may delay that ACK by
up to 40 ms. With room for about one packet the server paid that delay for
every write: the 4K download took about 2 s, 6 ms with quick ACKs. The
bytes delivered are the same in all three.
EOF

plot_recording kernel-buffer-sizes "${RECORDINGS[@]}"

if [ "$DEMO_TEST" = 1 ]; then
    echo
    check "4K: the kernel reports SO_SNDBUF 8192 (twice the 4K asked for)" 8192 "$SMALL_SNDBUF"
    check_num "4K: smaller than the default's SO_SNDBUF" "$SMALL_SNDBUF" -lt "$DEFAULT_SNDBUF"
    check_num "4K: more writes that would block than the default" "$SMALL_BLOCKS" -gt "$DEFAULT_BLOCKS"
    check "4K: the whole file arrives" "$SIZE" "$SMALL_BYTES"
    check "4K, quick ACKs: the whole file arrives" "$SIZE" "$QUICK_BYTES"
    check "default: the whole file arrives" "$SIZE" "$DEFAULT_BYTES"
    finish
fi
