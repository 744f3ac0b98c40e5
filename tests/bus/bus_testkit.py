"""Helpers of the bus tests and the consumer subprocess they start (not a test module); the generic Kafka
helpers are ``tests/kits/broker.py``'s."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from kits.broker import (  # noqa: F401  (the generic Kafka helpers, re-exported for the bus tests)
    committed_offsets,
    dead_letters,
    fast_options,
    read_topic,
    record_count,
    wait_until,
)

from earthgptx.events import deterministic_id
from earthgptx.v1.events_pb2 import SceneIngested


def scene(scene_id: str, **fields: Any) -> SceneIngested:
    return SceneIngested(scene_id=scene_id, source="test", sensor="unit", **fields)


class SceneSink:
    """An idempotent sink in SQLite: one row per scene, keyed by a deterministic id, plus a delivery log.

    Stands in for the PostGIS repository: upserts keyed by a deterministic id are what make redelivery harmless.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS scenes (id TEXT PRIMARY KEY, scene_id TEXT, source TEXT)")
            db.execute("CREATE TABLE IF NOT EXISTS deliveries (event_id TEXT, pid INTEGER)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10, isolation_level=None)

    def store(self, event: SceneIngested, pid: int) -> None:
        row_id = deterministic_id("scene", event.scene_id)
        with self._connect() as db:
            db.execute("BEGIN")
            db.execute(
                "INSERT INTO scenes (id, scene_id, source) VALUES (?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET source = excluded.source",
                (row_id, event.scene_id, event.source),
            )
            db.execute("INSERT INTO deliveries VALUES (?, ?)", (event.header.event_id, pid))
            db.execute("COMMIT")

    def rows(self) -> list[tuple[str, str]]:
        with self._connect() as db:
            return list(db.execute("SELECT id, scene_id FROM scenes ORDER BY scene_id"))

    def deliveries(self) -> list[tuple[str, int]]:
        with self._connect() as db:
            return list(db.execute("SELECT event_id, pid FROM deliveries"))
