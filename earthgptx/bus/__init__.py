"""The Kafka bus: topics, an idempotent event producer and the consumer loop (docs/architecture.md, "Delivery").

    from earthgptx.bus import ConsumerLoop, EventProducer, route, topics
    from earthgptx.v1.events_pb2 import SceneIngested

    def on_scene_ingested(event: SceneIngested) -> None: ...

    ConsumerLoop("promptgen", [route(topics.SCENES_INGESTED, SceneIngested, on_scene_ingested)]).run()

A handler only raises: ``PermanentError`` (dead-lettered), ``TransientError`` (retried up to a cap) or
``DependencyUnavailable`` (an outage: waited out, never dead-lettered; the library's store errors are kinds of
these, see ``errors``). ``batch_route`` hands a handler a whole poll; ``staged_batch_route`` with
``ConsumerOptions(pipeline=True)`` prepares the next poll while one is written; ``ConsumerOptions(concurrency=N)``
keeps N records in flight. The policy is in ``consumer``'s docstring; topics are created by the service's lifecycle.
"""

from earthgptx.bus import topics
from earthgptx.bus.consumer import (
    ConsumerLoop,
    ConsumerOptions,
    LoopStats,
    Route,
    batch_route,
    route,
    staged_batch_route,
)
from earthgptx.bus.errors import (
    BusError,
    DependencyUnavailable,
    EventTooLargeError,
    PermanentError,
    PublishError,
    TransientError,
)
from earthgptx.bus.producer import EventProducer
from earthgptx.bus.topics import dead_letter_topic, ensure_topics, ensure_topics_from_settings

__all__ = [
    "BusError",
    "ConsumerLoop",
    "ConsumerOptions",
    "DependencyUnavailable",
    "EventProducer",
    "EventTooLargeError",
    "LoopStats",
    "PermanentError",
    "PublishError",
    "Route",
    "TransientError",
    "batch_route",
    "dead_letter_topic",
    "ensure_topics",
    "ensure_topics_from_settings",
    "route",
    "staged_batch_route",
    "topics",
]
