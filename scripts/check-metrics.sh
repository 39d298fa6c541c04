#!/usr/bin/env bash
#
# The Prometheus endpoint as a scraper sees it: a real HTTP client (curl)
# fetches GET /metrics from the admin port, and the official Python
# prometheus_client parser reads the answer as OpenMetrics. Run by
# scripts/test.sh; installs prometheus_client with pip (into a private
# directory) if it is missing. Loopback only; stops by itself.

set -uo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v curl >/dev/null || die "check-metrics needs curl"
command -v python3 >/dev/null || die "check-metrics needs python3"
PYDEPS=$REPO/target/pydeps
if ! PYTHONPATH=$PYDEPS python3 -c 'import prometheus_client' 2>/dev/null; then
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check \
        --target "$PYDEPS" prometheus_client ||
        die "cannot install the Python prometheus_client package"
fi

start_server -l 127.0.0.1:0=admin -l 127.0.0.1:0=echo
admin_port=$(port_of admin)
echo_port=$(port_of echo)
printf 'hello' | nc_send 127.0.0.1 "$echo_port" >/dev/null

curl -sS --max-time 5 -D "$TMP/headers" -o "$TMP/body" "http://127.0.0.1:$admin_port/metrics"
check "curl exits 0" 0 "$?"
check_match "HTTP status 200" "^HTTP/1.0 200 OK" "$TMP/headers"
check_match "OpenMetrics media type" "^Content-Type: application/openmetrics-text" "$TMP/headers"

parsed=$(PYTHONPATH=$PYDEPS python3 - "$TMP/body" <<'PY'
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
families = {f.name: f for f in text_string_to_metric_families(open(sys.argv[1]).read())}
for name in ["tcp_reactor_connections", "tcp_reactor_accepted", "tcp_reactor_closed",
             "tcp_reactor_received_bytes", "tcp_reactor_user_buffer_bytes",
             "tcp_reactor_log_lines_dropped", "tcp_reactor_poll_iterations"]:
    if name not in families:
        sys.exit(f"missing family {name}")
received = {s.labels.get("service"): s.value for s in families["tcp_reactor_received_bytes"].samples
            if s.name.endswith("_total")}
print(f"families={len(families)} echo_received={int(received.get('echo', -1))}")
PY
)
check "the parser reads every family" 0 "$?"
check "echo's 5 bytes are counted" "echo_received=5" "${parsed##* }"

code=$(curl -s --max-time 5 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$admin_port/nope")
check "another path is 404" 404 "$code"
check_alive "the server is still running"
finish
