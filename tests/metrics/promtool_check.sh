#!/usr/bin/env bash
# Starts metrics_demo_server, fetches its live /metrics over HTTP and lints it with
# `promtool check metrics`. Fails on a parse error and on any lint finding not listed in
# KNOWN_FINDINGS; exits 77 (CTest: skipped) only when
# promtool is not installed (Debian package "prometheus", installed by deploy/install-deps.sh).
#   promtool_check.sh PATH/TO/metrics_demo_server
set -euo pipefail

server=$1

# Lint findings we accept on purpose: none. (Pool capacity gauges are *_capacity, not *_total,
# which promtool reserves for counters.)
KNOWN_FINDINGS=()
if ! command -v promtool >/dev/null 2>&1; then
  echo "SKIPPED: promtool not found; install the Debian package 'prometheus' (deploy/install-deps.sh)"
  exit 77
fi

workdir=$(mktemp -d)
"$server" --port_file="$workdir/port" --serve_seconds=60 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$workdir"' EXIT

for _ in $(seq 1 100); do
  [ -s "$workdir/port" ] && break
  kill -0 "$pid" 2>/dev/null || { echo "FAIL: metrics_demo_server exited early"; exit 1; }
  sleep 0.1
done
[ -s "$workdir/port" ] || { echo "FAIL: metrics_demo_server did not report a port"; exit 1; }
port=$(cat "$workdir/port")

python3 - "$port" >"$workdir/metrics.txt" <<'PY'
import sys
import urllib.request

with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=10) as response:
    content_type = response.headers["Content-Type"]
    if content_type != "text/plain; version=0.0.4; charset=utf-8":
        sys.exit(f"FAIL: unexpected Content-Type {content_type!r}")
    sys.stdout.write(response.read().decode("utf-8"))
PY

echo "fetched $(grep -vc '^#' "$workdir/metrics.txt") samples from 127.0.0.1:$port/metrics"
status=0
promtool check metrics <"$workdir/metrics.txt" >"$workdir/promtool.out" 2>&1 || status=$?
cat "$workdir/promtool.out"
# promtool exits 3 when it only has lint findings, 1 when the text does not parse.
unexpected=$(grep -vxF -f <(printf '%s\n' "${KNOWN_FINDINGS[@]}") "$workdir/promtool.out" || true)
if { [ "$status" -ne 0 ] && [ "$status" -ne 3 ]; } || [ -n "$unexpected" ]; then
  echo "FAIL: promtool check metrics exited $status; unexpected findings:"
  echo "$unexpected"
  exit 1
fi
if [ -s "$workdir/promtool.out" ]; then
  echo "PASS: promtool check metrics: parses; only the known findings above"
else
  echo "PASS: promtool check metrics found no problems"
fi
