"""The inference service against the real Kafka, MinIO and tritonserver of the local stack.

The service runs in a thread (its own consumer loop, producer, MinIO client and Triton client) on uniquely named
topics and buckets; the test writes chips (held-out scenes) into MinIO and PromptTasks onto Kafka as promptgen
would, and reads what the service published. The outage test starts a tritonserver of its own through
``deploy/local/triton.sh`` (own ports and state folder, the same model repository), so stopping it mid-run does not
disturb the stack's server that other tests use.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kits.broker import dead_letters, fast_options, read_topic, record_count, wait_until

from earthgptx import events
from earthgptx.bus import EventProducer
from earthgptx.data.generate import generate_dataset
from earthgptx.serving.version import compute_checkpoint_version
from earthgptx.settings import KafkaSettings, TritonSettings
from earthgptx.store.objects import ObjectStore
from earthgptx.v1.events_pb2 import DeadLetterCause, InferenceResult, Level, Modality, ObjectRef, PromptTask
from earthgptx.visual_prompts import dict_to_message
from services.inference.main import InferenceService
from services.inference.settings import Settings

pytestmark = [pytest.mark.kafka, pytest.mark.minio, pytest.mark.triton, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[3]
CHECKPOINT = REPO_ROOT / "models" / "earthgptx-tiny"
TASKS = ("counting", "pixel_grounding", "grounding", "region_classification", "relation", "scene_caption")


@pytest.fixture(scope="module")
def held_out(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    folder = tmp_path_factory.mktemp("inference-held-out")
    path = generate_dataset(folder, n_scenes=2, seed=90210, progress=False)
    return folder, [json.loads(line) for line in path.read_text().splitlines()]


def upload_tasks(
    store: ObjectStore, folder: Path, records: list[dict[str, Any]], suffix: str
) -> list[PromptTask]:
    """Each record's chip into the chips bucket, and its question as a PromptTask."""
    tasks = []
    for record in records:
        key = f"{record['id']}.tif"
        store.put_file(store.settings.chips_bucket, key, folder / record["image"])
        task = PromptTask(
            task_id=f"{record['id']}-{suffix}", scene_id=record["scene_id"],
            chip=ObjectRef(bucket=store.settings.chips_bucket, key=key), level=Level.LEVEL_L1_SCENE,
            task=record["task"], instruction=record["conversations"][0]["value"],
            prompts=[dict_to_message(p, i) for i, p in enumerate(record.get("prompts", []))],
            modality=Modality.Value(f"MODALITY_{record['modality'].upper()}"), bands=record["bands"],
            model_version="earthgptx-tiny",
        )  # fmt: skip
        tasks.append(events.stamp(task, producer="test", trace_id=f"trace-{record['id']}"))
    return tasks


def _empty_chip(folder: Path, record: dict[str, Any]) -> bytes:
    """The record's chip with every pixel set to its declared no-data value (0)."""
    import rasterio
    from rasterio.io import MemoryFile

    with rasterio.open(folder / record["image"]) as source:
        profile, shape = source.profile, (source.count, source.height, source.width)
    with MemoryFile() as memory:
        with memory.open(**{**profile, "nodata": 0}) as chip:
            chip.write(np.zeros(shape, dtype=profile["dtype"]))
        return bytes(memory.read())


def run_in_thread(service: InferenceService) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            service.run()
        except BaseException as exc:  # surfaced by the test, not lost in the thread
            errors.append(exc)

    thread = threading.Thread(target=run, name="inference-under-test")
    thread.start()
    return thread, errors


def stop(service: InferenceService, thread: threading.Thread, errors: list[BaseException]) -> None:
    service.stop()
    thread.join(timeout=60)
    assert not thread.is_alive(), "the service did not stop within 60 s"
    assert not errors, errors


def service_settings(suffix: str, store: ObjectStore, triton: TritonSettings) -> Settings:
    return Settings(
        group_id=f"test-inference-{suffix}",
        input_topic=f"test.tasks.{suffix}",
        output_topic=f"test.results.{suffix}",
        masks_bucket=f"egx-test-masks-{suffix}",
        max_in_flight=8,
        kafka=KafkaSettings(),
        objects=store.settings,
        triton=triton,
    )


def remove_bucket(store: ObjectStore, bucket: str) -> None:
    if store.client.bucket_exists(bucket):
        for found in store.client.list_objects(bucket, recursive=True):
            store.client.remove_object(bucket, found.object_name)
        store.client.remove_bucket(bucket)


def results_by_task(settings: Settings, count: int, timeout_s: float) -> dict[str, list[InferenceResult]]:
    found: dict[str, list[InferenceResult]] = {}
    for record in read_topic(settings.kafka, settings.output_topic, count, timeout_s=timeout_s):
        result = InferenceResult.FromString(record.value)
        found.setdefault(result.task_id, []).append(result)
    return found


def test_tasks_become_results_and_a_rejected_task_is_dead_lettered(
    held_out: tuple[Path, list[dict[str, Any]]], object_store: ObjectStore, kafka_cleanup: str
) -> None:
    folder, records = held_out
    chosen = [next(r for r in records if r["task"] == task) for task in TASKS]
    tasks = upload_tasks(object_store, folder, chosen, kafka_cleanup)
    bad = upload_tasks(object_store, folder, chosen[:1], kafka_cleanup + "-bad")[0]
    del bad.bands[:]
    bad.bands.extend(["red", "green"])  # the chip has three bands: Triton refuses the request
    empty = upload_tasks(object_store, folder, chosen[:1], kafka_cleanup + "-empty")[0]
    empty.chip.key = f"empty-{kafka_cleanup}.tif"  # a chip of the same size, every pixel the declared no-data
    object_store.put_bytes(object_store.settings.chips_bucket, empty.chip.key, _empty_chip(folder, chosen[0]))
    settings = service_settings(kafka_cleanup, object_store, TritonSettings())
    service = InferenceService(settings, options=fast_options())
    thread, errors = run_in_thread(service)
    try:
        with EventProducer(settings.kafka, client_id="test-promptgen") as producer:
            for task in [*tasks[:3], bad, empty, *tasks[3:]]:
                producer.publish_and_wait(settings.input_topic, task.scene_id, task)
        results = results_by_task(settings, len(tasks), timeout_s=240)
        assert sorted(results) == sorted(t.task_id for t in tasks)
        version = compute_checkpoint_version(CHECKPOINT)
        by_task = {r[0].task: r[0] for r in results.values()}
        for result in by_task.values():
            assert result.model_version == version and result.answer.text
            assert result.HasField("answer_parsed") and result.nodata_fraction == 0.0
            assert {"read_chip", "triton", "total"} <= set(result.timings_ms)
            assert result.header.trace_id.startswith("trace-")
        assert by_task["counting"].answer.count == int(by_task["counting"].answer.text)
        mask = by_task["pixel_grounding"].answer.mask
        assert mask.bucket == settings.masks_bucket and object_store.exists(mask.bucket, mask.key)
        assert len(by_task["grounding"].answer.boxes) >= 1
        assert len(by_task["relation"].answer.relations) == 1
        letters = {
            PromptTask.FromString(d.payload).task_id: d
            for d in dead_letters(settings.kafka, settings.group_id, 2)
        }
        assert sorted(letters) == sorted([bad.task_id, empty.task_id])
        assert all(d.cause == DeadLetterCause.DEAD_LETTER_CAUSE_PERMANENT for d in letters.values())
        assert "the image has 3 bands but 2 band names were given" in letters[bad.task_id].reason
        assert "every pixel of the 128 x 128 chip is no-data or NaN" in letters[empty.task_id].reason
    finally:
        stop(service, thread, errors)
        remove_bucket(object_store, settings.masks_bucket)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def own_triton(tmp_path: Path) -> Iterator[tuple[TritonSettings, Any]]:
    """A tritonserver of the test's own (own ports and state folder, the stack's model repository), started and
    stopped with ``deploy/local/triton.sh``; yields its settings and a function ``control("stop" | "start")``."""
    ports = {name: str(_free_port()) for name in ("HTTP", "GRPC", "METRICS")}
    env = {
        **os.environ,
        "EGX_STATE_DIR": str(tmp_path / f"stack-{uuid.uuid4().hex[:6]}"),
        "EGX_TRITON_START_TIMEOUT": "600",  # loading three python models takes minutes on a busy 2-core host
        **{f"EGX_TRITON_{name}_PORT": port for name, port in ports.items()},
    }
    script = REPO_ROOT / "deploy" / "local" / "triton.sh"

    def control(action: str) -> None:
        subprocess.run([str(script), action], env=env, check=True, timeout=600, capture_output=True)

    control("start")
    try:
        yield (
            TritonSettings(http_url=f"127.0.0.1:{ports['HTTP']}", grpc_url=f"127.0.0.1:{ports['GRPC']}"),
            control,
        )
    finally:
        control("stop")


@pytest.mark.chaos
def test_every_task_completes_once_when_triton_stops_mid_run(
    held_out: tuple[Path, list[dict[str, Any]]],
    object_store: ObjectStore,
    kafka_cleanup: str,
    own_triton: tuple[TritonSettings, Any],
) -> None:
    folder, records = held_out
    triton, control = own_triton
    tasks = upload_tasks(object_store, folder, records[:10], kafka_cleanup)
    settings = service_settings(kafka_cleanup, object_store, triton)
    service = InferenceService(settings, options=fast_options())
    thread, errors = run_in_thread(service)
    try:
        with EventProducer(settings.kafka, client_id="test-promptgen") as producer:
            for task in tasks[:4]:
                producer.publish_and_wait(settings.input_topic, task.scene_id, task)
            wait_until(
                lambda: record_count(settings.kafka, settings.output_topic) >= 1, 240, "a first result"
            )
            control("stop")
            for task in tasks[4:]:
                producer.publish_and_wait(settings.input_topic, task.scene_id, task)
            wait_until(lambda: not service.readiness()[0], 60, "the service to report Triton unavailable")
            before = record_count(settings.kafka, settings.output_topic)
            time.sleep(2.0)
            assert (
                record_count(settings.kafka, settings.output_topic) == before
            )  # nothing answered while down
            control("start")
            results = results_by_task(settings, len(tasks), timeout_s=300)
        assert sorted(results) == sorted(t.task_id for t in tasks)  # none lost
        for copies in results.values():  # a re-delivery republishes the same event: exactly once in effect
            assert len({c.header.event_id for c in copies}) == 1
        wait_until(lambda: service.readiness()[0], 60, "the service to be ready again")
        assert (
            record_count(settings.kafka, f"dlq.{settings.group_id}") == 0
        )  # never dead-lettered for the outage
    finally:
        stop(service, thread, errors)
        remove_bucket(object_store, settings.masks_bucket)
