"""Idempotent event producer (acks=all) over kafka-python.

``publish`` stamps the header, encodes once and hands the record to kafka-python's background sender; it returns
the kafka-python future. ``publish_and_wait`` (or ``flush``) is for callers whose next step depends on the event
being durable, e.g. a consumer that must not commit its input before its output is acknowledged; ``wait``
resolves many futures at once (one flush per batch).

A refused record is a failure of that record, never of the process: the caller gets ``EventTooLargeError``
(permanent, with the broker's reason) or ``PublishError`` (the broker did not answer: an outage). kafka-python's
idempotent producer enters a fatal state after some refusals (a topic whose ``max.message.bytes`` is below the
client's limit is one) and then fails every later send; ``EventProducer`` notices and replaces it with a fresh
one, so the next record (or its dead letter) goes through.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

from google.protobuf.message import Message
from kafka import KafkaProducer
from kafka.errors import KafkaError, MessageSizeTooLargeError
from kafka.partitioner.default import DefaultPartitioner, murmur2
from kafka.producer.future import FutureRecordMetadata, RecordMetadata

from earthgptx.bus import metrics
from earthgptx.bus.errors import EventTooLargeError, PublishError
from earthgptx.events import encode_event, stamp
from earthgptx.settings import KafkaSettings

log = logging.getLogger(__name__)

# Durability and ordering: acks from all in-sync replicas, idempotence so that the producer's own retries never
# duplicate or reorder a partition (kafka-python requires <= 5 requests in flight for that).
PRODUCER_DEFAULTS: Mapping[str, Any] = {
    "acks": "all",
    "enable_idempotence": True,
    "max_in_flight_requests_per_connection": 5,
    "linger_ms": 5,
    "retry_backoff_ms": 100,
    "delivery_timeout_ms": 120_000,
    "request_timeout_ms": 30_000,
    "max_block_ms": 15_000,
    # kafka-python's default climbs to 30 s between reconnects: a broker restart would cost half a minute.
    "reconnect_backoff_ms": 50,
    "reconnect_backoff_max_ms": 1000,
}


class KeyHashPartitioner(DefaultPartitioner):
    """kafka-python's default partitioner (murmur2 of the key, as the Java client), remembering each key's hash.

    kafka-python hashes in pure Python, about 5 µs a key; a scene's events (tasks, results) share their key, so
    the result store's batches hash the same few keys thousands of times. The partition chosen is unchanged.
    """

    def __init__(self, max_keys: int = 4096) -> None:
        self._hashes: dict[bytes, int] = {}
        self._max_keys = max_keys

    def partition(self, topic: str, key: Any, serialized_key: bytes | None, value: Any, serialized_value: Any,
                  cluster: Any) -> int:
        partitions = cluster.partitions_for_topic(topic) if serialized_key is not None else None
        if not partitions:  # no key, or a topic not known yet: as the default partitioner (which names the error)
            return int(super().partition(topic, key, serialized_key, value, serialized_value, cluster))
        assert serialized_key is not None
        hashed = self._hashes.get(serialized_key)
        if hashed is None:
            if len(self._hashes) >= self._max_keys:
                self._hashes.clear()
            hashed = self._hashes[serialized_key] = murmur2(serialized_key) & 0x7FFFFFFF
        ordered = sorted(partitions)
        return int(ordered[hashed % len(ordered)])


def producer_config(settings: KafkaSettings, client_id: str, **overrides: Any) -> dict[str, Any]:
    """The kafka-python ``KafkaProducer`` configuration used by the bus (also used by the benchmark baseline)."""
    config: dict[str, Any] = {
        **PRODUCER_DEFAULTS,
        "bootstrap_servers": settings.bootstrap.split(","),
        "client_id": client_id,
        "max_request_size": max(settings.max_message_bytes + 64 * 1024, 1_048_576),
        # Topics are created explicitly; a typo in a topic name must fail, not create a topic.
        "allow_auto_create_topics": False,
        "partitioner": KeyHashPartitioner(),
    }
    config.update(overrides)
    return config


class EventProducer:
    """Publishes protobuf events; key = scene id so that one scene's events stay ordered."""

    def __init__(
        self,
        settings: KafkaSettings | None = None,
        *,
        client_id: str = "egx-producer",
        producer_name: str = "",
        max_event_bytes: int | None = None,
        **overrides: Any,
    ) -> None:
        self.settings = settings or KafkaSettings()
        self.producer_name = producer_name or client_id
        self.max_event_bytes = max_event_bytes or self.settings.max_message_bytes
        self._config = producer_config(self.settings, client_id, **overrides)
        self._producer = KafkaProducer(**self._config)
        self._replace_lock = threading.Lock()
        self.replacements = 0
        self._published: dict[str, Any] = {}

    def publish(
        self,
        topic: str,
        key: str,
        message: Message,
        *,
        headers: Iterable[tuple[str, bytes]] = (),
        trace_id: str = "",
    ) -> FutureRecordMetadata:
        """Stamp, encode and send ``message``; returns the future of its acknowledgement.

        Raises ``EventTooLargeError`` (permanent) before sending anything larger than ``max_event_bytes``.
        """
        stamp(message, producer=self.producer_name, trace_id=trace_id)
        payload = encode_event(message)
        if len(payload) > self.max_event_bytes:
            raise EventTooLargeError(
                f"{message.DESCRIPTOR.full_name} of {len(payload)} bytes exceeds max_event_bytes="
                f"{self.max_event_bytes}; events carry object keys, never images"
            )
        return self.send_raw(topic, key.encode() if key else None, payload, headers=list(headers))

    def send_raw(
        self, topic: str, key: bytes | None, value: bytes | None, *, headers: list[tuple[str, bytes]] | None = None
    ) -> FutureRecordMetadata:
        """Send already-encoded bytes (dead letters, replays, tests of bad input)."""
        counter = self._published.get(topic)
        if counter is None:
            counter = self._published[topic] = metrics.EVENTS_PUBLISHED.labels(topic)
        producer = self._producer
        try:
            future = producer.send(topic, value=value, key=key, headers=headers or [])
        except MessageSizeTooLargeError as exc:
            raise EventTooLargeError(f"record for {topic} refused by the producer: {exc}") from exc
        except KafkaError as exc:
            self._replace_if_failed(producer)
            raise PublishError(f"could not send to {topic}: {exc!r}") from exc
        counter.inc()
        return future

    def publish_and_wait(self, topic: str, key: str, message: Message, *, timeout_s: float = 30.0) -> RecordMetadata:
        """``publish`` and block until the broker acknowledged (acks=all). Raises ``PublishError`` if not."""
        producer = self._producer
        try:
            return wait_for(self.publish(topic, key, message), timeout_s=timeout_s)
        except (PublishError, EventTooLargeError):
            self._replace_if_failed(producer)
            raise

    def wait(
        self, futures: Sequence[FutureRecordMetadata], *, timeout_s: float = 30.0
    ) -> list[RecordMetadata | EventTooLargeError | PublishError]:
        """Flush and resolve ``futures``: each one's metadata, or the bus error it failed with (in order)."""
        producer = self._producer
        try:
            producer.flush(timeout=timeout_s)
        except KafkaError as exc:
            log.warning("flush did not complete: %r", exc)
        outcomes: list[RecordMetadata | EventTooLargeError | PublishError] = []
        for future in futures:
            try:
                outcomes.append(wait_for(future, timeout_s=timeout_s if not future.is_done else 0.0))
            except (PublishError, EventTooLargeError) as exc:
                outcomes.append(exc)
        if any(not isinstance(o, RecordMetadata) for o in outcomes):
            self._replace_if_failed(producer)
        return outcomes

    def flush(self, timeout_s: float | None = 30.0) -> None:
        """Block until every record sent so far is acknowledged or failed."""
        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaError as exc:
            raise PublishError(f"flush did not complete: {exc!r}") from exc

    @property
    def failed(self) -> bool:
        """True when the underlying producer can no longer send (it is replaced on the next failure seen)."""
        return _has_fatal_error(self._producer)

    def _replace_if_failed(self, producer: KafkaProducer) -> None:
        """Replace ``producer`` by a fresh one if it entered kafka-python's fatal state (thread-safe, once)."""
        if not _has_fatal_error(producer):
            return
        with self._replace_lock:
            if self._producer is not producer:
                return  # another thread replaced it already
            log.warning("producer %s failed for good (%r); replacing it", self.producer_name,
                        getattr(producer._transaction_manager, "last_error", None))
            self._producer = KafkaProducer(**self._config)
            self.replacements += 1
        try:
            producer.close(timeout=0)
        except Exception:  # closing a failed producer must not hide the replacement
            log.debug("closing the failed producer raised", exc_info=True)

    def close(self, timeout_s: float | None = 30.0) -> None:
        self._producer.close(timeout=timeout_s)

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _has_fatal_error(producer: KafkaProducer) -> bool:
    # kafka-python keeps the idempotence state in its (private) transaction manager; without idempotence there is
    # no such state and no fatal error of this kind.
    manager = getattr(producer, "_transaction_manager", None)
    return bool(manager is not None and manager.has_fatal_error())


def wait_for(future: FutureRecordMetadata, *, timeout_s: float = 30.0) -> RecordMetadata:
    """Resolve a send future, turning kafka-python errors into bus errors."""
    try:
        return future.get(timeout=timeout_s)
    except MessageSizeTooLargeError as exc:
        raise EventTooLargeError(f"record refused by the broker: {exc}") from exc
    except KafkaError as exc:
        raise PublishError(f"record not acknowledged: {exc!r}") from exc
