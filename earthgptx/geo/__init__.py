"""Georeferencing, written once: rasterio's ``Affine`` for pixel -> CRS, pyproj (``always_xy``) for CRS -> lon/lat,
shapely for geometry. No projection math is written here, and nothing here imports torch.

- ``crs``: the georeference check, ``GeoreferenceError`` and the projection to and from EPSG:4326;
- ``affine``: affine maps applied to geometries, and the ``AffineTransform`` message;
- ``chips``: chip pixels -> scene pixels, and chip pixels <-> lon/lat through a tile's own chip transform;
- ``footprints``: a raster's outline as a densified lon/lat polygon (``outline``: split at the antimeridian);
- ``validation``: whether a chip's transform is plausible in its CRS (units, area of use);
- ``synthetic``: random UTM georeferences for generated chips.
"""

from earthgptx.geo.affine import affine_from_message, affine_to_message, apply_affine
from earthgptx.geo.chips import (
    chip_to_scene,
    chip_to_scene_transform,
    chip_to_world,
    chip_transform_for,
    is_georeferenced,
    make_tile,
    world_to_chip,
)
from earthgptx.geo.crs import (
    WGS84,
    CrsLike,
    GeoreferenceError,
    check_georeference,
    from_lonlat,
    to_lonlat,
    utm_epsg_for,
)
from earthgptx.geo.footprints import footprint_4326
from earthgptx.geo.synthetic import GeoReference, random_georeference

__all__ = [
    "WGS84",
    "CrsLike",
    "GeoReference",
    "GeoreferenceError",
    "affine_from_message",
    "affine_to_message",
    "apply_affine",
    "check_georeference",
    "chip_to_scene",
    "chip_to_scene_transform",
    "chip_to_world",
    "chip_transform_for",
    "footprint_4326",
    "from_lonlat",
    "is_georeferenced",
    "make_tile",
    "random_georeference",
    "to_lonlat",
    "utm_epsg_for",
    "world_to_chip",
]
