"""Dense pre-training of the vision tower: its targets, that it learns, and how training uses it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from training_testkit import CHIP, small_run

from earthgptx.data import load_records
from earthgptx.model import EarthGPTXConfig, EarthGPTXForConditionalGeneration, EarthGPTXProcessor
from earthgptx.training.datasets import AuxSpec, EncodedDataset, build_run_tokenizer, encode_dataset
from earthgptx.training.prepare import build_model_config
from earthgptx.training.pretrain import (
    STATE_NAME,
    cell_labels,
    chip_modalities,
    load_or_pretrain,
    pretrain_vision_tower,
)
from earthgptx.training.recipe import CentreWarmupSettings, VisionPretrainSettings, recipe_from_dict
from earthgptx.training.train import train


def test_cell_labels_take_the_majority_class_of_each_cell() -> None:
    pixels = torch.zeros(1, 4, 4, dtype=torch.long)
    pixels[0, :2, :2] = 5  # top-left cell: all class 5
    pixels[0, :2, 2:] = torch.tensor([[1, 1], [1, 7]])  # top-right: three of class 1, one of 7
    pixels[0, 2:, :2] = torch.tensor([[3, 3], [6, 6]])  # bottom-left: a tie goes to the lower class
    labels = cell_labels(pixels, 2)
    assert labels.tolist() == [[[5, 1], [3, 0]]]
    with pytest.raises(ValueError, match="multiple of the token grid"):
        cell_labels(pixels, 3)


def _encoded(tmp_path: Path, train_dir: Path, n_records: int = 60) -> tuple[EncodedDataset, EarthGPTXConfig]:
    run = small_run(tmp_path, train_dir)
    records = [r for r in load_records(train_dir / "records.jsonl") if r["split"] == "train"][:n_records]
    tokenizer = build_run_tokenizer(records)
    config = build_model_config(run.model, tokenizer)
    processor = EarthGPTXProcessor(tokenizer, config)
    grid = config.vision_config.grid_size // config.projector_downsample
    spec = AuxSpec(seed=3, chip_size=CHIP, grid=grid, pixel_side=CHIP // 2)
    return encode_dataset(records, train_dir, processor, workers=1, progress=False, aux=spec), config


def test_chip_modalities_follow_the_samples(tmp_path: Path, train_dir: Path) -> None:
    data, _ = _encoded(tmp_path, train_dir)
    modalities = chip_modalities(data)
    assert modalities.shape == (data.images.shape[0],)
    for sample in range(len(data)):
        assert modalities[data.image_index[sample]] == data.modality_ids[sample]
    assert len(set(modalities.tolist())) > 1  # the test data mixes modalities


def test_pretraining_learns_the_cell_classes(tmp_path: Path, train_dir: Path) -> None:
    data, config = _encoded(tmp_path, train_dir)
    torch.manual_seed(0)
    model = EarthGPTXForConditionalGeneration(config)
    tower = model.vision_tower
    before = {k: v.clone() for k, v in tower.state_dict().items()}
    result = pretrain_vision_tower(tower, data, steps=60, batch_size=8, lr=2e-3, progress=False)
    assert result.steps == 60 and result.seconds > 0
    # Better than always answering the most common cell class of the chips it is scored on.
    labels = cell_labels(data.aux["aux_pixel_labels"], tower.config.grid_size)  # type: ignore[index]
    scored = labels[-256:].flatten()
    majority = float((scored == scored.mode().values).float().mean())
    assert result.cell_accuracy > majority
    assert 0.0 <= result.object_cell_accuracy <= 1.0
    assert any(not torch.equal(before[k], v) for k, v in tower.state_dict().items())
    # Deterministic on a CPU for a given seed.
    torch.manual_seed(0)
    again = EarthGPTXForConditionalGeneration(config).vision_tower
    pretrain_vision_tower(again, data, steps=60, batch_size=8, lr=2e-3, progress=False)
    for key, value in tower.state_dict().items():
        torch.testing.assert_close(again.state_dict()[key], value)


def test_pretrained_weights_are_reused_only_for_the_same_settings(tmp_path: Path, train_dir: Path) -> None:
    data, config = _encoded(tmp_path, train_dir, n_records=24)
    tower = EarthGPTXForConditionalGeneration(config).vision_tower
    settings = {"steps": 3, "batch_size": 4, "lr": 1e-3, "weight_decay": 0.05, "seed": 0, "progress": False}
    first, reused = load_or_pretrain(tower, data, tmp_path, **settings)  # type: ignore[arg-type]
    assert not reused and (tmp_path / STATE_NAME).exists()
    fresh = EarthGPTXForConditionalGeneration(config).vision_tower
    again, reused = load_or_pretrain(fresh, data, tmp_path, **settings)  # type: ignore[arg-type]
    assert reused and again == first
    for key, value in tower.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[key], value)
    changed = {**settings, "steps": 4}
    result, reused = load_or_pretrain(fresh, data, tmp_path, **changed)  # type: ignore[arg-type]
    assert not reused and result.steps == 4


def test_pretraining_refuses_data_without_aux_targets(tmp_path: Path, train_dir: Path) -> None:
    data, config = _encoded(tmp_path, train_dir, n_records=12)
    data.aux = None
    tower = EarthGPTXForConditionalGeneration(config).vision_tower
    with pytest.raises(ValueError, match="auxiliary targets"):
        pretrain_vision_tower(tower, data, steps=1, batch_size=2, lr=1e-3, progress=False)


def test_training_runs_the_pretraining_first(tmp_path: Path, train_dir: Path) -> None:
    run = small_run(
        tmp_path, train_dir, {"steps": 5, "batch_size": 4}, steps=2, checkpoint_every=2, aux_weight=1.0
    )
    result = train(run, progress=False)
    assert (Path(run.train.checkpoint_dir) / STATE_NAME).exists()
    assert result.log["timings_s"]["vision_pretrain_s"] >= 0
    assert result.log["vision_pretrain"]["steps"] == 5
    # Resuming from a checkpoint takes the tower from it, does not pre-train again, and reports what the first
    # session measured.
    state = Path(run.train.checkpoint_dir) / STATE_NAME
    resumed = train(run, resume=True, progress=False)
    assert resumed.log["vision_pretrain"] == result.log["vision_pretrain"]
    state.unlink()
    resumed = train(run, resume=True, progress=False)
    assert not state.exists() and resumed.log["vision_pretrain"] is None


def test_pretraining_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="needs train.aux_weight"):
        recipe_from_dict({"vision_pretrain": {"steps": 5}})
    with pytest.raises(ValueError, match="vision_pretrain.steps must be >= 0"):
        VisionPretrainSettings(steps=-1)
    with pytest.raises(ValueError, match=r"vision_pretrain.lr > 0"):
        VisionPretrainSettings(steps=1, lr=0.0)
    with pytest.raises(ValueError, match=r"centre_warmup.batch_size >= 1"):
        CentreWarmupSettings(steps=1, batch_size=0)


def test_one_stage_training_starts_from_the_seeded_rng_state(
    tmp_path: Path, train_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After pre-training, the RNG is reseeded: the aux heads (and everything after them) are drawn from the
    same state as in a run whose tower came from elsewhere, so `make train` reproduces the shipped run."""
    import earthgptx.training.train as train_module

    seen: list[torch.Tensor] = []
    real_heads = train_module.PerceptionHeads

    def spying_heads(*args: object, **kwargs: object) -> object:
        seen.append(torch.random.get_rng_state())
        return real_heads(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(train_module, "PerceptionHeads", spying_heads)
    run = small_run(tmp_path, train_dir, {"steps": 3, "batch_size": 4}, steps=1, aux_weight=1.0)
    train(run, progress=False)
    torch.manual_seed(run.train.seed)
    assert len(seen) == 1 and torch.equal(seen[0], torch.random.get_rng_state())
