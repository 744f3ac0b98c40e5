"""The consumer's pipelined mode (``staged_batch_route`` + ``ConsumerOptions(pipeline=True)``): poll N+1 is decoded
and prepared while poll N is written; offsets are committed only after a poll's write returned.

The unit tests drive the stages without a broker (the dead-letter producer is recorded); the ``kafka`` tests run
the loop against the real broker, and the crash test kills a consumer process in the middle of the pipeline.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from bus_testkit import (
    TOPIC,
    RecordingProducer,
    SceneSink,
    committed_offsets,
    fake_record,
    fast_options,
    run_loop,
    scene,
    scene_bytes,
    unit_loop,
    wait_until,
)
from kafka import TopicPartition

from earthgptx.bus import (
    ConsumerLoop,
    ConsumerOptions,
    DependencyUnavailable,
    EventProducer,
    PermanentError,
    Route,
    TransientError,
    ensure_topics_from_settings,
    staged_batch_route,
)
from earthgptx.settings import KafkaSettings
from earthgptx.v1.events_pb2 import DeadLetterCause, SceneIngested

CONSUMER_PROCESS = Path(__file__).with_name("consumer_process.py")


def _poll(*values: bytes) -> dict[TopicPartition, list[Any]]:
    return {TopicPartition(TOPIC, 0): [fake_record(v, offset=i) for i, v in enumerate(values)]}


# -- the stages, without a broker -------------------------------------------------------------------------


def test_a_staged_route_needs_both_stages_and_the_pipeline_excludes_the_concurrent_mode() -> None:
    with pytest.raises(ValueError, match="staged route"):
        Route(TOPIC, SceneIngested, batch_handler=lambda events: None, prepare=lambda events: events)
    staged = staged_batch_route(TOPIC, SceneIngested, lambda events: list(events), lambda prepared: None)
    with pytest.raises(ValueError, match="exclude each other"):
        ConsumerLoop("unit", [staged], options=ConsumerOptions(pipeline=True, concurrency=4))


def test_a_prepare_that_fails_counts_as_the_first_attempt_and_is_prepared_again() -> None:
    prepares: list[list[str]] = []
    writes: list[list[str]] = []

    def prepare(events: Sequence[SceneIngested]) -> list[str]:
        prepares.append([e.scene_id for e in events])
        if len(prepares) == 1:
            raise TransientError("validation service hiccup")
        return [e.scene_id for e in events]

    dlq = RecordingProducer()
    loop = unit_loop([staged_batch_route(TOPIC, SceneIngested, prepare, writes.append)], dlq, pipeline=True)
    records = _poll(scene_bytes("a"), scene_bytes("b"))
    staged = loop._prepare_poll(records)  # the preparer thread's part
    assert prepares == [["a", "b"]] and writes == []
    loop._process_batch(records, staged)  # the worker's part
    assert prepares == [["a", "b"], ["a", "b"]] and writes == [["a", "b"]]
    assert loop.stats.retried == 1 and loop.stats.processed == 2 and dlq.published == []
    assert loop._progress == {TopicPartition(TOPIC, 0): 2}


def test_the_prepared_batch_is_written_as_it_is_and_nothing_is_marked_done_before_the_write() -> None:
    prepares: list[list[str]] = []
    seen_progress: list[dict[TopicPartition, int]] = []
    loop: ConsumerLoop

    def prepare(events: Sequence[SceneIngested]) -> list[str]:
        prepares.append([e.scene_id for e in events])
        return [e.scene_id for e in events]

    def write(prepared: list[str]) -> None:
        seen_progress.append(dict(loop._progress))

    dlq = RecordingProducer()
    loop = unit_loop([staged_batch_route(TOPIC, SceneIngested, prepare, write)], dlq, pipeline=True)
    records = _poll(b"\xff\xff", scene_bytes("a"), b"\x00\x01", scene_bytes("b"))
    staged = loop._prepare_poll(records)
    # Undecodable records are dead-lettered while preparing, but not marked done before the write.
    assert len(dlq.published) == 2 and loop._progress == {}
    loop._process_batch(records, staged)
    assert prepares == [["a", "b"]], "prepared once: the write used the preparer's result"
    # The leading dead letter may be marked done before the write; nothing after the first good record.
    assert seen_progress == [{TopicPartition(TOPIC, 0): 1}]
    assert loop._progress == {TopicPartition(TOPIC, 0): 4}


def test_a_permanent_failure_of_the_write_splits_the_batch_and_prepares_each_record_alone() -> None:
    written: list[str] = []
    prepares: list[list[str]] = []

    def prepare(events: Sequence[SceneIngested]) -> list[str]:
        prepares.append([e.scene_id for e in events])
        return [e.scene_id for e in events]

    def write(ids: list[str]) -> None:
        if "bad" in ids:
            raise PermanentError("scene bad is not in the database")
        written.extend(ids)

    dlq = RecordingProducer()
    loop = unit_loop([staged_batch_route(TOPIC, SceneIngested, prepare, write)], dlq, pipeline=True)
    records = _poll(scene_bytes("a"), scene_bytes("bad"), scene_bytes("c"))
    loop._process_batch(records, loop._prepare_poll(records))
    assert written == ["a", "c"]
    assert prepares == [["a", "bad", "c"], ["a"], ["bad"], ["c"]]
    [letter] = dlq.letters
    assert letter.cause == DeadLetterCause.DEAD_LETTER_CAUSE_PERMANENT and letter.source_offset == 1
    assert loop._progress == {TopicPartition(TOPIC, 0): 3}


def test_a_partition_lost_and_assigned_again_is_handled_again_not_skipped_as_lost() -> None:
    """Before the fix, a partition lost in one rebalance stayed in ``_lost`` when a later one gave it back with
    nothing in flight, and its records were skipped (never marked done) until the process restarted."""
    written: list[list[str]] = []
    loop = unit_loop([staged_batch_route(TOPIC, SceneIngested, lambda events: [e.scene_id for e in events],
                                         written.append)], RecordingProducer(), pipeline=True)
    tp = TopicPartition(TOPIC, 0)

    class Assignment:  # what the loop asks kafka-python's consumer after a rebalance: which partitions are ours
        def assignment(self) -> set[TopicPartition]:
            return {tp}

    loop._lost = {tp}
    loop._consumer = Assignment()  # type: ignore[assignment]
    loop._forget_lost()
    records = _poll(scene_bytes("a"))
    loop._process_batch(records, loop._prepare_poll(records))
    assert written == [["a"]] and loop._progress == {tp: 1}


# -- against the real broker -------------------------------------------------------------------------------


def _one_partition_topic(settings: KafkaSettings, label: str, unique_name: str) -> str:
    """A topic of one partition (so that the order of all records is the order of one partition); removed by the
    ``new_topic`` fixture's teardown, which deletes every topic carrying ``unique_name``."""
    name = f"test.{label}.{unique_name}"
    ensure_topics_from_settings(settings, [name], partitions=1)
    return name


def _send(settings: KafkaSettings, topic: str, ids: Sequence[str]) -> None:
    with EventProducer(settings) as producer:
        for scene_id in ids:
            producer.publish(topic, "scenes", scene(scene_id))
        producer.flush()


def _committed(settings: KafkaSettings, group: str, topic: str) -> int:
    return committed_offsets(settings, group).get(TopicPartition(topic, 0), 0)


@pytest.mark.kafka
def test_polls_are_written_in_order_each_committed_after_its_write_while_the_next_is_prepared_and_written(
    kafka_settings: KafkaSettings, new_topic: Callable[[str], str], unique_name: str
) -> None:
    topic, group = _one_partition_topic(kafka_settings, "pipeline", unique_name), f"pipeline-{unique_name}"
    ids = [f"s{i:02d}" for i in range(40)]
    _send(kafka_settings, topic, ids)
    clock = time.monotonic
    prepare_started: list[tuple[str, float]] = []
    writes: list[dict[str, Any]] = []

    def prepare(events: Sequence[SceneIngested]) -> list[str]:
        prepare_started.append((events[0].scene_id, clock()))
        return [e.scene_id for e in events]

    def write(batch: list[str]) -> None:
        started = clock()
        committed = _committed(kafka_settings, group, topic)
        time.sleep(0.3)  # a database write, waiting without the GIL
        # The previous poll's offsets are committed while this one is written: wait (bounded) until they are.
        before = sum(len(w["ids"]) for w in writes)
        deadline = clock() + 15
        while (during := _committed(kafka_settings, group, topic)) < before and clock() < deadline:
            time.sleep(0.05)
        writes.append({"ids": batch, "committed_at_start": committed, "committed_during": during,
                       "started": started, "ended": clock()})

    loop = ConsumerLoop(group, [staged_batch_route(topic, SceneIngested, prepare, write)], kafka_settings,
                        fast_options(max_poll_records=10, pipeline=True))
    run_loop(loop, lambda: sum(len(w["ids"]) for w in writes) == len(ids), timeout_s=60)

    assert [i for w in writes for i in w["ids"]] == ids, "every record written once, in offset order"
    # Nothing of poll N is committed before its own write returned; poll N's offsets are committed while poll
    # N+1 is written (before N+1's write, only polls up to N-1 may be committed).
    done, previous = 0, 0
    for w in writes:
        assert done - previous <= w["committed_at_start"] <= done, (w, done)
        assert w["committed_during"] == done, ("poll N not committed while N+1 was written", w, done)
        previous = len(w["ids"])
        done += len(w["ids"])
    assert _committed(kafka_settings, group, topic) == len(ids)
    # The next poll was prepared while the previous one was being written.
    prepared_at = dict(prepare_started)
    overlapped = [w for w, following in zip(writes, writes[1:], strict=False)
                  if prepared_at[following["ids"][0]] < w["ended"]]
    assert overlapped, f"no preparation overlapped a write: {prepare_started} / {writes}"
    assert len(prepare_started) == len(writes), "each poll prepared once"
    assert loop.stats.dead_lettered == 0


@pytest.mark.kafka
def test_an_outage_in_the_write_stage_while_the_next_poll_is_prepared_commits_nothing_early_and_loses_nothing(
    kafka_settings: KafkaSettings, new_topic: Callable[[str], str], unique_name: str
) -> None:
    topic, group = _one_partition_topic(kafka_settings, "pipeout", unique_name), f"pipeout-{unique_name}"
    ids = [f"s{i:02d}" for i in range(30)]
    _send(kafka_settings, topic, ids)
    outage_until: list[float] = []
    during_outage: list[tuple[int, int]] = []  # (committed offset, polls prepared) seen by failing writes
    prepared: list[str] = []
    written: list[str] = []
    readiness: list[bool] = []
    lock = threading.Lock()

    def prepare(events: Sequence[SceneIngested]) -> list[str]:
        with lock:
            prepared.append(events[0].scene_id)
        return [e.scene_id for e in events]

    def write(batch: list[str]) -> None:
        if not outage_until:
            outage_until.append(time.monotonic() + 2.0)
        if time.monotonic() < outage_until[0]:
            with lock:
                during_outage.append((_committed(kafka_settings, group, topic), len(set(prepared))))
            raise DependencyUnavailable("PostGIS does not answer (test)")
        written.extend(batch)

    loop = ConsumerLoop(group, [staged_batch_route(topic, SceneIngested, prepare, write)], kafka_settings,
                        fast_options(max_poll_records=10, pipeline=True, outage_backoff_max_s=0.2),
                        on_readiness=readiness.append)
    run_loop(loop, lambda: len(written) == len(ids), timeout_s=60)

    assert written == ids, "nothing lost, nothing written twice, order kept"
    assert len(during_outage) >= 3, during_outage
    assert all(committed == 0 for committed, _ in during_outage), "an offset was committed during the outage"
    assert max(polls for _, polls in during_outage) >= 2, "the next poll was not prepared during the outage"
    assert readiness[:2] == [False, True] and loop.ready
    assert loop.stats.dead_lettered == 0 and loop.stats.outage_retries >= 3
    assert _committed(kafka_settings, group, topic) == len(ids)


def _start(mode: str, topic: str, group: str, workdir: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(CONSUMER_PROCESS), mode, topic, group, str(workdir)],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.DEVNULL,
        stderr=open(workdir / f"{mode}.log", "ab"),  # noqa: SIM115 - closed with the process
    )


def _wait(process: subprocess.Popen[bytes], workdir: Path, mode: str, timeout_s: float = 60) -> int:
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        log = (workdir / f"{mode}.log").read_text(errors="replace")[-3000:]
        raise AssertionError(f"consumer process ({mode}) did not exit; log tail:\n{log}") from None


@pytest.mark.kafka
def test_a_crash_mid_pipeline_redelivers_the_written_and_the_prepared_poll_and_keeps_one_row_each(
    kafka_settings: KafkaSettings, new_topic: Callable[[str], str], unique_name: str, tmp_path: Path
) -> None:
    topic, group = _one_partition_topic(kafka_settings, "pipecrash", unique_name), f"pipecrash-{unique_name}"
    ids = [f"s{i:02d}" for i in range(20)]
    _send(kafka_settings, topic, ids)

    crashed = _start("pipeline-crash", topic, group, tmp_path)
    assert _wait(crashed, tmp_path, "pipeline-crash") == -signal.SIGKILL
    first, second, third = ((tmp_path / f"prepared.{n}").read_text().split(",") for n in (1, 2, 3))
    sink = SceneSink(tmp_path / "sink.sqlite")
    assert [scene_id for _, scene_id in sink.rows()] == sorted(first + second), "polls 1 and 2 were written"
    assert _committed(kafka_settings, group, topic) == len(first), \
        "poll 2 (written, killed before its commit) and poll 3 (prepared) must not be committed"

    restarted = _start("pipeline", topic, group, tmp_path)
    try:
        wait_until(lambda: len(sink.rows()) == len(ids), 60, "every scene stored after the restart")
        wait_until(lambda: _committed(kafka_settings, group, topic) == len(ids), 30, "the final commit")
    finally:
        restarted.send_signal(signal.SIGTERM)
        assert _wait(restarted, tmp_path, "pipeline") == 0

    assert [scene_id for _, scene_id in sink.rows()] == ids, "one row per scene"
    deliveries = sink.deliveries()
    per_process = Counter(pid for _, pid in deliveries)
    assert sorted(per_process.values()) == sorted([len(first) + len(second), len(ids) - len(first)]), \
        "the restarted consumer began after poll 1, the last commit"
    per_event = Counter(event_id for event_id, _ in deliveries)
    assert sorted(per_event.values()) == [1] * (len(ids) - len(second)) + [2] * len(second), \
        "poll 2 was delivered twice (written, not committed), the same events"
    assert set(third).isdisjoint(first + second) and set(third) <= set(ids)


@pytest.mark.kafka
def test_a_rebalance_while_a_poll_is_written_and_the_next_prepared_loses_nothing(
    kafka_settings: KafkaSettings, new_topic: Callable[[str], str], unique_name: str
) -> None:
    topic, group = new_topic("piperebalance"), f"piperebalance-{unique_name}"
    ids = [f"scene-{i:02d}" for i in range(30)]
    with EventProducer(kafka_settings) as producer:
        for scene_id in ids:
            producer.publish(topic, scene_id, scene(scene_id))
    written: list[tuple[str, str]] = []
    first_write = threading.Event()
    lock = threading.Lock()

    def write_of(member: str) -> Callable[[list[str]], None]:
        def write(batch: list[str]) -> None:
            if not first_write.is_set():
                first_write.set()
                time.sleep(3.0)  # the second member joins meanwhile; the next poll waits prepared
            with lock:
                written.extend((member, scene_id) for scene_id in batch)

        return write

    def prepare(events: Sequence[SceneIngested]) -> list[str]:
        return [e.scene_id for e in events]

    loops = {
        name: ConsumerLoop(group, [staged_batch_route(topic, SceneIngested, prepare, write_of(name))], kafka_settings,
                           fast_options(max_poll_records=4, pipeline=True), client_id=f"{group}-{name}")
        for name in ("a", "b")
    }
    ensure_topics_from_settings(kafka_settings, loops["a"].topics)
    threads = {name: threading.Thread(target=loop.run, daemon=True) for name, loop in loops.items()}
    threads["a"].start()
    try:
        wait_until(first_write.is_set, 20, "member a to start its first write")
        threads["b"].start()
        wait_until(lambda: {s for _, s in written} == set(ids), 40, "every scene to be written")
        wait_until(lambda: sum(committed_offsets(kafka_settings, group).values()) == len(ids), 20,
                   "the commits of both members")
    finally:
        for loop in loops.values():
            loop.stop()
        for thread in threads.values():
            thread.join(timeout=30)

    assert loops["a"].stats.revocations >= 1, "the test needs a rebalance while a poll was being written"
    assert {member for member, _ in written} == {"a", "b"}, "the second member got partitions"
    counts = Counter(scene_id for _, scene_id in written)
    # At least once: only the poll being written while its partitions moved may be written twice.
    assert all(1 <= n <= 2 for n in counts.values()), counts
    assert sum(n - 1 for n in counts.values()) <= 4, counts
