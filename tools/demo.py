"""``python -m tools.demo`` (``make demo``): one event travels through the pipeline into PostGIS.

With the local stack up (``make up``), it
1. applies the database migrations and creates the topics;
2. generates one synthetic, georeferenced optical scene (``earthgptx.data``) as a GeoTIFF;
3. sends it to the ingest service (``POST /v1/scenes``, as a ground station would) and waits until it is
   ingested: its COG in MinIO, its row in PostGIS (footprint in EPSG:4326), ``scenes.ingested`` published;
4. starts the resultstore service (``python -m services.resultstore``, a subprocess);
5. publishes one ``InferenceResult`` on ``inference.results``: a grounding answer whose box is the ground truth
   of one object of the scene, *as if the model had answered* (the model is not wired into the pipeline yet);
6. waits for the service's ``ResultStored`` on ``results.stored``;
7. reads the stored row back from PostGIS (``v_results_map``: label, lon/lat centroid, GeoJSON) with the scene
   footprint (``v_scenes_map``), checks that the stored box contains the object's true position, and stops the
   service with SIGTERM.

Every id is deterministic (scene, task, events), so running it again rewrites nothing and leaves one row.
Exits non-zero with the failing step and its reason when something goes wrong.

The scene enters through the ingest service (the section "the scene" below); the published answer stands in
for the model.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import rasterio
import shapely
import sqlalchemy as sa
from affine import Affine
from kafka import KafkaConsumer, TopicPartition
from pydantic import ValidationError
from pyproj import Transformer
from rasterio.windows import Window
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from sqlalchemy.engine import make_url

from earthgptx import events
from earthgptx.bus import EventProducer, dead_letter_topic, ensure_topics_from_settings, topics
from earthgptx.data.generate import build_scene
from earthgptx.data.raster_io import write_geotiff
from earthgptx.data.render import render
from earthgptx.data.scene import Scene, SceneObject
from earthgptx.formats import box_to_grid, format_box
from earthgptx.geo import make_tile
from earthgptx.settings import DatabaseSettings, KafkaSettings, ObjectStoreSettings, load_stack_env
from earthgptx.store import migrate
from earthgptx.store.db import make_engine
from earthgptx.store.records import TaskRecord
from earthgptx.store.repository import Repository
from earthgptx.v1.events_pb2 import (
    Answer,
    DetectedBox,
    InferenceResult,
    Level,
    PixelBox,
    ResultStored,
    TileWindow,
)

log = logging.getLogger("tools.demo")

REPO_ROOT = Path(__file__).resolve().parents[1]
SCENE_SIZE = 256
CHIP_SIZE = 128  # the whole scene, resized by 1/2, is the chip "the model" saw
MODEL_VERSION = "ground-truth-stand-in"
ACQUIRED_AT = dt.datetime(2025, 6, 1, 10, 30, tzinfo=dt.UTC)
SERVICE_GROUP = "resultstore"
STEPS = (
    "preflight",
    "migrations",
    "topics",
    "scene",
    "ingest",
    "task row",
    "service",
    "publish",
    "stored",
    "read back",
    "stop",
)


class DemoError(RuntimeError):
    """A step failed; the message says which and why."""


@dataclass
class DemoScene:
    scene_id: str
    scene: Scene
    path: Path
    crs: str
    transform: tuple[float, float, float, float, float, float]
    bands: tuple[str, ...]
    dtype: str


class Steps:
    """A progress bar over the demo's steps, with a log line (and its duration) per step."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task = progress.add_task("starting", total=len(STEPS))
        self.durations: dict[str, float] = {}

    @contextmanager
    def step(self, name: str, what: str) -> Iterator[None]:
        self.progress.update(self.task, description=what)
        started = time.perf_counter()
        try:
            yield
        except DemoError:
            raise
        except Exception as exc:
            raise DemoError(f"step '{name}' ({what}) failed: {type(exc).__name__}: {exc}") from exc
        self.durations[name] = time.perf_counter() - started
        log.info("[%s] done in %.2f s", name, self.durations[name])
        self.progress.advance(self.task)


# -- the steps --------------------------------------------------------------------------------------------


def check_reachable(kafka: KafkaSettings, database: DatabaseSettings, objects: ObjectStoreSettings) -> None:
    """Fail in seconds, naming the service, when one is down (client libraries retry for tens of seconds)."""
    url = make_url(database.url.get_secret_value())
    targets = {
        "PostgreSQL": f"{url.host or '127.0.0.1'}:{url.port or 5432}",
        "Kafka": kafka.bootstrap.split(",")[0],
        "MinIO": objects.endpoint,
        "the ingest service": ingest_url().split("//", 1)[-1],
    }
    down = []
    for name, address in targets.items():
        host, _, port = address.rpartition(":")
        try:
            with socket.create_connection((host or "127.0.0.1", int(port)), timeout=3):
                pass
        except (OSError, ValueError) as exc:
            down.append(f"{name} at {address} ({exc})")
    if down:
        raise DemoError("not reachable: " + "; ".join(down))


# -- the scene, sent through the ingest service ------------------------------------------------------------


def ingest_url() -> str:
    """The stack's ingest service (``deploy/local/ingest.sh``), or ``EGX_INGEST_URL``."""
    return os.environ.get("EGX_INGEST_URL") or f"http://127.0.0.1:{os.environ.get('EGX_INGEST_PORT', '58081')}"


def make_scene_file(seed: int, folder: Path) -> DemoScene:
    """Generate scene ``seed`` of the synthetic dataset, optical, as a plain GeoTIFF (what a station sends)."""
    scene = build_scene(seed, 0, SCENE_SIZE)
    image, bands = render(scene, "optical", np.random.default_rng([seed, 0, 100]))
    path = folder / "scene.tif"
    write_geotiff(path, image, bands, scene.georef.crs, scene.georef.transform, {"generator": "earthgptx demo"})
    with rasterio.open(path) as src:
        if src.crs is None:
            raise DemoError("the generated GeoTIFF has no CRS")
        transform = tuple(src.transform)[:6]
        crs = src.crs.to_string()
        dtype = src.dtypes[0]
    return DemoScene(
        scene_id="",  # the ingest service names it (from the file's SHA-256)
        scene=scene,
        path=path,
        crs=crs,
        transform=transform,  # type: ignore[arg-type]
        bands=tuple(bands),
        dtype=dtype,
    )


def ingest_scene(demo: DemoScene, timeout_s: float) -> dict[str, Any]:
    """POST the GeoTIFF to the ingest service and wait until it is ingested; returns its final status."""
    url = ingest_url()
    params = {
        "modality": "optical", "bands": ",".join(demo.bands), "sensor": "synthetic", "source": "earthgptx.demo",
        "acquired_at": ACQUIRED_AT.isoformat(),
    }  # fmt: skip
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            response = client.post("/v1/scenes", content=demo.path.read_bytes(), params=params,
                                   headers={"Content-Type": "image/tiff"})  # fmt: skip
            if response.status_code not in (200, 202):
                raise DemoError(f"ingest refused the scene ({response.status_code}): {response.text}")
            body = response.json()
            demo.scene_id = body["scene_id"]
            log.info("ingest answered %d: scene %s %s (%s)", response.status_code, demo.scene_id, body["status"],
                     "sent before" if body.get("duplicate") else "new")  # fmt: skip
            deadline = time.monotonic() + timeout_s
            while True:
                status = client.get(body["status_url"]).json()
                if status["status"] == "ingested":
                    return dict(status)
                if status["status"] == "rejected":
                    raise DemoError(f"ingest rejected the scene: {status['reason']}")
                if time.monotonic() > deadline:
                    raise DemoError(f"scene {demo.scene_id} not ingested within {timeout_s:.0f} s")
                time.sleep(0.1)
    except httpx.HTTPError as exc:
        raise DemoError(f"the ingest service at {url} did not answer ({exc}); `make up` starts it") from exc


# -- the answer and the service -----------------------------------------------------------------------------


def pick_object(scene: Scene) -> SceneObject:
    """The largest object: the easiest to see on a map."""
    return max(scene.objects, key=lambda obj: obj.area_px)


def grounding_result(demo: DemoScene, obj: SceneObject, tile: TileWindow) -> InferenceResult:
    """The answer the model would give to "Locate the <class>.", made from the generator's ground truth."""
    scale_x, scale_y = CHIP_SIZE / SCENE_SIZE, CHIP_SIZE / SCENE_SIZE
    x1, y1, x2, y2 = obj.bbox_px  # scene pixels (pixel edges)
    chip_box = PixelBox(x1=x1 * scale_x, y1=y1 * scale_y, x2=x2 * scale_x, y2=y2 * scale_y)
    text = format_box(box_to_grid([chip_box.x1, chip_box.y1, chip_box.x2, chip_box.y2], CHIP_SIZE, CHIP_SIZE))
    level, task = Level.LEVEL_L2_GROUNDING, "grounding"
    task_id = events.task_id(demo.scene_id, tile, level, task, [], MODEL_VERSION)
    event = InferenceResult(
        task_id=task_id,
        scene_id=demo.scene_id,
        level=level,
        task=task,
        tile=tile,
        answer=Answer(text=text, label=obj.cls, boxes=[DetectedBox(box=chip_box, label=obj.cls)]),
        model_version=MODEL_VERSION,
        timings_ms={"total": 0.0},
    )
    events.stamp(event, producer="earthgptx.demo", event_id=events.deterministic_id("demo.inference", task_id))
    return event


class ServiceProcess:
    """``python -m services.resultstore`` as a child process whose log lines are relayed to this one's log."""

    def __init__(self) -> None:
        env = {**os.environ, "EGX_RESULTSTORE_LOG_FORMAT": "text", "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "services.resultstore"],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._relay = threading.Thread(target=self._relay_lines, name="resultstore-log", daemon=True)
        self._relay.start()

    def _relay_lines(self) -> None:
        assert self.process.stdout is not None
        service_log = logging.getLogger("resultstore")
        for line in self.process.stdout:
            service_log.info("%s", line.rstrip())

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise DemoError(f"the resultstore service exited early with code {code} (its log is above)")

    def stop(self, timeout_s: float = 20.0) -> int:
        """SIGTERM, then wait; the service finishes its record, commits and leaves its group."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise DemoError(f"the resultstore service did not stop within {timeout_s:.0f} s of SIGTERM") from None
        self._relay.join(timeout=5)
        return self.process.returncode


def stored_consumer(settings: KafkaSettings, topic: str) -> KafkaConsumer:
    """A group-less reader of ``topic`` positioned at its end *now*, so only events from this run are seen."""
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap.split(","), enable_auto_commit=False)
    partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
    if not partitions:
        consumer.close()
        raise DemoError(f"topic {topic} has no partitions")
    consumer.assign(partitions)
    consumer.seek_to_end(*partitions)
    for tp in partitions:
        consumer.position(tp)  # resolve the lazy seek before anything is published
    return consumer


def wait_for_stored(
    consumer: KafkaConsumer, task_id: str, service: ServiceProcess, timeout_s: float
) -> ResultStored:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        service.check_alive()
        for batch in consumer.poll(timeout_ms=250).values():
            for record in batch:
                stored = events.decode_event(ResultStored, record.value)
                if stored.task_id == task_id:
                    return stored
    raise DemoError(f"no ResultStored for task {task_id} within {timeout_s:.0f} s")


def read_back(engine: sa.Engine, task_id: str, scene_id: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    with engine.connect() as connection:
        results = [
            dict(row._mapping)
            for row in connection.execute(
                sa.text(
                    "SELECT task_id, ordinal, level, task, label, score, answer_text, lon, lat, geojson"
                    " FROM v_results_map WHERE task_id = :task ORDER BY ordinal"
                ),
                {"task": task_id},
            )
        ]
        scene = connection.execute(
            sa.text("SELECT scene_id, status, lon, lat, geojson FROM v_scenes_map WHERE scene_id = :scene"),
            {"scene": scene_id},
        ).one_or_none()
    if scene is None:
        raise DemoError(f"scene {scene_id} is not in v_scenes_map")
    return results, dict(scene._mapping)


def show(console: Console, results: list[dict[str, Any]], scene: dict[str, Any], demo: DemoScene) -> None:
    table = Table(title="stored in PostGIS: v_results_map")
    for column in ("task id", "task", "label", "answer", "lon (centroid)", "lat (centroid)"):
        table.add_column(column, overflow="fold")
    for row in results:
        table.add_row(
            row["task_id"], f"{row['task']} (L{row['level']})", row["label"] or "", row["answer_text"],
            f"{row['lon']:.6f}", f"{row['lat']:.6f}",
        )
    console.print(table)
    for row in results:
        console.print(f"result {row['task_id']}:{row['ordinal']} GeoJSON (EPSG:4326): {row['geojson']}")
    footprint = shapely.from_geojson(scene["geojson"])
    west, south, east, north = footprint.bounds
    console.print(
        f"scene {scene['scene_id']} ({demo.crs}, {SCENE_SIZE} x {SCENE_SIZE} px) from v_scenes_map: "
        f"centroid lon {scene['lon']:.6f} lat {scene['lat']:.6f}; bounds W {west:.6f} S {south:.6f} "
        f"E {east:.6f} N {north:.6f}; {len(footprint.exterior.coords) - 1} vertices (densified edges)"
    )
    console.print(f"scene footprint GeoJSON (EPSG:4326): {scene['geojson']}", overflow="fold")


def true_position_lonlat(demo: DemoScene, obj: SceneObject) -> shapely.Point:
    """The object's ground-truth centroid in lon/lat, straight from the scene transform (not the chip's)."""
    x, y = Affine(*demo.transform) @ obj.centroid_px
    lon, lat = Transformer.from_crs(demo.crs, "EPSG:4326", always_xy=True).transform(x, y)
    return shapely.Point(lon, lat)


# -- the run ----------------------------------------------------------------------------------------------


def run(console: Console, seed: int, timeout_s: float, summary_path: Path | None) -> None:
    started = time.perf_counter()
    kafka = KafkaSettings()
    database = DatabaseSettings()  # type: ignore[call-arg]
    object_settings = ObjectStoreSettings()  # type: ignore[call-arg]
    service: ServiceProcess | None = None
    engine = make_engine(database, pool_size=1)
    progress = Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console,
    )
    try:
        with progress, tempfile.TemporaryDirectory(prefix="egx-demo-") as tmp:
            steps = Steps(progress)
            with steps.step("preflight", "checking that PostgreSQL, Kafka and MinIO are reachable"):
                check_reachable(kafka, database, object_settings)
            with steps.step("migrations", "applying database migrations"):
                migrate.upgrade("head")
            with steps.step("topics", "creating Kafka topics"):
                names = [topics.INFERENCE_RESULTS, topics.RESULTS_STORED, dead_letter_topic(SERVICE_GROUP)]
                created = ensure_topics_from_settings(kafka, names)
                log.info("topics %s ready (%s)", names, f"created {created}" if created else "all existed")
            with steps.step("scene", "generating a synthetic georeferenced scene"):
                demo = make_scene_file(seed, Path(tmp))
                obj = pick_object(demo.scene)
                log.info(
                    "scene %s: optical %d x %d px, %s, %d objects; the demo grounds the %s (object %d)",
                    demo.scene_id, SCENE_SIZE, SCENE_SIZE, demo.crs, len(demo.scene.objects), obj.cls, obj.index,
                )
            with steps.step("ingest", "sending the scene to the ingest service"):
                ingested = ingest_scene(demo, timeout_s)
                log.info("scene %s ingested (%s)", demo.scene_id, ingested["name"] or "upload")
            with steps.step("task row", "writing the task row to PostGIS"):
                repository = Repository(engine)
                tile = make_tile(
                    Affine(*demo.transform), demo.crs, Window(0, 0, SCENE_SIZE, SCENE_SIZE),
                    CHIP_SIZE, CHIP_SIZE,
                )
                event = grounding_result(demo, obj, tile)
                # What promptgen will do when it emits the task: the row carries the instruction, which the
                # InferenceResult does not; the service inserts the task only if it is missing.
                repository.upsert_tasks([
                    TaskRecord(
                        id=event.task_id, scene_id=demo.scene_id, window=(0, 0, SCENE_SIZE, SCENE_SIZE),
                        level=int(event.level), task=event.task, instruction=f"Locate the {obj.cls}.",
                        model_version=MODEL_VERSION,
                    )
                ])
            with steps.step("service", "starting the resultstore service"):
                service = ServiceProcess()
                consumer = stored_consumer(kafka, topics.RESULTS_STORED)
            with steps.step("publish", "publishing the InferenceResult"):
                log.warning(
                    "the model is not wired into the pipeline yet: this InferenceResult carries the ground-truth "
                    "box of the %s, as if the model had answered %s to 'Locate the %s.'",
                    obj.cls, event.answer.text, obj.cls,
                )
                with EventProducer(kafka, client_id="egx-demo", producer_name="earthgptx.demo") as producer:
                    sent = producer.publish_and_wait(topics.INFERENCE_RESULTS, demo.scene_id, event)
                published_at = time.perf_counter()
                log.info("published task %s to %s[%d]@%d", event.task_id, sent.topic, sent.partition, sent.offset)
            with steps.step("stored", "waiting for ResultStored"):
                try:
                    stored = wait_for_stored(consumer, event.task_id, service, timeout_s)
                finally:
                    consumer.close()
                latency_s = time.perf_counter() - published_at
                log.info("ResultStored for task %s (rows %s) %.2f s after publishing",
                         stored.task_id, list(stored.result_ids), latency_s)
            with steps.step("read back", "reading the stored rows from PostGIS"):
                results, scene_row = read_back(engine, event.task_id, demo.scene_id)
                if len(results) != 1:
                    raise DemoError(f"expected 1 result row for task {event.task_id}, found {len(results)}")
                truth = true_position_lonlat(demo, obj)
                if not shapely.from_geojson(results[0]["geojson"]).contains(truth):
                    raise DemoError(f"the stored box does not contain the {obj.cls}'s true position {truth.wkt}")
                log.info("the stored box contains the %s's true position (%.6f, %.6f)", obj.cls, truth.x, truth.y)
            with steps.step("stop", "stopping the service"):
                code = service.stop()
                service = None
                if code != 0:
                    raise DemoError(f"the resultstore service exited with code {code} after SIGTERM")
        show(console, results, scene_row, demo)
        total_s = time.perf_counter() - started
        console.print(
            f"[bold green]demo OK[/] in {total_s:.1f} s: InferenceResult -> resultstore -> PostGIS -> "
            f"ResultStored in {latency_s:.2f} s"
        )
        if summary_path is not None:
            summary = {
                "scene_id": demo.scene_id,
                "task_id": event.task_id,
                "object": {"class": obj.cls, "lon": truth.x, "lat": truth.y},
                "results": results,
                "scene": scene_row,
                "result_ids": list(stored.result_ids),
                "latency_s": latency_s,
                "total_s": total_s,
                "steps_s": steps.durations,
            }
            summary_path.write_text(json.dumps(summary, indent=2, default=str))
    finally:
        if service is not None:
            try:
                service.stop()
            except DemoError as exc:
                log.error("%s", exc)
        engine.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=7, help="which synthetic scene to use (default 7)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for ResultStored")
    parser.add_argument("--summary-json", type=Path, help="also write what was stored to this JSON file")
    args = parser.parse_args(argv)

    # Wider than rich's 80-column default when the output is a file or a pipe (make, CI logs).
    console = Console() if sys.stdout.isatty() else Console(width=140)
    logging.basicConfig(
        level=logging.INFO, format="%(name)s: %(message)s", force=True,
        handlers=[RichHandler(console=console, show_path=False, markup=False)],
    )
    for noisy in ("kafka", "alembic.runtime.migration"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    loaded = load_stack_env(fallback=REPO_ROOT / ".stack")
    if loaded:
        log.info("connection settings from .stack/stack.env: %s", ", ".join(sorted(loaded)))
    try:
        run(console, args.seed, args.timeout, args.summary_json)
    except DemoError as exc:
        log.error("demo failed: %s", exc)
        log.error("is the local stack up? `make up` starts it, `make status` shows it")
        return 1
    except ValidationError as exc:
        log.error("demo failed: connection settings are missing or invalid (%s); `make up` writes them to "
                  ".stack/stack.env", "; ".join(f"{exc.title}.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
        return 1
    except Exception as exc:  # a library error outside a step: still a clear message
        log.error("demo failed: %s: %s", type(exc).__name__, exc)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
