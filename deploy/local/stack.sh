#!/usr/bin/env bash
# The whole local stack: `stack.sh up|down|status|env`. Idempotent: `up` installs what is missing, starts
# what is not running, and returns only when every service answers for real.
source "$(dirname "$0")/common.sh"
HERE="$(cd "$(dirname "$0")" && pwd)"
SERVICES=(postgres kafka minio triton ingest promptgen inference resultstore martin api)

up() {
  reserve_ports
  "$HERE/python.sh" install
  "$HERE/samples.sh" install
  write_env_file
  for s in "${SERVICES[@]}"; do "$HERE/$s.sh" start; done
  say "all services up; connection settings in $ENV_FILE"
}

down() {
  for (( i=${#SERVICES[@]}-1; i>=0; i-- )); do "$HERE/${SERVICES[$i]}.sh" stop || true; done
}

status() {
  local rc=0
  for s in "${SERVICES[@]}"; do "$HERE/$s.sh" status || rc=1; done
  return $rc
}

env() { write_env_file; echo "$ENV_FILE"; }

"${1:-status}"
