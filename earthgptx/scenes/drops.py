"""The drop bucket's side of ingest: MinIO's bucket notifications, translated once at the edge.

MinIO publishes every write into the drop bucket to a Kafka topic (its Kafka notification target, with an on-disk
queue so that no notification is lost while the broker is down), as JSON in the S3 event format. ``decode_notification``
turns one such record into an ``ObjectCreated`` event with a deterministic header (the event id hashes bucket, key,
ETag and the server's sequencer), so the project's bus consumes it like any other event
(``route(DROP_TOPIC, ObjectCreated, handler, decode=decode_notification)``); a record that is not a notification
is dead-lettered by the bus with the reason.

``configure_drop_bucket`` makes the bucket and points its ``s3:ObjectCreated:*`` notifications at the server's
Kafka target (``arn:minio:sqs::PRIMARY:kafka``); the target itself (brokers, topic, queue folder) is the server's
configuration (``MINIO_NOTIFY_KAFKA_*_PRIMARY``), set by ``deploy/local/minio.sh`` and ``docker-compose.yml``.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import unquote_plus

from minio.notificationconfig import NotificationConfig, QueueConfig

from earthgptx import events
from earthgptx.events import DecodeFailure, EventDecodeError
from earthgptx.store.objects import ObjectStore
from earthgptx.v1.events_pb2 import ObjectCreated

__all__ = [
    "DROP_QUEUE_ARN",
    "DROP_TOPIC",
    "REJECTED_PREFIX",
    "configure_drop_bucket",
    "decode_notification",
    "is_scene_key",
    "sidecar_key",
]

log = logging.getLogger(__name__)

DROP_TOPIC = "scenes.dropped"
"""The topic MinIO's Kafka target publishes the drop bucket's notifications to (the server's setting)."""
DROP_QUEUE_ARN = "arn:minio:sqs::PRIMARY:kafka"
NOTIFICATION_ID = "egx-ingest-drop"
REJECTED_PREFIX = "rejected/"
SIDECAR_SUFFIX = ".json"
REASON_SUFFIX = ".reason.txt"


def sidecar_key(key: str) -> str:
    """Where a dropped scene's sidecar metadata is: ``<key>.json`` beside it."""
    return key + SIDECAR_SUFFIX


def is_scene_key(key: str) -> bool:
    """Whether a key in the drop bucket is a scene to ingest (not a sidecar, nor anything under ``rejected/``)."""
    return not (key.startswith(REJECTED_PREFIX) or key.endswith(SIDECAR_SUFFIX) or key.endswith(REASON_SUFFIX))


def _fail(reason: str) -> EventDecodeError:
    return EventDecodeError(DecodeFailure.NOT_PROTOBUF, f"not an S3 bucket notification: {reason}")


def decode_notification(payload: bytes | None) -> ObjectCreated:
    """One MinIO notification record (JSON) as an ``ObjectCreated``; ``EventDecodeError`` when it is not one."""
    if not payload:
        raise EventDecodeError(DecodeFailure.EMPTY, "empty record where a bucket notification was expected")
    try:
        document: Any = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(f"not JSON ({exc})") from exc
    records = document.get("Records") if isinstance(document, dict) else None
    if not isinstance(records, list) or len(records) != 1 or not isinstance(records[0], dict):
        raise _fail("expected exactly one record in 'Records'")
    record = records[0]
    try:
        s3 = record["s3"]
        bucket = str(s3["bucket"]["name"])
        obj = s3["object"]
        key = unquote_plus(str(obj["key"]))
    except (KeyError, TypeError) as exc:
        raise _fail(f"missing field {exc}") from exc
    metadata = obj.get("userMetadata") or {}
    event = ObjectCreated(
        event_name=str(record.get("eventName", "")),
        bucket=bucket,
        key=key,
        size_bytes=int(obj.get("size") or 0),
        etag=str(obj.get("eTag", "")),
        content_type=str(obj.get("contentType", "")),
        user_metadata={str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else {},
        sequencer=str(obj.get("sequencer", "")),
    )
    event_id = events.deterministic_id("object.created", bucket, key, event.etag, event.sequencer)
    return events.stamp(event, producer="minio", event_id=event_id)


def configure_drop_bucket(objects: ObjectStore, bucket: str) -> None:
    """Create the drop bucket if missing and send its object-created notifications to MinIO's Kafka target."""
    objects.ensure_buckets(bucket)
    config = NotificationConfig(
        queue_config_list=[QueueConfig(events=["s3:ObjectCreated:*"], config_id=NOTIFICATION_ID, queue=DROP_QUEUE_ARN)]
    )
    objects.client.set_bucket_notification(bucket, config)
    log.info("drop bucket %s notifies %s", bucket, DROP_QUEUE_ARN)
