"""Scene footprints: densified edges, reprojection to EPSG:4326, and rasters that cannot be placed."""

from __future__ import annotations

import pytest
import shapely
from affine import Affine
from pyproj import CRS, Transformer
from rasterio.crs import CRS as RioCRS

from earthgptx.geo import GeoreferenceError, check_georeference, footprint_4326

UTM_33N = "EPSG:32633"
TEN_METRE = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_650_000.0)


def test_footprint_corners_are_the_raster_corners_in_lonlat() -> None:
    footprint = footprint_4326(TEN_METRE, UTM_33N, 1000, 500)
    to_lonlat = Transformer.from_crs(UTM_33N, "EPSG:4326", always_xy=True)
    vertices = {(round(x, 9), round(y, 9)) for x, y in footprint.exterior.coords}
    for col, row in [(0, 0), (1000, 0), (1000, 500), (0, 500)]:
        lon, lat = to_lonlat.transform(*(TEN_METRE @ (col, row)))
        assert (round(lon, 9), round(lat, 9)) in vertices
    assert footprint.is_valid and footprint.geom_type == "Polygon"


def test_edges_are_densified_and_follow_the_projection() -> None:
    # 100 km x 50 km: the longest edge gets 21 points, the shorter one the same spacing (11).
    footprint = footprint_4326(TEN_METRE, UTM_33N, 10_000, 5_000)
    assert len(footprint.exterior.coords) == 2 * 20 + 2 * 10 + 1
    coarse = footprint_4326(TEN_METRE, UTM_33N, 10_000, 5_000, points_per_edge=2)
    assert len(coarse.exterior.coords) == 5
    # A straight UTM edge away from the central meridian is curved in lon/lat: the densified outline differs.
    assert footprint.symmetric_difference(coarse).area > 0
    mid_bottom = Transformer.from_crs(UTM_33N, "EPSG:4326", always_xy=True).transform(
        *(TEN_METRE @ (5_000, 5_000))
    )
    assert shapely.Point(mid_bottom).distance(footprint.exterior) < 1e-9


def test_a_4326_raster_keeps_its_coordinates_and_crs_objects_are_accepted() -> None:
    transform = Affine(0.01, 0.0, 10.0, 0.0, -0.01, 50.0)
    footprint = footprint_4326(transform, "EPSG:4326", 100, 100)
    assert footprint.bounds == pytest.approx((10.0, 49.0, 11.0, 50.0))
    for crs in (CRS.from_epsg(32633), RioCRS.from_epsg(32633)):
        assert footprint_4326(TEN_METRE, crs, 10, 10).equals_exact(
            footprint_4326(TEN_METRE, UTM_33N, 10, 10), 1e-12
        )


@pytest.mark.parametrize(
    ("transform", "crs", "reason"),
    [
        (TEN_METRE, None, "no CRS"),
        (TEN_METRE, "  ", "no CRS"),
        (TEN_METRE, "EPSG:999999", "not usable"),
        (Affine.identity(), UTM_33N, "identity"),
        (Affine(0.0, 0.0, 500_000.0, 0.0, 0.0, 4_650_000.0), UTM_33N, "degenerate"),
    ],
)
def test_rasters_without_a_usable_georeference_are_refused(
    transform: Affine, crs: str | None, reason: str
) -> None:
    with pytest.raises(GeoreferenceError, match=reason):
        footprint_4326(transform, crs, 10, 10)
    with pytest.raises(GeoreferenceError, match=reason):
        check_georeference(transform, crs)


def test_bad_sizes_raise() -> None:
    with pytest.raises(ValueError, match="positive"):
        footprint_4326(TEN_METRE, UTM_33N, 0, 10)
    with pytest.raises(ValueError, match="at least 2"):
        footprint_4326(TEN_METRE, UTM_33N, 10, 10, points_per_edge=1)
