#!/usr/bin/env bash
# The ingest service (python -m services.ingest): the HTTP upload API and the drop bucket's consumer.
# Applies the database migrations first (the service writes scenes), then starts it with the stack's connection
# settings and waits for its health check.
source "$(dirname "$0")/common.sh"

EGX_INGEST_PORT="${EGX_INGEST_PORT:-58081}"
PIDFILE="$RUN_DIR/ingest.pid"

ready() { curl -fsS -o /dev/null "http://127.0.0.1:$EGX_INGEST_PORT/healthz"; }

start() {
  if pid_alive "$PIDFILE"; then say "ingest already running"; return; fi
  [[ -f "$ENV_FILE" ]] || write_env_file
  (
    set -a
    # shellcheck disable=SC1090
    source "$ENV_FILE"
    set +a
    cd "$REPO_ROOT"
    "$(venv_python)" -m earthgptx.store.migrate upgrade head >> "$LOG_DIR/ingest.log" 2>&1 \
      || die_log "$LOG_DIR/ingest.log" "database migrations failed"
    say "starting ingest on 127.0.0.1:$EGX_INGEST_PORT (drop bucket: incoming)"
    EGX_INGEST_PORT="$EGX_INGEST_PORT" EGX_INGEST_HOST=127.0.0.1 EGX_INGEST_WORKDIR="$EGX_STATE_DIR/ingest" \
      setsid nohup "$(venv_python)" -m services.ingest >> "$LOG_DIR/ingest.log" 2>&1 < /dev/null &
    echo $! > "$PIDFILE"
  )
  mkdir -p "$EGX_STATE_DIR/ingest"
  WAIT_PIDFILE="$PIDFILE" wait_until 120 ingest ready || die_log "$LOG_DIR/ingest.log" "ingest not ready"
}

stop() { stop_pidfile "$PIDFILE" ingest; }

status() {
  if pid_alive "$PIDFILE" && ready 2>/dev/null; then echo "ingest    up    127.0.0.1:$EGX_INGEST_PORT"; return 0; fi
  echo "ingest    down  127.0.0.1:$EGX_INGEST_PORT"; return 1
}

"${1:-status}"
