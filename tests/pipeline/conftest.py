"""The whole pipeline as processes on the real stack, private to one test module: ingest (HTTP), two inference,
two promptgen and one resultstore process, on topics, consumer groups, MinIO buckets and a PostGIS database of
their own (the stack's Kafka, MinIO, PostgreSQL and Triton), started as a user would (``python -m services.<name>``).

``Pipeline.quiet()`` waits until every group has committed everything on its input topics and every task is done:
the state after which nothing more happens without a new event (no timing involved).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from google.protobuf.message import Message
from kafka import KafkaConsumer, TopicPartition
from kits.broker import committed_offsets, delete_leftovers, wait_until
from kits.databases import migrated_database
from kits.objects import throwaway_object_store

from earthgptx.bus import EventProducer
from earthgptx.bus.topics import dead_letter_topic
from earthgptx.settings import KafkaSettings
from earthgptx.store.objects import ObjectStore

REPO_ROOT = Path(__file__).resolve().parents[2]
POLICY = {
    "scene_tasks": ["scene_classification"],
    "count_classes": ["ship", "vehicle"],
    "attributes": ["size"],
    "max_objects_per_tile": 2,
    "max_relations_per_tile": 1,
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Pipeline:
    suffix: str
    db_url: str
    objects: ObjectStore
    folder: Path
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ingest_port: int = 0

    def topic(self, name: str) -> str:
        return f"{name}.{self.suffix}"

    def group(self, name: str) -> str:
        return f"{name}-{self.suffix}"

    @property
    def groups_and_inputs(self) -> dict[str, list[str]]:
        return {
            self.group("promptgen"): [self.topic(t) for t in ("scenes.ingested", "results.stored", "queries.requested")],
            self.group("inference"): [self.topic("prompts.tasks")],
            self.group("resultstore"): [self.topic("inference.results")],
        }

    def env(self, name: str, instance: int) -> dict[str, str]:
        env = {
            **os.environ, "PYTHONUNBUFFERED": "1", "EGX_DB_URL": self.db_url,
            "EGX_S3_SCENES_BUCKET": self.objects.settings.scenes_bucket,
            "EGX_S3_CHIPS_BUCKET": self.objects.settings.chips_bucket,
        }  # fmt: skip
        prefix = f"EGX_{name.upper()}_"
        env[prefix + "LOG_FORMAT"] = "json"
        if name == "ingest":
            env.update({prefix + "PORT": str(self.ingest_port), prefix + "OUTPUT_TOPIC": self.topic("scenes.ingested"),
                        prefix + "DROP_ENABLED": "false", prefix + "GROUP_ID": self.group("ingest"),
                        prefix + "WORKDIR": str(self.folder / "ingest")})  # fmt: skip
        elif name == "promptgen":
            env.update({
                prefix + "GROUP_ID": self.group("promptgen"), prefix + "SCENES_TOPIC": self.topic("scenes.ingested"),
                prefix + "RESULTS_TOPIC": self.topic("results.stored"),
                prefix + "QUERIES_TOPIC": self.topic("queries.requested"),
                prefix + "OUTPUT_TOPIC": self.topic("prompts.tasks"), prefix + "POLICY": json.dumps(POLICY),
            })  # fmt: skip
        elif name == "inference":
            env.update({prefix + "GROUP_ID": self.group("inference"), prefix + "INPUT_TOPIC": self.topic("prompts.tasks"),
                        prefix + "OUTPUT_TOPIC": self.topic("inference.results"),
                        prefix + "MASKS_BUCKET": self.objects.settings.chips_bucket})  # fmt: skip
        elif name == "resultstore":
            env.update({prefix + "GROUP_ID": self.group("resultstore"),
                        prefix + "INPUT_TOPIC": self.topic("inference.results"),
                        prefix + "OUTPUT_TOPIC": self.topic("results.stored"),
                        prefix + "CLAIMS_BUCKET": self.objects.settings.chips_bucket})  # fmt: skip
        return env

    def start(self, name: str, instance: int = 0) -> None:
        log = (self.folder / f"{name}-{instance}.log").open("ab")
        self.processes[f"{name}-{instance}"] = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"], cwd=REPO_ROOT, env=self.env(name, instance),
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def log(self, process: str) -> str:
        return (self.folder / f"{process}.log").read_text(errors="replace")

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise AssertionError(f"{name} exited with {process.returncode}: {self.log(name)[-3000:]}")

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def engine(self) -> sa.Engine:
        return sa.create_engine(self.db_url, poolclass=sa.pool.NullPool)

    def scalar(self, sql: str, **params: Any) -> Any:
        engine = self.engine()
        try:
            with engine.connect() as connection:
                return connection.scalar(sa.text(sql), params)
        finally:
            engine.dispose()

    def rows(self, sql: str, **params: Any) -> list[Any]:
        engine = self.engine()
        try:
            with engine.connect() as connection:
                return list(connection.execute(sa.text(sql), params))
        finally:
            engine.dispose()

    def publish(self, topic: str, key: str, message: Message) -> None:
        with EventProducer(self.kafka, client_id=f"test-{self.suffix}") as producer:
            producer.publish_and_wait(self.topic(topic), key, message)

    def caught_up(self) -> bool:
        """Every group has committed the end of each partition of its input topics."""
        consumer = KafkaConsumer(bootstrap_servers=self.kafka.bootstrap.split(","))
        try:
            for group, inputs in self.groups_and_inputs.items():
                committed = committed_offsets(self.kafka, group)
                for topic in inputs:
                    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
                    for tp, end in consumer.end_offsets(partitions).items():
                        if end and committed.get(tp, 0) < end:
                            return False
            return True
        finally:
            consumer.close()

    def quiet(self, timeout_s: float = 600.0) -> None:
        """Until nothing is left to do: all groups caught up and no task pending (checked twice in a row)."""

        def settled() -> bool:
            self.check_alive()
            pending = self.scalar("SELECT count(*) FROM tasks WHERE status <> 'done'")
            return bool(pending == 0 and self.caught_up())

        wait_until(lambda: settled() and settled(), timeout_s, "the pipeline to settle")

    def dead_letter_reasons(self, group: str) -> list[str]:
        from kits.broker import read_topic

        from earthgptx.v1.events_pb2 import DeadLetter

        return [DeadLetter.FromString(r.value).reason for r in
                read_topic(self.kafka, dead_letter_topic(group), 1000, timeout_s=3.0)]  # fmt: skip

    def upload(self, path: Path, modality: str, bands: tuple[str, ...]) -> str:
        with httpx.Client(base_url=f"http://127.0.0.1:{self.ingest_port}", timeout=120) as client:
            response = client.post("/v1/scenes", params={"modality": modality, "bands": ",".join(bands),
                                                         "source": "pipeline-test"},
                                   content=path.read_bytes(), headers={"Content-Type": "image/tiff"})  # fmt: skip
            assert response.status_code in (200, 202), response.text
            scene_id = str(response.json()["scene_id"])
            wait_until(lambda: client.get(f"/v1/scenes/{scene_id}").json().get("status") == "ingested", 120,
                       f"scene {path.name} ingested")  # fmt: skip
        return scene_id


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    suffix = os.urandom(5).hex()
    folder = tmp_path_factory.mktemp("pipeline")
    (folder / "ingest").mkdir()
    with migrated_database() as db_url, throwaway_object_store() as objects:
        p = Pipeline(suffix, db_url, objects, folder, ingest_port=free_port())
        try:
            p.start("ingest")
            for instance in (0, 1):
                p.start("promptgen", instance)
                p.start("inference", instance)
            p.start("resultstore")
            wait_until(lambda: _answers(p.ingest_port), 120, "ingest to answer")
            yield p
        finally:
            p.stop()
            delete_leftovers(p.kafka, suffix)


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        time.sleep(0.5)
        return False
