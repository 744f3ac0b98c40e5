"""Fixtures of the bus tests: unique, freshly created topics (``kafka_settings`` comes from tests/conftest.py)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kits.broker import delete_leftovers

from earthgptx.settings import KafkaSettings

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def new_topic(kafka_settings: KafkaSettings, unique_name: str) -> Iterator[Callable[[str], str]]:
    """Create uniquely named topics (partition count from settings); at teardown, delete every topic and
    consumer group whose name carries this test's unique suffix (dead-letter topics included), since the
    broker is shared."""
    from earthgptx.bus import ensure_topics_from_settings

    def _create(label: str) -> str:
        name = f"test.{label}.{unique_name}"
        ensure_topics_from_settings(kafka_settings, [name])
        return name

    yield _create
    delete_leftovers(kafka_settings, unique_name)
