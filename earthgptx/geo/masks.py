"""A mask from the pixel perception module (a PNG at chip size) as polygons: in chip pixels, then in EPSG:4326
through the tile's own chip transform (``chip_to_world``).

``rasterio.features.shapes`` traces the mask's pixel edges (pixel-corner coordinates, so a one-pixel object is a
unit square); holes are kept. An empty mask gives ``None``.
"""

from __future__ import annotations

import warnings

import numpy as np
from rasterio.errors import NotGeoreferencedWarning
from rasterio.features import shapes
from rasterio.io import MemoryFile
from shapely.geometry import MultiPolygon, shape
from shapely.geometry.base import BaseGeometry

from earthgptx.geo.chips import chip_to_world
from earthgptx.v1.events_pb2 import TileWindow

__all__ = ["mask_from_png", "mask_polygons", "mask_polygons_4326"]


def mask_from_png(data: bytes) -> np.ndarray:
    """The first band of a PNG (or any raster GDAL reads) as a boolean ``(H, W)`` array."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with MemoryFile(data) as memory, memory.open() as dataset:
            return np.asarray(dataset.read(1) > 0)


def mask_polygons(mask: np.ndarray) -> MultiPolygon | None:
    """The set pixels of a mask as a MultiPolygon in chip pixels (None when no pixel is set)."""
    values = np.ascontiguousarray(mask, dtype=np.uint8)
    parts = [shape(geometry) for geometry, value in shapes(values, mask=values > 0) if value]
    if not parts:
        return None
    return MultiPolygon(parts)


def mask_polygons_4326(mask: np.ndarray, tile: TileWindow) -> BaseGeometry | None:
    """The mask's polygons in EPSG:4326 (``GeoreferenceError`` when the tile has no usable georeference)."""
    polygons = mask_polygons(mask)
    return chip_to_world(tile, polygons) if polygons is not None else None
