"""Initial schema: scenes, tasks, results, aois, api_keys, their indexes, and the dashboard views.

Revision ID: 0001
Revises:
Create Date: 2025-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geometry
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

_NOW = sa.text("now()")
_DOUBLE = sa.Float(precision=53)


def _timestamps() -> list[sa.Column]:
    return [
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
    ]


# Dashboards that cannot read PostGIS geometry (Grafana geomap, Superset deck.gl) get a point (centroid lon/lat)
# and the shape as GeoJSON text; QGIS and friends can still use the geometry column.
_V_SCENES_MAP = """
CREATE VIEW v_scenes_map AS
SELECT s.id AS scene_id, s.source, s.sensor, s.modality, s.status, s.width, s.height,
       s.acquired_at, s.ingested_at,
       ST_X(ST_Centroid(s.footprint)) AS lon,
       ST_Y(ST_Centroid(s.footprint)) AS lat,
       ST_AsGeoJSON(s.footprint, 7) AS geojson,
       s.footprint AS geom
FROM scenes AS s
WHERE s.footprint IS NOT NULL
"""

_V_RESULTS_MAP = """
CREATE VIEW v_results_map AS
SELECT r.task_id, r.ordinal, r.scene_id, t.level, t.task, r.label, r.score, r.answer_text, r.attributes,
       r.model_version, s.acquired_at, r.created_at,
       ST_X(ST_Centroid(r.geom)) AS lon,
       ST_Y(ST_Centroid(r.geom)) AS lat,
       ST_AsGeoJSON(r.geom, 7) AS geojson,
       r.geom
FROM results AS r
JOIN tasks AS t ON t.id = r.task_id
JOIN scenes AS s ON s.id = r.scene_id
WHERE r.geom IS NOT NULL
"""


def upgrade() -> None:
    # PostGIS is usually there already (installed by the superuser, or inherited from template1); creating an
    # extension needs privileges the application role does not have, so only try when it is missing.
    op.execute(
        "DO $$ BEGIN "
        "IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'postgis') THEN CREATE EXTENSION postgis; "
        "END IF; END $$"
    )

    op.create_table(
        "scenes",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("sensor", sa.Text(), nullable=True),
        sa.Column("modality", sa.Text(), nullable=False),
        sa.Column("bands", sa.ARRAY(sa.Text()), nullable=False),
        sa.Column("dtype", sa.Text(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("crs", sa.Text(), nullable=True),
        sa.Column("transform", sa.ARRAY(_DOUBLE), nullable=True),
        sa.Column("footprint", Geometry("POLYGON", srid=4326, spatial_index=False), nullable=True),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("object_bucket", sa.Text(), nullable=False),
        sa.Column("object_key", sa.Text(), nullable=False),
        sa.Column("sha256", sa.Text(), nullable=True),
        sa.Column("stac_item", JSONB(), nullable=True),
        sa.Column("status", sa.Text(), server_default=sa.text("'ingested'"), nullable=False),
        sa.Column("ingested_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_scenes"),
        sa.CheckConstraint("width > 0 AND height > 0", name="ck_scenes_positive_size"),
        sa.CheckConstraint(
            "transform IS NULL OR cardinality(transform) = 6", name="ck_scenes_affine_transform"
        ),
    )
    op.create_index("ix_scenes_footprint", "scenes", ["footprint"], postgresql_using="gist")
    op.create_index("ix_scenes_acquired_at", "scenes", ["acquired_at"])

    op.create_table(
        "aois",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("geom", Geometry("MULTIPOLYGON", srid=4326, spatial_index=False), nullable=False),
        sa.Column("instruction", sa.Text(), nullable=False),
        sa.Column("owner", sa.Text(), nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_aois"),
    )
    op.create_index("ix_aois_geom", "aois", ["geom"], postgresql_using="gist")

    op.create_table(
        "tasks",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("scene_id", sa.Text(), nullable=False),
        sa.Column("tile_col_off", sa.Integer(), nullable=False),
        sa.Column("tile_row_off", sa.Integer(), nullable=False),
        sa.Column("tile_width", sa.Integer(), nullable=False),
        sa.Column("tile_height", sa.Integer(), nullable=False),
        sa.Column("chip_bucket", sa.Text(), nullable=True),
        sa.Column("chip_key", sa.Text(), nullable=True),
        sa.Column("level", sa.SmallInteger(), nullable=False),
        sa.Column("task", sa.Text(), nullable=False),
        sa.Column("instruction", sa.Text(), nullable=False),
        sa.Column("prompts", JSONB(), server_default=sa.text("'[]'::jsonb"), nullable=False),
        sa.Column("model_version", sa.Text(), nullable=False),
        sa.Column("parent_task_id", sa.Text(), nullable=True),
        sa.Column("aoi_id", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), server_default=sa.text("'pending'"), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("timings", JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_tasks"),
        sa.ForeignKeyConstraint(
            ["scene_id"], ["scenes.id"], name="fk_tasks_scene_id_scenes", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["parent_task_id"], ["tasks.id"], name="fk_tasks_parent_task_id_tasks", ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(["aoi_id"], ["aois.id"], name="fk_tasks_aoi_id_aois", ondelete="SET NULL"),
        sa.CheckConstraint("level BETWEEN 1 AND 4", name="ck_tasks_level_range"),
        sa.CheckConstraint("tile_width > 0 AND tile_height > 0", name="ck_tasks_positive_tile"),
    )
    op.create_index("ix_tasks_scene_id", "tasks", ["scene_id"])
    op.create_index("ix_tasks_status", "tasks", ["status"])
    op.create_index("ix_tasks_created_at", "tasks", ["created_at"], postgresql_using="brin")

    op.create_table(
        "results",
        sa.Column("task_id", sa.Text(), nullable=False),
        sa.Column("ordinal", sa.Integer(), nullable=False),
        sa.Column("scene_id", sa.Text(), nullable=False),
        sa.Column("answer_text", sa.Text(), nullable=False),
        sa.Column("label", sa.Text(), nullable=True),
        sa.Column("attributes", JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("geom", Geometry("GEOMETRY", srid=4326, spatial_index=False), nullable=True),
        sa.Column("pixel_geom", Geometry("GEOMETRY", spatial_index=False), nullable=True),
        sa.Column("score", _DOUBLE, nullable=True),
        sa.Column("model_version", sa.Text(), nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("task_id", "ordinal", name="pk_results"),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name="fk_results_task_id_tasks", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["scene_id"], ["scenes.id"], name="fk_results_scene_id_scenes", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_results_geom", "results", ["geom"], postgresql_using="gist")
    op.create_index("ix_results_scene_id", "results", ["scene_id"])
    op.create_index("ix_results_label", "results", ["label"])
    op.create_index("ix_results_created_at", "results", ["created_at"], postgresql_using="brin")

    op.create_table(
        "api_keys",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("key_hash", sa.Text(), nullable=False),
        sa.Column("owner", sa.Text(), nullable=False),
        sa.Column("scopes", sa.ARRAY(sa.Text()), server_default=sa.text("'{}'::text[]"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
    )
    op.create_index("ix_api_keys_owner", "api_keys", ["owner"])

    op.execute(_V_SCENES_MAP)
    op.execute(_V_RESULTS_MAP)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS v_results_map")
    op.execute("DROP VIEW IF EXISTS v_scenes_map")
    # Dropping a table drops its indexes and constraints; children first for the foreign keys.
    op.drop_table("api_keys")
    op.drop_table("results")
    op.drop_table("tasks")
    op.drop_table("aois")
    op.drop_table("scenes")
    # The postgis extension stays: it may predate this schema and other schemas may use it.
