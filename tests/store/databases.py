"""Throwaway PostgreSQL databases for the store tests (shared server: unique names, always dropped)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url


@contextmanager
def throwaway_database(prefix: str = "egx_test") -> Iterator[str]:
    """Create an empty database, yield its URL, drop it (even with connections still open)."""
    base = os.environ.get("EGX_DB_URL")
    if not base:
        pytest.fail(
            "EGX_DB_URL is not set; start the local stack with `make up` (it writes .stack/stack.env)"
        )
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(make_url(base), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not usable ({type(exc).__name__}); start the local stack with `make up`")
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
