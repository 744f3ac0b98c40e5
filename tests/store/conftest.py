"""Fixtures for the store tests: throwaway PostGIS databases and MinIO buckets, one set per test module.

The servers are shared with other engineers' tests, so every database and bucket name is unique and removed
afterwards. Databases are created from ``template1``, which already has PostGIS.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from earthgptx.store import migrate
from earthgptx.store.db import make_engine
from earthgptx.store.repository import Repository

from .databases import throwaway_database


@pytest.fixture(scope="module")
def migrated_db_url() -> Iterator[str]:
    """A database of its own for the module, migrated to head."""
    with throwaway_database() as url:
        migrate.upgrade("head", url=url)
        yield url


@pytest.fixture(scope="module")
def repository(migrated_db_url: str) -> Iterator[Repository]:
    repo = Repository(make_engine(url=migrated_db_url, pool_size=2))
    yield repo
    repo.close()
