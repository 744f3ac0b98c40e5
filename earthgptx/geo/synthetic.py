"""Random but valid georeferences for synthetic chips: a UTM CRS matching a random lon/lat, north-up."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from affine import Affine
from pyproj import Transformer
from rasterio.crs import CRS as RioCRS

from earthgptx.geo.crs import utm_epsg_for

__all__ = ["LATITUDE_RANGE", "PIXEL_SIZE_RANGE_M", "GeoReference", "random_georeference"]

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


@lru_cache(maxsize=256)
def _rio_crs(epsg: int) -> RioCRS:
    return RioCRS.from_epsg(epsg)


@lru_cache(maxsize=256)
def _from_lonlat(epsg: int) -> Transformer:
    # Building a Transformer costs milliseconds; a dataset touches at most 120 zones.
    return Transformer.from_crs(4326, epsg, always_xy=True)


def random_georeference(rng: np.random.Generator) -> GeoReference:
    """A north-up UTM georeference at a random place, with a log-uniform pixel size of 0.3–10 m."""
    lon = float(rng.uniform(-180.0, 180.0))
    lat = float(rng.uniform(*LATITUDE_RANGE))
    epsg = utm_epsg_for(lon, lat)
    easting, northing = _from_lonlat(epsg).transform(lon, lat)
    low, high = PIXEL_SIZE_RANGE_M
    pixel_size = float(round(math.exp(rng.uniform(math.log(low), math.log(high))), 3))
    transform = Affine(pixel_size, 0.0, round(easting, 2), 0.0, -pixel_size, round(northing, 2))  # north-up
    return GeoReference(epsg=epsg, transform=transform, lon=lon, lat=lat, pixel_size_m=pixel_size)
