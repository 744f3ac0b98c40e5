"""Fixtures for the store tests: a repository on the module's throwaway migrated database.

``migrated_db_url`` (a PostGIS database of the module's own, migrated to head) and ``object_store`` (buckets of
the module's own) come from ``tests/conftest.py``; the helpers behind them are in ``tests/kits/``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from earthgptx.store.db import make_engine
from earthgptx.store.repository import Repository


@pytest.fixture(scope="module")
def repository(migrated_db_url: str) -> Iterator[Repository]:
    repo = Repository(make_engine(url=migrated_db_url, pool_size=2))
    yield repo
    repo.close()
