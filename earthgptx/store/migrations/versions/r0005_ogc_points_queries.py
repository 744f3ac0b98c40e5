"""The ``ogc`` schema gains a point for every result (``ogc.results.point_geom``, a point on its surface) and
the ad-hoc queries (``ogc.queries``). A vector tile drops a polygon smaller than one of its units, so at low
zoom levels small objects would vanish from the map; the map draws the points there (Martin's source
``result_points``). The owner of a query stays private.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

_RESULTS_COLUMNS = """
SELECT r.task_id || '-' || r.ordinal AS id, r.task_id, r.ordinal, r.scene_id, t.level, t.task, r.label,
       r.score, r.answer_text, r.model_version, s.modality, s.acquired_at, r.created_at, t.aoi_id, r.geom{extra}
FROM public.results AS r
JOIN public.tasks AS t ON t.id = r.task_id
JOIN public.scenes AS s ON s.id = r.scene_id
WHERE r.geom IS NOT NULL
"""

_QUERIES = """
CREATE VIEW ogc.queries AS
SELECT q.id, q.instruction, q.status, q.reason, q.coverage, q.scene_id, cardinality(q.task_ids) AS task_count,
       q.created_at, q.answered_at, q.geom
FROM public.queries AS q
WHERE q.geom IS NOT NULL
"""


def upgrade() -> None:
    op.execute(
        "CREATE OR REPLACE VIEW ogc.results AS"
        + _RESULTS_COLUMNS.format(extra=",\n       ST_PointOnSurface(r.geom) AS point_geom")
    )
    op.execute(_QUERIES)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS ogc.queries")
    op.execute("DROP VIEW IF EXISTS ogc.results")
    op.execute("CREATE VIEW ogc.results AS" + _RESULTS_COLUMNS.format(extra=""))
