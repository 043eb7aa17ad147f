# PostgreSQL helpers for the scripts (source this file):
#   pg_install            Debian's postgresql when missing; sets $PG_BIN
#   pg_start DIR PORT     a new cluster in DIR/data on 127.0.0.1:PORT, with
#                         the role and database `zrpc` (password `zrpc`)
#   pg_stop DIR           stops it (the directory stays)
#   pg_url PORT           postgres://zrpc:zrpc@127.0.0.1:PORT/zrpc
#   free_port             a free loopback TCP port
# As root, the cluster belongs to the unprivileged `postgres` user (the
# package creates it): PostgreSQL refuses to run as root.

pg_find() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [ -n "$d" ] && [ -x "$d/initdb" ] && echo "$d"
}

pg_install() {
  if PG_BIN=$(pg_find); then return 0; fi
  echo "installing postgresql (Debian package)"
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: postgresql is not installed and installing it needs root (apt-get install postgresql)" >&2
    return 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  PG_BIN=$(pg_find)
}

pg_as_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# free_port: a port free on 127.0.0.1 now, below the kernel's ephemeral
# range. A port the kernel handed out (bind to port 0) is in that range, so
# while its server is down (a restart) an outgoing connection may take it
# as its local port, and the server cannot bind it again (EADDRINUSE: seen
# in the rolling restart). Below the range, only another listener can.
free_port() {
  python3 - <<'PY'
import random, socket
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
for _ in range(200):
    port = random.randrange(10000, max(low, 10001))
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        s.close()
    print(port)
    break
else:
    raise SystemExit("no free port below the ephemeral range")
PY
}

pg_url() {
  echo "postgres://zrpc:zrpc@127.0.0.1:$1/zrpc"
}

# pg_start DIR PORT [EXTRA_SERVER_OPTIONS]
pg_start() {
  local dir=$1 port=$2 extra=${3:-}
  mkdir -p "$dir"
  chmod 755 "$dir"
  if [ "$(id -u)" -eq 0 ]; then chown postgres: "$dir"; fi
  pg_as_owner "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
    >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; return 1; }
  # Loopback only; the socket directory is ours too; enough connections
  # for several instances' pools.
  pg_as_owner "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=200 $extra" start >/dev/null \
    || { cat "$dir/server.log" >&2; return 1; }
  pg_as_owner "$PG_BIN/psql" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres \
    -c "CREATE ROLE zrpc LOGIN CREATEDB PASSWORD 'zrpc'" -c "CREATE DATABASE zrpc OWNER zrpc" >/dev/null
}

pg_stop() {
  pg_as_owner "$PG_BIN/pg_ctl" -D "$1/data" -m fast -w stop >/dev/null 2>&1 || true
}
