#!/usr/bin/env bash
# Martin (the MapLibre project's vector tile server), built from its crate with cargo into $EGX_CACHE/martin,
# serving the ogc schema's views (deploy/local/martin.yaml) to the query API's map.
source "$(dirname "$0")/common.sh"

EGX_MARTIN_VERSION="${EGX_MARTIN_VERSION:-1.14.0}"
EGX_MARTIN_PORT="${EGX_MARTIN_PORT:-58300}"
MARTIN_ROOT="$EGX_CACHE/martin"
MARTIN_BIN="$MARTIN_ROOT/bin/martin"
PIDFILE="$RUN_DIR/martin.pid"
HERE="$(cd "$(dirname "$0")" && pwd)"

install() {
  if [[ -x "$MARTIN_BIN" ]]; then return; fi
  command -v cargo >/dev/null || die "cargo not found (the Rust toolchain is needed to build Martin)"
  say "building Martin $EGX_MARTIN_VERSION with $(cargo --version | cut -d' ' -f2); this takes several minutes once"
  # --locked keeps the dependencies Martin was released with (newer ones ask for a newer rustc).
  cargo install martin --version "$EGX_MARTIN_VERSION" --locked --no-default-features --features postgres \
    --root "$MARTIN_ROOT" > "$LOG_DIR/martin-build.log" 2>&1 || die_log "$LOG_DIR/martin-build.log" "Martin build failed"
}

ready() { curl -fsS -o /dev/null "http://127.0.0.1:$EGX_MARTIN_PORT/health"; }

launch() {
  (
    set -a
    # shellcheck disable=SC1090
    source "$ENV_FILE"
    set +a
    cd "$REPO_ROOT"
    say "starting martin on 127.0.0.1:$EGX_MARTIN_PORT"
    EGX_MARTIN_DATABASE_URL="${EGX_DB_URL/+psycopg2/}" EGX_MARTIN_LISTEN="127.0.0.1:$EGX_MARTIN_PORT" \
      setsid nohup "$MARTIN_BIN" --config "$HERE/martin.yaml" >> "$LOG_DIR/martin.log" 2>&1 < /dev/null &
    echo $! > "$PIDFILE"
  )
  WAIT_PIDFILE="$PIDFILE" wait_until "${EGX_MARTIN_START_TIMEOUT:-120}" martin ready
}

start() {
  install
  if pid_alive "$PIDFILE"; then say "martin already running"; return; fi
  port_open "$EGX_MARTIN_PORT" && die "port $EGX_MARTIN_PORT is already taken by another process (set EGX_MARTIN_PORT)"
  [[ -f "$ENV_FILE" ]] || write_env_file
  # The ogc views Martin publishes come from the migrations.
  (
    set -a
    # shellcheck disable=SC1090
    source "$ENV_FILE"
    set +a
    cd "$REPO_ROOT"
    "$(venv_python)" -m earthgptx.store.migrate upgrade head >> "$LOG_DIR/martin.log" 2>&1
  ) || die_log "$LOG_DIR/martin.log" "database migrations failed"
  launch && return
  # A binary from the cache that will not serve here (built on another machine, say) is rebuilt once.
  say "martin did not start with the cached binary; last lines of its log:"
  tail -n 20 "$LOG_DIR/martin.log" | sed -e 's/\x1b\[[0-9;]*m//g' -e 's/^/[stack]   | /' >&2 || true
  stop_pidfile "$PIDFILE" martin || true
  rm -f "$MARTIN_BIN"
  install
  launch || die_log "$LOG_DIR/martin.log" "martin not ready"
}

stop() { stop_pidfile "$PIDFILE" martin; }

status() {
  if pid_alive "$PIDFILE" && ready 2>/dev/null; then echo "martin    up    127.0.0.1:$EGX_MARTIN_PORT"; return 0; fi
  echo "martin    down  127.0.0.1:$EGX_MARTIN_PORT"; return 1
}

"${1:-status}"
