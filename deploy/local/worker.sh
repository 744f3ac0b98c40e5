#!/usr/bin/env bash
# A consumer service of the platform as a stack-managed background process: `worker.sh NAME start|stop|status`
# (python -m services.NAME, log in .stack/logs/NAME.log). It is ready when its Prometheus /metrics answers on
# its metrics port (EGX_<NAME>_METRICS_PORT, set here), which the service kit opens once its settings are built.
source "$(dirname "$0")/common.sh"

NAME="${1:?usage: worker.sh NAME start|stop|status}"
ACTION="${2:-status}"
UPPER="$(echo "$NAME" | tr '[:lower:]' '[:upper:]')"
case "$NAME" in
  promptgen) DEFAULT_PORT=58093 ;;
  resultstore) DEFAULT_PORT=58094 ;;
  inference) DEFAULT_PORT=58095 ;;
  *) die "worker.sh: unknown service $NAME" ;;
esac
PORT_VAR="EGX_${UPPER}_METRICS_PORT"
PORT="${!PORT_VAR:-$DEFAULT_PORT}"
PIDFILE="$RUN_DIR/$NAME.pid"

ready() { curl -fsS -o /dev/null "http://127.0.0.1:$PORT/metrics"; }

start() {
  if pid_alive "$PIDFILE"; then say "$NAME already running"; return; fi
  [[ -f "$ENV_FILE" ]] || write_env_file
  (
    set -a
    # shellcheck disable=SC1090
    source "$ENV_FILE"
    set +a
    cd "$REPO_ROOT"
    "$(venv_python)" -m earthgptx.store.migrate upgrade head >> "$LOG_DIR/$NAME.log" 2>&1 \
      || die_log "$LOG_DIR/$NAME.log" "database migrations failed"
    say "starting $NAME (metrics on 127.0.0.1:$PORT)"
    export "$PORT_VAR=$PORT"
    setsid nohup "$(venv_python)" -m "services.$NAME" >> "$LOG_DIR/$NAME.log" 2>&1 < /dev/null &
    echo $! > "$PIDFILE"
  )
  WAIT_PIDFILE="$PIDFILE" wait_until 120 "$NAME" ready || die_log "$LOG_DIR/$NAME.log" "$NAME not ready"
}

stop() { stop_pidfile "$PIDFILE" "$NAME"; }

status() {
  if pid_alive "$PIDFILE" && ready 2>/dev/null; then printf '%-9s up    127.0.0.1:%s\n' "$NAME" "$PORT"; return 0; fi
  printf '%-9s down  127.0.0.1:%s\n' "$NAME" "$PORT"; return 1
}

"$ACTION"
