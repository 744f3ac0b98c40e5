#!/usr/bin/env bash
# PostgreSQL 15 + PostGIS 3 from Debian packages; one cluster under the state folder, on loopback.
# The server runs as the `postgres` OS user (initdb refuses root). The application role `earthgptx` owns the
# `earthgptx` database; PostGIS is installed in template1 too, so databases that tests create have it.
source "$(dirname "$0")/common.sh"

# The server runs as `postgres`, which must be able to reach its data folder. When the state folder lies under a
# directory that user cannot traverse (a clone under /root, say), the cluster lives in /var/tmp instead and
# .stack/postgres is a link to it, so the state still has one entry point.
resolve_pg_state() {
  local here="$EGX_STATE_DIR/postgres"
  if [[ -L "$here" ]]; then readlink "$here"; return; fi
  if runuser -u postgres -- test -x "$EGX_STATE_DIR" 2>/dev/null; then echo "$here"; return; fi
  local alt; alt="/var/tmp/earthgptx-postgres-$(printf '%s' "$EGX_STATE_DIR" | sha256sum | cut -c1-12)"
  mkdir -p "$alt"
  rm -rf "$here" && ln -s "$alt" "$here"
  say "postgres cannot traverse $EGX_STATE_DIR; its cluster lives in $alt (linked from $here)"
  echo "$alt"
}
PG_STATE="$(resolve_pg_state)"
PGDATA="$PG_STATE/data"
SOCKET_DIR="$PG_STATE/socket"
PG_LOG="$PG_STATE/postgres.log"

install() {
  if [[ -x "$EGX_PG_BIN/postgres" && -f /usr/share/postgresql/15/extension/postgis.control ]]; then return; fi
  say "installing postgresql-15 and postgresql-15-postgis-3 (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends postgresql-15 postgresql-15-postgis-3 >/dev/null
  # The Debian package starts its own cluster on 5432; this stack does not use it.
  pg_ctlcluster 15 main stop >/dev/null 2>&1 || true
}

as_pg() { runuser -u postgres -- "$@"; }

psql_admin() { PGOPTIONS="-c client_min_messages=warning" as_pg "$EGX_PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCKET_DIR" -p "$EGX_PG_PORT" -U postgres "$@"; }

init_cluster() {
  mkdir -p "$PG_STATE" "$SOCKET_DIR" "$LOG_DIR"
  chown postgres:postgres "$PG_STATE" "$SOCKET_DIR"
  touch "$PG_LOG"; chown postgres:postgres "$PG_LOG"
  ln -sfn "$PG_LOG" "$LOG_DIR/postgres.log"
  if [[ -f "$PGDATA/PG_VERSION" ]]; then return; fi
  say "initialising cluster in $PGDATA"
  as_pg "$EGX_PG_BIN/initdb" -D "$PGDATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    -E UTF8 --locale=C.UTF-8 >/dev/null
  cat >> "$PGDATA/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $EGX_PG_PORT
unix_socket_directories = '$SOCKET_DIR'
max_connections = 100
shared_buffers = 128MB
fsync = on
CONF
}

bootstrap_db() {
  ensure_secrets
  psql_admin -d postgres <<SQL >/dev/null
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'earthgptx') THEN
    CREATE ROLE earthgptx LOGIN CREATEDB;
  END IF;
END \$\$;
ALTER ROLE earthgptx PASSWORD '$EGX_PG_PASSWORD';
SQL
  if [[ -z "$(psql_admin -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'earthgptx'")" ]]; then
    psql_admin -d template1 -c "CREATE EXTENSION IF NOT EXISTS postgis" >/dev/null
    psql_admin -d postgres -c "CREATE DATABASE earthgptx OWNER earthgptx" >/dev/null
  fi
  psql_admin -d earthgptx -c "CREATE EXTENSION IF NOT EXISTS postgis" >/dev/null
}

ready() {
  "$EGX_PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$EGX_PG_PORT" \
    && psql_admin -d postgres -tAc "SELECT 1" >/dev/null
}

start() {
  install
  init_cluster
  if ! as_pg "$EGX_PG_BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
    say "starting postgres on 127.0.0.1:$EGX_PG_PORT"
    as_pg "$EGX_PG_BIN/pg_ctl" -D "$PGDATA" -l "$PG_LOG" -w -t 60 start >/dev/null \
      || die_log "$LOG_DIR/postgres.log" "postgres did not start"
  fi
  wait_until 60 postgres ready || die_log "$LOG_DIR/postgres.log" "postgres not ready"
  bootstrap_db
}

stop() {
  if [[ -f "$PGDATA/PG_VERSION" ]] && as_pg "$EGX_PG_BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
    as_pg "$EGX_PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null && say "postgres stopped"
  fi
}

status() {
  if [[ -x "$EGX_PG_BIN/pg_isready" ]] && ready 2>/dev/null \
     && [[ "$(psql_admin -d earthgptx -tAc 'SELECT 1 FROM pg_extension WHERE extname = $$postgis$$' 2>/dev/null)" == 1 ]]; then
    echo "postgres  up    127.0.0.1:$EGX_PG_PORT (PostGIS, db earthgptx)"; return 0
  fi
  echo "postgres  down  127.0.0.1:$EGX_PG_PORT"; return 1
}

"${1:-status}"
