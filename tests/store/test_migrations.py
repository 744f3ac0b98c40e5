"""Alembic: upgrade an empty database to head and back to base; the models and the migrations agree."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from kits.databases import throwaway_database

from earthgptx.store import migrate
from earthgptx.store.models import Base

pytestmark = pytest.mark.postgis

TABLES = {"scenes", "tasks", "results", "aois", "api_keys"}
VIEWS = {"v_scenes_map", "v_results_map"}
REPO_ROOT = Path(__file__).resolve().parents[2]


def _schema(url: str) -> tuple[set[str], set[str], set[str]]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            inspector = sa.inspect(connection)
            tables = set(inspector.get_table_names())
            views = set(inspector.get_view_names())
            gist = set(
                connection.scalars(
                    sa.text(
                        "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                        "JOIN pg_am a ON a.oid = c.relam WHERE a.amname = 'gist' "
                        "AND c.relnamespace = 'public'::regnamespace"
                    )
                )
            )
        return tables, views, gist
    finally:
        engine.dispose()


def _head() -> str:
    head = ScriptDirectory.from_config(migrate.alembic_config()).get_current_head()
    assert head is not None
    return head


def test_upgrade_from_empty_to_head_and_downgrade_to_base() -> None:
    with throwaway_database() as url:
        tables, views, _ = _schema(url)
        assert not tables & TABLES and not views & VIEWS
        assert migrate.current_revision(url) is None

        migrate.upgrade("head", url=url)
        tables, views, gist = _schema(url)
        assert TABLES <= tables
        assert VIEWS <= views
        assert {"ix_scenes_footprint", "ix_results_geom", "ix_aois_geom"} <= gist
        assert migrate.current_revision(url) == _head()

        migrate.downgrade("base", url=url)
        tables, views, gist = _schema(url)
        assert not tables & TABLES
        assert not views & VIEWS
        assert not gist & {"ix_scenes_footprint", "ix_results_geom", "ix_aois_geom"}
        assert migrate.current_revision(url) is None
        # PostGIS belongs to the database, not to this schema: it survives the downgrade.
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        with engine.connect() as connection:
            assert (
                connection.scalar(sa.text("SELECT count(*) FROM pg_extension WHERE extname = 'postgis'")) == 1
            )
        engine.dispose()

        # And the cycle can be repeated (the downgrade left nothing behind that blocks a new upgrade).
        migrate.upgrade("head", url=url)
        assert TABLES <= _schema(url)[0]


def test_models_match_migrations(migrated_db_url: str) -> None:
    engine = sa.create_engine(migrated_db_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            diff = [
                change
                for change in compare_metadata(context, Base.metadata)
                # PostGIS's own table is not part of this schema.
                if not (change[0] == "remove_table" and change[1].name == "spatial_ref_sys")
            ]
    finally:
        engine.dispose()
    assert diff == [], f"models and migrations differ: {diff}"


def test_cli_upgrades_from_any_directory(tmp_path: Path) -> None:
    with throwaway_database() as url:
        env = {**os.environ, "EGX_DB_URL": url, "PYTHONPATH": str(REPO_ROOT)}
        done = subprocess.run(
            [sys.executable, "-m", "earthgptx.store.migrate", "upgrade", "head"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert url.split("@")[0] not in done.stderr + done.stdout  # credentials are never echoed
        current = subprocess.run(
            [sys.executable, "-m", "earthgptx.store.migrate", "current"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert current.stdout.strip() == _head()
