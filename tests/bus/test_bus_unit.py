"""The consumer loop's decode / retry / dead-letter policy, record by record, without a broker.

Only the dead-letter producer is faked here (it records what would be published); everything that needs a
broker (polling, commits, rebalances, processes) is tested in test_bus_kafka.py against the real one.
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any

import pytest
from bus_testkit import TOPIC, FakeRecord, RecordingProducer, fake_record, scene, scene_bytes, unit_loop

from earthgptx.bus import (
    ConsumerLoop,
    ConsumerOptions,
    PermanentError,
    TransientError,
    route,
)
from earthgptx.bus.dead_letter import build_dead_letter, cause_label
from earthgptx.events import encode_event, stamp
from earthgptx.v1.events_pb2 import DeadLetter, DeadLetterCause, ObjectRef, PromptTask, SceneIngested


def record(value: bytes | None, offset: int = 7, key: bytes = b"scene-1") -> FakeRecord:
    return fake_record(value, partition=2, offset=offset, key=key, headers=[("h", b"v")])


def event_bytes(scene_id: str = "s1", **fields: Any) -> bytes:
    return scene_bytes(scene_id, **fields)


def make_loop(handler: Any, dlq: RecordingProducer, **options: Any) -> ConsumerLoop:
    return unit_loop([route(TOPIC, SceneIngested, handler)], dlq, **options)


def only_letter(dlq: RecordingProducer) -> DeadLetter:
    assert len(dlq.published) == 1, dlq.published
    topic, key, letter = dlq.published[0]
    assert (topic, key) == ("dlq.unit", "scene-1")
    return letter


def test_a_good_record_is_decoded_once_and_handled() -> None:
    seen: list[SceneIngested] = []
    dlq = RecordingProducer()
    loop = make_loop(seen.append, dlq)
    assert loop._process_record(record(event_bytes("s1")))
    assert [e.scene_id for e in seen] == ["s1"] and isinstance(seen[0], SceneIngested)
    assert dlq.published == [] and loop.stats.processed == 1


@pytest.mark.parametrize(
    ("value", "cause", "reason"),
    [
        (b"\xff\xff\xff", DeadLetterCause.DEAD_LETTER_CAUSE_DECODE, "is not a valid earthgptx.v1.SceneIngested"),
        (b"\x12\x03abc", DeadLetterCause.DEAD_LETTER_CAUSE_DECODE, "has no header"),
        (None, DeadLetterCause.DEAD_LETTER_CAUSE_EMPTY, "empty record"),
        (
            encode_event(stamp(PromptTask(task_id="t"))),
            DeadLetterCause.DEAD_LETTER_CAUSE_WRONG_TYPE,
            "header says 'earthgptx.v1.PromptTask'",
        ),
    ],
    ids=["not-protobuf", "no-header", "tombstone", "wrong-type"],
)
def test_undecodable_records_are_dead_lettered_without_calling_the_handler(
    value: bytes | None, cause: int, reason: str
) -> None:
    called: list[Any] = []
    dlq = RecordingProducer()
    loop = make_loop(called.append, dlq)
    assert loop._process_record(record(value))
    letter = only_letter(dlq)
    assert called == []
    assert letter.cause == cause and reason in letter.reason
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == (TOPIC, 2, 7)
    assert letter.attempts == 0 and letter.payload == (value or b"")


def test_unknown_schema_version_is_permanent() -> None:
    event = stamp(scene("s1"))
    event.header.schema_version = 2
    dlq = RecordingProducer()
    assert make_loop(lambda e: None, dlq)._process_record(record(encode_event(event)))
    letter = only_letter(dlq)
    assert letter.cause == DeadLetterCause.DEAD_LETTER_CAUSE_SCHEMA_VERSION
    assert letter.reason == "unsupported schema_version 2 (supported: 1)"


def test_oversized_records_are_dead_lettered_before_decoding() -> None:
    value = event_bytes("big", stac_item_json="x" * 5000)
    dlq = RecordingProducer()
    loop = make_loop(lambda e: pytest.fail("handler called"), dlq, max_event_bytes=1000,
                     dead_letter_payload_bytes=2000, dead_letter_preview_bytes=100)
    assert loop._process_record(record(value))
    letter = only_letter(dlq)
    assert letter.cause == DeadLetterCause.DEAD_LETTER_CAUSE_OVERSIZE
    assert letter.reason == f"record of {len(value) + 7 + 2} bytes exceeds max_event_bytes=1000"  # + key, headers
    assert letter.payload == value[:100] and letter.payload_truncated
    assert letter.payload_size == len(value)


def test_a_transient_error_is_retried_in_place_with_the_same_event() -> None:
    seen: list[SceneIngested] = []

    def handler(event: SceneIngested) -> None:
        seen.append(event)
        if len(seen) < 3:
            raise TransientError("MinIO unavailable")

    dlq = RecordingProducer()
    loop = make_loop(handler, dlq)
    assert loop._process_record(record(event_bytes()))
    assert len(seen) == 3 and seen[0] is seen[2], "decoded once, retried with the same object"
    assert (loop.stats.retried, loop.stats.processed, dlq.published) == (2, 1, [])


def test_configured_exception_classes_count_as_transient() -> None:
    calls: list[int] = []

    def handler(event: SceneIngested) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionResetError("db went away")

    dlq = RecordingProducer()
    assert make_loop(handler, dlq)._process_record(record(event_bytes()))
    assert len(calls) == 2 and dlq.published == []


def test_transient_errors_up_to_the_attempt_cap_are_dead_lettered() -> None:
    calls: list[int] = []

    def handler(event: SceneIngested) -> None:
        calls.append(1)
        raise TransientError("Triton timeout")

    dlq = RecordingProducer()
    assert make_loop(handler, dlq, max_attempts=4)._process_record(record(event_bytes()))
    letter = only_letter(dlq)
    assert len(calls) == 4
    assert (letter.cause, letter.attempts, letter.error_type) == (
        DeadLetterCause.DEAD_LETTER_CAUSE_RETRIES_EXHAUSTED, 4, "TransientError"
    )
    assert "still failing after 4 attempts" in letter.reason and "Triton timeout" in letter.reason


def test_permanent_and_unexpected_errors_are_dead_lettered_at_once() -> None:
    def permanent(event: SceneIngested) -> None:
        raise PermanentError("scene has no georeference")

    def buggy(event: SceneIngested) -> None:
        raise KeyError("modality")

    for handler, cause, reason in (
        (permanent, DeadLetterCause.DEAD_LETTER_CAUSE_PERMANENT, "scene has no georeference"),
        (buggy, DeadLetterCause.DEAD_LETTER_CAUSE_UNHANDLED, "KeyError: 'modality'"),
    ):
        dlq = RecordingProducer()
        source = stamp(scene("s1"), trace_id="trace-42")
        assert make_loop(handler, dlq)._process_record(record(encode_event(source)))
        letter = only_letter(dlq)
        assert (letter.cause, letter.reason, letter.attempts) == (cause, reason, 1)
        assert letter.header.trace_id == "trace-42"


def test_stop_interrupts_a_backoff_and_leaves_the_record_undone() -> None:
    calls: list[int] = []

    def handler(event: SceneIngested) -> None:
        calls.append(1)
        raise TransientError("down", retry_after_s=30.0)

    dlq = RecordingProducer()
    loop = make_loop(handler, dlq)
    threading.Timer(0.2, loop.stop).start()
    started = time.monotonic()
    assert not loop._process_record(record(event_bytes()))
    assert time.monotonic() - started < 5, "the 30 s backoff was not interrupted"
    assert len(calls) == 1 and dlq.published == []


def test_a_dead_letter_is_retried_until_the_broker_acknowledges_it() -> None:
    dlq = RecordingProducer(failures=2)
    assert make_loop(lambda e: None, dlq)._process_record(record(b"\xff\xff"))
    assert len(dlq.published) == 1 and dlq.failures == 0


def test_a_dead_letter_the_broker_refuses_as_too_large_is_sent_without_payload() -> None:
    value = b"\xff" + b"x" * 3000
    dlq = RecordingProducer(max_bytes=1000)
    assert make_loop(lambda e: None, dlq)._process_record(record(value))
    letter = only_letter(dlq)
    assert letter.cause == DeadLetterCause.DEAD_LETTER_CAUSE_DECODE
    assert letter.payload == b"" and letter.payload_truncated and letter.payload_size == len(value)
    assert (letter.source_topic, letter.source_offset) == (TOPIC, 7)
    assert "dropped: the dead letter was too large" in letter.reason


def test_dead_letter_headers_and_key_are_capped() -> None:
    big = FakeRecord(TOPIC, 0, 1, -1, b"k" * 500, b"v", [("a", b"1" * 300), ("b", b"2" * 300), ("c", b"3")])
    letter = build_dead_letter(big, cause=DeadLetterCause.DEAD_LETTER_CAUSE_DECODE, reason="r", group_id="g",
                               expected_type="t", max_payload_bytes=400, preview_bytes=200)
    assert letter.source_key == b"k" * 200
    assert [(h.key, h.value) for h in letter.source_headers] == [("a", b"1" * 200)]
    assert not letter.HasField("source_timestamp")


def test_backoff_grows_exponentially_up_to_the_cap_with_bounded_jitter() -> None:
    options = ConsumerOptions(backoff_initial_s=0.5, backoff_multiplier=2.0, backoff_max_s=4.0, backoff_jitter=0.2)
    for attempt, nominal in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0)]:
        delays = [options.backoff_s(attempt) for _ in range(50)]
        assert all(nominal * 0.8 <= d <= nominal for d in delays), (attempt, min(delays), max(delays))


def test_dead_letter_claims_large_payloads_and_has_a_deterministic_id() -> None:
    value = b"p" * 5000
    claimed: list[bytes] = []

    def claim(source: Any, payload: bytes) -> ObjectRef:
        claimed.append(payload)
        return ObjectRef(bucket="dead-letters", key=f"{source.topic}/{source.offset}", size_bytes=len(payload))

    letters = [
        build_dead_letter(
            record(value), cause=DeadLetterCause.DEAD_LETTER_CAUSE_OVERSIZE, reason="too big", group_id="g",
            expected_type="earthgptx.v1.SceneIngested", max_payload_bytes=1000, preview_bytes=10, claim_store=claim,
        )
        for _ in range(2)
    ]
    letter = letters[0]
    assert claimed == [value, value]
    assert (letter.payload_claim.bucket, letter.payload_claim.key) == ("dead-letters", f"{TOPIC}/7")
    assert letter.payload == value[:10] and letter.payload_truncated
    assert letter.payload_sha256 == hashlib.sha256(value).hexdigest()
    assert letter.source_timestamp.ToMilliseconds() == 1_700_000_000_000
    assert letters[0].header.event_id == letters[1].header.event_id, "same record, same dead-letter id"
    assert cause_label(letter.cause) == "oversize"


def test_routes_must_be_unique_and_non_empty() -> None:
    with pytest.raises(ValueError, match="at least one route"):
        ConsumerLoop("g", [])
    with pytest.raises(ValueError, match="one route only"):
        ConsumerLoop("g", [route(TOPIC, SceneIngested, print), route(TOPIC, SceneIngested, print)])


def test_the_producers_partitioner_picks_the_partition_kafka_pythons_default_picks() -> None:
    """``KeyHashPartitioner`` remembers key hashes; a scene's events must land where the Java client and
    kafka-python's default put them, whatever the partition count, keyless events included."""
    from kafka.partitioner.default import DefaultPartitioner

    from earthgptx.bus.producer import KeyHashPartitioner

    class Cluster:
        def __init__(self, count: int) -> None:
            self.count = count

        def topics(self) -> set[str]:
            return {"t"}

        def partitions_for_topic(self, topic: str) -> set[int] | None:
            return set(range(self.count)) if topic == "t" else None

        def available_partitions_for_topic(self, topic: str) -> set[int]:
            return set(range(self.count))

    ours, default = KeyHashPartitioner(max_keys=50), DefaultPartitioner()
    keys = [f"scene-{i:05d}".encode() for i in range(200)] + [b"", b"\xff" * 37]
    for count in (1, 3, 12):
        cluster = Cluster(count)
        for key in keys * 2:  # the second round is answered from the remembered hashes (and after evictions)
            assert ours.partition("t", key, key, None, None, cluster) == default.partition("t", key, key, None, None,
                                                                                           cluster)
        assert ours.partition("t", None, None, None, None, cluster) in range(count)
    with pytest.raises(ValueError, match="not found"):
        ours.partition("unknown", b"k", b"k", None, None, Cluster(3))
