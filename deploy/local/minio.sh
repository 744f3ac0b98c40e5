#!/usr/bin/env bash
# MinIO, the real S3 server, built from its Go module with the Go toolchain into $EGX_CACHE/bin.
source "$(dirname "$0")/common.sh"

MINIO_BIN="$EGX_CACHE/bin/minio"
MINIO_STATE="$EGX_STATE_DIR/minio"
PIDFILE="$RUN_DIR/minio.pid"

install() {
  if [[ -x "$MINIO_BIN" ]]; then return; fi
  command -v go >/dev/null || die "go not found (the Go toolchain is needed to build MinIO)"
  say "building MinIO server ($EGX_MINIO_VERSION) with $(go version | cut -d' ' -f3); this takes several minutes once"
  mkdir -p "$EGX_CACHE/bin"
  GOBIN="$EGX_CACHE/bin" GOFLAGS=-trimpath go install "github.com/minio/minio@$EGX_MINIO_VERSION" \
    > "$LOG_DIR/minio-build.log" 2>&1 || die "MinIO build failed; see $LOG_DIR/minio-build.log"
}

ready() { curl -fsS -o /dev/null "http://127.0.0.1:$EGX_MINIO_PORT/minio/health/ready"; }

start() {
  install
  ensure_secrets
  if pid_alive "$PIDFILE"; then say "minio already running"; return; fi
  mkdir -p "$MINIO_STATE/data"
  say "starting minio on 127.0.0.1:$EGX_MINIO_PORT"
  MINIO_ROOT_USER="$EGX_MINIO_USER" MINIO_ROOT_PASSWORD="$EGX_MINIO_PASSWORD" \
  MINIO_BROWSER=on MINIO_UPDATE=off \
    setsid nohup "$MINIO_BIN" server --quiet --anonymous \
      --address "127.0.0.1:$EGX_MINIO_PORT" --console-address "127.0.0.1:$EGX_MINIO_CONSOLE_PORT" \
      "$MINIO_STATE/data" >> "$LOG_DIR/minio.log" 2>&1 < /dev/null &
  echo $! > "$PIDFILE"
  wait_until 60 minio ready || die "minio not ready; see $LOG_DIR/minio.log"
}

stop() { stop_pidfile "$PIDFILE" minio; }

status() {
  if pid_alive "$PIDFILE" && ready 2>/dev/null; then echo "minio     up    127.0.0.1:$EGX_MINIO_PORT (console :$EGX_MINIO_CONSOLE_PORT)"; return 0; fi
  echo "minio     down  127.0.0.1:$EGX_MINIO_PORT"; return 1
}

"${1:-status}"
