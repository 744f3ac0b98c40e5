"""Scene files for the ingest tests: generated scenes of every modality, and every kind of bad input of issue 22.

Good scenes come from the dataset generator (``earthgptx.data``: synthetic land cover and objects, each modality
with its own physics, a random UTM georeference). The bad ones are made with rasterio where rasterio can write
them; the two headers rasterio refuses to write (0 × 0, and 2,000,000 × 2,000,000 px) are built by hand as a
minimal baseline TIFF (header, one IFD, one strip), which is exactly what such an upload would look like.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS

from earthgptx.data.generate import build_scene
from earthgptx.data.raster_io import write_geotiff
from earthgptx.data.render import render

UTM_33N = CRS.from_epsg(32633)
ORIGIN = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 5_000_000.0)


def generated_scene(folder: Path, modality: str, *, seed: int = 3, size: int = 256, name: str | None = None) -> tuple[Path, tuple[str, ...]]:
    """A synthetic scene of ``modality`` as a GeoTIFF with band descriptions; returns the path and band names."""
    scene = build_scene(seed, 0, size)
    image, bands = render(scene, modality, np.random.default_rng([seed, 1]))
    path = folder / (name or f"{modality}-{seed}.tif")
    write_geotiff(path, image, bands, CRS.from_epsg(scene.georef.epsg), scene.georef.transform)
    return path, tuple(bands)


def write_raster(
    path: Path,
    data: np.ndarray,
    *,
    crs: CRS | None = UTM_33N,
    transform: Affine | None = ORIGIN,
    descriptions: tuple[str, ...] | None = None,
    **profile: object,
) -> Path:
    """``data`` ``(bands, H, W)`` as a GeoTIFF (no georeference when ``crs`` or ``transform`` is None)."""
    options: dict[str, object] = {
        "driver": "GTiff", "count": data.shape[0], "height": data.shape[1], "width": data.shape[2],
        "dtype": data.dtype.name, **profile,
    }  # fmt: skip
    if crs is not None and transform is not None:
        options.update(crs=crs, transform=transform)
    with rasterio.open(path, "w", **options) as dst:
        dst.write(data)
        for index, name in enumerate(descriptions or (), start=1):
            dst.set_band_description(index, name)
    return path


def baseline_tiff_header(path: Path, width: int, height: int) -> Path:
    """A minimal uncompressed 8-bit TIFF that declares ``width`` × ``height`` px, with one byte of pixel data."""
    entries = [  # tag, type (3 SHORT, 4 LONG), value
        (256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 1),
        (273, 4, 0), (277, 3, 1), (278, 4, max(height, 1)), (279, 4, 1),
    ]  # fmt: skip
    ifd_offset = 8
    data_offset = ifd_offset + 2 + 12 * len(entries) + 4
    ifd = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        if tag == 273:
            value = data_offset
        packed = struct.pack("<HHI", tag, kind, 1) + (struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value))
        ifd += packed
    ifd += struct.pack("<I", 0)
    path.write_bytes(b"II*\x00" + struct.pack("<I", ifd_offset) + ifd + b"\x00")
    return path


def truncated_scene(folder: Path) -> Path:
    """A valid tiled, compressed GeoTIFF cut after 60 % of its bytes (its header is intact)."""
    rng = np.random.default_rng(5)
    whole = write_raster(
        folder / "whole.tif", rng.integers(0, 4000, (3, 512, 512), dtype=np.uint16), tiled=True,
        blockxsize=128, blockysize=128, compress="deflate", descriptions=("red", "green", "blue"),
    )  # fmt: skip
    # The COG layout puts the header and every directory first, so the cut loses pixels, not the header.
    laid_out = folder / "laid_out.tif"
    rasterio.shutil.copy(whole, laid_out, driver="COG", compress="DEFLATE", blocksize=128)
    data = laid_out.read_bytes()
    cut = folder / "truncated.tif"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    return cut


def gcp_scene(folder: Path) -> Path:
    """A 3-band optical scene georeferenced only by four ground control points (no transform)."""
    rng = np.random.default_rng(9)
    data = rng.integers(1, 255, (3, 200, 300), dtype=np.uint8)
    gcps = [
        GroundControlPoint(row=0, col=0, x=500_000.0, y=5_000_000.0),
        GroundControlPoint(row=0, col=300, x=503_000.0, y=5_000_000.0),
        GroundControlPoint(row=200, col=0, x=500_000.0, y=4_998_000.0),
        GroundControlPoint(row=200, col=300, x=503_000.0, y=4_998_000.0),
    ]
    path = folder / "gcps.tif"
    with rasterio.open(
        path, "w", driver="GTiff", count=3, height=200, width=300, dtype="uint8", gcps=gcps, crs=UTM_33N
    ) as dst:
        dst.write(data)
    return path


def sample_geotiff(name: str) -> Path:
    """A real GeoTIFF unpacked by ``deploy/local/samples.sh`` (``make up`` runs it) into ``$EGX_CACHE/samples``."""
    import os

    import pytest

    cache = Path(os.environ.get("EGX_CACHE") or Path.home() / ".cache" / "earthgptx")
    path = cache / "samples" / "localtileserver" / name
    if not path.is_file():
        pytest.fail(f"sample {name} is missing; run `deploy/local/samples.sh install` (make up does)")
    return path
