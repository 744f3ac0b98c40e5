"""Fixtures of the api service tests (``tests/services/api/test_api_*.py``): the API as it runs in production
(uvicorn serving ``create_app``) against the real PostGIS, Kafka and MinIO of the local stack, with a database,
buckets and a ``queries.requested`` topic of its own (unique names, removed afterwards), and helpers that seed
scenes, tasks and results through the real tables the way the pipeline writes them. The API's upstreams run for
real too: Martin (``martin``, the cached binary) and the ingest service (``ingest``, its app on the same database
and buckets), each started by the module that needs it.

Shared fixtures (``migrated_db_url``, ``object_store``) come from ``tests/conftest.py``; Kafka, database and
object-store helpers from ``tests/kits/``.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import rasterio
import sqlalchemy as sa
import uvicorn
from kits.broker import delete_leftovers
from rasterio.transform import from_bounds
from shapely.geometry import box

from earthgptx.settings import DatabaseSettings, KafkaSettings
from earthgptx.store.db import make_engine
from earthgptx.store.objects import ObjectStore
from earthgptx.store.records import ResultRecord, SceneRecord, TaskRecord, TaskResults
from earthgptx.store.repository import Repository
from services.api.main import create_app
from services.api.security import KeyStore
from services.api.settings import Settings
from services.ingest.main import create_app as create_ingest_app
from services.ingest.settings import Settings as IngestSettings

RATE_LIMIT = "1000/minute"
INGEST_MAX_UPLOAD_BYTES = 2_000_000
REPO = Path(__file__).resolve().parents[3]
MARTIN = Path(os.environ.get("EGX_CACHE", Path.home() / ".cache" / "earthgptx")) / "martin" / "bin" / "martin"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class RunningApi:
    settings: Settings
    url: str
    engine: sa.Engine
    repository: Repository
    keys: KeyStore
    writer_token: str
    reader_token: str

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, timeout=60, headers=headers)


def serve(settings: Settings, app_factory: Any = create_app) -> tuple[uvicorn.Server, threading.Thread]:
    server = uvicorn.Server(uvicorn.Config(app_factory(settings), host="127.0.0.1", port=settings.port, log_config=None))
    thread = threading.Thread(target=server.run, name=f"{app_factory.__module__}-under-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail(f"{app_factory.__module__} did not start (its log is above)")
        time.sleep(0.05)
    return server, thread


def api_settings(db_url: str, objects: ObjectStore, unique: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "port": free_port(),
        "database": DatabaseSettings(url=db_url),  # type: ignore[arg-type]
        "objects": objects.settings,
        "kafka": KafkaSettings(),
        "queries_topic": f"queries.requested.{unique}",
        "rate_limit": RATE_LIMIT,
        "max_wait_s": 5.0,
        "log_format": "text",
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def api(migrated_db_url: str, object_store: ObjectStore) -> Iterator[RunningApi]:
    unique = uuid.uuid4().hex[:10]
    settings = api_settings(migrated_db_url, object_store, unique)
    server, thread = serve(settings)
    engine = make_engine(url=migrated_db_url, poolclass=sa.pool.NullPool)
    keys = KeyStore(engine)
    writer = keys.create(f"analyst-{unique}").token
    reader = keys.create(f"viewer-{unique}", ["read"]).token
    try:
        yield RunningApi(
            settings, f"http://127.0.0.1:{settings.port}", engine, Repository(engine), keys, writer, reader
        )
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        engine.dispose()
        delete_leftovers(settings.kafka, unique)


def seed_scene(
    repository: Repository, bounds: tuple[float, float, float, float] = (10.0, 50.0, 10.1, 50.1), *,
    modality: str = "optical", object_key: str = "scene.tif", bucket: str = "scenes",
) -> str:  # fmt: skip
    scene_id = uuid.uuid4().hex
    repository.upsert_scene(
        SceneRecord(
            id=scene_id, source="test-station", sensor="test", modality=modality, bands=("red", "green", "blue"),
            dtype="uint8", width=256, height=256, crs="EPSG:4326",
            transform=((bounds[2] - bounds[0]) / 256, 0.0, bounds[0], 0.0, -(bounds[3] - bounds[1]) / 256, bounds[3]),
            footprint=box(*bounds), object_bucket=bucket, object_key=object_key,
        )  # fmt: skip
    )
    return scene_id


def seed_results(
    repository: Repository, scene_id: str, boxes: list[tuple[float, float, float, float]], *,
    level: int = 2, label: str = "ship", answer: str = "a ship", query_id: str | None = None,
) -> str:  # fmt: skip
    """A task of ``scene_id`` with one result per box, written as the resultstore writes them."""
    task_id = uuid.uuid4().hex
    task = TaskRecord(
        id=task_id, scene_id=scene_id, window=(0, 0, 256, 256), level=level, task="grounding",
        instruction="find the ships", model_version="tiny-test",
    )  # fmt: skip
    results = tuple(
        ResultRecord(
            task_id=task_id, ordinal=i, scene_id=scene_id, answer_text=answer, label=label, geom=box(*b),
            score=0.9, model_version="tiny-test",
        )  # fmt: skip
        for i, b in enumerate(boxes)
    )
    repository.upsert_task(task)
    repository.record_results([TaskResults(task, results)])
    return task_id


@pytest.fixture(scope="module")
def martin(migrated_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not MARTIN.is_file():
        pytest.fail(f"Martin is not built: run deploy/local/martin.sh install (expected {MARTIN.name} in the cache)")
    port = free_port()
    env = {
        **os.environ,
        "EGX_MARTIN_DATABASE_URL": migrated_db_url.replace("+psycopg2", ""),
        "EGX_MARTIN_LISTEN": f"127.0.0.1:{port}",
    }
    log = tmp_path_factory.mktemp("martin") / "martin.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(MARTIN), "--config", str(REPO / "deploy" / "local" / "martin.yaml")], env=env, stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Martin did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def ingest(
    migrated_db_url: str, object_store: ObjectStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The real ingest service (uvicorn serving its ``create_app``) on the test's database and buckets, with a
    drop bucket, topic and consumer group of its own; its URL. The upload size limit is small, to test 413."""
    unique = uuid.uuid4().hex[:10]
    settings = IngestSettings(  # type: ignore[call-arg]
        port=free_port(),
        database=DatabaseSettings(url=migrated_db_url),  # type: ignore[arg-type]
        objects=object_store.settings,
        kafka=KafkaSettings(),
        output_topic=f"scenes.ingested.{unique}",
        drop_bucket=f"egx-drop-{unique}",
        group_id=f"ingest-{unique}",
        max_upload_bytes=INGEST_MAX_UPLOAD_BYTES,
        workdir=tmp_path_factory.mktemp("ingest-work"),
        log_format="text",
    )
    server, thread = serve(settings, create_ingest_app)  # type: ignore[arg-type]
    try:
        yield f"http://127.0.0.1:{settings.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        for found in object_store.client.list_objects(settings.drop_bucket, recursive=True):
            object_store.client.remove_object(settings.drop_bucket, found.object_name)
        if object_store.client.bucket_exists(settings.drop_bucket):
            object_store.client.remove_bucket(settings.drop_bucket)
        delete_leftovers(settings.kafka, unique)


def put_cog(store: ObjectStore, key: str, bounds: tuple[float, float, float, float]) -> None:
    """A small tiled RGB GeoTIFF (left half red) in the scenes bucket, as ingest leaves a scene's COG."""
    data = np.full((3, 256, 256), 40, dtype=np.uint8)
    data[0, :, :128] = 200
    profile = {
        "driver": "GTiff", "width": 256, "height": 256, "count": 3, "dtype": "uint8", "crs": "EPSG:4326",
        "transform": from_bounds(*bounds, 256, 256), "tiled": True, "blockxsize": 256, "blockysize": 256,
    }  # fmt: skip
    buffer = io.BytesIO()
    with rasterio.MemoryFile() as memory:
        with memory.open(**profile) as dataset:
            dataset.write(data)
        buffer.write(memory.read())
    store.put_bytes(store.settings.scenes_bucket, key, buffer.getvalue())
