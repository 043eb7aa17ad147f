#!/usr/bin/env bash
# Throughput of 1, 2 and 3 instances behind nginx, and what nginx costs
# against a direct connection (not part of the test command):
#   scripts/cluster-bench.sh [SECS]     (default 5 per measurement)
# Each row: the cluster driver's unary calls/s and p99 with 64 connections
# of echo.Echo/Say (no database), 16 connections of people CreatePerson
# (a PostgreSQL commit each), and 1,000 connections of echo. Everything
# shares this machine's cores: the instances, nginx, PostgreSQL and the
# driver.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
export ZRPC_BIN=${ZRPC_BIN:-$PWD/target/release/zrpc}
driver=${CLUSTER_BIN:-$PWD/target/release/examples/cluster}
cargo build --release -p zrpc-cli --bin zrpc --example cluster
export ZRPC_CLUSTER_DIR
ZRPC_CLUSTER_DIR=$(mktemp -d /tmp/zrpc-bench.XXXXXX)
rmdir "$ZRPC_CLUSTER_DIR"
trap 'bash scripts/cluster.sh down >/dev/null' EXIT

measure() { # URL MIX WORKERS -> "calls/s, p99 ms"
  "$driver" --url "$1" --secs "$secs" --workers "$3" --mix "$2" --tag "b$RANDOM" |
    python3 -c 'import json,sys
d = json.load(sys.stdin)
assert not d["unary_failed"], d["unary_failed"][:3]
print("%.0f calls/s, p99 %.1f ms" % (d["unary_per_s"], d["p99_us"] / 1000))'
}

echo "| path | echo, 64 connections | CreatePerson, 16 connections | echo, 1,000 connections |"
echo "|---|---|---|---|"
for n in 1 2 3; do
  bash scripts/cluster.sh up "$n" >/dev/null
  . "$ZRPC_CLUSTER_DIR/env"
  if [ "$n" = 1 ]; then
    direct="ws://127.0.0.1:$PORT_1/"
    echo "| direct to 1 instance | $(measure "$direct" echo 64) | $(measure "$direct" unary 16) | $(measure "$direct" echo 1000) |"
  fi
  via="ws://127.0.0.1:$NGINX_PORT/"
  echo "| nginx, $n instance(s) | $(measure "$via" echo 64) | $(measure "$via" unary 16) | $(measure "$via" echo 1000) |"
  bash scripts/cluster.sh down >/dev/null
done
