"""The repository against a real PostGIS: idempotent upserts, spatial queries, results, views, API keys."""

from __future__ import annotations

import json
import math
import socket
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import shapely
import sqlalchemy as sa
from affine import Affine
from geoalchemy2 import WKBElement
from geoalchemy2.shape import to_shape
from shapely.geometry import MultiPolygon, Point, Polygon, box
from shapely.geometry.base import BaseGeometry

from earthgptx.geo import footprint_4326
from earthgptx.store.db import make_engine
from earthgptx.store.errors import IntegrityViolation, InvalidRecord, StoreUnavailable
from earthgptx.store.records import AoiRecord, ResultRecord, SceneRecord, TaskRecord, TaskResults
from earthgptx.store.repository import Repository

pytestmark = pytest.mark.postgis

ACQUIRED = datetime(2025, 6, 1, 10, 30, tzinfo=UTC)


def _uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _scene(
    scene_id: str, easting: float, northing: float, *, epsg: int = 32633, size: int = 1000
) -> SceneRecord:
    """A 10 m UTM scene whose footprint comes from the real georeferencing path."""
    transform = Affine(10.0, 0.0, easting, 0.0, -10.0, northing)
    crs = f"EPSG:{epsg}"
    return SceneRecord(
        id=scene_id,
        source="test-station",
        modality="optical",
        bands=("red", "green", "blue"),
        dtype="uint8",
        width=size,
        height=size,
        object_bucket="scenes",
        object_key=f"{scene_id}/scene.tif",
        footprint=footprint_4326(transform, crs, size, size),
        crs=crs,
        transform=tuple(transform)[:6],  # type: ignore[arg-type]
        acquired_at=ACQUIRED,
        stac_item={"type": "Feature", "id": scene_id},
    )


def _task(task_id: str, scene_id: str, level: int = 2) -> TaskRecord:
    return TaskRecord(
        id=task_id,
        scene_id=scene_id,
        window=(0, 0, 512, 512),
        level=level,
        task="ground",
        instruction="Find all ships.",
        model_version="tiny-0.1",
        prompts=({"type": "box", "box": [10, 20, 300, 400]},),
    )


def _results(task_id: str, scene_id: str, n: int) -> list[ResultRecord]:
    return [
        ResultRecord(
            task_id=task_id,
            ordinal=i,
            scene_id=scene_id,
            answer_text=f"ship [{i}, {i}, {i + 10}, {i + 10}]",
            model_version="tiny-0.1",
            label="ship",
            attributes={"length_m": 40 + i},
            geom=box(15.0 + i * 1e-3, 41.5, 15.0005 + i * 1e-3, 41.5005),
            pixel_geom=box(i, i, i + 10, i + 10),
            score=0.5 + i / (2 * n),
        )
        for i in range(n)
    ]


def _shape(element: WKBElement | None) -> BaseGeometry:
    assert element is not None
    return to_shape(element)


def _count(repository: Repository, sql: str, **params: object) -> int:
    with repository.engine.connect() as connection:
        return int(connection.scalar(sa.text(sql), params) or 0)


def test_scene_upsert_is_idempotent_and_keeps_status(repository: Repository) -> None:
    scene = _scene(_uid("scene"), 500_000, 4_600_000)
    repository.upsert_scene(scene)
    repository.upsert_scene(scene)
    assert _count(repository, "SELECT count(*) FROM scenes WHERE id = :id", id=scene.id) == 1

    stored = repository.get_scene(scene.id)
    assert stored is not None
    assert stored.bands == ["red", "green", "blue"]
    assert stored.transform == list(scene.transform or ())
    assert stored.stac_item == {"type": "Feature", "id": scene.id}
    assert scene.footprint is not None and _shape(stored.footprint).equals_exact(scene.footprint, 1e-9)

    assert repository.set_scene_status(scene.id, "tiled")
    updated_at = stored.updated_at
    repository.upsert_scene(scene)  # a re-delivered ingest event
    again = repository.get_scene(scene.id)
    assert again is not None
    assert again.status == "tiled"  # not reset to "ingested"

    changed = replace(scene, sensor="new-sensor")
    repository.upsert_scene(changed)
    refreshed = repository.get_scene(scene.id)
    assert refreshed is not None and refreshed.sensor == "new-sensor" and refreshed.status == "tiled"
    assert refreshed.updated_at >= updated_at
    assert not repository.set_scene_status("no-such-scene", "done")


def test_st_intersects_on_footprints_returns_exactly_the_intersecting_scenes(repository: Repository) -> None:
    tag = uuid.uuid4().hex[:6]
    # A row of 10 km scenes, 5 km apart (overlapping), plus one far away in another UTM zone.
    row = [_scene(f"row{i}-{tag}", 400_000 + i * 5_000, 5_000_000) for i in range(6)]
    far = _scene(f"far-{tag}", 500_000, 4_000_000, epsg=32610)
    for scene in [*row, far]:
        repository.upsert_scene(scene)

    footprints = {scene.id: scene.footprint for scene in [*row, far]}
    assert row[2].footprint is not None
    query = row[2].footprint.centroid.buffer(0.02)  # ~2 km around the middle of row2
    expected = {sid for sid, fp in footprints.items() if fp is not None and fp.intersects(query)}
    assert {row[1].id, row[2].id} <= expected and row[5].id not in expected  # the query is selective

    found = {scene.id for scene in repository.scenes_intersecting(query) if scene.id.endswith(tag)}
    assert found == expected

    later = repository.scenes_intersecting(query, since=ACQUIRED + timedelta(days=1))
    assert not {scene.id for scene in later} & expected


def test_tasks_are_inserted_once_and_replays_do_not_reset_them(repository: Repository) -> None:
    scene = _scene(_uid("scene"), 450_000, 4_700_000)
    repository.upsert_scene(scene)
    task = _task(_uid("task"), scene.id)
    assert repository.upsert_task(task) is True
    assert repository.set_task_status(task.id, "done", timings={"infer_s": 1.5}, count_attempt=True)
    assert repository.upsert_task(task) is False  # re-delivered prompts.tasks event
    stored = repository.get_task(task.id)
    assert stored is not None
    assert (stored.status, stored.attempts, stored.timings) == ("done", 1, {"infer_s": 1.5})
    assert stored.prompts == [{"type": "box", "box": [10, 20, 300, 400]}]

    assert repository.set_task_status(task.id, "done", timings={"store_s": 0.1})
    stored = repository.get_task(task.id)
    assert stored is not None and stored.timings == {"infer_s": 1.5, "store_s": 0.1}

    batch = [_task(_uid("task"), scene.id, level=3) for _ in range(5)]
    assert repository.upsert_tasks([*batch, batch[0]]) == 5  # a duplicate inside one batch is fine
    assert repository.upsert_tasks(batch) == 0

    with pytest.raises(IntegrityViolation):
        repository.upsert_task(_task(_uid("task"), "no-such-scene"))


def test_results_with_geometry_upsert_idempotently(repository: Repository) -> None:
    scene = _scene(_uid("scene"), 500_000, 4_600_000)
    repository.upsert_scene(scene)
    task = _task(_uid("task"), scene.id)
    repository.upsert_task(task)
    results = _results(task.id, scene.id, 25)

    assert repository.upsert_results(results) == 25
    assert repository.upsert_results(results) == 0  # replay: nothing changed, nothing written
    assert _count(repository, "SELECT count(*) FROM results WHERE task_id = :t", t=task.id) == 25

    changed = [*results[:3], replace(results[3], label="boat"), *results[4:]]
    assert repository.upsert_results(changed) == 1
    # Duplicate keys in one call: the last one wins instead of failing the statement.
    assert repository.upsert_results([results[0], replace(results[0], score=0.01)]) == 1

    stored = repository.results_for_task(task.id)
    assert [r.ordinal for r in stored] == list(range(25))
    assert stored[3].label == "boat" and stored[0].score == pytest.approx(0.01)
    assert stored[5].attributes == {"length_m": 45}
    assert results[5].geom is not None and _shape(stored[5].geom).equals_exact(results[5].geom, 1e-12)
    assert results[5].pixel_geom is not None
    assert _shape(stored[5].pixel_geom).equals_exact(results[5].pixel_geom, 0)
    assert _count(
        repository, "SELECT count(*) FROM results WHERE task_id = :t AND ST_SRID(pixel_geom) = 0", t=task.id
    ) == 25  # fmt: skip
    assert len(repository.results_for_scene(scene.id)) == 25

    inside = box(15.0, 41.4, 15.0045, 41.6)  # covers the first five boxes only
    hits = repository.results_intersecting(inside, label="ship")
    assert {(r.task_id, r.ordinal) for r in hits if r.task_id == task.id} == {
        (task.id, i) for i in (0, 1, 2, 4)
    }

    with pytest.raises(IntegrityViolation):
        repository.upsert_results(_results("no-such-task", scene.id, 1))


def test_record_task_results_marks_the_task_done_atomically(repository: Repository) -> None:
    scene = _scene(_uid("scene"), 500_000, 4_600_000)
    repository.upsert_scene(scene)
    task = _task(_uid("task"), scene.id, level=1)
    repository.upsert_task(task)
    assert (
        repository.record_task_results(task.id, _results(task.id, scene.id, 3), timings={"infer_s": 2.0}) == 3
    )
    stored = repository.get_task(task.id)
    assert stored is not None and stored.status == "done" and stored.timings == {"infer_s": 2.0}

    with pytest.raises(ValueError, match="other tasks"):
        repository.record_task_results(task.id, _results("another", scene.id, 1))
    # Results for a missing task roll back as a whole.
    missing = _uid("task")
    with pytest.raises(IntegrityViolation):
        repository.record_task_results(missing, _results(missing, scene.id, 2))
    assert _count(repository, "SELECT count(*) FROM results WHERE task_id = :t", t=missing) == 0


def test_a_task_and_its_results_are_one_transaction_and_a_failure_leaves_nothing(repository: Repository) -> None:
    scene = _scene(_uid("scene"), 500_000, 4_600_000)
    repository.upsert_scene(scene)
    task = _task(_uid("task"), scene.id)
    # A NUL in a label (PostgreSQL text cannot hold it) and a NaN timing (JSON cannot): refused, nothing written.
    bad_label = [replace(r, label="sh\x00ip") for r in _results(task.id, scene.id, 2)]
    with pytest.raises(InvalidRecord, match="NUL"):
        repository.record_task_results(task, bad_label)
    with pytest.raises(InvalidRecord, match="finite"):
        repository.record_task_results(task, _results(task.id, scene.id, 2), timings={"infer_ms": math.nan})
    # A database error after the task row was sent rolls the task back too (here: a scene that does not exist).
    orphan = _task(_uid("task"), _uid("no-such-scene"))
    with pytest.raises(IntegrityViolation):
        repository.record_task_results(orphan, _results(orphan.id, orphan.scene_id, 1))
    for task_id in (task.id, orphan.id):
        assert repository.get_task(task_id) is None
        assert _count(repository, "SELECT count(*) FROM results WHERE task_id = :t", t=task_id) == 0


def test_record_results_writes_a_batch_of_tasks_in_one_go_and_counts_per_task(repository: Repository) -> None:
    scene = _scene(_uid("scene"), 500_000, 4_600_000)
    repository.upsert_scene(scene)
    tasks = [_task(_uid("task"), scene.id) for _ in range(3)]
    batch = [
        TaskResults(t, tuple(_results(t.id, scene.id, n)), {"infer_ms": float(n)})
        for t, n in zip(tasks, (1, 2, 3), strict=True)
    ]
    # The same task twice in one batch (a redelivery inside one poll) writes its rows once.
    assert repository.record_results([*batch, batch[1]]) == [1, 2, 3, 0]
    assert repository.record_results(batch) == [0, 0, 0]
    for t, n in zip(tasks, (1, 2, 3), strict=True):
        stored = repository.get_task(t.id)
        assert stored is not None and stored.status == "done" and stored.timings == {"infer_ms": float(n)}
    assert _count(repository, "SELECT count(*) FROM results WHERE scene_id = :s", s=scene.id) == 6


def test_record_results_sends_a_few_statements_per_batch_not_one_per_task(repository: Repository) -> None:
    # The task upsert once went row by row (an ON CONFLICT with a bound parameter in SET): 200 round trips here.
    scene = _scene(_uid("scene"), 500_000, 4_600_000)
    repository.upsert_scene(scene)
    tasks = [_task(_uid("task"), scene.id) for _ in range(200)]
    batch = [TaskResults(t, tuple(_results(t.id, scene.id, 2)), {"infer_ms": 1.0}) for t in tasks]
    statements: list[str] = []

    def count(connection: object, cursor: object, statement: str, parameters: object, context: object,
              executemany: bool) -> None:
        # A plain executemany (a list of rows) is one round trip per row with psycopg2; a multi-row VALUES
        # batch comes as one statement with one dict of parameters.
        rows = len(parameters) if executemany and isinstance(parameters, list | tuple) else 1
        statements.extend([statement] * rows)

    sa.event.listen(repository.engine, "before_cursor_execute", count)
    try:
        assert repository.record_results(batch) == [2] * 200
    finally:
        sa.event.remove(repository.engine, "before_cursor_execute", count)
    assert len(statements) <= 4, statements[:5]
    stored = repository.get_task(tasks[-1].id)
    assert stored is not None and stored.status == "done" and stored.error is None


def test_aois_intersecting_a_footprint(repository: Repository) -> None:
    scene = _scene(_uid("scene"), 500_000, 4_600_000)
    assert scene.footprint is not None
    center = scene.footprint.centroid
    owner = _uid("owner")
    inside = AoiRecord(_uid("aoi"), center.buffer(0.01), "Count the ships.", owner)
    crossing = AoiRecord(
        _uid("aoi"),
        MultiPolygon([box(center.x - 1, center.y - 0.01, center.x, center.y + 0.01), box(0, 0, 1, 1)]),
        "Describe the harbour.",
        owner,
    )
    outside = AoiRecord(_uid("aoi"), box(-60, -10, -59, -9), "Anything?", owner)
    for aoi in (inside, crossing, outside):
        repository.upsert_aoi(aoi)
        repository.upsert_aoi(aoi)
    assert _count(repository, "SELECT count(*) FROM aois WHERE owner = :o", o=owner) == 3

    found = [a for a in repository.aois_intersecting(scene.footprint) if a.owner == owner]
    assert {a.id for a in found} == {inside.id, crossing.id}
    assert _shape(next(a for a in found if a.id == inside.id).geom).geom_type == "MultiPolygon"

    assert repository.set_aoi_active(inside.id, False)
    assert {a.id for a in repository.aois_intersecting(scene.footprint) if a.owner == owner} == {crossing.id}
    assert {
        a.id for a in repository.aois_intersecting(scene.footprint, active_only=False) if a.owner == owner
    } == {
        inside.id,
        crossing.id,
    }

    with pytest.raises(ValueError, match="Polygon"):
        repository.upsert_aoi(AoiRecord(_uid("aoi"), Point(1, 2), "x", owner))


def test_dashboard_views_give_lon_lat_and_geojson(repository: Repository) -> None:
    scene = _scene(_uid("scene"), 500_000, 4_600_000)
    repository.upsert_scene(scene)
    task = _task(_uid("task"), scene.id)
    repository.upsert_task(task)
    results = _results(task.id, scene.id, 3)
    no_geometry = ResultRecord(task.id, 3, scene.id, "a caption", "tiny-0.1")
    repository.upsert_results([*results, no_geometry])

    with repository.engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT ordinal, level, task, label, lon, lat, geojson FROM v_results_map "
                "WHERE task_id = :t ORDER BY ordinal"
            ),
            {"t": task.id},
        ).all()
        scene_row = connection.execute(
            sa.text("SELECT lon, lat, geojson FROM v_scenes_map WHERE scene_id = :s"), {"s": scene.id}
        ).one()

    assert [row.ordinal for row in rows] == [0, 1, 2]  # the map view lists located results only
    for row, result in zip(rows, results, strict=True):
        assert result.geom is not None
        assert (row.level, row.task, row.label) == (2, "ground", "ship")
        assert row.lon == pytest.approx(result.geom.centroid.x, abs=1e-9)
        assert row.lat == pytest.approx(result.geom.centroid.y, abs=1e-9)
        assert shapely.from_geojson(row.geojson).equals_exact(result.geom, 1e-6)
        assert json.loads(row.geojson)["type"] == "Polygon"

    assert scene.footprint is not None
    assert scene_row.lon == pytest.approx(scene.footprint.centroid.x, abs=1e-6)
    assert scene_row.lat == pytest.approx(scene.footprint.centroid.y, abs=1e-6)
    assert isinstance(shapely.from_geojson(scene_row.geojson), Polygon)


def test_unreachable_database_is_transient() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    repository = Repository(make_engine(url=f"postgresql+psycopg2://nobody:none@127.0.0.1:{port}/none"))
    with pytest.raises(StoreUnavailable):
        repository.get_scene("anything")
    with pytest.raises(StoreUnavailable):
        repository.upsert_results(_results("t", "s", 1))
    repository.close()


def test_a_plan_made_ahead_writes_what_record_results_writes_with_json_encoded_once(repository: Repository) -> None:
    # The resultstore plans a batch on its preparer thread and writes it later: the JSON columns are encoded in the
    # plan and must reach PostgreSQL as objects, not as JSON strings encoded a second time.
    scene = _scene(_uid("scene"), 500_000, 4_600_000)
    repository.upsert_scene(scene)
    task = _task(_uid("task"), scene.id)
    rows = tuple(replace(r, attributes={"count": 2, "colour": "red"}) for r in _results(task.id, scene.id, 2))
    plan = repository.plan_results([TaskResults(task, rows, {"infer_ms": 3.0})])
    assert repository.write_planned(plan) == [2]
    assert repository.write_planned(repository.plan_results([TaskResults(task, rows, {})])) == [0]
    with repository.engine.connect() as connection:
        kinds = connection.execute(sa.text("SELECT DISTINCT jsonb_typeof(attributes) FROM results WHERE task_id = :t"),
                                   {"t": task.id}).scalars().all()
    assert kinds == ["object"]
    stored = repository.get_task(task.id)
    assert stored is not None and stored.timings == {"infer_ms": 3.0} and stored.status == "done"
    elsewhere = Repository(make_engine(url=repository.engine.url.render_as_string(hide_password=False)))
    with pytest.raises(ValueError, match="repository"):
        elsewhere.write_planned(plan)
    elsewhere.close()
