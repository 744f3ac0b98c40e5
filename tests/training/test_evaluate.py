"""Evaluation end to end: held-out data from its own seed, batched generate, the report files and the exit code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from training_testkit import small_run

from earthgptx.data import load_records
from earthgptx.data.vocabulary import TASKS
from earthgptx.model import EarthGPTXForConditionalGeneration, EarthGPTXProcessor
from earthgptx.training import evaluate as evaluate_module
from earthgptx.training.checkpoints import save_model
from earthgptx.training.datasets import build_run_tokenizer
from earthgptx.training.evaluate import (
    PARTIAL_REPORT_JSON,
    PARTIAL_REPORT_MD,
    REPORT_JSON,
    REPORT_MD,
    evaluate,
)
from earthgptx.training.prepare import build_model_config


@pytest.fixture()
def untrained_model(tmp_path: Path, train_dir: Path) -> Path:
    """A freshly initialised small model saved like a trained one."""
    run = small_run(tmp_path, train_dir)
    records = load_records(train_dir / "records.jsonl")
    tokenizer = build_run_tokenizer(records)
    config = build_model_config(run.model, tokenizer)
    torch.manual_seed(0)
    model = EarthGPTXForConditionalGeneration(config)
    out = tmp_path / "untrained"
    save_model(model, EarthGPTXProcessor(tokenizer, config), out, "float16")
    return out


def test_evaluate_writes_the_report(tmp_path: Path, train_dir: Path, untrained_model: Path) -> None:
    run = small_run(tmp_path, train_dir)
    report = evaluate(run, untrained_model, limit=60, device="cpu", progress=False)
    assert set(report["tasks"]) <= set(TASKS) and len(report["tasks"]) >= 6
    assert report["n_rows"] == 60 and report["eval_data"]["records"] == 60
    assert report["eval_data"]["seed"] == 11 and report["eval_data"]["train_seed"] == 3
    for task, entry in report["tasks"].items():
        assert entry["overall"]["n"] == sum(g["n"] for g in entry["by_modality"].values()), task
        assert entry["cells"], task
    assert len(report["acceptance"]) == 7
    assert report["passed"] is False  # an untrained model cannot meet the targets

    # a partial run (--limit) writes the partial report and leaves the full one alone
    assert not (untrained_model / REPORT_JSON).exists() and not (untrained_model / REPORT_MD).exists()
    saved = json.loads((untrained_model / PARTIAL_REPORT_JSON).read_text())
    assert saved["n_rows"] == 60 and "markdown" not in saved and saved["partial"] is True
    markdown = (untrained_model / PARTIAL_REPORT_MD).read_text()
    assert "## Acceptance" in markdown and "| scene_classification | accuracy |" in markdown
    # The held-out records come from the eval seed, not from the training data.
    held_out = load_records(Path(run.data.eval_dir) / "records.jsonl")
    train_ids = {r["image"] for r in load_records(train_dir / "records.jsonl")}
    assert json.loads((Path(run.data.eval_dir) / "dataset.json").read_text())["seed"] == 11
    assert held_out and train_ids  # both exist; the seeds differ, so the scenes differ


def test_evaluate_cli_exit_code(
    tmp_path: Path, train_dir: Path, untrained_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = small_run(tmp_path, train_dir)
    monkeypatch.setattr(evaluate_module, "load_recipe", lambda path: run)
    args = ["--config", "unused.yaml", "--model", str(untrained_model), "--limit", "12", "--device", "cpu"]
    assert evaluate_module.main([*args, "--no-progress"]) == 1
    assert evaluate_module.main([*args, "--no-progress", "--no-fail"]) == 0


def test_evaluate_tasks_keeps_only_those_tasks(
    tmp_path: Path, train_dir: Path, untrained_model: Path
) -> None:
    """``tasks`` evaluates the named tasks only; the other targets read "task not evaluated"; unknown names fail."""
    run = small_run(tmp_path, train_dir)
    report = evaluate(
        run, untrained_model, device="cpu", progress=False, tasks=["pixel_grounding", "relation"]
    )
    assert set(report["tasks"]) == {"pixel_grounding", "relation"}
    assert report["eval_data"]["tasks"] == ["pixel_grounding", "relation"]
    # positional relations are also binned by the gap between the two prompts' centroids
    relation = report["tasks"]["relation"]
    assert relation["by_gap"] and set(relation["by_gap"]) <= {"left of", "above", "nearer to"}
    assert sum(b["n"] for bins in relation["by_gap"].values() for b in bins.values()) == sum(
        relation["by_kind"][kind]["n"] for kind in relation["by_gap"]
    )
    held_out = load_records(Path(run.data.eval_dir) / "records.jsonl")
    assert report["n_rows"] == sum(r["task"] in ("pixel_grounding", "relation") for r in held_out)
    skipped = [c for c in report["acceptance"] if c["task"] not in ("pixel_grounding", "relation")]
    assert skipped and all(c["detail"] == "task not evaluated" and not c["passed"] for c in skipped)
    with pytest.raises(ValueError, match="unknown tasks"):
        evaluate(run, untrained_model, device="cpu", progress=False, tasks=["segmentation"])
    assert not (untrained_model / REPORT_JSON).exists()  # partial: only the partial report was written
    full = evaluate(run, untrained_model, device="cpu", progress=False)
    assert full["partial"] is False and full["n_rows"] == len(held_out)
    assert json.loads((untrained_model / REPORT_JSON).read_text())["n_rows"] == len(held_out)
    assert json.loads((untrained_model / PARTIAL_REPORT_JSON).read_text())["eval_data"]["tasks"] == [
        "pixel_grounding",
        "relation",
    ]


def test_evaluate_ood_and_abstention_splits(tmp_path: Path, train_dir: Path, untrained_model: Path) -> None:
    """``--ood`` sets the second renderer's figures beside the ID ones, ``--abstention`` scores the negatives; neither
    changes the acceptance, and ``--no-id`` writes a partial report beside a reference ID report."""
    run = small_run(tmp_path, train_dir)
    run.data.ood_dir = str(tmp_path / "ood-data")
    run.data.n_ood_scenes = 1
    run.data.abstention_dir = str(tmp_path / "abstention-data")
    run.data.n_abstention_scenes = 4
    report = evaluate(run, untrained_model, device="cpu", progress=False, splits=("id", "ood", "abstention"))
    assert report["splits"] == ["id", "ood", "abstention"] and report["partial"] is False
    assert len(report["acceptance"]) == 7 and report["passed"] is False
    ood = report["ood"]
    assert ood["id_source"] == "this run" and ood["eval_data"]["seed"] == run.data.ood_seed
    ood_records = load_records(Path(run.data.ood_dir) / "records.jsonl")
    assert ood["report"]["n_rows"] == len(ood_records) and {r["source"] for r in ood_records} == {
        "synthetic-ood"
    }
    for task, entry in ood["comparison"]["tasks"].items():
        assert entry["overall"]["id"] == report["tasks"][task]["overall"][entry["metric"]]
    abstention = report["abstention"]
    negatives = [
        r
        for r in load_records(Path(run.data.abstention_dir) / "records.jsonl")
        if r["answer"].get("negative")
    ]
    assert (
        sum(k["n"] for k in abstention["kinds"].values())
        == len(negatives)
        == abstention["eval_data"]["records"]
    )
    assert "false_abstention" in abstention
    markdown = (untrained_model / REPORT_MD).read_text()
    assert (
        "## Acceptance" in markdown and "## Out of distribution" in markdown and "## Abstention" in markdown
    )

    # Without the ID split: a partial report in another folder, OOD beside the reference report's ID figures.
    out = tmp_path / "reports"
    partial = evaluate(
        run, untrained_model, device="cpu", progress=False, splits=("ood",), report_dir=out,
        reference_report=untrained_model / REPORT_JSON,
    )  # fmt: skip
    assert partial["passed"] is None and partial["partial"] is True and not partial["tasks"]
    assert partial["ood"]["id_source"] == str(untrained_model / REPORT_JSON)
    assert partial["ood"]["comparison"] == ood["comparison"]  # same model, same sets: the same figures
    assert (out / PARTIAL_REPORT_JSON).is_file() and not (out / REPORT_JSON).exists()
    with pytest.raises(ValueError, match="evaluation splits"):
        evaluate(run, untrained_model, device="cpu", progress=False, splits=("test",))
