#!/usr/bin/env bash
#
# The Prometheus endpoint as scrapers see it. A real HTTP client (curl)
# fetches GET /metrics from the admin port twice: once as a plain scraper
# (no Accept header), which must get the Prometheus text format 0.0.4, read
# by the official Python prometheus_client text parser with every counter a
# counter; and once asking for OpenMetrics as Prometheus does, read by that
# library's OpenMetrics parser. Prometheus's own linter (`promtool check
# metrics`, from the Debian package `prometheus`) must pass on the plain
# answer, and two scrapes list their series in the same order.
#
# Run by scripts/test.sh. Installs prometheus_client with pip (into a private
# directory) if it is missing, and promtool with apt-get when run as root
# (otherwise that one check is skipped, saying why). Loopback only; stops by
# itself.

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
if ! command -v promtool >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "# installing promtool (Debian package prometheus, without starting it)"
    { apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; } \
        </dev/null >"$TMP/apt.log" 2>&1 || sed 's/^/    /' "$TMP/apt.log"
fi

start_server -l 127.0.0.1:0=admin -l 127.0.0.1:0=echo
admin_port=$(port_of admin)
echo_port=$(port_of echo)
printf 'hello' | nc_send 127.0.0.1 "$echo_port" >/dev/null
url=http://127.0.0.1:$admin_port/metrics

# --- A plain scraper: the text format 0.0.4 ----------------------------------
curl -sS --max-time 5 -D "$TMP/headers" -o "$TMP/plain" "$url"
check "curl exits 0" 0 "$?"
check_match "HTTP status 200" "^HTTP/1.[01] 200 OK" "$TMP/headers"
check_match "text format 0.0.4 media type" "^Content-Type: text/plain; version=0.0.4" "$TMP/headers"
check_no_match "no # EOF in the text format" "^# EOF" "$TMP/plain"

parsed=$(PYTHONPATH=$PYDEPS python3 - "$TMP/plain" <<'PY'
import sys
from prometheus_client.parser import text_string_to_metric_families
families = {f.name: f for f in text_string_to_metric_families(open(sys.argv[1]).read())}
bad = [f"{n}: {f.type}" for n, f in families.items() if f.type in ("unknown", "untyped")]
if bad:
    sys.exit("untyped families: " + ", ".join(bad))
for name in ["tcp_reactor_accepted", "tcp_reactor_closed", "tcp_reactor_received_bytes",
             "tcp_reactor_log_lines_dropped", "tcp_reactor_poll_iterations",
             "process_cpu_seconds"]:
    if families.get(name) is None or families[name].type != "counter":
        sys.exit(f"{name} is not a counter family")
for name in ["tcp_reactor_connections", "tcp_reactor_user_buffer_bytes",
             "process_resident_memory_bytes", "process_virtual_memory_bytes",
             "process_open_fds", "process_max_fds", "process_start_time_seconds"]:
    if families.get(name) is None or families[name].type != "gauge":
        sys.exit(f"{name} is not a gauge family")
received = {s.labels.get("service"): s.value for s in families["tcp_reactor_received_bytes"].samples}
print(f"families={len(families)} echo_received={int(received.get('echo', -1))}")
PY
)
check "the text parser reads counters as counters and gauges as gauges" 0 "$?"
echo "# text format: ${parsed}"
check "echo's 5 bytes are counted" "echo_received=5" "${parsed##* }"

if command -v promtool >/dev/null; then
    promtool check metrics <"$TMP/plain" >"$TMP/promtool" 2>&1
    status=$?
    sed 's/^/    promtool: /' "$TMP/promtool"
    check "promtool check metrics passes" 0 "$status"
else
    skip "promtool check metrics" "promtool is not installed (Debian package prometheus)"
fi

curl -sS --max-time 5 -o "$TMP/plain2" "$url"
sed -E 's/ [0-9.e+-]+$//' "$TMP/plain" >"$TMP/series1"
sed -E 's/ [0-9.e+-]+$//' "$TMP/plain2" >"$TMP/series2"
check_file "two scrapes list the same series in the same order" "$TMP/series1" "$TMP/series2"

# --- Prometheus's own Accept: OpenMetrics ------------------------------------
accept='application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1'
curl -sS --max-time 5 -H "Accept: $accept" -D "$TMP/headers.om" -o "$TMP/om" "$url"
check "curl exits 0 (OpenMetrics)" 0 "$?"
check_match "OpenMetrics media type" "^Content-Type: application/openmetrics-text" "$TMP/headers.om"
parsed=$(PYTHONPATH=$PYDEPS python3 - "$TMP/om" <<'PY'
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
families = {f.name: f for f in text_string_to_metric_families(open(sys.argv[1]).read())}
for name in ["tcp_reactor_connections", "tcp_reactor_accepted", "tcp_reactor_closed",
             "tcp_reactor_received_bytes", "process_cpu_seconds", "process_open_fds"]:
    if name not in families:
        sys.exit(f"missing family {name}")
received = {s.labels.get("service"): s.value for s in families["tcp_reactor_received_bytes"].samples
            if s.name.endswith("_total")}
print(f"families={len(families)} echo_received={int(received.get('echo', -1))}")
PY
)
check "the OpenMetrics parser reads every family" 0 "$?"
echo "# OpenMetrics: ${parsed}"
check "echo's 5 bytes are counted (OpenMetrics)" "echo_received=5" "${parsed##* }"

code=$(curl -s --max-time 5 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$admin_port/nope")
check "another path is 404" 404 "$code"
check_alive "the server is still running"
finish
