#!/usr/bin/env bash
#
# Measures the CPU time a release server uses over a window while holding
# many idle connections with an idle timeout set (the deadline list must cost
# nothing while nobody talks). Loopback only; stops by itself.
#
# Usage: scripts/measure-idle-cpu.sh [CONNS] [SECONDS]    (default 10000 30)
# Needs python3 (to hold the client sockets).

set -uo pipefail
conns=${1:-10000}
secs=${2:-30}
hard=$(ulimit -Hn)
want=$((conns + 200))
ulimit -n $((want < hard ? want : hard))
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/measure-lib.sh"
start_server -l 127.0.0.1:0=echo --idle-timeout $((secs * 2)) --max-conns 0
port=$(port_of echo)
server=$SERVER_PID

python3 - "$port" "$conns" "$secs" "$server" <<'PY'
import os, socket, sys, time
port, conns, secs, pid = (int(a) for a in sys.argv[1:])
tick = os.sysconf("SC_CLK_TCK")
def cpu():
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / tick
socks = []
for i in range(conns):
    s = socket.create_connection(("127.0.0.1", port))
    socks.append(s)
# One round trip on the last socket: the server has accepted them all.
socks[-1].sendall(b"x"); assert socks[-1].recv(1) == b"x"
rss = lambda: [l for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")][0].split()[1]
c0, t0 = cpu(), time.time()
time.sleep(secs)
c1, t1 = cpu(), time.time()
print(f"{conns} idle connections, idle timeout {secs * 2} s: "
      f"server CPU {c1 - c0:.2f} s over {t1 - t0:.1f} s; RSS {rss()} kB")
PY
