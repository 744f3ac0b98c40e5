"""``python -m tools.demo`` (what ``make demo`` runs) against the local stack, as a user would run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from minio import Minio

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_demo(tmp_path: Path, name: str, **env: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    summary = tmp_path / f"{name}.json"
    completed = subprocess.run(
        [sys.executable, "-m", "tools.demo", "--summary-json", str(summary)],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    data = json.loads(summary.read_text()) if summary.exists() else {}
    return completed, data


def stored_rows(task_id: str) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(os.environ["EGX_DB_URL"], poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            return [tuple(r) for r in connection.execute(
                sa.text("SELECT r.ordinal, r.label, v.lon, v.lat, v.geojson, r.updated_at FROM results AS r"
                        " JOIN v_results_map AS v USING (task_id, ordinal) WHERE r.task_id = :t"),
                {"t": task_id},
            )]
    finally:
        engine.dispose()


@pytest.mark.kafka
@pytest.mark.postgis
@pytest.mark.minio
def test_demo_stores_one_georeferenced_result_and_can_run_twice(tmp_path: Path) -> None:
    first, summary = run_demo(tmp_path, "first")
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    assert "demo OK" in first.stdout and summary["task_id"] in first.stdout
    assert "the model is not wired into the pipeline yet" in first.stdout

    rows = stored_rows(summary["task_id"])
    [(ordinal, label, lon, lat, geojson, _)] = rows
    assert (ordinal, label) == (0, summary["object"]["class"])
    # The demo's own output is what PostGIS holds, and the box sits on the object's true position (±~20 m).
    [printed] = summary["results"]
    assert (printed["lon"], printed["lat"], printed["geojson"]) == (lon, lat, geojson)
    assert lon == pytest.approx(summary["object"]["lon"], abs=2e-4)
    assert lat == pytest.approx(summary["object"]["lat"], abs=2e-4)
    assert summary["scene"]["scene_id"] == summary["scene_id"]
    assert summary["total_s"] < 60

    client = Minio(
        os.environ["EGX_S3_ENDPOINT"], access_key=os.environ["EGX_S3_ACCESS_KEY"],
        secret_key=os.environ["EGX_S3_SECRET_KEY"], secure=False,
    )
    stat = client.stat_object("scenes", f"cog/{summary['scene_id']}.tif")  # the COG ingest wrote
    assert (stat.size or 0) > 0

    # Idempotent: a second run finds the same ids and leaves the very same row (updated_at included).
    second, again = run_demo(tmp_path, "second")
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
    assert (again["task_id"], again["scene_id"]) == (summary["task_id"], summary["scene_id"])
    assert stored_rows(summary["task_id"]) == rows


def test_demo_fails_fast_with_the_reason_when_a_service_is_down(tmp_path: Path) -> None:
    completed, summary = run_demo(tmp_path, "down", EGX_KAFKA_BOOTSTRAP="127.0.0.1:1")
    assert completed.returncode == 1
    assert "Kafka at 127.0.0.1:1" in completed.stdout and "make up" in completed.stdout
    assert summary == {}
