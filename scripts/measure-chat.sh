#!/usr/bin/env bash
#
# Measures chat fan-out: one sender, many receivers; prints the lines
# delivered per second (lines sent x receivers / time). The sender works in
# batches and waits for every receiver to have the batch, so no receiver is
# ever too slow and none is dropped. Loopback only; stops by itself.
#
# Usage: scripts/measure-chat.sh [RECEIVERS] [LINES]    (default 500 20000)
# Needs python3 (for the many clients).

set -uo pipefail
receivers=${1:-500}
lines=${2:-20000}
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/measure-lib.sh"
start_server -l 127.0.0.1:0=chat --send-buf 1M
port=$(port_of chat)
server=$SERVER_PID

python3 - "$port" "$receivers" "$lines" "$server" <<'PY'
import selectors, socket, sys, time
port, n, lines, pid = (int(a) for a in sys.argv[1:])
sel = selectors.DefaultSelector()
recv = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ, i)
    recv.append(s)
sender = socket.create_connection(("127.0.0.1", port))
seen = [0] * n                      # message lines (not announcements) seen
partial = [b""] * n
def pump(until):
    while min(seen) < until:
        for key, _ in sel.select(timeout=10):
            i = key.data
            data = partial[i] + key.fileobj.recv(1 << 20)
            *whole, partial[i] = data.split(b"\n")
            seen[i] += sum(1 for l in whole if l.startswith(b"["))
# The sender's own join reaches every receiver: all are members then.
batch, sent = 500, 0
payload = b"x" * 40
start = time.time()
while sent < lines:
    k = min(batch, lines - sent)
    sender.sendall(b"".join(b"%d %s\n" % (sent + j, payload) for j in range(k)))
    sent += k
    pump(sent)
elapsed = time.time() - start
size = len(b"[127.0.0.1:00000] 00000 \n") + len(payload)
print(f"{n} receivers, {lines} lines of ~{size} bytes: {lines * n} deliveries in "
      f"{elapsed:.2f} s = {lines * n / elapsed:,.0f} lines/s delivered "
      f"({lines / elapsed:,.0f} lines/s sent)")
PY
