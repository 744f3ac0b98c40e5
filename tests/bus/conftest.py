"""Fixtures of the bus tests: settings of the local broker and unique, freshly created topics."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from earthgptx.settings import KafkaSettings

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def kafka_settings() -> KafkaSettings:
    return KafkaSettings()


@pytest.fixture
def new_topic(kafka_settings: KafkaSettings, unique_name: str) -> Callable[[str], str]:
    """Create a uniquely named topic (partition count from settings) and return its name."""
    from earthgptx.bus import ensure_topics_from_settings

    def _create(label: str) -> str:
        name = f"test.{label}.{unique_name}"
        ensure_topics_from_settings(kafka_settings, [name])
        return name

    return _create
