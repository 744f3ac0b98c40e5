"""The result store benchmark runs in CI (issue 20): a small run of ``bench/bench_resultstore.py`` end to end.

Nothing here is timed or compared with a speed: the benchmark's figures come from full runs (``make bench``,
``bench/results/resultstore.md``). This checks that the benchmark still measures what it says on the real stack:
every result reaches PostGIS through the service, the baseline writes the same rows, nothing is dead-lettered,
and the report is written with the figures it is read for. Its results go to a temporary folder.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.kafka, pytest.mark.postgis, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULTS = 300


def test_a_small_run_stores_every_result_both_ways(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "bench_resultstore.py"), "--results", str(RESULTS),
         "--pairs", "3", "--out", str(tmp_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    # Exit 1 means "ran, targets not met" (expected at this size: the group join dominates); 2+ is a crash.
    assert run.returncode in (0, 1), run.stdout[-2000:] + run.stderr[-4000:]
    report = json.loads((tmp_path / "resultstore.json").read_text())
    service, batch = report["service"], report["batch_upsert"]
    assert report["results"] == RESULTS
    assert service["dead_lettered"] == 0
    assert service["rows"] == batch["rows"] > RESULTS  # 1-2 boxes each, the same rows both ways
    assert service["results_per_s"] > 0 and batch["results_per_s"] > 0
    # Where the interpreter's time went: CPU of every thread, and the collector's share of the wall time.
    for path in (service, batch):
        assert path["python_cpu_s"] > 0 and 0 <= path["gc_s"] < path["seconds"]
    assert report["service_to_batch_ratio"] == pytest.approx(
        service["results_per_s"] / batch["results_per_s"], rel=1e-2
    )
    # Three pairs, alternating which path runs first; the ratio reported is their median, the pair shown in full
    # is the median one.
    ratios = sorted(pair["ratio"] for pair in report["pairs"])
    assert len(ratios) == 3 and report["service_to_batch_ratio"] == pytest.approx(ratios[1], abs=1e-3)
    assert [pair["order"] for pair in report["pairs"]] == ["service first", "batch upsert first", "service first"]
    assert report["meets_targets"] is (run.returncode == 0)
    markdown = (tmp_path / "resultstore.md").read_text()
    assert f"{RESULTS:,} `InferenceResult`s" in markdown and "Service / batch upsert" in markdown
