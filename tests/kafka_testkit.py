"""Kafka helpers shared by the broker tests (bus, services): read a topic back, clean up after a test."""

from __future__ import annotations

import time
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from earthgptx.settings import KafkaSettings


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
