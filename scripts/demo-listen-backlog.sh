#!/usr/bin/env bash
#
# Demonstration: the listen backlog is a kernel queue too, and a full one
# makes connect() take exactly 1 s, or 3 s. A server started with
# --backlog 4 is stopped (SIGSTOP), so it accepts nothing; a few connects
# fill its accept queue; the next clients' SYNs are dropped, and each
# connect waits for the kernel's SYN retransmission (1 s after the first,
# then 3 s, 7 s: the retransmission timeout doubles; Linux 6.x first makes
# net.ipv4.tcp_syn_linear_timeouts retries 1 s apart: 1, 2, 3, 4 s) however
# soon the server comes back (SIGCONT). ListenOverflows and ListenDrops in /proc/net/netstat
# count the dropped SYNs.
#
# Run from anywhere:  scripts/demo-listen-backlog.sh [--test] [--plot DIR]
# DEMO_PAUSE=SECONDS sets the pause between steps (default 1). --test checks
# the connect times with wide margins and ends with `N passed, N failed`.
# --plot DIR draws every client's connect as a bar on a time line into
# DIR/listen-backlog.svg. Needs python3. Loopback only; no root needed.

set -uo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
demo_init "$@"

echo "Where connect() waits: the listen backlog"
echo "========================================="
explain <<'EOF'
listen(fd, N) sizes the queue of connections the kernel has completed but
the program has not yet accept()ed. Linux holds N+1 of them; once the queue
is full, a new client's SYN is dropped without a word (no RST), and the
client's kernel sends it again after 1 s, then 3 s, 7 s (Linux 6.x: 1, 2,
3, 4 s, then doubling; net.ipv4.tcp_syn_linear_timeouts)... So a server that
is briefly busy (or a backlog too small for a burst) turns into connects
that take exactly one second, or three: the answer to "why does connecting
sometimes take one second?"
EOF

BACKLOG=4
# Each connect of the demo gives up after this long: the 7 s retry, with
# room; no round needs more than the 3 s one.
CONNECT_TIMEOUT=10
start_server -l 127.0.0.1:0=echo --backlog "$BACKLOG" --shutdown-timeout 1
ECHO=$(port_of echo)
echo
echo "server: echo on 127.0.0.1:$ECHO, --backlog $BACKLOG (ss -lnt Send-Q):"
ss -lnt "( sport = :$ECHO )" | sed 's/^/    /'

# The rounds, timed and signalled from one program so the times are the
# client's own: stop the server, fill its queue, start the late clients,
# resume the server after HOLD seconds, time every connect. The server is
# always resumed (finally), or the clean-up's SIGTERM would wait on it.
CLIENTS='
import json, os, signal, socket, sys, threading, time
pid, port, backlog, timeout, out = (int(sys.argv[1]), int(sys.argv[2]),
    int(sys.argv[3]), float(sys.argv[4]), sys.argv[5])
LATE = 3   # late clients per round: enough to see they all wait alike

def netstat():
    """ListenOverflows and ListenDrops from /proc/net/netstat (TcpExt)."""
    with open("/proc/net/netstat") as f:
        lines = [l.split() for l in f if l.startswith("TcpExt:")]
    row = dict(zip(lines[0][1:], map(int, lines[1][1:])))
    return {k: row.get(k, 0) for k in ("ListenOverflows", "ListenDrops")}

def syn_retries():
    """When the client kernel sends its SYN again, in seconds after the
    first: 1 s, then doubling (1, 3, 7, ...); but Linux 6.x first makes
    net.ipv4.tcp_syn_linear_timeouts (default 4) retries 1 s apart (1, 2,
    3, 4, then 6, 10, ...)."""
    try:
        linear = int(open("/proc/sys/net/ipv4/tcp_syn_linear_timeouts").read())
    except OSError:
        linear = 0
    times, t, rto = [], 0, 1
    for k in range(6):
        t += rto
        times.append(t)
        if k + 1 >= linear:
            rto *= 2
    return linear, times

def timed_connect(t0, result, i):
    start = time.monotonic()
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        result[i] = {"start": start - t0, "secs": time.monotonic() - start}
        s.close()
    except OSError as e:
        result[i] = {"start": start - t0, "secs": None, "error": str(e)}

def round_(name, hold):
    t0 = time.monotonic()
    os.kill(pid, signal.SIGSTOP)
    try:
        fillers, filled = [], []
        for i in range(backlog + 1):   # Linux holds backlog + 1
            start = time.monotonic()
            fillers.append(socket.create_connection(("127.0.0.1", port), timeout=2))
            filled.append({"start": start - t0, "secs": time.monotonic() - start})
        late = [None] * LATE
        threads = [threading.Thread(target=timed_connect, args=(t0, late, i)) for i in range(LATE)]
        for t in threads:
            t.start()
        time.sleep(hold)
        resumed = time.monotonic() - t0
    finally:
        os.kill(pid, signal.SIGCONT)
    for t in threads:
        t.join(timeout + 1)
    for s in fillers:
        s.close()
    # The late clients connect at the first retry after the server resumed.
    expected = next(t for t in syn_retries()[1] if t > resumed)
    return {"name": name, "hold": hold, "resumed": resumed, "filled": filled, "late": late,
            "expected": expected}

before = netstat()
rounds = [round_("resumed after 0.5 s", 0.5), round_("resumed after 1.5 s", 1.5)]
after = netstat()
# Once the server accepts again: connects are quick.
free = [None] * 3
for i in range(3):
    timed_connect(time.monotonic(), free, i)
json.dump({"rounds": rounds, "free": free, "linear": syn_retries()[0],
           "retries": syn_retries()[1],
           "netstat": {k: after[k] - before[k] for k in after}}, open(out, "w"))
'

step "fill the queue, then connect; the server resumes after 0.5 s, then 1.5 s"
explain <<'EOF'
Each round: SIGSTOP the server; 5 clients connect at once (the queue holds
backlog + 1 = 5); 3 more try while it is full; SIGCONT after HOLD seconds.
EOF
timeout 60 python3 -c "$CLIENTS" "$SERVER_PID" "$ECHO" "$BACKLOG" "$CONNECT_TIMEOUT" "$TMP/times.json" ||
    die "the clients failed"
check_alive "the server runs after the rounds"

python3 - "$TMP/times.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
fmt = lambda s: "gave up" if s is None else "%.2f s" % s
print("\n    SYN retries here at %s s after the first (net.ipv4.tcp_syn_linear_timeouts = %d)"
      % (", ".join(map(str, d["retries"])), d["linear"]))
for r in d["rounds"]:
    print("\n    %s (SIGCONT at %.2f s; the next retry is due at %d s):"
          % (r["name"], r["resumed"], r["expected"]))
    for i, c in enumerate(r["filled"]):
        print("      queued client %d: connect %s" % (i + 1, fmt(c["secs"])))
    for i, c in enumerate(r["late"]):
        print("      late client %d:   connect %s   <- its SYN was dropped" % (i + 1, fmt(c["secs"])))
print("\n    once the server accepts again: connect %s" %
      ", ".join(fmt(c["secs"]) for c in d["free"]))
print("\n    /proc/net/netstat during the rounds: ListenOverflows +%d, ListenDrops +%d"
      % (d["netstat"]["ListenOverflows"], d["netstat"]["ListenDrops"]))
EOF
explain <<'EOF'

The queued clients connected at once: the kernel completes the handshake
without the program. The late ones did not connect when the server came
back, but at their next SYN retry: 1 s after their first SYN when it came
back within a second, and the next retry when it came back after that:
3 s on the classic schedule (1, 3, 7 s: the timeout doubles), 2 s on a
Linux 6.x kernel whose first tcp_syn_linear_timeouts retries (default 4)
come 1 s apart. Each dropped SYN
is counted in ListenOverflows and ListenDrops (netstat -s: "times the listen
queue of a socket overflowed"); the counters are the whole host's, so other
programs' drops show there too.
EOF

if [ -n "$PLOT_DIR" ]; then
    python3 - "$TMP/times.json" "$PLOT_DIR/listen-backlog.svg" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
W, ROW, LEFT, SCALE = 760, 18, 150, 150          # 150 px per second
rows = []
for r in d["rounds"]:
    rows.append(("title", r["name"], None, r["resumed"]))
    rows += [("queued %d" % (i + 1), c["start"], c["secs"], r["resumed"]) for i, c in enumerate(r["filled"])]
    rows += [("late %d" % (i + 1), c["start"], c["secs"], r["resumed"]) for i, c in enumerate(r["late"])]
H = 60 + ROW * len(rows)
out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">' % (W, H),
       '<rect width="100%" height="100%" fill="white"/>',
       '<text x="10" y="20" font-size="14">connect() against a full accept queue (--backlog 4, server stopped, then resumed)</text>']
for s in range(5):
    x = LEFT + s * SCALE
    out.append('<line x1="%d" y1="30" x2="%d" y2="%d" stroke="#ddd"/><text x="%d" y="%d" fill="#666">%d s</text>' % (x, x, H - 20, x - 6, H - 6, s))
y = 40
for label, start, secs, resumed in rows:
    if label == "title":
        out.append('<text x="10" y="%d" font-weight="bold">%s</text>' % (y + 12, start))
        x = LEFT + resumed * SCALE
        out.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="green" stroke-dasharray="4"/><text x="%.1f" y="%d" fill="green">SIGCONT</text>' % (x, y, x, y + ROW * 9, x + 3, y + 12))
    else:
        colour = "#4a7" if label.startswith("queued") else "#c44"
        w = max(2, (secs if secs is not None else 5) * SCALE)
        out.append('<text x="20" y="%d">%s</text><rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s"/>' % (y + 12, label, LEFT + start * SCALE, y + 3, w, ROW - 6, colour))
        out.append('<text x="%.1f" y="%d">%s</text>' % (LEFT + start * SCALE + w + 4, y + 12, "gave up" if secs is None else "%.2f s" % secs))
    y += ROW
out.append("</svg>")
open(sys.argv[2], "w").write("\n".join(out))
EOF
    echo
    echo "picture of this run: $PLOT_DIR/listen-backlog.svg"
fi

if [ "$DEMO_TEST" = 1 ]; then
    echo
    # Wide margins: the retry is due 1 s (then 2 s or 3 s) after the first
    # SYN; a busy machine only makes it later, never earlier.
    read -r filled_fast late1 late2 free_fast overflows second < <(python3 - "$TMP/times.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
r1, r2 = d["rounds"]
ok = lambda cs, lo, hi: int(all(c["secs"] is not None and lo <= c["secs"] <= hi for c in cs))
late = lambda r: ok(r["late"], r["expected"] - 0.1, r["expected"] + 1.5)
print(ok(r1["filled"] + r2["filled"], 0, 0.5), late(r1), late(r2), ok(d["free"], 0, 0.5),
      d["netstat"]["ListenOverflows"], r2["expected"])
EOF
    )
    check "the queued clients connect at once (< 0.5 s) while the server is stopped" 1 "$filled_fast"
    check "resumed after 0.5 s: every late connect waits for the 1 s retry (0.9-2.5 s)" 1 "$late1"
    check "resumed after 1.5 s: every late connect waits for the $second s retry" 1 "$late2"
    check "once the server accepts again, connects take < 0.5 s" 1 "$free_fast"
    check_num "ListenOverflows counted the dropped SYNs (>= 6)" "$overflows" -ge 6
    finish
fi
