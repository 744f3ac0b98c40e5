"""Ingest: a footprint may be split at the antimeridian, band metadata and product level on scenes, and the
``scene_ingests`` table that remembers every scene sent (accepted, ingested or rejected with its reason).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

_NOW = sa.text("now()")

# A footprint split at the antimeridian is a MultiPolygon whose parts lie at both ends of the longitude range,
# so its plain centroid falls on the other side of the planet: that one is taken in longitudes shifted to
# [0, 360) and brought back. Polygons keep the plain centroid.
_V_SCENES_MAP = """
CREATE VIEW v_scenes_map AS
WITH c AS (
    SELECT s.*,
           CASE WHEN ST_GeometryType(s.footprint) = 'ST_MultiPolygon'
                THEN ST_Centroid(ST_ShiftLongitude(s.footprint))
                ELSE ST_Centroid(s.footprint) END AS centre
    FROM scenes AS s
    WHERE s.footprint IS NOT NULL
)
SELECT c.id AS scene_id, c.source, c.sensor, c.modality, c.status, c.width, c.height,
       c.acquired_at, c.ingested_at,
       CASE WHEN ST_X(c.centre) > 180 THEN ST_X(c.centre) - 360 ELSE ST_X(c.centre) END AS lon,
       ST_Y(c.centre) AS lat,
       ST_AsGeoJSON(c.footprint, 7) AS geojson,
       c.footprint AS geom
FROM c
"""

_V_SCENES_MAP_0001 = """
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


def upgrade() -> None:
    op.execute("DROP VIEW IF EXISTS v_scenes_map")
    op.execute("ALTER TABLE scenes ALTER COLUMN footprint TYPE geometry(Geometry, 4326) USING footprint")
    op.create_check_constraint(
        "ck_scenes_footprint_polygonal",
        "scenes",
        "footprint IS NULL OR GeometryType(footprint) IN ('POLYGON', 'MULTIPOLYGON')",
    )
    op.add_column(
        "scenes", sa.Column("band_metadata", JSONB(), server_default=sa.text("'[]'::jsonb"), nullable=False)
    )
    op.add_column("scenes", sa.Column("product_level", sa.Text(), nullable=True))
    op.add_column("scenes", sa.Column("georeference", sa.Text(), nullable=True))
    op.execute(_V_SCENES_MAP)

    op.create_table(
        "scene_ingests",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("sha256", sa.Text(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.Text(), server_default=sa.text("'accepted'"), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("channel", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("request", JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_scene_ingests"),
    )
    op.create_index("ix_scene_ingests_status", "scene_ingests", ["status"])
    op.create_index("ix_scene_ingests_received_at", "scene_ingests", ["received_at"], postgresql_using="brin")


def downgrade() -> None:
    op.drop_table("scene_ingests")
    op.execute("DROP VIEW IF EXISTS v_scenes_map")
    op.drop_column("scenes", "georeference")
    op.drop_column("scenes", "product_level")
    op.drop_column("scenes", "band_metadata")
    op.drop_constraint("ck_scenes_footprint_polygonal", "scenes", type_="check")
    # Lossy by necessity: revision 0001 has no place for a footprint split at the antimeridian.
    op.execute(
        "ALTER TABLE scenes ALTER COLUMN footprint TYPE geometry(Polygon, 4326) "
        "USING CASE WHEN GeometryType(footprint) = 'POLYGON' THEN footprint END"
    )
    op.execute(_V_SCENES_MAP_0001)
