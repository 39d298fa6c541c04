#!/usr/bin/env bash
#
# Serves a large (sparse) file to a client that reads slowly at first, then
# fast, and prints the server's resident memory along the way: it must stay
# at the buffer limits, whatever the file's size. Loopback only; stops by
# itself.
#
# Usage: scripts/measure-slow-download.sh [SIZE_MB] [SLOW_SECONDS]   (default 2048 10)
# Needs python3 (for the slow client).

set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
size_mb=${1:-2048}
slow=${2:-10}
cargo build --release --quiet
dir=$(mktemp -d)
log=$dir/server.log
truncate -s "${size_mb}M" "$dir/huge.bin"
target/release/tcp-reactor serve -l 127.0.0.1:0=files --root "$dir" 2>"$log" &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do grep -q 'listening on' "$log" && break; sleep 0.1; done
port=$(grep -oP 'listening on 127\.0\.0\.1:\K[0-9]+' "$log")

python3 - "$port" "$server" "$slow" <<'PY'
import socket, sys, time
port, pid, slow = (int(a) for a in sys.argv[1:])
def mem(field):
    return int([l for l in open(f"/proc/{pid}/status") if l.startswith(field)][0].split()[1])
print(f"server RSS before: {mem('VmRSS')} kB")
s = socket.create_connection(("127.0.0.1", port))
s.sendall(b"GET huge.bin\n")
header = b""
while not header.endswith(b"\n"):
    header += s.recv(1)
size = int(header.split()[1])
got, start, last = 0, time.time(), 0
while time.time() - start < slow:          # slow: 16 KiB every 10 ms
    got += len(s.recv(16384))
    time.sleep(0.01)
    if time.time() - last >= 2:
        last = time.time()
        print(f"  slow phase: {got / 2**20:7.1f} MiB read, server RSS {mem('VmRSS')} kB")
while True:                                # then as fast as possible
    chunk = s.recv(1 << 20)
    if not chunk:
        break
    got += len(chunk)
print(f"received {got} of {size} bytes in {time.time() - start:.1f} s; "
      f"server peak RSS (VmHWM) {mem('VmHWM')} kB")
assert got == size
PY
