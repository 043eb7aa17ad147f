#!/usr/bin/env bash
# Runs a command beside a throwaway PostgreSQL server:
#   scripts/with-postgres.sh CMD [ARGS...]
# Installs Debian's postgresql package when it is missing, creates a
# cluster in a temporary directory (owned by the unprivileged `postgres`
# user), starts it on a free loopback port without fsync (its data is
# thrown away), exports
#   ZRPC_TEST_POSTGRES=postgres://zrpc:zrpc@127.0.0.1:PORT/zrpc
# for CMD, and stops the server and removes the directory when CMD ends,
# whatever its outcome. Exits with CMD's status.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/postgres.sh

pg_install
dir=$(mktemp -d /tmp/zrpc-pg.XXXXXX)
cleanup() {
  pg_stop "$dir"
  rm -rf "$dir"
}
trap cleanup EXIT
port=$(free_port)
pg_start "$dir" "$port" "-c fsync=off"

export ZRPC_TEST_POSTGRES
ZRPC_TEST_POSTGRES=$(pg_url "$port")
echo "PostgreSQL on 127.0.0.1:$port (data in $dir)"
set +e
"$@"
status=$?
set -e
exit $status
