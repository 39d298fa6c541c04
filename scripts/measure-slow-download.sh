#!/usr/bin/env bash
#
# Serves a large (sparse) file to a client that reads slowly at first, then
# fast, and prints the server's resident memory along the way: it must stay
# at the buffer limits, whatever the file's size. Loopback only; stops by
# itself.
#
# Usage: scripts/measure-slow-download.sh [SIZE_MB] [SLOW_SECONDS]   (default 2048 10)
# Needs python3 (for the slow client).

set -uo pipefail
size_mb=${1:-2048}
slow=${2:-10}
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/measure-lib.sh"
truncate -s "${size_mb}M" "$TMP/huge.bin"
start_server -l 127.0.0.1:0=files --root "$TMP"
port=$(port_of files)
server=$SERVER_PID

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
