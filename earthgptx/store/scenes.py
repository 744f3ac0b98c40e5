"""The scene catalogue of ingest: the ``scene_ingests`` record of every scene sent, and the ``scenes`` row of
every scene ingested (written here, not through ``Repository``, because ingest owns these columns).

A scene moves ``accepted`` → ``ingested`` (its COG stored, its row written, ``scenes.ingested`` acknowledged) or
``accepted`` → ``rejected`` (with the reason; no ``scenes`` row). The id is the scene id (from the content hash),
so the same file sent twice finds its record: an ingested scene is never ingested again, a rejected one may be
sent again (with other metadata) and is then accepted anew.

``exclusive(scene_id)`` holds a PostgreSQL advisory lock on the scene for the whole of one ingest, so two
deliveries of the same scene (an upload and a drop, or a re-delivered notification) never work on it at once,
across processes.

Errors: ``StoreUnavailable`` when the database cannot be reached (retry later), ``StoreError`` otherwise.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import shapely
import sqlalchemy as sa
from shapely.geometry.base import BaseGeometry
from sqlalchemy import Engine, func
from sqlalchemy.dialects.postgresql import insert as pg_insert

from earthgptx.store.errors import StoreError, StoreUnavailable
from earthgptx.store.models import SRID_WGS84, Scene, SceneIngest

__all__ = ["CatalogedScene", "IngestRecord", "SceneCatalog"]

_scenes = cast(sa.Table, Scene.__table__)
_ingests = cast(sa.Table, SceneIngest.__table__)


@dataclass(frozen=True)
class IngestRecord:
    """Where one scene stands."""

    scene_id: str
    status: str  # accepted | ingested | rejected
    reason: str | None
    sha256: str
    size_bytes: int
    channel: str
    name: str | None
    source: str | None
    attempts: int
    received_at: dt.datetime
    updated_at: dt.datetime
    ingested_at: dt.datetime | None


@dataclass(frozen=True)
class CatalogedScene:
    """The ``scenes`` row of an ingested scene."""

    id: str
    source: str
    sensor: str | None
    modality: str
    bands: tuple[str, ...]
    dtype: str
    width: int
    height: int
    crs: str
    transform: tuple[float, float, float, float, float, float]
    footprint: BaseGeometry  # Polygon or MultiPolygon, EPSG:4326
    acquired_at: dt.datetime | None
    object_bucket: str
    object_key: str
    sha256: str  # of the COG
    stac_item: dict[str, Any]
    band_metadata: list[dict[str, Any]]
    product_level: str | None
    georeference: str


@contextmanager
def _translated(what: str) -> Iterator[None]:
    try:
        yield
    except (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError) as exc:
        raise StoreUnavailable(f"{what}: database unavailable ({type(exc).__name__})") from exc
    except sa.exc.DBAPIError as exc:
        if exc.connection_invalidated:
            raise StoreUnavailable(f"{what}: connection lost") from exc
        raise StoreError(f"{what}: {exc.orig}") from exc
    except sa.exc.SQLAlchemyError as exc:
        raise StoreError(f"{what}: {exc}") from exc


def _record(row: Any) -> IngestRecord:
    return IngestRecord(
        scene_id=row.id, status=row.status, reason=row.reason, sha256=row.sha256, size_bytes=row.size_bytes,
        channel=row.channel, name=row.name, source=row.source, attempts=row.attempts,
        received_at=row.received_at, updated_at=row.updated_at, ingested_at=row.ingested_at,
    )  # fmt: skip


class SceneCatalog:
    """Ingest's reads and writes of ``scene_ingests`` and ``scenes``. Thread-safe through the engine's pool."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def exclusive(self, scene_id: str) -> Iterator[None]:
        """Hold the scene's advisory lock (waiting for another holder) until the block ends."""
        key = sa.func.hashtextextended(scene_id, 0)
        with _translated(f"lock scene {scene_id}"):
            connection = self.engine.connect()
        try:
            with _translated(f"lock scene {scene_id}"):
                connection.execute(sa.select(sa.func.pg_advisory_lock(key)))
                connection.commit()
            try:
                yield
            finally:
                with _translated(f"unlock scene {scene_id}"):
                    connection.execute(sa.select(sa.func.pg_advisory_unlock(key)))
                    connection.commit()
        finally:
            connection.close()

    def register(
        self,
        scene_id: str,
        *,
        sha256: str,
        size_bytes: int,
        channel: str,
        name: str | None,
        source: str | None,
        request: dict[str, Any],
    ) -> IngestRecord:
        """Record a scene as received: new → ``accepted``; rejected before → ``accepted`` again (with this
        request); accepted or ingested → unchanged. Returns the record as it now stands."""
        values = {
            "id": scene_id, "sha256": sha256, "size_bytes": size_bytes, "channel": channel, "name": name,
            "source": source, "request": request, "status": "accepted",
        }  # fmt: skip
        insert = pg_insert(_ingests).values(**values)
        statement = insert.on_conflict_do_update(
            index_elements=[_ingests.c.id],
            set_={
                "status": "accepted", "reason": None, "channel": insert.excluded.channel,
                "name": insert.excluded.name, "source": insert.excluded.source,
                "request": insert.excluded.request, "updated_at": func.now(),
            },  # fmt: skip
            where=_ingests.c.status == "rejected",
        )
        with _translated(f"register scene {scene_id}"), self.engine.begin() as connection:
            connection.execute(statement)
            row = connection.execute(sa.select(_ingests).where(_ingests.c.id == scene_id)).one()
        return _record(row)

    def start_attempt(self, scene_id: str) -> None:
        statement = (
            sa.update(_ingests)
            .where(_ingests.c.id == scene_id)
            .values(attempts=_ingests.c.attempts + 1, updated_at=func.now())
        )
        with _translated(f"count an attempt of scene {scene_id}"), self.engine.begin() as connection:
            connection.execute(statement)

    def reject(self, scene_id: str, reason: str) -> None:
        """Mark a scene rejected with ``reason`` (never one already ingested)."""
        statement = (
            sa.update(_ingests)
            .where(_ingests.c.id == scene_id, _ingests.c.status != "ingested")
            .values(status="rejected", reason=reason[:2000], updated_at=func.now())
        )
        with _translated(f"reject scene {scene_id}"), self.engine.begin() as connection:
            connection.execute(statement)

    def store_scene(self, scene: CatalogedScene) -> None:
        """Write the ``scenes`` row (once: a retry finds it and leaves it as it is)."""
        row = {
            "id": scene.id, "source": scene.source, "sensor": scene.sensor, "modality": scene.modality,
            "bands": list(scene.bands), "dtype": scene.dtype, "width": scene.width, "height": scene.height,
            "crs": scene.crs, "transform": list(scene.transform),
            "footprint": sa.func.ST_GeomFromEWKB(
                sa.func.decode(shapely.to_wkb(shapely.set_srid(scene.footprint, SRID_WGS84), hex=True,
                                              include_srid=True), "hex")
            ),
            "acquired_at": scene.acquired_at, "object_bucket": scene.object_bucket, "object_key": scene.object_key,
            "sha256": scene.sha256, "stac_item": scene.stac_item, "band_metadata": scene.band_metadata,
            "product_level": scene.product_level, "georeference": scene.georeference,
        }  # fmt: skip
        statement = pg_insert(_scenes).values(**row).on_conflict_do_nothing(index_elements=[_scenes.c.id])
        with _translated(f"store scene {scene.id}"), self.engine.begin() as connection:
            connection.execute(statement)

    def mark_ingested(self, scene_id: str) -> None:
        """The scene's event was acknowledged: it is ingested."""
        statement = (
            sa.update(_ingests)
            .where(_ingests.c.id == scene_id)
            .values(status="ingested", reason=None, ingested_at=func.now(), updated_at=func.now())
        )
        with _translated(f"mark scene {scene_id} ingested"), self.engine.begin() as connection:
            connection.execute(statement)

    def get(self, scene_id: str) -> IngestRecord | None:
        with _translated(f"read scene {scene_id}"), self.engine.connect() as connection:
            row = connection.execute(sa.select(_ingests).where(_ingests.c.id == scene_id)).one_or_none()
        return None if row is None else _record(row)

    def has_scene(self, scene_id: str) -> bool:
        with _translated(f"read scene {scene_id}"), self.engine.connect() as connection:
            return connection.scalar(sa.select(sa.func.count()).where(_scenes.c.id == scene_id)) == 1
