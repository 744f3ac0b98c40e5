"""Masks -> polygons in chip pixels and in EPSG:4326 through the chip transform."""

from __future__ import annotations

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

from earthgptx.geo import make_tile, world_to_chip
from earthgptx.geo.masks import mask_from_png, mask_polygons, mask_polygons_4326


def _png(mask: np.ndarray) -> bytes:
    data = np.where(mask, 255, 0).astype(np.uint8)[None]
    with rasterio.MemoryFile() as memory:
        with memory.open(driver="PNG", height=mask.shape[0], width=mask.shape[1], count=1, dtype="uint8") as dst:
            dst.write(data)
        return bytes(memory.read())


def test_a_mask_becomes_polygons_on_pixel_edges_with_holes() -> None:
    mask = np.zeros((16, 16), dtype=bool)
    mask[2:8, 3:9] = True
    mask[4:6, 5:7] = False  # a hole
    mask[12, 12] = True  # a one-pixel object
    assert np.array_equal(mask_from_png(_png(mask)), mask)
    polygons = mask_polygons(mask)
    assert polygons is not None and len(polygons.geoms) == 2
    assert polygons.area == mask.sum()
    assert sorted(p.bounds for p in polygons.geoms) == [(3, 2, 9, 8), (12, 12, 13, 13)]
    assert mask_polygons(np.zeros((4, 4), dtype=bool)) is None


def test_mask_polygons_are_georeferenced_through_the_chip_transform() -> None:
    transform = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 5_000_000.0)
    tile = make_tile(transform, "EPSG:32633", Window(64, 32, 128, 128), 64, 64)
    mask = np.zeros((64, 64), dtype=bool)
    mask[10:20, 30:40] = True
    world = mask_polygons_4326(mask, tile)
    assert world is not None
    back = world_to_chip(tile, world)
    assert np.allclose(back.bounds, (30, 10, 40, 20), atol=1e-6)
