"""The resultstore service against the real Kafka broker and PostGIS of the local stack.

The service runs in a thread (its own consumer loop, producer and database pool) on uniquely named topics and
a throwaway database; the test publishes events as inference would and reads what the service wrote.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from affine import Affine
from kits.broker import fast_options, read_topic
from pyproj import Transformer
from rasterio.windows import Window
from shapely import wkb

from earthgptx import events
from earthgptx.bus import EventProducer
from earthgptx.geo import footprint_4326, make_tile
from earthgptx.settings import DatabaseSettings, KafkaSettings
from earthgptx.store.db import make_engine
from earthgptx.store.records import SceneRecord
from earthgptx.store.repository import Repository
from earthgptx.v1.events_pb2 import (
    Answer,
    DeadLetter,
    DeadLetterCause,
    DetectedBox,
    InferenceResult,
    Level,
    PixelBox,
    ResultStored,
)
from services.resultstore.main import ResultStoreService
from services.resultstore.settings import Settings

pytestmark = [pytest.mark.kafka, pytest.mark.postgis]

CRS = "EPSG:32631"
SCENE_TRANSFORM = Affine(2.0, 0.0, 430_000.0, 0.0, -2.0, 5_400_000.0)
SCENE_SIZE = 512
WINDOW = Window(256, 128, 256, 256)
CHIP = 128


def grounding(task_id: str, box: PixelBox, label: str = "ship") -> InferenceResult:
    event = InferenceResult(
        task_id=task_id,
        scene_id="scene-it",
        level=Level.LEVEL_L2_GROUNDING,
        task="grounding",
        tile=make_tile(SCENE_TRANSFORM, CRS, WINDOW, CHIP, CHIP),
        answer=Answer(text="[156, 312, 468, 625]", boxes=[DetectedBox(box=box, label=label, score=0.75)]),
        model_version="test-model",
    )
    events.stamp(event, producer="test", event_id=f"inference-{task_id}")
    return event


@pytest.fixture
def service(migrated_db_url: str, kafka_cleanup: str) -> Iterator[tuple[Settings, threading.Thread]]:
    settings = Settings(
        group_id=f"test-resultstore-{kafka_cleanup}",
        input_topic=f"test.inference.{kafka_cleanup}",
        output_topic=f"test.stored.{kafka_cleanup}",
        kafka=KafkaSettings(),
        database=DatabaseSettings(url=migrated_db_url),  # type: ignore[arg-type]
    )
    running = ResultStoreService(settings, options=fast_options(pipeline=settings.pipeline))
    errors: list[BaseException] = []

    def run() -> None:
        try:
            running.run()
        except BaseException as exc:  # surfaced by the test below, not lost in the thread
            errors.append(exc)

    thread = threading.Thread(target=run, name="resultstore-under-test")
    thread.start()
    yield settings, thread
    running.stop()
    thread.join(timeout=30)
    assert not thread.is_alive(), "the service did not stop within 30 s"
    assert not errors, errors


def result_rows(url: str) -> list[tuple[Any, ...]]:
    engine = make_engine(url=url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            return [tuple(r) for r in connection.execute(sa.text(
                "SELECT task_id, ordinal, label, score, answer_text, ST_AsBinary(geom), ST_SRID(geom),"
                " ST_AsText(pixel_geom), created_at, updated_at FROM results ORDER BY task_id, ordinal"
            ))]
    finally:
        engine.dispose()


def task_rows(url: str) -> list[tuple[Any, ...]]:
    engine = make_engine(url=url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            return [tuple(r) for r in connection.execute(sa.text(
                "SELECT id, scene_id, level, task, status, tile_col_off, tile_row_off, tile_width, tile_height,"
                " created_at FROM tasks ORDER BY id"
            ))]
    finally:
        engine.dispose()


def test_results_are_stored_georeferenced_idempotent_and_bad_ones_dead_lettered(
    service: tuple[Settings, threading.Thread], migrated_db_url: str
) -> None:
    settings, thread = service
    repository = Repository(make_engine(url=migrated_db_url, pool_size=1))
    repository.upsert_scene(
        SceneRecord(
            id="scene-it", source="test", modality="optical", bands=("red", "green", "blue"), dtype="uint8",
            width=SCENE_SIZE, height=SCENE_SIZE, object_bucket="scenes", object_key="scene-it.tif",
            footprint=footprint_4326(SCENE_TRANSFORM, CRS, SCENE_SIZE, SCENE_SIZE), crs=CRS,
            transform=tuple(SCENE_TRANSFORM)[:6],  # type: ignore[arg-type]
        )
    )
    repository.close()

    with EventProducer(settings.kafka, client_id="test-inference") as producer:
        good = grounding("task-a", PixelBox(x1=20, y1=40, x2=60, y2=80))
        producer.publish_and_wait(settings.input_topic, "scene-it", good)
        [first] = read_topic(settings.kafka, settings.output_topic, 1)
        stored = ResultStored.FromString(first.value)
        assert (stored.task_id, list(stored.result_ids), first.key) == ("task-a", ["task-a:0"], b"scene-it")

        rows = result_rows(migrated_db_url)
        tasks = task_rows(migrated_db_url)
        assert [t[:9] for t in tasks] == [("task-a", "scene-it", 2, "grounding", "done", 256, 128, 256, 256)]
        [(task, ordinal, label, score, text, geom_wkb, srid, pixel_wkt, _, _)] = rows
        assert (task, ordinal, label, score, text, srid) == ("task-a", 0, "ship", 0.75, "[156, 312, 468, 625]", 4326)
        # Chip (x, y) -> scene pixel (256 + 2x, 128 + 2y) -> UTM through the *scene* transform -> lon/lat.
        to_lonlat = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
        expected = sorted(
            to_lonlat.transform(*(SCENE_TRANSFORM @ (col, row))) for col in (296, 376) for row in (208, 288)
        )
        got = sorted(set(wkb.loads(bytes(geom_wkb)).exterior.coords))
        assert len(got) == 4
        for corner, want in zip(got, expected, strict=True):
            assert corner == pytest.approx(want, abs=1e-9)
        assert pixel_wkt == "POLYGON((376 208,376 288,296 288,296 208,376 208))"

        # The same event again (a redelivery): the rows stay exactly as they were, updated_at included.
        producer.publish_and_wait(settings.input_topic, "scene-it", good)
        assert len(read_topic(settings.kafka, settings.output_topic, 2)) == 2
        assert result_rows(migrated_db_url) == rows
        assert [t[:4] + t[9:] for t in task_rows(migrated_db_url)] == [t[:4] + t[9:] for t in tasks]

        # A malformed result (inverted box) goes to the dead-letter topic; the next valid one is stored.
        producer.publish_and_wait(settings.input_topic, "scene-it", grounding("task-bad", PixelBox(x1=60, y1=40, x2=20, y2=80)))
        producer.publish_and_wait(settings.input_topic, "scene-it", grounding("task-b", PixelBox(x1=0, y1=0, x2=10, y2=10), "vehicle"))
        later = read_topic(settings.kafka, settings.output_topic, 3)
        assert [ResultStored.FromString(r.value).task_id for r in later] == ["task-a", "task-a", "task-b"]
        [letter_record] = read_topic(settings.kafka, f"dlq.{settings.group_id}", 1)
        letter = DeadLetter.FromString(letter_record.value)
        assert letter.cause == DeadLetterCause.DEAD_LETTER_CAUSE_PERMANENT
        assert "task-bad" in letter.reason and "inverted" in letter.reason
        assert InferenceResult.FromString(letter.payload).task_id == "task-bad"

    assert [r[:3] for r in result_rows(migrated_db_url)] == [("task-a", 0, "ship"), ("task-b", 0, "vehicle")]
    assert [t[0] for t in task_rows(migrated_db_url)] == ["task-a", "task-b"]
    assert thread.is_alive()
