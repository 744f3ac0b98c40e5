"""promptgen never sends a tile that is entirely no-data (counted, logged, no chip written), and every task carries
its chip's no-data share; against real PostGIS and MinIO, as the handler tests."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import numpy as np
import pytest
import rasterio
from kits.scene_files import generated_scene

from earthgptx.geo import footprint_4326
from earthgptx.store.objects import ObjectStore
from earthgptx.store.records import SceneRecord
from earthgptx.v1.events_pb2 import PixelBox, QueryRequested, SceneIngested, VisualPrompt
from services.promptgen.handlers import EMPTY_CHIPS
from tests.services.promptgen.test_promptgen_handlers import World

pytestmark = [pytest.mark.postgis, pytest.mark.minio]


def _scene_with_empty_left_half(world: World, folder: Path) -> SceneRecord:
    """A 256 px optical scene whose columns 0-127 are no-data (0, declared): with 128 px tiles overlapping by 16,
    the three tiles of column 0 are empty and the three of column 112 are 16/128 no-data."""
    source, bands = generated_scene(folder, "optical", seed=11, size=256)
    with rasterio.open(source) as src:
        profile, data = src.profile, src.read()
    data = np.where(data == 0, 1, data)  # real ground is never the no-data value
    data[:, :, :128] = 0
    path = folder / f"half-empty-{uuid.uuid4().hex[:8]}.tif"
    with rasterio.open(path, "w", **{**profile, "nodata": 0}) as dst:
        dst.write(data)
        for index, name in enumerate(bands, start=1):
            dst.set_band_description(index, name)
    with rasterio.open(path) as src:
        transform, crs, width, height = src.transform, src.crs.to_string(), src.width, src.height
    scene_id = path.stem
    world.objects.put_file(world.objects.settings.scenes_bucket, f"{scene_id}.tif", path)
    record = SceneRecord(
        id=scene_id, source="test", modality="optical", bands=bands, dtype="uint8", width=width, height=height,
        object_bucket=world.objects.settings.scenes_bucket, object_key=f"{scene_id}.tif",
        footprint=footprint_4326(transform, crs, width, height), crs=crs, transform=tuple(transform)[:6],
    )  # fmt: skip
    world.repository.upsert_scene(record)
    return record


def test_empty_tiles_are_skipped_and_tasks_carry_the_no_data_share(
    migrated_db_url: str, object_store: ObjectStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    world = World(migrated_db_url, object_store, tmp_path)
    try:
        scene = _scene_with_empty_left_half(world, tmp_path)
        before = EMPTY_CHIPS._value.get()
        with caplog.at_level(logging.INFO, logger="services.promptgen.handlers"):
            world.handler.on_scene_ingested(SceneIngested(scene_id=scene.id, width=256, height=256))
        tasks = world.publisher.take()
        assert EMPTY_CHIPS._value.get() - before == 3
        assert any("3 tile(s) skipped, every pixel no-data or NaN" in r.getMessage() for r in caplog.records)
        columns = {t.tile.col_off for t in tasks}
        assert columns == {112, 128}  # nothing asked about the empty column
        assert len(tasks) == 6 * 4
        shares = {(t.tile.col_off, round(t.nodata_fraction, 4)) for t in tasks}
        assert shares == {(112, 0.125), (128, 0.0)}
        empty_keys = [f"{scene.id}/0_{row}_128x128_128x128.tif" for row in (0, 112, 128)]
        assert not any(world.objects.exists(world.objects.settings.chips_bucket, key) for key in empty_keys)
        assert all(world.objects.exists(t.chip.bucket, t.chip.key) for t in tasks)
        # The chips declare the scene's no-data value, so the inference service masks the same pixels.
        edge = next(t for t in tasks if t.tile.col_off == 112)
        chip_file = tmp_path / "edge-chip.tif"
        world.objects.download_file(edge.chip.bucket, edge.chip.key, chip_file)
        with rasterio.open(chip_file) as chip:
            assert chip.nodatavals == (0.0,) * chip.count
            assert float((chip.read() == 0).all(axis=0).mean()) == pytest.approx(0.125)

        # Re-delivery: the same tasks with the same shares, and the empty tiles skipped again.
        world.handler.on_scene_ingested(SceneIngested(scene_id=scene.id, width=256, height=256))
        again = world.publisher.take()
        assert [(t.task_id, t.nodata_fraction) for t in again] == [
            (t.task_id, t.nodata_fraction) for t in tasks
        ]

        # A question about pixels that are all no-data is answered "no coverage", never asked.
        query_id = f"q-empty-{uuid.uuid4().hex[:8]}"
        world.handler.on_query_requested(QueryRequested(
            query_id=query_id, instruction="What is here?", scene_id=scene.id,
            scene_prompt=VisualPrompt(box=PixelBox(x1=10, y1=10, x2=60, y2=60)),
        ))  # fmt: skip
        assert world.publisher.take() == []
        row = world.store.query(query_id)
        assert row is not None and row.status == "no_coverage" and "no-data" in (row.reason or "")
    finally:
        world.store.close()
