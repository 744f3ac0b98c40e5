"""Shared test setup.

Integration tests talk to the real local stack started by ``make up`` (``deploy/local``). Its connection
values are read from ``.stack/stack.env`` unless already in the environment. If a service a test needs is
down, the test fails with a message saying so (it is never silently skipped): run ``make up`` first, or
deselect with ``-m "not kafka and not postgis and not minio and not triton"``.

The servers are shared with other engineers' runs: the fixtures here give every test (or module) its own
uniquely named database, topics, groups and buckets, and remove them afterwards. The helpers behind them are in
``tests/kits/``; tests of a service live in ``tests/services/<service>/`` with basenames ``test_<service>_*.py``
(the test folders are not packages, so basenames must be unique across the suite).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from earthgptx.settings import KafkaSettings, load_stack_env

if TYPE_CHECKING:
    from earthgptx.store.objects import ObjectStore

REPO_ROOT = Path(__file__).resolve().parents[1]

load_stack_env(fallback=REPO_ROOT / ".stack")


def _require_port(address: str, what: str) -> None:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=2):
            return
    except OSError as exc:
        pytest.fail(f"{what} is not reachable at {address} ({exc}); start the local stack with `make up`")


@pytest.fixture(autouse=True)
def _services_for_markers(request: pytest.FixtureRequest) -> None:
    """Fail fast, with the reason, when a marked test's service is down."""
    marks = {m.name for m in request.node.iter_markers()}
    if "kafka" in marks:
        _require_port(os.environ.get("EGX_KAFKA_BOOTSTRAP", "127.0.0.1:59092").split(",")[0], "Kafka")
    if "minio" in marks:
        _require_port(os.environ.get("EGX_S3_ENDPOINT", "127.0.0.1:59000"), "MinIO")
    if "postgis" in marks:
        _require_port("127.0.0.1:" + os.environ.get("EGX_PG_PORT", "55432"), "PostgreSQL")
    if "triton" in marks:
        _require_port(os.environ.get("EGX_TRITON_HTTP_URL", "127.0.0.1:58000"), "Triton")
    if "gpu" in marks:
        torch = pytest.importorskip("torch")
        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA device")


@pytest.fixture
def unique_name() -> str:
    """A short unique suffix for topics, buckets, consumer groups and schemas used by one test."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def kafka_settings() -> KafkaSettings:
    """The local broker's settings (``EGX_KAFKA_*``)."""
    return KafkaSettings()


@pytest.fixture
def kafka_cleanup(unique_name: str) -> Iterator[str]:
    """Yields the test's unique suffix; afterwards deletes every topic and group whose name contains it
    (dead-letter topics included)."""
    from kits.broker import delete_leftovers

    yield unique_name
    delete_leftovers(KafkaSettings(), unique_name)


@pytest.fixture(scope="module")
def migrated_db_url() -> Iterator[str]:
    """A PostGIS database of the module's own (``egx_test_<unique>``), migrated to head, dropped afterwards."""
    from kits.databases import migrated_database

    with migrated_database() as url:
        yield url


@pytest.fixture(scope="module")
def object_store() -> Iterator[ObjectStore]:
    """An ``ObjectStore`` with scenes and chips buckets of the module's own, emptied and removed afterwards."""
    from kits.objects import throwaway_object_store

    with throwaway_object_store() as store:
        yield store
