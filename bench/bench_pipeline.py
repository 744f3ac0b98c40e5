"""Whole-pipeline throughput against bare Triton on the same tasks at the same concurrency (issue 23), one run.

    python bench/bench_pipeline.py [--scenes 4] [--concurrency 16]

Setup (not timed): generated 256 px scenes of the four modalities are stored in a private PostGIS database and
MinIO buckets and tiled by promptgen's handler (L1 only: 9 chips x 7 questions per scene), which gives the tasks.

1. Bare Triton: every task's chip is read and its request built beforehand; the requests are sent to Triton's entry
   model through the same asyncio client the inference service uses, ``concurrency`` at a time. tasks/s. Measured
   before and after the pipeline (the host is shared: the two bracket what Triton alone did around it).
2. Pipeline: one inference process (``max_in_flight`` = ``concurrency``) and one resultstore process on private
   topics; after a warm-up, every task is published on ``prompts.tasks`` at once and the clock stops when the last
   one is ``done`` in PostGIS (its rows written). tasks/s.

The ratio pipeline / bare Triton is the figure (target >= 0.9); the inference service's own stage timings (chip
read, Triton, total) say where the rest goes. Results: bench/results/pipeline.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests")]  # the library, and the test kits

import numpy as np  # noqa: E402
import rasterio  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from google.protobuf.message import Message  # noqa: E402
from kits.databases import migrated_database  # noqa: E402
from kits.objects import throwaway_object_store  # noqa: E402
from kits.scene_files import generated_scene  # noqa: E402

from earthgptx.bus import EventProducer  # noqa: E402
from earthgptx.geo import footprint_4326  # noqa: E402
from earthgptx.serving.answers import ServingRequest  # noqa: E402
from earthgptx.serving.client import AsyncTritonClient  # noqa: E402
from earthgptx.settings import DatabaseSettings, KafkaSettings, TritonSettings, load_stack_env  # noqa: E402
from earthgptx.store.objects import ObjectStore  # noqa: E402
from earthgptx.store.pipeline import PipelineStore  # noqa: E402
from earthgptx.store.records import SceneRecord  # noqa: E402
from earthgptx.store.repository import Repository  # noqa: E402
from earthgptx.v1.events_pb2 import PromptTask, SceneIngested  # noqa: E402
from earthgptx.visual_prompts import messages_to_dicts  # noqa: E402
from services.inference.handlers import modality_name, read_chip  # noqa: E402
from services.promptgen.cascade import Policy  # noqa: E402
from services.promptgen.handlers import PromptgenHandler  # noqa: E402

RESULTS = REPO_ROOT / "bench" / "results"
MODALITIES = ("optical", "multispectral", "sar", "infrared")


class Collect:
    def __init__(self) -> None:
        self.tasks: list[PromptTask] = []

    def publish(self, topic: str, key: str, message: Message, *, trace_id: str = "") -> Any:
        copy = PromptTask()
        copy.CopyFrom(message)
        self.tasks.append(copy)

    def wait(self, futures: Any, *, timeout_s: float = 30.0) -> list[Any]:
        return [object() for _ in futures]


def make_tasks(folder: Path, db_url: str, objects: ObjectStore, scenes: int) -> list[PromptTask]:
    repository = Repository.from_settings(DatabaseSettings(url=db_url))  # type: ignore[arg-type]
    store = PipelineStore(repository)
    collect = Collect()
    handler = PromptgenHandler(store, objects, collect, model_version="bench", chips_bucket=objects.settings.chips_bucket,
                               chip_size=128, tile_size=128, overlap=16, policy=Policy(levels=(1,)))  # fmt: skip
    for index in range(scenes):
        modality = MODALITIES[index % len(MODALITIES)]
        path, bands = generated_scene(folder, modality, seed=100 + index, size=256)
        with rasterio.open(path) as src:
            transform, crs, width, height, dtype = src.transform, src.crs.to_string(), src.width, src.height, src.dtypes[0]
        scene_id = f"bench-{index}"
        objects.put_file(objects.settings.scenes_bucket, f"{scene_id}.tif", path)
        repository.upsert_scene(SceneRecord(
            id=scene_id, source="bench", modality=modality, bands=bands, dtype=dtype, width=width, height=height,
            object_bucket=objects.settings.scenes_bucket, object_key=f"{scene_id}.tif",
            footprint=footprint_4326(transform, crs, width, height), crs=crs, transform=tuple(transform)[:6]))  # fmt: skip
        handler.on_scene_ingested(SceneIngested(scene_id=scene_id))
    store.close()
    return collect.tasks


def request_for(objects: ObjectStore, task: PromptTask) -> ServingRequest:
    with objects.get_stream(task.chip.bucket, task.chip.key) as chunks:
        bands, descriptions = read_chip(b"".join(chunks))
    return ServingRequest(bands=bands.astype(np.float32), modality=modality_name(task.modality),
                          band_names=list(task.bands) or descriptions, prompts=messages_to_dicts(task.prompts),
                          instruction=task.instruction)  # fmt: skip


async def bare_triton(requests: list[ServingRequest], concurrency: int) -> float:
    settings = TritonSettings()
    client = AsyncTritonClient(settings.grpc_url, timeout_s=600)
    limit = asyncio.Semaphore(concurrency)

    async def one(request: ServingRequest) -> None:
        async with limit:
            await client.answer(request)

    try:
        await asyncio.gather(*(one(r) for r in requests[:concurrency]))  # warm-up
        started = time.perf_counter()
        await asyncio.gather(*(one(r) for r in requests))
        return time.perf_counter() - started
    finally:
        await client.close()


def start(name: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", f"services.{name}"], cwd=REPO_ROOT, env=env,
                            stdin=subprocess.DEVNULL, stdout=log.open("ab"), stderr=subprocess.STDOUT)  # fmt: skip


def done_count(engine: sa.Engine, ids: list[str]) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(sa.text("SELECT count(*) FROM tasks WHERE status = 'done' AND id = ANY(:ids)"),
                                     {"ids": ids}) or 0)  # fmt: skip


def pipeline(tasks: list[PromptTask], warmup: list[PromptTask], db_url: str, objects: ObjectStore, folder: Path,
             concurrency: int) -> tuple[float, dict[str, float]]:  # fmt: skip
    suffix = os.urandom(4).hex()
    topic = {t: f"{t}.bench-{suffix}" for t in ("prompts.tasks", "inference.results", "results.stored")}
    env = {**os.environ, "EGX_DB_URL": db_url, "EGX_INFERENCE_GROUP_ID": f"inference-bench-{suffix}",
           "EGX_INFERENCE_INPUT_TOPIC": topic["prompts.tasks"], "EGX_INFERENCE_OUTPUT_TOPIC": topic["inference.results"],
           "EGX_INFERENCE_MAX_IN_FLIGHT": str(concurrency), "EGX_INFERENCE_MASKS_BUCKET": objects.settings.chips_bucket,
           "EGX_RESULTSTORE_GROUP_ID": f"resultstore-bench-{suffix}",
           "EGX_RESULTSTORE_INPUT_TOPIC": topic["inference.results"],
           "EGX_RESULTSTORE_OUTPUT_TOPIC": topic["results.stored"],
           "EGX_RESULTSTORE_CLAIMS_BUCKET": objects.settings.chips_bucket}  # fmt: skip
    processes = [start("inference", env, folder / "inference.log"), start("resultstore", env, folder / "resultstore.log")]
    engine = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
    try:
        with EventProducer(KafkaSettings(), client_id="bench-pipeline") as producer:
            def send(batch: list[PromptTask]) -> None:
                for task in batch:
                    producer.publish(topic["prompts.tasks"], task.scene_id, task)
                producer.flush()

            send(warmup)
            wait_done(engine, [t.task_id for t in warmup], processes, 600)
            ids = [t.task_id for t in tasks]
            started = time.perf_counter()
            send(tasks)
            wait_done(engine, ids, processes, 1800)
            elapsed = time.perf_counter() - started
        with engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT timings FROM tasks WHERE id = ANY(:ids)"), {"ids": ids}).all()
        stages: dict[str, list[float]] = {}
        for (timings,) in rows:
            for name, value in (timings or {}).items():
                stages.setdefault(name, []).append(float(value))
        return elapsed, {name: round(statistics.median(values), 1) for name, values in sorted(stages.items())}
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(timeout=60)
        engine.dispose()


def wait_done(engine: sa.Engine, ids: list[str], processes: list[subprocess.Popen[bytes]], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while done_count(engine, ids) < len(ids):
        if any(p.poll() is not None for p in processes):
            raise SystemExit("a service process exited; see its log in the bench folder")
        if time.monotonic() > deadline:
            raise SystemExit(f"only {done_count(engine, ids)} of {len(ids)} tasks done after {timeout_s} s")
        time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=int, default=4, help="256 px scenes: 63 L1 tasks each (default 4: 252)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight (default 16)")
    args = parser.parse_args(argv)
    load_stack_env(fallback=REPO_ROOT / ".stack")
    folder = Path(os.environ.get("TMPDIR", "/tmp")) / f"egx-bench-pipeline-{os.getpid()}"
    folder.mkdir(parents=True, exist_ok=True)
    with migrated_database("egx_bench") as db_url, throwaway_object_store("egx-bench") as objects:
        tasks = make_tasks(folder, db_url, objects, args.scenes + 1)
        warmup = [t for t in tasks if t.scene_id == f"bench-{args.scenes}"][: args.concurrency]
        tasks = [t for t in tasks if t.scene_id != f"bench-{args.scenes}"]
        requests = [request_for(objects, t) for t in tasks]
        triton_before_s = asyncio.run(bare_triton(requests, args.concurrency))
        pipeline_s, stages = pipeline(tasks, warmup, db_url, objects, folder, args.concurrency)
        triton_after_s = asyncio.run(bare_triton(requests, args.concurrency))
    triton_s = (triton_before_s + triton_after_s) / 2.0
    n = len(tasks)
    result = {
        "benchmark": "pipeline", "when": datetime.now(UTC).isoformat(timespec="seconds"), "host": platform.node(),
        "cpus": os.cpu_count(), "tasks": n, "concurrency": args.concurrency,
        "bare_triton": {"seconds": round(triton_s, 2), "tasks_per_s": round(n / triton_s, 3),
                        "before_s": round(triton_before_s, 2), "after_s": round(triton_after_s, 2)},
        "pipeline": {"seconds": round(pipeline_s, 2), "tasks_per_s": round(n / pipeline_s, 3),
                     "median_stage_ms": stages},
        "ratio": round(triton_s / pipeline_s, 3), "target": 0.9,
    }  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "pipeline.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "pipeline.md").write_text(markdown(result))
    sys.stdout.write(markdown(result))
    return 0


def markdown(r: dict[str, Any]) -> str:
    stages = ", ".join(f"{k} {v} ms" for k, v in r["pipeline"]["median_stage_ms"].items())
    return (
        f"# Pipeline throughput ({r['when']}, {r['cpus']} CPUs, one run)\n\n"
        f"{r['tasks']} L1 tasks, {r['concurrency']} in flight, the tiny model on the stack's Triton.\n\n"
        "| path | seconds | tasks/s |\n|---|---|---|\n"
        f"| bare Triton, before the pipeline | {r['bare_triton']['before_s']} | "
        f"{round(r['tasks'] / r['bare_triton']['before_s'], 3)} |\n"
        f"| bare Triton, after the pipeline | {r['bare_triton']['after_s']} | "
        f"{round(r['tasks'] / r['bare_triton']['after_s'], 3)} |\n"
        f"| bare Triton, mean (the reference) | {r['bare_triton']['seconds']} | {r['bare_triton']['tasks_per_s']} |\n"
        f"| prompts.tasks -> inference -> resultstore -> rows in PostGIS | {r['pipeline']['seconds']} | "
        f"{r['pipeline']['tasks_per_s']} |\n\n"
        f"Ratio pipeline / bare Triton: **{r['ratio']}** (target >= {r['target']}).\n\n"
        f"Median per-task stage times in the pipeline (inference's timings): {stages}.\n"
    )


if __name__ == "__main__":
    raise SystemExit(main())
