"""Chip pixels -> scene pixels and -> EPSG:4326, through each chip's own affine transform (DESIGN §3).

Events carry geometry in *chip* pixels (``VisualPrompt``, ``DetectedBox``: x right, y down, origin at the chip's
top-left corner) together with the ``TileWindow`` the chip was cut from. Two mappings follow from the tile:

- chip -> scene pixels: the window offset and the resize from window size to chip size
  (``chip_to_scene_transform``), for the ``pixel_geom`` kept on each result;
- chip -> world: the tile's ``chip_transform`` (scene transform x window offset x resize, built by
  ``chip_transform_for``) into the tile's CRS, then pyproj (``always_xy``) into lon/lat.

No projection math is written here: affine maps are ``affine.Affine`` (rasterio's), applied with shapely;
reprojection is pyproj's.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np
import shapely
import shapely.affinity
from affine import Affine
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError, ProjError
from rasterio.windows import Window
from rasterio.windows import transform as window_transform
from shapely.geometry import LineString, Point, Polygon, box
from shapely.geometry.base import BaseGeometry

from earthgptx.geo import WGS84, GeoreferenceError, check_georeference
from earthgptx.v1.events_pb2 import AffineTransform, PixelBox, TileWindow, VisualPrompt

__all__ = [
    "affine_from_message",
    "affine_to_message",
    "chip_to_scene",
    "chip_to_scene_transform",
    "chip_to_world",
    "chip_transform_for",
    "is_georeferenced",
    "make_tile",
    "pixel_box",
    "prompt_geometry",
]


def affine_from_message(message: AffineTransform) -> Affine:
    return Affine(message.a, message.b, message.c, message.d, message.e, message.f)


def affine_to_message(transform: Affine) -> AffineTransform:
    a, b, c, d, e, f = tuple(transform)[:6]
    return AffineTransform(a=a, b=b, c=c, d=d, e=e, f=f)


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


def _apply(transform: Affine, geometry: BaseGeometry) -> BaseGeometry:
    a, b, c, d, e, f = tuple(transform)[:6]
    return shapely.affinity.affine_transform(geometry, [a, b, d, e, c, f])


def chip_to_scene(tile: TileWindow, geometry: BaseGeometry) -> BaseGeometry:
    """A chip-pixel geometry in scene pixels."""
    return _apply(chip_to_scene_transform(tile), geometry)


@lru_cache(maxsize=128)
def _to_lonlat(crs: str) -> Transformer | None:
    """Transformer from ``crs`` to EPSG:4326 (lon, lat), or None when ``crs`` already is EPSG:4326."""
    source = CRS.from_user_input(crs)
    if source.equals(WGS84):
        return None
    # Building a Transformer costs milliseconds; a deployment sees a handful of CRSs.
    return Transformer.from_crs(source, WGS84, always_xy=True)


def chip_to_world(tile: TileWindow, geometry: BaseGeometry) -> BaseGeometry:
    """A chip-pixel geometry in EPSG:4326 (lon, lat), through the tile's own chip transform and CRS.

    Raises ``GeoreferenceError`` when the tile has no usable georeference or the geometry does not project.
    """
    if not is_georeferenced(tile):
        raise GeoreferenceError("tile has no georeference (empty crs or no chip_transform)")
    transform = affine_from_message(tile.chip_transform)
    try:
        check_georeference(transform, tile.crs)
        to_lonlat = _to_lonlat(tile.crs.strip())
    except CRSError as exc:
        raise GeoreferenceError(f"tile CRS {tile.crs[:80]!r} is not usable: {exc}") from exc
    in_crs = _apply(transform, geometry)
    if to_lonlat is None:
        return in_crs

    def project(coords: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        lon, lat = to_lonlat.transform(coords[:, 0], coords[:, 1], errcheck=True)
        return np.column_stack([lon, lat])

    try:
        world = shapely.transform(in_crs, project)
    except ProjError as exc:
        raise GeoreferenceError(f"geometry does not project from {tile.crs} to EPSG:4326: {exc}") from exc
    if not all(math.isfinite(v) for v in world.bounds):
        raise GeoreferenceError(f"geometry projects outside EPSG:4326 from {tile.crs}")
    return world


def pixel_box(b: PixelBox) -> Polygon:
    """A ``PixelBox`` as a polygon (its x1/x2 and y1/y2 may come in any order; validate them before)."""
    return box(b.x1, b.y1, b.x2, b.y2)


def prompt_geometry(prompt: VisualPrompt) -> BaseGeometry:
    """The chip-pixel shape of a visual prompt: a point, a box, a polygon, or a scribble as the area its stroke
    covers. Raises ``ValueError`` for an empty or degenerate prompt."""
    shape = prompt.WhichOneof("shape")
    geometry: BaseGeometry
    if shape == "point":
        geometry = Point(prompt.point.x, prompt.point.y)
    elif shape == "box":
        geometry = pixel_box(prompt.box)
    elif shape == "polygon":
        if len(prompt.polygon.points) < 3:
            raise ValueError(f"a polygon prompt needs at least 3 points, got {len(prompt.polygon.points)}")
        geometry = Polygon([(p.x, p.y) for p in prompt.polygon.points])
    elif shape == "scribble":
        points = [(p.x, p.y) for p in prompt.scribble.points]
        if len(points) < 2:
            raise ValueError(f"a scribble prompt needs at least 2 points, got {len(points)}")
        # The stroke marks the region, so its area is the line widened by half the stroke on each side.
        geometry = LineString(points).buffer(max(prompt.scribble.stroke_width, 1.0) / 2.0)
    else:
        raise ValueError("visual prompt has no shape")
    if geometry.is_empty or not geometry.is_valid:
        raise ValueError(f"{shape} prompt is not a valid geometry")
    return geometry
