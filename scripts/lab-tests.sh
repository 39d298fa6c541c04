#!/usr/bin/env bash
#
# Tests of scripts/lab.sh itself: the link it builds, the exit status it
# passes on, and its promise to leave nothing behind: after the command's
# end, a SIGTERM to lab.sh alone (a test runner's timeout) and a SIGINT to
# its process group (Ctrl-C), the namespace and every process in it are
# gone. Also that a refused value is a usage error (exit 2), and that
# without root it is one line and exit 77.
#
# Run from anywhere:  scripts/lab-tests.sh
# As root; otherwise it prints the lab's skip line and exits 77 (counted as
# skipped by scripts/test.sh). Ends with `N passed, N failed`.

set -uo pipefail
LAB=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lab.sh

# Without root the lab itself says why, in one line, and exits 77.
if [ "$(id -u)" != 0 ]; then
    exec "$LAB" check
fi

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Seconds lab.sh may take to tear down after a signal: its clean-up gives
# the processes inside 2 s to end, then kills them.
TEARDOWN=5

# lab_gone PID: the namespace lab.sh PID made is gone, within TEARDOWN.
lab_gone() {
    local i
    for ((i = 0; i < TEARDOWN * 10; i++)); do
        ! ip netns list | grep -qw "tcpr-lab-$1" && return 0
        sleep 0.1
    done
    return 1
}

# reap_lab PID: removes what a lab.sh that failed to clean up left behind,
# so a failing test leaks nothing either.
reap_lab() {
    local pids
    pids=$(ip netns pids "tcpr-lab-$1" 2>/dev/null)
    # shellcheck disable=SC2086 # one word per process id
    [ -n "$pids" ] && kill -KILL $pids 2>/dev/null
    ip netns del "tcpr-lab-$1" 2>/dev/null
}

# wait_for_ns PID: the namespace of lab.sh PID exists (within 5 s).
wait_for_ns() {
    local i
    for i in $(seq 50); do
        ip netns list | grep -qw "tcpr-lab-$1" && return 0
        sleep 0.1
    done
    return 1
}

out=$("$LAB" run tc qdisc show dev lo 2>&1)
check_match "the lab's lo has the tbf queue at 20 Mbit/s" 'tbf .*rate 20Mbit' <(echo "$out")
out=$("$LAB" --queue 30000 --mtu 1400 run ip link show dev lo 2>&1)
check_match "--mtu sets the lab's lo MTU" 'mtu 1400' <(echo "$out")
out=$("$LAB" run sh -c 'echo "$LAB_NS $LAB_RATE $LAB_QUEUE"' 2>&1)
check_match "the command sees LAB_NS, LAB_RATE, LAB_QUEUE" '^tcpr-lab-[0-9]+ 20mbit 1000000$' <(echo "$out")

"$LAB" run sh -c 'exit 3' >/dev/null 2>&1
check "the command's exit status is passed on" 3 "$?"

"$LAB" --rate fast check >"$TMP/bad.out" 2>&1
check "a rate tc refuses is exit 2" 2 "$?"
check_lines "... with one line" 1 "$TMP/bad.out"

before=$(ip netns list | grep -c '^tcpr-lab-')
"$LAB" run true
check "the namespace is removed when the command ends" "$before" "$(ip netns list | grep -c '^tcpr-lab-')"

# A command that would outlive the test: lab.sh alone gets SIGTERM.
"$LAB" run sleep 60 </dev/null >/dev/null 2>&1 &
lab=$!
STARTED_PIDS+=("$lab")
wait_for_ns "$lab" || die "lab.sh made no namespace"
kill -TERM "$lab"
if lab_gone "$lab"; then
    pass "SIGTERM to lab.sh: the namespace is gone"
else
    fail "SIGTERM to lab.sh: the namespace is gone" "still there after ${TEARDOWN}s"
fi
ps -eo args >"$TMP/ps"
check_no_match "SIGTERM to lab.sh: its sleep is gone" "^sleep 60$" "$TMP/ps"
reap_lab "$lab"

# Ctrl-C: SIGINT to the whole process group, with SIGINT not ignored (a
# background job of this script would ignore it, so python starts it).
out=$(timeout 30 python3 -c '
import os, signal, subprocess, sys, time
p = subprocess.Popen([sys.argv[1], "run", "sleep", "60"], start_new_session=True,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
ns = "tcpr-lab-%d" % p.pid
for _ in range(50):
    if ns in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout:
        break
    time.sleep(0.1)
os.killpg(p.pid, signal.SIGINT)
try:
    status = p.wait(10)
except subprocess.TimeoutExpired:
    status = "still running 10 s after SIGINT"
print(status, ns in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout)
# A lab.sh that failed to clean up leaves nothing behind the test either.
pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
for pid in pids + [str(p.pid)]:
    try:
        os.kill(int(pid), signal.SIGKILL)
    except OSError:
        pass
subprocess.run(["ip", "netns", "del", ns], capture_output=True)
' "$LAB")
check "Ctrl-C: lab.sh exits 130 with its namespace gone" "130 False" "$out"

out=$(setpriv --reuid=65534 --regid=65534 --clear-groups "$LAB" check 2>&1)
status=$?
check "without root: exit 77" 77 "$status"
check "without root: one line saying why" "lab skipped: not root (a network namespace and tc need root)" "$out"

finish
