"""Scene outlines that may cross the antimeridian: split there with the ``antimeridian`` package, never refused.

``footprint_4326`` (``earthgptx.geo.footprints``) gives a densified lon/lat polygon and refuses outlines it cannot
make valid. A scene near 180° (eastern Russia, Fiji, the Aleutians) projects to a ring whose longitudes jump from
about +180 to about -180; ``scene_outline`` hands such a ring to ``antimeridian.fix_polygon``, which cuts it at
the meridian into a MultiPolygon (parts in [-180, 180]). Crossing latitudes are interpolated in plain lon/lat
(``great_circle=False``), the same straight edges PostGIS draws between the densified vertices.
"""

from __future__ import annotations

import antimeridian
import shapely
from affine import Affine
from shapely.geometry import MultiPolygon, Polygon, box

from earthgptx.geo.affine import apply_affine
from earthgptx.geo.crs import CrsLike, GeoreferenceError, check_georeference, to_lonlat

__all__ = ["scene_outline"]


def scene_outline(
    transform: Affine, crs: CrsLike, width: int, height: int, *, points_per_edge: int = 21
) -> Polygon | MultiPolygon:
    """The outline of a ``width`` × ``height`` raster in EPSG:4326, split at the antimeridian when it crosses it.

    Edges are densified before reprojection (the longest edge gets ``points_per_edge`` points). Raises
    ``GeoreferenceError`` when the raster cannot be placed on Earth or its outline is not a valid area.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"raster size must be positive, got {width} x {height}")
    if points_per_edge < 2:
        raise ValueError(f"points_per_edge must be at least 2, got {points_per_edge}")
    source = check_georeference(transform, crs)
    ring = box(0, 0, width, height)
    if transform.determinant < 0:
        # Rows grow southwards in a north-up raster, which turns the counter-clockwise pixel box clockwise on the
        # map; start from the other winding so the lon/lat ring comes out counter-clockwise (what GeoJSON and
        # the antimeridian package expect).
        ring = ring.reverse()
    outline = shapely.segmentize(ring, max(width, height) / (points_per_edge - 1))
    lonlat = to_lonlat(apply_affine(transform, outline), source)
    if not isinstance(lonlat, Polygon):
        raise GeoreferenceError(f"outline projects to a {lonlat.geom_type}, not a polygon")
    fixed = antimeridian.fix_polygon(lonlat, fix_winding=True, great_circle=False)
    if not fixed.is_valid or fixed.is_empty:
        raise GeoreferenceError("outline is not a valid area in EPSG:4326 (does it cover a pole?)")
    return shapely.normalize(fixed)  # type: ignore[no-any-return]
