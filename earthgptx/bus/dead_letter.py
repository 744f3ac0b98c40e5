"""Building dead letters: everything needed to inspect and replay a record a consumer group gave up on."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, Protocol

from google.protobuf import empty_pb2
from google.protobuf.message import DecodeError
from google.protobuf.unknown_fields import UnknownFieldSet

from earthgptx.events import DecodeFailure, deterministic_id, stamp
from earthgptx.v1.events_pb2 import DeadLetter, DeadLetterCause, EventHeader, ObjectRef, RecordHeader


class SourceRecord(Protocol):
    """The parts of a kafka-python ``ConsumerRecord`` a dead letter keeps."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: Any


ClaimStore = Callable[[SourceRecord, bytes], ObjectRef]
"""Stores a payload too large for a dead letter somewhere durable (e.g. MinIO) and returns where."""

CAUSE_OF_DECODE_FAILURE: dict[DecodeFailure, DeadLetterCause] = {
    DecodeFailure.EMPTY: DeadLetterCause.DEAD_LETTER_CAUSE_EMPTY,
    DecodeFailure.NOT_PROTOBUF: DeadLetterCause.DEAD_LETTER_CAUSE_DECODE,
    DecodeFailure.NO_HEADER: DeadLetterCause.DEAD_LETTER_CAUSE_DECODE,
    DecodeFailure.SCHEMA_VERSION: DeadLetterCause.DEAD_LETTER_CAUSE_SCHEMA_VERSION,
    DecodeFailure.WRONG_TYPE: DeadLetterCause.DEAD_LETTER_CAUSE_WRONG_TYPE,
}


def declared_event_type(payload: bytes | None) -> str:
    """The ``event_type`` the header of any platform event declares (field 1 of every event), or "".

    Used when a payload does not parse as the topic's message type: another event type (its header says which)
    is a wrong-type record, not garbage.
    """
    if not payload:
        return ""
    try:
        envelope = empty_pb2.Empty()
        envelope.ParseFromString(payload)
        for field in UnknownFieldSet(envelope):
            if field.field_number == 1 and field.wire_type == 2:
                return EventHeader.FromString(field.data).event_type
    except (DecodeError, TypeError, ValueError):
        return ""
    return ""


def cause_label(cause: DeadLetterCause) -> str:
    """``DEAD_LETTER_CAUSE_OVERSIZE`` -> ``oversize`` (metrics labels, logs)."""
    return DeadLetterCause.Name(cause).removeprefix("DEAD_LETTER_CAUSE_").lower()


def record_size(record: SourceRecord) -> int:
    """Bytes of key, value and headers: what a consumer holds in memory for this record."""
    headers = sum(len(k) + len(v or b"") for k, v in (record.headers or []))
    return len(record.value or b"") + len(record.key or b"") + headers


def stripped(letter: DeadLetter) -> DeadLetter:
    """The dead letter without payload, key and headers: what is left when even the capped letter is refused.

    It still names the source topic, partition and offset, from which the record can be read again while the
    topic's retention keeps it.
    """
    smaller = DeadLetter()
    smaller.CopyFrom(letter)
    smaller.ClearField("payload")
    smaller.ClearField("source_key")
    smaller.ClearField("source_headers")
    smaller.payload_truncated = True
    smaller.reason = f"{letter.reason} [payload, key and headers dropped: the dead letter was too large]"
    return smaller


def build_dead_letter(
    record: SourceRecord,
    *,
    cause: DeadLetterCause,
    reason: str,
    group_id: str,
    expected_type: str,
    attempts: int = 0,
    error: BaseException | None = None,
    max_payload_bytes: int = 64 * 1024,
    preview_bytes: int = 4096,
    claim_store: ClaimStore | None = None,
    trace_id: str = "",
) -> DeadLetter:
    """A stamped ``DeadLetter`` for ``record``.

    The payload is copied whole when it fits in ``max_payload_bytes``; otherwise it is stored through
    ``claim_store`` when there is one (claim check, as for images), and in any case its first ``preview_bytes``
    are kept with ``payload_truncated`` set, together with its size and SHA-256, so the dead letter itself always
    stays small enough for the broker. Key and header values are cut to ``preview_bytes`` each, and headers stop
    once they add up to ``max_payload_bytes``, for the same reason.
    """
    value = bytes(record.value or b"")
    headers: list[RecordHeader] = []
    header_bytes = 0
    for key, header_value in record.headers or []:
        kept = bytes(header_value or b"")[:preview_bytes]
        header_bytes += len(key) + len(kept)
        if header_bytes > max_payload_bytes:
            break
        headers.append(RecordHeader(key=key[:preview_bytes], value=kept))
    letter = DeadLetter(
        cause=cause,
        reason=reason,
        error_type=type(error).__name__ if error is not None else "",
        consumer_group=group_id,
        source_topic=record.topic,
        source_partition=record.partition,
        source_offset=record.offset,
        source_key=bytes(record.key or b"")[:preview_bytes],
        source_headers=headers,
        payload_size=len(value),
        payload_sha256=hashlib.sha256(value).hexdigest(),
        attempts=attempts,
        expected_type=expected_type,
    )
    if record.timestamp is not None and record.timestamp >= 0:
        letter.source_timestamp.FromMilliseconds(record.timestamp)
    if len(value) <= max_payload_bytes:
        letter.payload = value
    else:
        if claim_store is not None:
            letter.payload_claim.CopyFrom(claim_store(record, value))
        letter.payload = value[:preview_bytes]
        letter.payload_truncated = True
    # Deterministic id: if the consumer dies between the dead letter's ack and its offset commit, the record is
    # dead-lettered again under the same id, so readers of the dead-letter topic can deduplicate.
    event_id = deterministic_id("dead-letter", group_id, record.topic, record.partition, record.offset)
    return stamp(letter, producer=f"consumer:{group_id}", event_id=event_id, trace_id=trace_id)
