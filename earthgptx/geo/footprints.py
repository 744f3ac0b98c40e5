"""Scene footprints: a raster's outline, with densified edges, as a lon/lat polygon (docs/architecture.md)."""

from __future__ import annotations

import shapely
from affine import Affine
from shapely.geometry import Polygon, box

from earthgptx.geo.affine import apply_affine
from earthgptx.geo.crs import CrsLike, GeoreferenceError, check_georeference, to_lonlat

__all__ = ["footprint_4326"]


def footprint_4326(
    transform: Affine, crs: CrsLike, width: int, height: int, *, points_per_edge: int = 21
) -> Polygon:
    """The outline of a ``width`` × ``height`` raster as a lon/lat polygon.

    The longest edge gets ``points_per_edge`` points (the others as many as the same spacing gives) before
    reprojection, so the footprint follows the curvature that straight edges in a projected CRS have in
    lon/lat. Footprints that cross the antimeridian are not split. Raises ``GeoreferenceError`` for a raster
    without a usable georeference.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"raster size must be positive, got {width} x {height}")
    if points_per_edge < 2:
        raise ValueError(f"points_per_edge must be at least 2, got {points_per_edge}")
    source = check_georeference(transform, crs)
    outline = shapely.segmentize(box(0, 0, width, height), max(width, height) / (points_per_edge - 1))
    footprint = to_lonlat(apply_affine(transform, outline), source)
    if not footprint.is_valid:
        raise GeoreferenceError("footprint is not a valid polygon in EPSG:4326 (antimeridian or pole?)")
    return shapely.normalize(footprint)  # type: ignore[no-any-return]
