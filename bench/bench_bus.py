"""Bus overhead: the bus layer vs raw kafka-python, same broker, same topic settings, same run.

Both paths move the same pre-built, stamped ``SceneIngested`` events (small: ids, bands, CRS, transform, object
key; about 250 bytes) through a fresh topic with the partition count from ``KafkaSettings``, keyed by scene id:
- ``raw``: ``KafkaProducer.send(value=event.SerializeToString())`` with the bus's producer configuration, then a
  ``KafkaConsumer`` with the bus's consumer configuration that polls, parses each value once
  (``SceneIngested.FromString``) and commits synchronously after each polled batch;
- ``bus``: ``EventProducer.publish`` (header check, encode, size check, metrics), then a ``ConsumerLoop`` (decode
  with header/version checks, typed handler on the worker thread, paused partitions, metrics, commit after
  each batch).
Produce throughput is timed from the first send to the end of ``flush`` (every record acknowledged, acks=all);
consume throughput from the first record in hand to the last record handled, so that the group join (the same
for both, and paid once per process) does not dilute the comparison; the join times are reported apart.
Target (issue 2): bus ≥ 0.8 × raw throughput, for the produce-and-consume round trip (the produce and consume
ratios are reported too). Each repeat runs both paths back to back, alternating which goes first; ratios are the
median of the per-repeat ratios. CPU time per event (all threads of this process) is reported as well, since it
is less sensitive than wall time to the other work on a shared host.

    python bench/bench_bus.py [--events 20000] [--repeats 3]

Writes bench/results/bus.json and bus.md. Needs the local stack's Kafka (``make up``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import google.protobuf  # noqa: E402
import kafka  # noqa: E402
from kafka import KafkaConsumer, KafkaProducer  # noqa: E402
from kafka.structs import OffsetAndMetadata  # noqa: E402

from earthgptx.bus import ConsumerLoop, ConsumerOptions, EventProducer, ensure_topics_from_settings, route  # noqa: E402
from earthgptx.bus.consumer import consumer_config  # noqa: E402
from earthgptx.bus.producer import producer_config  # noqa: E402
from earthgptx.events import stamp  # noqa: E402
from earthgptx.settings import KafkaSettings, load_stack_env  # noqa: E402
from earthgptx.v1.events_pb2 import Modality, SceneIngested  # noqa: E402

RESULTS_DIR = REPO_ROOT / "bench" / "results"
TARGET_RATIO = 0.8


def make_events(count: int) -> list[tuple[str, SceneIngested]]:
    events = []
    for i in range(count):
        scene_id = f"S2B_MSIL2A_{i:08d}"
        event = SceneIngested(
            scene_id=scene_id, source="station-kiruna", sensor="MSI", modality=Modality.MODALITY_MULTISPECTRAL,
            bands=["B02", "B03", "B04", "B08"], dtype="uint16", width=10980, height=10980, crs="EPSG:32633",
            georeferenced=True,
        )
        event.transform.a, event.transform.c, event.transform.e, event.transform.f = 10.0, 399_960.0, -10.0, 7_300_020.0
        event.cog.bucket, event.cog.key = "scenes", f"cog/{scene_id}.tif"
        events.append((scene_id, stamp(event, producer="bench")))
    return events


class Timer:
    """First/last timestamps of the records handled by one consumer run."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.first = 0.0
        self.last = 0.0

    def tick(self, n: int = 1) -> None:
        now = time.perf_counter()
        if self.count == 0:
            self.first = now
        self.count += n
        self.last = now

    @property
    def done(self) -> bool:
        return self.count >= self.expected


def produce_raw(settings: KafkaSettings, topic: str, events: list[tuple[str, SceneIngested]]) -> float:
    producer = KafkaProducer(**producer_config(settings, "bench-raw"))
    try:
        started = time.perf_counter()
        for scene_id, event in events:
            producer.send(topic, key=scene_id.encode(), value=event.SerializeToString())
        producer.flush()
        return time.perf_counter() - started
    finally:
        producer.close()


def produce_bus(settings: KafkaSettings, topic: str, events: list[tuple[str, SceneIngested]]) -> float:
    with EventProducer(settings, client_id="bench-bus") as producer:
        started = time.perf_counter()
        for scene_id, event in events:
            producer.publish(topic, scene_id, event)
        producer.flush()
        return time.perf_counter() - started


def consume_raw(settings: KafkaSettings, topic: str, group: str, count: int, options: ConsumerOptions) -> dict[str, float]:
    created = time.perf_counter()
    consumer = KafkaConsumer(**consumer_config(settings, group, "bench-raw", options))
    consumer.subscribe([topic])
    consumer.topics()  # metadata before the first join, as ConsumerLoop does (see _wait_for_topic_metadata)
    timer = Timer(count)
    try:
        while not timer.done:
            batches = consumer.poll(timeout_ms=options.poll_timeout_ms)
            if not batches:
                continue
            offsets = {}
            for tp, records in batches.items():
                for record in records:
                    SceneIngested.FromString(record.value)
                    timer.tick()
                offsets[tp] = OffsetAndMetadata(records[-1].offset + 1, "", -1)
            consumer.commit(offsets)
    finally:
        consumer.close(autocommit=False)
    return {"seconds": timer.last - timer.first, "join_s": timer.first - created}


def consume_bus(settings: KafkaSettings, topic: str, group: str, count: int, options: ConsumerOptions) -> dict[str, float]:
    timer = Timer(count)

    def on_scene_ingested(event: SceneIngested) -> None:
        timer.tick()

    loop = ConsumerLoop(group, [route(topic, SceneIngested, on_scene_ingested)], settings, options,
                        client_id="bench-bus")
    created = time.perf_counter()
    stats = loop.run(stop_when=lambda: timer.done, handle_signals=False)
    if stats.processed != count or stats.dead_lettered:
        raise RuntimeError(f"bus consumer handled {stats.processed} of {count} ({stats})")
    return {"seconds": timer.last - timer.first, "join_s": timer.first - created}


def process_cpu_s() -> float:
    """CPU seconds of this process, all threads (kafka-python's IO threads included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_once(settings: KafkaSettings, events: list[tuple[str, SceneIngested]], path: str, options: ConsumerOptions,
             tag: str) -> dict[str, float]:
    topic, group = f"bench.bus.{path}.{tag}", f"bench-{path}-{tag}"
    ensure_topics_from_settings(settings, [topic])
    produce: Callable[..., float] = produce_raw if path == "raw" else produce_bus
    consume: Callable[..., dict[str, float]] = consume_raw if path == "raw" else consume_bus
    cpu_0 = process_cpu_s()
    produce_s = produce(settings, topic, events)
    cpu_1 = process_cpu_s()
    consumed = consume(settings, topic, group, len(events), options)
    cpu_2 = process_cpu_s()
    n = len(events)
    return {
        "produce_cpu_us_per_event": (cpu_1 - cpu_0) / n * 1e6,
        "consume_cpu_us_per_event": (cpu_2 - cpu_1) / n * 1e6,
        "produce_s": produce_s,
        "consume_s": consumed["seconds"],
        "join_s": consumed["join_s"],
        "produce_per_s": n / produce_s,
        "consume_per_s": n / consumed["seconds"],
        "round_trip_per_s": n / (produce_s + consumed["seconds"]),
    }


def cleanup(settings: KafkaSettings, tags: list[str]) -> None:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap.split(","))
    try:
        names = [f"bench.bus.{p}.{t}" for t in tags for p in ("raw", "bus")] + [f"dlq.bench-bus-{t}" for t in tags]
        existing = set(admin.list_topics())
        admin.delete_topics([n for n in names if n in existing])
        admin.delete_groups([f"bench-{p}-{t}" for t in tags for p in ("raw", "bus")])
    except Exception as exc:  # cleanup is best effort; the numbers are already measured
        print(f"cleanup: {exc!r}")  # noqa: T201
    finally:
        admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    load_stack_env(fallback=REPO_ROOT / ".stack")
    settings = KafkaSettings()
    options = ConsumerOptions()
    events = make_events(args.events)
    event_bytes = statistics.mean(len(e.SerializeToString()) for _, e in events)
    runs: dict[str, list[dict[str, float]]] = {"raw": [], "bus": []}
    tags = []
    for repeat in range(args.repeats):
        tag = f"{uuid.uuid4().hex[:8]}"
        tags.append(tag)
        # Alternate which path goes first, so that neither always meets a warmer broker.
        order = ("raw", "bus") if repeat % 2 == 0 else ("bus", "raw")
        for path in order:
            runs[path].append(run_once(settings, events, path, options, tag))
            r = runs[path][-1]
            print(f"repeat {repeat + 1} {path}: produce {r['produce_per_s']:,.0f}/s, "  # noqa: T201
                  f"consume {r['consume_per_s']:,.0f}/s, round trip {r['round_trip_per_s']:,.0f}/s")
    cleanup(settings, tags)

    def median(path: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[path])

    metrics = ("produce_per_s", "consume_per_s", "round_trip_per_s", "join_s", "produce_cpu_us_per_event",
               "consume_cpu_us_per_event")
    summary: dict[str, Any] = {path: {k: median(path, k) for k in metrics} for path in runs}
    # The host is shared, so its load drifts during a run: compare each bus run with the raw run next to it
    # (same repeat, alternating order), and take the median of those ratios.
    ratios = {
        k: statistics.median(b[k] / r[k] for b, r in zip(runs["bus"], runs["raw"], strict=True))
        for k in ("produce_per_s", "consume_per_s", "round_trip_per_s")
    }
    met = ratios["round_trip_per_s"] >= TARGET_RATIO
    result = {
        "benchmark": "bus overhead: bus layer vs raw kafka-python",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "events": args.events,
        "event_bytes_mean": round(event_bytes, 1),
        "partitions": settings.partitions,
        "repeats": args.repeats,
        "target_ratio": TARGET_RATIO,
        "median": summary,
        "ratio_bus_over_raw": ratios,
        "target_met": met,
        "runs": runs,
        "environment": {
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "python": platform.python_version(),
            "kafka_python": kafka.__version__,
            "protobuf": google.protobuf.__version__,
            "broker": "Apache Kafka 4.1 (KRaft, single node, loopback, shared host)",
        },
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "bus.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS_DIR / "bus.md").write_text(render_markdown(result))
    print(f"bus/raw: produce {ratios['produce_per_s']:.2f}, consume {ratios['consume_per_s']:.2f}, "  # noqa: T201
          f"round trip {ratios['round_trip_per_s']:.2f} (target >= {TARGET_RATIO}): {'met' if met else 'NOT met'}")


def render_markdown(result: dict[str, Any]) -> str:
    med, runs, ratios = result["median"], result["runs"], result["ratio_bus_over_raw"]

    def row(label: str, key: str, fmt: str = "{:,.0f}") -> str:
        per_run = lambda path: ", ".join(fmt.format(r[key]) for r in runs[path])  # noqa: E731
        ratio = f"**{ratios[key]:.2f}**" if key in ratios else "—"  # CPU and join rows: no ratio
        return (f"| {label} | {fmt.format(med['raw'][key])} ({per_run('raw')}) | "
                f"{fmt.format(med['bus'][key])} ({per_run('bus')}) | {ratio} |")

    env = result["environment"]
    return "\n".join([
        "# Bus overhead: bus layer vs raw kafka-python",
        "",
        f"{result['events']:,} small `SceneIngested` events ({result['event_bytes_mean']:.0f} bytes on average), "
        f"{result['partitions']} partitions, same producer and consumer settings (acks=all, idempotent, commit "
        f"after each polled batch), median of {result['repeats']} repeats (each repeat's value in brackets), "
        f"measured {result['measured_at']} by `bench/bench_bus.py`.",
        "",
        "| events/s | raw kafka-python | bus layer | bus / raw |",
        "|---|---:|---:|---:|",
        row("produce (send → all acknowledged)", "produce_per_s"),
        row("consume (first → last record handled)", "consume_per_s"),
        row("round trip (produce + consume time)", "round_trip_per_s"),
        row("group join + first fetch, seconds", "join_s", "{:.2f}"),
        row("CPU µs per event, produce (all threads)", "produce_cpu_us_per_event", "{:.0f}"),
        row("CPU µs per event, consume (all threads)", "consume_cpu_us_per_event", "{:.0f}"),
        "",
        "Ratios are medians of the per-repeat ratios (each bus run against the raw run of the same repeat; the "
        "order alternates between repeats), which cancels most of the load drift of a shared host.",
        "",
        f"Target: bus ≥ {result['target_ratio']} × raw throughput for 20,000 events produced and consumed "
        f"(round trip): **{'met' if result['target_met'] else 'not met'}** "
        f"(produce {ratios['produce_per_s']:.2f}, consume {ratios['consume_per_s']:.2f}, "
        f"round trip {ratios['round_trip_per_s']:.2f}).",
        "",
        f"Environment: {env['cpus']} CPUs ({env['machine']}), Python {env['python']}, kafka-python "
        f"{env['kafka_python']}, protobuf {env['protobuf']}, {env['broker']}; the broker shares the host with "
        "other work, so absolute numbers vary between runs; the ratios, measured in the same run with "
        "alternating order, are the comparison that matters.",
        "",
    ])


if __name__ == "__main__":
    main()
