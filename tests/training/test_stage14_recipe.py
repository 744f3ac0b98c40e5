"""Stages 14-16 and 18 (18 is the shipped model), its GPU continuation, and the data settings they rely on (issue 25)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from earthgptx.data.generate import SceneOptions
from earthgptx.training.datasets import dataset_options, ensure_dataset
from earthgptx.training.recipe import DataSettings, load_recipe

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _train_seeds(*, besides: str) -> set[int]:
    return {load_recipe(p).data.train_seed for p in CONFIGS.glob("tiny*.yaml") if p.name != besides}


def test_stage14_fine_tunes_stage13_with_negatives_and_randomisation() -> None:
    stage14 = load_recipe(CONFIGS / "tiny-stage14.yaml")
    stage13 = load_recipe(CONFIGS / "tiny-stage13.yaml")
    assert stage14.name == "tiny-stage14" and stage14.train.output_dir == "runs/tiny-stage14-model"
    assert stage14.model.init_from == stage13.train.output_dir == "runs/tiny-stage13-model"
    assert (stage14.data.negatives, stage14.data.randomise, stage14.data.effects) == (True, 0.5, False)
    held_out = {stage14.data.eval_seed, stage14.data.ood_seed, stage14.data.abstention_seed}
    assert stage14.data.train_seed not in held_out | _train_seeds(besides="tiny-stage14.yaml")  # fresh scenes
    assert stage14.train.task_weights == stage13.train.task_weights
    assert stage14.optim.lr < stage13.optim.lr  # a fine-tune keeps what stage 13 knows
    assert stage14.train.time_budget_s == 0  # a fixed number of steps: the recipe does not depend on the host
    # The held-out sets are those `make eval` read for stage 13.
    assert (stage14.data.eval_seed, stage14.data.n_eval_scenes) == (
        stage13.data.eval_seed,
        stage13.data.n_eval_scenes,
    )
    assert stage13.data.negatives is False and stage13.data.randomise == 0.0


def test_stages_15_and_16_add_effects() -> None:
    stage14 = load_recipe(CONFIGS / "tiny-stage14.yaml")
    stage15 = load_recipe(CONFIGS / "tiny-stage15.yaml")
    stage16 = load_recipe(CONFIGS / "tiny-stage16.yaml")
    assert (stage15.name, stage16.name) == ("tiny-stage15", "tiny-stage16")
    assert stage15.model.init_from == stage14.train.output_dir
    assert stage16.model.init_from == stage15.train.output_dir == "runs/tiny-stage15-model"
    assert stage16.train.output_dir == "runs/tiny-stage16-model"
    for stage, name in ((stage15, "tiny-stage15.yaml"), (stage16, "tiny-stage16.yaml")):
        assert (stage.data.negatives, stage.data.randomise, stage.data.effects) == (True, 0.6, True)
        assert not stage.data.areas
        held_out = {
            stage.data.eval_seed,
            stage.data.ood_seed,
            stage.data.abstention_seed,
            stage.data.areas_seed,
        }
        assert stage.data.train_seed not in held_out | _train_seeds(besides=name)
        assert stage.train.task_weights == stage14.train.task_weights
        assert stage.train.time_budget_s == 0
    assert stage16.optim.lr < stage15.optim.lr == stage14.optim.lr


def test_stage18_adds_area_descriptions_and_is_the_shipped_model() -> None:
    stage16 = load_recipe(CONFIGS / "tiny-stage16.yaml")
    stage18 = load_recipe(CONFIGS / "tiny.yaml")
    assert stage18.name == "tiny-stage18" and stage18.train.output_dir == "models/earthgptx-tiny"
    assert stage18.model.init_from == stage16.train.output_dir
    data = stage18.data
    assert (data.negatives, data.randomise, data.effects, data.areas) == (True, 0.6, True, True)
    held_out = {data.eval_seed, data.ood_seed, data.abstention_seed, data.areas_seed}
    assert data.train_seed not in held_out | _train_seeds(besides="tiny.yaml")
    # only region captions (area descriptions are region captions) are sampled more often than in stage 16
    weights = dict(stage18.train.task_weights)
    assert weights.pop("region_caption") > stage16.train.task_weights["region_caption"]
    assert weights == {k: v for k, v in stage16.train.task_weights.items() if k != "region_caption"}
    assert stage18.optim.lr < stage16.optim.lr and stage18.train.time_budget_s == 0
    # stage 17 was a trial from stage 16, kept beside the chain
    trial = load_recipe(CONFIGS / "trials" / "tiny-stage17.yaml")
    assert trial.name == "tiny-stage17" and trial.model.init_from == stage16.train.output_dir
    assert trial.train.output_dir != stage18.train.output_dir


def test_the_gpu_continuation_starts_from_the_shipped_model_on_fresh_scenes() -> None:
    gpu = load_recipe(CONFIGS / "tiny-gpu-continuation.yaml")
    shipped = load_recipe(CONFIGS / "tiny.yaml")
    assert gpu.model.init_from == shipped.train.output_dir == "models/earthgptx-tiny"
    # Its output never lands on the shipped model: the lead copies it in after `make eval` passes on it.
    assert gpu.train.output_dir == "runs/tiny-gpu-model"
    data = (gpu.data.negatives, gpu.data.randomise, gpu.data.effects, gpu.data.areas)
    assert data == (shipped.data.negatives, shipped.data.randomise, shipped.data.effects, shipped.data.areas)
    assert gpu.data.train_seed not in _train_seeds(besides="tiny-gpu-continuation.yaml") | {
        gpu.data.eval_seed,
        gpu.data.ood_seed,
        gpu.data.abstention_seed,
    }
    assert gpu.train.task_weights == shipped.train.task_weights
    assert "tiny-gpu-continuation.yaml" in (CONFIGS.parent / "tools" / "gpu_retrain.sh").read_text()


@pytest.mark.parametrize("field", ["eval_seed", "ood_seed", "abstention_seed", "areas_seed"])
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


def test_the_effects_setting_is_read_from_a_recipe() -> None:
    assert DataSettings().effects is False
    assert DataSettings(randomise=0.5, effects=True).effects is True
