"""Reading one chip of a product with rasterio and converting it: :func:`read_chip`.

Reading is windowed (never the whole scene); the bands' units, scales, offsets, no-data and tags come from the
file itself (plus a Landsat MTL when the product ships one beside its bands).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import rasterio
import rasterio.errors
from rasterio.windows import Window

from earthgptx.radiometry.conversions import ModelInput, to_model_units
from earthgptx.radiometry.metadata import read_band_metas

__all__ = ["read_chip"]


def read_chip(
    path: str | Path,
    modality: str,
    *,
    bands: Sequence[str] | None = None,
    indexes: Sequence[int] | None = None,
    window: Window | None = None,
    product_level: str | None = None,
    sensor: str | None = None,
    extra_tags: Mapping[str, str] | None = None,
) -> ModelInput:
    """The chip ``window`` of ``path`` (all of it when ``None``) in the model units of ``modality``.

    ``indexes`` (1-based) picks bands of the file (default: all); ``bands`` names the bands read (default: their
    descriptions); ``extra_tags`` (e.g. ``parse_mtl(...)``)
    sit under the file's own tags; ``product_level`` falls back to the file's ``PROCESSING_LEVEL`` /
    ``product_level`` tag.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            metas = read_band_metas(src, bands, extra_tags, indexes)
            array = src.read(list(indexes) if indexes is not None else None, window=window)
    level = product_level or metas[0].tag("product_level", "PROCESSING_LEVEL")
    names = tuple(bands) if bands is not None else None
    return to_model_units(array, modality, metas, level, sensor, bands=names)
