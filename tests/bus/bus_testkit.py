"""Helpers shared by the bus tests and the consumer subprocess they start (not a test module)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka_testkit import read_topic  # noqa: F401  (re-exported for the bus tests)

from earthgptx.bus import ConsumerOptions
from earthgptx.events import deterministic_id
from earthgptx.settings import KafkaSettings
from earthgptx.v1.events_pb2 import DeadLetter, SceneIngested

# The broker's group.min.session.timeout.ms is 6 s; heartbeats every second keep membership checks quick.
FAST_GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000, "max_poll_interval_ms": 10_000}


def fast_options(**changes: Any) -> ConsumerOptions:
    overrides = {**FAST_GROUP, **changes.pop("consumer_overrides", {})}
    defaults: dict[str, Any] = {
        "backoff_initial_s": 0.05,
        "backoff_max_s": 0.2,
        "poll_timeout_ms": 200,
        "consumer_overrides": overrides,
    }
    defaults.update(changes)
    return ConsumerOptions(**defaults)


def scene(scene_id: str, **fields: Any) -> SceneIngested:
    return SceneIngested(scene_id=scene_id, source="test", sensor="unit", **fields)


def dead_letters(settings: KafkaSettings, group: str, count: int) -> list[DeadLetter]:
    return [DeadLetter.FromString(r.value) for r in read_topic(settings, f"dlq.{group}", count)]


def record_count(settings: KafkaSettings, topic: str) -> int:
    """Number of records in ``topic`` (sum of end offsets; the test topics are never truncated)."""
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap.split(","))
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        return sum(consumer.end_offsets(partitions).values())
    finally:
        consumer.close()


def committed_offsets(settings: KafkaSettings, group: str) -> dict[TopicPartition, int]:
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap.split(","))
    try:
        offsets = admin.list_group_offsets(group)[group]
        return {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
    finally:
        admin.close()


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.05)


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
