"""Georeferencing helpers: raster outlines to EPSG:4326 footprints (rasterio affine, pyproj, shapely).

No projection math is written here: the affine transform maps pixels to the source CRS, pyproj (``always_xy``,
so x = easting/longitude first) maps that to lon/lat, and shapely densifies and assembles the geometry.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import shapely
import shapely.affinity
from affine import Affine
from pyproj import CRS, Transformer
from shapely.geometry import Polygon, box

WGS84 = CRS.from_epsg(4326)


class GeoreferenceError(ValueError):
    """A raster has no usable georeference (missing CRS, identity or degenerate transform)."""


def check_georeference(transform: Affine, crs: CRS | str | None) -> CRS:
    """The raster's CRS, or ``GeoreferenceError`` saying why it cannot be placed on Earth."""
    if crs is None or (isinstance(crs, str) and not crs.strip()):
        raise GeoreferenceError("raster has no CRS")
    if transform.is_identity:
        # GDAL's default transform for rasters without a georeference; taking it at face value would
        # place the scene at (0, 0).
        raise GeoreferenceError("raster has the identity transform (no georeference)")
    if transform.is_degenerate:
        raise GeoreferenceError(f"raster transform is degenerate: {tuple(transform)[:6]}")
    return CRS.from_user_input(crs)


def footprint_4326(
    transform: Affine, crs: CRS | str | None, width: int, height: int, *, points_per_edge: int = 21
) -> Polygon:
    """The outline of a ``width`` × ``height`` raster as a lon/lat polygon.

    The longest edge gets ``points_per_edge`` points (the others as many as the same spacing gives) before
    reprojection, so the footprint follows the curvature that straight edges in a projected CRS have in lon/lat. Footprints that cross the antimeridian are not split.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"raster size must be positive, got {width} x {height}")
    if points_per_edge < 2:
        raise ValueError(f"points_per_edge must be at least 2, got {points_per_edge}")
    source = check_georeference(transform, crs)
    longest_edge = max(width, height)
    outline = shapely.segmentize(box(0, 0, width, height), longest_edge / (points_per_edge - 1))
    a, b, c, d, e, f = tuple(transform)[:6]
    in_source = shapely.affinity.affine_transform(outline, [a, b, d, e, c, f])
    if source.equals(WGS84):
        return shapely.normalize(in_source)  # type: ignore[no-any-return]
    to_lonlat = Transformer.from_crs(source, WGS84, always_xy=True)

    def project(coords: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        lon, lat = to_lonlat.transform(coords[:, 0], coords[:, 1], errcheck=True)
        return np.column_stack([lon, lat])

    footprint = shapely.transform(in_source, project)
    if not footprint.is_valid:
        raise GeoreferenceError("footprint is not a valid polygon in EPSG:4326 (antimeridian or pole?)")
    return shapely.normalize(footprint)  # type: ignore[no-any-return]
