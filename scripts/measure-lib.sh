# shellcheck shell=bash
# Sourced by the measure-*.sh scripts: builds the release binary and loads
# lib.sh's server helpers (start_server, port_of, cleanup on exit) pointed at
# it, since figures from a debug build would mean nothing. TCP_REACTOR=PATH
# measures another build instead (to compare two side by side).

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
if [ -z "${TCP_REACTOR:-}" ]; then
    cargo build --release --quiet || exit 1
    export TCP_REACTOR=$PWD/target/release/tcp-reactor
fi
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
