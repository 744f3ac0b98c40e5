"""Writing chips (GeoTIFF) and masks (PNG) with rasterio."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning


def write_geotiff(
    path: Path,
    image: np.ndarray,
    band_names: Sequence[str],
    crs: CRS | None,
    transform: Affine | None,
    tags: dict[str, str] | None = None,
) -> None:
    """Write ``image`` ``(bands, H, W)`` in its own dtype as an uncompressed GeoTIFF.

    Compression is off on purpose: speckle and sensor noise leave deflate/zstd only ~20 % to gain on these
    chips while it doubles the writing time.

    Band descriptions carry the band names, so a reader does not depend on the JSON record to know them.
    ``crs``/``transform`` may be ``None`` for imagery without a georeference (e.g. converted JPEG datasets).
    """
    if image.ndim != 3 or image.shape[0] != len(band_names):
        raise ValueError(f"image of shape {image.shape} does not match bands {list(band_names)}")
    profile: dict[str, object] = {
        "driver": "GTiff",
        "height": image.shape[1],
        "width": image.shape[2],
        "count": image.shape[0],
        "dtype": image.dtype.name,
        "interleave": "pixel",
    }
    if crs is not None and transform is not None:
        profile.update(crs=crs, transform=transform)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(image)
            for index, name in enumerate(band_names, start=1):
                dst.set_band_description(index, name)
            if tags:
                dst.update_tags(**tags)


def write_mask_png(path: Path, mask: np.ndarray) -> None:
    """Write a boolean mask as a single-band 8-bit PNG (0 background, 255 object)."""
    data = np.where(mask, 255, 0).astype(np.uint8)[None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(
            path, "w", driver="PNG", height=data.shape[1], width=data.shape[2], count=1, dtype="uint8"
        ) as dst:
            dst.write(data)


def read_mask_png(path: Path) -> np.ndarray:
    """Read a mask written by :func:`write_mask_png` back as a boolean ``(H, W)`` array."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            return src.read(1) > 127
