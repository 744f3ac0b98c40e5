"""The consumer loop's concurrent mode: N records in flight, per-partition commits up to the first not done."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from bus_testkit import SceneSink, committed_offsets, dead_letters, fast_options, scene, wait_until
from kafka import TopicPartition

from earthgptx.bus import (
    ConsumerLoop,
    ConsumerOptions,
    EventProducer,
    PermanentError,
    TransientError,
    batch_route,
    ensure_topics_from_settings,
    route,
)
from earthgptx.bus.consumer import _InFlight
from earthgptx.settings import KafkaSettings
from earthgptx.v1.events_pb2 import DeadLetterCause, SceneIngested

CONSUMER_PROCESS = Path(__file__).with_name("consumer_process.py")
TP = TopicPartition("t", 0)


# -- the bookkeeping, without a broker --------------------------------------------------------------------


def test_only_the_done_prefix_of_a_partition_is_committable() -> None:
    flight = _InFlight()
    tickets = {offset: flight.add(TP, offset) for offset in range(5)}
    for offset in (1, 2, 4):  # out of order; 0 and 3 still in flight
        flight.finish(TP, offset, tickets[offset], done=True)
    assert flight.committable() == {} and flight.count() == 2
    flight.finish(TP, 0, tickets[0], done=True)
    assert flight.committable() == {TP: 3}
    flight.finish(TP, 3, tickets[3], done=True)
    assert flight.committable() == {TP: 5} and flight.count() == 0


def test_an_abandoned_record_blocks_its_partition_and_stale_tickets_are_ignored() -> None:
    flight = _InFlight()
    first = flight.add(TP, 0)
    second = flight.add(TP, 1)
    flight.finish(TP, 0, first, done=False)  # interrupted (stop): must be delivered again
    flight.finish(TP, 1, second, done=True)
    assert flight.committable() == {} and flight.count() == 0
    flight.forget({TP})  # the partition was lost; it comes back and offset 0 is delivered again
    again = flight.add(TP, 0)
    flight.finish(TP, 0, first, done=False)  # the old worker, late: not this delivery
    assert flight.count() == 1
    flight.finish(TP, 0, again, done=True)
    assert flight.committable() == {TP: 1}


def test_the_concurrent_mode_takes_single_record_routes_only() -> None:
    with pytest.raises(ValueError, match="single-record routes"):
        ConsumerLoop("g", [batch_route("t", SceneIngested, lambda events: None)], options=ConsumerOptions(concurrency=4))
    with pytest.raises(ValueError, match="at least 1"):
        ConsumerLoop("g", [route("t", SceneIngested, print)], options=ConsumerOptions(concurrency=0))


# -- against the broker -----------------------------------------------------------------------------------


def _run(loop: ConsumerLoop, until: Callable[[], bool], timeout_s: float = 40.0) -> None:
    ensure_topics_from_settings(loop.settings, loop.topics)
    thread = threading.Thread(target=loop.run, kwargs={"handle_signals": False}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: until() or not thread.is_alive(), timeout_s, "the concurrent loop")
    finally:
        loop.stop()
        thread.join(timeout=30)
    assert not thread.is_alive()


@pytest.mark.kafka
def test_records_finishing_out_of_order_are_committed_only_up_to_the_first_not_done(
    kafka_settings: KafkaSettings, new_topic: Callable[[str], str], unique_name: str
) -> None:
    topic, group = new_topic("concurrent"), f"concurrent-{unique_name}"
    ids = ["slow", "a", "bad", "flaky", "b", "c", "d", "e"]
    with EventProducer(kafka_settings) as producer:
        for scene_id in ids:
            producer.publish(topic, "one-partition", scene(scene_id))  # one key: one partition, in this order
    release = threading.Event()
    lock = threading.Lock()
    running, peak, finished, flaky_calls = [0], [0], [], []

    def on_scene(event: SceneIngested) -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            if event.scene_id == "slow":
                assert release.wait(30)
            elif event.scene_id == "bad":
                raise PermanentError("bad scene")
            elif event.scene_id == "flaky":
                flaky_calls.append(1)
                if len(flaky_calls) == 1:
                    raise TransientError("try again")
            time.sleep(0.2)
            with lock:
                finished.append(event.scene_id)
        finally:
            with lock:
                running[0] -= 1

    loop = ConsumerLoop(group, [route(topic, SceneIngested, on_scene)], kafka_settings, fast_options(concurrency=4))
    thread = threading.Thread(target=_run, args=(loop, lambda: len(finished) == 7), daemon=True)
    thread.start()
    try:
        # Everything after the slow first record finishes; nothing may be committed past the slow one.
        wait_until(lambda: len(finished) == 6 and loop.stats.dead_lettered == 1, 30, "the records after the slow one")
        time.sleep(1.0)  # several commit rounds
        assert committed_offsets(kafka_settings, group) == {}
        assert "slow" not in finished
    finally:
        release.set()
        thread.join(timeout=60)
    partition = {tp.topic: off for tp, off in committed_offsets(kafka_settings, group).items()}
    assert partition == {topic: len(ids)}
    assert 2 <= peak[0] <= 4, f"records in flight at once: {peak[0]}"
    assert set(finished) == set(ids) - {"bad"} and len(flaky_calls) == 2
    [letter] = dead_letters(kafka_settings, group, 1)
    assert letter.cause == DeadLetterCause.DEAD_LETTER_CAUSE_PERMANENT and letter.source_offset == 2


@pytest.mark.kafka
def test_a_crash_with_records_in_flight_loses_nothing(
    kafka_settings: KafkaSettings, new_topic: Callable[[str], str], unique_name: str, tmp_path: Path
) -> None:
    topic, group = new_topic("concurrent-crash"), f"concurrent-crash-{unique_name}"
    ids = ["block", "s1", "s2", "s3", "s4", "s5"]
    with EventProducer(kafka_settings) as producer:
        for scene_id in ids:
            producer.publish(topic, "one-partition", scene(scene_id))
    sink = SceneSink(tmp_path / "sink.sqlite")

    def start(mode: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, str(CONSUMER_PROCESS), mode, topic, group, str(tmp_path)],
            env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / f"{mode}.log", "ab"),  # noqa: SIM115 - closed with the process
        )

    crashing = start("concurrent")
    try:
        wait_until(lambda: len(sink.rows()) == 5 and (tmp_path / "blocking").exists(), 40,
                   "the five records after the blocking one")
        time.sleep(1.0)  # commit rounds happen; none may pass the record still in flight
        assert committed_offsets(kafka_settings, group) == {}
    finally:
        crashing.send_signal(signal.SIGKILL)
        crashing.wait(timeout=10)

    restarted = start("store")
    try:
        wait_until(lambda: len(sink.rows()) == 6, 40, "the redelivery after the crash")
        wait_until(lambda: sum(committed_offsets(kafka_settings, group).values()) == len(ids), 20, "the commit")
    finally:
        restarted.send_signal(signal.SIGTERM)
        restarted.wait(timeout=30)
    assert sorted(s for _, s in sink.rows()) == sorted(ids), "each scene stored once (idempotent sink)"
    # Everything after the in-flight record was delivered again: at least once, never lost.
    assert len(sink.deliveries()) == 5 + 6
