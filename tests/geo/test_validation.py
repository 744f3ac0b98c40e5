"""Plausibility checks of chip georeferences (``earthgptx.geo.validation``): what cannot be is refused, with why."""

from __future__ import annotations

import math

import numpy as np
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


def test_the_batch_check_gives_every_tile_the_verdict_it_gets_alone() -> None:
    """The array screening of ``check_chip_georeferences`` refuses exactly what the one-tile check refuses, across
    CRSs, units, areas of use, the antimeridian and broken transforms (a screen that missed a case would store it)."""
    from earthgptx.geo.validation import _tile_reason

    rng = np.random.default_rng(20)
    cases = [
        ("EPSG:32633", 10.0, (200_000.0, 900_000.0), (0.0, 9_000_000.0)),  # UTM 33N: inside, edges, far out
        ("EPSG:4326", 0.0001, (-181.0, 181.0), (-91.0, 91.0)),  # geographic, past ±180/±90 too
        ("EPSG:4326", 10.0, (-1e6, 1e6), (-1e6, 1e6)),  # metres under degrees
        ("EPSG:32633", 0.0001, (-10.0, 50.0), (-10.0, 80.0)),  # degrees under metres
        ("EPSG:3035", 0.3, (1e6, 8e6), (1e6, 6e6)),  # LAEA Europe
        ("EPSG:3832", 30.0, (-2e7, 2e7), (-1e7, 1e7)),  # PDC Mercator: its area of use crosses the antimeridian
        ("", 10.0, (0.0, 1.0), (0.0, 1.0)),  # no CRS
        ("EPSG:999999", 10.0, (0.0, 1.0), (0.0, 1.0)),  # an unknown CRS
    ]
    tiles = []
    for crs, pixel, (x0, x1), (y0, y1) in cases:
        for _ in range(60):
            transform = Affine(pixel * rng.uniform(0.5, 2.0), 0.0, rng.uniform(x0, x1), 0.0, -pixel,
                               rng.uniform(y0, y1))
            tiles.append(make_tile(transform, crs or UTM_33N, Window(0, 0, 256, 256), 128, 128))
            tiles[-1].crs = crs
    broken = []
    for replace in ({"a": math.nan}, {"f": math.inf}, {"a": 0.0, "b": 0.0}, {"a": 1.0, "b": 0.0, "c": 0.0, "d": 0.0,
                                                                               "e": 1.0, "f": 0.0}):
        tile = TileWindow()
        tile.CopyFrom(tiles[0])
        for name, value in replace.items():
            setattr(tile.chip_transform, name, value)
        broken.append(tile)
    broken.append(TileWindow(chip_width=128, chip_height=128, crs=UTM_33N))
    tiles += broken
    order = rng.permutation(len(tiles))
    tiles = [tiles[i] for i in order]
    batch = check_chip_georeferences(tiles)
    alone = [_tile_reason(tile) for tile in tiles]
    assert batch == alone
    assert 0 < sum(reason is None for reason in batch) < len(batch) - 100  # both verdicts are well represented
