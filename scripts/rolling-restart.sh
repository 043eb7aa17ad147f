#!/usr/bin/env bash
# The rolling restart test: 3 instances of `zrpc serve` behind nginx on one
# PostgreSQL (scripts/cluster.sh), continuous mixed load through nginx
# (zrpc-cli's `cluster` example: CreatePerson, ListPeople, ImportPeople,
# CreatePeople), and each instance in turn gets SIGTERM, drains, exits and
# starts again. Fails unless:
#   - no unary call failed;
#   - every confirmed write is in PostgreSQL exactly once, nothing is there
#     twice, and nothing is there that was not sent;
#   - every stream completed or ended with a status the driver handled
#     (ListPeople resumed from its last id, in order);
#   - in Chromium, 3 pages of the people web app (through nginx, creating
#     people as the load runs) keep their live lists exact: every person in
#     PostgreSQL once, in order; no create of theirs fails; each shows its
#     reconnecting state (clients/js/test/rolling-browser.ts; skipped with
#     ROLLING_BROWSER=0, or when the TypeScript tests are not built).
# Reports calls/s and p99 through the restarts against a run without
# restarts (same cluster, same session).
#   scripts/rolling-restart.sh [LOAD_SECS]   (default 10, for each of the two runs)
# Binaries: $ZRPC_BIN and $CLUSTER_BIN (default target/release/...,
# built when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
secs=${1:-10}
export ZRPC_BIN=${ZRPC_BIN:-$root/target/release/zrpc}
driver=${CLUSTER_BIN:-$root/target/release/examples/cluster}
if [ ! -x "$ZRPC_BIN" ] || [ ! -x "$driver" ]; then
  cargo build --release -p zrpc-cli --bin zrpc --example cluster
fi

export ZRPC_CLUSTER_DIR
ZRPC_CLUSTER_DIR=$(mktemp -d /tmp/zrpc-rolling.XXXXXX)
rmdir "$ZRPC_CLUSTER_DIR"
work=$(mktemp -d)
trap 'bash scripts/cluster.sh down >/dev/null; rm -rf "$work"' EXIT
bash scripts/cluster.sh up 3
. "$ZRPC_CLUSTER_DIR/env"
url="ws://127.0.0.1:$NGINX_PORT/"

# Both runs start from an empty graph (ListPeople's cost grows with it).
# The ids restart at 1 under the running instances, whose listeners saw
# the first run's ids: each must notice, or a page watching through it
# misses the people created until the ids pass the first run's again.
empty() {
  PGPASSWORD=zrpc psql -q -h 127.0.0.1 -p "$PG_PORT" -U zrpc -d zrpc \
    -c "TRUNCATE edges, vertices RESTART IDENTITY" >/dev/null
}

# The Chromium pages (both runs, so both load the machine alike):
# browser_start MODE opens them and waits until they watch; browser_check
# stops their creates and compares their lists with PostgreSQL.
browser_js=$root/clients/js/dist-test/test/rolling-browser.js
browser=0
[ "${ROLLING_BROWSER:-1}" != 0 ] && [ -f "$browser_js" ] && browser=1
browser_failed=0
browser_start() {
  [ "$browser" = 1 ] || return 0
  coproc BROWSER { node "$browser_js" "$url" 3 "$1"; }
  browser_pid=$BROWSER_PID
  # Own copies of its pipes: bash drops the coproc's once it exits.
  exec {b_out}<&"${BROWSER[0]}" {b_in}>&"${BROWSER[1]}"
  read -r ready <&"$b_out"
  [ "$ready" = ready ] || { echo "FAIL: the Chromium pages did not start" >&2; exit 1; }
}
browser_check() {
  [ "$browser" = 1 ] || return 0
  echo stop >&"$b_in"
  read -r stopped <&"$b_out"
  [ "$stopped" = stopped ] || echo "FAIL: the Chromium pages did not stop: $stopped" >&2
  PGPASSWORD=zrpc psql -h 127.0.0.1 -p "$PG_PORT" -U zrpc -d zrpc -tA \
    -c "SELECT id FROM vertices WHERE label = 'person' ORDER BY id" >"$work/ids.txt"
  echo "$work/ids.txt" >&"$b_in"
  exec {b_in}>&-
  cat <&"$b_out"
  exec {b_out}<&-
  wait "$browser_pid" || browser_failed=1
}

echo "baseline: $secs s of load, no restart"
empty
browser_start steady
"$driver" --url "$url" --secs "$secs" --workers 8 --tag base >"$work/base.json"
browser_check

echo "rolling restart: $secs s of load; instances 1, 2, 3 restarted in turn"
empty
browser_start restarts
"$driver" --url "$url" --secs "$secs" --workers 8 --tag roll >"$work/roll.json" &
load=$!
load_t0=$(date +%s.%N)
# The restarts spread over the run: the first after 1.5 s (the load has
# reached every instance), then one every (LOAD_SECS - 3) / 3 seconds.
gap=$(awk -v s="$secs" 'BEGIN { print (s - 3) / 3 }')
sleep 1.5
for i in 1 2 3; do
  [ "$i" = 1 ] || sleep "$gap"
  t0=$(date +%s.%N)
  bash scripts/cluster.sh restart "$i"
  printf '  instance %s restarted in %.2f s, %.2f s into the run\n' "$i" \
    "$(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN { print a - b }')" \
    "$(awk -v a="$t0" -v b="$load_t0" 'BEGIN { print a - b }')"
done
if ! kill -0 "$load" 2>/dev/null; then
  echo "FAIL: the load ended before the restarts did (raise LOAD_SECS)" >&2
  exit 1
fi
wait "$load"

browser_check

# What PostgreSQL holds of this run, one name a line.
PGPASSWORD=zrpc psql -h 127.0.0.1 -p "$PG_PORT" -U zrpc -d zrpc -tA \
  -c "SELECT name FROM vertices WHERE name LIKE 'roll-%'" >"$work/stored.txt"

python3 - "$work/base.json" "$work/roll.json" "$work/stored.txt" "$secs" <<'PY'
import collections, json, sys
base = json.load(open(sys.argv[1]))
roll = json.load(open(sys.argv[2]))
stored = collections.Counter(l for l in open(sys.argv[3]).read().split("\n") if l)
confirmed, uncertain = set(roll["confirmed"]), set(roll["uncertain"])
problems = []
if roll["unary_failed"]:
    problems.append(f"{len(roll['unary_failed'])} unary calls failed: {roll['unary_failed'][:5]}")
twice = [n for n, c in stored.items() if c > 1]
if twice:
    problems.append(f"{len(twice)} names stored more than once: {twice[:5]}")
missing = [n for n in confirmed if n not in stored]
if missing:
    problems.append(f"{len(missing)} confirmed writes missing: {missing[:5]}")
phantom = [n for n in stored if n not in confirmed and n not in uncertain]
if phantom:
    problems.append(f"{len(phantom)} stored names never sent: {phantom[:5]}")
if roll["order_errors"]:
    problems.append(f"{roll['order_errors']} stream reads out of order")
if base["unary_failed"]:
    problems.append(f"the baseline failed calls: {base['unary_failed'][:5]}")
handled = collections.Counter(h.split(":")[0] + ": " + h.split(":", 2)[-1].strip()[:60] for h in roll["handled"])
print(f"  writes: {len(confirmed)} confirmed, all stored once; {len(uncertain)} uncertain "
      f"({sum(1 for n in uncertain if n in stored)} stored)")
print(f"  streams: {roll['streams_completed']} completed ({roll['streams_resumed']} after resuming); "
      f"imports {roll['imports_ok']}, bidi {roll['bidi_ok']}; handled endings: {dict(handled) or 'none'}")
ratio = roll["unary_per_s"] / base["unary_per_s"] if base["unary_per_s"] else 0
print(f"  unary calls/s {roll['unary_per_s']} vs {base['unary_per_s']} without restarts ({ratio:.2f}x); "
      f"p99 {roll['p99_us'] / 1000:.1f} ms vs {base['p99_us'] / 1000:.1f} ms "
      f"({roll['p99_us'] / max(base['p99_us'], 1):.2f}x); failed unary calls: {len(roll['unary_failed'])}")
window = int(float(sys.argv[4]) * 4)
in_window = lambda run: sum(run["per_quarter"][:window])
print(f"  unary calls completed within the load window: {in_window(roll)} vs {in_window(base)} "
      f"({in_window(roll) / max(in_window(base), 1):.2f}x)")
print(f"  slowest unary, ListPeople, ImportPeople, CreatePeople (ms): "
      f"{[round(u / 1000, 1) for u in roll['slowest_us']]} vs {[round(u / 1000, 1) for u in base['slowest_us']]}")
print(f"  unary calls per quarter second, with restarts: {roll['per_quarter']}")
print(f"  without: {base['per_quarter']}")
if problems:
    print("FAIL:\n  " + "\n  ".join(problems), file=sys.stderr)
    sys.exit(1)
print("rolling restart: no failed call, every write exactly once")
PY
[ "$browser_failed" = 0 ] || exit 1
