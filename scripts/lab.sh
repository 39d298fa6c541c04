#!/usr/bin/env bash
#
# The lab: a bottleneck link on this host. Builds a private network namespace
# (tcpr-lab-PID) whose loopback has MTU 1500 and a token-bucket queue
#
#     tc qdisc add dev lo root tbf rate RATE burst 16kb limit QUEUE
#
# so that everything inside it talks over 127.0.0.1 through a RATE link with
# a QUEUE-byte buffer in front of it: round trips, congestion windows and a
# standing queue that loopback (20 us, as fast as memory) never shows. Only
# addresses inside that namespace are used; nothing leaves the host.
#
#   scripts/lab.sh [OPTIONS] run CMD [ARGS...]   run CMD inside the lab
#   scripts/lab.sh [OPTIONS] shell               a shell inside the lab, to try
#                                                nc, serve, top and get by hand
#   scripts/lab.sh [OPTIONS] check               build the lab, say so, tear it down
#
# OPTIONS:
#   --rate RATE    the link's rate, in tc's units (default 20mbit: a home
#                  uplink, slow enough that a download fills the queue)
#   --queue BYTES  the queue in front of the link (default 1000000: 400 ms at
#                  20 Mbit/s, the size of a bloated home router's buffer;
#                  a small one, such as 30000, drops instead of delaying)
#   --mtu BYTES    the loopback's MTU (default 1500, Ethernet's; loopback's
#                  own 65536 would make each packet 26 ms long at 20 Mbit/s)
#
# Inside, LAB_NS, LAB_RATE, LAB_QUEUE and LAB_MTU are set, so a script can
# tell it runs in the lab (the demos re-run themselves through lab.sh when
# they are not). The namespace, and every process still in it, is removed on
# every exit: the command's end, an error, Ctrl-C or SIGTERM.
#
# Needs root, `ip netns` and the tbf queueing discipline. Without one of them
# it prints one line saying which and exits 77, which scripts/test.sh counts
# as skipped. The exit status is otherwise the command's.

set -uo pipefail

SKIP=77
RATE=20mbit
QUEUE=1000000
MTU=1500

usage() {
    echo "usage: $0 [--rate RATE] [--queue BYTES] [--mtu BYTES] run CMD [ARGS...] | shell | check" >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case "$1" in
        --rate | --queue | --mtu)
            [ $# -ge 2 ] || usage
            case "$1" in
                --rate) RATE=$2 ;;
                --queue) QUEUE=$2 ;;
                --mtu) MTU=$2 ;;
            esac
            shift 2
            ;;
        run | shell | check) break ;;
        *) usage ;;
    esac
done
[ $# -ge 1 ] || usage
MODE=$1
shift
[ "$MODE" != run ] || [ $# -ge 1 ] || usage
[[ $QUEUE =~ ^[0-9]+$ && $MTU =~ ^[0-9]+$ ]] || {
    echo "error: --queue and --mtu take a number of bytes" >&2
    exit 2
}

skip() {
    echo "lab skipped: $*"
    exit "$SKIP"
}

if [ -n "${LAB_NS:-}" ]; then
    # Already inside a lab (a demo run through lab.sh calling it again):
    # one namespace is enough.
    case "$MODE" in
        run) exec "$@" ;;
        shell) exec "${SHELL:-bash}" ;;
        check) echo "inside lab $LAB_NS"; exit 0 ;;
    esac
fi

[ "$(id -u)" = 0 ] || skip "not root (a network namespace and tc need root)"
command -v ip >/dev/null 2>&1 || skip "no ip command (iproute2)"
command -v tc >/dev/null 2>&1 || skip "no tc command (iproute2)"

NS=tcpr-lab-$$

cleanup() {
    local pids i
    # A second Ctrl-C must not cut the clean-up short; it is bounded anyway.
    trap '' INT TERM
    pids=$(ip netns pids "$NS" 2>/dev/null)
    if [ -n "$pids" ]; then
        # shellcheck disable=SC2086 # one word per process id
        kill $pids 2>/dev/null
        # 2 s to end, as the demos give their servers; then insist.
        for i in $(seq 20); do
            [ -z "$(ip netns pids "$NS" 2>/dev/null)" ] && break
            sleep 0.1
        done
        pids=$(ip netns pids "$NS" 2>/dev/null)
        # shellcheck disable=SC2086
        [ -n "$pids" ] && kill -KILL $pids 2>/dev/null
    fi
    ip netns del "$NS" 2>/dev/null
}

ip netns add "$NS" 2>/dev/null || skip "ip netns add failed (no network namespaces here)"
trap cleanup EXIT
# Signals become an ordinary exit, so the EXIT trap runs exactly once.
trap 'exit 130' INT
trap 'exit 143' TERM

ip -n "$NS" link set dev lo mtu "$MTU" up ||
    { echo "error: cannot set lo up with MTU $MTU in $NS" >&2; exit 1; }
if ! tc_error=$(ip netns exec "$NS" tc qdisc add dev lo root tbf rate "$RATE" burst 16kb limit "$QUEUE" 2>&1); then
    # Told apart: a value tc refuses (a usage error) and no tbf at all.
    if ip netns exec "$NS" tc qdisc add dev lo root tbf rate 20mbit burst 16kb limit 1000000 2>/dev/null; then
        echo "error: tc refused --rate $RATE --queue $QUEUE: $(echo "$tc_error" | head -n 1)" >&2
        exit 2
    fi
    skip "tc tbf is not available (tc qdisc add dev lo root tbf ... failed: $(echo "$tc_error" | head -n 1))"
fi

export LAB_NS=$NS LAB_RATE=$RATE LAB_QUEUE=$QUEUE LAB_MTU=$MTU

case "$MODE" in
    check)
        echo "lab $NS: lo mtu $MTU, tbf rate $RATE limit $QUEUE"
        ip netns exec "$NS" tc qdisc show dev lo
        status=0
        ;;
    shell)
        echo "lab $NS: 127.0.0.1 through tbf rate $RATE, queue $QUEUE bytes, MTU $MTU; exit to tear it down"
        echo "try: tcp-reactor serve --root DIR &   then nc 127.0.0.1 7788, tcp-reactor get 127.0.0.1:8000 NAME,"
        echo "     tcp-reactor top 127.0.0.1:7999, ss -ti, tc -s qdisc show dev lo"
        ip netns exec "$NS" "${SHELL:-bash}"
        status=$?
        ;;
    run)
        # In the background, waited for: a signal to this script alone (a
        # test runner's timeout) then runs the trap at once, and the clean-up
        # ends the command, rather than waiting for a command that may hang.
        # Ctrl-C at a terminal comes here too (a background command of a
        # script ignores SIGINT) and ends it the same way, with SIGTERM.
        # Its standard input stays this script's (`<&0`).
        ip netns exec "$NS" "$@" <&0 &
        wait "$!"
        status=$?
        ;;
esac
exit "$status"
