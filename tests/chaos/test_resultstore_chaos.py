"""The result store under faults: ``python -m services.resultstore`` with a few hundred results flowing.

Each scenario asserts 0 lost (every result stored and announced), 0 duplicate rows, 0 valid records in the
dead-letter topic, and recovery within a stated bound:

| scenario | bound |
|---|---|
| the service killed with SIGKILL mid-stream, then started again | first new result within 30 s of the restart |
| PostgreSQL stopped for 90 s (``EGX_CHAOS_PG_OUTAGE_S``) | within 10 s of PostgreSQL answering again |
| the Kafka broker restarted | within 20 s of the broker answering again |
| a ``results.stored`` topic that refuses events over 16 kB | nothing refused is lost (claim check) |

The outage scenarios break a PostgreSQL or broker of the test's own (``harness.PrivatePostgres``/``PrivateKafka``),
not the shared local stack.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from affine import Affine
from harness import PrivateKafka, PrivatePostgres, ServiceProcess, recovery_s, wait_for
from kits.broker import delete_leftovers, read_topic, record_count
from kits.databases import migrated_database
from rasterio.windows import Window

from earthgptx import events
from earthgptx.bus import EventProducer, ensure_topics_from_settings
from earthgptx.geo import footprint_4326, make_tile
from earthgptx.settings import KafkaSettings, ObjectStoreSettings
from earthgptx.store import migrate
from earthgptx.store.db import make_engine
from earthgptx.store.objects import ObjectStore
from earthgptx.store.records import SceneRecord
from earthgptx.store.repository import Repository
from earthgptx.v1.events_pb2 import Answer, DetectedBox, InferenceResult, Level, PixelBox, ResultStored

pytestmark = [pytest.mark.chaos, pytest.mark.kafka, pytest.mark.postgis, pytest.mark.minio, pytest.mark.slow]

CRS = "EPSG:32631"
SCENE_TRANSFORM = Affine(2.0, 0.0, 430_000.0, 0.0, -2.0, 5_400_000.0)
SCENE_SIZE = 512
RESULTS = int(os.environ.get("EGX_CHAOS_RESULTS", "300"))
PG_OUTAGE_S = float(os.environ.get("EGX_CHAOS_PG_OUTAGE_S", "90"))


class ResultStoreFlow:
    """Results in on ``inference.results``; rows in PostGIS and ``ResultStored`` events out (see harness.Flow)."""

    def __init__(self, kafka: KafkaSettings, db_url: str, suffix: str) -> None:
        self.kafka = kafka
        self.db_url = db_url
        self.suffix = suffix
        self.scene_id = f"chaos-scene-{suffix}"
        self.input_topic = f"test.chaos-in.{suffix}"
        self.output_topic = f"test.chaos-out.{suffix}"
        self.group = f"chaos-resultstore-{suffix}"
        self.claims_bucket = f"egx-chaos-claims-{suffix}"
        self._engine = make_engine(url=db_url, poolclass=sa.pool.NullPool, connect_args={"connect_timeout": 2})
        self._done = 0
        self.boxes_of: dict[int, int] = {}

    def service_env(self) -> dict[str, str]:
        return {
            "EGX_RESULTSTORE_GROUP_ID": self.group,
            "EGX_RESULTSTORE_INPUT_TOPIC": self.input_topic,
            "EGX_RESULTSTORE_OUTPUT_TOPIC": self.output_topic,
            "EGX_RESULTSTORE_CLAIMS_BUCKET": self.claims_bucket,
            "EGX_RESULTSTORE_LOG_FORMAT": "text",
            "EGX_DB_URL": self.db_url,
            "EGX_KAFKA_BOOTSTRAP": self.kafka.bootstrap,
        }

    def add_scene(self) -> None:
        repository = Repository(make_engine(url=self.db_url, pool_size=1))
        try:
            repository.upsert_scene(SceneRecord(
                id=self.scene_id, source="chaos", modality="optical", bands=("red", "green", "blue"),
                dtype="uint8", width=SCENE_SIZE, height=SCENE_SIZE, object_bucket="scenes",
                object_key=f"{self.scene_id}.tif", crs=CRS, transform=tuple(SCENE_TRANSFORM)[:6],  # type: ignore[arg-type]
                footprint=footprint_4326(SCENE_TRANSFORM, CRS, SCENE_SIZE, SCENE_SIZE),
            ))
        finally:
            repository.close()

    def task_id(self, number: int) -> str:
        return f"chaos-{self.suffix}-{number:05d}"

    def result(self, number: int, boxes: int = 1) -> InferenceResult:
        detected = [DetectedBox(box=PixelBox(x1=i % 100, y1=i % 97, x2=i % 100 + 8, y2=i % 97 + 8), label="ship",
                                score=0.5) for i in range(number % 50, number % 50 + boxes)]
        event = InferenceResult(
            task_id=self.task_id(number), scene_id=self.scene_id, level=Level.LEVEL_L2_GROUNDING, task="grounding",
            tile=make_tile(SCENE_TRANSFORM, CRS, Window(0, 0, 256, 256), 128, 128),
            answer=Answer(text=f"answer {number}", boxes=detected), model_version="chaos",
        )
        return events.stamp(event, producer="chaos", event_id=f"inference-{self.task_id(number)}")

    def send(self, count: int, start: int = 0, boxes: dict[int, int] | None = None) -> None:
        with EventProducer(self.kafka, client_id=f"chaos-inference-{self.suffix}") as producer:
            for number in range(start, start + count):
                n = (boxes or {}).get(number, 1)
                self.boxes_of[number] = n
                producer.publish(self.input_topic, self.scene_id, self.result(number, n))
            producer.flush()

    def send_paced(self, count: int, per_second: float, start: int = 0) -> threading.Thread:
        """Send in the background at about ``per_second``, so that results keep flowing through a fault."""

        def run() -> None:
            with EventProducer(self.kafka, client_id=f"chaos-paced-{self.suffix}") as producer:
                for number in range(start, start + count):
                    self.boxes_of[number] = 1
                    producer.publish(self.input_topic, self.scene_id, self.result(number))
                    time.sleep(1.0 / per_second)
                producer.flush()

        thread = threading.Thread(target=run, name="chaos-sender", daemon=True)
        thread.start()
        return thread

    def _scalar(self, sql: str) -> int | None:
        try:
            with self._engine.connect() as connection:
                return int(connection.scalar(sa.text(sql), {"prefix": f"chaos-{self.suffix}-%"}) or 0)
        except sa.exc.OperationalError:
            return None  # the database is down (on purpose)

    def done(self) -> int:
        count = self._scalar("SELECT count(*) FROM tasks WHERE status = 'done' AND id LIKE :prefix")
        if count is not None:
            self._done = count
        return self._done

    def rows(self) -> int:
        return self._scalar("SELECT count(*) FROM results WHERE task_id LIKE :prefix") or 0

    def duplicates(self) -> int:
        # One row per box and task: more rows than boxes sent would be duplicates (the key forbids them, and
        # this checks it end to end).
        return max(0, self.rows() - sum(self.boxes_of.values()))

    def dead_letters(self) -> int:
        return record_count(self.kafka, f"dlq.{self.group}")

    def announced(self) -> set[str]:
        """Task ids of all ``ResultStored`` events on the output topic (a redelivery may announce twice)."""
        records = read_topic(self.kafka, self.output_topic, record_count(self.kafka, self.output_topic))
        return {ResultStored.FromString(r.value).task_id for r in records}

    def close(self) -> None:
        self._engine.dispose()


@pytest.fixture
def suffix() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def claims_cleanup(suffix: str) -> Iterator[None]:
    yield
    store = ObjectStore(ObjectStoreSettings())  # type: ignore[call-arg]
    bucket = f"egx-chaos-claims-{suffix}"
    if store.client.bucket_exists(bucket):
        for found in store.client.list_objects(bucket, recursive=True):
            store.client.remove_object(bucket, found.object_name)
        store.client.remove_bucket(bucket)


def _assert_all_stored(flow: ResultStoreFlow, service: ServiceProcess, timeout_s: float = 90.0) -> None:
    wait_for(lambda: flow.done() == RESULTS or not service.alive, timeout_s, f"{RESULTS} results stored")
    assert service.alive, f"the service exited:\n{service.tail()}"
    assert flow.done() == RESULTS, "lost results"
    assert flow.rows() == sum(flow.boxes_of.values()) and flow.duplicates() == 0
    assert flow.dead_letters() == 0, "valid results were dead-lettered"
    # Rows are committed before their event is acknowledged: give the last batch's events a moment.
    expected = {flow.task_id(n) for n in range(RESULTS)}
    wait_for(lambda: flow.announced() == expected, 20, "every result to be announced on results.stored")
    assert service.stop() == 0


def _flow(kafka: KafkaSettings, db_url: str, suffix: str, tmp_path: Path) -> tuple[ResultStoreFlow, ServiceProcess]:
    flow = ResultStoreFlow(kafka, db_url, suffix)
    flow.add_scene()
    ensure_topics_from_settings(kafka, [flow.input_topic])  # results wait in it before the service starts
    return flow, ServiceProcess("resultstore", flow.service_env(), tmp_path / "resultstore.log")


def test_kill_9_mid_stream_loses_nothing_and_duplicates_nothing(
    suffix: str, tmp_path: Path, chaos_record: dict[str, Any], claims_cleanup: None
) -> None:
    kafka = KafkaSettings()
    with migrated_database("egx_chaos") as db_url:
        flow, service = _flow(kafka, db_url, suffix, tmp_path)
        try:
            service.start()
            service.wait_for_log("partitions assigned")  # then results flow while it runs
            sender = flow.send_paced(RESULTS, per_second=RESULTS / 8)
            wait_for(lambda: flow.done() >= RESULTS // 4, 60, "the first quarter of the results")
            service.kill9()
            at_kill = flow.done()
            service.start()
            started = time.monotonic()
            recovery_s(flow.done, 30, "the first result after the restart")
            recovered = time.monotonic() - started
            sender.join(timeout=60)
            _assert_all_stored(flow, service)
        finally:
            service.stop()
            flow.close()
            delete_leftovers(kafka, suffix)
    assert at_kill < RESULTS, "the kill came too late to test anything"
    chaos_record["resultstore.kill9"] = {"results": RESULTS, "stored_at_kill": at_kill,
                                         "recovery_s": round(recovered, 2), "bound_s": 30}


def test_postgres_stopped_for_90_s_dead_letters_nothing_and_recovers(
    suffix: str, tmp_path: Path, private_postgres: PrivatePostgres, chaos_record: dict[str, Any],
    claims_cleanup: None,
) -> None:
    kafka = KafkaSettings()
    migrate.upgrade("head", url=private_postgres.url)
    flow, service = _flow(kafka, private_postgres.url, suffix, tmp_path)
    try:
        service.start()
        service.wait_for_log("partitions assigned")
        sender = flow.send_paced(RESULTS, per_second=RESULTS / 10)
        wait_for(lambda: flow.done() >= RESULTS // 4, 60, "the first quarter of the results")
        private_postgres.stop()
        outage_started = time.monotonic()
        while time.monotonic() - outage_started < PG_OUTAGE_S:
            assert service.alive, f"the service exited during the outage:\n{service.tail()}"
            assert flow.dead_letters() == 0, "a valid result was dead-lettered during the outage"
            time.sleep(2.0)
        at_outage = flow.done()
        private_postgres.start()
        recovered = recovery_s(flow.done, 10, "the first result after PostgreSQL came back")
        sender.join(timeout=60)
        _assert_all_stored(flow, service)
        assert "not ready" in service.tail(200_000), "the consumer did not report not-ready during the outage"
    finally:
        service.stop()
        flow.close()
        delete_leftovers(kafka, suffix)
    assert at_outage < RESULTS
    chaos_record["resultstore.postgres_outage"] = {"results": RESULTS, "outage_s": PG_OUTAGE_S,
                                                   "stored_before_outage": at_outage,
                                                   "recovery_s": round(recovered, 2), "bound_s": 10}


def test_kafka_broker_restart_loses_nothing_and_recovers_in_seconds(
    suffix: str, tmp_path: Path, private_kafka: PrivateKafka, chaos_record: dict[str, Any], claims_cleanup: None
) -> None:
    kafka = KafkaSettings(bootstrap=private_kafka.bootstrap, partitions=3)
    with migrated_database("egx_chaos") as db_url:
        flow, service = _flow(kafka, db_url, suffix, tmp_path)
        try:
            half = RESULTS // 2
            flow.send(half)
            service.start()
            wait_for(lambda: flow.done() == half, 90, "the first half of the results")
            private_kafka.stop()
            at_restart = flow.done()
            private_kafka.start()
            back = time.monotonic()
            flow.send(RESULTS - half, start=half)
            wait_for(lambda: flow.done() > half, 20, "the first result after the broker came back")
            recovered = time.monotonic() - back
            _assert_all_stored(flow, service)
        finally:
            service.stop()
            flow.close()
    assert at_restart == RESULTS // 2
    chaos_record["resultstore.kafka_restart"] = {"results": RESULTS, "stored_before_restart": at_restart,
                                                 "recovery_s": round(recovered, 2), "bound_s": 20}


def test_a_topic_that_refuses_oversize_events_loses_nothing(
    suffix: str, tmp_path: Path, chaos_record: dict[str, Any], claims_cleanup: None
) -> None:
    kafka = KafkaSettings()
    with migrated_database("egx_chaos") as db_url:
        flow, service = _flow(kafka, db_url, suffix, tmp_path)
        try:
            # The output topic exists before the service starts, with a limit far below the client's.
            ensure_topics_from_settings(kafka, [flow.output_topic], configs={"max.message.bytes": "16384"})
            large = {n: 600 for n in range(0, RESULTS, 30)}  # ResultStored of ~25 kB: refused inline
            flow.send(RESULTS, boxes=large)
            service.start()
            _assert_all_stored(flow, service)
            claimed = [ResultStored.FromString(r.value) for r in read_topic(kafka, flow.output_topic, RESULTS)]
            # The broker refuses a whole record batch, so small events sent with a large one may be claim-checked
            # too: harmless. Every large one must be.
            assert {s.task_id for s in claimed if s.HasField("objects_claim")} >= {flow.task_id(n) for n in large}
        finally:
            service.stop()
            flow.close()
            delete_leftovers(kafka, suffix)
    chaos_record["resultstore.refusing_topic"] = {"results": RESULTS, "claim_checked": len(large)}
