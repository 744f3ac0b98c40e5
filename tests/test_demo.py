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

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_demo(
    tmp_path: Path, name: str, timeout_s: float = 1200, **env: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    summary = tmp_path / f"{name}.json"
    completed = subprocess.run(
        [sys.executable, "-m", "tools.demo", "--summary-json", str(summary)],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    data = json.loads(summary.read_text()) if summary.exists() else {}
    return completed, data


def rows_of(scene_ids: list[str]) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(os.environ["EGX_DB_URL"], poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            return [tuple(r) for r in connection.execute(
                sa.text("SELECT task_id, ordinal, updated_at FROM results WHERE scene_id = ANY(:ids) "
                        "ORDER BY task_id, ordinal"), {"ids": scene_ids})]  # fmt: skip
    finally:
        engine.dispose()


@pytest.mark.kafka
@pytest.mark.postgis
@pytest.mark.minio
@pytest.mark.triton
@pytest.mark.slow
@pytest.mark.timeout(1800)  # a fresh stack asks the tiny model ~100 questions on the CPU (minutes)
def test_demo_answers_every_scene_the_aoi_and_the_query_and_can_run_twice(tmp_path: Path) -> None:
    first, summary = run_demo(tmp_path, "first")
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    assert "demo OK" in first.stdout and "psql" in first.stdout
    scenes = summary["scenes"]
    assert len(scenes) == 5 and any("real" in s["name"] for s in scenes.values())
    assert all("L1 scene" in s["answers"] for s in scenes.values())
    assert summary["aoi"] and all(a["lon"] is not None and a["answer_text"] for a in summary["aoi"])
    assert summary["query"]["status"] == "answered" and summary["query"]["answers"]

    # Idempotent: a second run finds the scenes ingested and the answers stored, and rewrites nothing.
    rows = rows_of(list(scenes))
    second, again = run_demo(tmp_path, "second", timeout_s=300)
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
    assert set(again["scenes"]) == set(scenes)
    assert rows_of(list(scenes)) == rows


def test_demo_fails_fast_with_the_reason_when_a_service_is_down(tmp_path: Path) -> None:
    completed, summary = run_demo(tmp_path, "down", timeout_s=120, EGX_KAFKA_BOOTSTRAP="127.0.0.1:1")
    assert completed.returncode == 1
    assert "Kafka at 127.0.0.1:1" in completed.stdout and "make up" in completed.stdout
    assert summary == {}
