#!/usr/bin/env bash
# Starts (or stops) a private PostgreSQL 15 and Redis 7 on 127.0.0.1, in a temporary
# directory, for the test suite. Never touches a server it did not start.
#
#   eval "$(scripts/test-servers.sh start)"   # prints export lines: PENGUIFLOW_TEST_PG_URL, ...
#   scripts/test-servers.sh stop              # stops what `start` started (uses $PENGUIFLOW_TEST_SERVERS_DIR)
set -euo pipefail

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

PGBIN=/usr/lib/postgresql/15/bin

# If `start` fails half way, stop what it started and say why (the logs go to stderr).
STARTING=
on_exit() {
  local rc=$?
  if [ "$rc" -ne 0 ] && [ -n "$STARTING" ]; then
    echo "test-servers: could not start the test servers (exit $rc); their logs:" >&2
    cat "$STARTING/redis.log" "$STARTING/pg/log" >&2 2>/dev/null || true
    stop "$STARTING" >&2
  fi
}
trap on_exit EXIT

start() {
  local dir; dir=$(mktemp -d /tmp/penguiflow-servers.XXXXXX)
  STARTING=$dir
  chmod 755 "$dir"
  local pg_port redis_port
  pg_port=$(free_port); redis_port=$(free_port)

  # Redis: no persistence needed by most tests; AOF is configured per test when it matters.
  redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$dir" --daemonize yes \
    --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --save "" --appendonly no >/dev/null
  # PostgreSQL refuses to run as root: run the cluster as the postgres OS user.
  local as_pg=()
  if [ "$(id -u)" -eq 0 ]; then as_pg=(runuser -u postgres --); fi
  mkdir -p "$dir/pg"
  [ "$(id -u)" -eq 0 ] && chown postgres "$dir/pg"
  "${as_pg[@]}" "$PGBIN/initdb" -D "$dir/pg/data" -U postgres -A trust --no-sync >/dev/null
  "${as_pg[@]}" "$PGBIN/pg_ctl" -D "$dir/pg/data" -l "$dir/pg/log" -w -t 60 \
    -o "-p $pg_port -k $dir/pg -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null
  local up=0
  for _ in $(seq 1 100); do
    if redis-cli -p "$redis_port" ping >/dev/null 2>&1; then up=1; break; fi
    sleep 0.1
  done
  [ "$up" = 1 ] || { echo "test-servers: redis-server did not answer on 127.0.0.1:$redis_port" >&2; exit 1; }
  psql -h 127.0.0.1 -p "$pg_port" -U postgres -qc "create database penguiflow_test" >/dev/null
  cat <<EOT
export PENGUIFLOW_TEST_SERVERS_DIR=$dir
export PENGUIFLOW_TEST_PG_URL=postgresql://postgres@127.0.0.1:$pg_port/penguiflow_test
export PENGUIFLOW_TEST_PG_PORT=$pg_port
export PENGUIFLOW_TEST_REDIS_URL=redis://127.0.0.1:$redis_port/0
export PENGUIFLOW_TEST_REDIS_PORT=$redis_port
EOT
  STARTING=
}

stop() {
  local dir=${1:-${PENGUIFLOW_TEST_SERVERS_DIR:-}}
  [ -n "$dir" ] && [ -d "$dir" ] || return 0
  if [ -f "$dir/redis.pid" ]; then kill "$(cat "$dir/redis.pid")" 2>/dev/null || true; fi
  if [ -d "$dir/pg/data" ]; then
    local as_pg=(); [ "$(id -u)" -eq 0 ] && as_pg=(runuser -u postgres --)
    "${as_pg[@]}" "$PGBIN/pg_ctl" -D "$dir/pg/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
}

case "${1:-}" in
  start) start ;;
  stop) shift; stop "$@" ;;
  *) echo "usage: $0 start|stop [dir]" >&2; exit 2 ;;
esac
