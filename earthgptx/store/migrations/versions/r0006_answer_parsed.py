"""Results record whether the model's answer parsed (``answer_parsed``; ``parse_failure`` says why not) and the share
of the chip that was no-data (``nodata_fraction``). An unparsed answer is one row with its text and no geometry,
never a wrong box (``earthgptx.answers``); rows written before this revision read as parsed. The answer views
``v_query_answers`` and ``v_aoi_answers`` show the flag and the reason (as their last columns).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None

_V_QUERY_ANSWERS = """
VIEW v_query_answers AS
SELECT q.id AS query_id, q.status, q.instruction, q.owner, q.created_at, q.answered_at,
       t.id AS task_id, t.scene_id, t.level, t.task, t.status AS task_status,
       r.ordinal, r.answer_text, r.label, r.score, r.attributes,
       ST_X(ST_Centroid(r.geom)) AS lon,
       ST_Y(ST_Centroid(r.geom)) AS lat,
       ST_AsGeoJSON(r.geom, 7) AS geojson,
       r.geom{extra}
FROM queries AS q
LEFT JOIN LATERAL unnest(q.task_ids) AS qt(task_id) ON true
LEFT JOIN tasks AS t ON t.id = qt.task_id
LEFT JOIN results AS r ON r.task_id = t.id
"""

_V_AOI_ANSWERS = """
VIEW v_aoi_answers AS
SELECT a.id AS aoi_id, a.name AS aoi_name, a.instruction, t.id AS task_id, t.scene_id, t.status AS task_status,
       r.ordinal, r.answer_text, r.label, r.score, s.acquired_at, r.created_at,
       ST_X(ST_Centroid(r.geom)) AS lon,
       ST_Y(ST_Centroid(r.geom)) AS lat,
       ST_AsGeoJSON(r.geom, 7) AS geojson,
       r.geom{extra}
FROM aois AS a
JOIN tasks AS t ON t.aoi_id = a.id
JOIN scenes AS s ON s.id = t.scene_id
LEFT JOIN results AS r ON r.task_id = t.id
"""

_FLAG_COLUMNS = ",\n       r.answer_parsed, r.parse_failure"


def upgrade() -> None:
    op.add_column(
        "results", sa.Column("answer_parsed", sa.Boolean(), server_default=sa.text("true"), nullable=False)
    )
    op.add_column("results", sa.Column("parse_failure", sa.Text(), nullable=True))
    op.add_column("results", sa.Column("nodata_fraction", sa.Float(precision=53), nullable=True))
    op.create_check_constraint(
        op.f("ck_results_unparsed_has_reason"), "results", "answer_parsed OR parse_failure IS NOT NULL"
    )
    op.create_check_constraint(
        op.f("ck_results_nodata_fraction_range"), "results", "nodata_fraction >= 0 AND nodata_fraction < 1"
    )
    # Columns appended at the end: CREATE OR REPLACE keeps the views' existing columns and their order.
    op.execute("CREATE OR REPLACE" + _V_QUERY_ANSWERS.format(extra=_FLAG_COLUMNS))
    op.execute("CREATE OR REPLACE" + _V_AOI_ANSWERS.format(extra=_FLAG_COLUMNS))


def downgrade() -> None:
    # A view cannot lose columns in place: drop and recreate them as revision 0004 made them.
    op.execute("DROP VIEW IF EXISTS v_aoi_answers")
    op.execute("DROP VIEW IF EXISTS v_query_answers")
    op.execute("CREATE" + _V_QUERY_ANSWERS.format(extra=""))
    op.execute("CREATE" + _V_AOI_ANSWERS.format(extra=""))
    op.drop_constraint(op.f("ck_results_nodata_fraction_range"), "results", type_="check")
    op.drop_constraint(op.f("ck_results_unparsed_has_reason"), "results", type_="check")
    op.drop_column("results", "nodata_fraction")
    op.drop_column("results", "parse_failure")
    op.drop_column("results", "answer_parsed")
