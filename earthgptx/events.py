"""Small helpers around the generated event classes (``earthgptx.v1.events_pb2``).

- ``SCHEMA_VERSION``: the version producers write into ``EventHeader.schema_version``; consumers accept the
  versions in ``SUPPORTED_SCHEMA_VERSIONS`` and reject the others (a permanent error, see ``decode_event``).
- Deterministic ids (``deterministic_id``, ``task_id``) so that re-processing an event yields the same rows.
- ``stamp``/``encode_event``/``decode_event``: the one place where events are turned into bytes and back.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import uuid
from collections.abc import Iterable
from typing import TypeVar

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from earthgptx.v1.events_pb2 import (
    DeadLetter,
    EventHeader,
    InferenceResult,
    Level,
    PromptTask,
    ResultStored,
    SceneIngested,
    TileWindow,
    VisualPrompt,
)

__all__ = [
    "SCHEMA_VERSION",
    "SUPPORTED_SCHEMA_VERSIONS",
    "EVENT_TYPES",
    "DecodeFailure",
    "EventDecodeError",
    "deterministic_id",
    "task_id",
    "stamp",
    "encode_event",
    "decode_event",
    "event_type_name",
    "DeadLetter",
    "EventHeader",
    "InferenceResult",
    "PromptTask",
    "ResultStored",
    "SceneIngested",
]

SCHEMA_VERSION = 1
"""Written by every producer. Bump only for an incompatible change of meaning (see proto/earthgptx/v1)."""

SUPPORTED_SCHEMA_VERSIONS: frozenset[int] = frozenset({1})

EVENT_TYPES: tuple[type[Message], ...] = (SceneIngested, PromptTask, InferenceResult, ResultStored, DeadLetter)

# Namespace of every deterministic id of the platform (uuid5 names are hashed under it).
ID_NAMESPACE = uuid.UUID("6f2b1f9e-6d1c-5b7e-9a51-0e1f3a9c2d47")

E = TypeVar("E", bound=Message)


class DecodeFailure(enum.Enum):
    """Why bytes could not become an event; the bus maps each to a ``DeadLetterCause``."""

    EMPTY = "empty"
    NOT_PROTOBUF = "decode"
    NO_HEADER = "no_header"
    SCHEMA_VERSION = "schema_version"
    WRONG_TYPE = "wrong_type"


class EventDecodeError(ValueError):
    """The payload is not an acceptable event of the expected type. Never worth a retry."""

    def __init__(self, failure: DecodeFailure, reason: str) -> None:
        super().__init__(reason)
        self.failure = failure
        self.reason = reason


def event_type_name(message_or_class: Message | type[Message]) -> str:
    """Full protobuf name, e.g. ``earthgptx.v1.SceneIngested``."""
    return str(message_or_class.DESCRIPTOR.full_name)


def deterministic_id(kind: str, *parts: object) -> str:
    """A UUID (text) that depends only on ``kind`` and ``parts``.

    Parts are serialised as canonical JSON (sorted keys, protobuf messages through their JSON mapping), so the
    id is stable across processes, Python versions and protobuf runtimes, unlike ``SerializeToString``, whose
    byte layout protobuf does not promise to keep.
    """
    if all(type(p) is str for p in parts):  # the common case (ids, digests): no mapping to canonicalise
        canonical = json.dumps([kind, *parts], separators=(",", ":"))
    else:
        canonical = json.dumps([kind, *(_canonical(p) for p in parts)], sort_keys=True, separators=(",", ":"))
    return str(uuid.uuid5(ID_NAMESPACE, canonical))


def _canonical(value: object) -> object:
    if isinstance(value, Message):
        return _canonical(json_format.MessageToDict(value, preserving_proto_field_name=True))
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        # 3.0 and 3 name the same pixel; JSON would spell them differently.
        return int(value)
    return value


def task_id(
    scene_id: str,
    tile: TileWindow,
    level: Level,
    task: str,
    prompts: Iterable[VisualPrompt],
    model_version: str,
) -> str:
    """The id of a prompt task (docs/architecture.md, "Ids"): hash of scene, tile, level, task, prompts and model version."""
    return deterministic_id(
        "task", scene_id, tile, Level.Name(level), task, [p for p in prompts], model_version
    )


def stamp(
    message: E,
    *,
    producer: str = "",
    trace_id: str = "",
    event_id: str = "",
    now: dt.datetime | None = None,
) -> E:
    """Fill in the header fields a producer left empty (in place; returns the message for chaining).

    An explicit ``event_id``/``trace_id`` already on the message wins; a missing event id becomes a random UUID
    (pass a deterministic one when re-publishing must not create a new event).
    """
    header: EventHeader = getattr(message, "header")  # noqa: B009 - every event has a header field
    if not header.schema_version:
        header.schema_version = SCHEMA_VERSION
    if not header.event_type:
        header.event_type = event_type_name(message)
    if not header.event_id:
        header.event_id = event_id or str(uuid.uuid4())
    if not header.trace_id:
        header.trace_id = trace_id or header.event_id
    if producer and not header.producer:
        header.producer = producer
    if not header.HasField("produced_at"):
        header.produced_at.FromDatetime(now or dt.datetime.now(dt.UTC))
    return message


def encode_event(message: Message) -> bytes:
    """Serialise an event. The header must be present (``stamp`` it first)."""
    if not message.HasField("header"):  # type: ignore[arg-type]
        raise ValueError(f"{event_type_name(message)} has no header; call earthgptx.events.stamp() first")
    return message.SerializeToString()


def decode_event(message_class: type[E], payload: bytes | None) -> E:
    """Parse ``payload`` as ``message_class`` and check its header. Raises ``EventDecodeError``.

    Unknown fields are kept, not rejected: a newer producer may add fields without a version bump.
    """
    if not payload:
        raise EventDecodeError(
            DecodeFailure.EMPTY, f"empty record where a {event_type_name(message_class)} was expected"
        )
    message = message_class()
    try:
        message.ParseFromString(payload)
    except DecodeError as exc:
        raise EventDecodeError(
            DecodeFailure.NOT_PROTOBUF,
            f"payload of {len(payload)} bytes is not a valid {event_type_name(message_class)} protobuf ({exc})",
        ) from exc
    # The hot path of every consumer: two field reads when the event is good, the diagnosis only when it is not.
    header: EventHeader = message.header  # type: ignore[attr-defined]
    if header.schema_version not in SUPPORTED_SCHEMA_VERSIONS:
        if not message.HasField("header"):  # type: ignore[arg-type]
            # Arbitrary bytes sometimes parse as a message made of unknown fields; the header is what tells.
            raise EventDecodeError(
                DecodeFailure.NO_HEADER,
                f"payload of {len(payload)} bytes parsed as {event_type_name(message_class)} but has no header",
            )
        supported = ", ".join(str(v) for v in sorted(SUPPORTED_SCHEMA_VERSIONS))
        raise EventDecodeError(
            DecodeFailure.SCHEMA_VERSION,
            f"unsupported schema_version {header.schema_version} (supported: {supported})",
        )
    if header.event_type:
        expected = event_type_name(message_class)
        if header.event_type != expected:
            raise EventDecodeError(
                DecodeFailure.WRONG_TYPE, f"header says {header.event_type!r} but this topic carries {expected!r}"
            )
    return message
