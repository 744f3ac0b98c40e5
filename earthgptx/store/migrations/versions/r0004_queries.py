"""Ad-hoc queries and merged objects: the ``queries`` table, and the views ``v_query_answers`` (a query's answers),
``v_aoi_answers`` (the answers of standing queries) and ``v_objects`` (grounded objects after cross-tile
non-maximum suppression).

``v_objects`` keeps an L2 object unless another object of the same scene and class (label, else the question
asked) overlaps it with IoU > 0.5 in scene pixels and ranks higher (score, then task id and ordinal). The rule
depends only on the stored rows, so the result is the same whatever order the tiles' answers arrived in, and a
re-delivered answer (the same rows) changes nothing.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geometry
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

_NOW = sa.text("now()")

_V_QUERY_ANSWERS = """
CREATE VIEW v_query_answers AS
SELECT q.id AS query_id, q.status, q.instruction, q.owner, q.created_at, q.answered_at,
       t.id AS task_id, t.scene_id, t.level, t.task, t.status AS task_status,
       r.ordinal, r.answer_text, r.label, r.score, r.attributes,
       ST_X(ST_Centroid(r.geom)) AS lon,
       ST_Y(ST_Centroid(r.geom)) AS lat,
       ST_AsGeoJSON(r.geom, 7) AS geojson,
       r.geom
FROM queries AS q
LEFT JOIN LATERAL unnest(q.task_ids) AS qt(task_id) ON true
LEFT JOIN tasks AS t ON t.id = qt.task_id
LEFT JOIN results AS r ON r.task_id = t.id
"""

_V_AOI_ANSWERS = """
CREATE VIEW v_aoi_answers AS
SELECT a.id AS aoi_id, a.name AS aoi_name, a.instruction, t.id AS task_id, t.scene_id, t.status AS task_status,
       r.ordinal, r.answer_text, r.label, r.score, s.acquired_at, r.created_at,
       ST_X(ST_Centroid(r.geom)) AS lon,
       ST_Y(ST_Centroid(r.geom)) AS lat,
       ST_AsGeoJSON(r.geom, 7) AS geojson,
       r.geom
FROM aois AS a
JOIN tasks AS t ON t.aoi_id = a.id
JOIN scenes AS s ON s.id = t.scene_id
LEFT JOIN results AS r ON r.task_id = t.id
"""

_V_OBJECTS = """
CREATE VIEW v_objects AS
WITH grounded AS (
    SELECT r.task_id, r.ordinal, r.scene_id, t.task, COALESCE(r.label, t.instruction) AS class_key, r.label,
           COALESCE(r.score, 0) AS rank_score, r.score, r.attributes, r.geom, r.pixel_geom, r.created_at
    FROM results AS r
    JOIN tasks AS t ON t.id = r.task_id
    WHERE t.level = 2 AND t.task IN ('grounding', 'pixel_grounding') AND r.pixel_geom IS NOT NULL
)
SELECT g.task_id, g.ordinal, g.scene_id, g.task, g.label, g.score, g.attributes, g.created_at,
       ST_X(ST_Centroid(g.geom)) AS lon,
       ST_Y(ST_Centroid(g.geom)) AS lat,
       ST_AsGeoJSON(g.geom, 7) AS geojson,
       g.geom
FROM grounded AS g
WHERE NOT EXISTS (
    SELECT 1 FROM grounded AS o
    WHERE o.scene_id = g.scene_id AND o.task = g.task AND o.class_key = g.class_key
      AND (o.task_id, o.ordinal) <> (g.task_id, g.ordinal)
      AND o.pixel_geom && g.pixel_geom
      AND (o.rank_score, o.task_id, o.ordinal) > (g.rank_score, g.task_id, g.ordinal)
      AND ST_Area(ST_Intersection(o.pixel_geom, g.pixel_geom))
          > 0.5 * ST_Area(ST_Union(o.pixel_geom, g.pixel_geom))
)
"""


def upgrade() -> None:
    op.create_table(
        "queries",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("instruction", sa.Text(), nullable=False),
        sa.Column("owner", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("geom", Geometry("GEOMETRY", srid=4326, spatial_index=False), nullable=True),
        sa.Column("scene_id", sa.Text(), nullable=True),
        sa.Column("scene_prompt", JSONB(), nullable=True),
        sa.Column("coverage", sa.Text(), server_default=sa.text("'newest'"), nullable=False),
        sa.Column("status", sa.Text(), server_default=sa.text("'pending'"), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("task_ids", sa.ARRAY(sa.Text()), server_default=sa.text("'{}'::text[]"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_queries"),
    )
    op.create_index("ix_queries_geom", "queries", ["geom"], postgresql_using="gist")
    op.create_index("ix_queries_task_ids", "queries", ["task_ids"], postgresql_using="gin")
    op.create_index("ix_queries_status", "queries", ["status"])
    op.execute(_V_QUERY_ANSWERS)
    op.execute(_V_AOI_ANSWERS)
    op.execute(_V_OBJECTS)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS v_objects")
    op.execute("DROP VIEW IF EXISTS v_aoi_answers")
    op.execute("DROP VIEW IF EXISTS v_query_answers")
    op.drop_table("queries")
