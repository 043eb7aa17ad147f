#!/usr/bin/env bash
# Runs a command beside a throwaway PostgreSQL server:
#   scripts/with-postgres.sh CMD [ARGS...]
# Installs Debian's postgresql package when it is missing, creates a
# cluster in a temporary directory (initdb as the unprivileged `postgres`
# user: PostgreSQL refuses to run as root), starts it on a free loopback
# port, creates the database `zrpc`, exports
#   ZRPC_TEST_POSTGRES=postgres://zrpc:zrpc@127.0.0.1:PORT/zrpc
# for CMD, and stops the server and removes the directory when CMD ends,
# whatever its outcome. Exits with CMD's status.
set -euo pipefail
cd "$(dirname "$0")/.."

pg_bin() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [ -n "$d" ] && [ -x "$d/initdb" ] && echo "$d"
}

if ! bin=$(pg_bin); then
  echo "installing postgresql (Debian package)"
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: postgresql is not installed and installing it needs root (apt-get install postgresql)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq postgresql >/dev/null
  bin=$(pg_bin)
fi

# As root the cluster belongs to `postgres` (the package creates it);
# otherwise to whoever runs this.
run_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

dir=$(mktemp -d /tmp/zrpc-pg.XXXXXX)
chmod 755 "$dir"
[ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

cleanup() {
  run_pg "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT

run_pg "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
  || { cat "$dir/initdb.log"; exit 1; }
# Loopback only; the socket directory is ours too. Enough connections for
# several instances' pools.
run_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
  -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=200 -c fsync=off" start >/dev/null \
  || { cat "$dir/server.log"; exit 1; }
run_pg "$bin/psql" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres \
  -c "CREATE ROLE zrpc LOGIN CREATEDB PASSWORD 'zrpc'" -c "CREATE DATABASE zrpc OWNER zrpc" >/dev/null

export ZRPC_TEST_POSTGRES="postgres://zrpc:zrpc@127.0.0.1:$port/zrpc"
echo "PostgreSQL on 127.0.0.1:$port (data in $dir)"
set +e
"$@"
status=$?
set -e
exit $status
