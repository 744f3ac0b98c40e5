"""The Kafka bus: topics, an idempotent event producer and the consumer loop (DESIGN §3, "Delivery").

    from earthgptx.bus import ConsumerLoop, EventProducer, route, topics
    from earthgptx.v1.events_pb2 import SceneIngested

    def on_scene_ingested(event: SceneIngested) -> None: ...

    ConsumerLoop("promptgen", [route(topics.SCENES_INGESTED, SceneIngested, on_scene_ingested)]).run()
"""

from earthgptx.bus import topics
from earthgptx.bus.consumer import ConsumerLoop, ConsumerOptions, LoopStats, Route, batch_route, route
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
    "topics",
]
