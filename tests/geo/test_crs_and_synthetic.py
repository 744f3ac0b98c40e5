"""The projection into lon/lat, UTM zones, and the random georeferences of synthetic chips."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from pyproj import Transformer
from shapely.geometry import Point, Polygon

from earthgptx.geo import GeoreferenceError, from_lonlat, random_georeference, to_lonlat, utm_epsg_for
from earthgptx.geo.crs import lonlat_transformer


def test_to_lonlat_projects_and_leaves_4326_alone() -> None:
    point = to_lonlat(Point(500_000.0, 0.0), "EPSG:32633")
    assert point.coords[0] == pytest.approx((15.0, 0.0), abs=1e-9)
    square = Polygon([(1, 2), (3, 2), (3, 4)])
    assert to_lonlat(square, "EPSG:4326") is square
    assert lonlat_transformer("EPSG:4326") is None
    assert lonlat_transformer(" EPSG:32633 ") is lonlat_transformer(" EPSG:32633 ")  # cached


def test_from_lonlat_is_the_inverse() -> None:
    assert from_lonlat(Point(15.0, 0.0), "EPSG:32633").coords[0] == pytest.approx((500_000.0, 0.0), abs=1e-6)
    square = Polygon([(500_000, 4_650_000), (501_000, 4_650_000), (501_000, 4_651_000)])
    assert from_lonlat(to_lonlat(square, "EPSG:32633"), "EPSG:32633").equals_exact(square, 1e-6)
    assert from_lonlat(square, "EPSG:4326") is square
    with pytest.raises(GeoreferenceError, match="not usable"):
        from_lonlat(Point(0, 0), "EPSG:999999")


def test_to_lonlat_error_paths() -> None:
    with pytest.raises(GeoreferenceError, match="not usable"):
        to_lonlat(Point(0, 0), "not a crs")
    with pytest.raises(GeoreferenceError, match="no CRS"):
        to_lonlat(Point(0, 0), "")


@pytest.mark.parametrize(
    ("lon", "lat", "epsg"),
    [
        (15.0, 42.0, 32633),
        (-180.0, 10.0, 32601),
        (180.0, 10.0, 32660),
        (2.35, -33.9, 32731),
        (-0.1, 51.5, 32630),
    ],
)
def test_utm_zone_of_a_place(lon: float, lat: float, epsg: int) -> None:
    assert utm_epsg_for(lon, lat) == epsg


def test_utm_zone_outside_its_domain_raises() -> None:
    with pytest.raises(ValueError, match="outside the UTM domain"):
        utm_epsg_for(0.0, 85.0)


def test_random_georeference_puts_the_corner_where_it_says() -> None:
    rng = np.random.default_rng(7)
    for _ in range(20):
        georef = random_georeference(rng)
        assert georef.epsg == utm_epsg_for(georef.lon, georef.lat)
        assert georef.crs.to_epsg() == georef.epsg
        assert 0.3 <= georef.pixel_size_m <= 10.0
        assert georef.transform.a == georef.pixel_size_m == -georef.transform.e  # north-up, square pixels
        back = Transformer.from_crs(georef.epsg, 4326, always_xy=True).transform(
            georef.transform.c, georef.transform.f
        )
        # Easting/northing are rounded to 1 cm.
        assert back == pytest.approx((georef.lon, georef.lat), abs=1e-6)
    assert random_georeference(np.random.default_rng(3)) == random_georeference(np.random.default_rng(3))


def test_the_geometry_modules_do_not_import_torch() -> None:
    code = (
        "import sys, earthgptx.geo, earthgptx.formats, earthgptx.visual_prompts; "
        "sys.exit(any(m == 'torch' or m.startswith('torch.') for m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
