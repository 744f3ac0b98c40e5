"""Stage 14 (the shipped model), its GPU continuation, and the data settings they rely on (issue 25)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from earthgptx.data.generate import SceneOptions
from earthgptx.training.datasets import dataset_options, ensure_dataset
from earthgptx.training.recipe import DataSettings, load_recipe

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_stage14_is_the_shipped_model_and_fine_tunes_stage13_with_negatives_and_randomisation() -> None:
    stage14 = load_recipe(CONFIGS / "tiny.yaml")
    stage13 = load_recipe(CONFIGS / "tiny-stage13.yaml")
    assert stage14.name == "tiny-stage14" and stage14.train.output_dir == "models/earthgptx-tiny"
    assert stage14.model.init_from == stage13.train.output_dir == "runs/tiny-stage13-model"
    assert stage14.data.negatives is True and stage14.data.randomise == 0.5
    held_out = {stage14.data.eval_seed, stage14.data.ood_seed, stage14.data.abstention_seed}
    earlier = {
        load_recipe(p).data.train_seed
        for p in CONFIGS.glob("tiny*.yaml")
        if p.name not in {"tiny.yaml", "tiny-gpu-stage15.yaml"}
    }
    assert stage14.data.train_seed not in held_out | earlier  # fresh scenes
    assert stage14.train.task_weights == stage13.train.task_weights
    assert stage14.optim.lr < stage13.optim.lr  # a fine-tune keeps what stage 13 knows
    assert stage14.train.time_budget_s == 0  # a fixed number of steps: the recipe does not depend on the host
    # The held-out sets are those `make eval` read for stage 13.
    assert (stage14.data.eval_seed, stage14.data.n_eval_scenes) == (
        stage13.data.eval_seed,
        stage13.data.n_eval_scenes,
    )
    assert stage13.data.negatives is False and stage13.data.randomise == 0.0


def test_the_gpu_continuation_starts_from_the_shipped_model_on_fresh_scenes() -> None:
    gpu = load_recipe(CONFIGS / "tiny-gpu-stage15.yaml")
    shipped = load_recipe(CONFIGS / "tiny.yaml")
    assert gpu.model.init_from == shipped.train.output_dir == "models/earthgptx-tiny"
    # Its output never lands on the shipped model: the lead copies it in after `make eval` passes on it.
    assert gpu.train.output_dir == "runs/tiny-stage15-model"
    assert (gpu.data.negatives, gpu.data.randomise) == (shipped.data.negatives, shipped.data.randomise)
    others = {
        load_recipe(p).data.train_seed
        for p in CONFIGS.glob("tiny*.yaml")
        if p.name != "tiny-gpu-stage15.yaml"
    }
    assert gpu.data.train_seed not in others | {
        gpu.data.eval_seed,
        gpu.data.ood_seed,
        gpu.data.abstention_seed,
    }
    assert gpu.train.task_weights == shipped.train.task_weights
    assert "tiny-gpu-stage15.yaml" in (CONFIGS.parent / "tools" / "gpu_retrain.sh").read_text()


@pytest.mark.parametrize("field", ["eval_seed", "ood_seed", "abstention_seed"])
def test_a_held_out_seed_is_never_a_training_seed(field: str) -> None:
    seed = getattr(DataSettings(), field)
    with pytest.raises(ValueError, match=field):
        DataSettings(train_seed=seed)


def test_randomise_is_a_share() -> None:
    with pytest.raises(ValueError, match="randomise"):
        DataSettings(randomise=-0.1)


def test_a_dataset_is_reused_only_with_the_same_options(tmp_path: Path) -> None:
    out = tmp_path / "data"
    ensure_dataset(out, 2, 5, progress=False, options=SceneOptions(negatives=True))
    meta = json.loads((out / "dataset.json").read_text())
    assert dataset_options(meta) == SceneOptions(negatives=True)
    stamp = (out / "records.jsonl").stat().st_mtime_ns
    ensure_dataset(out, 2, 5, progress=False, options=SceneOptions(negatives=True))
    assert (out / "records.jsonl").stat().st_mtime_ns == stamp  # reused
    ensure_dataset(out, 2, 5, progress=False)
    assert dataset_options(json.loads((out / "dataset.json").read_text())) == SceneOptions()
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert not any(r["answer"].get("negative") for r in records)
    # A dataset written before the options existed reads as both off.
    assert dataset_options({"seed": 5}) == SceneOptions()


def test_stage15_continues_the_shipped_model_with_effects_on_fresh_scenes() -> None:
    stage15 = load_recipe(CONFIGS / "tiny-stage15.yaml")
    shipped = load_recipe(CONFIGS / "tiny.yaml")
    assert stage15.model.init_from == "models/earthgptx-tiny"
    # its output never lands on the shipped model by itself: it is copied in only after `make eval` passes on it
    assert stage15.train.output_dir == "runs/tiny-stage15-model"
    assert (stage15.data.negatives, stage15.data.effects) == (True, True)
    assert stage15.data.randomise > shipped.data.randomise
    others = {load_recipe(p).data.train_seed for p in CONFIGS.glob("tiny*.yaml") if p.name != "tiny-stage15.yaml"}
    held_out = {stage15.data.eval_seed, stage15.data.ood_seed, stage15.data.abstention_seed}
    assert stage15.data.train_seed not in others | held_out
    assert stage15.train.task_weights == shipped.train.task_weights


def test_the_effects_setting_is_read_from_a_recipe() -> None:
    assert DataSettings().effects is False
    assert DataSettings(randomise=0.5, effects=True).effects is True
