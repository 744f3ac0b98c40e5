"""``python -m tools.demo`` (``make demo``): the whole pipeline, from upload to answers in PostGIS.

With the local stack up (``make up``), it
1. applies the migrations and starts every service as a stack-managed background process (ingest, inference,
   promptgen, resultstore: ``deploy/local/<name>.sh start``, logs under ``.stack/logs/``);
2. registers one standing query (AOI) on ``queries.requested`` before any scene arrives;
3. uploads the sample scenes to the ingest service (``POST /v1/scenes``): a window of a real GeoTIFF from a
   package (localtileserver's Bahamas RGB, fetched by ``make up``) and generated optical, multispectral, SAR and
   thermal scenes;
4. asks one ad-hoc question about a lon/lat point on ``queries.requested``;
5. waits, with progress, until the cascade is complete (every task of the demo's scenes done and no new ones);
6. prints per scene and level what was found and where (lon/lat), the AOI's and the query's answers, and how to
   look at the results.

Everything is deterministic (scene ids from the files' content, task ids from their definition), so a second run
uploads duplicates that ingest recognises and finds the answers already stored. Exits non-zero with the failing
step and its reason.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import rasterio
import shapely
import sqlalchemy as sa
from pydantic import ValidationError
from rasterio.windows import Window
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from shapely.geometry import mapping
from sqlalchemy.engine import make_url

from earthgptx.bus import EventProducer, ensure_topics_from_settings, topics
from earthgptx.data.generate import build_scene
from earthgptx.data.raster_io import write_geotiff
from earthgptx.data.render import render
from earthgptx.geo import footprint_4326
from earthgptx.settings import DatabaseSettings, KafkaSettings, ObjectStoreSettings, load_stack_env
from earthgptx.store import migrate
from earthgptx.store.db import make_engine
from earthgptx.v1.events_pb2 import QueryCoverage, QueryRequested

log = logging.getLogger("tools.demo")

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("ingest", "inference", "promptgen", "resultstore")
SYNTHETIC = (("optical", 31), ("multispectral", 32), ("sar", 33), ("infrared", 34))
SYNTHETIC_SIZE = 128  # one model chip each
SAMPLE = "bahamas_rgb.tif"
SAMPLE_WINDOW = Window(280, 240, 240, 240)  # four overlapping chips of the real scene
AOI_ID = "demo-aoi"
AOI_INSTRUCTION = "Describe <region1>."
QUERY_INSTRUCTION = "What is the object in <region1>?"
LEVEL_NAMES = {1: "L1 scene", 2: "L2 grounding", 3: "L3 attributes", 4: "L4 relations"}
QUIET_S = 8.0


class DemoError(RuntimeError):
    """A step failed; the message says which and why."""


@dataclass
class DemoScene:
    name: str
    modality: str
    bands: tuple[str, ...]
    path: Path
    footprint: shapely.Polygon
    scene_id: str = ""


# -- the scenes ----------------------------------------------------------------------------------------------


def synthetic_scene(folder: Path, modality: str, seed: int) -> DemoScene:
    """A generated scene of ``modality`` with objects on it, as a georeferenced GeoTIFF."""
    scene = build_scene(seed, 0, SYNTHETIC_SIZE)
    image, bands = render(scene, modality, np.random.default_rng([seed, 1]))
    path = folder / f"{modality}-{seed}.tif"
    write_geotiff(path, image, bands, rasterio.crs.CRS.from_epsg(scene.georef.epsg), scene.georef.transform)
    return _described(path, f"{modality} (generated)", modality, tuple(bands))


def sample_scene(folder: Path) -> DemoScene:
    """A window of a real GeoTIFF shipped in a package (its pixels, transform and CRS as they are)."""
    cache = Path(os.environ.get("EGX_CACHE", Path.home() / ".cache" / "earthgptx"))
    source = cache / "samples" / "localtileserver" / SAMPLE
    if not source.exists():
        raise DemoError(f"the sample {SAMPLE} is missing; `make up` fetches it (deploy/local/samples.sh)")
    path = folder / f"bahamas-{SAMPLE_WINDOW.col_off}-{SAMPLE_WINDOW.row_off}.tif"
    with rasterio.open(source) as src:
        profile = src.profile | {
            "width": SAMPLE_WINDOW.width, "height": SAMPLE_WINDOW.height,
            "transform": src.window_transform(SAMPLE_WINDOW), "driver": "GTiff",
        }  # fmt: skip
        profile.pop("blockxsize", None), profile.pop("blockysize", None), profile.pop("tiled", None)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(src.read(window=SAMPLE_WINDOW))
    return _described(path, "Bahamas RGB (real, localtileserver)", "optical", ("red", "green", "blue"))


def _described(path: Path, name: str, modality: str, bands: tuple[str, ...]) -> DemoScene:
    with rasterio.open(path) as src:
        footprint = footprint_4326(src.transform, src.crs.to_string(), src.width, src.height)
    return DemoScene(name, modality, bands, path, footprint)


def upload(client: httpx.Client, scene: DemoScene) -> str:
    """POST the file to ingest; returns the scene id once it is ingested."""
    params = {"modality": scene.modality, "bands": ",".join(scene.bands), "source": "demo"}
    with scene.path.open("rb") as body:
        response = client.post("/v1/scenes", params=params, content=body.read(),
                               headers={"Content-Type": "image/tiff"})  # fmt: skip
    if response.status_code not in (200, 202):
        raise DemoError(f"ingest refused {scene.name}: {response.status_code} {response.text}")
    answer = response.json()
    scene_id = str(answer["scene_id"])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = client.get(f"/v1/scenes/{scene_id}").json()
        if status.get("status") == "ingested":
            return scene_id
        if status.get("status") == "rejected":
            raise DemoError(f"ingest rejected {scene.name}: {status.get('reason')}")
        time.sleep(0.5)
    raise DemoError(f"{scene.name} was not ingested within 120 s (see .stack/logs/ingest.log)")


# -- services and events -------------------------------------------------------------------------------------


def ingest_url() -> str:
    """The stack's ingest service (``deploy/local/ingest.sh``), or ``EGX_INGEST_URL``."""
    return os.environ.get("EGX_INGEST_URL") or f"http://127.0.0.1:{os.environ.get('EGX_INGEST_PORT', '58081')}"


def check_reachable(kafka: KafkaSettings, database: DatabaseSettings, objects: ObjectStoreSettings) -> None:
    """Fail in seconds, naming the service, when one is down (client libraries retry for tens of seconds)."""
    url = make_url(database.url.get_secret_value())
    targets = {
        "PostgreSQL": f"{url.host or '127.0.0.1'}:{url.port or 5432}",
        "Kafka": kafka.bootstrap.split(",")[0],
        "MinIO": objects.endpoint,
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


def start_services() -> None:
    """``deploy/local/<name>.sh start`` for each service (a no-op for those already running)."""
    for name in SERVICES:
        script = REPO_ROOT / "deploy" / "local" / f"{name}.sh"
        command = [str(script), "start"] if script.exists() else [str(script.with_name("worker.sh")), name, "start"]
        done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise DemoError(f"{name} did not start: {(done.stdout + done.stderr).strip()[-600:]}")


def publish(producer: EventProducer, event: QueryRequested) -> None:
    producer.publish_and_wait(topics.QUERIES_REQUESTED, event.query_id, event)


def wait_for(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise DemoError(f"{what} did not happen within {timeout_s:.0f} s (logs under .stack/logs/)")
        time.sleep(0.5)


def task_counts(engine: sa.Engine, scene_ids: Sequence[str]) -> tuple[int, int]:
    """(tasks, tasks done) of the demo's scenes."""
    with engine.connect() as connection:
        row = connection.execute(
            sa.text("SELECT count(*) AS n, count(*) FILTER (WHERE status = 'done') AS done FROM tasks "
                    "WHERE scene_id = ANY(:ids)"),
            {"ids": list(scene_ids)},
        ).one()  # fmt: skip
    return int(row.n), int(row.done)


def query_status(engine: sa.Engine, query_id: str) -> str | None:
    with engine.connect() as connection:
        return connection.scalar(sa.text("SELECT status FROM queries WHERE id = :id"), {"id": query_id})


def wait_for_cascade(engine: sa.Engine, scene_ids: Sequence[str], query_id: str, progress: Progress,
                     timeout_s: float) -> None:  # fmt: skip
    """Until every task of the scenes is done, the count has stood still for a while, and the query is answered."""
    bar = progress.add_task("cascade: tasks done", total=None)
    deadline = time.monotonic() + timeout_s
    last, still_since = (-1, -1), time.monotonic()
    while True:
        counts = task_counts(engine, scene_ids)
        progress.update(bar, total=max(counts[0], 1), completed=counts[1])
        if counts != last:
            last, still_since = counts, time.monotonic()
        complete = counts[0] > 0 and counts[0] == counts[1] and query_status(engine, query_id) != "pending"
        if complete and time.monotonic() - still_since >= QUIET_S:
            return
        if time.monotonic() > deadline:
            raise DemoError(f"the cascade did not complete within {timeout_s:.0f} s: {counts[1]} of {counts[0]} "
                            "tasks done (logs under .stack/logs/)")  # fmt: skip
        time.sleep(1.0)


# -- the report ---------------------------------------------------------------------------------------------


def _answers(engine: sa.Engine, sql: str, **params: Any) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        return [dict(r._mapping) for r in connection.execute(sa.text(sql), params)]


def _short(text: str | None, width: int = 48) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _where(row: dict[str, Any]) -> str:
    return f"{row['lon']:.5f}, {row['lat']:.5f}" if row.get("lon") is not None else "-"


def report(console: Console, engine: sa.Engine, scenes: Sequence[DemoScene], query_id: str) -> dict[str, Any]:
    summary: dict[str, Any] = {"scenes": {}, "aoi": [], "query": []}
    for scene in scenes:
        rows = _answers(
            engine,
            "SELECT t.level, t.task, t.instruction, t.tile_col_off, t.tile_row_off, r.label, r.answer_text, "
            "r.attributes, v.lon, v.lat FROM tasks AS t "
            "JOIN results AS r ON r.task_id = t.id LEFT JOIN v_results_map AS v USING (task_id, ordinal) "
            "WHERE t.scene_id = :id AND t.aoi_id IS NULL AND t.task <> 'query' "
            "ORDER BY t.tile_row_off, t.tile_col_off, t.level, t.task, t.instruction, r.ordinal",
            id=scene.scene_id,
        )  # fmt: skip
        objects = _answers(engine, "SELECT count(*) AS n FROM v_objects WHERE scene_id = :id", id=scene.scene_id)
        table = Table(title=f"{scene.name}: scene {scene.scene_id[:8]}…, {objects[0]['n']} object(s) after merging",
                      title_justify="left")  # fmt: skip
        for column in ("tile", "level", "question", "answer", "where (lon, lat)"):
            table.add_column(column)
        for row in rows:
            if row["task"] == "counting" and not (row["attributes"] or {}).get("count"):
                continue  # nothing of that class on the tile: the next level is not asked either
            tile = f"{row['tile_col_off']},{row['tile_row_off']}"
            table.add_row(tile, LEVEL_NAMES[row["level"]], _short(row["instruction"], 44), _short(row["answer_text"]),
                          _where(row))  # fmt: skip
        console.print(table)
        by_level: dict[str, int] = {}
        for row in rows:
            by_level[LEVEL_NAMES[row["level"]]] = by_level.get(LEVEL_NAMES[row["level"]], 0) + 1
        summary["scenes"][scene.scene_id] = {"name": scene.name, "answers": by_level, "objects": objects[0]["n"]}

    aoi = _answers(engine, "SELECT scene_id, answer_text, answer_parsed, parse_failure, lon, lat FROM v_aoi_answers "
                           "WHERE aoi_id = :id "
                           "AND scene_id = ANY(:scenes) AND answer_text IS NOT NULL ORDER BY scene_id, task_id",
                   id=AOI_ID, scenes=[s.scene_id for s in scenes])  # fmt: skip
    table = Table(title=f"standing query {AOI_ID!r}: {AOI_INSTRUCTION}", title_justify="left")
    for column in ("scene", "answer", "where (lon, lat)"):
        table.add_column(column)
    for row in aoi:
        # An answer the strict parser refused (e.g. a degenerate loop) is shown as such, with the reason.
        text = row["answer_text"] if row["answer_parsed"] else f"(unparsed: {row['parse_failure']}) {row['answer_text']}"
        table.add_row(row["scene_id"][:8] + "…", escape(_short(text, 70)), _where(row))
    console.print(table)
    summary["aoi"] = [{k: row[k] for k in ("scene_id", "answer_text", "lon", "lat")} for row in aoi]

    answers = _answers(engine, "SELECT status, scene_id, answer_text, lon, lat FROM v_query_answers "
                               "WHERE query_id = :id ORDER BY scene_id", id=query_id)  # fmt: skip
    status = answers[0]["status"] if answers else "missing"
    table = Table(title=f"ad-hoc query {query_id!r} ({status}): {QUERY_INSTRUCTION}", title_justify="left")
    for column in ("scene", "answer", "where (lon, lat)"):
        table.add_column(column)
    for row in answers:
        if row["answer_text"] is not None:
            table.add_row(row["scene_id"][:8] + "…", _short(row["answer_text"], 70), _where(row))
    console.print(table)
    summary["query"] = {"status": status, "answers": [r["answer_text"] for r in answers if r["answer_text"]]}
    return summary


def how_to_look(console: Console) -> None:
    console.print(
        "\n[bold]Look at the results[/bold]\n"
        "  psql:  psql \"$(grep ^EGX_DB_URL .stack/stack.env | cut -d= -f2- | sed 's/+psycopg2//')\"\n"
        "  views: v_results_map (every answer with lon/lat and GeoJSON), v_objects (objects after cross-tile\n"
        "         merging), v_aoi_answers, v_query_answers, v_scenes_map; e.g.\n"
        "         SELECT level, task, label, lon, lat FROM v_results_map ORDER BY created_at DESC LIMIT 20;\n"
        "  QGIS:  add a PostGIS connection to the same database and open results (geom, EPSG:4326).\n"
        "  API:   make up starts it when deploy/local/api.sh is there: /ogc/collections, /v1/queries, /v1/aois.\n"
        "  logs:  .stack/logs/{ingest,inference,promptgen,resultstore}.log"
    )


# -- the run ------------------------------------------------------------------------------------------------


def run(console: Console, timeout_s: float, summary_path: Path | None) -> None:
    started = time.perf_counter()
    kafka = KafkaSettings()
    database = DatabaseSettings()  # type: ignore[call-arg]
    check_reachable(kafka, database, ObjectStoreSettings())  # type: ignore[call-arg]
    engine = make_engine(database)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as progress:  # fmt: skip
        steps = progress.add_task("migrations and services", total=6)
        try:
            migrate.upgrade("head", url=database.url.get_secret_value())
        except Exception as exc:
            raise DemoError(f"PostgreSQL is not reachable or the migrations failed ({type(exc).__name__}: {exc})") from exc
        ensure_topics_from_settings(kafka, [topics.QUERIES_REQUESTED])
        start_services()
        progress.advance(steps)

        folder = Path(tempfile.mkdtemp(prefix="egx-demo-"))
        scenes = [sample_scene(folder)] + [synthetic_scene(folder, m, s) for m, s in SYNTHETIC]
        producer = EventProducer(kafka, client_id="egx-demo", producer_name="demo")
        try:
            progress.update(steps, description="registering the AOI")
            target = scenes[1].footprint
            area = shapely.box(*target.centroid.buffer(0.0025).bounds).union(
                shapely.box(*scenes[0].footprint.centroid.buffer(0.002).bounds))
            publish(producer, QueryRequested(query_id=AOI_ID, standing=True, instruction=AOI_INSTRUCTION,
                                             geojson_4326=json.dumps(mapping(area)), owner="demo", name="demo area"))
            wait_for(lambda: bool(_answers(engine, "SELECT 1 FROM aois WHERE id = :id", id=AOI_ID)), 60,
                     "promptgen registering the AOI")  # fmt: skip
            progress.advance(steps)

            uploads = progress.add_task("uploading scenes to ingest", total=len(scenes))
            with httpx.Client(base_url=ingest_url(), timeout=120) as client:
                for scene in scenes:
                    scene.scene_id = upload(client, scene)
                    progress.advance(uploads)
            progress.advance(steps)

            progress.update(steps, description="asking the ad-hoc question")
            point = scenes[2].footprint.centroid
            query_id = f"demo-query-{scenes[2].scene_id[:8]}"
            publish(producer, QueryRequested(query_id=query_id, instruction=QUERY_INSTRUCTION,
                                             geojson_4326=json.dumps(mapping(point)), owner="demo",
                                             coverage=QueryCoverage.QUERY_COVERAGE_NEWEST))  # fmt: skip
            progress.advance(steps)
        finally:
            producer.close()
        progress.update(steps, description="waiting for the cascade")
        wait_for_cascade(engine, [s.scene_id for s in scenes], query_id, progress, timeout_s)
        progress.advance(steps)
        progress.update(steps, description="done", completed=6)
    summary = report(console, engine, scenes, query_id)
    summary["total_s"] = round(time.perf_counter() - started, 1)
    how_to_look(console)
    console.print(f"\n[bold green]demo OK[/bold green] in {summary['total_s']} s")
    if summary_path is not None:
        summary_path.write_text(json.dumps(summary, indent=2, default=str))
    engine.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the cascade")
    parser.add_argument("--summary-json", type=Path, help="also write what was found to this JSON file")
    args = parser.parse_args(argv)
    console = Console() if sys.stdout.isatty() else Console(width=140)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", force=True,
                        handlers=[RichHandler(console=console, show_path=False, markup=False)])  # fmt: skip
    for noisy in ("kafka", "alembic.runtime.migration", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    load_stack_env(fallback=REPO_ROOT / ".stack")
    try:
        run(console, args.timeout, args.summary_json)
    except DemoError as exc:
        log.error("demo failed: %s", exc)
        log.error("is the local stack up? `make up` starts it, `make status` shows it")
        return 1
    except ValidationError as exc:
        log.error("demo failed: connection settings are missing or invalid (%s); `make up` writes them to "
                  ".stack/stack.env", exc.error_count())  # fmt: skip
        return 1
    except Exception as exc:  # a library error outside a step: still a clear message
        log.error("demo failed: %s: %s", type(exc).__name__, exc)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
