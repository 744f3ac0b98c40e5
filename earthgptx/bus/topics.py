"""Topic names of the platform, which message each carries (``EVENT_TOPICS``), and their idempotent creation.

``EVENT_TOPICS`` is the registry services and docs read: a route takes its message class from it
(``message_class(topic)``), and ``docs/architecture.md`` lists it. The broker does not auto-create topics
(``auto.create.topics.enable=false``): a service's lifecycle (``earthgptx.runtime``) creates the topics it reads
and writes once, at start, with ``ensure_topics_from_settings`` (partition count and replication factor from
``KafkaSettings``); the consumer loop itself creates nothing. Keys are scene ids, so one scene's events stay
ordered within a partition.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from google.protobuf.message import Message
from kafka import KafkaAdminClient
from kafka.errors import TopicAlreadyExistsError, for_code

from earthgptx.settings import KafkaSettings
from earthgptx.v1.events_pb2 import (
    DeadLetter,
    InferenceResult,
    PromptTask,
    QueryRequested,
    ResultStored,
    SceneIngested,
)

log = logging.getLogger(__name__)

SCENES_INGESTED = "scenes.ingested"
PROMPTS_TASKS = "prompts.tasks"
INFERENCE_RESULTS = "inference.results"
RESULTS_STORED = "results.stored"
QUERIES_REQUESTED = "queries.requested"
DEAD_LETTER_PREFIX = "dlq."

EVENT_TOPICS: Mapping[str, type[Message]] = {
    SCENES_INGESTED: SceneIngested,
    PROMPTS_TASKS: PromptTask,
    INFERENCE_RESULTS: InferenceResult,
    RESULTS_STORED: ResultStored,
    QUERIES_REQUESTED: QueryRequested,
}
"""The message class each platform topic carries."""

DEAD_LETTER_TYPE: type[Message] = DeadLetter


def message_class(topic: str) -> type[Message]:
    """The message class a platform topic carries (``dlq.*`` topics carry ``DeadLetter``)."""
    if topic.startswith(DEAD_LETTER_PREFIX):
        return DEAD_LETTER_TYPE
    try:
        return EVENT_TOPICS[topic]
    except KeyError:
        raise KeyError(f"{topic!r} is not a platform topic; known: {sorted(EVENT_TOPICS)}") from None


def dead_letter_topic(group_id: str) -> str:
    """The dead-letter topic of one consumer group (one per group, so a group can replay its own failures)."""
    if not group_id:
        raise ValueError("a dead-letter topic needs a consumer group id")
    return f"{DEAD_LETTER_PREFIX}{group_id}"


def ensure_topics(
    admin: KafkaAdminClient,
    names: Iterable[str],
    partitions: int,
    replication: int,
    configs: Mapping[str, str] | None = None,
    timeout_ms: int = 15_000,
) -> list[str]:
    """Create the topics that do not exist yet and wait until they have leaders. Returns the ones created.

    Idempotent: existing topics are left as they are (a different partition count is logged, not changed,
    because adding partitions would move keys between partitions and break per-scene ordering).
    """
    wanted = sorted(set(names))
    if not wanted:
        return []
    spec = {
        name: {"num_partitions": partitions, "replication_factor": replication, "configs": dict(configs or {})}
        for name in wanted
    }
    response = admin.create_topics(spec, timeout_ms=timeout_ms, raise_errors=False)
    created: list[str] = []
    for topic in response["topics"]:
        error = for_code(topic["error_code"])
        if topic["error_code"] == 0:
            created.append(topic["name"])
        elif error is not TopicAlreadyExistsError:
            message = topic.get("error_message") or error.__name__
            raise RuntimeError(f"could not create topic {topic['name']!r}: {message}")
    admin.wait_for_topics(wanted, timeout_ms=timeout_ms)
    if created:
        log.info("created topics %s (%d partitions, replication %d)", created, partitions, replication)
    for info in admin.describe_topics(wanted):
        count = len(info.get("partitions") or [])
        if info["name"] not in created and count != partitions:
            log.warning("topic %s has %d partitions, settings ask for %d; left unchanged", info["name"], count, partitions)
    return created


def ensure_topics_from_settings(
    settings: KafkaSettings,
    names: Iterable[str],
    partitions: int | None = None,
    configs: Mapping[str, str] | None = None,
) -> list[str]:
    """``ensure_topics`` with a short-lived admin client built from ``settings``."""
    admin = KafkaAdminClient(
        bootstrap_servers=settings.bootstrap.split(","),
        client_id="egx-topics",
        reconnect_backoff_ms=50,
        reconnect_backoff_max_ms=1000,
    )
    try:
        return ensure_topics(
            admin, names, partitions or settings.partitions, settings.replication_factor, configs
        )
    finally:
        admin.close()
