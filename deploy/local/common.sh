#!/usr/bin/env bash
# Shared settings and helpers for the local (container-free) stack. Sourced by the other scripts.
# Everything is overridable from the environment; defaults keep all ports on loopback.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# Large downloads and builds live outside the clone, so a fresh clone on the same machine reuses them.
EGX_CACHE="${EGX_CACHE:-$HOME/.cache/earthgptx}"
# Data, logs, pid files and the generated env file of this stack live under one state folder.
EGX_STATE_DIR="${EGX_STATE_DIR:-$REPO_ROOT/.stack}"
EGX_VENV="${EGX_VENV:-$EGX_CACHE/venv}"

EGX_PG_PORT="${EGX_PG_PORT:-55432}"
EGX_KAFKA_PORT="${EGX_KAFKA_PORT:-59092}"
EGX_KAFKA_CONTROLLER_PORT="${EGX_KAFKA_CONTROLLER_PORT:-59093}"
EGX_MINIO_PORT="${EGX_MINIO_PORT:-59000}"
EGX_MINIO_CONSOLE_PORT="${EGX_MINIO_CONSOLE_PORT:-59001}"
EGX_TRITON_HTTP_PORT="${EGX_TRITON_HTTP_PORT:-58000}"
EGX_TRITON_GRPC_PORT="${EGX_TRITON_GRPC_PORT:-58001}"
EGX_TRITON_METRICS_PORT="${EGX_TRITON_METRICS_PORT:-58002}"
EGX_KAFKA_HEAP="${EGX_KAFKA_HEAP:-512m}"
EGX_KAFKA_VERSION="${EGX_KAFKA_VERSION:-4.1.1}"
# Pinned so every machine builds the same server (a pseudo-version of the module on the Go proxy).
EGX_MINIO_VERSION="${EGX_MINIO_VERSION:-v0.0.0-20260212201848-7aac2a2c5b7c}"
EGX_PYTRITON_VERSION="${EGX_PYTRITON_VERSION:-0.7.0}"
EGX_PG_BIN="${EGX_PG_BIN:-/usr/lib/postgresql/15/bin}"
# The platform's own services (their scripts read these; defined here so reserve_ports covers them too).
EGX_INGEST_PORT="${EGX_INGEST_PORT:-58081}"
EGX_API_PORT="${EGX_API_PORT:-58080}"
EGX_MARTIN_PORT="${EGX_MARTIN_PORT:-58300}"
EGX_PROMPTGEN_METRICS_PORT="${EGX_PROMPTGEN_METRICS_PORT:-58093}"
EGX_RESULTSTORE_METRICS_PORT="${EGX_RESULTSTORE_METRICS_PORT:-58094}"
EGX_INFERENCE_METRICS_PORT="${EGX_INFERENCE_METRICS_PORT:-58095}"

LOG_DIR="$EGX_STATE_DIR/logs"
RUN_DIR="$EGX_STATE_DIR/run"
SECRETS_FILE="$EGX_STATE_DIR/secrets.env"
ENV_FILE="$EGX_STATE_DIR/stack.env"

mkdir -p "$EGX_CACHE" "$LOG_DIR" "$RUN_DIR"
chmod 755 "$EGX_STATE_DIR"

say() { printf '[stack] %s\n' "$*" >&2; }

# The default ports lie inside Linux's ephemeral port range (32768-60999), where the kernel picks the local port of
# outgoing connections: reserve them, so that no client socket holds one when a server binds it. Best effort (it
# needs root and a writable /proc/sys); a port already reserved is simply listed again.
reserve_ports() {
  local reserved=/proc/sys/net/ipv4/ip_local_reserved_ports current ports
  ports="$EGX_PG_PORT,$EGX_KAFKA_PORT,$EGX_KAFKA_CONTROLLER_PORT,$EGX_MINIO_PORT,$EGX_MINIO_CONSOLE_PORT"
  ports+=",$EGX_TRITON_HTTP_PORT,$EGX_TRITON_GRPC_PORT,$EGX_TRITON_METRICS_PORT"
  ports+=",$EGX_INGEST_PORT,$EGX_API_PORT,$EGX_MARTIN_PORT"
  ports+=",$EGX_PROMPTGEN_METRICS_PORT,$EGX_RESULTSTORE_METRICS_PORT,$EGX_INFERENCE_METRICS_PORT"
  [[ -w $reserved ]] || { say "cannot reserve the stack's ports against ephemeral use (continuing)"; return 0; }
  current=$(cat "$reserved")
  if echo "${current:+$current,}$ports" > "$reserved" 2>/dev/null; then
    say "reserved the stack's ports against ephemeral use: $(cat "$reserved")"
  else
    say "could not reserve the stack's ports (continuing)"
  fi
}
die() { printf '[stack] ERROR: %s\n' "$*" >&2; exit 1; }
# die_log LOGFILE MESSAGE: fail with the log's last lines shown, so a failure on a machine nobody can log in to
# (CI) says why without the log file itself.
die_log() {
  local log=$1; shift
  printf '[stack] ERROR: %s; last lines of %s:\n' "$*" "$log" >&2
  if [[ -f $log ]]; then
    tail -n "${EGX_LOG_TAIL_LINES:-40}" "$log" | sed -e 's/\x1b\[[0-9;]*m//g' -e 's/^/[stack]   | /' >&2
  else
    printf '[stack]   | (no log file)\n' >&2
  fi
  exit 1
}

# Random secrets are made once per state folder and never printed.
ensure_secrets() {
  if [[ ! -f "$SECRETS_FILE" ]]; then
    umask 077
    {
      echo "EGX_PG_PASSWORD=$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 24)"
      echo "EGX_MINIO_USER=egx$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')"
      echo "EGX_MINIO_PASSWORD=$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32)"
    } > "$SECRETS_FILE"
  fi
  # shellcheck disable=SC1090
  source "$SECRETS_FILE"
}

# The env file services and tests read (see tests/conftest.py); secrets included, so it is private.
write_env_file() {
  ensure_secrets
  umask 077
  cat > "$ENV_FILE" <<ENV
# Written by deploy/local; connection settings of the local stack.
EGX_PG_PORT=$EGX_PG_PORT
EGX_DB_URL=postgresql+psycopg2://earthgptx:${EGX_PG_PASSWORD}@127.0.0.1:${EGX_PG_PORT}/earthgptx
EGX_KAFKA_BOOTSTRAP=127.0.0.1:$EGX_KAFKA_PORT
EGX_S3_ENDPOINT=127.0.0.1:$EGX_MINIO_PORT
EGX_S3_ACCESS_KEY=$EGX_MINIO_USER
EGX_S3_SECRET_KEY=$EGX_MINIO_PASSWORD
EGX_TRITON_HTTP_URL=127.0.0.1:$EGX_TRITON_HTTP_PORT
EGX_TRITON_GRPC_URL=127.0.0.1:$EGX_TRITON_GRPC_PORT
ENV
}

pid_alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_until SECONDS DESCRIPTION COMMAND...: polls COMMAND until it succeeds.
wait_until() {
  local limit=$1 what=$2; shift 2
  local start=$SECONDS
  until "$@" >/dev/null 2>&1; do
    # With WAIT_PIDFILE set, a process that exits during start-up fails at once instead of after the limit.
    if [[ -n ${WAIT_PIDFILE:-} ]] && ! pid_alive "$WAIT_PIDFILE"; then
      say "$what exited during start-up"
      return 1
    fi
    if (( SECONDS - start > limit )); then
      return 1
    fi
    sleep 1
  done
  say "$what ready after $((SECONDS - start)) s"
}

stop_pidfile() {
  local pidfile=$1 name=$2
  if pid_alive "$pidfile"; then
    local pid; pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -9 "$pid" 2>/dev/null || true
    say "$name stopped"
  fi
  rm -f "$pidfile"
}

venv_python() { echo "$EGX_VENV/bin/python"; }
