"""``v_objects`` (migration 0004): objects seen by two overlapping tiles are one object (non-maximum suppression
per scene and class in scene pixels), whatever order their answers were stored in, and the same after re-delivery."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from shapely.geometry import Polygon, box

from earthgptx.store.records import ResultRecord, SceneRecord, TaskRecord, TaskResults
from earthgptx.store.repository import Repository

pytestmark = pytest.mark.postgis

TILES = {"a": (0, 0, 128, 128), "b": (112, 0, 128, 128)}
# The same ship seen by both tiles (IoU ~0.8 in scene pixels), another ship only by tile a, and a vehicle on top
# of the first ship (another class: not merged with it).
SEEN = {
    "a": [("ship", box(114, 10, 124, 30), 0.9), ("ship", box(20, 20, 30, 30), 0.7),
          ("vehicle", box(114, 10, 124, 30), 0.6)],
    "b": [("ship", box(115, 10, 125, 30), 0.8)],
}  # fmt: skip


def _scene(scene_id: str) -> SceneRecord:
    return SceneRecord(
        id=scene_id, source="test", modality="optical", bands=("red", "green", "blue"), dtype="uint8",
        width=240, height=128, object_bucket="scenes", object_key=f"{scene_id}.tif",
        footprint=Polygon([(10, 50), (10.01, 50), (10.01, 50.01), (10, 50.01)]),
    )  # fmt: skip


def _store(repository: Repository, scene_id: str, order: list[str]) -> None:
    for tile in order:
        for index, (label, shape, score) in enumerate(SEEN[tile]):
            task = TaskRecord(id=f"{scene_id}-{tile}-{label}-{index}", scene_id=scene_id, window=TILES[tile], level=2,
                              task="grounding", instruction=f"Where is the {label}?", model_version="m")  # fmt: skip
            row = ResultRecord(task_id=task.id, ordinal=0, scene_id=scene_id, answer_text="[..]", model_version="m",
                               label=label, geom=shape.centroid.buffer(1e-5), pixel_geom=shape, score=score)  # fmt: skip
            repository.record_results([TaskResults(task, (row,), {})])


def _objects(repository: Repository, scene_id: str) -> list[tuple[str, float]]:
    with repository.engine.connect() as connection:
        rows = connection.execute(
            sa.text("SELECT label, score FROM v_objects WHERE scene_id = :s ORDER BY label, score"), {"s": scene_id}
        )
        return [(r.label, r.score) for r in rows]


@pytest.mark.parametrize("order", [["a", "b"], ["b", "a"]])
def test_one_object_per_thing_seen_whatever_the_order(repository: Repository, order: list[str]) -> None:
    scene_id = f"merge-{''.join(order)}"
    repository.upsert_scene(_scene(scene_id))
    _store(repository, scene_id, order)
    expected = [("ship", 0.7), ("ship", 0.9), ("vehicle", 0.6)]
    assert _objects(repository, scene_id) == expected
    _store(repository, scene_id, list(reversed(order)))  # re-delivery of everything
    assert _objects(repository, scene_id) == expected
