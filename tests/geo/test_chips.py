"""Chip pixels <-> world through a tile's own chip transform (UTM and EPSG:4326), and the error paths."""

from __future__ import annotations

import pytest
from affine import Affine
from pyproj import Transformer
from rasterio.windows import Window
from shapely.geometry import LineString, Point, Polygon, box

from earthgptx.geo import (
    GeoreferenceError,
    affine_from_message,
    affine_to_message,
    apply_affine,
    chip_to_scene,
    chip_to_scene_transform,
    chip_to_world,
    chip_transform_for,
    is_georeferenced,
    make_tile,
    world_to_chip,
)

UTM_33N = "EPSG:32633"
# 0.5 m pixels; column 0 lies on the central meridian of zone 33 (15° E), where easting is 500 000 m.
UTM_TRANSFORM = Affine(0.5, 0.0, 500_000.0, 0.0, -0.5, 4_650_000.0)
# 0.001° pixels, north-up, top-left corner at (10° E, 50° N).
LONLAT_TRANSFORM = Affine(0.001, 0.0, 10.0, 0.0, -0.001, 50.0)
WINDOW = Window(64, 32, 256, 256)  # chipped at half resolution (128 px)


def world_to_chip_point(tile_transform: Affine, crs: str, lon: float, lat: float) -> tuple[float, float]:
    """The inverse path, computed independently: lon/lat -> CRS (pyproj) -> chip pixel (inverse affine)."""
    x, y = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(lon, lat)
    col, row = ~tile_transform @ (x, y)
    return col, row


@pytest.mark.parametrize(
    ("scene_transform", "crs"), [(UTM_TRANSFORM, UTM_33N), (LONLAT_TRANSFORM, "EPSG:4326")]
)
def test_chip_pixels_round_trip_through_the_world(scene_transform: Affine, crs: str) -> None:
    tile = make_tile(scene_transform, crs, WINDOW, 128, 128)
    chip_transform = affine_from_message(tile.chip_transform)
    for x, y in [(0.0, 0.0), (127.5, 3.25), (64.0, 64.0), (128.0, 128.0)]:
        world = chip_to_world(tile, Point(x, y))
        back = world_to_chip_point(chip_transform, crs, world.x, world.y)
        assert back == pytest.approx((x, y), abs=1e-6)


@pytest.mark.parametrize(
    ("scene_transform", "crs"), [(UTM_TRANSFORM, UTM_33N), (LONLAT_TRANSFORM, "EPSG:4326")]
)
def test_world_to_chip_inverts_chip_to_world(scene_transform: Affine, crs: str) -> None:
    tile = make_tile(scene_transform, crs, WINDOW, 128, 128)
    chip_transform = affine_from_message(tile.chip_transform)
    shape = Polygon([(3.5, 4.0), (120.0, 10.0), (60.0, 127.0)])
    world = chip_to_world(tile, shape)
    back = world_to_chip(tile, world)
    assert back.equals_exact(shape, 1e-6)
    # Against the independent inverse, vertex by vertex.
    for (lon, lat), (x, y) in zip(world.exterior.coords, back.exterior.coords, strict=True):
        assert world_to_chip_point(chip_transform, crs, lon, lat) == pytest.approx((x, y), abs=1e-6)


def test_world_to_chip_does_not_clip_and_needs_a_georeference() -> None:
    tile = make_tile(UTM_TRANSFORM, UTM_33N, WINDOW, 128, 128)
    far = chip_to_world(tile, Point(-50.0, 300.0))
    assert world_to_chip(tile, far).coords[0] == pytest.approx((-50.0, 300.0), abs=1e-6)
    with pytest.raises(GeoreferenceError, match="no georeference"):
        world_to_chip(make_tile(None, None, WINDOW, 128, 128), far)


def test_chip_transform_is_scene_transform_times_window_times_resize() -> None:
    transform = chip_transform_for(UTM_TRANSFORM, WINDOW, 128, 128)
    # Chip pixel (x, y) is scene pixel (64 + 2x, 32 + 2y).
    assert transform @ (10, 20) == pytest.approx(UTM_TRANSFORM @ (64 + 20, 32 + 40))
    tile = make_tile(UTM_TRANSFORM, UTM_33N, WINDOW, 128, 128, tile_index=7)
    assert tile.tile_index == 7 and tile.crs == UTM_33N
    assert tuple(affine_from_message(tile.chip_transform)) == pytest.approx(tuple(transform))
    assert affine_from_message(affine_to_message(transform)) == transform


def test_chip_to_scene_moves_by_the_window_and_resizes() -> None:
    tile = make_tile(UTM_TRANSFORM, UTM_33N, WINDOW, 128, 128)
    assert chip_to_scene(tile, box(10, 20, 30, 40)).equals(box(84, 72, 124, 112))
    assert chip_to_scene_transform(tile) @ (0, 0) == (64, 32)


def test_chip_to_world_in_utm_lands_on_the_central_meridian() -> None:
    tile = make_tile(UTM_TRANSFORM, UTM_33N, Window(0, 0, 128, 128), 128, 128)
    corner = chip_to_world(tile, Point(0, 0))
    assert corner.x == pytest.approx(15.0, abs=1e-9) and 41.9 < corner.y < 42.1
    line = chip_to_world(tile, LineString([(0, 0), (128, 128)]))
    assert line.geom_type == "LineString" and line.bounds[0] == pytest.approx(15.0, abs=1e-9)


def test_chip_to_world_in_4326_is_the_affine_only() -> None:
    tile = make_tile(LONLAT_TRANSFORM, "EPSG:4326", Window(0, 0, 100, 100), 100, 100)
    assert chip_to_world(tile, Point(50, 50)).coords[0] == pytest.approx((10.05, 49.95))
    assert apply_affine(LONLAT_TRANSFORM, Point(0, 0)).coords[0] == (10.0, 50.0)


def test_ungeoreferenced_tiles_and_bad_georeferences_raise() -> None:
    plain = make_tile(None, None, WINDOW, 128, 128)
    assert not is_georeferenced(plain)
    with pytest.raises(GeoreferenceError, match="no georeference"):
        chip_to_world(plain, Point(1, 1))
    # The pixel-space mapping needs no georeference.
    assert chip_to_scene(plain, Point(1, 1)).coords[0] == (66.0, 34.0)

    bad_crs = make_tile(UTM_TRANSFORM, "EPSG:999999", WINDOW, 128, 128)
    with pytest.raises(GeoreferenceError, match="not usable"):
        chip_to_world(bad_crs, Point(1, 1))
    identity = make_tile(Affine.identity(), UTM_33N, Window(0, 0, 128, 128), 128, 128)
    with pytest.raises(GeoreferenceError, match="identity"):
        chip_to_world(identity, Point(1, 1))
    # A pixel 10^30 m from the zone does not project into lon/lat.
    utm = make_tile(UTM_TRANSFORM, UTM_33N, WINDOW, 128, 128)
    with pytest.raises(GeoreferenceError, match="project"):
        chip_to_world(utm, Point(1e30, 1e30))


def test_bad_sizes_raise() -> None:
    with pytest.raises(ValueError, match="chip size must be positive"):
        chip_transform_for(UTM_TRANSFORM, WINDOW, 0, 128)
    tile = make_tile(UTM_TRANSFORM, UTM_33N, WINDOW, 128, 128)
    tile.chip_width = 0
    with pytest.raises(ValueError, match="positive sizes"):
        chip_to_scene(tile, Point(0, 0))
