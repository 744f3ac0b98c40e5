"""Helpers of the bus tests and the consumer subprocess they start (not a test module); the generic Kafka
helpers are ``tests/kits/broker.py``'s."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from kits.broker import (  # noqa: F401  (the generic Kafka helpers, re-exported for the bus tests)
    committed_offsets,
    dead_letters,
    fast_options,
    read_topic,
    record_count,
    wait_until,
)

from earthgptx.bus import ConsumerLoop, ConsumerOptions, EventTooLargeError, PublishError, Route
from earthgptx.bus import ensure_topics_from_settings as _ensure_topics
from earthgptx.events import deterministic_id, encode_event, stamp
from earthgptx.v1.events_pb2 import DeadLetter, SceneIngested

TOPIC = "scenes.ingested"


def scene(scene_id: str, **fields: Any) -> SceneIngested:
    return SceneIngested(scene_id=scene_id, source="test", sensor="unit", **fields)


def scene_bytes(scene_id: str = "s1", **fields: Any) -> bytes:
    """A stamped ``SceneIngested`` as it travels on the bus."""
    return encode_event(stamp(scene(scene_id, **fields)))


# -- the loop without a broker (unit tests): records and the dead-letter producer stand in ------------------


class FakeRecord(NamedTuple):
    """What kafka-python's poll hands the loop (``ConsumerRecord``'s fields the loop reads)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def fake_record(
    value: bytes | None,
    *,
    topic: str = TOPIC,
    partition: int = 0,
    offset: int = 0,
    key: bytes | None = b"scene-1",
    headers: Sequence[tuple[str, bytes]] = (),
) -> FakeRecord:
    return FakeRecord(topic, partition, offset, 1_700_000_000_000, key, value, list(headers))


class RecordingProducer:
    """Stands in for the dead-letter ``EventProducer``: records what would be published. Its first ``failures``
    publishes raise ``fail_with`` (a ``PublishError`` unless given); letters over ``max_bytes`` are refused as
    too large."""

    def __init__(self, failures: int = 0, fail_with: Exception | None = None, max_bytes: int | None = None) -> None:
        self.failures = failures
        self.fail_with = fail_with or PublishError("broker not reachable")
        self.max_bytes = max_bytes
        self.published: list[tuple[str, str, DeadLetter]] = []

    def publish_and_wait(self, topic: str, key: str, message: DeadLetter, **_: Any) -> None:
        if self.failures:
            self.failures -= 1
            raise self.fail_with
        if self.max_bytes is not None and message.ByteSize() > self.max_bytes:
            raise EventTooLargeError(f"{message.ByteSize()} bytes")
        self.published.append((topic, key, message))

    @property
    def letters(self) -> list[DeadLetter]:
        return [message for _, _, message in self.published]


def unit_loop(
    routes: Sequence[Route[Any]],
    dlq: RecordingProducer,
    *,
    on_readiness: Callable[[bool], None] | None = None,
    **options: Any,
) -> ConsumerLoop:
    """A loop of group ``unit`` with millisecond backoffs, driven directly (``_process_record``...)."""
    defaults: dict[str, Any] = {"backoff_initial_s": 0.001, "backoff_max_s": 0.002, "outage_backoff_max_s": 0.002}
    defaults.update(options)
    return ConsumerLoop("unit", routes, options=ConsumerOptions(**defaults), on_readiness=on_readiness,
                        dead_letter_producer=dlq)  # type: ignore[arg-type]


# -- the loop against the real broker ------------------------------------------------------------------------


def run_loop(loop: ConsumerLoop, until: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Create the loop's topics (a service's lifecycle does that), run ``loop`` in a thread until ``until()``
    holds, then stop it and wait for it to close."""
    _ensure_topics(loop.settings, loop.topics)
    errors: list[BaseException] = []

    def _target() -> None:
        try:
            loop.run()
        except BaseException as exc:  # surfaced in the test thread below
            errors.append(exc)

    thread = threading.Thread(target=_target, daemon=True)
    thread.start()
    try:
        wait_until(lambda: until() or bool(errors) or not thread.is_alive(), timeout_s, "the consumer loop")
    finally:
        loop.stop()
        thread.join(timeout=30)
    assert not thread.is_alive(), "the consumer loop did not stop"
    if errors:
        raise errors[0]


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
