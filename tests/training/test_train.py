"""Training: configuration, pre-encoded batches, sampling, a short run that learns, resume, LoRA, the shipped model."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from training_testkit import SMALL_MODEL, small_run

from earthgptx.data import load_records
from earthgptx.data.vocabulary import TASKS
from earthgptx.model import EarthGPTXForConditionalGeneration, EarthGPTXProcessor
from earthgptx.model.surgery_earthgptx import init_ordinal_numbers, number_token_ids
from earthgptx.training.checkpoints import CHECKPOINT_NAME, load_checkpoint
from earthgptx.training.datasets import (
    WeightedStepSampler,
    answer_balance_factors,
    build_run_tokenizer,
    collate_records,
    encode_dataset,
    encode_record,
    ensure_dataset,
)
from earthgptx.training.loop import coordinate_loss
from earthgptx.training.optimisation import WarmupCosine, make_optimizer
from earthgptx.training.prepare import apply_trainable, build_model_config
from earthgptx.training.probe_numbers import linear_readout, probe_model
from earthgptx.training.recipe import ModelSettings, Recipe, load_recipe, recipe_from_dict
from earthgptx.training.train import TRAINING_LOG_NAME, apply_overrides, build_parser, train

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "models" / "earthgptx-tiny"


# ------------------------------------------------------------------------------------------- config
def _stage_files() -> list[Path]:
    """The chain that made the shipped model: tiny-stage1 ... tiny-stageN, then tiny.yaml (stage N + 1). Recipes that
    start from the shipped model (the GPU continuation, tiny-gpu-continuation.yaml) come after it and are not part of it."""
    numbers = sorted(
        int(p.stem.removeprefix("tiny-stage"))
        for p in (REPO / "configs").glob("tiny-stage*.yaml")
        if yaml.safe_load(p.read_text())["model"].get("init_from") != "models/earthgptx-tiny"
    )
    assert numbers == list(range(1, len(numbers) + 1))
    return [REPO / "configs" / f"tiny-stage{i}.yaml" for i in numbers] + [REPO / "configs" / "tiny.yaml"]


def test_shipped_recipe_loads_and_keeps_eval_seed_apart() -> None:
    run = load_recipe(REPO / "configs" / "tiny.yaml")
    assert run.data.eval_seed != run.data.train_seed
    assert run.train.output_dir == "models/earthgptx-tiny"
    files = _stage_files()
    # every stage inherits from the common file only, names its own init_from and has a name of its own
    for path in files:
        text = yaml.safe_load(path.read_text())
        assert text["base"] == "tiny-common.yaml", path.name
        assert "init_from" in text["model"], path.name
    assert "base" not in yaml.safe_load((REPO / "configs" / "tiny-common.yaml").read_text())
    stages = [load_recipe(path) for path in files]
    # stages 1..N are named so; the shipped one (tiny.yaml) takes the next number not used by a trial stage kept in
    # configs/trials (stage 17: a trial from stage 16, not shipped)
    trials = {load_recipe(p).name for p in (REPO / "configs" / "trials").glob("tiny-stage*.yaml")}
    names = [
        f"tiny-stage{i}" for i in range(1, len(stages) + len(trials) + 1) if f"tiny-stage{i}" not in trials
    ]
    assert [s.name for s in stages] == names[: len(stages)]
    # each stage continues from the one before; only stage 1 pre-trains the vision tower
    for before, after in zip(stages, stages[1:], strict=False):
        assert after.model.init_from == before.train.output_dir
        assert after.vision_pretrain.steps == 0
    assert stages[0].model.init_from is None and stages[0].vision_pretrain.steps > 0
    assert len({stage.train.checkpoint_dir for stage in stages}) == len(stages)
    # stages 1-4 share the seed-0 scenes; stages 5 on each train on fresh scenes of a seed of their own, in a
    # folder of their own, and no stage ever trains on the held-out seed
    assert len({(s.data.train_seed, s.data.n_scenes, s.data.train_dir) for s in stages[:4]}) == 1
    later = [(s.data.train_seed, s.data.train_dir) for s in stages[3:]]
    assert len({seed for seed, _ in later}) == len({folder for _, folder in later}) == len(later)
    assert all(s.data.eval_seed == run.data.eval_seed != s.data.train_seed for s in stages)
    # stage 10 adds the counting path and warms its centre head up with settings of its own; stage 13 starts the
    # count copy's pointer afresh; stages 14-16 (issue 25) train on negatives and randomised scenes, 15 and 16 with effects
    assert [stage.model.overrides for stage in stages] == [
        {"prompt_position_features": False},
        {"prompt_position_features": True, "prompt_position_sincos": 0},
        {"prompt_coordinates": True},
    ] + [{}] * 6 + [{"count_classes": 5}] + [{}] * (len(stages) - 10)
    assert [stage.centre_warmup.steps > 0 for stage in stages] == [False] * 9 + [True] + [False] * (
        len(stages) - 10
    )
    assert [stage.model.reinit_parts for stage in stages] == [[]] * 12 + [
        ["count_copy.query", "count_copy.key"]
    ] + [[]] * (len(stages) - 13)
    assert [(s.data.negatives, s.data.randomise, s.data.effects) for s in stages] == [
        (False, 0.0, False)
    ] * 13 + [(True, 0.5, False)] + [(True, 0.6, True)] * (len(stages) - 14)
    assert [stage.model.trainable for stage in stages] == ["all"] * 3 + ["mask_decoder"] + ["all"] * (
        len(stages) - 4
    )
    # the mask stage samples pixel grounding only (the other tasks cannot reach the mask decoder); stages 5 on
    # sample every task again
    mask_stage = stages[3].train.task_weights
    assert {task for task, weight in mask_stage.items() if weight > 0} == {"pixel_grounding"}
    assert set(stages[3].train.task_weights) == set(TASKS)
    assert all(s.train.task_weights.get(task, 1.0) > 0 for s in stages[4:] for task in TASKS)
    # `make train` runs every stage, in order
    recipe = (REPO / "Makefile").read_text().split("\ntrain:", 1)[1].split("\n\n", 1)[0]
    assert re.findall(r"--config (configs/\S+)", recipe) == [str(p.relative_to(REPO)) for p in files]


def test_shipped_recipe_evaluates_as_before() -> None:
    """`make eval` reads configs/tiny.yaml: its data and eval sections are what the shipped report was made with."""
    run = load_recipe(REPO / "configs" / "tiny.yaml")
    assert dataclasses.asdict(run.data) == {
        "train_dir": "data/generated/tiny-train-s15-areas", "train_seed": 15, "n_scenes": 800, "records_per_task": 1,
        "eval_dir": "data/generated/tiny-eval", "eval_seed": 90210, "n_eval_scenes": 300, "eval_splits": ["all"],
        "chip_size": 128, "workers": 0,
        # issue 25: negatives, randomised scenes with effects and area descriptions in training (stage 18), and the
        # OOD, abstention and area-description splits
        "negatives": True, "randomise": 0.6, "effects": True, "areas": True, "textures": False,
        "ood_dir": "data/generated/tiny-ood", "ood_seed": 4242, "n_ood_scenes": 300,
        "abstention_dir": "data/generated/tiny-abstention", "abstention_seed": 90211, "n_abstention_scenes": 100,
        "areas_dir": "data/generated/tiny-areas", "areas_seed": 90212, "n_areas_scenes": 100,
    }  # fmt: skip
    assert (run.eval.batch_size, run.eval.max_new_tokens) == (64, 48)
    assert run.train.output_dir == "models/earthgptx-tiny"


def test_recipe_base_replaces_named_keys_whole_and_is_one_level(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "name: a\noptim: {lr: 0.1, warmup_steps: 7}\ntrain: {steps: 9, task_weights: {relation: 2.0, counting: 3.0}}\n"
    )
    (tmp_path / "b.yaml").write_text(
        "base: a.yaml\ntrain: {task_weights: {counting: 0.5}}\noptim: {lr: 0.2}\n"
    )
    run = load_recipe(tmp_path / "b.yaml")
    assert run.name == "a" and run.train.steps == 9
    assert (run.optim.lr, run.optim.warmup_steps) == (0.2, 7)
    assert run.train.task_weights == {"counting": 0.5}  # replaced whole, not merged with the base's
    (tmp_path / "c.yaml").write_text("base: b.yaml\n")
    with pytest.raises(ValueError, match="inherits from one common file only"):
        load_recipe(tmp_path / "c.yaml")


@pytest.mark.parametrize("module", ["earthgptx.training.train", "earthgptx.training.evaluate"])
def test_print_config_prints_the_effective_recipe(module: str, capsys: pytest.CaptureFixture[str]) -> None:
    import importlib

    main = importlib.import_module(module).main
    assert main(["--config", str(REPO / "configs" / "tiny.yaml"), "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(load_recipe(REPO / "configs" / "tiny.yaml").to_dict()))
    assert printed["data"]["eval_seed"] == 90210 and printed["centre_warmup"]["steps"] == 0


def test_command_line_wins_over_the_yaml() -> None:
    args = build_parser().parse_args(
        ["--config", "configs/tiny.yaml", "--init-from", "runs/other-model", "--lr", "0.001", "--steps", "7"]
    )
    run = apply_overrides(load_recipe(REPO / "configs" / "tiny.yaml"), args)
    assert run.model.init_from == "runs/other-model"
    assert (run.optim.lr, run.train.steps) == (0.001, 7)
    assert run.train.batch_size == 16  # not named on the command line: the YAML's
    fresh = apply_overrides(
        load_recipe(REPO / "configs" / "tiny.yaml"),
        build_parser().parse_args(["--config", "configs/tiny.yaml", "--train-seed", "7"]),
    )
    assert fresh.data.train_seed == 7
    seed = str(run.data.eval_seed)
    held_out = build_parser().parse_args(["--config", "configs/tiny.yaml", "--train-seed", seed])
    with pytest.raises(ValueError, match="eval_seed must differ from data.train_seed"):
        apply_overrides(load_recipe(REPO / "configs" / "tiny.yaml"), held_out)


def test_config_rejects_unknown_keys_and_shared_seeds() -> None:
    with pytest.raises(ValueError, match="stpes"):
        recipe_from_dict({"train": {"stpes": 10}})
    with pytest.raises(ValueError, match="eval_seed must differ"):
        recipe_from_dict({"data": {"train_seed": 4, "eval_seed": 4}})
    with pytest.raises(ValueError, match="unknown tasks"):
        recipe_from_dict({"train": {"task_weights": {"segmentation": 2.0}}})
    with pytest.raises(ValueError, match="trainable"):
        ModelSettings(trainable="some")


def test_count_token_tables_get_their_own_learning_rate_without_decay(tmp_path: Path) -> None:
    from earthgptx.model import EarthGPTXConfig

    run = small_run(tmp_path, tmp_path / "data")
    run.optim.count_path_lr_scale = 50.0
    model = EarthGPTXForConditionalGeneration(EarthGPTXConfig.from_dict({**SMALL_MODEL, "count_classes": 5}))
    groups = make_optimizer(model, run.optim).param_groups
    assert len(groups) == 3
    projector = model.counting_path
    assert projector is not None
    parts = (projector.count_numbers, projector.count_names, model.count_copy)
    maps = {id(p) for part in parts for p in part.parameters()}  # type: ignore[union-attr]
    assert {id(p) for p in groups[2]["params"]} == maps
    assert groups[2]["lr"] == pytest.approx(50.0 * run.optim.lr) and groups[2]["weight_decay"] == 0.0
    assert groups[0]["lr"] == run.optim.lr
    # the centre head is an ordinary part; a model without the path has the two usual groups
    assert not maps & {id(p) for p in projector.count_head.parameters()}  # type: ignore[union-attr]
    assert (
        len(
            make_optimizer(
                EarthGPTXForConditionalGeneration(EarthGPTXConfig.from_dict(SMALL_MODEL)), run.optim
            ).param_groups
        )
        == 2
    )
    with pytest.raises(ValueError, match="count_path_lr_scale"):
        recipe_from_dict({"optim": {"count_path_lr_scale": 0}})


def test_count_copy_targets_name_the_asked_class_and_region(train_dir: Path) -> None:
    from earthgptx.data.vocabulary import OBJECT_CLASSES
    from earthgptx.model.surgery_earthgptx import count_copy_targets

    records = load_records(train_dir / "records.jsonl")
    classes = len(OBJECT_CLASSES)
    targets = count_copy_targets(records, OBJECT_CLASSES)
    counting = [i for i, r in enumerate(records) if r["task"] == "counting"]
    assert (
        counting
        and any(records[i]["prompts"] for i in counting)
        and any(not records[i]["prompts"] for i in counting)
    )
    assert (targets >= 0).nonzero().flatten().tolist() == counting  # -1 for every other task
    for i in counting:
        region, class_index = divmod(int(targets[i]), classes)
        assert OBJECT_CLASSES[class_index] == records[i]["answer"]["class"]
        # whole-image questions point at the image's counts (0), region questions at <region1>'s (1)
        assert region == (1 if records[i]["prompts"] else 0)
    # a question about a class the path does not count is not a counting target (the gate stays shut)
    fewer = count_copy_targets(records, OBJECT_CLASSES[:2])
    for i in counting:
        in_path = records[i]["answer"]["class"] in OBJECT_CLASSES[:2]
        assert (int(fewer[i]) >= 0) == in_path


def test_reinit_parts_starts_named_parts_afresh(tmp_path: Path) -> None:
    from earthgptx.model import EarthGPTXConfig
    from earthgptx.model.counting_earthgptx import COPY_GATE_BIAS
    from earthgptx.model.surgery_earthgptx import reinit_parts

    config = EarthGPTXConfig.from_dict({**SMALL_MODEL, "count_classes": 5})
    model = EarthGPTXForConditionalGeneration(config)
    assert model.count_copy is not None
    with torch.no_grad():
        model.count_copy.query.weight.fill_(3.0)
        model.count_copy.gate.bias.fill_(5.0)
    model.save_pretrained(tmp_path)
    loaded = EarthGPTXForConditionalGeneration.from_pretrained(str(tmp_path))
    before = {k: v.clone() for k, v in loaded.state_dict().items()}
    reinit_parts(loaded, ["count_copy.query", "count_copy.gate"])
    after = loaded.state_dict()
    query = after["count_copy.query.weight"]
    assert (
        query.abs().max() < 1.0
        and 0.5 * config.initializer_range < query.std() < 2 * config.initializer_range
    )
    assert float(after["count_copy.gate.bias"]) == COPY_GATE_BIAS  # the part's own initialisation
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed == {"count_copy.query.weight", "count_copy.gate.bias"}  # the gate's weight starts at zero
    with pytest.raises(ValueError, match="no module"):
        reinit_parts(loaded, ["count_copy.nothing"])


def test_warmup_cosine_schedule() -> None:
    schedule = WarmupCosine(warmup=10, total=110, min_ratio=0.1)
    assert schedule(0) == pytest.approx(0.1)
    assert schedule(9) == pytest.approx(1.0)
    assert schedule(10) == pytest.approx(1.0)
    assert schedule(60) == pytest.approx(0.55)
    assert schedule(110) == pytest.approx(0.1)
    assert schedule(500) == pytest.approx(0.1)
    values = [schedule(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


# ------------------------------------------------------------------------------------------- data
def test_ensure_dataset_reuses_matching_data(train_dir: Path) -> None:
    before = (train_dir / "records.jsonl").stat().st_mtime_ns
    path = ensure_dataset(train_dir, 12, seed=3, chip_size=64, progress=False)
    assert path == train_dir / "records.jsonl"
    assert path.stat().st_mtime_ns == before


def test_encoded_batches_equal_processor_collate(train_dir: Path) -> None:
    """The fast path (pre-encoded banks: float16 chips shared by their records, uint8 masks) gives exactly the
    general one (``processor.collate`` packing each sample's float32 tensors); both batch with ``collate_banks``."""
    records = [r for r in load_records(train_dir / "records.jsonl") if r["split"] == "train"]
    tokenizer = build_run_tokenizer(records)
    config = build_model_config(ModelSettings(overrides=SMALL_MODEL), tokenizer)
    processor = EarthGPTXProcessor(tokenizer, config)
    # One record of every task, plus a second pixel-grounding one so a batch holds two target masks.
    picked: dict[str, dict] = {}
    for record in records:
        picked.setdefault(record["task"], record)
    extra = [r for r in records if r["task"] == "pixel_grounding"][1]
    chosen = list(picked.values()) + [extra]
    data = encode_dataset(chosen, train_dir, processor, workers=1, progress=False)
    order = torch.tensor([len(chosen) - 1, 3, 0, 6, 2, 5, 1, 4, 7, 8])
    ours = data.batch(order, tokenizer.pad_token_id)
    reference = collate_records([chosen[i] for i in order.tolist()], train_dir, processor, train=True)
    assert set(ours) == set(reference)
    for key, expected in reference.items():
        assert ours[key].shape == expected.shape, key
        if key == "pixel_values":
            # stored as float16 on purpose
            torch.testing.assert_close(ours[key], expected, atol=5e-3, rtol=1e-3)
        else:
            assert torch.equal(ours[key].to(expected.dtype), expected), key
    assert ours["target_masks"].shape[0] == 2


def test_weighted_sampler_is_deterministic_and_weighted() -> None:
    tasks = ["grounding"] * 500 + ["counting"] * 500
    sampler = WeightedStepSampler(tasks, {"grounding": 3.0}, batch_size=64, seed=1)
    assert torch.equal(sampler.indices(17), sampler.indices(17))
    assert not torch.equal(sampler.indices(17), sampler.indices(18))
    assert sampler.task_shares(tasks) == pytest.approx({"counting": 0.25, "grounding": 0.75})
    drawn = torch.cat([sampler.indices(s) for s in range(100)])
    share = float((drawn < 500).float().mean())
    assert 0.70 < share < 0.80
    # DDP ranks split the same global draw.
    ranks = [WeightedStepSampler(tasks, {}, 8, seed=1, rank=r, world_size=2).indices(5) for r in (0, 1)]
    assert torch.equal(torch.stack(ranks, 1).flatten(), WeightedStepSampler(tasks, {}, 16, seed=1).indices(5))


def test_answer_balance_evens_out_answers_within_a_task_only() -> None:
    def record(task: str, answer: str) -> dict[str, Any]:
        turns = [{"from": "human", "value": "?"}, {"from": "gpt", "value": answer}]
        return {"task": task, "conversations": turns}

    records = [record("counting", "1")] * 60 + [record("counting", "2")] * 30 + [record("counting", "5")] * 10
    records += [record("relation", "yes")] * 80 + [record("relation", "no")] * 20
    tasks = [r["task"] for r in records]
    # exponent 1: every count equally often; the relation records, not named, keep factor 1
    factors = answer_balance_factors(records, {"counting": 1.0})
    assert factors[100:] == [1.0] * 100
    assert sum(factors[:100]) == pytest.approx(100.0)
    for start, stop in ((0, 60), (60, 90), (90, 100)):
        assert sum(factors[start:stop]) == pytest.approx(100 / 3)
    sampler = WeightedStepSampler(tasks, {"counting": 2.0}, batch_size=64, seed=3, factors=factors)
    assert sampler.task_shares(tasks) == pytest.approx({"counting": 2 / 3, "relation": 1 / 3})
    drawn = torch.cat([sampler.indices(s) for s in range(200)])
    rare = float(((drawn >= 90) & (drawn < 100)).float().mean())
    assert 0.18 < rare < 0.26  # 2/9 of the draws, against 2/30 without balancing
    # exponent 0: as generated; 0.5 lies between
    assert answer_balance_factors(records, {"counting": 0.0}) == pytest.approx([1.0] * 200)
    half = answer_balance_factors(records, {"counting": 0.5})
    assert 10 / 100 < sum(half[90:100]) / 100 < 1 / 3
    with pytest.raises(ValueError, match="3 sampling factors for 200 samples"):
        WeightedStepSampler(tasks, {}, 8, seed=1, factors=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        recipe_from_dict({"train": {"answer_balance": {"counting": 1.5}}})
    with pytest.raises(ValueError, match="unknown tasks"):
        recipe_from_dict({"train": {"answer_balance": {"countin": 1.0}}})


# ------------------------------------------------------------------------------------------- training
def test_short_training_lowers_the_loss(tmp_path: Path, train_dir: Path) -> None:
    """A few hundred samples, 25 steps: the language-model loss falls well below where it started."""
    run = small_run(tmp_path, train_dir, steps=25, coordinate_sigma=8.0)
    run.model.ordinal_numbers = True
    result = train(run, progress=False)
    lm = [entry["lm_loss"] for entry in result.losses]
    coord = [entry["coord_loss"] for entry in result.losses if not np.isnan(entry["coord_loss"])]
    assert coord, "no batch had a box answer"
    assert all(np.isfinite(coord))
    assert len(lm) == 25
    first, last = float(np.mean(lm[:5])), float(np.mean(lm[-5:]))
    assert last < first - 1.0, f"loss did not fall: first steps {first:.3f}, last steps {last:.3f}"

    out = Path(run.train.output_dir)
    log = json.loads((out / TRAINING_LOG_NAME).read_text())
    assert log["steps"] == 25 and log["hardware"]["device"] == "cpu"
    assert {"data_s", "encode_s", "train_s", "total_s"} <= set(log["timings_s"])
    # Half-precision weights on disk, float32 after loading.
    assert {t.dtype for t in load_file(out / "model.safetensors").values() if t.is_floating_point()} == {
        torch.float16
    }
    model = EarthGPTXForConditionalGeneration.from_pretrained(str(out))
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    EarthGPTXProcessor.from_pretrained(out)


def test_resume_continues_at_the_right_step(tmp_path: Path, train_dir: Path) -> None:
    """An interrupted run resumed from its checkpoint ends with the same weights as an uninterrupted one."""
    whole = small_run(tmp_path / "whole", train_dir, steps=6, checkpoint_every=2)
    train(whole, progress=False)
    split = small_run(tmp_path / "split", train_dir, steps=6, checkpoint_every=2)
    first = train(split, progress=False, stop_at=3)
    assert first.steps == 3
    state = load_checkpoint(Path(split.train.checkpoint_dir) / CHECKPOINT_NAME)
    assert state["step"] == 3 and state["planned_steps"] == 6
    second = train(split, resume=True, progress=False)
    assert second.steps == 6
    assert [e["step"] for e in second.losses] == [1, 2, 3, 4, 5, 6]

    a = load_file(Path(whole.train.output_dir) / "model.safetensors")
    b = load_file(Path(split.train.output_dir) / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key].float(), b[key].float(), atol=2e-3, rtol=0), key


def test_frozen_encoders_lora_trains_only_adapters_and_new_parts(train_dir: Path) -> None:
    records = load_records(train_dir / "records.jsonl")[:40]
    tokenizer = build_run_tokenizer(records)
    settings = ModelSettings(overrides=SMALL_MODEL, trainable="frozen_encoders_lora")
    settings.lora.r = 4
    config = build_model_config(settings, tokenizer)
    torch.manual_seed(0)
    model = EarthGPTXForConditionalGeneration(config)
    plain_keys = set(model.state_dict())
    tuner = apply_trainable(model, settings)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable)
    assert not any(n.startswith(("vision_tower.convnext", "vision_tower.dinov2")) for n in trainable)
    assert not any("q_proj.base_layer" in n for n in trainable)
    assert any(n.startswith("prompt_encoder") for n in trainable)

    processor = EarthGPTXProcessor(tokenizer, config)
    batch = collate_records(records[:4], train_dir, processor, train=True)
    frozen_before = model.vision_tower.dinov2.embeddings.patch_embeddings.projection.weight.clone()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(**batch).loss.backward()
    optimizer.step()
    assert torch.equal(model.vision_tower.dinov2.embeddings.patch_embeddings.projection.weight, frozen_before)

    model.language_model = tuner.merge_and_unload()
    assert set(model.state_dict()) == plain_keys


# ------------------------------------------------------------------------------------------- shipped model
@pytest.mark.skipif(not (SHIPPED / "model.safetensors").exists(), reason="no shipped checkpoint")
def test_shipped_checkpoint_is_small_and_loads() -> None:
    files = {p.name for p in SHIPPED.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json"} <= files
    assert {"training_log.json", "eval_report.json", "eval_report.md"} <= files
    total = sum(p.stat().st_size for p in SHIPPED.glob("*.safetensors"))
    assert total <= 50 * 1024 * 1024, f"shipped weights are {total / 2**20:.1f} MB"
    processor = EarthGPTXProcessor.from_pretrained(SHIPPED)
    model = EarthGPTXForConditionalGeneration.from_pretrained(str(SHIPPED))
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert len(processor.tokenizer) <= model.config.text_config.vocab_size
    report = json.loads((SHIPPED / "eval_report.json").read_text())
    assert report["eval_data"]["seed"] != report["eval_data"]["train_seed"]


def test_lora_run_from_a_saved_model_keeps_encoders_and_merges_adapters(
    tmp_path: Path, train_dir: Path
) -> None:
    """``init_from`` + ``frozen_encoders_lora`` through the whole loop: encoders unchanged, LoRA merged into the LM."""
    start = small_run(tmp_path / "start", train_dir, steps=2)
    train(start, progress=False)
    run = small_run(tmp_path / "lora", train_dir, steps=3)
    run.model.init_from = start.train.output_dir
    run.model.trainable = "frozen_encoders_lora"
    run.model.lora.r = 4
    run.optim.lr = 5e-2
    result = train(run, progress=False)
    assert result.log["trainable_parameters"] < result.log["parameters"]

    before = load_file(Path(start.train.output_dir) / "model.safetensors")
    after = load_file(Path(run.train.output_dir) / "model.safetensors")
    assert before.keys() == after.keys()  # adapters merged away: a plain checkpoint
    encoder = [k for k in before if k.startswith(("vision_tower.convnext", "vision_tower.dinov2"))]
    assert encoder and all(torch.equal(before[k], after[k]) for k in encoder)
    attention = [k for k in before if k.endswith("self_attn.q_proj.weight")]
    assert attention and any(not torch.equal(before[k], after[k]) for k in attention)


def test_init_from_override_turns_prompt_coordinates_on(tmp_path: Path, train_dir: Path) -> None:
    """A run from a saved model with ``prompt_coordinates: true`` trains and saves a processor that writes the
    prompts' centroids, and the saved config says so."""
    start = small_run(tmp_path / "start", train_dir, steps=2)
    train(start, progress=False)
    assert EarthGPTXProcessor.from_pretrained(Path(start.train.output_dir)).prompt_coordinates is False
    run = small_run(tmp_path / "coords", train_dir, steps=2)
    run.model.init_from = start.train.output_dir
    run.model.overrides = {"prompt_coordinates": True}
    train(run, progress=False)
    out = Path(run.train.output_dir)
    processor = EarthGPTXProcessor.from_pretrained(out)
    assert processor.prompt_coordinates is True
    assert EarthGPTXForConditionalGeneration.from_pretrained(str(out)).config.prompt_coordinates is True
    record = next(r for r in load_records(train_dir / "records.jsonl") if r["task"] == "relation")
    text = processor.tokenizer.decode(encode_record(record, train_dir, processor, train=False).input_ids)
    assert text.count("<region1>") == processor.tokens_per_prompt
    assert re.search(r"<region1> \[ \d+ , \d+ \]", text), text


def test_mask_decoder_stage_changes_only_the_mask_decoder(tmp_path: Path, train_dir: Path) -> None:
    """``trainable: mask_decoder`` from a saved model on pixel grounding: every weight outside the mask decoder
    is saved unchanged (so every text answer stays the same), and the mask decoder learns."""
    start = small_run(tmp_path / "start", train_dir, steps=2)
    train(start, progress=False)
    only_masks = {task: 0.0 for task in TASKS if task != "pixel_grounding"}
    run = small_run(tmp_path / "masks", train_dir, steps=4, task_weights=only_masks)
    run.model.init_from = start.train.output_dir
    run.model.trainable = "mask_decoder"
    run.optim.lr = 1e-2
    result = train(run, progress=False)
    decoder = sum(p.numel() for n, p in _state(start).items() if n.startswith("mask_decoder."))
    assert result.log["trainable_parameters"] == decoder
    assert all(np.isfinite(e["mask_loss"]) for e in result.losses)

    before, after = _state(start), _state(run)
    assert before.keys() == after.keys()
    rest = [k for k in before if not k.startswith("mask_decoder.")]
    assert rest and all(torch.equal(before[k], after[k]) for k in rest)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("mask_decoder."))


def test_mask_decoder_stage_refuses_tasks_without_masks(tmp_path: Path, train_dir: Path) -> None:
    start = small_run(tmp_path / "start", train_dir, steps=1)
    train(start, progress=False)
    run = small_run(tmp_path / "masks", train_dir, steps=2)  # every task keeps its weight
    run.model.init_from = start.train.output_dir
    run.model.trainable = "mask_decoder"
    with pytest.raises(ValueError, match="weight 0 in train.task_weights"):
        train(run, progress=False)


def _state(run: Recipe) -> dict[str, torch.Tensor]:
    return load_file(Path(run.train.output_dir) / "model.safetensors")


# ------------------------------------------------------------------------------------------- numbers
def test_coordinate_loss_is_lower_near_the_true_value() -> None:
    number_ids = torch.arange(10, 1010)  # ids of "0".."999"
    labels = torch.full((2, 4), -100)
    labels[:, 2] = 10 + 500  # the coordinate 500 is predicted at position 1
    logits = torch.zeros(2, 4, 1100)
    logits[0, 1, 10 + 505] = 10.0  # sample 0 says 505: close
    logits[1, 1, 10 + 900] = 10.0  # sample 1 says 900: far
    is_box = torch.tensor([True, True])
    near = coordinate_loss(logits[:1], labels[:1], is_box[:1], number_ids, sigma=8.0)
    far = coordinate_loss(logits[1:], labels[1:], is_box[1:], number_ids, sigma=8.0)
    assert near is not None and far is not None and float(near) < float(far)
    # exactly right beats close
    logits[0, 1, 10 + 500] = 10.0
    logits[0, 1, 10 + 505] = 0.0
    exact = coordinate_loss(logits[:1], labels[:1], is_box[:1], number_ids, sigma=8.0)
    assert exact is not None and float(exact) < float(near)
    # no box sample, or no number label: nothing to score
    assert coordinate_loss(logits, labels, torch.tensor([False, False]), number_ids, sigma=8.0) is None
    assert coordinate_loss(logits, torch.full((2, 4), -100), is_box, number_ids, sigma=8.0) is None


def test_ordinal_number_init_makes_neighbours_similar(train_dir: Path) -> None:
    tokenizer = build_run_tokenizer(load_records(train_dir / "records.jsonl"))
    number_ids = number_token_ids(tokenizer)
    assert number_ids is not None and len(number_ids) == 1000
    model = EarthGPTXForConditionalGeneration(
        build_model_config(ModelSettings(overrides=SMALL_MODEL), tokenizer)
    )
    other = model.get_input_embeddings().weight[int(tokenizer.convert_tokens_to_ids("the"))].clone()
    init_ordinal_numbers(model, number_ids)
    for matrix in (model.get_input_embeddings().weight, model.get_output_embeddings().weight):
        rows = matrix[number_ids]
        sim = torch.nn.functional.cosine_similarity(rows[300:301], rows, dim=-1)
        assert sim[301] > sim[320] > sim[800]
        # same scale as the random rows
        assert 0.5 < float(rows.norm(dim=-1).mean() / matrix.detach().norm(dim=-1).mean()) < 2.0
    torch.testing.assert_close(
        model.get_input_embeddings().weight[int(tokenizer.convert_tokens_to_ids("the"))], other
    )


def test_number_probe_sees_ordinal_init_and_not_random_rows(train_dir: Path) -> None:
    """The probe reads value from sine/cosine-initialised number rows and not from random ones."""
    tokenizer = build_run_tokenizer(load_records(train_dir / "records.jsonl"))
    torch.manual_seed(0)
    model = EarthGPTXForConditionalGeneration(
        build_model_config(ModelSettings(overrides=SMALL_MODEL), tokenizer)
    )
    random_rows = probe_model(model, tokenizer)
    number_ids = number_token_ids(tokenizer)
    assert number_ids is not None
    init_ordinal_numbers(model, number_ids)
    ordinal = probe_model(model, tokenizer)
    for name in ("input", "output"):
        assert ordinal[name].r2 > 0.7 and ordinal[name].wide_pair_order_accuracy > 0.99, ordinal[name]
        # 96-wide random rows fitted on 500 values: no real readout on the other 500
        chance = random_rows[name]
        assert chance.r2 < 0.3 and chance.wide_pair_order_accuracy < 0.8, chance
    # a hand-made case: rows that are the value itself give an exact readout
    exact = linear_readout(np.arange(1000, dtype=float)[:, None], ridge=0.0)
    assert exact.r2 == pytest.approx(1.0) and exact.pair_order_accuracy == 1.0
