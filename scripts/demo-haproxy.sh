#!/usr/bin/env bash
#
# Past one machine: two tcp-reactor servers behind HAProxy (`mode tcp`,
# `balance leastconn`, as in README's configuration), and `bench` through
# the balancer. Shows that both servers took connections (each one's admin
# `stats`) and that every echoed byte came back. HAProxy comes from Debian's
# package, installed with apt-get when missing and run as root; otherwise the
# demo says so and skips. Everything listens on 127.0.0.1, on free ports.
#
# Usage: scripts/demo-haproxy.sh [--test]
#   --test   no pauses; checks instead of just showing

set -uo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
demo_init "$@"

if ! command -v haproxy >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy; } \
            </dev/null >"$TMP/apt.log" 2>&1 || true
    fi
fi
if ! command -v haproxy >/dev/null 2>&1; then
    skip "haproxy is not installed (apt-get install haproxy, as root)"
    finish
fi

step "two servers, each with an echo and an admin listener"
start_server -l 127.0.0.1:0=echo -l 127.0.0.1:0=admin
a_pid=$SERVER_PID
a_echo=$(port_of echo) a_admin=$(port_of admin)
start_server -l 127.0.0.1:0=echo -l 127.0.0.1:0=admin
b_echo=$(port_of echo) b_admin=$(port_of admin)
explain "server a: echo on $a_echo, admin on $a_admin; server b: echo on $b_echo, admin on $b_admin"

step "HAProxy in front of them"
# A free port for the frontend: bound and released at once (loopback only).
front=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$TMP/haproxy.cfg" <<CFG
global
    maxconn 4096

defaults
    mode tcp
    timeout connect 5s
    timeout client  1h
    timeout server  1h

frontend echo_in
    bind 127.0.0.1:$front
    default_backend echo_servers

backend echo_servers
    balance leastconn
    server a 127.0.0.1:$a_echo check
    server b 127.0.0.1:$b_echo check
CFG
haproxy -db -f "$TMP/haproxy.cfg" </dev/null >"$TMP/haproxy.log" 2>&1 &
STARTED_PIDS+=("$!")
haproxy_pid=$!
for _ in $(seq 100); do
    ss -Hltn "sport = :$front" | grep -q . && break
    running "$haproxy_pid" || break
    sleep 0.05
done
ss -Hltn "sport = :$front" | grep -q . || die "haproxy did not listen: $(cat "$TMP/haproxy.log")"
explain "haproxy listens on 127.0.0.1:$front and spreads connections over a and b (leastconn)"

step "bench through the balancer: 40 connections, 64-byte round trips, 2 s"
"$BIN" bench "127.0.0.1:$front" --conns 40 --size 64 --secs 2 >"$TMP/bench.txt" 2>&1
bench_status=$?
cat "$TMP/bench.txt"
check "bench exits 0 (every echoed byte checked)" 0 "$bench_status"
check_match "no failed connection" "failed connections: 0" "$TMP/bench.txt"

step "each server's share, from its admin stats"
accepted() {
    admin "$1" "stats json" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["services"]["echo"]["accepted"])'
}
a_took=$(accepted "$a_admin")
b_took=$(accepted "$b_admin")
explain "server a accepted $a_took echo connections, server b $b_took"
check_num "server a took connections" "$a_took" -gt 0
check_num "server b took connections" "$b_took" -gt 0
check_alive "server a is still running" "$a_pid"
check_alive "server b is still running"
finish
