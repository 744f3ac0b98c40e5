#!/usr/bin/env bash
# MinIO, the real S3 server, built from its Go module with the Go toolchain into $EGX_CACHE/bin.
source "$(dirname "$0")/common.sh"

MINIO_BIN="$EGX_CACHE/bin/minio"
MINIO_STATE="$EGX_STATE_DIR/minio"
PIDFILE="$RUN_DIR/minio.pid"
# The topic of the drop bucket's notifications (earthgptx.scenes.drops.DROP_TOPIC).
EGX_DROP_TOPIC="${EGX_DROP_TOPIC:-scenes.dropped}"

install() {
  if [[ -x "$MINIO_BIN" ]]; then return; fi
  command -v go >/dev/null || die "go not found (the Go toolchain is needed to build MinIO)"
  say "building MinIO server ($EGX_MINIO_VERSION) with $(go version | cut -d' ' -f3); this takes several minutes once"
  mkdir -p "$EGX_CACHE/bin"
  GOBIN="$EGX_CACHE/bin" GOFLAGS=-trimpath go install "github.com/minio/minio@$EGX_MINIO_VERSION" \
    > "$LOG_DIR/minio-build.log" 2>&1 || die_log "$LOG_DIR/minio-build.log" "MinIO build failed"
}

# The broker does not auto-create topics: make the one MinIO publishes the drop bucket's notifications to.
drop_topic() {
  EGX_KAFKA_BOOTSTRAP="127.0.0.1:$EGX_KAFKA_PORT" PYTHONPATH="$REPO_ROOT" "$(venv_python)" -c \
    "import sys; from earthgptx.bus.topics import ensure_topics_from_settings as e; from earthgptx.settings import KafkaSettings as K; e(K(), [sys.argv[1]])" \
    "$EGX_DROP_TOPIC" >> "$LOG_DIR/minio.log" 2>&1 || say "could not create topic $EGX_DROP_TOPIC yet (ingest creates it at start)"
}

ready() { curl -fsS -o /dev/null "http://127.0.0.1:$EGX_MINIO_PORT/minio/health/ready"; }

start() {
  install
  ensure_secrets
  if pid_alive "$PIDFILE"; then say "minio already running"; return; fi
  mkdir -p "$MINIO_STATE/data" "$MINIO_STATE/notify-queue"
  drop_topic
  say "starting minio on 127.0.0.1:$EGX_MINIO_PORT"
  # The drop bucket's notifications go to Kafka through MinIO's own Kafka target (arn:minio:sqs::PRIMARY:kafka);
  # the on-disk queue keeps them while the broker is down. The ingest service points its bucket at this target.
  MINIO_ROOT_USER="$EGX_MINIO_USER" MINIO_ROOT_PASSWORD="$EGX_MINIO_PASSWORD" \
  MINIO_BROWSER=on MINIO_UPDATE=off \
  MINIO_NOTIFY_KAFKA_ENABLE_PRIMARY=on \
  MINIO_NOTIFY_KAFKA_BROKERS_PRIMARY="127.0.0.1:$EGX_KAFKA_PORT" \
  MINIO_NOTIFY_KAFKA_TOPIC_PRIMARY="$EGX_DROP_TOPIC" \
  MINIO_NOTIFY_KAFKA_QUEUE_DIR_PRIMARY="$MINIO_STATE/notify-queue" \
    setsid nohup "$MINIO_BIN" server --quiet --anonymous \
      --address "127.0.0.1:$EGX_MINIO_PORT" --console-address "127.0.0.1:$EGX_MINIO_CONSOLE_PORT" \
      "$MINIO_STATE/data" >> "$LOG_DIR/minio.log" 2>&1 < /dev/null &
  echo $! > "$PIDFILE"
  WAIT_PIDFILE="$PIDFILE" wait_until 60 minio ready || die_log "$LOG_DIR/minio.log" "minio not ready"
}

stop() { stop_pidfile "$PIDFILE" minio; }

status() {
  if pid_alive "$PIDFILE" && ready 2>/dev/null; then echo "minio     up    127.0.0.1:$EGX_MINIO_PORT (console :$EGX_MINIO_CONSOLE_PORT)"; return 0; fi
  echo "minio     down  127.0.0.1:$EGX_MINIO_PORT"; return 1
}

"${1:-status}"
