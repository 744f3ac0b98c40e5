"""The ingest pipeline against the real PostGIS, MinIO and Kafka, with crashes injected between its steps: a retry
completes the scene exactly once in effect (one object, one row, one event); the catalogue keeps footprints split
at the antimeridian and the dashboard view places them correctly."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from affine import Affine
from kits.broker import read_topic, record_count
from kits.scene_files import generated_scene, write_raster
from rasterio.crs import CRS

from earthgptx.bus import EventProducer, PublishError
from earthgptx.bus.topics import ensure_topics_from_settings
from earthgptx.events import decode_event
from earthgptx.scenes import SceneIngestor, SceneMetadata, receive
from earthgptx.settings import KafkaSettings
from earthgptx.store.db import make_engine
from earthgptx.store.errors import StoreUnavailable
from earthgptx.store.objects import ObjectInfo, ObjectStore
from earthgptx.store.scenes import SceneCatalog
from earthgptx.v1.events_pb2 import SceneIngested

pytestmark = [pytest.mark.postgis, pytest.mark.minio, pytest.mark.kafka]


class CrashOnce:
    """Wraps a real port: the first call of ``method`` fails as if the process died just before it (``before``)
    or just after its work was done."""

    def __init__(self, inner: Any, method: str, error: Exception, before: bool = False) -> None:
        self.inner, self.method, self.error, self.before, self.crashed = inner, method, error, before, False

    def __getattr__(self, name: str) -> Any:
        real = getattr(self.inner, name)
        if name != self.method:
            return real

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.before and not self.crashed:
                self.crashed = True
                raise self.error
            result = real(*args, **kwargs)
            if not self.crashed:
                self.crashed = True
                raise self.error
            return result

        return call


@pytest.fixture
def catalog(migrated_db_url: str) -> Iterator[SceneCatalog]:
    catalog = SceneCatalog(make_engine(url=migrated_db_url, pool_size=2))
    yield catalog
    catalog.close()


@pytest.fixture
def topic(kafka_cleanup: str) -> str:
    name = f"scenes.ingested.{kafka_cleanup}"
    ensure_topics_from_settings(KafkaSettings(), [name])
    return name


@pytest.fixture
def producer() -> Iterator[EventProducer]:
    with EventProducer(KafkaSettings(), client_id="egx-test-ingest", producer_name="ingest") as p:
        yield p


def _events(topic: str) -> list[SceneIngested]:
    settings = KafkaSettings()
    count = record_count(settings, topic)
    return [decode_event(SceneIngested, r.value) for r in read_topic(settings, topic, count)] if count else []


def _rows(catalog: SceneCatalog, scene_id: str) -> int:
    with catalog.engine.connect() as connection:
        return int(connection.scalar(sa.text("SELECT count(*) FROM scenes WHERE id = :id"), {"id": scene_id}))


def _objects(store: ObjectStore, scene_id: str) -> list[str]:
    return [o.object_name for o in store.client.list_objects(store.settings.scenes_bucket, recursive=True)
            if scene_id in o.object_name]  # fmt: skip


@pytest.mark.parametrize(
    ("port", "method", "error", "before"),
    [
        ("objects", "put_file", StoreUnavailable("crash after the COG was stored"), False),
        ("catalog", "store_scene", StoreUnavailable("crash after the row was committed"), False),
        ("publisher", "publish_and_wait", PublishError("crash after the broker acknowledged"), False),
        ("catalog", "mark_ingested", StoreUnavailable("crash before the status was written"), True),
    ],
)
def test_a_crash_then_a_retry_completes_the_scene_exactly_once(
    tmp_path: Path, catalog: SceneCatalog, object_store: ObjectStore, producer: EventProducer, topic: str,
    port: str, method: str, error: Exception, before: bool,
) -> None:  # fmt: skip
    # A scene of its own per case (the database and buckets are the module's).
    seed = 31 + ["put_file", "store_scene", "publish_and_wait", "mark_ingested"].index(method)
    path, _ = generated_scene(tmp_path, "multispectral", seed=seed)
    metadata = SceneMetadata(modality="multispectral", source="station-t")
    ports: dict[str, Any] = {"catalog": catalog, "objects": object_store, "publisher": producer}
    ports[port] = CrashOnce(ports[port], method, error, before)
    ingestor = SceneIngestor(ports["catalog"], ports["objects"], ports["publisher"],
                             bucket=object_store.settings.scenes_bucket, topic=topic, workdir=tmp_path)  # fmt: skip
    received = receive([path.read_bytes()], tmp_path, 10**8)
    with pytest.raises(type(error)):
        ingestor.ingest(received, metadata, channel="upload")
    record = catalog.get(received.scene_id)
    assert record is not None and record.status == "accepted"

    result = ingestor.ingest(received, metadata, channel="upload")
    assert result.status == "ingested" and not result.duplicate
    again = ingestor.ingest(received, metadata, channel="upload")
    assert again.duplicate

    assert _rows(catalog, received.scene_id) == 1
    assert _objects(object_store, received.scene_id) == [f"cog/{received.scene_id}.tif"]
    events = _events(topic)
    # The broker may hold the event of the crashed attempt too (acknowledged, then the crash): same event id.
    assert len({e.header.event_id for e in events}) == 1
    assert len(events) == (2 if method == "publish_and_wait" or method == "mark_ingested" else 1)
    record = catalog.get(received.scene_id)
    assert record is not None and record.status == "ingested" and record.attempts == 2


def test_antimeridian_footprint_is_stored_split_and_placed_on_the_map(
    tmp_path: Path, catalog: SceneCatalog, object_store: ObjectStore, producer: EventProducer, topic: str
) -> None:
    # 0.8° x 0.5° of float reflectance straddling 180° near Fiji, in EPSG:4326 with longitudes past 180.
    data = np.random.default_rng(2).random((3, 500, 800)).astype(np.float32)
    path = write_raster(tmp_path / "fiji.tif", data, crs=CRS.from_epsg(4326),
                        transform=Affine(0.001, 0, 179.6, 0, -0.001, -16.5))  # fmt: skip
    ingestor = SceneIngestor(catalog, object_store, producer, bucket=object_store.settings.scenes_bucket, topic=topic)
    received = receive([path.read_bytes()], tmp_path, 10**8)
    result = ingestor.ingest(received, SceneMetadata(modality="optical", bands=("red", "green", "blue")), channel="upload")
    assert result.status == "ingested", result.reason
    with catalog.engine.connect() as connection:
        row = connection.execute(
            sa.text("SELECT GeometryType(s.footprint) AS kind, v.lon, v.lat, s.stac_item FROM scenes s "
                    "JOIN v_scenes_map v ON v.scene_id = s.id WHERE s.id = :id"),
            {"id": result.scene_id},
        ).one()  # fmt: skip
    assert row.kind == "MULTIPOLYGON"
    assert abs(abs(row.lon) - 180.0) < 0.3 and abs(row.lat + 16.75) < 0.01  # near 180°, not near 0°
    west, south, east, north = row.stac_item["bbox"]
    assert west > 0 > east  # STAC's bbox across the antimeridian
    event = next(e for e in _events(topic) if e.scene_id == result.scene_id)
    assert json.loads(event.footprint.geojson)["type"] == "MultiPolygon"
    assert isinstance(object_store.stat(object_store.settings.scenes_bucket, f"cog/{result.scene_id}.tif"), ObjectInfo)
