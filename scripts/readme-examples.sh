#!/usr/bin/env bash
#
# Runs README.md as written: starts the server as the quick start says (its
# `cargo run --release -- serve ...` line, with the binary under test in
# place of `cargo run`, from the repository root, so it serves the shipped
# examples/root), then runs every ```console example and compares what each
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
# The README's ports are fixed (its Services table), and a server started
# by hand from the quick start may hold them while this runs. So the quick
# start's server is run from the repository root with its own arguments plus
# one `-l 127.0.0.1:0=SERVICE` per row of the table, on free ports, and every
# `127.0.0.1:PORT` / `127.0.0.1 PORT` of the README's ports in an example (its
# command and its output) is rewritten to the port really bound. Nothing is
# ever skipped for a taken port. It prints PASS/FAIL per command (a diff for
# each failure), `N passed, N failed, N skipped`, and exits 1 if any failed.
# The server and the scratch directory (where the examples run, so a file
# one writes lands there) are removed on every exit (lib.sh).

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

# --- The server, on free ports ------------------------------------------------

# The examples run in a scratch directory; the server runs where the quick
# start runs it, at the repository root, so `--root examples/root` is the
# tree the README ships.
SCRATCH=$TMP/scratch
mkdir -p "$SCRATCH" || die "cannot create $SCRATCH"

# An example that runs `tcp-reactor` gets the binary under test.
{ mkdir -p "$TMP/bin" && ln -s "$BIN" "$TMP/bin/tcp-reactor"; } || die "cannot link $BIN"
export PATH="$TMP/bin:$PATH"

listen_args=()
while read -r service port; do
    listen_args+=(-l "127.0.0.1:0=$service")
done <<<"$services"
echo "# quick start: tcp-reactor ${SERVE_ARGS[*]}   (from the repository root, README ports moved to free ones)"
cd "$REPO" || die "cannot cd to $REPO"
start_server "${SERVE_ARGS[@]:1}" "${listen_args[@]}"
cd "$SCRATCH" || die "cannot cd to $SCRATCH"

# README port -> the port bound for its service, as sed expressions that
# touch only loopback addresses with that exact port.
rewrite=()
while read -r service port; do
    bound=$(port_of "$service")
    echo "#   $service: README port $port -> $bound"
    rewrite+=(-e "s/127\.0\.0\.1:$port\b/127.0.0.1:$bound/g"
        -e "s/127\.0\.0\.1 $port\b/127.0.0.1 $bound/g")
done <<<"$services"
for i in "${!EX_CMD[@]}"; do
    EX_CMD[i]=$(printf '%s' "${EX_CMD[$i]}" | sed "${rewrite[@]}")
    EX_OUT[i]=$(printf '%s' "${EX_OUT[$i]}" | sed "${rewrite[@]}"; printf x)
    EX_OUT[i]=${EX_OUT[$i]%x}
done

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
