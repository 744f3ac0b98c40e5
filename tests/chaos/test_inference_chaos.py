"""inference under faults: ``python -m services.inference`` answering tasks while its tritonserver is down.

Chips of generated held-out records go to throwaway buckets of the stack's MinIO and their questions to a
``prompts.tasks`` topic of the test's own; the service asks a tritonserver of the test's own
(``harness.PrivateTriton``: the stack's script and model repository, own ports and state) and publishes
``InferenceResult``s. Triton is stopped for 20 s (``EGX_CHAOS_OUTAGE_S``, plus the minutes a restart takes to load
the models) once a first wave of tasks is answered; the second wave is sent while it is down. Asserted: 0 lost (every task answered), 0 duplicates (one event id per task), 0 valid tasks
dead-lettered, and the next answer within 60 s of Triton answering again. ``tests/services/inference`` has the
in-process version of this fault.

The service's Triton client (``earthgptx.serving.client.channel_args``) caps gRPC's reconnect back-off at 1 s; with
gRPC's default cap of 120 s the first answer came 50 s after Triton was back (measured before the cap).
"""

from __future__ import annotations

import json
import os
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import PrivateTriton, ServiceProcess, outage, wait_for
from kits.broker import delete_leftovers, read_topic, record_count
from kits.objects import throwaway_object_store

from earthgptx import events
from earthgptx.bus import EventProducer, ensure_topics_from_settings
from earthgptx.data.generate import generate_dataset
from earthgptx.settings import KafkaSettings
from earthgptx.store.objects import ObjectStore
from earthgptx.v1.events_pb2 import InferenceResult, Level, Modality, ObjectRef, PromptTask
from earthgptx.visual_prompts import dict_to_message

pytestmark = [pytest.mark.chaos, pytest.mark.kafka, pytest.mark.minio, pytest.mark.triton, pytest.mark.slow]

TASKS = int(os.environ.get("EGX_CHAOS_TASKS", "24"))
OUTAGE_S = float(os.environ.get("EGX_CHAOS_OUTAGE_S", "20"))
BOUND_S = 60  # reconnect back-off capped at 1 s; the rest is the first answers after a reload on a loaded host


class InferenceFlow:
    """Tasks in on ``prompts.tasks``; ``InferenceResult`` events out (see harness.Flow)."""

    def __init__(self, kafka: KafkaSettings, store: ObjectStore, triton: PrivateTriton, suffix: str) -> None:
        self.kafka, self.store, self.triton, self.suffix = kafka, store, triton, suffix
        self.input_topic = f"test.chaos-prompts.{suffix}"
        self.output_topic = f"test.chaos-results.{suffix}"
        self.group = f"chaos-inference-{suffix}"
        self.masks_bucket = f"egx-chaos-masks-{suffix}"

    def service_env(self) -> dict[str, str]:
        return {
            "EGX_INFERENCE_GROUP_ID": self.group,
            "EGX_INFERENCE_INPUT_TOPIC": self.input_topic,
            "EGX_INFERENCE_OUTPUT_TOPIC": self.output_topic,
            "EGX_INFERENCE_MASKS_BUCKET": self.masks_bucket,
            "EGX_INFERENCE_MAX_IN_FLIGHT": "8",
            "EGX_INFERENCE_LOG_FORMAT": "text",
            "EGX_KAFKA_BOOTSTRAP": self.kafka.bootstrap,
            **self.triton.env(),
        }

    def tasks(self, folder: Path, count: int) -> list[PromptTask]:
        """Held-out records' chips in the chips bucket and their questions as tasks (ids unique to the test)."""
        path = generate_dataset(folder, n_scenes=max(2, count // 12 + 1), seed=90210, progress=False)
        records = [json.loads(line) for line in path.read_text().splitlines()][:count]
        assert len(records) == count, f"the generated split has only {len(records)} records"
        tasks = []
        for record in records:
            key = f"{record['id']}.tif"
            self.store.put_file(self.store.settings.chips_bucket, key, folder / record["image"])
            task = PromptTask(
                task_id=f"{record['id']}-{self.suffix}", scene_id=record["scene_id"],
                chip=ObjectRef(bucket=self.store.settings.chips_bucket, key=key), level=Level.LEVEL_L1_SCENE,
                task=record["task"], instruction=record["conversations"][0]["value"],
                prompts=[dict_to_message(p, i) for i, p in enumerate(record.get("prompts", []))],
                modality=Modality.Value(f"MODALITY_{record['modality'].upper()}"), bands=record["bands"],
                model_version="earthgptx-tiny",
            )  # fmt: skip
            tasks.append(events.stamp(task, producer="chaos", event_id=f"task-{task.task_id}"))
        return tasks

    def send(self, tasks: list[PromptTask]) -> None:
        with EventProducer(self.kafka, client_id=f"chaos-promptgen-{self.suffix}") as producer:
            for task in tasks:
                producer.publish(self.input_topic, task.scene_id, task)
            producer.flush()

    def event_ids_by_task(self) -> dict[str, set[str]]:
        count = record_count(self.kafka, self.output_topic)
        found: dict[str, set[str]] = defaultdict(set)
        for record in read_topic(self.kafka, self.output_topic, count) if count else []:
            result = InferenceResult.FromString(record.value)
            found[result.task_id].add(result.header.event_id)
        return found

    def done(self) -> int:
        return len(self.event_ids_by_task())

    def duplicates(self) -> int:
        """Tasks answered under more than one event id (a redelivery must republish the same event)."""
        return sum(len(ids) - 1 for ids in self.event_ids_by_task().values())

    def dead_letters(self) -> int:
        return record_count(self.kafka, f"dlq.{self.group}")


@pytest.fixture
def inference_world(
    tmp_path: Path, private_triton: PrivateTriton
) -> Iterator[tuple[InferenceFlow, ServiceProcess, list[PromptTask]]]:
    kafka = KafkaSettings()
    suffix = uuid.uuid4().hex[:10]
    with throwaway_object_store("egx-chaos") as store:
        flow = InferenceFlow(kafka, store, private_triton, suffix)
        tasks = flow.tasks(tmp_path / "held-out", TASKS)
        ensure_topics_from_settings(kafka, [flow.input_topic])
        service = ServiceProcess("inference", flow.service_env(), tmp_path / "inference.log")
        try:
            yield flow, service, tasks
        finally:
            service.stop()
            delete_leftovers(kafka, suffix)
            if store.client.bucket_exists(flow.masks_bucket):
                for found in store.client.list_objects(flow.masks_bucket, recursive=True):
                    store.client.remove_object(flow.masks_bucket, found.object_name)
                store.client.remove_bucket(flow.masks_bucket)


def test_triton_stopped_for_a_while_loses_nothing_and_dead_letters_nothing(
    inference_world: tuple[InferenceFlow, ServiceProcess, list[PromptTask]], private_triton: PrivateTriton,
    chaos_record: dict[str, Any],
) -> None:
    flow, service, tasks = inference_world
    service.start()
    service.wait_for_log("partitions assigned", timeout_s=180)
    # Triton's dynamic batcher answers tasks that wait together at once: the first wave is answered before the
    # outage, the second is sent while Triton is down and must wait for it.
    first = TASKS // 4
    flow.send(tasks[:first])
    wait_for(lambda: flow.done() >= first, 240, "the first wave's answers")
    at_outage = flow.done()
    recovered = outage(private_triton, OUTAGE_S, service, flow, bound_s=BOUND_S,
                       what="the first answer after Triton came back", during=lambda: flow.send(tasks[first:]))
    wait_for(lambda: flow.done() == TASKS or not service.alive, 300, f"{TASKS} tasks answered")
    assert service.alive, f"the service exited:\n{service.tail()}"
    assert flow.done() == TASKS, "lost tasks"
    assert flow.duplicates() == 0, "a task was answered under two event ids"
    assert flow.dead_letters() == 0, "valid tasks were dead-lettered"
    assert "not ready" in service.tail(200_000), "the consumer did not report not-ready during the outage"
    assert service.stop() == 0
    assert at_outage < TASKS, "the outage came too late to test anything"
    chaos_record["inference.triton_outage"] = {"results": TASKS, "outage_s": OUTAGE_S,
                                               "done_before_outage": at_outage,
                                               "recovery_s": round(recovered, 2), "bound_s": BOUND_S}
