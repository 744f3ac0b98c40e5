"""Result writes: bulk idempotent upserts through the repository vs ``COPY`` into the same table, same run.

Both paths start from the same in-memory ``ResultRecord`` list (polygon geometry in EPSG:4326, pixel box,
label, JSON attributes, score) and end with committed rows in ``results`` of a throwaway, migrated database
(all indexes in place: primary key, GiST on geometry, btree, BRIN). Timed per repeat, on an emptied table:
- ``upsert``: ``Repository.upsert_results`` (chunked ``INSERT ... ON CONFLICT DO UPDATE ... WHERE changed``);
- ``replay``: the same call again (a re-delivered batch: every row conflicts, nothing changes);
- ``update``: the same call with every score changed (every row conflicts and is rewritten);
- ``copy``: psycopg2 ``copy_expert`` of CSV with hex EWKB geometry (the bulk-load ceiling, not idempotent).
Targets (issue 2): upsert ≥ 5,000 rows/s and ≥ 0.3 × the COPY rate.

    python bench/bench_result_writes.py [--rows 50000] [--repeats 3]

Writes bench/results/result_writes.json and .md. Needs the local stack's PostgreSQL (``make up``).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests")]  # the library, and the test kits

import numpy as np  # noqa: E402
import shapely  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from kits.databases import migrated_database  # noqa: E402
from shapely.geometry import Polygon  # noqa: E402

from earthgptx.settings import load_stack_env  # noqa: E402
from earthgptx.store.db import make_engine  # noqa: E402
from earthgptx.store.records import ResultRecord, SceneRecord, TaskRecord  # noqa: E402
from earthgptx.store.repository import DEFAULT_CHUNK_SIZE, Repository  # noqa: E402

RESULTS_DIR = REPO_ROOT / "bench" / "results"
TARGET_ROWS_PER_S = 5_000
TARGET_RATIO = 0.3
MODEL_VERSION = "bench-0.1"
COPY_COLUMNS = (
    "task_id", "ordinal", "scene_id", "answer_text", "label", "attributes", "geom", "pixel_geom", "score",
    "model_version",
)  # fmt: skip


def make_records(
    rows: int, per_task: int, scene_id: str, seed: int = 0
) -> tuple[list[str], list[ResultRecord]]:
    """Rotated boxes (ships) scattered over a 1° square, ``per_task`` objects per task."""
    rng = np.random.default_rng(seed)
    task_ids = [f"bench-task-{i:06d}" for i in range((rows + per_task - 1) // per_task)]
    centers = rng.uniform([14.0, 41.0], [15.0, 42.0], size=(rows, 2))
    half = rng.uniform(5e-5, 4e-4, size=(rows, 2))
    angles = rng.uniform(0, np.pi, size=rows)
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=float)
    records = []
    for i in range(rows):
        cos, sin = np.cos(angles[i]), np.sin(angles[i])
        local = corners * half[i]
        ring = np.column_stack(
            [
                centers[i, 0] + local[:, 0] * cos - local[:, 1] * sin,
                centers[i, 1] + local[:, 0] * sin + local[:, 1] * cos,
            ]
        )
        px = rng.integers(0, 900, size=2)
        records.append(
            ResultRecord(
                task_id=task_ids[i // per_task],
                ordinal=i % per_task,
                scene_id=scene_id,
                answer_text=f"ship [{px[0]}, {px[1]}, {px[0] + 40}, {px[1] + 20}]",
                model_version=MODEL_VERSION,
                label="ship" if i % 3 else "boat",
                attributes={
                    "length_m": round(float(half[i, 0]) * 2e5, 1),
                    "heading_deg": int(angles[i] * 57.3),
                },
                geom=Polygon(ring),
                pixel_geom=shapely.box(px[0], px[1], px[0] + 40, px[1] + 20),
                score=float(rng.uniform(0.3, 1.0)),
            )
        )
    return task_ids, records


def copy_results(engine: sa.Engine, records: list[ResultRecord]) -> None:
    """The baseline: CSV with hex EWKB geometry through ``COPY ... FROM STDIN``."""
    geoms = shapely.to_wkb(
        shapely.set_srid(np.asarray([r.geom for r in records], dtype=object), 4326),
        hex=True,
        include_srid=True,
    )
    pixel = shapely.to_wkb(np.asarray([r.pixel_geom for r in records], dtype=object), hex=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for r, geom, pixel_geom in zip(records, geoms, pixel, strict=True):
        writer.writerow(
            (r.task_id, r.ordinal, r.scene_id, r.answer_text, r.label, json.dumps(r.attributes), geom, pixel_geom,
             r.score, r.model_version)
        )  # fmt: skip
    buffer.seek(0)
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.copy_expert(  # type: ignore[attr-defined]
            f"COPY results ({', '.join(COPY_COLUMNS)}) FROM STDIN WITH (FORMAT csv)", buffer
        )
        cursor.close()
        raw.commit()
    finally:
        raw.close()


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--per-task", type=int, default=10, help="results per task")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()

    load_stack_env(fallback=REPO_ROOT / ".stack")
    with migrated_database(prefix="egx_bench") as url:
        engine = make_engine(url=url, pool_size=2)
        repository = Repository(engine, chunk_size=args.chunk_size)
        scene = SceneRecord(
            id="bench-scene", source="bench", modality="optical", bands=("r", "g", "b"), dtype="uint8",
            width=10_000, height=10_000, object_bucket="scenes", object_key="bench/scene.tif",
            footprint=shapely.box(14.0, 41.0, 15.0, 42.0), crs="EPSG:4326",
        )  # fmt: skip
        repository.upsert_scene(scene)
        task_ids, records = make_records(args.rows, args.per_task, scene.id)
        repository.upsert_tasks(
            TaskRecord(tid, scene.id, (0, 0, 512, 512), 2, "ground", "Find all ships.", MODEL_VERSION)
            for tid in task_ids
        )
        rescored = [replace(r, score=(r.score or 0.0) / 2) for r in records]

        def truncate() -> None:
            with engine.begin() as connection:
                connection.execute(sa.text("TRUNCATE results"))

        def count() -> int:
            with engine.connect() as connection:
                return int(connection.scalar(sa.text("SELECT count(*) FROM results")) or 0)

        times: dict[str, list[float]] = {"upsert": [], "replay": [], "update": [], "copy": []}
        written: dict[str, list[int]] = {"upsert": [], "replay": [], "update": []}
        for repeat in range(args.repeats):
            # Alternate the order so neither path always runs on a freshly vacuumed/cached table.
            order = ("repository", "copy") if repeat % 2 == 0 else ("copy", "repository")
            for path in order:
                truncate()
                if path == "copy":
                    times["copy"].append(timed(lambda: copy_results(engine, records)))
                    assert count() == args.rows
                    continue
                for phase, batch in (("upsert", records), ("replay", records), ("update", rescored)):
                    start = time.perf_counter()
                    written[phase].append(repository.upsert_results(batch))
                    times[phase].append(time.perf_counter() - start)
                assert count() == args.rows
            print(  # noqa: T201 (a benchmark script prints its summary)
                f"repeat {repeat + 1}/{args.repeats}: "
                + ", ".join(f"{k} {args.rows / v[-1]:,.0f} rows/s" for k, v in times.items()),
                flush=True,
            )

        with engine.connect() as connection:
            pg_version = connection.scalar(sa.text("SHOW server_version"))
            postgis_version = connection.scalar(sa.text("SELECT postgis_lib_version()"))
        repository.close()

    rate = {phase: args.rows / statistics.median(values) for phase, values in times.items()}
    ratio = rate["upsert"] / rate["copy"]
    report = {
        "benchmark": "result_writes",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "rows": args.rows,
        "results_per_task": args.per_task,
        "repeats": args.repeats,
        "chunk_size": args.chunk_size,
        "rows_per_s_median": {k: round(v) for k, v in rate.items()},
        "seconds": {k: [round(t, 3) for t in v] for k, v in times.items()},
        "rows_written_by_upsert": written,
        "upsert_to_copy_ratio": round(ratio, 3),
        # Both paths run back to back within a repeat, so these pairs see the same load on the shared host.
        "upsert_to_copy_ratio_per_repeat": [
            round(copy_s / upsert_s, 3)
            for upsert_s, copy_s in zip(times["upsert"], times["copy"], strict=True)
        ],
        "targets": {"rows_per_s": TARGET_ROWS_PER_S, "ratio_to_copy": TARGET_RATIO},
        "meets_targets": rate["upsert"] >= TARGET_ROWS_PER_S and ratio >= TARGET_RATIO,
        "environment": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "postgresql": pg_version,
            "postgis": postgis_version,
            "sqlalchemy": sa.__version__,
            "shapely": shapely.__version__,
            "machine": platform.machine(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result_writes.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "result_writes.md").write_text(render_markdown(report))
    print(  # noqa: T201
        json.dumps(report["rows_per_s_median"]),
        f"ratio {ratio:.2f}",
        "meets targets:",
        report["meets_targets"],
    )
    return 0 if report["meets_targets"] else 1


def render_markdown(report: dict) -> str:
    rate = report["rows_per_s_median"]
    env = report["environment"]
    lines = [
        "# Result writes: repository upserts vs COPY",
        "",
        f"{report['rows']:,} results with polygon geometry ({report['results_per_task']} per task) into `results` "
        f"of a migrated throwaway database (all indexes), median of {report['repeats']} repeats, measured "
        f"{report['date']} by `bench/bench_result_writes.py`.",
        "",
        "| path | rows/s (median) | seconds per repeat | rows written |",
        "|---|---:|---|---:|",
    ]
    descriptions = {
        "upsert": "repository `upsert_results`, empty table",
        "replay": "same batch again (re-delivery, no change)",
        "update": "same keys, every score changed",
        "copy": "`COPY ... FROM STDIN` (CSV, hex EWKB), baseline",
    }
    for phase, text in descriptions.items():
        written = report["rows_written_by_upsert"].get(phase)
        lines.append(
            f"| {text} | {rate[phase]:,} | {', '.join(f'{s:.2f}' for s in report['seconds'][phase])} | "
            f"{written[0] if written else report['rows']:,} |"
        )
    verdict = "met" if report["meets_targets"] else "NOT met"
    lines += [
        "",
        f"Upsert / COPY = **{report['upsert_to_copy_ratio']:.2f}** (medians; per repeat: "
        f"{', '.join(f'{r:.2f}' for r in report['upsert_to_copy_ratio_per_repeat'])}); targets ≥ {report['targets']['rows_per_s']:,} "
        f"rows/s and ≥ {report['targets']['ratio_to_copy']} of COPY: **{verdict}**.",
        "",
        f"Environment: {env['cpus']} CPUs ({env['machine']}), PostgreSQL {env['postgresql']}, PostGIS "
        f"{env['postgis']}, Python {env['python']}, SQLAlchemy {env['sqlalchemy']}, shapely {env['shapely']}; "
        f"load average {env['load_average_at_end'][0]:.2f} at the end; "
        "the database server runs on the same host and is shared with other work, so absolute numbers vary "
        "between runs; the ratio is the comparison that matters.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
