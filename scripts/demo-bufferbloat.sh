#!/usr/bin/env bash
#
# Demonstration: bufferbloat, on a real bottleneck. Inside the lab
# (scripts/lab.sh: 127.0.0.1 through a 20 Mbit/s tbf link with a 1 MB
# queue), one client downloads a large file from the files service while
# another measures its echo round trip every 50 ms. The download fills the
# queue in front of the link and everyone's round trip grows by the time it
# takes to drain it. Three runs: cubic (loss-based: it fills any queue it is
# given), bbr (--congestion bbr: it paces to the measured rate and keeps the
# queue short), and cubic again with the queue made short (30 KB: the round
# trip stays low, and the loss that follows shows as retransmits).
#
# Run from anywhere:  scripts/demo-bufferbloat.sh [--test] [--plot DIR]
# It runs itself inside scripts/lab.sh when it is not in the lab already;
# without root, ip netns or tc tbf it prints the lab's one skip line and
# exits 77 (scripts/test.sh counts it as skipped).
# DEMO_PAUSE=SECONDS sets the pause between steps (default 1). --test checks
# the figures with wide margins and ends with `N passed, N failed`.
# --plot DIR draws every run's round trips over time into
# DIR/bufferbloat.svg. Needs python3 and ss.

set -uo pipefail

if [ -z "${LAB_NS:-}" ]; then
    exec "$(dirname "${BASH_SOURCE[0]}")/lab.sh" run bash "${BASH_SOURCE[0]}" "$@"
fi

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
demo_init "$@"

echo "Bufferbloat: a download raises everyone's round trip"
echo "===================================================="
explain <<EOF
Inside the lab, 127.0.0.1 goes through a $LAB_RATE link with a $LAB_QUEUE-byte
queue in front of it ($LAB_NS). A queue that size holds 400 ms of traffic at
20 Mbit/s. A download's sender keeps sending until something tells it to
stop: cubic stops only at a loss, so it fills the queue first; bbr measures
the link's rate and the shortest round trip and paces to them. Every other
packet on the link (here another client's echo) waits behind the queue.
EOF

# Seconds of echo pings before the download starts (the idle round trip),
# and seconds the download runs: long enough for cubic to fill a 1 MB
# queue at 20 Mbit/s (0.4 s of data) several times over.
IDLE_SECS=1
LOAD_SECS=6
# Samples from this long into the download on are "loaded": the queue has
# had time to build (slow start doubles per round trip).
WARM_SECS=2
# The short queue of the third run: 30 KB, 12 ms at 20 Mbit/s.
SHORT_QUEUE=30000

ROOT=$TMP/root
mkdir -p "$ROOT"
# Sparse: no disk used, and it never ends within LOAD_SECS at 20 Mbit/s.
truncate -s 1G "$ROOT/big.bin"

available=$(cat /proc/sys/net/ipv4/tcp_available_congestion_control)
has_cc() { [[ " $available " == *" $1 "* ]]; }

# Pings echo every 50 ms for IDLE_SECS, then downloads big.bin while it goes
# on pinging for LOAD_SECS; writes the samples and the download's figures
# (with the server side's `ss -ti` line at the end of the load) as JSON.
MEASURE='
import json, socket, subprocess, sys, threading, time
echo, files, idle, load, warm, out = (int(sys.argv[1]), int(sys.argv[2]),
    float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), sys.argv[6])
PING_EVERY = 0.05
t0 = time.monotonic()
got = {"bytes": 0, "ss": ""}
stop = threading.Event()

def download():
    s = socket.create_connection(("127.0.0.1", files), timeout=5)
    s.sendall(b"GET big.bin\n")
    while not stop.is_set():
        chunk = s.recv(1 << 16)
        if not chunk:
            break
        got["bytes"] += len(chunk)
    # The server side of the download, as the kernel sees it, before the end.
    got["ss"] = subprocess.run(["ss", "-tinH", "state", "established",
        "( sport = :%d )" % files], capture_output=True, text=True).stdout
    s.close()

p = socket.create_connection(("127.0.0.1", echo), timeout=5)
p.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
samples, dl, started = [], None, None
while time.monotonic() - t0 < idle + load:
    if dl is None and time.monotonic() - t0 >= idle:
        started = time.monotonic() - t0
        dl = threading.Thread(target=download)
        dl.start()
    sent = time.monotonic()
    p.sendall(b"x")
    if p.recv(1) != b"x":
        sys.exit("echo closed")
    samples.append((sent - t0, (time.monotonic() - sent) * 1000))
    time.sleep(max(0, PING_EVERY - (time.monotonic() - sent)))
stop.set()
dl.join(10)
ended = time.monotonic() - t0
median = lambda xs: sorted(xs)[len(xs) // 2] if xs else None
idle_ms = [ms for t, ms in samples if t < started]
loaded_ms = [ms for t, ms in samples if t >= started + warm]
fields = dict(w.split(":", 1) for w in got["ss"].split() if ":" in w and not w.startswith("127."))
json.dump({"samples": samples, "started": started,
           "idle_ms": median(idle_ms), "loaded_ms": median(loaded_ms),
           "mbit": got["bytes"] * 8 / (ended - started) / 1e6,
           "retrans": int(fields.get("retrans", "0/0").split("/")[1]),
           "cwnd": fields.get("cwnd"), "ss": got["ss"]}, open(out, "w"))
'

RUNS=()
# run NAME CONGESTION QUEUE: one measured run, its figures in $TMP/NAME.json.
run() {
    local name=$1 cc=$2 queue=$3
    tc qdisc change dev lo root tbf rate "$LAB_RATE" burst 16kb limit "$queue" ||
        die "cannot set the queue to $queue bytes"
    start_server -l 127.0.0.1:0=echo -l 127.0.0.1:0=files --root "$ROOT" --nodelay \
        --congestion "$cc" --shutdown-timeout 1
    timeout $((IDLE_SECS + LOAD_SECS + 20)) python3 -c "$MEASURE" "$(port_of echo)" \
        "$(port_of files)" "$IDLE_SECS" "$LOAD_SECS" "$WARM_SECS" "$TMP/$name.json" ||
        die "the $name run failed"
    kill "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null
    RUNS+=("$name:$cc:$queue")
    python3 - "$TMP/$name.json" "$name" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
print("    %s: echo round trip %.1f ms idle, %.1f ms during the download; download %.1f Mbit/s, %d retransmitted"
      % (sys.argv[2], d["idle_ms"], d["loaded_ms"], d["mbit"], d["retrans"]))
EOF
}

step "cubic, $LAB_QUEUE-byte queue"
has_cc cubic || die "cubic is not available (tcp_available_congestion_control: $available)"
run cubic cubic "$LAB_QUEUE"
explain <<'EOF'
cubic grows its window until a packet is lost, and with a queue this deep
that happens only once the queue is full: the echo waits behind it.
EOF

step "bbr, $LAB_QUEUE-byte queue"
if has_cc bbr || modprobe tcp_bbr 2>/dev/null; then
    available=$(cat /proc/sys/net/ipv4/tcp_available_congestion_control)
    run bbr bbr "$LAB_QUEUE"
    explain <<'EOF'
bbr sends at the bottleneck's measured rate and keeps about one round trip
of data in flight, so the queue stays short and the echo barely notices.
EOF
else
    skip "bbr" "not available here and modprobe tcp_bbr failed"
fi

step "cubic, the queue cut to $SHORT_QUEUE bytes"
run short cubic "$SHORT_QUEUE"
tc qdisc change dev lo root tbf rate "$LAB_RATE" burst 16kb limit "$LAB_QUEUE"
explain <<'EOF'
A short queue cannot hold a standing queue: the round trip stays low, and
cubic learns of the full link by losing packets, which TCP sends again
(retransmits): loss is the signal a short queue gives, delay the one a deep
queue gives.
EOF

step "the figures"
python3 - "$TMP" "${RUNS[@]}" <<'EOF'
import json, sys
tmp = sys.argv[1]
print("    %-6s %-10s %10s %14s %16s %10s %12s" % ("run", "congestion", "queue B",
      "idle RTT ms", "loaded RTT ms", "Mbit/s", "retransmits"))
for r in sys.argv[2:]:
    name, cc, queue = r.split(":")
    d = json.load(open("%s/%s.json" % (tmp, name)))
    print("    %-6s %-10s %10s %14.1f %16.1f %10.1f %12d" % (name, cc, queue,
          d["idle_ms"], d["loaded_ms"], d["mbit"], d["retrans"]))
EOF

if [ -n "$PLOT_DIR" ]; then
    python3 - "$TMP" "$PLOT_DIR/bufferbloat.svg" "$LAB_RATE" "${RUNS[@]}" <<'EOF'
import json, math, sys
tmp, svg, rate = sys.argv[1], sys.argv[2], sys.argv[3]
runs = [r.split(":") for r in sys.argv[4:]]
colours = {"cubic": "#c44", "bbr": "#37b", "short": "#4a7"}
W, H, L, T, B = 760, 440, 70, 40, 75
data = {n: json.load(open("%s/%s.json" % (tmp, n))) for n, _, _ in runs}
tmax = max(s[0] for d in data.values() for s in d["samples"])
# A log scale: 0.1 ms idle and hundreds of ms loaded on one picture.
lo, hi = 0.05, max(1000, max(s[1] for d in data.values() for s in d["samples"]))
x = lambda t: L + t / tmax * (W - L - 20)
y = lambda ms: T + (1 - (math.log10(max(ms, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))) * (H - T - B)
out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">' % (W, H),
       '<rect width="100%" height="100%" fill="white"/>',
       '<text x="10" y="20" font-size="14">echo round trip while a download shares a %s link (log scale)</text>' % rate]
for ms in (0.1, 1, 10, 100, 1000):
    if ms <= hi:
        out.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/><text x="8" y="%.1f" fill="#666">%g ms</text>' % (L, y(ms), W - 20, y(ms), y(ms) + 4, ms))
for t in range(int(tmax) + 1):
    out.append('<text x="%.1f" y="%d" fill="#666">%d s</text>' % (x(t) - 6, H - B + 16, t))
start = next(iter(data.values()))["started"]
out.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#999" stroke-dasharray="4"/><text x="%.1f" y="%d" fill="#666">download starts</text>' % (x(start), T, x(start), H - B, x(start) + 4, T + 12))
for i, (n, cc, q) in enumerate(runs):
    pts = " ".join("%.1f,%.1f" % (x(t), y(ms)) for t, ms in data[n]["samples"])
    out.append('<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>' % (colours.get(n, "#333"), pts))
    out.append('<text x="%d" y="%d" fill="%s">%s, queue %s B: %.1f ms idle, %.1f ms loaded, %d retransmits</text>'
               % (L, H - B + 34 + 15 * i, colours.get(n, "#333"), cc, q, data[n]["idle_ms"],
                  data[n]["loaded_ms"], data[n]["retrans"]))
out.append("</svg>")
open(svg, "w").write("\n".join(out))
EOF
    echo
    echo "picture of this run: $PLOT_DIR/bufferbloat.svg"
fi

if [ "$DEMO_TEST" = 1 ]; then
    echo
    field() { python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))[sys.argv[2]] * 1000))' "$TMP/$1.json" "$2"; }
    # In microseconds, for integer comparisons.
    cubic_idle=$(field cubic idle_ms) cubic_loaded=$(field cubic loaded_ms)
    check_num "cubic: the loaded round trip is over 5x the idle one" "$cubic_loaded" -gt $((5 * cubic_idle))
    check_num "cubic: the loaded round trip is over 20 ms (a standing queue)" "$cubic_loaded" -gt 20000
    if [ -e "$TMP/bbr.json" ]; then
        check_num "bbr: the loaded round trip is under cubic's" "$(field bbr loaded_ms)" -lt "$cubic_loaded"
    fi
    check_num "short queue: the loaded round trip is under cubic's with the deep queue" \
        "$(field short loaded_ms)" -lt "$cubic_loaded"
    check_num "short queue: the download retransmits (loss instead of delay)" \
        "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["retrans"])' "$TMP/short.json")" -gt 0
    finish
fi
