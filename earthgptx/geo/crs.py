"""Coordinate reference systems: the georeference check and the one projection into EPSG:4326.

pyproj does the projecting, always with ``always_xy`` (x = easting/longitude first); shapely applies it to
whole geometries. A geometry that cannot be placed on Earth raises ``GeoreferenceError`` with the reason.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, TypeAlias

import numpy as np
import shapely
from affine import Affine
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError, ProjError
from rasterio.crs import CRS as RioCRS
from shapely.geometry.base import BaseGeometry

__all__ = [
    "WGS84",
    "CrsLike",
    "GeoreferenceError",
    "check_georeference",
    "from_lonlat",
    "lonlat_transformer",
    "to_lonlat",
    "transformer_from_lonlat",
    "utm_epsg_for",
]

WGS84 = CRS.from_epsg(4326)

CrsLike: TypeAlias = CRS | RioCRS | str | None
"""A pyproj or rasterio CRS, or text pyproj accepts (an ``"EPSG:xxxx"`` code, WKT); None means no CRS."""


class GeoreferenceError(ValueError):
    """A raster or geometry has no usable georeference (missing or unknown CRS, identity or degenerate
    transform, or coordinates that do not project into EPSG:4326)."""


def _crs(crs: CrsLike) -> CRS:
    if crs is None or (isinstance(crs, str) and not crs.strip()):
        raise GeoreferenceError("raster has no CRS")
    try:
        return CRS.from_user_input(crs.strip() if isinstance(crs, str) else crs)
    except CRSError as exc:
        raise GeoreferenceError(f"CRS {str(crs)[:80]!r} is not usable: {exc}") from exc


def check_georeference(transform: Affine, crs: CrsLike) -> CRS:
    """The raster's CRS, or ``GeoreferenceError`` saying why it cannot be placed on Earth."""
    source = _crs(crs)
    if transform.is_identity:
        # GDAL's default transform for rasters without a georeference; taking it at face value would
        # place the scene at (0, 0).
        raise GeoreferenceError("raster has the identity transform (no georeference)")
    if transform.is_degenerate:
        raise GeoreferenceError(f"raster transform is degenerate: {tuple(transform)[:6]}")
    return source


@lru_cache(maxsize=256)
def _transformer(key: str, to_wgs84: bool) -> Transformer | None:
    crs = _crs(key)
    if crs.equals(WGS84):
        return None
    # Building a Transformer costs milliseconds; a deployment sees a handful of CRSs.
    if to_wgs84:
        return Transformer.from_crs(crs, WGS84, always_xy=True)
    return Transformer.from_crs(WGS84, crs, always_xy=True)


def _key(crs: CrsLike) -> str:
    return crs.strip() if isinstance(crs, str) else str(_crs(crs).srs)


def lonlat_transformer(crs: CrsLike) -> Transformer | None:
    """The (cached) transformer from ``crs`` to EPSG:4326 (lon, lat), or None when ``crs`` already is EPSG:4326."""
    return _transformer(_key(crs), True)


def transformer_from_lonlat(crs: CrsLike) -> Transformer | None:
    """The (cached) transformer from EPSG:4326 (lon, lat) to ``crs``, or None when ``crs`` is EPSG:4326."""
    return _transformer(_key(crs), False)


def _project(geometry: BaseGeometry, transformer: Transformer | None, route: str) -> BaseGeometry:
    if transformer is None:
        return geometry

    def project(coords: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        x, y = transformer.transform(coords[:, 0], coords[:, 1], errcheck=True)
        return np.column_stack([x, y])

    try:
        projected = shapely.transform(geometry, project)
    except ProjError as exc:
        raise GeoreferenceError(f"geometry does not project {route}: {exc}") from exc
    if not all(math.isfinite(v) for v in projected.bounds):
        raise GeoreferenceError(f"geometry projects to non-finite coordinates {route}")
    return projected


def to_lonlat(geometry: BaseGeometry, crs: CrsLike) -> BaseGeometry:
    """``geometry`` (coordinates in ``crs``) in EPSG:4326 (lon, lat).

    Raises ``GeoreferenceError`` when the CRS is unusable or a coordinate does not project.
    """
    return _project(geometry, lonlat_transformer(crs), f"from {str(crs)[:80]} to EPSG:4326")


def from_lonlat(geometry: BaseGeometry, crs: CrsLike) -> BaseGeometry:
    """``geometry`` (lon, lat in EPSG:4326) in ``crs`` (x = easting first).

    Raises ``GeoreferenceError`` when the CRS is unusable or a coordinate does not project.
    """
    return _project(geometry, transformer_from_lonlat(crs), f"from EPSG:4326 to {str(crs)[:80]}")


def utm_epsg_for(lon: float, lat: float) -> int:
    """EPSG code of the WGS 84 UTM zone that contains ``(lon, lat)`` (326xx north, 327xx south).

    Only the zone number is computed, by its definition (6° bands from 180° W), which is all the EPSG codes
    326xx/327xx encode; projecting into the zone is pyproj's job.
    """
    if not -180.0 <= lon <= 180.0 or not -80.0 <= lat <= 84.0:
        raise ValueError(f"({lon}, {lat}) is outside the UTM domain")
    zone = min(int(math.floor((lon + 180.0) / 6.0)) + 1, 60)
    return (32600 if lat >= 0.0 else 32700) + zone
