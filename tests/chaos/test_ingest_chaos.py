"""ingest under faults: ``python -m services.ingest`` ingesting drops while its MinIO is down.

Generated GeoTIFFs are dropped into the drop bucket of a MinIO of the test's own (``harness.PrivateMinio``, its
Kafka notification target on a topic of the test's own on the stack's broker); the service consumes the
notifications, writes COGs to MinIO, a catalogue row to PostGIS (a throwaway database) and a ``SceneIngested``
event. MinIO is stopped for 20 s (``EGX_CHAOS_OUTAGE_S``) once the first drop is ingested, while the others wait.
Asserted: 0 lost (every drop has its row and its event), 0 duplicates (one row and one event id per scene), 0
valid drops dead-lettered, and the next drop ingested within 30 s of MinIO answering again.
"""

from __future__ import annotations

import os
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from harness import PrivateMinio, ServiceProcess, free_port, outage, wait_for
from kits.broker import delete_leftovers, read_topic, record_count
from kits.databases import migrated_database
from kits.scene_files import generated_scene
from minio.commonconfig import Tags

from earthgptx.bus import ensure_topics_from_settings
from earthgptx.events import decode_event
from earthgptx.settings import KafkaSettings, ObjectStoreSettings
from earthgptx.store.db import make_engine
from earthgptx.store.objects import ObjectStore
from earthgptx.v1.events_pb2 import SceneIngested

pytestmark = [pytest.mark.chaos, pytest.mark.kafka, pytest.mark.postgis, pytest.mark.slow]

DROPS = int(os.environ.get("EGX_CHAOS_DROPS", "10"))
OUTAGE_S = float(os.environ.get("EGX_CHAOS_OUTAGE_S", "20"))
BOUND_S = 30


class IngestFlow:
    """Files into the drop bucket; catalogue rows and ``SceneIngested`` events out (see harness.Flow)."""

    def __init__(self, kafka: KafkaSettings, db_url: str, minio: PrivateMinio, suffix: str, workdir: Path) -> None:
        self.kafka, self.db_url, self.minio, self.suffix, self.workdir = kafka, db_url, minio, suffix, workdir
        self.drop_topic = f"test.chaos-drops.{suffix}"
        self.output_topic = f"test.chaos-ingested.{suffix}"
        self.group = f"chaos-ingest-{suffix}"
        self.drop_bucket = f"chaos-drop-{suffix}"
        self._engine = make_engine(url=db_url, poolclass=sa.pool.NullPool, connect_args={"connect_timeout": 2})
        self.objects = ObjectStore(ObjectStoreSettings(endpoint=minio.endpoint, access_key=minio.access_key,  # type: ignore[arg-type]
                                                       secret_key=minio.secret_key))  # type: ignore[arg-type]
        self._done = 0

    def service_env(self) -> dict[str, str]:
        return {
            "EGX_INGEST_PORT": str(free_port()),
            "EGX_INGEST_DROP_BUCKET": self.drop_bucket,
            "EGX_INGEST_DROP_TOPIC": self.drop_topic,
            "EGX_INGEST_GROUP_ID": self.group,
            "EGX_INGEST_OUTPUT_TOPIC": self.output_topic,
            "EGX_INGEST_WORKDIR": str(self.workdir),
            "EGX_INGEST_LOG_FORMAT": "text",
            "EGX_DB_URL": self.db_url,
            "EGX_KAFKA_BOOTSTRAP": self.kafka.bootstrap,
            **self.minio.env(),
        }

    def drop(self, folder: Path, count: int) -> None:
        for number in range(count):
            path, bands = generated_scene(folder, "optical", seed=700 + number, size=256)
            tags = Tags(for_object=True)
            tags.update({"modality": "optical", "bands": " ".join(bands)})
            self.objects.client.fput_object(self.drop_bucket, f"pass-{number:03d}.tif", str(path), tags=tags)

    def done(self) -> int:
        try:
            with self._engine.connect() as connection:
                self._done = int(connection.scalar(sa.text("SELECT count(*) FROM scenes")) or 0)
        except sa.exc.OperationalError:
            pass
        return self._done

    def event_ids_by_scene(self) -> dict[str, set[str]]:
        count = record_count(self.kafka, self.output_topic)
        found: dict[str, set[str]] = defaultdict(set)
        for record in read_topic(self.kafka, self.output_topic, count) if count else []:
            event = decode_event(SceneIngested, record.value)
            found[event.scene_id].add(event.header.event_id)
        return found

    def duplicates(self) -> int:
        """Scenes announced under more than one event id (rows cannot repeat: the scene id is the key)."""
        return sum(len(ids) - 1 for ids in self.event_ids_by_scene().values())

    def dead_letters(self) -> int:
        return record_count(self.kafka, f"dlq.{self.group}")

    def close(self) -> None:
        self._engine.dispose()


@pytest.fixture
def ingest_world(tmp_path: Path) -> Iterator[tuple[IngestFlow, PrivateMinio, ServiceProcess]]:
    kafka = KafkaSettings()
    suffix = uuid.uuid4().hex[:10]
    flow_topic = f"test.chaos-drops.{suffix}"
    ensure_topics_from_settings(kafka, [flow_topic])  # MinIO publishes to it from its start
    minio = PrivateMinio(notify_kafka=(kafka.bootstrap, flow_topic))
    workdir = tmp_path / "work"
    workdir.mkdir()
    try:
        minio.start()
        with migrated_database("egx_chaos") as db_url:
            flow = IngestFlow(kafka, db_url, minio, suffix, workdir)
            service = ServiceProcess("ingest", flow.service_env(), tmp_path / "ingest.log")
            try:
                yield flow, minio, service
            finally:
                service.stop()
                flow.close()
    finally:
        minio.close()
        delete_leftovers(kafka, suffix)


def test_minio_down_during_a_drop_loses_nothing_and_dead_letters_nothing(
    ingest_world: tuple[IngestFlow, PrivateMinio, ServiceProcess], tmp_path: Path, chaos_record: dict[str, Any]
) -> None:
    flow, minio, service = ingest_world
    service.start()
    service.wait_for_log("partitions assigned")
    flow.drop(tmp_path, DROPS)
    wait_for(lambda: flow.done() >= 1, 90, "the first drop ingested")
    at_outage = flow.done()
    recovered = outage(minio, OUTAGE_S, service, flow, bound_s=BOUND_S,
                       what="the first drop ingested after MinIO came back")
    wait_for(lambda: flow.done() == DROPS or not service.alive, 120, f"{DROPS} drops ingested")
    assert service.alive, f"the service exited:\n{service.tail()}"
    assert flow.done() == DROPS, "lost drops"
    assert flow.dead_letters() == 0, "valid drops were dead-lettered"
    wait_for(lambda: len(flow.event_ids_by_scene()) == DROPS, 30, "every scene announced")
    assert flow.duplicates() == 0, f"scenes announced twice: {flow.event_ids_by_scene()}"
    assert "not ready" in service.tail(200_000), "the drop consumer did not report not-ready during the outage"
    assert service.stop() == 0
    assert at_outage < DROPS, "the outage came too late to test anything"
    chaos_record["ingest.minio_outage"] = {"results": DROPS, "outage_s": OUTAGE_S, "done_before_outage": at_outage,
                                           "recovery_s": round(recovered, 2), "bound_s": BOUND_S}
