#!/usr/bin/env bash
# The query API (python -m services.api): OGC API Features, tiles, queries, AOIs and the web map at /.
# Started after PostGIS, Kafka, MinIO, ingest and Martin; applies the migrations first, waits for its health check.
source "$(dirname "$0")/common.sh"

EGX_API_PORT="${EGX_API_PORT:-58080}"
EGX_INGEST_PORT="${EGX_INGEST_PORT:-58081}"
EGX_MARTIN_PORT="${EGX_MARTIN_PORT:-58300}"
PIDFILE="$RUN_DIR/api.pid"

ready() { curl -fsS -o /dev/null "http://127.0.0.1:$EGX_API_PORT/healthz"; }

start() {
  if pid_alive "$PIDFILE"; then say "api already running"; return; fi
  [[ -f "$ENV_FILE" ]] || write_env_file
  (
    set -a
    # shellcheck disable=SC1090
    source "$ENV_FILE"
    set +a
    cd "$REPO_ROOT"
    "$(venv_python)" -m earthgptx.store.migrate upgrade head >> "$LOG_DIR/api.log" 2>&1 \
      || die_log "$LOG_DIR/api.log" "database migrations failed"
    say "starting api on 127.0.0.1:$EGX_API_PORT (web map at /)"
    EGX_API_PORT="$EGX_API_PORT" EGX_API_HOST=127.0.0.1 \
    EGX_API_INGEST_URL="http://127.0.0.1:$EGX_INGEST_PORT" EGX_API_MARTIN_URL="http://127.0.0.1:$EGX_MARTIN_PORT" \
      setsid nohup "$(venv_python)" -m services.api >> "$LOG_DIR/api.log" 2>&1 < /dev/null &
    echo $! > "$PIDFILE"
  )
  WAIT_PIDFILE="$PIDFILE" wait_until 120 api ready || die_log "$LOG_DIR/api.log" "api not ready"
}

stop() { stop_pidfile "$PIDFILE" api; }

status() {
  if pid_alive "$PIDFILE" && ready 2>/dev/null; then echo "api       up    127.0.0.1:$EGX_API_PORT"; return 0; fi
  echo "api       down  127.0.0.1:$EGX_API_PORT"; return 1
}

"${1:-status}"
