#!/usr/bin/env bash
# Rebuilds .whl/ for tools/gpu_retrain.sh (docs/training.md, "The GPU continuation" step 1):
#   .whl/site-cp312.tar.xz          rasterio, shapely, pyproj, affine, cligj, click-plugins, jsonschema, referencing,
#                                   rpds-py, jsonschema-specifications
#   .whl/transformers-cp312.tar.xz  transformers
# each the CPython 3.12 manylinux x86_64 (or pure-python) wheel of the version installed in our venv, installed with
# `pip install --target` (no dependencies, no .pyc, no bin/ scripts, no direct_url.json) and packed with xz, members
# at the top level of the archive, as gpu_retrain.sh extracts the archives straight into $SITE and puts $SITE on
# PYTHONPATH.
#
# Run from the repository root (PyPI must be reachable):   bash tools/pack_gpu_wheels.sh
# PYTHON picks the interpreter whose versions are packed (default: the venv's, /root/.cache/earthgptx/venv).
# The archives are reproducible for the same wheels: sorted members, fixed mtime/owner, xz -6 single-threaded.
# .whl/ is ignored by git (.gitignore); other files in it (e.g. extra .whl/*.whl) are left alone.
set -euo pipefail

cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
START=$(date +%s)
VENV_PY=/root/.cache/earthgptx/venv/bin/python
if [ -n "${PYTHON:-}" ]; then
    PY=$PYTHON
elif [ -n "${VIRTUAL_ENV:-}" ] && [ -x "$VIRTUAL_ENV/bin/python" ]; then
    PY=$VIRTUAL_ENV/bin/python
elif [ -x "$VENV_PY" ]; then
    PY=$VENV_PY
else
    PY=python3
fi

SITE_PKGS=(rasterio shapely pyproj affine cligj click-plugins jsonschema referencing rpds-py jsonschema-specifications)
TRANSFORMERS_PKGS=(transformers)
# The target: CPython 3.12 on manylinux x86_64; pure-python (py3-none-any) wheels match these tags too.
TAGS=(--only-binary=:all: --python-version 3.12 --implementation cp --abi cp312
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 --platform any)

die() { echo "pack_gpu_wheels: ERROR: $*" >&2; exit 1; }
log() { echo "[pack_gpu_wheels +$(($(date +%s) - START))s] $*"; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/pack_gpu_wheels.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# pack NAME PKG...: download the venv's versions, install them into a folder, write .whl/NAME.tar.xz.
pack() {
    local name=$1
    shift
    local wheels="$TMP/$name-wheels" site="$TMP/$name-site" pkg version
    mkdir -p "$wheels" "$site"
    for pkg in "$@"; do
        version=$("$PY" -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$pkg" 2>/dev/null) ||
            die "$pkg is not installed in $PY's environment (its version is what gets packed)"
        log "download $pkg==$version (cp312 manylinux x86_64 / pure python)"
        "$PY" -m pip download -q --no-deps --no-cache-dir --disable-pip-version-check "${TAGS[@]}" \
            --dest "$wheels" "$pkg==$version" ||
            die "download of $pkg==$version failed (no cp312 manylinux x86_64 or pure-python wheel on the index?)"
    done
    log "$name: $(find "$wheels" -name '*.whl' | wc -l) wheels, $(du -cb "$wheels"/*.whl | tail -1 | cut -f1) bytes:"
    (cd "$wheels" && ls -1 ./*.whl | sed 's,^\./,    ,')
    "$PY" -m pip install -q --no-deps --no-index --no-compile --no-cache-dir --disable-pip-version-check \
        "${TAGS[@]}" --target "$site" "$wheels"/*.whl || die "pip install --target of the $name wheels failed"
    # Console scripts carry this host's interpreter in their shebang: useless on the GPU host.
    rm -rf "$site/bin"
    # direct_url.json records the wheel's path in this run's temp dir: dropped (with the RECORD lines of it and of
    # bin/), so the archive depends on the wheels only.
    find "$site" -path '*.dist-info/direct_url.json' -delete
    sed -i -e '/\.dist-info\/direct_url\.json,/d' -e '/^\.\.\/\.\.\/bin\//d' "$site"/*.dist-info/RECORD
    if grep -rlF "$TMP" "$site" >/dev/null 2>&1; then
        die "$name: files in $site still name the temp dir $TMP: $(grep -rlF "$TMP" "$site" | head -3 | tr '\n' ' ')"
    fi
    find "$site" -name __pycache__ -type d -prune -exec rm -rf {} +
    mkdir -p .whl
    # Reproducible: sorted members, fixed mtime and owner, single-threaded xz (its output depends on the threads).
    XZ_OPT="-6 -T1" tar --sort=name --mtime='2000-01-01 00:00:00Z' --owner=0 --group=0 --numeric-owner \
        -cJf ".whl/$name.tar.xz.tmp" -C "$site" . || die "tar/xz of $name failed"
    mv -f ".whl/$name.tar.xz.tmp" ".whl/$name.tar.xz"
    log "$name: .whl/$name.tar.xz $(du -b ".whl/$name.tar.xz" | cut -f1) bytes (installed $(du -sb "$site" | cut -f1))"
}

pack site-cp312 "${SITE_PKGS[@]}"
pack transformers-cp312 "${TRANSFORMERS_PKGS[@]}"

WHL_BYTES=$(du -cb .whl/* | tail -1 | cut -f1)
# What `carry` sends besides .whl: tracked files and untracked ones git does not ignore.
TREE_BYTES=$(git ls-files -z -co --exclude-standard -- . ':!.whl' | du -cb --files0-from=- 2>/dev/null | tail -1 |
    cut -f1 || true)
TREE_BYTES=${TREE_BYTES:-0}
log "done in $(($(date +%s) - START))s:"
du -b .whl/* | sed 's/^/    /'
echo "    .whl total $WHL_BYTES bytes; working tree (tracked + untracked, not ignored) $TREE_BYTES bytes;" \
    "together $((WHL_BYTES + TREE_BYTES)) of 67108864 (64 MiB)"
if [ "$WHL_BYTES" -gt 40000000 ]; then
    echo "pack_gpu_wheels: WARNING: .whl is $WHL_BYTES bytes, over 40 MB: the working tree and .whl must stay" \
        "under 64 MiB together" >&2
fi
if [ $((WHL_BYTES + TREE_BYTES)) -gt 67108864 ]; then
    echo "pack_gpu_wheels: WARNING: working tree + .whl exceed 64 MiB" >&2
fi
