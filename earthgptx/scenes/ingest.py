"""The ingest of one received file: validate → COG → object store → ``scenes`` row → ``scenes.ingested``.

Order and durability. The COG goes to the object store first (its key is the scene id, its metadata its SHA-256),
then the ``scenes`` row, then the event is published and acknowledged (acks=all), and only then is the scene
marked ``ingested``. Each step is idempotent: the object put is skipped when the same bytes are stored, the row is
inserted once, the event id is derived from the scene id. So a crash at any point followed by a retry (a re-sent
upload, a re-delivered drop notification) completes the scene exactly once in effect: one object, one row, and
an event that a consumer sees again only if the crash fell between the broker's acknowledgement and the status
update, with the same event id. The same scene sent twice by either way in finds it ``ingested`` and does
nothing: no second row, object or event.

Failures. ``SceneRejected`` (bad input) marks the scene rejected with its reason, before any object or row is
written; nothing is published. Outages (``StoreUnavailable``, broker errors) propagate to the caller, which
retries: the scene stays ``accepted`` meanwhile.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import rasterio
from affine import Affine
from google.protobuf.message import Message
from rasterio.errors import RasterioError
from shapely.geometry import mapping
from shapely.geometry.base import BaseGeometry

from earthgptx import events
from earthgptx.bus import topics
from earthgptx.geo import GeoreferenceError, affine_to_message
from earthgptx.geo.outline import scene_outline
from earthgptx.scenes.cog import COG_MEDIA_TYPE, write_cog
from earthgptx.scenes.errors import SceneRejected
from earthgptx.scenes.metadata import SceneMetadata
from earthgptx.scenes.receive import Received
from earthgptx.scenes.stac import scene_stac_item
from earthgptx.scenes.validate import InspectedScene, inspect_scene, open_rectified
from earthgptx.store.objects import ObjectInfo
from earthgptx.store.scenes import CatalogedScene, IngestRecord
from earthgptx.v1.events_pb2 import Footprint, Modality, ObjectRef, SceneIngested

__all__ = ["IngestResult", "SceneIngestor", "cog_key", "scene_ingested_event"]

log = logging.getLogger(__name__)

PRODUCER_NAME = "ingest"


class Catalog(Protocol):
    """The part of ``earthgptx.store.scenes.SceneCatalog`` ingest uses."""

    def exclusive(self, scene_id: str) -> Any: ...

    def register(
        self, scene_id: str, *, sha256: str, size_bytes: int, channel: str, name: str | None, source: str | None,
        request: dict[str, Any],
    ) -> IngestRecord: ...  # fmt: skip

    def start_attempt(self, scene_id: str) -> None: ...

    def reject(self, scene_id: str, reason: str) -> None: ...

    def store_scene(self, scene: CatalogedScene) -> None: ...

    def mark_ingested(self, scene_id: str) -> None: ...

    def get(self, scene_id: str) -> IngestRecord | None: ...


class Objects(Protocol):
    """The part of ``earthgptx.store.objects.ObjectStore`` ingest uses."""

    def put_file(self, bucket: str, key: str, path: str | Path, *, content_type: str = ...) -> ObjectInfo: ...


class Publisher(Protocol):
    """The part of ``earthgptx.bus.EventProducer`` ingest uses."""

    def publish_and_wait(self, topic: str, key: str, message: Message, *, timeout_s: float = 30.0) -> Any: ...


@dataclass(frozen=True)
class IngestResult:
    scene_id: str
    status: str  # "ingested" or "rejected"
    reason: str | None = None
    duplicate: bool = False  # the scene was ingested before: nothing was done


def cog_key(scene_id: str) -> str:
    """Object key of a scene's COG in the scenes bucket."""
    return f"cog/{scene_id}.tif"


def scene_ingested_event(scene: CatalogedScene, cog: ObjectInfo, trace_id: str = "") -> SceneIngested:
    """The announcement of an ingested scene (event id derived from the scene id)."""
    event = SceneIngested(
        scene_id=scene.id,
        source=scene.source,
        sensor=scene.sensor or "",
        modality=Modality.Value(f"MODALITY_{scene.modality.upper()}"),
        bands=list(scene.bands),
        dtype=scene.dtype,
        width=scene.width,
        height=scene.height,
        crs=scene.crs,
        transform=affine_to_message(Affine(*scene.transform)),
        footprint=Footprint(geojson=json.dumps(mapping(scene.footprint))),
        cog=ObjectRef(
            bucket=cog.bucket, key=cog.key, size_bytes=cog.size, etag=cog.etag or "",
            content_type=cog.content_type or COG_MEDIA_TYPE,
        ),  # fmt: skip
        georeferenced=True,
        stac_item_json=json.dumps(scene.stac_item, separators=(",", ":")),
    )
    if scene.acquired_at is not None:
        event.acquired_at.FromDatetime(scene.acquired_at)
    return events.stamp(
        event,
        producer=PRODUCER_NAME,
        event_id=events.deterministic_id("scenes.ingested", scene.id),
        trace_id=trace_id or scene.id,
    )


class SceneIngestor:
    """Ingests received files into the catalogue, the object store and the bus (one instance per process)."""

    def __init__(
        self,
        catalog: Catalog,
        objects: Objects,
        publisher: Publisher,
        *,
        bucket: str,
        topic: str = topics.SCENES_INGESTED,
        workdir: str | Path | None = None,
        publish_timeout_s: float = 30.0,
        cog_threads: str = "ALL_CPUS",
        cog_cache_mb: int = 256,
    ) -> None:
        self.catalog = catalog
        self.objects = objects
        self.publisher = publisher
        self.bucket = bucket
        self.topic = topic
        self.workdir = Path(workdir) if workdir is not None else None
        self.publish_timeout_s = publish_timeout_s
        self.cog_threads = cog_threads
        self.cog_cache_mb = cog_cache_mb

    def register(
        self, received: Received, metadata: SceneMetadata, *, channel: str, name: str | None
    ) -> IngestRecord:
        """Record the scene as received (idempotent); see ``SceneCatalog.register``."""
        return self.catalog.register(
            received.scene_id, sha256=received.sha256, size_bytes=received.size, channel=channel, name=name,
            source=metadata.source, request=metadata.to_json(),
        )  # fmt: skip

    def refuse(self, received: Received, metadata: SceneMetadata, reason: str, *, channel: str, name: str | None) -> None:
        """Record a refusal found before the scene was accepted (so its status says why)."""
        record = self.register(received, metadata, channel=channel, name=name)
        if record.status != "ingested":
            self.catalog.reject(received.scene_id, reason)

    def ingest(
        self,
        received: Received,
        metadata: SceneMetadata,
        *,
        channel: str,
        name: str | None = None,
        inspected: InspectedScene | None = None,
        trace_id: str = "",
    ) -> IngestResult:
        """Ingest one received file; the caller keeps (and finally removes) the file."""
        scene_id = received.scene_id
        with self.catalog.exclusive(scene_id):
            record = self.register(received, metadata, channel=channel, name=name)
            if record.status == "ingested":
                log.info("scene %s was ingested before: nothing to do", scene_id, extra={"scene_id": scene_id})
                return IngestResult(scene_id, "ingested", duplicate=True)
            self.catalog.start_attempt(scene_id)
            started = time.perf_counter()
            try:
                scene = inspected if inspected is not None else inspect_scene(received.path, metadata)
                cataloged, cog = self._store_cog(scene_id, scene, default_source=channel)
            except SceneRejected as exc:
                self.catalog.reject(scene_id, exc.reason)
                log.info("scene %s rejected: %s", scene_id, exc.reason, extra={"scene_id": scene_id})
                return IngestResult(scene_id, "rejected", exc.reason)
            self.catalog.store_scene(cataloged)
            event = scene_ingested_event(cataloged, cog, trace_id)
            self.publisher.publish_and_wait(self.topic, scene_id, event, timeout_s=self.publish_timeout_s)
            self.catalog.mark_ingested(scene_id)
        log.info(
            "scene %s ingested: %s %d x %d px, %d band(s), COG %s/%s (%d bytes) in %.1f s",
            scene_id, cataloged.modality, cataloged.width, cataloged.height, len(cataloged.bands), cog.bucket,
            cog.key, cog.size, time.perf_counter() - started,
            extra={"scene_id": scene_id, "channel": channel, "cog_bytes": cog.size},
        )  # fmt: skip
        return IngestResult(scene_id, "ingested")

    def _footprint(self, scene: InspectedScene) -> BaseGeometry:
        try:
            return scene_outline(Affine(*scene.transform), scene.crs, scene.width, scene.height)
        except GeoreferenceError as exc:
            raise SceneRejected(f"no usable georeference: {exc}") from exc

    def _store_cog(
        self, scene_id: str, scene: InspectedScene, *, default_source: str
    ) -> tuple[CatalogedScene, ObjectInfo]:
        footprint = self._footprint(scene)
        key = cog_key(scene_id)
        source = scene.metadata.source or default_source
        with tempfile.TemporaryDirectory(prefix="egx-cog-", dir=self.workdir) as folder:
            cog_path = Path(folder) / f"{scene_id}.tif"
            try:
                src = rasterio.open(scene.path)
            except RasterioError as exc:
                raise SceneRejected(f"not a readable GeoTIFF: {exc}", kind="not_geotiff") from exc
            with src, open_rectified(src, scene.georeference) as grid:
                write_cog(grid, cog_path, threads=self.cog_threads, cache_mb=self.cog_cache_mb)
            stac = scene_stac_item(
                str(cog_path), scene, scene_id=scene_id, footprint=footprint,
                asset_href=f"s3://{self.bucket}/{key}", source=source,
            )  # fmt: skip
            cog = self.objects.put_file(self.bucket, key, cog_path, content_type=COG_MEDIA_TYPE)
        cataloged = CatalogedScene(
            id=scene_id, source=source, sensor=scene.metadata.sensor, modality=scene.modality, bands=scene.bands,
            dtype=scene.dtype, width=scene.width, height=scene.height, crs=scene.crs, transform=scene.transform,
            footprint=footprint, acquired_at=scene.metadata.acquired_at, object_bucket=cog.bucket,
            object_key=cog.key, sha256=cog.sha256 or "", stac_item=stac,
            band_metadata=[b.to_json() for b in scene.band_info], product_level=scene.metadata.product_level,
            georeference=scene.georeference,
        )  # fmt: skip
        return cataloged, cog
