#!/usr/bin/env bash
# The project's Python environment: a virtualenv outside the clone (in $EGX_CACHE), built from the pinned
# requirements.lock, plus the project itself in editable mode. Rebuilt only when the lock file changes.
source "$(dirname "$0")/common.sh"

LOCK="$REPO_ROOT/requirements.lock"
PY="${EGX_PYTHON:-python3.11}"

install() {
  command -v "$PY" >/dev/null || PY=python3
  local want; want=$(sha256sum "$LOCK" | cut -c1-16)
  if [[ -f "$EGX_VENV/.lock-hash" && "$(cat "$EGX_VENV/.lock-hash")" == "$want" ]]; then
    "$EGX_VENV/bin/pip" install -q --no-deps --no-build-isolation -e "$REPO_ROOT" >/dev/null
    return
  fi
  say "building the Python environment in $EGX_VENV from requirements.lock (torch is large: minutes, once)"
  [[ -x "$EGX_VENV/bin/python" ]] || "$PY" -m venv "$EGX_VENV"
  "$EGX_VENV/bin/pip" install -q --upgrade pip setuptools wheel
  "$EGX_VENV/bin/pip" install -q -r "$LOCK"
  "$EGX_VENV/bin/pip" install -q --no-deps --no-build-isolation -e "$REPO_ROOT"
  echo "$want" > "$EGX_VENV/.lock-hash"
}

"${1:-install}"
