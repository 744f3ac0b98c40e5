"""Random but valid georeferences for synthetic chips: a UTM CRS matching a random lon/lat, north-up.

The projection itself goes through pyproj (``always_xy``); only the choice of the UTM zone number is done
here, by its definition (6° bands from 180° W), which is all the EPSG codes 326xx/327xx encode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from affine import Affine
from pyproj import Transformer
from rasterio.crs import CRS as RioCRS

# UTM is defined from 80° S to 84° N; stay inside with room for the chip itself.
LATITUDE_RANGE = (-79.0, 83.0)
PIXEL_SIZE_RANGE_M = (0.3, 10.0)


@dataclass(frozen=True)
class GeoReference:
    """Where a chip lies: its CRS (EPSG code), its affine transform and the lon/lat of its top-left corner."""

    epsg: int
    transform: Affine
    lon: float
    lat: float
    pixel_size_m: float

    @property
    def crs(self) -> RioCRS:
        return _rio_crs(self.epsg)


def utm_epsg_for(lon: float, lat: float) -> int:
    """EPSG code of the WGS 84 UTM zone that contains ``(lon, lat)`` (326xx north, 327xx south)."""
    if not -180.0 <= lon <= 180.0 or not -80.0 <= lat <= 84.0:
        raise ValueError(f"({lon}, {lat}) is outside the UTM domain")
    zone = min(int(math.floor((lon + 180.0) / 6.0)) + 1, 60)
    return (32600 if lat >= 0.0 else 32700) + zone


@lru_cache(maxsize=256)
def _rio_crs(epsg: int) -> RioCRS:
    return RioCRS.from_epsg(epsg)


@lru_cache(maxsize=256)
def _to_utm(epsg: int) -> Transformer:
    # Building a Transformer costs milliseconds; a dataset touches at most 120 zones.
    return Transformer.from_crs(4326, epsg, always_xy=True)


def random_georeference(rng: np.random.Generator) -> GeoReference:
    """A north-up UTM georeference at a random place, with a log-uniform pixel size of 0.3–10 m."""
    lon = float(rng.uniform(-180.0, 180.0))
    lat = float(rng.uniform(*LATITUDE_RANGE))
    epsg = utm_epsg_for(lon, lat)
    easting, northing = _to_utm(epsg).transform(lon, lat)
    low, high = PIXEL_SIZE_RANGE_M
    pixel_size = float(round(math.exp(rng.uniform(math.log(low), math.log(high))), 3))
    transform = Affine(pixel_size, 0.0, round(easting, 2), 0.0, -pixel_size, round(northing, 2))  # north-up
    return GeoReference(epsg=epsg, transform=transform, lon=lon, lat=lat, pixel_size_m=pixel_size)
