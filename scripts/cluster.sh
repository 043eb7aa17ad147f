#!/usr/bin/env bash
# Several `zrpc serve` instances behind nginx, on one shared PostgreSQL,
# all on loopback ports, for trying a deployment and for the rolling
# restart test:
#   scripts/cluster.sh up [N]     PostgreSQL, N instances (default 3), nginx
#   scripts/cluster.sh status     what runs, each instance's /healthz
#   scripts/cluster.sh restart I  SIGTERM instance I (1..N), wait until it
#                                 has drained and exited, start it again,
#                                 wait until its /healthz says SERVING
#   scripts/cluster.sh down       stops everything (the data goes too)
# Installs Debian's nginx and postgresql when missing. Its state lives in
# $ZRPC_CLUSTER_DIR (default /tmp/zrpc-cluster): ports in `env`, logs,
# pid files. The zrpc binary is $ZRPC_BIN (default: target/release/zrpc,
# built when missing). Clients connect to ws://127.0.0.1:$NGINX_PORT/.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
. scripts/lib/postgres.sh

state=${ZRPC_CLUSTER_DIR:-/tmp/zrpc-cluster}
zrpc=${ZRPC_BIN:-$root/target/release/zrpc}

nginx_install() {
  command -v nginx >/dev/null 2>&1 && return 0
  echo "installing nginx (Debian package)"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null
}

# health PORT: the instance's /healthz status code (000: no answer).
health() {
  curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$1/healthz" || true
}

# start_instance I: runs instance I on its port, in the background.
start_instance() {
  local i=$1 port_var="PORT_$1"
  local port=${!port_var}
  # Behind nginx every connection comes from nginx's address: the
  # per-client limit is nginx's (deploy/nginx.conf).
  "$zrpc" serve --addr "127.0.0.1:$port" --db "$DB_URL" --db-pool 8 --web \
    --max-connections-per-ip 10000 --call-log debug \
    >>"$state/zrpc-$i.log" 2>&1 &
  echo $! >"$state/zrpc-$i.pid"
  local tries=0
  until [ "$(health "$port")" = 200 ]; do
    tries=$((tries + 1))
    if [ $tries -gt 100 ] || ! alive "$(cat "$state/zrpc-$i.pid")"; then
      echo "instance $i did not come up on port $port:" >&2
      tail -20 "$state/zrpc-$i.log" >&2
      return 1
    fi
    sleep 0.05
  done
}

# alive PID: the process runs (an exited one whose parent, this script's
# earlier run, is gone can linger as a zombie until init reaps it).
alive() {
  local st
  st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$st" ] && [ "$st" != Z ]
}

# stop_instance I: SIGTERM, then wait for the drain and the exit (bounded).
stop_instance() {
  local pid
  pid=$(cat "$state/zrpc-$1.pid" 2>/dev/null) || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  local tries=0
  while alive "$pid"; do
    tries=$((tries + 1))
    if [ $tries -gt 300 ]; then
      echo "instance $1 did not exit within 15 s of SIGTERM; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.05
  done
  rm -f "$state/zrpc-$1.pid"
}

up() {
  local n=${1:-3}
  if [ -f "$state/env" ]; then
    echo "a cluster is already up ($state); run: scripts/cluster.sh down" >&2
    exit 1
  fi
  command -v curl >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl >/dev/null; }
  nginx_install
  pg_install
  [ -x "$zrpc" ] || cargo build --release -p zrpc-cli
  mkdir -p "$state/nginx"
  local pg_port nginx_port upstreams=""
  pg_port=$(free_port)
  nginx_port=$(free_port)
  {
    echo "N=$n"
    echo "PG_PORT=$pg_port"
    echo "DB_URL=$(pg_url "$pg_port")"
    echo "NGINX_PORT=$nginx_port"
    for i in $(seq 1 "$n"); do
      local p
      p=$(free_port)
      echo "PORT_$i=$p"
      upstreams+="        server 127.0.0.1:$p max_fails=0;"$'\n'
    done
  } >"$state/env"
  . "$state/env"
  pg_start "$state/pg" "$PG_PORT"
  for i in $(seq 1 "$n"); do start_instance "$i"; done
  UPSTREAMS="$upstreams" python3 - "$root/deploy/nginx.conf" "$state/nginx/nginx.conf" "$state/nginx" "127.0.0.1:$NGINX_PORT" <<'PY'
import os, sys
src, dst, prefix, listen = sys.argv[1:5]
text = open(src).read()
text = text.replace("@PREFIX@", prefix).replace("@LISTEN@", listen)
text = text.replace("@UPSTREAMS@", os.environ["UPSTREAMS"].rstrip("\n"))
open(dst, "w").write(text)
PY
  nginx -c "$state/nginx/nginx.conf" -p "$state/nginx" -g "user $(id -un);" 2>"$state/nginx/start.log" \
    || { cat "$state/nginx/start.log" >&2; exit 1; }
  local tries=0
  until [ "$(health "$NGINX_PORT")" = 200 ]; do
    tries=$((tries + 1))
    [ $tries -le 100 ] || { echo "nginx did not come up" >&2; cat "$state/nginx/error.log" >&2; exit 1; }
    sleep 0.05
  done
  echo "cluster up: ws://127.0.0.1:$NGINX_PORT/ -> $n instances, PostgreSQL $DB_URL (state in $state)"
}

status() {
  [ -f "$state/env" ] || { echo "no cluster ($state)"; return 1; }
  . "$state/env"
  echo "nginx ws://127.0.0.1:$NGINX_PORT/ /healthz $(health "$NGINX_PORT")"
  for i in $(seq 1 "$N"); do
    local port_var="PORT_$i" pid
    pid=$(cat "$state/zrpc-$i.pid" 2>/dev/null || echo -)
    echo "instance $i 127.0.0.1:${!port_var} pid $pid /healthz $(health "${!port_var}")"
  done
  echo "PostgreSQL $DB_URL"
}

restart() {
  . "$state/env"
  stop_instance "$1"
  start_instance "$1"
}

down() {
  [ -f "$state/env" ] || { echo "no cluster ($state)"; return 0; }
  . "$state/env"
  if [ -f "$state/nginx/nginx.pid" ]; then
    nginx -c "$state/nginx/nginx.conf" -p "$state/nginx" -s stop 2>/dev/null || true
  fi
  for i in $(seq 1 "$N"); do stop_instance "$i"; done
  PG_BIN=$(pg_find) && pg_stop "$state/pg"
  rm -rf "$state"
  echo "cluster down"
}

cmd=${1:-}
shift || true
case "$cmd" in
  up) up "$@" ;;
  status) status ;;
  restart) restart "$1" ;;
  down) down ;;
  *) sed -n '2,15p' "$0"; exit 2 ;;
esac
