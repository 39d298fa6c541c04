#!/usr/bin/env bash
#
# Runs README.md as written: starts the server exactly as the quick start
# says (its `cargo run --release -- serve ...` line, with the binary under
# test in place of `cargo run`), in a scratch directory holding the files the
# examples name, then runs every ```console example and compares what each
# command prints with what the README shows.
#
# Run from anywhere:   scripts/readme-examples.sh
# Test another build:  TCP_REACTOR=target/release/tcp-reactor scripts/readme-examples.sh
#
# In a console block, each `$ COMMAND` line is run with `bash -c` (a trailing
# `# comment` is part of it; bash ignores it) in the scratch directory, with
# stdin from /dev/null and a timeout of EXAMPLE_TIMEOUT seconds (default 5).
# Its stdout must equal the lines that follow it, up to the next `$` line or
# the end of the block, byte for byte, except that a missing newline at the
# very end is accepted (a console cannot show whether the last line had one).
# A command still running at the timeout fails.
#
# An HTML comment on the line just before the fence changes that:
#     <!-- readme-examples: skip: REASON -->   not run; printed as SKIP
#     <!-- readme-examples: header-only -->    (optionally `header-only: REASON`)
#         only the first output line (a table's header) is compared,
#         trailing blanks ignored; the other lines change every run
#
# The README's ports are fixed (its Services table), so when one of them is
# already taken on this machine every example is skipped, saying why, and the
# script exits 0. Otherwise it prints PASS/FAIL per command (a diff for each
# failure), `N passed, N failed, N skipped`, and exits 1 if any failed.
# The server and the scratch directory are removed on every exit (lib.sh).

set -uo pipefail

EXAMPLE_TIMEOUT=${EXAMPLE_TIMEOUT:-5}
# How long the server may take, after its first listener, to log the others.
LISTEN_GRACE_TICKS=40   # of 0.05 s

# The binary under test: $TCP_REACTOR (scripts/test.sh exports its debug
# build), else this checkout's debug build, brought up to date (`cargo build`
# does nothing when it is).
if [ -z "${TCP_REACTOR:-}" ]; then
    (cd "$(dirname "${BASH_SOURCE[0]}")/.." && cargo build --locked --quiet) ||
        { echo "error: cargo build --locked failed" >&2; exit 1; }
    TCP_REACTOR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/debug/tcp-reactor
    export TCP_REACTOR
fi
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_nc
command -v ss >/dev/null 2>&1 || die "this script needs ss (the iproute2 package)"

README=$REPO/README.md
[ -r "$README" ] || die "cannot read $README"
SKIPPED=0

# --- What README.md says ---------------------------------------------------

# The quick start's server command: the arguments after `--` on its
# `cargo run --release -- serve ...` line, comment removed.
quick_start=$(awk '
    /^## / { in_qs = ($0 == "## Quick start") }
    in_qs && /^cargo run --release -- serve([[:space:]]|$)/ { print; exit }' "$README")
[ -n "$quick_start" ] || die "README.md: no 'cargo run --release -- serve' line under '## Quick start'"
quick_start=${quick_start%%#*}
case $quick_start in
    *[\'\"\\\$\`\;\&\|\<\>\(\)]*)
        die "README.md quick start: cannot split '$quick_start' into words without a shell" ;;
esac
read -ra words <<<"$quick_start"
SERVE_ARGS=()
for i in "${!words[@]}"; do
    if [ "${words[$i]}" = -- ]; then
        SERVE_ARGS=("${words[@]:i+1}")
        break
    fi
done
[ "${SERVE_ARGS[0]:-}" = serve ] || die "README.md quick start: expected 'serve' after '--'"

# The Services table's default addresses: "SERVICE PORT" lines.
services=$(sed -nE 's/^\| ([a-z]+) \| 127\.0\.0\.1:([0-9]+) \|.*/\1 \2/p' "$README")
[ -n "$services" ] || die "README.md: no '| SERVICE | 127.0.0.1:PORT |' rows in the Services table"

# Every console example: one entry per `$` line, in README order.
EX_LINE=()     # README line number of the `$` line
EX_CMD=()      # the command
EX_OUT=()      # the output lines shown, each ending in a newline
EX_MODE=()     # run, header-only or skip
EX_NOTE=()     # the marker's reason, if any
EX_FIRST=()    # 1 for the first command of its block
lineno=0
in_block=0
marker=
marker_line=0
while IFS= read -r line || [ -n "$line" ]; do
    lineno=$((lineno + 1))
    if [ "$in_block" = 1 ]; then
        if [ "$line" = '```' ]; then
            in_block=0
        elif [[ $line == '$' || $line == '$ '* ]]; then
            EX_LINE+=("$lineno")
            EX_CMD+=("${line#\$ }")
            EX_OUT+=("")
            EX_MODE+=("$mode")
            EX_NOTE+=("$note")
            EX_FIRST+=("$first")
            first=0
        elif [ "$first" = 1 ]; then
            die "README.md:$lineno: console block output before any \$ line"
        else
            last=$((${#EX_OUT[@]} - 1))
            EX_OUT[last]+="$line"$'\n'
        fi
        continue
    fi
    if [[ $line == '```console' ]]; then
        in_block=1
        first=1
        mode=run
        note=
        if [ "$marker_line" = $((lineno - 1)) ]; then
            case $marker in
                skip:*)
                    mode=skip
                    note=${marker#skip:}
                    note=${note# }
                    [ -n "$note" ] || die "README.md:$marker_line: a skip marker needs a reason" ;;
                header-only) mode=header-only ;;
                header-only:*)
                    mode=header-only
                    note=${marker#header-only:}
                    note=${note# } ;;
                *) die "README.md:$marker_line: unknown readme-examples marker '$marker'" ;;
            esac
        fi
    elif [ "$marker_line" = $((lineno - 1)) ] && [ "$marker_line" -gt 0 ]; then
        die "README.md:$marker_line: a readme-examples marker must be just before a \`\`\`console fence"
    fi
    if [[ $line =~ ^\<!--\ readme-examples:\ (.*)\ --\>$ ]]; then
        marker=${BASH_REMATCH[1]}
        marker_line=$lineno
    fi
done <"$README"
[ "$in_block" = 0 ] || die "README.md: a console block is not closed"
[ "${#EX_CMD[@]}" -gt 0 ] || die "README.md: no \`\`\`console examples found"

# --- The README's ports must be free ---------------------------------------

taken=()
while read -r service port; do
    in_use=$(ss -Htln "sport = :$port")
    [ -n "$in_use" ] && taken+=("port $port ($service): $in_use")
done <<<"$services"
if [ "${#taken[@]}" -gt 0 ]; then
    echo "SKIP every README example: the quick start's server needs the README's fixed ports,"
    echo "and on this machine some are already taken (CI machines have them free):"
    printf '    %s\n' "${taken[@]}"
    echo "0 passed, 0 failed, ${#EX_CMD[@]} skipped"
    exit 0
fi

# --- The scratch directory and the server ----------------------------------

# Exactly the files the examples name: `GET notes.txt` shows `OK 12` and
# `hello notes`; `LIST` shows notes.txt and sub/data.bin, nothing else.
SCRATCH=$TMP/scratch
mkdir -p "$SCRATCH/sub" || die "cannot create $SCRATCH"
printf 'hello notes\n' >"$SCRATCH/notes.txt"
printf '\000\001\002\003' >"$SCRATCH/sub/data.bin"

# An example that runs `tcp-reactor` gets the binary under test.
{ mkdir -p "$TMP/bin" && ln -s "$BIN" "$TMP/bin/tcp-reactor"; } || die "cannot link $BIN"
export PATH="$TMP/bin:$PATH"

echo "# quick start: tcp-reactor ${SERVE_ARGS[*]}   (in a scratch directory: notes.txt, sub/data.bin)"
cd "$SCRATCH" || die "cannot cd to $SCRATCH"
# No -l: wait for the first listener, then give the rest a moment. A README
# address the server does not open is reported, and its examples then fail.
start_server_expecting 1 "${SERVE_ARGS[@]:1}"
missing=()
for ((i = 0; ; i++)); do
    missing=()
    while read -r service port; do
        grep -qF "listening on 127.0.0.1:$port ($service)" "$SERVER_LOG" ||
            missing+=("127.0.0.1:$port ($service)")
    done <<<"$services"
    [ "${#missing[@]}" -eq 0 ] || [ "$i" -ge "$LISTEN_GRACE_TICKS" ] && break
    sleep 0.05
done
if grep 'listening on ' "$SERVER_LOG" | grep -qvE 'listening on (127\.[0-9.]+|\[::1\]):[0-9]+ '; then
    grep 'listening on ' "$SERVER_LOG" >&2
    die "the quick start's server listens outside loopback; not running the examples"
fi
if [ "${#missing[@]}" -gt 0 ]; then
    echo "warning: the server does not listen on the README's ${missing[*]}; it logged:"
    grep 'listening on ' "$SERVER_LOG" | sed 's/^/    /'
fi

# --- The examples ------------------------------------------------------------

run_example() {
    local i=$1 cmd=${EX_CMD[$1]} mode=${EX_MODE[$1]} status=0
    local expected=$TMP/expected.$i actual=$TMP/actual.$i stderr=$TMP/stderr.$i
    timeout -k 2 "$EXAMPLE_TIMEOUT" bash -c "$cmd" </dev/null >"$actual" 2>"$stderr" || status=$?
    # A console cannot show whether the last line ended in a newline.
    if [ -s "$actual" ] && [ -n "$(tail -c 1 "$actual")" ]; then
        echo >>"$actual"
    fi
    printf '%s' "${EX_OUT[$i]}" >"$expected"
    if [ "$mode" = header-only ]; then
        head -n 1 "$expected" | sed 's/[[:space:]]*$//' >"$expected.first"
        head -n 1 "$actual" | sed 's/[[:space:]]*$//' >"$actual.first"
        expected=$expected.first
        actual=$actual.first
    fi
    local where="README.md line ${EX_LINE[$i]}"
    [ "$mode" = header-only ] && where+=", first line only${EX_NOTE[$i]:+: ${EX_NOTE[$i]}}"
    if [ "$status" -ne 124 ] && [ "$status" -ne 137 ] && cmp -s "$expected" "$actual"; then
        PASSED=$((PASSED + 1))
        echo "PASS $cmd ($where)"
        return
    fi
    FAILED=$((FAILED + 1))
    echo "FAIL $cmd ($where)"
    if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
        echo "    still running after ${EXAMPLE_TIMEOUT}s: killed"
    fi
    diff -u --label "README.md (expected)" --label "actual stdout" "$expected" "$actual" |
        sed 's/^/    /'
    echo "    exit status $status"
    if [ -s "$stderr" ]; then
        echo "    stderr:"
        sed 's/^/      /' "$stderr"
    fi
}

for i in "${!EX_CMD[@]}"; do
    if [ "${EX_MODE[$i]}" = skip ]; then
        SKIPPED=$((SKIPPED + 1))
        [ "${EX_FIRST[$i]}" = 1 ] && echo "SKIP ${EX_CMD[$i]} (${EX_NOTE[$i]})"
        continue
    fi
    run_example "$i"
done

running "$SERVER_PID" || echo "warning: the server exited during the examples"
echo "$PASSED passed, $FAILED failed, $SKIPPED skipped"
[ "$FAILED" -eq 0 ]
