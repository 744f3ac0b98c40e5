"""Plausibility checks of chip georeferences (``earthgptx.geo.validation``): what cannot be is refused, with why."""

from __future__ import annotations

import math

import pytest
from affine import Affine
from rasterio.windows import Window

from earthgptx.geo import GeoreferenceError, make_tile
from earthgptx.geo.validation import check_chip_georeference, check_chip_georeferences, check_transform_in_crs
from earthgptx.v1.events_pb2 import TileWindow

UTM_33N = "EPSG:32633"
UTM = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_650_000.0)


@pytest.mark.parametrize(
    ("transform", "crs"),
    [
        (UTM, UTM_33N),
        (Affine(0.0001, 0.0, 10.5, 0.0, -0.0001, 45.2), "EPSG:4326"),
        (Affine(0.0001, 0.0, 179.99, 0.0, -0.0001, -16.0), "EPSG:4326"),  # at the antimeridian
        (Affine(0.3, 0.0, 3_000_000.0, 0.0, -0.3, 2_000_000.0), "EPSG:3035"),  # LAEA Europe
    ],
)
def test_plausible_georeferences_pass(transform: Affine, crs: str) -> None:
    check_transform_in_crs(transform, crs, 128, 128)


@pytest.mark.parametrize(
    ("transform", "crs", "reason"),
    [
        # The probe's case: UTM metres under EPSG:4326 put a box at "longitude 1011920".
        (Affine(10.0, 0.0, 1_011_920.0, 0.0, -10.0, 5_999_400.0), "EPSG:4326", "looks like metres"),
        (Affine(0.5, 0.0, 1_011_920.0, 0.0, -0.5, 5_999_400.0), "EPSG:4326", "outside the area of use"),
        (Affine(0.0001, 0.0, 10.5, 0.0, -0.0001, 45.2), UTM_33N, "looks like degrees"),
        (Affine(10.0, 0.0, 5_000_000.0, 0.0, -10.0, 4_650_000.0), UTM_33N, "outside the area of use"),
        (Affine(math.nan, 0.0, 1.0, 0.0, -1.0, 2.0), UTM_33N, "non-finite"),
        (Affine(math.inf, 0.0, 1.0, 0.0, -1.0, 2.0), UTM_33N, "non-finite"),
    ],
    ids=["metres-under-4326", "metres-under-4326-small-pixels", "degrees-under-utm", "far-outside-the-zone", "nan",
         "inf"],
)
def test_georeferences_that_cannot_be_are_refused_with_the_reason(transform: Affine, crs: str, reason: str) -> None:
    with pytest.raises(GeoreferenceError, match=reason):
        check_transform_in_crs(transform, crs, 128, 128)


def test_many_tiles_are_checked_at_once_and_each_gets_its_own_verdict() -> None:
    good = make_tile(UTM, UTM_33N, Window(0, 0, 256, 256), 128, 128)
    nan = TileWindow()
    nan.CopyFrom(good)
    nan.chip_transform.c = math.nan
    wrong_zone = TileWindow()
    wrong_zone.CopyFrom(good)
    wrong_zone.chip_transform.c = 5_000_000.0
    missing = TileWindow(chip_width=128, chip_height=128, crs=UTM_33N)
    reasons = check_chip_georeferences([good, nan, wrong_zone, missing, good])
    assert reasons[0] is None and reasons[4] is None
    assert "non-finite" in str(reasons[1]) and "area of use" in str(reasons[2]) and "no chip transform" in str(reasons[3])
    check_chip_georeference(good)
    with pytest.raises(GeoreferenceError, match="non-finite"):
        check_chip_georeference(nan)
