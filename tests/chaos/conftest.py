"""Fixtures of the fault-injection suite: private dependencies to break, and a record of recovery times.

``EGX_CHAOS_RECORD=<path>`` makes the suite write the recovery times it measured to that JSON file (the
benchmark of the result store reports them beside its throughput: ``bench/results/chaos.json``).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harness import PrivateKafka, PrivateMinio, PrivatePostgres, PrivateTriton  # noqa: E402


@pytest.fixture(scope="session")
def chaos_record() -> Iterator[dict[str, Any]]:
    """Scenario name -> what it measured; written to ``EGX_CHAOS_RECORD`` at the end of the session."""
    record: dict[str, Any] = {}
    yield record
    target = os.environ.get("EGX_CHAOS_RECORD")
    if target and record:
        path = Path(target)
        previous = json.loads(path.read_text()) if path.exists() else {}
        path.write_text(json.dumps({**previous, **record}, indent=2, sort_keys=True) + "\n")


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL + PostGIS cluster of the test's own, started, with an empty PostGIS database."""
    server = PrivatePostgres()
    try:
        server.start()
        server.create_database()
        yield server
    finally:
        server.close()


@pytest.fixture
def private_kafka() -> Iterator[PrivateKafka]:
    """A single-node Kafka broker of the test's own, started."""
    broker = PrivateKafka()
    try:
        broker.start()
        yield broker
    finally:
        broker.close()


@pytest.fixture
def private_minio() -> Iterator[PrivateMinio]:
    """A MinIO server of the test's own, started (no Kafka notifications)."""
    server = PrivateMinio()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def private_triton() -> Iterator[PrivateTriton]:
    """A tritonserver of the test's own (the stack's model repository), started."""
    server = PrivateTriton()
    try:
        server.start()
        yield server
    finally:
        server.close()
