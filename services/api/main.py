"""``python -m services.api``: the query API and the web map, in one process.

``create_app(settings)`` builds the FastAPI app: tipg's OGC API Features (and OGC Tiles) under ``/ogc`` over the
``ogc`` schema's views, titiler's imagery tiles under ``/imagery``, the project's routes under ``/v1``,
``/healthz``, ``/readyz``, ``/metrics``, and the built web map at ``/``. Its lifespan builds ``ApiResources``
(a SQLAlchemy engine for the API's own reads and writes, tipg's asyncpg pool, the producer of
``queries.requested``, the object store, an HTTP client for the ingest service) and closes them at the end.
``python -m services.api keys create --name NAME`` issues an API key instead (``cli.py``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import sqlalchemy as sa
from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from kafka import KafkaAdminClient
from prometheus_client import make_asgi_app
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from tipg.collections import register_collection_catalog
from tipg.database import close_db_connection, connect_to_db
from tipg.settings import DatabaseSettings as TipgDatabaseSettings
from tipg.settings import PostgresSettings

from earthgptx.bus import EventProducer
from earthgptx.bus.topics import ensure_topics_from_settings
from earthgptx.runtime import run_http_service
from earthgptx.store.db import make_engine
from earthgptx.store.objects import ObjectStore
from earthgptx.store.repository import Repository
from services.api import errors, ogc
from services.api.deps import reader
from services.api.routers import aois, health, imagery, queries, uploads, vector_tiles
from services.api.security import KeyStore, RateLimiter
from services.api.settings import Settings

log = logging.getLogger(__name__)

PRODUCER_NAME = "api"
OGC_SCHEMA = "ogc"
# Bodies of these paths are streamed elsewhere and limited there (ingest refuses too large scenes with 413).
UNLIMITED_BODIES = ("/v1/uploads",)


class ApiResources:
    """What the routes share; built and closed by the app's lifespan."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = make_engine(settings.database)
        self.repository = Repository(self.engine)
        self.keys = KeyStore(self.engine, cache_s=settings.key_cache_s)
        self.limiter = RateLimiter(settings.rate_limit)
        self.objects = ObjectStore(settings.objects, retries=0, connect_timeout_s=2.0, read_timeout_s=10.0)
        self.producer = EventProducer(settings.kafka, client_id="egx-api", producer_name=PRODUCER_NAME)
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0))
        self._admin: KafkaAdminClient | None = None

    def start(self) -> None:
        imagery.use_object_store_credentials(self.settings.objects)
        ensure_topics_from_settings(self.settings.kafka, [self.settings.queries_topic])

    def problems(self) -> list[str]:
        """Why the API cannot serve right now (empty: ready): PostGIS, Kafka and MinIO are each asked."""
        found = []
        try:
            with self.engine.connect() as connection:
                connection.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError as exc:
            found.append(f"postgis: {type(exc).__name__}")
        try:
            if self._admin is None:
                self._admin = KafkaAdminClient(
                    bootstrap_servers=self.settings.kafka.bootstrap, client_id="egx-api-ready",
                    request_timeout_ms=3000,
                )  # fmt: skip
            self._admin.describe_cluster()
        except Exception as exc:  # any failure of the broker's client means "not reachable"
            found.append(f"kafka: {type(exc).__name__}")
            self._close_admin()
        try:
            self.objects.client.bucket_exists(self.settings.objects.scenes_bucket)
        except Exception as exc:  # the SDK raises several unrelated types for an unreachable server
            found.append(f"minio: {type(exc).__name__}")
        return found

    def _close_admin(self) -> None:
        if self._admin is not None:
            try:
                self._admin.close()
            finally:
                self._admin = None

    async def close(self) -> None:
        await self.http.aclose()
        self._close_admin()
        self.producer.close()
        self.repository.close()
        self.engine.dispose()


class BodyLimit:
    """Refuses request bodies larger than ``limit`` bytes with 413, by the declared length or while streaming."""

    def __init__(self, app: ASGIApp, limit: int, exempt: Sequence[str] = ()) -> None:
        self.app, self.limit, self.exempt = app, limit, tuple(exempt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.exempt):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise errors.TooLarge(f"the request body is larger than {self.limit} bytes")
            return message

        await self.app(scope, limited, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        reason = f"the request body is larger than {self.limit} bytes"
        await JSONResponse(errors.body("too_large", reason), status_code=413)(scope, receive, send)


def _landing() -> dict[str, Any]:
    return {
        "title": "EarthGPT-X query API",
        "links": {"ogc": "/ogc", "openapi": "/openapi.json", "docs": "/docs", "queries": "/v1/queries"},
    }


def _tuples_as_one_schema(app: FastAPI) -> None:
    """Tuples (titiler's ``band_descriptions``...) are ``prefixItems`` in OpenAPI 3.1, which schemathesis turns
    into a list under ``items`` and then refuses as an invalid schema: a tuple's items become one schema (the one
    all its members share, or ``anyOf`` them; its length stays fixed by ``minItems``/``maxItems``). The schema is
    mended once, when it is first asked for."""
    build = app.openapi

    def mend(node: Any) -> None:
        if isinstance(node, dict):
            members = node.pop("prefixItems", None) or node.get("items")
            if isinstance(members, list):
                unique = [m for i, m in enumerate(members) if m not in members[:i]]
                node["items"] = unique[0] if len(unique) == 1 else {"anyOf": unique}
            for value in node.values():
                mend(value)
        elif isinstance(node, list):
            for value in node:
                mend(value)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            mend(build())
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: Settings) -> FastAPI:
    """The query API; its resources are built when the app starts and closed when it stops."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        resources = ApiResources(settings)
        try:
            resources.start()
            app.state.resources = resources
            await connect_to_db(
                app, schemas=[OGC_SCHEMA], settings=PostgresSettings(database_url=settings.asyncpg_url),  # type: ignore[arg-type]
            )
            try:
                await register_collection_catalog(
                    app, db_settings=TipgDatabaseSettings(schemas=[OGC_SCHEMA], datetime_extent=False)
                )
                yield
            finally:
                await close_db_connection(app)
        finally:
            await resources.close()

    app = FastAPI(
        title="EarthGPT-X query API",
        description="OGC API Features, imagery tiles, ad-hoc and standing queries over the platform's results.",
        lifespan=lifespan,
        responses=errors.ERROR_RESPONSES,
    )
    errors.install(app)
    _tuples_as_one_schema(app)
    app.include_router(health.router)
    app.include_router(queries.router)
    app.include_router(aois.router)
    app.include_router(uploads.router)
    app.include_router(imagery.router)
    app.include_router(vector_tiles.router)
    app.include_router(imagery.tiler().router, prefix="/imagery", tags=["imagery"], dependencies=[Depends(reader)])
    ogc.mount(app, "/ogc", dependencies=[Depends(reader)])
    app.mount("/metrics", make_asgi_app())
    if (settings.web_dir / "index.html").is_file():
        app.mount("/", StaticFiles(directory=settings.web_dir, html=True), name="web")
    else:
        log.warning("no built web map in %s (make web); / answers with the API's links", settings.web_dir.name)
        app.add_api_route("/", _landing, methods=["GET"], include_in_schema=False)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, exempt=UNLIMITED_BODIES)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type"],
        )  # fmt: skip
    return app


def main(argv: Sequence[str] | None = None) -> int:
    args = list(argv or [])
    if args and args[0] == "keys":
        from services.api.cli import keys_main

        return keys_main(args[1:])
    return run_http_service("api", args, Settings, create_app)
