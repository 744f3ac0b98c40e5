"""Fixtures of the bus tests: settings of the local broker and unique, freshly created topics."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from earthgptx.settings import KafkaSettings

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def kafka_settings() -> KafkaSettings:
    return KafkaSettings()


@pytest.fixture
def new_topic(kafka_settings: KafkaSettings, unique_name: str) -> Iterator[Callable[[str], str]]:
    """Create uniquely named topics (partition count from settings); at teardown, delete every topic and
    consumer group whose name carries this test's unique suffix (dead-letter topics included), since the
    broker is shared."""
    from kafka import KafkaAdminClient

    from earthgptx.bus import ensure_topics_from_settings

    def _create(label: str) -> str:
        name = f"test.{label}.{unique_name}"
        ensure_topics_from_settings(kafka_settings, [name])
        return name

    yield _create
    admin = KafkaAdminClient(bootstrap_servers=kafka_settings.bootstrap.split(","))
    try:
        topics = [t for t in admin.list_topics() if unique_name in t]
        if topics:
            admin.delete_topics(topics, raise_errors=False)
        groups = [g["group_id"] for g in admin.list_groups() if unique_name in g["group_id"]]
        if groups:
            admin.delete_groups(groups)
    finally:
        admin.close()
