"""Plausibility of a chip's georeference before anything is stored with it.

``check_chip_georeference`` refuses, with a reason a person can act on, what ``chip_to_world`` would otherwise
turn into coordinates that cannot be: a transform with a NaN or infinite coefficient, a transform whose units do
not match the CRS (metres under EPSG:4326 put a box at "longitude 1011920"; degrees under a UTM zone put it a few
metres from the zone's false origin), and a chip outside the area where its CRS is valid (pyproj's
``area_of_use``). The checks are deliberately loose where real data varies: UTM zones are used a few degrees
beyond their official bounds, and pixel sizes from centimetres to tens of kilometres are all accepted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from affine import Affine
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError, ProjError

from earthgptx.geo.crs import GeoreferenceError, lonlat_transformer
from earthgptx.v1.events_pb2 import TileWindow

__all__ = ["check_chip_georeference", "check_chip_georeferences", "check_transform_in_crs"]

# Largest plausible pixel: a degree (geographic CRS) or 100 km (projected); smallest: a millimetre (projected).
MAX_PIXEL_DEGREES = 1.0
MAX_PIXEL_METRES = 100_000.0
MIN_PIXEL_METRES = 0.001
# How far beyond a projected CRS's area of use a chip may lie (UTM zones are routinely used across zone edges).
PROJECTED_MARGIN_DEGREES = 5.0
GEOGRAPHIC_MARGIN_DEGREES = 1e-6


@dataclass(frozen=True)
class _CrsFacts:
    crs: CRS
    to_lonlat: Transformer | None
    bounds: tuple[float, float, float, float] | None  # west, south, east, north in degrees
    metres_per_unit: float | None  # projected CRSs only


@lru_cache(maxsize=128)
def _facts(crs_text: str) -> _CrsFacts:
    crs = CRS.from_user_input(crs_text)
    area = crs.area_of_use
    bounds = (area.west, area.south, area.east, area.north) if area is not None else None
    metres = None
    if crs.is_projected and crs.axis_info:
        metres = crs.axis_info[0].unit_conversion_factor
    to_lonlat = lonlat_transformer(crs_text)
    return _CrsFacts(crs, to_lonlat, bounds, metres)


def check_chip_georeference(tile: TileWindow) -> None:
    """Raise ``GeoreferenceError`` unless the tile's chip transform and CRS can place the chip on Earth."""
    [reason] = check_chip_georeferences([tile])
    if reason is not None:
        raise GeoreferenceError(reason)


def check_transform_in_crs(transform: Affine, crs: str, width: int, height: int) -> None:
    """Raise ``GeoreferenceError`` unless a ``width`` x ``height`` raster with ``transform`` is plausible in ``crs``."""
    if not all(math.isfinite(v) for v in tuple(transform)[:6]):
        raise GeoreferenceError(f"transform has a non-finite coefficient {list(tuple(transform)[:6])}")
    facts = _check_units(tuple(transform)[:6], crs)
    corners = [transform @ (col, row) for col in (0, width) for row in (0, height)]
    xs, ys = [x for x, _ in corners], [y for _, y in corners]
    if facts.to_lonlat is not None:
        try:
            lon, lat = facts.to_lonlat.transform(xs, ys, errcheck=True)
        except ProjError as exc:
            raise GeoreferenceError(f"chip corners {corners} do not project from {crs} to EPSG:4326: {exc}") from exc
        lons, lats = list(lon), list(lat)
    else:
        lons, lats = xs, ys
    reason = _outside_area_of_use(facts, crs, corners, lons, lats)
    if reason is not None:
        raise GeoreferenceError(reason)


def check_chip_georeferences(tiles: list[TileWindow]) -> list[str | None]:
    """``check_chip_georeference`` for many tiles at once: the reason each is refused, or None.

    The checks run as array operations per CRS (one pyproj call for every corner of its tiles); a tile they flag
    is then checked alone (``_tile_reason``), which words the reason. A batch of results costs a few array
    operations instead of a transform and a few dozen Python steps per tile.
    """
    reasons: list[str | None] = [None] * len(tiles)
    by_crs: dict[str, list[int]] = {}
    for index, tile in enumerate(tiles):
        by_crs.setdefault(tile.crs.strip(), []).append(index)
    for crs, indices in by_crs.items():
        try:
            facts = _facts(crs) if crs else None
        except CRSError:
            facts = None
        flagged = indices if facts is None else [indices[k] for k in _flag(facts, [tiles[i] for i in indices])]
        for index in flagged:
            reasons[index] = _tile_reason(tiles[index])
    return reasons


def _flag(facts: _CrsFacts, tiles: list[TileWindow]) -> list[int]:
    """Positions of the tiles (all of one CRS) that any check of ``_tile_reason`` might refuse."""
    has = np.array([tile.HasField("chip_transform") for tile in tiles])
    coefficients = np.array([(t.a, t.b, t.c, t.d, t.e, t.f) for t in (tile.chip_transform for tile in tiles)],
                            dtype=float).reshape(-1, 6)
    a, b, c, d, e, f = coefficients.T
    with np.errstate(invalid="ignore", over="ignore"):
        suspect = ~has | ~np.isfinite(coefficients).all(axis=1)
        suspect |= (coefficients == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)).all(axis=1) | (a * e - b * d == 0.0)
        pixel = np.maximum(np.hypot(a, d), np.hypot(b, e))
        if facts.crs.is_geographic:
            suspect |= pixel > MAX_PIXEL_DEGREES
        if facts.metres_per_unit is not None:
            metres = pixel * facts.metres_per_unit
            suspect |= (metres < MIN_PIXEL_METRES) | (metres > MAX_PIXEL_METRES)
        sizes = np.array([(tile.chip_width, tile.chip_height) for tile in tiles], dtype=float).reshape(-1, 2)
        # The corners in _tile_reason's order: (0, 0), (0, h), (w, 0), (w, h) as (col, row).
        cols = sizes[:, :1] * np.array([0.0, 0.0, 1.0, 1.0])
        rows = sizes[:, 1:] * np.array([0.0, 1.0, 0.0, 1.0])
        xs = a[:, None] * cols + b[:, None] * rows + c[:, None]
        ys = d[:, None] * cols + e[:, None] * rows + f[:, None]
        checked = ~suspect
        if facts.to_lonlat is not None and checked.any():
            lon, lat = facts.to_lonlat.transform(xs[checked].ravel(), ys[checked].ravel(), errcheck=False)
            xs[checked] = np.asarray(lon, dtype=float).reshape(-1, 4)
            ys[checked] = np.asarray(lat, dtype=float).reshape(-1, 4)
        suspect |= ~(np.isfinite(xs).all(axis=1) & np.isfinite(ys).all(axis=1))
        if facts.bounds is not None:
            margin = GEOGRAPHIC_MARGIN_DEGREES if facts.crs.is_geographic else PROJECTED_MARGIN_DEGREES
            west, south, east, north = facts.bounds
            if facts.crs.is_geographic and (west, east) == (-180.0, 180.0):
                west, east = -360.0, 360.0
            inside = ((ys >= south - margin) & (ys <= north + margin)).all(axis=1)
            if west <= east:
                inside &= ((xs >= west - margin) & (xs <= east + margin)).all(axis=1)
            else:
                inside &= ((xs >= west - margin) | (xs <= east + margin)).all(axis=1)
            suspect |= ~inside
    return np.flatnonzero(suspect).tolist()


def _tile_reason(tile: TileWindow) -> str | None:
    """Every check of one tile, worded (what ``_flag`` screens for in bulk): ``check_transform_in_crs`` on the
    chip's transform and size."""
    if not tile.HasField("chip_transform"):
        return "tile has no chip transform"
    t = tile.chip_transform
    coefficients = (t.a, t.b, t.c, t.d, t.e, t.f)
    if not all(math.isfinite(v) for v in coefficients):
        return f"chip transform has a non-finite coefficient {list(coefficients)}"
    try:
        check_transform_in_crs(Affine(*coefficients), tile.crs, tile.chip_width, tile.chip_height)
    except GeoreferenceError as exc:
        return str(exc)
    return None


def _check_units(coefficients: tuple[float, ...], crs: str) -> _CrsFacts:
    """The georeference check of ``earthgptx.geo.crs`` on plain coefficients (no per-tile CRS parsing), then
    whether the pixel size is plausible in the CRS's units."""
    if not crs.strip():
        raise GeoreferenceError("raster has no CRS")
    try:
        facts = _facts(crs.strip())
    except CRSError as exc:
        raise GeoreferenceError(f"CRS {crs[:80]!r} is not usable: {exc}") from exc
    a, b, _, d, e, _ = coefficients
    if tuple(coefficients) == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0):
        raise GeoreferenceError("raster has the identity transform (no georeference)")
    if a * e - b * d == 0.0:
        raise GeoreferenceError(f"raster transform is degenerate: {tuple(coefficients)}")
    pixel = max(math.hypot(a, d), math.hypot(b, e))
    if facts.crs.is_geographic and pixel > MAX_PIXEL_DEGREES:
        raise GeoreferenceError(
            f"pixel size {pixel:g} is in degrees under {crs} and larger than {MAX_PIXEL_DEGREES}°: the transform "
            "looks like metres (a projected CRS) while the CRS is geographic"
        )
    if facts.metres_per_unit is not None:
        metres = pixel * facts.metres_per_unit
        if metres < MIN_PIXEL_METRES:
            raise GeoreferenceError(
                f"pixel size {metres:g} m under {crs} is below {MIN_PIXEL_METRES} m: the transform looks like "
                "degrees while the CRS is projected"
            )
        if metres > MAX_PIXEL_METRES:
            raise GeoreferenceError(f"pixel size {metres:g} m under {crs} is larger than {MAX_PIXEL_METRES:g} m")
    return facts


def _outside_area_of_use(
    facts: _CrsFacts, crs: str, corners: list[tuple[float, float]], lons: list[float], lats: list[float]
) -> str | None:
    if not all(math.isfinite(v) for v in (*lons, *lats)):
        return f"chip corners {corners} do not project from {crs} to EPSG:4326"
    if facts.bounds is None:
        return None
    margin = GEOGRAPHIC_MARGIN_DEGREES if facts.crs.is_geographic else PROJECTED_MARGIN_DEGREES
    west, south, east, north = facts.bounds
    inside_lat = all(south - margin <= v <= north + margin for v in lats)
    if facts.crs.is_geographic and (west, east) == (-180.0, 180.0):
        # Longitudes past ±180 are how a geographic raster crosses the antimeridian (0..360 grids too).
        west, east = -360.0, 360.0
    if west <= east:
        inside_lon = all(west - margin <= v <= east + margin for v in lons)
    else:  # the area of use crosses the antimeridian
        inside_lon = all(v >= west - margin or v <= east + margin for v in lons)
    if inside_lat and inside_lon:
        return None
    return (
        f"chip corners (lon, lat) {[(round(a, 4), round(b, 4)) for a, b in zip(lons, lats, strict=True)]} "
        f"lie outside the area of use of {crs} ({west}, {south}, {east}, {north}): the transform does not "
        "belong to this CRS"
    )
