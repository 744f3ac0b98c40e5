"""The drop side's edges without the whole service: a notification decoded once (or dead-lettered by the bus
with the reason, against the real broker), and the handler's filter (other buckets, sidecars, ``rejected/``)
with in-memory fakes."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from kafka import KafkaProducer
from kits.broker import dead_letters, fast_options, wait_until

from earthgptx.bus import ConsumerLoop, route
from earthgptx.bus.topics import dead_letter_topic, ensure_topics_from_settings
from earthgptx.events import EventDecodeError
from earthgptx.scenes.drops import decode_notification, is_scene_key
from earthgptx.settings import KafkaSettings
from earthgptx.v1.events_pb2 import DeadLetterCause, ObjectCreated
from services.ingest.handlers import DropHandler


def _notification(bucket: str, key: str, event: str = "s3:ObjectCreated:Put") -> bytes:
    record = {"eventName": event, "s3": {"bucket": {"name": bucket}, "object": {
        "key": key, "size": 10, "eTag": "abc", "sequencer": "17", "userMetadata": {"content-type": "image/tiff"}}}}
    return json.dumps({"EventName": event, "Key": f"{bucket}/{key}", "Records": [record]}).encode()


def test_a_notification_becomes_an_object_created_with_a_deterministic_id() -> None:
    event = decode_notification(_notification("incoming", "station+a/scene%201.tif"))
    assert (event.bucket, event.key, event.size_bytes, event.etag) == ("incoming", "station a/scene 1.tif", 10, "abc")
    assert event.header.event_type == "earthgptx.v1.ObjectCreated"
    again = decode_notification(_notification("incoming", "station+a/scene%201.tif"))
    assert again.header.event_id == event.header.event_id


@pytest.mark.parametrize(
    ("payload", "reason"),
    [(b"", "empty"), (b"not json", "not JSON"), (b'{"Records": []}', "exactly one record"),
     (b'{"Records": [{"s3": {}}]}', "missing field")],  # fmt: skip
)
def test_what_is_not_a_notification_is_refused_with_the_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(EventDecodeError, match=reason):
        decode_notification(payload)


class _NoIngest:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the handler should not have called ingestor.{name}")


@pytest.mark.parametrize(
    ("bucket", "key", "event"),
    [
        ("elsewhere", "scene.tif", "s3:ObjectCreated:Put"),
        ("incoming", "scene.tif.json", "s3:ObjectCreated:Put"),
        ("incoming", "rejected/scene.tif", "s3:ObjectCreated:Copy"),
        ("incoming", "rejected/scene.tif.reason.txt", "s3:ObjectCreated:Put"),
        ("incoming", "scene.tif", "s3:ObjectRemoved:Delete"),
    ],
)
def test_the_handler_ignores_what_is_not_a_new_scene_of_its_bucket(bucket: str, key: str, event: str) -> None:
    handler = DropHandler(_NoIngest(), _NoIngest(), bucket="incoming", workdir=None, max_bytes=10)  # type: ignore[arg-type]
    handler.on_object_created(decode_notification(_notification(bucket, key, event)))  # touches nothing


def test_scene_keys() -> None:
    assert is_scene_key("station/scene.tif")
    assert not is_scene_key("scene.tif.json") and not is_scene_key("rejected/scene.tif")


@pytest.mark.kafka
def test_the_bus_dead_letters_a_record_that_is_not_a_notification(kafka_cleanup: str) -> None:
    settings = KafkaSettings()
    topic, group = f"scenes.dropped.{kafka_cleanup}", f"ingest-{kafka_cleanup}"
    ensure_topics_from_settings(settings, [topic, dead_letter_topic(group)])
    seen: list[ObjectCreated] = []
    loop = ConsumerLoop(group, [route(topic, ObjectCreated, seen.append, decode=decode_notification)], settings,
                        fast_options())  # fmt: skip
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap.split(","))
    try:
        producer.send(topic, key=b"incoming/x", value=b"<xml>not a notification</xml>")
        producer.send(topic, key=b"incoming/scene.tif", value=_notification("incoming", "scene.tif"))
        producer.flush()
        wait_until(lambda: len(seen) == 1, 30, "the good notification to be handled")
        [letter] = dead_letters(settings, group, 1)
        assert letter.cause == DeadLetterCause.DEAD_LETTER_CAUSE_DECODE
        assert "not an S3 bucket notification" in letter.reason
        assert seen[0].key == "scene.tif"
    finally:
        producer.close()
        loop.stop()
        thread.join(timeout=30)
