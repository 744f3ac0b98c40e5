"""The ``ogc`` schema: the views the query API publishes (OGC API Features through tipg, vector tiles through
Martin). Each has a text ``id`` column (what clients address an item by), one geometry in EPSG:4326 and only the
columns meant for the public; nothing else in the database is published.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

_SCENES = """
CREATE VIEW ogc.scenes AS
SELECT s.id, s.source, s.sensor, s.modality, s.bands, s.dtype, s.width, s.height, s.product_level, s.status,
       s.acquired_at, s.ingested_at, s.footprint AS geom
FROM public.scenes AS s
WHERE s.footprint IS NOT NULL
"""

_RESULTS = """
CREATE VIEW ogc.results AS
SELECT r.task_id || '-' || r.ordinal AS id, r.task_id, r.ordinal, r.scene_id, t.level, t.task, r.label,
       r.score, r.answer_text, r.model_version, s.modality, s.acquired_at, r.created_at, t.aoi_id, r.geom
FROM public.results AS r
JOIN public.tasks AS t ON t.id = r.task_id
JOIN public.scenes AS s ON s.id = r.scene_id
WHERE r.geom IS NOT NULL
"""

# The owner of a standing query stays private (it names an API key's holder).
_AOIS = """
CREATE VIEW ogc.aois AS
SELECT a.id, a.name, a.instruction, a.active, a.created_at, a.updated_at, a.geom
FROM public.aois AS a
"""


def upgrade() -> None:
    op.execute("CREATE SCHEMA IF NOT EXISTS ogc")
    op.execute(_SCENES)
    op.execute(_RESULTS)
    op.execute(_AOIS)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS ogc.aois")
    op.execute("DROP VIEW IF EXISTS ogc.results")
    op.execute("DROP VIEW IF EXISTS ogc.scenes")
    op.execute("DROP SCHEMA IF EXISTS ogc")
