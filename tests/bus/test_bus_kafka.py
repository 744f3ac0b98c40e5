"""The bus against the real broker of the local stack (``make up``): delivery, dead letters, crashes, shutdown."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from bus_testkit import (
    SceneSink,
    committed_offsets,
    dead_letters,
    fast_options,
    read_topic,
    record_count,
    run_loop,
    scene,
    wait_until,
)
from kafka import KafkaAdminClient, TopicPartition

from earthgptx.bus import (
    ConsumerLoop,
    EventProducer,
    EventTooLargeError,
    PermanentError,
    TransientError,
    ensure_topics,
    ensure_topics_from_settings,
    route,
)
from earthgptx.events import SCHEMA_VERSION, decode_event
from earthgptx.settings import KafkaSettings
from earthgptx.v1.events_pb2 import DeadLetterCause, SceneIngested

pytestmark = pytest.mark.kafka

CONSUMER_PROCESS = Path(__file__).with_name("consumer_process.py")


def only_partition(offsets: dict[TopicPartition, int], topic: str) -> int:
    ours = {tp: off for tp, off in offsets.items() if tp.topic == topic}
    assert len(ours) == 1, f"expected one committed partition of {topic}, got {ours}"
    return next(iter(ours.values()))


def test_ensure_topics_is_idempotent(
    kafka_settings: KafkaSettings, unique_name: str, new_topic: Callable[[str], str]  # new_topic: for cleanup
) -> None:
    names = [f"test.ensure-a.{unique_name}", f"test.ensure-b.{unique_name}"]
    admin = KafkaAdminClient(bootstrap_servers=kafka_settings.bootstrap.split(","))
    try:
        assert ensure_topics(admin, names, partitions=2, replication=1) == sorted(names)
        assert ensure_topics(admin, names, partitions=2, replication=1) == []
        described = {t["name"]: len(t["partitions"]) for t in admin.describe_topics(names)}
    finally:
        admin.close()
    assert described == {names[0]: 2, names[1]: 2}


def test_a_consumer_of_a_missing_topic_fails_fast(kafka_settings: KafkaSettings, unique_name: str) -> None:
    options = fast_options(topic_wait_s=1.0)
    loop = ConsumerLoop(f"missing-{unique_name}", [route(f"test.missing.{unique_name}", SceneIngested, print)],
                        kafka_settings, options)
    with pytest.raises(RuntimeError, match="do not exist"):
        loop.run(handle_signals=False)
    with pytest.raises(RuntimeError, match="already run"):
        loop.run(handle_signals=False)


def test_producer_stamps_keys_and_refuses_oversized_events(
    kafka_settings: KafkaSettings, new_topic: Callable[[str], str]
) -> None:
    topic = new_topic("produce")
    with EventProducer(kafka_settings, producer_name="ingest", max_event_bytes=2048) as producer:
        # kafka-python silently turns idempotence off when other settings conflict with it: check what it runs.
        effective = producer._producer.config
        assert effective["enable_idempotence"] is True and effective["acks"] == -1
        first = producer.publish_and_wait(topic, "scene-a", scene("scene-a"))
        again = producer.publish_and_wait(topic, "scene-a", scene("scene-a-2"))
        with pytest.raises(EventTooLargeError, match="exceeds max_event_bytes=2048"):
            producer.publish(topic, "scene-a", scene("big", stac_item_json="x" * 4096))
    # Same key, same partition: one scene's events stay ordered.
    assert first.partition == again.partition and again.offset == first.offset + 1
    records = read_topic(kafka_settings, topic, 2)
    assert [r.key for r in records] == [b"scene-a", b"scene-a"]
    event = decode_event(SceneIngested, records[0].value)
    assert event.scene_id == "scene-a"
    assert event.header.schema_version == SCHEMA_VERSION
    assert event.header.event_type == "earthgptx.v1.SceneIngested"
    assert event.header.producer == "ingest" and event.header.event_id


def test_transient_error_once_is_retried_and_succeeds(
    kafka_settings: KafkaSettings, new_topic: Callable[[str], str], unique_name: str
) -> None:
    topic, group = new_topic("transient"), f"transient-{unique_name}"
    with EventProducer(kafka_settings) as producer:
        for scene_id in ("s0", "s1", "s2"):
            producer.publish(topic, "scene", scene(scene_id))
    calls: list[str] = []

    def on_scene(event: SceneIngested) -> None:
        calls.append(event.scene_id)
        if event.scene_id == "s1" and calls.count("s1") == 1:
            raise TransientError("PostGIS is restarting")

    loop = ConsumerLoop(group, [route(topic, SceneIngested, on_scene)], kafka_settings, fast_options())
    run_loop(loop, lambda: loop.stats.processed == 3)

    # Retried in place: neither lost nor skipped nor reordered.
    assert calls == ["s0", "s1", "s1", "s2"]
    assert (loop.stats.retried, loop.stats.dead_lettered) == (1, 0)
    assert record_count(kafka_settings, f"dlq.{group}") == 0
    assert only_partition(committed_offsets(kafka_settings, group), topic) == 3


def test_bad_input_goes_to_the_dead_letter_topic_and_nothing_else_is_lost(
    kafka_settings: KafkaSettings, new_topic: Callable[[str], str], unique_name: str
) -> None:
    topic, group = new_topic("bad-input"), f"bad-input-{unique_name}"
    not_protobuf = b"\xff\xfe this is not a protobuf message"
    future_version = scene("v99")
    future_version.header.schema_version = 99
    oversized = scene("huge", stac_item_json="x" * 200_000)
    with EventProducer(kafka_settings) as producer:
        producer.publish(topic, "scene", scene("ok-0"))
        producer.send_raw(topic, b"scene", not_protobuf, headers=[("origin", b"fuzzer")])
        producer.publish(topic, "scene", scene("ok-1"))
        producer.publish(topic, "scene", future_version)
        producer.publish(topic, "scene", scene("ok-2"))
        producer.publish(topic, "scene", oversized)
        producer.publish(topic, "scene", scene("ok-3"))
        producer.flush()
    handled: list[str] = []
    options = fast_options(max_event_bytes=64 * 1024, dead_letter_payload_bytes=16 * 1024)
    loop = ConsumerLoop(
        group, [route(topic, SceneIngested, lambda e: handled.append(e.scene_id))], kafka_settings, options
    )
    run_loop(loop, lambda: len(handled) == 4 and loop.stats.dead_lettered == 3)

    assert handled == ["ok-0", "ok-1", "ok-2", "ok-3"]
    letters = dead_letters(kafka_settings, group, 3)
    assert [(d.source_offset, d.cause) for d in letters] == [
        (1, DeadLetterCause.DEAD_LETTER_CAUSE_DECODE),
        (3, DeadLetterCause.DEAD_LETTER_CAUSE_SCHEMA_VERSION),
        (5, DeadLetterCause.DEAD_LETTER_CAUSE_OVERSIZE),
    ]
    malformed, version, big = letters
    assert "is not a valid earthgptx.v1.SceneIngested protobuf" in malformed.reason
    assert malformed.payload == not_protobuf and not malformed.payload_truncated
    assert [(h.key, h.value) for h in malformed.source_headers] == [("origin", b"fuzzer")]
    assert version.reason == f"unsupported schema_version 99 (supported: {SCHEMA_VERSION})"
    assert SceneIngested.FromString(version.payload).scene_id == "v99"
    oversized_bytes = oversized.SerializeToString()
    assert "exceeds max_event_bytes=65536" in big.reason
    assert big.payload_truncated and big.payload == oversized_bytes[: len(big.payload)]
    assert big.payload_size == len(oversized_bytes)
    assert big.payload_sha256 == hashlib.sha256(oversized_bytes).hexdigest()
    for letter in letters:
        assert (letter.source_topic, letter.source_partition, letter.source_key) == (
            topic, malformed.source_partition, b"scene"
        )
        assert letter.consumer_group == group and letter.attempts == 0
        assert letter.expected_type == "earthgptx.v1.SceneIngested"
    assert only_partition(committed_offsets(kafka_settings, group), topic) == 7


def test_handler_errors_are_dead_lettered_with_attempt_counts(
    kafka_settings: KafkaSettings, new_topic: Callable[[str], str], unique_name: str
) -> None:
    topic, group = new_topic("handler-errors"), f"handler-errors-{unique_name}"
    with EventProducer(kafka_settings) as producer:
        for scene_id in ("invalid-geometry", "triton-down", "ok"):
            producer.publish(topic, "scene", scene(scene_id))
    calls: list[str] = []

    def on_scene(event: SceneIngested) -> None:
        calls.append(event.scene_id)
        if event.scene_id == "invalid-geometry":
            raise PermanentError("footprint is not a valid polygon")
        if event.scene_id == "triton-down":
            raise TransientError("Triton unavailable")

    loop = ConsumerLoop(group, [route(topic, SceneIngested, on_scene)], kafka_settings, fast_options(max_attempts=3))
    run_loop(loop, lambda: loop.stats.processed == 1 and loop.stats.dead_lettered == 2)

    assert calls == ["invalid-geometry", "triton-down", "triton-down", "triton-down", "ok"]
    permanent, exhausted = dead_letters(kafka_settings, group, 2)
    assert (permanent.cause, permanent.attempts, permanent.error_type) == (
        DeadLetterCause.DEAD_LETTER_CAUSE_PERMANENT, 1, "PermanentError"
    )
    assert permanent.reason == "footprint is not a valid polygon"
    assert (exhausted.cause, exhausted.attempts) == (DeadLetterCause.DEAD_LETTER_CAUSE_RETRIES_EXHAUSTED, 3)
    assert "Triton unavailable" in exhausted.reason
    # The dead letter carries the original event, trace id included, ready to be replayed.
    original = SceneIngested.FromString(exhausted.payload)
    assert original.scene_id == "triton-down" and exhausted.header.trace_id == original.header.trace_id


def test_slow_handler_does_not_cause_a_rebalance(
    kafka_settings: KafkaSettings, new_topic: Callable[[str], str], unique_name: str
) -> None:
    topic, group = new_topic("slow"), f"slow-{unique_name}"
    with EventProducer(kafka_settings) as producer:
        producer.publish(topic, "scene", scene("slow"))
        producer.publish(topic, "scene", scene("fast"))
    calls: list[str] = []

    def on_scene(event: SceneIngested) -> None:
        calls.append(event.scene_id)
        if event.scene_id == "slow":
            time.sleep(4.0)  # well past max_poll_interval_ms below

    options = fast_options(consumer_overrides={"max_poll_interval_ms": 1500})
    loop = ConsumerLoop(group, [route(topic, SceneIngested, on_scene)], kafka_settings, options)
    run_loop(loop, lambda: loop.stats.processed == 2)

    assert calls == ["slow", "fast"]
    assert (loop.stats.assignments, loop.stats.revocations) == (1, 0)
    assert only_partition(committed_offsets(kafka_settings, group), topic) == 2


def _start_consumer(mode: str, topic: str, group: str, workdir: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(CONSUMER_PROCESS), mode, topic, group, str(workdir)],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.DEVNULL,
        stderr=open(workdir / f"{mode}.log", "ab"),  # noqa: SIM115 - closed with the process
    )


def _finish(process: subprocess.Popen[bytes], workdir: Path, mode: str, timeout_s: float = 40) -> int:
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        log = (workdir / f"{mode}.log").read_text(errors="replace")[-3000:]
        raise AssertionError(f"consumer process ({mode}) did not exit; log tail:\n{log}") from None


def test_consumer_killed_before_commit_redelivers_and_the_store_keeps_one_row(
    kafka_settings: KafkaSettings, new_topic: Callable[[str], str], unique_name: str, tmp_path: Path
) -> None:
    topic, group = new_topic("crash"), f"crash-{unique_name}"
    with EventProducer(kafka_settings) as producer:
        producer.publish_and_wait(topic, "scene-1", scene("scene-1"))

    crashed = _start_consumer("crash", topic, group, tmp_path)
    assert _finish(crashed, tmp_path, "crash") == -signal.SIGKILL
    sink = SceneSink(tmp_path / "sink.sqlite")
    assert len(sink.deliveries()) == 1
    assert committed_offsets(kafka_settings, group) == {}, "nothing may be committed before the crash"

    restarted = _start_consumer("store", topic, group, tmp_path)
    try:
        wait_until(lambda: len(sink.deliveries()) >= 2, 40, "the redelivery")
        wait_until(lambda: committed_offsets(kafka_settings, group) != {}, 20, "the commit after redelivery")
    finally:
        restarted.send_signal(signal.SIGTERM)
        assert _finish(restarted, tmp_path, "store") == 0

    deliveries = sink.deliveries()
    assert len(deliveries) == 2 and deliveries[0][0] == deliveries[1][0], "the same event, delivered twice"
    assert deliveries[0][1] != deliveries[1][1], "by two different processes"
    assert [scene_id for _, scene_id in sink.rows()] == ["scene-1"]
    assert only_partition(committed_offsets(kafka_settings, group), topic) == 1


def test_sigterm_finishes_in_flight_work_commits_and_exits(
    kafka_settings: KafkaSettings, new_topic: Callable[[str], str], unique_name: str, tmp_path: Path
) -> None:
    topic, group = new_topic("sigterm"), f"sigterm-{unique_name}"
    with EventProducer(kafka_settings) as producer:
        for scene_id in ("a", "b", "c"):
            producer.publish(topic, "scene", scene(scene_id))

    process = _start_consumer("slow", topic, group, tmp_path)
    try:
        wait_until(lambda: (tmp_path / "started.a").exists(), 40, "the first handler to start")
    except AssertionError:
        process.kill()
        raise
    process.send_signal(signal.SIGTERM)
    assert _finish(process, tmp_path, "slow") == 0

    assert (tmp_path / "finished.a").exists(), "the in-flight handler was not allowed to finish"
    assert not (tmp_path / "started.b").exists(), "no new record may start after SIGTERM"
    assert only_partition(committed_offsets(kafka_settings, group), topic) == 1
    assert "processed=1" in (tmp_path / "stats").read_text()

    # Nothing lost: the next member of the group carries on with b and c, and does not redo a.
    handled: list[str] = []
    loop = ConsumerLoop(
        group, [route(topic, SceneIngested, lambda e: handled.append(e.scene_id))], kafka_settings, fast_options()
    )
    run_loop(loop, lambda: len(handled) == 2)
    assert handled == ["b", "c"]



def test_a_rebalance_during_a_slow_handler_loses_nothing(
    kafka_settings: KafkaSettings, new_topic: Callable[[str], str], unique_name: str
) -> None:
    topic, group = new_topic("rebalance"), f"rebalance-{unique_name}"
    ids = [f"scene-{i}" for i in range(12)]
    with EventProducer(kafka_settings) as producer:
        for scene_id in ids:
            producer.publish(topic, scene_id, scene(scene_id))
    handled: list[tuple[str, str]] = []
    first_started = threading.Event()

    def handler_of(member: str) -> Callable[[SceneIngested], None]:
        def on_scene(event: SceneIngested) -> None:
            if not first_started.is_set():
                first_started.set()
                time.sleep(3.0)  # the second member joins meanwhile
            handled.append((member, event.scene_id))

        return on_scene

    loops = {
        name: ConsumerLoop(group, [route(topic, SceneIngested, handler_of(name))], kafka_settings, fast_options(),
                           client_id=f"{group}-{name}")
        for name in ("a", "b")
    }
    ensure_topics_from_settings(kafka_settings, loops["a"].topics)
    threads = {name: threading.Thread(target=loop.run, daemon=True) for name, loop in loops.items()}
    threads["a"].start()
    try:
        wait_until(first_started.is_set, 20, "member a to start its first record")
        threads["b"].start()
        wait_until(lambda: {s for _, s in handled} == set(ids), 30, "every scene to be handled")
        wait_until(lambda: sum(committed_offsets(kafka_settings, group).values()) == len(ids), 20,
                   "the commits of both members")
    finally:
        for loop in loops.values():
            loop.stop()
        for thread in threads.values():
            thread.join(timeout=30)

    assert loops["a"].stats.revocations >= 1, "the test needs a rebalance while a handler was running"
    assert loops["b"].stats.processed >= 1, "the second member got partitions"
    counts = {scene_id: [s for _, s in handled].count(scene_id) for scene_id in ids}
    # At least once: only a record in a handler while its partition moved may be handled twice.
    assert all(1 <= n <= 2 for n in counts.values()), counts
    assert sum(n - 1 for n in counts.values()) <= 1, counts
