#!/usr/bin/env bash
#
# Demonstration: a successful write() only means the kernel took the bytes.
# Three clients ask the files service for a file and then read nothing; the
# admin `clients` table and `ss` show where the bytes sit meanwhile.
#
# Run from anywhere:  scripts/demo-send-is-not-delivery.sh [--test] [--plot DIR]
# DEMO_PAUSE=SECONDS sets the pause between steps (default 1). --test checks
# the key figures instead of explaining them and ends with `N passed, N failed`.
# --plot DIR records the main step (tcp-reactor record) and draws it into
# DIR/send-is-not-delivery.svg (tcp-reactor plot).
# Needs OpenBSD netcat, ss and python3. Loopback only.

set -uo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_nc
demo_init "$@"

echo "Send is not delivery"
echo "===================="
explain <<'EOF'
A server's write() returns as soon as the kernel has copied the bytes into
its send queue; nothing says the client has read them, or even received
them. Here three clients each ask for a file (64 KiB, 1 MiB, 1 GiB) and then
never call recv(). Watch, in the admin table, kern_sq (bytes in the server's
kernel send queue), send_buf (bytes in the server's own buffer) and state;
and, in `ss`, the client socket's Recv-Q (bytes the client's kernel holds for
a program that has not asked for them). Every write the server made succeeded.
EOF

ROOT=$TMP/root
mkdir -p "$ROOT"
truncate -s 64K "$ROOT/small.bin"
truncate -s 1M "$ROOT/medium.bin"
truncate -s 1G "$ROOT/big.bin"   # sparse: no disk space used
# --shutdown-timeout 1: if interrupted, do not wait to flush to client C.
start_server -l 127.0.0.1:0=files -l 127.0.0.1:0=admin --root "$ROOT" --shutdown-timeout 1
FILES=$(port_of files)
ADMIN=$(port_of admin)
record_start "$ADMIN" send-is-not-delivery

# Sends REQUEST, writes its port to OUT.port, reads nothing until OUT.go
# exists, then reads to the end and writes the count to OUT.read.
NON_READER='
import os, socket, sys, time
port, request, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
def publish(suffix, value):   # atomically, for the script polling for it
    with open(out + ".tmp", "w") as f: f.write(str(value))
    os.rename(out + ".tmp", out + suffix)
s = socket.create_connection(("127.0.0.1", port))
s.sendall(request.encode() + b"\n")
publish(".port", s.getsockname()[1])
while not os.path.exists(out + ".go"):
    time.sleep(0.05)
s.settimeout(10)
n = 0
while chunk := s.recv(1 << 20):
    n += len(chunk)
publish(".read", n)
'

cport() { cat "$TMP/$1.port"; }   # client NAME's port
CLIENTS=()

# ask NAME FILE: client NAME asks for FILE, then waits until the server has
# written all it can (its bytes_out stops growing).
ask() {
    local last=-1 now _
    start_bg timeout 60 python3 -c "$NON_READER" "$FILES" "GET $2" "$TMP/$1"
    CLIENTS+=("$BG_PID")
    wait_for_file "$TMP/$1.port" || die "client $1 did not connect"
    plot_label "$(cport "$1")" "client $1"
    for _ in $(seq 25); do
        now=$(client_field "$ADMIN" "$(cport "$1")" bytes_out)
        [ "$now" = "$last" ] && return
        last=$now
        sleep 0.2
    done
}

# account NAME: where the bytes the server wrote to client NAME are now.
account() {
    local out kq rq
    read -r out kq < <(client_field "$ADMIN" "$(cport "$1")" bytes_out kernel_send_queue)
    read -r rq _ < <(sock_queues "$(cport "$1")" "$FILES")
    printf '    client %s: server wrote %s bytes, every write() returned success\n' "$1" "$out"
    printf '      still in the server kernel send queue (kern_sq):  %9s\n' "$kq"
    printf '      in the client kernel receive queue (ss Recv-Q):   %9s\n' "$rq"
    printf '      read by the client program:                       %9s\n' 0
}

step "client A asks for small.bin (64 KiB) and reads nothing"
ask A small.bin
show_clients "$ADMIN"
account A
explain <<'EOF'
The whole file fits in A's kernel receive queue: kern_sq and send_buf are 0,
and the server has even finished (state closing). The download is "done" as
far as the server can tell, yet A's program has not read a single byte.
(Recv-Q shows one byte more than was written: ss counts the server's FIN.)
EOF

step "client B asks for medium.bin (1 MiB) and reads nothing"
ask B medium.bin
show_clients "$ADMIN"
account B
explain <<'EOF'
B's receive queue filled up and it now advertises a zero window, so the
rest of the file waits in the server's kernel send queue (kern_sq); unsent
equals kern_sq: none of it has even left the server's kernel. The server's
own send buffer is empty: the kernel took everything, so B is "done" too.
EOF

step "client C asks for big.bin (1 GiB) and reads nothing"
ask C big.bin
show_clients "$ADMIN"
account C
read -r kq sb sbcap state < <(client_field "$ADMIN" "$(cport C)" \
    kernel_send_queue send_buf_used send_buf_capacity state)
read -r crq _ < <(sock_queues "$(cport C)" "$FILES")
explain <<'EOF'
Now the kernel send queue is full (its limit is sndbuf, which also counts
the kernel's bookkeeping), so write() would block. What the files service
has read from disk waits in the server's send buffer (send_buf); while that
is above its low watermark (a quarter) the service reads no more of the file
(state paused). The server's memory stays bounded, however big the file.
EOF

step "ss -tn: the same bytes, seen by the kernels"
explain <<'EOF'
Server sockets (local port = the files port) hold bytes in Send-Q; the
clients' sockets hold bytes in Recv-Q. None of it has reached a program.
FIN-WAIT and CLOSE-WAIT: the server has closed its side to A and B.
EOF
ss -tn "( sport = :$FILES or dport = :$FILES )" | sed 's/^/    /'

step "clients A and B finally read"
touch "$TMP/A.go" "$TMP/B.go"
wait_for_file "$TMP/A.read" 10 || die "client A did not finish reading"
wait_for_file "$TMP/B.read" 10 || die "client B did not finish reading"
a_read=$(cat "$TMP/A.read") b_read=$(cat "$TMP/B.read")
echo "    client A read $a_read bytes (OK header + 65536), client B read $b_read bytes (OK header + 1048576)"
explain <<'EOF'
Everything was there all along: sitting in kernels, not delivered. Delivery
happens when the receiving program calls recv(), and only an answer from it
(an application-level acknowledgement) can tell the sender that it did.
EOF
record_stop settle
# C will never read: end it, so the server need not wait to flush 1 GiB.
kill "${CLIENTS[@]}" 2>/dev/null
plot_recording send-is-not-delivery "${RECORD_CSV:-}"

if [ "$DEMO_TEST" = 1 ]; then
    echo
    check_num "C: the server's kernel send queue holds bytes (kern_sq > 0)" "$kq" -gt 0
    check_num "C: the server's send buffer is at least at its low watermark" "$sb" -ge $((sbcap / 4))
    check "C: the connection is paused" paused "$state"
    check_num "C: the client's kernel holds unread bytes (Recv-Q >= 64 KiB)" "${crq:-0}" -ge 65536
    check "A: reads the whole file afterwards" $((65536 + 9)) "$a_read"
    check "B: reads the whole file afterwards" $((1048576 + 11)) "$b_read"
    finish
fi
