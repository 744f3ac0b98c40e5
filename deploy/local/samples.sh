#!/usr/bin/env bash
# Real GeoTIFFs for the tests and the demo, from a package that ships them: the samples inside the
# `localtileserver` wheel on PyPI (a Landsat 7 RGB over Colorado in EPSG:3857, a 7-band Landsat ETM+ subset in
# EPSG:4326, an RGB over the Bahamas in UTM 18N). Downloaded once with pip, unpacked into $EGX_CACHE/samples.
#   samples.sh install   fetch and unpack if missing (idempotent)
#   samples.sh path      print the folder
source "$(dirname "$0")/common.sh"

EGX_SAMPLES_PACKAGE="${EGX_SAMPLES_PACKAGE:-localtileserver==1.0.0}"
SAMPLES_DIR="$EGX_CACHE/samples/localtileserver"
FILES=(bahamas_rgb.tif landsat.tif landsat7.tif)

install() {
  local missing=0 f
  for f in "${FILES[@]}"; do [[ -s "$SAMPLES_DIR/$f" ]] || missing=1; done
  (( missing )) || return 0
  say "fetching sample GeoTIFFs ($EGX_SAMPLES_PACKAGE wheel, about 34 MB, once)"
  local tmp; tmp=$(mktemp -d)
  "$(venv_python)" -m pip download -q --no-deps --only-binary=:all: -d "$tmp" "$EGX_SAMPLES_PACKAGE" \
    || { rm -rf "$tmp"; die "could not download $EGX_SAMPLES_PACKAGE"; }
  mkdir -p "$SAMPLES_DIR"
  "$(venv_python)" - "$tmp" "$SAMPLES_DIR" "${FILES[@]}" <<'PY'
import sys, zipfile, pathlib
tmp, out, names = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3:]
wheel = next(tmp.glob("*.whl"))
with zipfile.ZipFile(wheel) as archive:
    for name in names:
        (out / name).write_bytes(archive.read(f"localtileserver/tiler/data/{name}"))
PY
  rm -rf "$tmp"
  say "sample GeoTIFFs in $SAMPLES_DIR"
}

path() { echo "$SAMPLES_DIR"; }

"${1:-install}"
