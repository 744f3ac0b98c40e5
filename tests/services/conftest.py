"""Fixtures of the service tests: a throwaway migrated PostGIS database and cleanup of uniquely named topics.

The servers of the local stack are shared with other engineers' tests: every database, topic and consumer group
created here has a unique name and is removed afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from kafka_testkit import delete_leftovers
from sqlalchemy.engine import make_url

from earthgptx.settings import KafkaSettings


@pytest.fixture(scope="module")
def migrated_db_url() -> Iterator[str]:
    """A database of its own (``egx_test_<unique>``, from template1 which has PostGIS), migrated to head."""
    from earthgptx.store import migrate

    base = os.environ.get("EGX_DB_URL")
    if not base:
        pytest.fail("EGX_DB_URL is not set; start the local stack with `make up` (it writes .stack/stack.env)")
    name = f"egx_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(make_url(base), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        url = make_url(base).set(database=name).render_as_string(hide_password=False)
        migrate.upgrade("head", url=url)
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def kafka_cleanup(unique_name: str) -> Iterator[str]:
    """Yields the test's unique suffix; afterwards deletes every topic and group whose name contains it."""
    yield unique_name
    delete_leftovers(KafkaSettings(), unique_name)
