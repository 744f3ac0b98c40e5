"""Throwaway PostgreSQL databases (shared server: unique names, always dropped, even with connections open).

Databases are created from ``template1``, which the local stack gives PostGIS.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from kits import StackNotReady


@contextmanager
def throwaway_database(prefix: str = "egx_test") -> Iterator[str]:
    """Create an empty database ``<prefix>_<unique>`` next to ``EGX_DB_URL``'s, yield its URL, drop it."""
    base = os.environ.get("EGX_DB_URL")
    if not base:
        raise StackNotReady("EGX_DB_URL is not set; start the local stack with `make up` (it writes .stack/stack.env)")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(make_url(base), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        raise StackNotReady(
            f"PostgreSQL is not usable ({type(exc).__name__}); start the local stack with `make up`"
        ) from exc
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        try:
            _drop(admin, name)
        finally:
            admin.dispose()


def _drop(admin: sa.Engine, name: str, attempts: int = 20) -> None:
    """DROP ... WITH (FORCE), retried while an autovacuum worker is in the database: the server's own process,
    which a non-superuser may not terminate ("must be a member of the role whose process is being terminated")."""
    for attempt in range(1, attempts + 1):
        try:
            with admin.connect() as connection:
                connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            return
        except sa.exc.ProgrammingError as exc:
            if "pg_signal_backend" not in str(exc) or attempt == attempts:
                raise
            time.sleep(0.25)


@contextmanager
def migrated_database(prefix: str = "egx_test") -> Iterator[str]:
    """A throwaway database migrated to head (the platform's schema); yields its URL."""
    from earthgptx.store import migrate

    with throwaway_database(prefix) as url:
        migrate.upgrade("head", url=url)
        yield url
