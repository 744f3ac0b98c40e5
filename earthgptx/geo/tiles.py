"""A scene cut into model-size chips with overlap (docs/architecture.md, "Georeferencing").

``tile_windows`` lays square windows of ``tile_size`` scene pixels over the raster, stepping by
``tile_size - overlap``; the last row and column are moved back inside the raster so that every window is whole
(a scene smaller than one tile gets one window of its own size). ``scene_tiles`` adds each window's
``TileWindow`` (chip size, chip transform, CRS). The same scene and settings always give the same tiles, so a
re-delivered scene, or a query that arrives later, finds the same chips and task ids.

``tiles_covering`` picks the tiles a scene-pixel geometry touches; ``clip_to_tile`` brings a lon/lat geometry
into one tile's chip pixels, clipped to the chip.
"""

from __future__ import annotations

from collections.abc import Sequence

from affine import Affine
from rasterio.windows import Window
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from earthgptx.geo.affine import apply_affine
from earthgptx.geo.chips import chip_to_scene_transform, make_tile, world_to_chip
from earthgptx.v1.events_pb2 import TileWindow

__all__ = ["clip_to_tile", "scene_tiles", "tile_windows", "tiles_covering"]


def _starts(length: int, size: int, step: int) -> list[int]:
    if length <= size:
        return [0]
    starts = list(range(0, length - size, step))
    starts.append(length - size)
    return starts


def tile_windows(width: int, height: int, tile_size: int, overlap: int = 0) -> list[Window]:
    """Windows of ``tile_size`` x ``tile_size`` scene pixels covering the raster, row by row."""
    if width <= 0 or height <= 0:
        raise ValueError(f"raster size must be positive, got {width} x {height}")
    if tile_size <= 0:
        raise ValueError(f"tile_size must be positive, got {tile_size}")
    if not 0 <= overlap < tile_size:
        raise ValueError(f"overlap must be in [0, tile_size={tile_size}), got {overlap}")
    step = tile_size - overlap
    return [
        Window(col, row, min(tile_size, width), min(tile_size, height))
        for row in _starts(height, tile_size, step)
        for col in _starts(width, tile_size, step)
    ]


def scene_tiles(
    width: int,
    height: int,
    transform: Affine | None,
    crs: str | None,
    *,
    tile_size: int,
    chip_size: int,
    overlap: int = 0,
) -> list[TileWindow]:
    """The ``TileWindow`` of every chip of a scene (``transform``/``crs`` None when it has no georeference)."""
    return [
        make_tile(transform, crs, window, chip_size, chip_size, tile_index=index)
        for index, window in enumerate(tile_windows(width, height, tile_size, overlap))
    ]


def _tile_pixels(tile: TileWindow) -> BaseGeometry:
    return box(tile.col_off, tile.row_off, tile.col_off + tile.width, tile.row_off + tile.height)


def tiles_covering(tiles: Sequence[TileWindow], scene_geometry: BaseGeometry) -> list[TileWindow]:
    """The tiles whose window intersects a geometry in scene pixels, in tiling order."""
    return [tile for tile in tiles if _tile_pixels(tile).intersects(scene_geometry)]


def scene_to_chip(tile: TileWindow, scene_geometry: BaseGeometry) -> BaseGeometry:
    """A scene-pixel geometry in the tile's chip pixels (the inverse of ``chip_to_scene``)."""
    return apply_affine(~chip_to_scene_transform(tile), scene_geometry)


def clip_to_tile(tile: TileWindow, geometry_4326: BaseGeometry) -> BaseGeometry:
    """A lon/lat geometry in the tile's chip pixels, clipped to the chip (empty when it misses the chip)."""
    chip = box(0, 0, tile.chip_width, tile.chip_height)
    return world_to_chip(tile, geometry_4326).intersection(chip)
