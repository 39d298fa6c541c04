#!/usr/bin/env bash
#
# Netcat tests of the echo, ack and files services and of `serve`'s command-line
# errors, against servers this script starts itself on loopback port 0.
# Outputs are checked byte for byte.
#
# Run from anywhere:   scripts/nc-tests.sh
# Test another build:  TCP_REACTOR=target/release/tcp-reactor scripts/nc-tests.sh
# Needs OpenBSD netcat (`nc -N`); prints `N passed, N failed` and exits
# non-zero if any check failed.

set -uo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_nc

LOCAL=127.0.0.1
REPLY=$'收到请求\n'   # the default ack reply, UTF-8
GBK_REPLY='ca d5 b5 bd c7 eb c7 f3 0a'   # 收到请求\n in GBK

# Whether the machine has IPv6 loopback (containers often do not).
has_ipv6_loopback() {
    [ -r /proc/net/if_inet6 ] && grep -q '^0\{31\}1 ' /proc/net/if_inet6
}

listeners=(-l "$LOCAL:0=echo" -l "$LOCAL:0=ack")
has_ipv6_loopback && listeners+=(-l '[::1]:0=echo')
start_server "${listeners[@]}"
MAIN_LOG=$SERVER_LOG
MAIN_PID=$SERVER_PID
ECHO=$(port_of echo)
ACK=$(port_of ack)

echo "# echo"

printf 'hello' | nc_send $LOCAL "$ECHO" >"$TMP/hello"
check "echo: exit status of nc -N" 0 $?
check_bytes "echo: 'hello' comes back as 'hello'" 'hello' "$TMP/hello"

head -c 3M /dev/urandom >"$TMP/random-3M"
nc_send $LOCAL "$ECHO" <"$TMP/random-3M" >"$TMP/random-3M.out"
check "echo: nc -N with 3 MB returns by itself" 0 $?
check_file "echo: 3 MB of random bytes come back identical" "$TMP/random-3M" "$TMP/random-3M.out"

if has_ipv6_loopback; then
    printf 'hello over ipv6\n' | nc_send ::1 "$(port_of echo '[::1]')" >"$TMP/ipv6"
    check_bytes "echo: over IPv6 [::1]" $'hello over ipv6\n' "$TMP/ipv6"
else
    skip "echo: over IPv6 [::1]" "this machine has no ::1"
fi

# Twenty clients at once, each with its own data: nothing mixed up or lost.
pids=()
for i in $(seq 20); do
    head -c $((i * 5000)) /dev/urandom >"$TMP/many-$i"
    nc_send $LOCAL "$ECHO" <"$TMP/many-$i" >"$TMP/many-$i.out" &
    pids+=($!)
done
wait "${pids[@]}"
same=0
for i in $(seq 20); do
    cmp -s "$TMP/many-$i" "$TMP/many-$i.out" && same=$((same + 1))
done
check "echo: 20 concurrent clients each get their own bytes back" 20 "$same"

echo "# ack"

printf 'one\ntwo\nthree\n' | nc_send $LOCAL "$ACK" >"$TMP/three"
check_bytes "ack: three lines, three replies" "$REPLY$REPLY$REPLY" "$TMP/three"

printf 'crlf-one\r\ncrlf-two\r\n' | nc_send $LOCAL "$ACK" >"$TMP/crlf"
check_bytes "ack: two \\r\\n lines, two replies" "$REPLY$REPLY" "$TMP/crlf"
check_match "ack: \\r is not part of the logged message" \
    '^.* ack 127\.0\.0\.1:[0-9]+: "crlf-one"$' "$MAIN_LOG"

printf 'bare message' | nc_send $LOCAL "$ACK" >"$TMP/bare"
check_bytes "ack: a message without newline, then half-close: one reply" "$REPLY" "$TMP/bare"

# No -N: nc keeps the connection until the server closes it, so returning
# before the timeout (status 124) shows that `exit` closed it.
printf 'before-exit\nexit\nafter-exit\n' | timeout 5 nc $LOCAL "$ACK" >"$TMP/exit"
status=$?
if [ "$status" -ne 124 ]; then
    pass "ack: 'exit' closes the connection (nc without -N returned, status $status)"
else
    fail "ack: 'exit' closes the connection" "nc without -N was still connected after 5 s"
fi
check_bytes "ack: replies only for lines before 'exit'" "$REPLY" "$TMP/exit"
check_no_match "ack: input after 'exit' is ignored" 'after-exit' "$MAIN_LOG"

printf 'crlf-before\r\nexit\r\ncrlf-after\r\n' | timeout 5 nc $LOCAL "$ACK" >"$TMP/exit-crlf"
check "ack: 'exit\\r\\n' closes the connection too (nc status)" 0 $?
check_bytes "ack: replies only for lines before 'exit\\r\\n'" "$REPLY" "$TMP/exit-crlf"

tag="log-check-$$"
printf '%s\n' "$tag" | nc_send $LOCAL "$ACK" >/dev/null
wait_for_log "\"$tag\""
check_match "ack: each message is logged with the client address" \
    "INFO .*ack 127\\.0\\.0\\.1:[0-9]+: \"$tag\"\$" "$MAIN_LOG"

start_server -l "$LOCAL:0=ack" --reply OK
printf 'a\nb\n' | nc_send $LOCAL "$(port_of ack)" >"$TMP/reply-ok"
check_bytes "ack: --reply OK" $'OK\nOK\n' "$TMP/reply-ok"

start_server -l "$LOCAL:0=ack" --encoding gbk
GBK_ACK=$(port_of ack)
printf 'hi' | nc_send $LOCAL "$GBK_ACK" >"$TMP/gbk"
check_hex "ack: --encoding gbk sends the default reply in GBK" "$GBK_REPLY" "$TMP/gbk"
printf '\xc4\xe3\xba\xc3\n' | nc_send $LOCAL "$GBK_ACK" >/dev/null   # 你好 in GBK
wait_for_log '"你好"'
check_match "ack: --encoding gbk logs GBK messages decoded" 'ack 127\.0\.0\.1:[0-9]+: "你好"$' "$SERVER_LOG"

echo "# hostile input"

head -c 1M /dev/urandom >"$TMP/random-1M"
nc_send $LOCAL "$ACK" <"$TMP/random-1M" >/dev/null
check "ack: 1 MB of random bytes, then nc returns" 0 $?
nc_send $LOCAL "$ECHO" <"$TMP/random-1M" >"$TMP/random-1M.out"
check_file "echo: 1 MB of random bytes come back identical" "$TMP/random-1M" "$TMP/random-1M.out"
# 1 MB with no newline at all: ack must not buffer it without bound.
head -c 1M /dev/zero | tr '\0' x | nc_send $LOCAL "$ACK" >"$TMP/long-line"
check "ack: a 1 MB line without newline, then nc returns" 0 $?
# How it is split into messages depends on bursts and --recv-buf; the
# answer must still be one or more whole replies.
replies=$(grep -c . "$TMP/long-line")
for ((i = 0; i < (replies > 0 ? replies : 1); i++)); do
    printf '%s' "$REPLY"
done >"$TMP/long-line.expected"
check_file "ack: a 1 MB line without newline gets one or more whole replies" \
    "$TMP/long-line.expected" "$TMP/long-line"
check_alive "server: still running after hostile input" "$MAIN_PID"
printf 'hello' | nc_send $LOCAL "$ECHO" >"$TMP/hello-after"
check_bytes "echo: still answers after hostile input" 'hello' "$TMP/hello-after"
printf 'still there?\n' | nc_send $LOCAL "$ACK" >"$TMP/ack-after"
check_bytes "ack: still answers after hostile input" "$REPLY" "$TMP/ack-after"

echo "# files"

ROOT=$TMP/root
mkdir -p "$ROOT/sub"
printf 'hello notes\n' >"$ROOT/notes.txt"
head -c 2M /dev/urandom >"$ROOT/sub/data.bin"
ln -s /etc/passwd "$ROOT/escape"
start_server -l "$LOCAL:0=files" --root "$ROOT"
FILES=$(port_of files)

printf 'GET notes.txt\n' | nc_send $LOCAL "$FILES" >"$TMP/get"
check_bytes "files: GET answers OK <size> then the bytes" $'OK 12\nhello notes\n' "$TMP/get"

# The notes' download client: the bare name, no newline and no half-close
# (stdin stays open a while), then read to the end.
(printf 'sub/data.bin'; sleep 1) | timeout 10 nc $LOCAL "$FILES" >"$TMP/bare"
check "files: nc exits normally after a bare-name download" 0 $?
check_file "files: the bare download is byte-identical" "$ROOT/sub/data.bin" "$TMP/bare"

printf 'LIST\n' | nc_send $LOCAL "$FILES" >"$TMP/list"
check_bytes "files: LIST names the regular files" $'notes.txt\nsub/data.bin\n' "$TMP/list"

for name in escape ../notes.txt /etc/passwd sub; do
    printf 'GET %s\n' "$name" | nc_send $LOCAL "$FILES" >"$TMP/refused"
    check_match "files: GET $name is refused with ERR" '^ERR ' "$TMP/refused"
    printf '%s\n' "$name" | nc_send $LOCAL "$FILES" >"$TMP/refused-bare"
    check_bytes "files: bare $name gets no bytes" '' "$TMP/refused-bare"
done

echo "# command line"

timeout 5 "$BIN" serve --no-such-flag >/dev/null 2>"$TMP/bad-flag.err"
check "cli: unknown flag exits 2" 2 $?
check_lines "cli: unknown flag prints one line" 1 "$TMP/bad-flag.err"

timeout 5 "$BIN" serve --recv-buf 12Q >/dev/null 2>"$TMP/bad-size.err"
check "cli: --recv-buf 12Q exits 2" 2 $?
check_lines "cli: --recv-buf 12Q prints one line" 1 "$TMP/bad-size.err"
check_match "cli: the error names --recv-buf" '--recv-buf' "$TMP/bad-size.err"

timeout 5 "$BIN" serve -l "$LOCAL:$ECHO=echo" >/dev/null 2>"$TMP/in-use.err"
check "cli: a listen address in use exits 1" 1 $?
check_match "cli: the error names the address in use" \
    "^error: cannot listen on $LOCAL:$ECHO \\(echo\\): " "$TMP/in-use.err"

finish
