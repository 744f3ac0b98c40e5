"""Chip pixels -> scene pixels and -> EPSG:4326, through each chip's own affine transform (docs/architecture.md).

Events carry geometry in *chip* pixels (``VisualPrompt``, ``DetectedBox``: x right, y down, origin at the chip's
top-left corner) together with the ``TileWindow`` the chip was cut from. Two mappings follow from the tile:

- chip -> scene pixels: the window offset and the resize from window size to chip size
  (``chip_to_scene_transform``), for the ``pixel_geom`` kept on each result;
- chip -> world: the tile's ``chip_transform`` (scene transform x window offset x resize, built by
  ``chip_transform_for``) into the tile's CRS, then into lon/lat (``earthgptx.geo.crs.to_lonlat``);
  ``world_to_chip`` goes back (an AOI or an ad-hoc lon/lat prompt into the chip's pixels).
"""

from __future__ import annotations

from affine import Affine
from rasterio.windows import Window
from rasterio.windows import transform as window_transform
from shapely.geometry.base import BaseGeometry

from earthgptx.geo.affine import affine_from_message, affine_to_message, apply_affine
from earthgptx.geo.crs import GeoreferenceError, check_georeference, from_lonlat, to_lonlat
from earthgptx.v1.events_pb2 import TileWindow

__all__ = [
    "chip_to_scene",
    "chip_to_scene_transform",
    "chip_to_world",
    "chip_transform_for",
    "is_georeferenced",
    "make_tile",
    "world_to_chip",
]


def chip_transform_for(scene_transform: Affine, window: Window, chip_width: int, chip_height: int) -> Affine:
    """Chip pixel -> scene CRS: the scene transform, moved to the window, scaled by window size / chip size."""
    if chip_width <= 0 or chip_height <= 0:
        raise ValueError(f"chip size must be positive, got {chip_width} x {chip_height}")
    resize = Affine.scale(window.width / chip_width, window.height / chip_height)
    return window_transform(window, scene_transform) @ resize


def make_tile(
    scene_transform: Affine | None,
    crs: str | None,
    window: Window,
    chip_width: int,
    chip_height: int,
    tile_index: int = 0,
) -> TileWindow:
    """The ``TileWindow`` of one chip; ``scene_transform``/``crs`` None for an ungeoreferenced scene."""
    tile = TileWindow(
        col_off=int(window.col_off),
        row_off=int(window.row_off),
        width=int(window.width),
        height=int(window.height),
        chip_width=chip_width,
        chip_height=chip_height,
        tile_index=tile_index,
    )
    if scene_transform is not None and crs:
        tile.chip_transform.CopyFrom(
            affine_to_message(chip_transform_for(scene_transform, window, chip_width, chip_height))
        )
        tile.crs = crs
    return tile


def is_georeferenced(tile: TileWindow) -> bool:
    """True when the tile carries a CRS and a chip transform (whether they are usable is checked on use)."""
    return bool(tile.crs.strip()) and tile.HasField("chip_transform")


def chip_to_scene_transform(tile: TileWindow) -> Affine:
    """Chip pixel -> scene pixel (window offset x resize)."""
    if tile.chip_width <= 0 or tile.chip_height <= 0 or tile.width <= 0 or tile.height <= 0:
        raise ValueError(
            f"tile window {tile.width} x {tile.height} / chip {tile.chip_width} x {tile.chip_height} "
            "must have positive sizes"
        )
    return Affine.translation(tile.col_off, tile.row_off) @ Affine.scale(
        tile.width / tile.chip_width, tile.height / tile.chip_height
    )


def chip_to_scene(tile: TileWindow, geometry: BaseGeometry) -> BaseGeometry:
    """A chip-pixel geometry in scene pixels."""
    return apply_affine(chip_to_scene_transform(tile), geometry)


def _chip_transform(tile: TileWindow) -> Affine:
    if not is_georeferenced(tile):
        raise GeoreferenceError("tile has no georeference (empty crs or no chip_transform)")
    transform = affine_from_message(tile.chip_transform)
    check_georeference(transform, tile.crs)
    return transform


def chip_to_world(tile: TileWindow, geometry: BaseGeometry) -> BaseGeometry:
    """A chip-pixel geometry in EPSG:4326 (lon, lat), through the tile's own chip transform and CRS.

    Raises ``GeoreferenceError`` when the tile has no usable georeference or the geometry does not project.
    """
    transform = _chip_transform(tile)
    return to_lonlat(apply_affine(transform, geometry), tile.crs)


def world_to_chip(tile: TileWindow, geometry: BaseGeometry) -> BaseGeometry:
    """A lon/lat (EPSG:4326) geometry in the tile's chip pixels: the inverse of :func:`chip_to_world`.

    Nothing is clipped: parts outside the chip get coordinates outside ``[0, chip size]`` (clip with
    ``shapely.clip_by_rect`` when a prompt must lie on the chip). Raises ``GeoreferenceError`` as
    :func:`chip_to_world` does.
    """
    transform = _chip_transform(tile)
    return apply_affine(~transform, from_lonlat(geometry, tile.crs))
