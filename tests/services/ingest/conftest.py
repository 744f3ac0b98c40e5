"""The ingest service as it runs in production (uvicorn serving ``create_app``, the drop consumer in its thread),
against the real PostGIS, MinIO and Kafka of the local stack, with a database, buckets, topics and a consumer
group of its own (unique names, removed afterwards). MinIO's notification topic is the server's (shared): the
service ignores notifications of other buckets.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from kits.broker import delete_leftovers, read_topic, record_count

from earthgptx.events import decode_event
from earthgptx.settings import DatabaseSettings, KafkaSettings
from earthgptx.store.db import make_engine
from earthgptx.store.objects import ObjectStore
from earthgptx.v1.events_pb2 import SceneIngested
from services.ingest.main import create_app
from services.ingest.settings import Settings

MAX_UPLOAD_BYTES = 12_000_000


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class RunningIngest:
    settings: Settings
    url: str
    objects: ObjectStore
    engine: sa.Engine
    workdir: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)

    def wait_for_status(self, scene_id: str, timeout_s: float = 60.0) -> dict[str, object]:
        """The scene's status once it is no longer ``accepted``."""
        deadline = time.monotonic() + timeout_s
        with self.client() as client:
            while True:
                body = client.get(f"/v1/scenes/{scene_id}").json()
                if body.get("status") not in ("accepted", None) or time.monotonic() > deadline:
                    return dict(body)
                time.sleep(0.1)

    def events(self) -> list[SceneIngested]:
        topic = self.settings.output_topic
        count = record_count(self.settings.kafka, topic)
        return [decode_event(SceneIngested, r.value) for r in read_topic(self.settings.kafka, topic, count)] if count else []

    def scene_rows(self, scene_id: str) -> int:
        with self.engine.connect() as connection:
            return int(connection.scalar(sa.text("SELECT count(*) FROM scenes WHERE id = :id"), {"id": scene_id}))

    def cog_objects(self) -> list[str]:
        return [o.object_name for o in self.objects.client.list_objects(self.settings.objects.scenes_bucket, recursive=True)]

    def drop_objects(self) -> list[str]:
        return sorted(o.object_name for o in self.objects.client.list_objects(self.settings.drop_bucket, recursive=True))

    def leftover_files(self) -> list[Path]:
        return sorted(self.workdir.rglob("*"))


@pytest.fixture(scope="module")
def ingest_service(
    migrated_db_url: str, object_store: ObjectStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningIngest]:
    unique = uuid.uuid4().hex[:10]
    workdir = tmp_path_factory.mktemp("ingest-work")
    settings = Settings(  # type: ignore[call-arg]
        port=_free_port(),
        database=DatabaseSettings(url=migrated_db_url),  # type: ignore[arg-type]
        objects=object_store.settings,
        kafka=KafkaSettings(),
        output_topic=f"scenes.ingested.{unique}",
        drop_bucket=f"egx-drop-{unique}",
        group_id=f"ingest-{unique}",
        max_upload_bytes=MAX_UPLOAD_BYTES,
        chunk_bytes=64 * 1024,
        workdir=workdir,
        log_format="text",
    )
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=settings.port, log_config=None))
    thread = threading.Thread(target=server.run, name="ingest-under-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the ingest service did not start (its log is above)")
        time.sleep(0.05)
    engine = make_engine(url=migrated_db_url, poolclass=sa.pool.NullPool)
    try:
        yield RunningIngest(settings, f"http://127.0.0.1:{settings.port}", object_store, engine, workdir)
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        engine.dispose()
        for found in object_store.client.list_objects(settings.drop_bucket, recursive=True):
            object_store.client.remove_object(settings.drop_bucket, found.object_name)
        object_store.client.remove_bucket(settings.drop_bucket)
        delete_leftovers(settings.kafka, unique)
