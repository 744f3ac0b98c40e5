#!/usr/bin/env bash
# NVIDIA Triton Inference Server from the `nvidia-pytriton` wheel (which carries a real `tritonserver` 2.x binary,
# the python backend and backend stubs for CPython 3.8-3.13). Only the server is taken from the wheel: the wheel
# is unpacked into $EGX_CACHE, never pip-installed, so its pins (numpy<2, old tritonclient) do not touch the
# project's environment. It serves model_repository/ on CPU here and on CUDA on a GPU host.
source "$(dirname "$0")/common.sh"

PT_HOME="$EGX_CACHE/pytriton-$EGX_PYTRITON_VERSION"
TS_HOME="$PT_HOME/pytriton/tritonserver"
PIDFILE="$RUN_DIR/triton.pid"
MODEL_REPOSITORY="${EGX_MODEL_REPOSITORY:-$REPO_ROOT/model_repository}"
# The checkpoint the repository's EarthGPT-X models are built from (make model).
EGX_MODEL_DIR="${EGX_MODEL_DIR:-$REPO_ROOT/models/earthgptx-tiny}"

pyver() { "$(venv_python)" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")'; }

install() {
  local ver; ver=$(pyver)
  if [[ ! -x "$TS_HOME/bin/tritonserver" ]]; then
    say "fetching nvidia-pytriton==$EGX_PYTRITON_VERSION (server only, unpacked into $PT_HOME)"
    mkdir -p "$EGX_CACHE/wheels"
    "$(venv_python)" -m pip download -q --no-deps -d "$EGX_CACHE/wheels" "nvidia-pytriton==$EGX_PYTRITON_VERSION"
    rm -rf "$PT_HOME.tmp" && mkdir -p "$PT_HOME.tmp"
    "$(venv_python)" -m zipfile -e "$EGX_CACHE"/wheels/nvidia_pytriton-"$EGX_PYTRITON_VERSION"-*.whl "$PT_HOME.tmp"
    chmod +x "$PT_HOME.tmp/pytriton/tritonserver/bin/tritonserver" "$PT_HOME.tmp"/pytriton/tritonserver/python_backend_stubs/*/triton_python_backend_stub
    rm -rf "$PT_HOME" && mv "$PT_HOME.tmp" "$PT_HOME"
  fi
  # The stub must sit beside libtriton_python.so and match the interpreter whose packages the models import.
  # Its RPATH ($ORIGIN/../../../../nvidia_pytriton.libs) resolves from backends/python as from the stubs folder.
  local stub="$TS_HOME/python_backend_stubs/$ver/triton_python_backend_stub"
  [[ -x "$stub" ]] || die "the wheel has no python backend stub for Python $ver"
  cmp -s "$stub" "$TS_HOME/backends/python/triton_python_backend_stub" \
    || cp "$stub" "$TS_HOME/backends/python/triton_python_backend_stub"
}

# The stub links libpython3.X.so.1.0; it must load the venv's base interpreter's libpython, not a system one,
# or C extensions (ssl first) fail with undefined symbols. So that lib dir goes first on LD_LIBRARY_PATH.
server_env() {
  local libdir site
  libdir=$("$(venv_python)" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')
  site=$("$(venv_python)" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "LD_LIBRARY_PATH=$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  # The stub's embedded interpreter is isolated (it ignores PYTHONPATH), so the models add these to sys.path
  # themselves (see model_repository/*/1/model.py).
  echo "EGX_PYTHONPATH=$site:$REPO_ROOT"
}

ready() { curl -fsS -o /dev/null "http://127.0.0.1:$EGX_TRITON_HTTP_PORT/v2/health/ready" \
  && "$(venv_python)" "$(dirname "$0")/ready.py" triton "127.0.0.1:$EGX_TRITON_HTTP_PORT"; }

# The ONNX graph and the copied weights are generated, not committed: build them when missing or not of the
# current checkpoint (the build compares the checkpoint's digest with the one it stamped; a no-op otherwise).
build_models() {
  (cd "$REPO_ROOT" && "$(venv_python)" -m earthgptx.serving.build --model "$EGX_MODEL_DIR" --out "$MODEL_REPOSITORY" --if-stale) \
    >> "$LOG_DIR/model-build.log" 2>&1 || die_log "$LOG_DIR/model-build.log" "building the model repository failed"
}

start() {
  install
  if pid_alive "$PIDFILE"; then say "triton already running"; return; fi
  mkdir -p "$LOG_DIR"
  build_models
  say "starting tritonserver on 127.0.0.1:$EGX_TRITON_HTTP_PORT (http) / :$EGX_TRITON_GRPC_PORT (grpc), repository $MODEL_REPOSITORY"
  # shellcheck disable=SC2046
  env $(server_env) EGX_REPO_ROOT="$REPO_ROOT" \
    setsid nohup "$TS_HOME/bin/tritonserver" \
      --model-repository="$MODEL_REPOSITORY" \
      --backend-directory="$TS_HOME/backends" \
      --http-address=127.0.0.1 --http-port="$EGX_TRITON_HTTP_PORT" \
      --grpc-address=127.0.0.1 --grpc-port="$EGX_TRITON_GRPC_PORT" \
      --metrics-address=127.0.0.1 --metrics-port="$EGX_TRITON_METRICS_PORT" \
      --allow-sagemaker=false --allow-vertex-ai=false \
      --strict-readiness=true --exit-on-error=true --log-verbose=0 \
      >> "$LOG_DIR/triton.log" 2>&1 < /dev/null &
  echo $! > "$PIDFILE"
  WAIT_PIDFILE="$PIDFILE" wait_until "${EGX_TRITON_START_TIMEOUT:-240}" triton ready || die_log "$LOG_DIR/triton.log" "triton not ready"
}

stop() { stop_pidfile "$PIDFILE" triton; }

status() {
  if pid_alive "$PIDFILE" && ready 2>/dev/null; then echo "triton    up    127.0.0.1:$EGX_TRITON_HTTP_PORT (http) 127.0.0.1:$EGX_TRITON_GRPC_PORT (grpc)"; return 0; fi
  echo "triton    down  127.0.0.1:$EGX_TRITON_HTTP_PORT"; return 1
}

"${1:-status}"
