"""``python -m services.ingest``: the ingest HTTP API and the drop bucket's consumer, in one process.

``create_app(settings)`` builds the FastAPI app; its lifespan builds ``IngestResources`` (the PostGIS catalogue,
the object store, the producer of ``scenes.ingested``, the upload workers) and, unless disabled, starts the drop
consumer: the bus's ``ConsumerLoop`` on MinIO's notification topic, in a thread of this process, so that one
deployment unit takes scenes both ways and shares one COG worker budget. The process around it (settings,
logging, metrics, uvicorn, signals) is the service kit's (``earthgptx.runtime``).

Refusals map onto HTTP here, once: ``SceneRejected`` → 413 (too large), 415 (not a GeoTIFF) or 422 (invalid),
with ``{"error", "reason"}``; an outage of a store (``StoreUnavailable``) → 503.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from earthgptx.bus import EventProducer, route
from earthgptx.bus.topics import ensure_topics_from_settings
from earthgptx.runtime import ConsumerService, run_http_service
from earthgptx.scenes import SceneIngestor, SceneRejected
from earthgptx.scenes.drops import configure_drop_bucket, decode_notification
from earthgptx.store.db import make_engine
from earthgptx.store.errors import StoreUnavailable
from earthgptx.store.objects import ObjectStore
from earthgptx.store.scenes import SceneCatalog
from earthgptx.v1.events_pb2 import ObjectCreated
from services.ingest.handlers import DropHandler, UploadHandler
from services.ingest.routers import health, scenes
from services.ingest.settings import Settings

log = logging.getLogger(__name__)

PRODUCER_NAME = "ingest"
REJECTION_STATUS = {"too_large": 413, "not_geotiff": 415, "invalid": 422}


class IngestResources:
    """What the routes and the drop consumer share; ``start`` once, ``close`` once."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.catalog = SceneCatalog(make_engine(settings.database, pool_size=max(2, settings.workers + 2)))
        self.objects = ObjectStore(settings.objects)
        self.producer = EventProducer(settings.kafka, client_id="egx-ingest", producer_name=PRODUCER_NAME)
        self.ingestor = SceneIngestor(
            self.catalog,
            self.objects,
            self.producer,
            bucket=settings.objects.scenes_bucket,
            topic=settings.output_topic,
            workdir=settings.workdir,
            publish_timeout_s=settings.publish_timeout_s,
            cog_threads=settings.cog_threads,
            cog_cache_mb=settings.cog_cache_mb,
        )
        self.uploads = UploadHandler(self.ingestor, workers=settings.workers)
        self.drops: ConsumerService | None = None
        self._drop_thread: threading.Thread | None = None

    def start(self) -> None:
        self.objects.ensure_buckets()
        ensure_topics_from_settings(self.settings.kafka, [self.settings.output_topic])
        if not self.settings.drop_enabled:
            return
        configure_drop_bucket(self.objects, self.settings.drop_bucket)
        handler = DropHandler(
            self.ingestor,
            self.objects,
            bucket=self.settings.drop_bucket,
            workdir=self.settings.workdir,
            max_bytes=self.settings.max_upload_bytes,
            chunk_bytes=self.settings.chunk_bytes,
        )
        self.drops = ConsumerService(
            self.settings.group_id,
            [route(self.settings.drop_topic, ObjectCreated, handler.on_object_created, decode=decode_notification)],
            self.settings.kafka,
        )
        self._drop_thread = threading.Thread(target=self._consume_drops, name="egx-ingest-drops", daemon=True)
        self._drop_thread.start()

    def _consume_drops(self) -> None:
        assert self.drops is not None
        try:
            self.drops.run()
        except Exception:
            log.exception("the drop consumer stopped")

    def problems(self) -> list[str]:
        """Why the service cannot ingest right now (empty: ready)."""
        found = []
        if self.drops is not None and not self.drops.loop.ready:
            found.append(f"drop consumer: {self.drops.loop.not_ready_reason or 'not ready'}")
        if self._drop_thread is not None and not self._drop_thread.is_alive():
            found.append("drop consumer: stopped")
        return found

    def close(self) -> None:
        if self.drops is not None:
            self.drops.stop()
        if self._drop_thread is not None:
            self._drop_thread.join(timeout=60)
        self.uploads.close()
        self.producer.close()
        self.catalog.close()


def _rejected(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SceneRejected)
    return JSONResponse({"error": exc.kind, "reason": exc.reason}, status_code=REJECTION_STATUS[exc.kind])


def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.error("%s %s: %s", request.method, request.url.path, exc)
    return JSONResponse({"error": "unavailable", "reason": "a store is unavailable; retry later"}, status_code=503)


def create_app(settings: Settings) -> FastAPI:
    """The ingest API; its resources are built when the app starts and closed when it stops."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        resources = IngestResources(settings)
        try:
            resources.start()
            app.state.resources = resources
            yield
        finally:
            resources.close()

    app = FastAPI(title="EarthGPT-X ingest", lifespan=lifespan)
    app.add_exception_handler(SceneRejected, _rejected)
    app.add_exception_handler(StoreUnavailable, _unavailable)
    app.include_router(scenes.router)
    app.include_router(health.router)
    return app


def main(argv: Sequence[str] | None = None) -> int:
    return run_http_service("ingest", argv, Settings, create_app)
