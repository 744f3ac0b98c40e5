"""promptgen under faults: ``python -m services.promptgen`` tiling scenes while its MinIO or its PostgreSQL is down.

Scenes (one generated GeoTIFF stored under many ids, each its own catalogue row) are announced on a
``scenes.ingested`` topic of the test's own while the service runs; each becomes chips in MinIO, L1 task rows in
PostGIS and ``PromptTask`` events. Each scenario asserts 0 lost (every scene has its tasks, every task announced),
0 duplicates (every scene the same number of task rows, one id per question), 0 valid scenes in the dead-letter
topic, and recovery within a stated bound:

| scenario | bound |
|---|---|
| MinIO stopped for 20 s (``EGX_CHAOS_OUTAGE_S``) | next scene tiled within 30 s of MinIO answering again |
| PostgreSQL stopped for 20 s | next scene tiled within 30 s of PostgreSQL answering again |

MinIO and PostgreSQL are the test's own (``harness.PrivateMinio``/``PrivatePostgres``); the broker is the stack's
(topics and group of unique names, removed afterwards).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import rasterio
import sqlalchemy as sa
from harness import PrivateMinio, PrivatePostgres, ServiceProcess, outage, wait_for
from kits.broker import delete_leftovers, read_topic, record_count
from kits.scene_files import generated_scene

from earthgptx import events
from earthgptx.bus import EventProducer, ensure_topics_from_settings
from earthgptx.geo import footprint_4326
from earthgptx.settings import KafkaSettings, ObjectStoreSettings
from earthgptx.store import migrate
from earthgptx.store.db import make_engine
from earthgptx.store.objects import ObjectStore
from earthgptx.store.records import SceneRecord
from earthgptx.store.repository import Repository
from earthgptx.v1.events_pb2 import PromptTask, SceneIngested

pytestmark = [pytest.mark.chaos, pytest.mark.kafka, pytest.mark.slow]

SCENES = int(os.environ.get("EGX_CHAOS_SCENES", "24"))
OUTAGE_S = float(os.environ.get("EGX_CHAOS_OUTAGE_S", "20"))
BOUND_S = 30


class PromptgenFlow:
    """Scenes in on ``scenes.ingested``; task rows in PostGIS and ``PromptTask`` events out (see harness.Flow)."""

    def __init__(self, kafka: KafkaSettings, db_url: str, minio: PrivateMinio, suffix: str) -> None:
        self.kafka, self.db_url, self.minio, self.suffix = kafka, db_url, minio, suffix
        self.input_topic = f"test.chaos-scenes.{suffix}"
        self.output_topic = f"test.chaos-tasks.{suffix}"
        self.group = f"chaos-promptgen-{suffix}"
        self._engine = make_engine(url=db_url, poolclass=sa.pool.NullPool, connect_args={"connect_timeout": 2})
        self._done = 0
        self.sent: set[int] = set()

    def service_env(self) -> dict[str, str]:
        return {
            "EGX_PROMPTGEN_GROUP_ID": self.group,
            "EGX_PROMPTGEN_SCENES_TOPIC": self.input_topic,
            "EGX_PROMPTGEN_RESULTS_TOPIC": f"test.chaos-stored.{self.suffix}",
            "EGX_PROMPTGEN_QUERIES_TOPIC": f"test.chaos-queries.{self.suffix}",
            "EGX_PROMPTGEN_OUTPUT_TOPIC": self.output_topic,
            "EGX_PROMPTGEN_MODEL_VERSION": "chaos",
            "EGX_PROMPTGEN_LOG_FORMAT": "text",
            "EGX_DB_URL": self.db_url,
            "EGX_KAFKA_BOOTSTRAP": self.kafka.bootstrap,
            **self.minio.env(),
        }

    def scene_id(self, number: int) -> str:
        return f"chaos-{self.suffix}-{number:03d}"

    def add_scenes(self, folder: Path, count: int) -> None:
        """One generated scene, stored under ``count`` ids (each a catalogue row and an object in MinIO)."""
        path, bands = generated_scene(folder, "optical", seed=5, size=256)
        with rasterio.open(path) as src:
            transform, crs, width, height, dtype = src.transform, src.crs.to_string(), src.width, src.height, src.dtypes[0]
        objects = ObjectStore(ObjectStoreSettings(endpoint=self.minio.endpoint, access_key=self.minio.access_key,  # type: ignore[arg-type]
                                                  secret_key=self.minio.secret_key))  # type: ignore[arg-type]
        objects.ensure_buckets()
        repository = Repository(make_engine(url=self.db_url, pool_size=1))
        try:
            for number in range(count):
                scene_id = self.scene_id(number)
                objects.put_file(objects.settings.scenes_bucket, f"{scene_id}.tif", path)
                repository.upsert_scene(SceneRecord(
                    id=scene_id, source="chaos", modality="optical", bands=bands, dtype=dtype, width=width,
                    height=height, object_bucket=objects.settings.scenes_bucket, object_key=f"{scene_id}.tif",
                    footprint=footprint_4326(transform, crs, width, height), crs=crs, transform=tuple(transform)[:6],
                ))  # fmt: skip
        finally:
            repository.close()

    def send_paced(self, count: int, per_second: float) -> threading.Thread:
        def run() -> None:
            with EventProducer(self.kafka, client_id=f"chaos-ingest-{self.suffix}") as producer:
                for number in range(count):
                    self.sent.add(number)
                    event = events.stamp(SceneIngested(scene_id=self.scene_id(number), width=256, height=256),
                                         producer="chaos", event_id=f"ingested-{self.scene_id(number)}")
                    producer.publish(self.input_topic, event.scene_id, event)
                    time.sleep(1.0 / per_second)
                producer.flush()

        thread = threading.Thread(target=run, name="chaos-scenes", daemon=True)
        thread.start()
        return thread

    def _rows(self, sql: str) -> list[Any] | None:
        try:
            with self._engine.connect() as connection:
                return list(connection.execute(sa.text(sql), {"prefix": f"chaos-{self.suffix}-%"}))
        except sa.exc.OperationalError:
            return None  # the database is down (on purpose)

    def tasks_per_scene(self) -> dict[str, int] | None:
        rows = self._rows("SELECT scene_id, count(*) FROM tasks WHERE scene_id LIKE :prefix GROUP BY scene_id")
        return None if rows is None else {scene_id: int(n) for scene_id, n in rows}

    def done(self) -> int:
        counts = self.tasks_per_scene()
        if counts is not None:
            self._done = len(counts)
        return self._done

    def duplicates(self) -> int:
        """Task rows beyond the usual number per scene (the scenes are identical, so they get the same tasks),
        plus rows asking one question twice of one tile."""
        counts = self.tasks_per_scene() or {}
        if not counts:
            return 0
        usual = Counter(counts.values()).most_common(1)[0][0]
        rows = self._rows("SELECT count(*) - count(DISTINCT (scene_id, tile_col_off, tile_row_off, level, task, "
                          "instruction, prompts::text)) FROM tasks WHERE scene_id LIKE :prefix") or [(0,)]
        return sum(n - usual for n in counts.values() if n > usual) + int(rows[0][0])

    def dead_letters(self) -> int:
        return record_count(self.kafka, f"dlq.{self.group}")

    def announced(self) -> set[str]:
        records = read_topic(self.kafka, self.output_topic, record_count(self.kafka, self.output_topic))
        return {PromptTask.FromString(r.value).task_id for r in records}

    def task_ids(self) -> set[str]:
        return {row[0] for row in self._rows("SELECT id FROM tasks WHERE scene_id LIKE :prefix") or []}

    def close(self) -> None:
        self._engine.dispose()


@pytest.fixture
def suffix() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def promptgen_world(
    suffix: str, tmp_path: Path, private_postgres: PrivatePostgres, private_minio: PrivateMinio
) -> Iterator[tuple[PromptgenFlow, ServiceProcess]]:
    kafka = KafkaSettings()
    migrate.upgrade("head", url=private_postgres.url)
    flow = PromptgenFlow(kafka, private_postgres.url, private_minio, suffix)
    flow.add_scenes(tmp_path, SCENES)
    ensure_topics_from_settings(kafka, [flow.input_topic])
    service = ServiceProcess("promptgen", flow.service_env(), tmp_path / "promptgen.log")
    try:
        yield flow, service
    finally:
        service.stop()
        flow.close()
        delete_leftovers(kafka, suffix)


def _assert_all_tiled(flow: PromptgenFlow, service: ServiceProcess, timeout_s: float = 120.0) -> None:
    wait_for(lambda: flow.done() == SCENES or not service.alive, timeout_s, f"{SCENES} scenes tiled")
    assert service.alive, f"the service exited:\n{service.tail()}"
    assert flow.done() == SCENES, "lost scenes"
    assert flow.duplicates() == 0, f"duplicate tasks: {flow.tasks_per_scene()}"
    assert flow.dead_letters() == 0, "valid scenes were dead-lettered"
    expected = flow.task_ids()
    wait_for(lambda: flow.announced() >= expected, 30, "every task to be announced on prompts.tasks")
    assert service.stop() == 0


def _run_outage(world: tuple[PromptgenFlow, ServiceProcess], dependency: Any, name: str,
                chaos_record: dict[str, Any]) -> None:
    flow, service = world
    service.start()
    service.wait_for_log("partitions assigned")
    sender = flow.send_paced(SCENES, per_second=SCENES / 15)
    wait_for(lambda: flow.done() >= 3, 90, "the first scenes tiled")
    at_outage = flow.done()
    recovered = outage(dependency, OUTAGE_S, service, flow, bound_s=BOUND_S,
                       what=f"the first scene tiled after {name} came back")
    sender.join(timeout=60)
    _assert_all_tiled(flow, service)
    assert "not ready" in service.tail(200_000), "the consumer did not report not-ready during the outage"
    assert at_outage < SCENES, "the outage came too late to test anything"
    chaos_record[f"promptgen.{name}_outage"] = {"results": SCENES, "outage_s": OUTAGE_S, "done_before_outage":
                                                at_outage, "recovery_s": round(recovered, 2), "bound_s": BOUND_S}


def test_minio_stopped_for_a_while_loses_nothing_and_dead_letters_nothing(
    promptgen_world: tuple[PromptgenFlow, ServiceProcess], private_minio: PrivateMinio,
    chaos_record: dict[str, Any],
) -> None:
    _run_outage(promptgen_world, private_minio, "minio", chaos_record)


def test_postgres_stopped_for_a_while_loses_nothing_and_dead_letters_nothing(
    promptgen_world: tuple[PromptgenFlow, ServiceProcess], private_postgres: PrivatePostgres,
    chaos_record: dict[str, Any],
) -> None:
    _run_outage(promptgen_world, private_postgres, "postgres", chaos_record)
