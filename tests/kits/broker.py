"""Kafka helpers: read a topic back, count its records, see a group's commits, clean up, fast group timings."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from earthgptx.bus import ConsumerOptions
from earthgptx.bus.topics import dead_letter_topic
from earthgptx.settings import KafkaSettings
from earthgptx.v1.events_pb2 import DeadLetter

# The broker's group.min.session.timeout.ms is 6 s; heartbeats every second keep joins and leaves quick.
FAST_GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000, "max_poll_interval_ms": 10_000}


def fast_options(**changes: Any) -> ConsumerOptions:
    """Consumer options for tests: short backoffs and polls, fast group membership; ``changes`` override."""
    overrides = {**FAST_GROUP, **changes.pop("consumer_overrides", {})}
    defaults: dict[str, Any] = {
        "backoff_initial_s": 0.05,
        "backoff_max_s": 0.2,
        "poll_timeout_ms": 200,
        "consumer_overrides": overrides,
    }
    defaults.update(changes)
    return ConsumerOptions(**defaults)


def read_topic(settings: KafkaSettings, topic: str, count: int, timeout_s: float = 20.0) -> list[Any]:
    """The first ``count`` records of every partition of ``topic``, from the beginning (no group)."""
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap.split(","), enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while len(records) < count and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def dead_letters(settings: KafkaSettings, group: str, count: int) -> list[DeadLetter]:
    """The first ``count`` dead letters of consumer group ``group``."""
    return [DeadLetter.FromString(r.value) for r in read_topic(settings, dead_letter_topic(group), count)]


def record_count(settings: KafkaSettings, topic: str) -> int:
    """Number of records in ``topic`` (sum of end offsets; the test topics are never truncated)."""
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap.split(","))
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        return sum(consumer.end_offsets(partitions).values())
    finally:
        consumer.close()


def committed_offsets(settings: KafkaSettings, group: str) -> dict[TopicPartition, int]:
    """The offsets ``group`` has committed, per partition."""
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap.split(","))
    try:
        offsets = admin.list_group_offsets(group)[group]
        return {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
    finally:
        admin.close()


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``predicate`` until it holds; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.05)


def delete_leftovers(settings: KafkaSettings, suffix: str) -> None:
    """Delete every topic and consumer group whose name carries ``suffix`` (the broker is shared)."""
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap.split(","))
    try:
        topics = [t for t in admin.list_topics() if suffix in t]
        if topics:
            admin.delete_topics(topics, raise_errors=False)
        groups = [g["group_id"] for g in admin.list_groups() if suffix in g["group_id"]]
        if groups:
            admin.delete_groups(groups)
    finally:
        admin.close()
