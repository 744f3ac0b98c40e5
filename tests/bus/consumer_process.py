"""A consumer process for the crash and shutdown tests (run as a script by test_bus_kafka.py).

    python consumer_process.py crash  TOPIC GROUP WORKDIR   # stores the event, then SIGKILLs itself
    python consumer_process.py store  TOPIC GROUP WORKDIR   # stores events until stopped
    python consumer_process.py slow   TOPIC GROUP WORKDIR   # marks start/end of a 2 s handler; stop with SIGTERM
    python consumer_process.py concurrent TOPIC GROUP WORKDIR  # 4 in flight; scene "block" never finishes
    python consumer_process.py pipeline TOPIC GROUP WORKDIR        # pipelined staged batches of 5 until stopped
    python consumer_process.py pipeline-crash TOPIC GROUP WORKDIR  # writes batch 2 once batch 3 is prepared,
                                                                   # then SIGKILLs itself
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

# This runs as its own process: put the bus test kit and the shared tests/ helpers on the path.
sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]

from bus_testkit import SceneSink, fast_options  # noqa: E402

from earthgptx.bus import ConsumerLoop, ensure_topics_from_settings, route, staged_batch_route  # noqa: E402
from earthgptx.settings import KafkaSettings  # noqa: E402
from earthgptx.v1.events_pb2 import SceneIngested  # noqa: E402


def main() -> None:
    mode, topic, group, workdir = sys.argv[1:5]
    work = Path(workdir)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    sink = SceneSink(work / "sink.sqlite")

    def on_store(event: SceneIngested) -> None:
        sink.store(event, os.getpid())
        if mode == "crash":
            # The side effect is durable, the offset is not committed: the worst moment to die.
            os.kill(os.getpid(), signal.SIGKILL)

    def on_slow(event: SceneIngested) -> None:
        (work / f"started.{event.scene_id}").touch()
        time.sleep(2.0)
        sink.store(event, os.getpid())
        (work / f"finished.{event.scene_id}").touch()

    def on_concurrent(event: SceneIngested) -> None:
        if event.scene_id == "block":
            (work / "blocking").touch()
            time.sleep(120)  # still in flight when the test kills the process
        sink.store(event, os.getpid())

    if mode.startswith("pipeline"):
        run_pipelined(mode, topic, group, work, sink)
        return
    handler = {"slow": on_slow, "concurrent": on_concurrent}.get(mode, on_store)
    # A short rebalance timeout, so that the next member does not wait long for this one if it is killed.
    options = fast_options(consumer_overrides={"max_poll_interval_ms": 3000},
                           concurrency=4 if mode == "concurrent" else 1)
    loop = ConsumerLoop(group, [route(topic, SceneIngested, handler)], KafkaSettings(), options)
    ensure_topics_from_settings(loop.settings, loop.topics)  # what a service's lifecycle does at start
    (work / "running").touch()
    stats = loop.run()
    (work / "stats").write_text(repr(stats))


def run_pipelined(mode: str, topic: str, group: str, work: Path, sink: SceneSink) -> None:
    """A staged batch route in the pipelined mode; ``pipeline-crash`` dies after writing its second batch, at a
    moment when the third has been prepared (so both are uncommitted and must come again)."""
    prepared = [0]

    def prepare(events: Sequence[SceneIngested]) -> list[SceneIngested]:
        prepared[0] += 1
        (work / f"prepared.{prepared[0]}").write_text(",".join(e.scene_id for e in events))
        return list(events)

    written = [0]

    def write(events: list[SceneIngested]) -> None:
        written[0] += 1
        if mode == "pipeline-crash" and written[0] == 2:
            deadline = time.monotonic() + 10
            while not (work / "prepared.3").exists() and time.monotonic() < deadline:
                time.sleep(0.02)
        for event in events:
            sink.store(event, os.getpid())
        if mode == "pipeline-crash" and written[0] == 2:
            os.kill(os.getpid(), signal.SIGKILL)

    options = fast_options(consumer_overrides={"max_poll_interval_ms": 3000}, max_poll_records=5, pipeline=True)
    loop = ConsumerLoop(group, [staged_batch_route(topic, SceneIngested, prepare, write)], KafkaSettings(), options)
    ensure_topics_from_settings(loop.settings, loop.topics)
    (work / "running").touch()
    stats = loop.run()
    (work / "stats").write_text(repr(stats))


if __name__ == "__main__":
    main()
