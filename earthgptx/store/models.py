"""The PostGIS schema as SQLAlchemy 2 declarative models (docs/architecture.md, "Storage").

The Alembic migrations in ``earthgptx/store/migrations`` create exactly this schema (a test compares them);
a change here needs a new revision there. Geometries are stored in EPSG:4326 (lon/lat, x first); the source
CRS of each scene is kept on the scene. Pixel geometries use SRID 0 (scene pixels: x right, y down).

Spatial indexes are declared explicitly (GiST) instead of GeoAlchemy2's implicit ones, so that the models, the
migrations and the database all name the same indexes. The dashboard views (``v_scenes_map``,
``v_results_map``) exist only in the migrations: nothing writes to them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from geoalchemy2 import Geometry, WKBElement
from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SRID_WGS84 = 4326
SRID_PIXELS = 0

# Values the services use; kept as constants rather than CHECK constraints so a new state needs no migration.
SCENE_STATUSES = ("ingested", "tiled", "processing", "done", "failed", "ungeoreferenced")
TASK_STATUSES = ("pending", "running", "done", "failed")
INGEST_STATUSES = ("accepted", "ingested", "rejected")

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: DateTime(timezone=True),
        dict[str, Any]: JSONB,
        list[dict[str, Any]]: JSONB,
        list[str]: ARRAY(Text),
        list[float]: ARRAY(Float(precision=53)),
        str: Text,
    }


class Scene(Base):
    """One raster as ingested: where it is (object store), what it is, and where on Earth it lies."""

    __tablename__ = "scenes"

    id: Mapped[str] = mapped_column(primary_key=True)
    source: Mapped[str]  # ground station / provider that delivered it
    sensor: Mapped[str | None]
    modality: Mapped[str]  # optical | multispectral | sar | infrared
    bands: Mapped[list[str]]  # band names in file order; len(bands) is the band count
    dtype: Mapped[str]
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    crs: Mapped[str | None]  # source CRS (authority code or WKT); None for ungeoreferenced scenes
    transform: Mapped[list[float] | None]  # affine a, b, c, d, e, f (rasterio order) in the source CRS
    # A Polygon, or a MultiPolygon when the footprint crosses the antimeridian (split there, never refused).
    footprint: Mapped[WKBElement | None] = mapped_column(
        Geometry("GEOMETRY", srid=SRID_WGS84, spatial_index=False)
    )
    acquired_at: Mapped[datetime | None]
    object_bucket: Mapped[str]
    object_key: Mapped[str]
    sha256: Mapped[str | None]
    stac_item: Mapped[dict[str, Any] | None]
    # Per band: name, unit, scale, offset, nodata and tags as the file states them (earthgptx.scenes).
    band_metadata: Mapped[list[dict[str, Any]]] = mapped_column(server_default=text("'[]'::jsonb"))
    product_level: Mapped[str | None]
    georeference: Mapped[str | None]  # "transform" or "gcps" (rectified at ingest), None when ungeoreferenced
    status: Mapped[str] = mapped_column(server_default=text("'ingested'"))
    ingested_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (
        CheckConstraint("width > 0 AND height > 0", name="positive_size"),
        CheckConstraint("transform IS NULL OR cardinality(transform) = 6", name="affine_transform"),
        CheckConstraint(
            "footprint IS NULL OR GeometryType(footprint) IN ('POLYGON', 'MULTIPOLYGON')", name="footprint_polygonal"
        ),
        Index("ix_scenes_footprint", "footprint", postgresql_using="gist"),
        Index("ix_scenes_acquired_at", "acquired_at"),
    )


class SceneIngest(Base):
    """Every scene sent to ingest, keyed by the scene id (from the content hash): where it stands and why.

    Rejected scenes live only here (never in ``scenes``); ``ingested_at`` is set once ``scenes.ingested`` was
    acknowledged by the broker.
    """

    __tablename__ = "scene_ingests"

    id: Mapped[str] = mapped_column(primary_key=True)
    sha256: Mapped[str]  # of the file as received
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(server_default=text("'accepted'"))  # INGEST_STATUSES
    reason: Mapped[str | None]
    source: Mapped[str | None]
    channel: Mapped[str]  # "upload" (HTTP) or "drop" (bucket)
    name: Mapped[str | None]  # file name or dropped object key
    request: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))  # metadata as sent
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    received_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())
    ingested_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_scene_ingests_status", "status"),
        Index("ix_scene_ingests_received_at", "received_at", postgresql_using="brin"),
    )


class Task(Base):
    """One model call: a scene tile (window in scene pixels), a level of the cascade, an instruction, prompts."""

    __tablename__ = "tasks"

    id: Mapped[str] = mapped_column(primary_key=True)  # deterministic, from the caller
    scene_id: Mapped[str] = mapped_column(ForeignKey("scenes.id", ondelete="CASCADE"))
    tile_col_off: Mapped[int] = mapped_column(Integer)
    tile_row_off: Mapped[int] = mapped_column(Integer)
    tile_width: Mapped[int] = mapped_column(Integer)
    tile_height: Mapped[int] = mapped_column(Integer)
    chip_bucket: Mapped[str | None]
    chip_key: Mapped[str | None]
    level: Mapped[int] = mapped_column(SmallInteger)
    task: Mapped[str]
    instruction: Mapped[str]
    prompts: Mapped[list[dict[str, Any]]] = mapped_column(server_default=text("'[]'::jsonb"))
    model_version: Mapped[str]
    parent_task_id: Mapped[str | None] = mapped_column(ForeignKey("tasks.id", ondelete="SET NULL"))
    aoi_id: Mapped[str | None] = mapped_column(ForeignKey("aois.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(server_default=text("'pending'"))
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    timings: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    error: Mapped[str | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (
        CheckConstraint("level BETWEEN 1 AND 4", name="level_range"),
        CheckConstraint("tile_width > 0 AND tile_height > 0", name="positive_tile"),
        Index("ix_tasks_scene_id", "scene_id"),
        Index("ix_tasks_status", "status"),
        Index("ix_tasks_created_at", "created_at", postgresql_using="brin"),
    )


class Result(Base):
    """One answer (or one grounded object of an answer) of a task, georeferenced in EPSG:4326."""

    __tablename__ = "results"

    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True)
    ordinal: Mapped[int] = mapped_column(Integer, primary_key=True)  # position among the task's results
    scene_id: Mapped[str] = mapped_column(ForeignKey("scenes.id", ondelete="CASCADE"))  # denormalised
    answer_text: Mapped[str]
    label: Mapped[str | None]
    attributes: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    geom: Mapped[WKBElement | None] = mapped_column(
        Geometry("GEOMETRY", srid=SRID_WGS84, spatial_index=False)
    )
    pixel_geom: Mapped[WKBElement | None] = mapped_column(
        # No SRID constraint (PostGIS stores pixel shapes with SRID 0, the "unknown" SRID).
        Geometry("GEOMETRY", spatial_index=False)
    )
    score: Mapped[float | None] = mapped_column(Float(precision=53))
    model_version: Mapped[str]
    # False: the model's text did not parse (one row: the text, no boxes; geom is what was asked about).
    answer_parsed: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    parse_failure: Mapped[str | None]
    nodata_fraction: Mapped[float | None] = mapped_column(Float(precision=53))  # of the chip asked about
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (
        CheckConstraint("answer_parsed OR parse_failure IS NOT NULL", name="unparsed_has_reason"),
        CheckConstraint("nodata_fraction >= 0 AND nodata_fraction < 1", name="nodata_fraction_range"),
        Index("ix_results_geom", "geom", postgresql_using="gist"),
        Index("ix_results_scene_id", "scene_id"),
        Index("ix_results_label", "label"),
        # Results arrive in time order, so a BRIN index is tiny and good enough for "this week" filters.
        Index("ix_results_created_at", "created_at", postgresql_using="brin"),
    )


class Aoi(Base):
    """A standing query: an area of interest and the instruction to run on every new scene covering it."""

    __tablename__ = "aois"

    id: Mapped[str] = mapped_column(primary_key=True)
    name: Mapped[str | None]
    geom: Mapped[WKBElement] = mapped_column(
        Geometry("MULTIPOLYGON", srid=SRID_WGS84, spatial_index=False), nullable=False
    )
    instruction: Mapped[str]
    owner: Mapped[str]
    active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (Index("ix_aois_geom", "geom", postgresql_using="gist"),)


class Query(Base):
    """An ad-hoc question about a place (issue 23): the instruction, the prompt, and the tasks asked for it.

    ``status``: ``pending`` until every task is done, then ``answered``; ``no_coverage`` when no scene covers the
    prompt. Answers: the results of ``task_ids`` (view ``v_query_answers``).
    """

    __tablename__ = "queries"

    id: Mapped[str] = mapped_column(primary_key=True)
    instruction: Mapped[str]
    owner: Mapped[str] = mapped_column(server_default=text("''"))
    geom: Mapped[WKBElement | None] = mapped_column(Geometry("GEOMETRY", srid=SRID_WGS84, spatial_index=False))
    scene_id: Mapped[str | None]
    scene_prompt: Mapped[dict[str, Any] | None]
    coverage: Mapped[str] = mapped_column(server_default=text("'newest'"))
    status: Mapped[str] = mapped_column(server_default=text("'pending'"))
    reason: Mapped[str | None]
    task_ids: Mapped[list[str]] = mapped_column(server_default=text("'{}'::text[]"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())
    answered_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_queries_geom", "geom", postgresql_using="gist"),
        Index("ix_queries_task_ids", "task_ids", postgresql_using="gin"),
        Index("ix_queries_status", "status"),
    )


class ApiKey(Base):
    """An API key, stored as the argon2id hash of its secret part (``services.api.security.KeyStore`` issues,
    verifies and revokes them); the full token is shown once, at creation."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(primary_key=True)  # public prefix, part of the token
    key_hash: Mapped[str]
    owner: Mapped[str]
    scopes: Mapped[list[str]] = mapped_column(server_default=text("'{}'::text[]"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_api_keys_owner", "owner"),)
