#!/usr/bin/env bash
# Generate the Python code of proto/ (make proto). The output is committed and never edited by hand;
# tests/test_events.py regenerates into a temporary folder and compares byte for byte.
#
#   deploy/gen_proto.sh            regenerate into the repository (earthgptx/v1/...)
#   deploy/gen_proto.sh OUT_DIR    generate into OUT_DIR instead (same relative layout)
set -euo pipefail

repo_root="$(cd "$(dirname "$0")/.." && pwd)"
out_dir="$(mkdir -p "${1:-$repo_root}" && cd "${1:-$repo_root}" && pwd)"
python="${EGX_VENV:-${EGX_CACHE:-$HOME/.cache/earthgptx}/venv}/bin/python"
[[ -x "$python" ]] || { echo "gen_proto: no Python at $python (run make env)" >&2; exit 1; }

cd "$repo_root"
# Refuse to generate from .proto files that renumber, retype or silently drop a released field.
"$python" proto/fields_lock.py check
# Relative paths only, so that nothing about this machine ends up in the generated files.
mapfile -t protos < <(find proto/earthgptx/v1 -name '*.proto' | LC_ALL=C sort)
mkdir -p "$out_dir/earthgptx/v1"
rm -f "$out_dir"/earthgptx/v1/*_pb2.py "$out_dir"/earthgptx/v1/*_pb2.pyi
"$python" -m grpc_tools.protoc -I proto --python_out="$out_dir" --pyi_out="$out_dir" "${protos[@]}"

cat > "$out_dir/earthgptx/v1/__init__.py" <<'PY'
"""Generated protobuf classes of ``proto/earthgptx/v1`` (``make proto``); do not edit by hand.

Import the messages from ``earthgptx.v1.events_pb2`` (or the helpers in ``earthgptx.events``).
"""
PY
if [[ "$out_dir" == "$repo_root" ]]; then
  # Record the new fields, so that they too can never be renumbered once released.
  "$python" proto/fields_lock.py update
fi
echo "gen_proto: generated ${#protos[@]} file(s) into $out_dir/earthgptx/v1 with $("$python" -m grpc_tools.protoc --version)"
