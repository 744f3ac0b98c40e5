"""promptgen's handler against real PostGIS and MinIO (the producer is a recording fake: the loop itself is the bus's
and is tested there): tiling and chips, the cascade L1 -> L2 -> L3 -> L4, AOIs, ad-hoc queries, re-delivery, and bad
input as permanent errors with the reason."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from google.protobuf.message import Message
from kits.scene_files import generated_scene
from shapely.geometry import Polygon, box, mapping

from earthgptx.bus import PermanentError
from earthgptx.geo import affine_from_message, chip_to_world, footprint_4326
from earthgptx.settings import DatabaseSettings
from earthgptx.store.objects import ObjectStore
from earthgptx.store.pipeline import PipelineStore
from earthgptx.store.records import SceneRecord, TaskResults
from earthgptx.store.repository import Repository
from earthgptx.v1.events_pb2 import (
    Answer,
    DetectedBox,
    InferenceResult,
    PixelBox,
    PixelPoint,
    PromptTask,
    QueryCoverage,
    QueryRequested,
    ResultStored,
    SceneIngested,
    VisualPrompt,
)
from services.promptgen.cascade import Policy
from services.promptgen.handlers import PromptgenHandler
from services.resultstore.handlers import result_records, result_stored, task_record

pytestmark = [pytest.mark.postgis, pytest.mark.minio]

MODEL = "tiny@test"


class Recorder:
    """Records what would be published (in order), acknowledging everything."""

    def __init__(self) -> None:
        self.sent: list[PromptTask] = []

    def publish(self, topic: str, key: str, message: Message, *, trace_id: str = "") -> Any:
        assert isinstance(message, PromptTask) and key == message.scene_id
        copy = PromptTask()
        copy.CopyFrom(message)
        self.sent.append(copy)
        return None

    def wait(self, futures: Sequence[Any], *, timeout_s: float = 30.0) -> list[Any]:
        return [object() for _ in futures]

    def take(self) -> list[PromptTask]:
        sent, self.sent = self.sent, []
        return sent


class World:
    def __init__(self, db_url: str, objects: ObjectStore, folder: Path) -> None:
        self.repository = Repository.from_settings(DatabaseSettings(url=db_url))  # type: ignore[arg-type]
        self.store = PipelineStore(self.repository)
        self.objects = objects
        self.folder = folder
        self.publisher = Recorder()
        self.handler = PromptgenHandler(
            self.store, objects, self.publisher, model_version=MODEL, chips_bucket=objects.settings.chips_bucket,
            chip_size=128, tile_size=128, overlap=16,
            policy=Policy(count_classes=("ship", "vehicle"), max_objects_per_tile=2, max_relations_per_tile=1),
        )  # fmt: skip

    def add_scene(self, modality: str = "optical", seed: int = 3) -> SceneRecord:
        path, bands = generated_scene(self.folder, modality, seed=seed, size=256)
        with rasterio.open(path) as src:
            transform, crs, width, height, dtype = src.transform, src.crs.to_string(), src.width, src.height, src.dtypes[0]
        scene_id = f"{modality}-{seed}-{path.stat().st_size}"
        key = f"{scene_id}.tif"
        self.objects.put_file(self.objects.settings.scenes_bucket, key, path)
        record = SceneRecord(
            id=scene_id, source="test", modality=modality, bands=bands, dtype=dtype, width=width, height=height,
            object_bucket=self.objects.settings.scenes_bucket, object_key=key,
            footprint=footprint_4326(transform, crs, width, height), crs=crs, transform=tuple(transform)[:6],
        )  # fmt: skip
        self.repository.upsert_scene(record)
        return record

    def answer(self, task: PromptTask, answer: Answer) -> ResultStored:
        """What the inference service and the resultstore would do with a task: the stored answer's event."""
        result = InferenceResult(
            task_id=task.task_id, scene_id=task.scene_id, level=task.level, task=task.task, tile=task.tile,
            answer=answer, model_version=task.model_version, prompts=list(task.prompts),
        )  # fmt: skip
        record = task_record(result)
        rows = result_records(result, record.id)
        self.repository.record_results([TaskResults(record, tuple(rows), {})])
        return result_stored(result, record.id, rows, 0.0)


@pytest.fixture(scope="module")
def world(migrated_db_url: str, object_store: ObjectStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(migrated_db_url, object_store, tmp_path_factory.mktemp("scenes"))
    yield w
    w.store.close()


def _ingested(scene: SceneRecord) -> SceneIngested:
    event = SceneIngested(scene_id=scene.id, width=scene.width, height=scene.height)
    event.header.trace_id = f"trace-{scene.id}"
    return event


def test_a_scene_is_tiled_into_georeferenced_chips_with_l1_tasks(world: World) -> None:
    scene = world.add_scene("optical", seed=3)
    world.handler.on_scene_ingested(_ingested(scene))
    tasks = world.publisher.take()
    tiles = {t.tile.tile_index: t.tile for t in tasks}
    assert len(tiles) == 9  # 256 px, 128 px tiles overlapping by 16: columns and rows at 0, 112, 128
    assert {(t.col_off, t.row_off) for t in tiles.values()} == {(c, r) for c in (0, 112, 128) for r in (0, 112, 128)}
    per_tile = {i: sorted(t.task for t in tasks if t.tile.tile_index == i) for i in tiles}
    assert all(v == ["counting", "counting", "scene_caption", "scene_classification"] for v in per_tile.values())
    assert len({t.task_id for t in tasks}) == len(tasks) == 36
    assert all(t.level == 1 and t.model_version == MODEL and t.chip.key for t in tasks)
    # Each chip is a GeoTIFF whose transform is the tile's chip transform, in the scene's CRS.
    tile = tiles[4]
    chip = next(t.chip for t in tasks if t.tile.tile_index == 4)
    local = world.folder / "chip.tif"
    world.objects.download_file(chip.bucket, chip.key, local)
    with rasterio.open(local) as opened, rasterio.open(world.folder / "optical-3.tif") as source:
        assert opened.transform.almost_equals(affine_from_message(tile.chip_transform))
        assert opened.crs.to_string() == tile.crs == scene.crs
        window = rasterio.windows.Window(tile.col_off, tile.row_off, tile.width, tile.height)
        assert np.array_equal(opened.read(), source.read(window=window))
    # Re-delivery: nothing new in PostGIS, the same events again.
    world.handler.on_scene_ingested(_ingested(scene))
    again = world.publisher.take()
    assert [t.task_id for t in again] == [t.task_id for t in tasks]
    assert world.store.add_tasks([]) == 0
    # ... except those already answered: the model is not asked twice for a stored answer.
    world.answer(tasks[0], Answer(text="water", label="water"))
    world.handler.on_scene_ingested(_ingested(scene))
    assert [t.task_id for t in world.publisher.take()] == [t.task_id for t in tasks[1:]]


def test_the_cascade_runs_l1_to_l4_on_a_tile(world: World) -> None:
    scene = world.add_scene("optical", seed=4)
    world.handler.on_scene_ingested(_ingested(scene))
    tile0 = [t for t in world.publisher.take() if t.tile.tile_index == 0]
    counting = {t.instruction: t for t in tile0 if t.task == "counting"}
    ships = next(t for i, t in counting.items() if "ships" in i)
    vehicles = next(t for i, t in counting.items() if "vehicles" in i)
    for task in tile0:
        if task.task != "counting":
            world.handler.on_result_stored(world.answer(task, Answer(text="water", label="water")))
    world.handler.on_result_stored(world.answer(vehicles, Answer(text="0", count=0)))
    assert world.publisher.take() == []  # nothing counted, nothing to ground
    world.handler.on_result_stored(world.answer(ships, Answer(text="2", count=2)))
    [grounding] = world.publisher.take()
    assert (grounding.level, grounding.task, grounding.parent_task_id) == (2, "grounding", ships.task_id)
    assert "ship" in grounding.instruction and grounding.chip.key == ships.chip.key
    boxes = [DetectedBox(box=PixelBox(x1=10, y1=10, x2=30, y2=30), label="ship", score=0.9),
             DetectedBox(box=PixelBox(x1=60, y1=60, x2=90, y2=80), label="ship", score=0.8)]  # fmt: skip
    world.handler.on_result_stored(world.answer(grounding, Answer(text="[..]", boxes=boxes)))
    emitted = world.publisher.take()
    attributes = [t for t in emitted if t.level == 3]
    relations = [t for t in emitted if t.level == 4]
    # the policy asks size, colour and temperature: optical shows size and colour; two objects each, by their boxes
    assert len(attributes) == 4 and all(t.prompts[0].WhichOneof("shape") == "box" for t in attributes)
    assert {round(t.prompts[0].box.x1) for t in attributes} == {10, 60}
    assert len(relations) == 1 and len(relations[0].prompts) == 2
    assert "<region1>" in relations[0].instruction and "<region2>" in relations[0].instruction
    # Re-delivery of the grounding's results.stored: the same tasks again, no new rows.
    before = len(world.store.tile_tasks(scene.id, (0, 0, 128, 128)))
    world.handler.on_result_stored(world.answer(grounding, Answer(text="[..]", boxes=boxes)))
    assert sorted(t.task_id for t in world.publisher.take()) == sorted(t.task_id for t in emitted)
    assert len(world.store.tile_tasks(scene.id, (0, 0, 128, 128))) == before


def test_an_aoi_registered_before_the_scene_gets_polygon_prompts(world: World) -> None:
    scene = world.add_scene("sar", seed=5)
    assert scene.footprint is not None
    area = box(*scene.footprint.bounds).buffer(-0.0003).intersection(box(*scene.footprint.centroid.buffer(0.0006).bounds))
    event = QueryRequested(query_id="aoi-harbour", standing=True, instruction="Describe <region1>.",
                           geojson_4326=json.dumps(mapping(area)), owner="test", name="harbour")  # fmt: skip
    world.handler.on_query_requested(event)
    world.handler.on_scene_ingested(_ingested(scene))
    aoi_tasks = [t for t in world.publisher.take() if t.aoi_id == "aoi-harbour"]
    assert aoi_tasks and all(t.prompts[0].WhichOneof("shape") == "polygon" for t in aoi_tasks)
    for task in aoi_tasks:  # each prompt maps back into the AOI
        ring = Polygon([(p.x, p.y) for p in task.prompts[0].polygon.points])
        assert area.buffer(1e-6).contains(chip_to_world(task.tile, ring.centroid))
    world.handler.on_result_stored(world.answer(aoi_tasks[0], Answer(text="a harbour")))
    assert world.publisher.take() == []  # AOI answers end there


def test_ad_hoc_queries_are_asked_answered_or_answered_no_coverage(world: World) -> None:
    scene = world.add_scene("infrared", seed=6)
    assert scene.footprint is not None
    centre = scene.footprint.centroid
    event = QueryRequested(query_id="q-point", instruction="What is at <region1>?",
                           geojson_4326=json.dumps(mapping(centre)), coverage=QueryCoverage.QUERY_COVERAGE_ALL)  # fmt: skip
    world.handler.on_query_requested(event)
    tasks = world.publisher.take()
    assert tasks and all(t.query_id == "q-point" and t.prompts[0].WhichOneof("shape") == "point" for t in tasks)
    mine = [t for t in tasks if t.scene_id == scene.id]
    assert len(mine) == 1  # a point is asked on the one tile it is most central in
    row = world.store.query("q-point")
    assert row is not None and row.status == "pending" and set(row.task_ids) == {t.task_id for t in tasks}
    world.handler.on_query_requested(event)  # re-delivery
    assert world.publisher.take() == []
    for task in tasks:
        world.handler.on_result_stored(world.answer(task, Answer(text="a warm building", label="building")))
    row = world.store.query("q-point")
    assert row is not None and row.status == "answered"

    far = QueryRequested(query_id="q-far", instruction="What is here?", bbox_4326=[-60.0, -60.0, -59.9, -59.9])
    world.handler.on_query_requested(far)
    assert world.publisher.take() == []
    row = world.store.query("q-far")
    assert row is not None and row.status == "no_coverage" and row.reason

    pixels = QueryRequested(query_id="q-pixels", instruction="Describe", scene_id=scene.id,
                            scene_prompt=VisualPrompt(box=PixelBox(x1=100, y1=100, x2=150, y2=140)))  # fmt: skip
    world.handler.on_query_requested(pixels)
    asked = world.publisher.take()
    assert asked and all(t.prompts[0].WhichOneof("shape") == "box" for t in asked)
    assert all(t.instruction.endswith("<region1>") for t in asked)


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (QueryRequested(query_id="aoi-bad", standing=True, instruction="x", geojson_4326="{not json"), "invalid GeoJSON"),
        (QueryRequested(query_id="aoi-line", standing=True, instruction="x",
                        geojson_4326='{"type": "LineString", "coordinates": [[0, 0], [1, 1]]}'), "Polygon"),
        (QueryRequested(query_id="q-bowtie", instruction="x",
                        geojson_4326='{"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}'),
         "Self-intersection"),
        (QueryRequested(query_id="q-nothing", instruction="x"), "no prompt"),
        (QueryRequested(query_id="q-noscene", instruction="x", scene_id="nope",
                        scene_prompt=VisualPrompt(point=PixelPoint(x=1, y=1))), "not in the catalogue"),
    ],
)  # fmt: skip
def test_bad_queries_are_permanent_errors_with_the_reason(world: World, event: QueryRequested, reason: str) -> None:
    with pytest.raises(PermanentError, match=reason):
        world.handler.on_query_requested(event)


def test_a_prompt_outside_its_scene_and_an_unknown_task_are_permanent_errors(world: World) -> None:
    scene = world.add_scene("multispectral", seed=7)
    outside = QueryRequested(query_id="q-outside", instruction="x", scene_id=scene.id,
                             scene_prompt=VisualPrompt(box=PixelBox(x1=200, y1=200, x2=400, y2=300)))  # fmt: skip
    with pytest.raises(PermanentError, match="outside"):
        world.handler.on_query_requested(outside)
    with pytest.raises(PermanentError, match="unknown task"):
        world.handler.on_result_stored(ResultStored(task_id="no-such-task", scene_id=scene.id))


def test_chip_transform_round_trip_is_exact() -> None:
    from earthgptx.geo.tiles import scene_tiles

    transform = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 5_000_000.0)
    for tile in scene_tiles(300, 200, transform, "EPSG:32633", tile_size=128, chip_size=64, overlap=16):
        chip = affine_from_message(tile.chip_transform)
        assert chip @ (0, 0) == transform @ (tile.col_off, tile.row_off)
        assert chip @ (64, 64) == transform @ (tile.col_off + tile.width, tile.row_off + tile.height)
