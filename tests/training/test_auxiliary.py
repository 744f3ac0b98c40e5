"""Auxiliary perception targets agree with the scene geometry; the heads learn; training uses them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from training_testkit import CHIP, small_run

from earthgptx.data import load_records
from earthgptx.data.generate import build_scene
from earthgptx.data.vocabulary import LAND_COVERS, OBJECT_CLASSES
from earthgptx.model import EarthGPTXProcessor
from earthgptx.training.auxiliary import (
    IGNORE,
    REGION_FIELDS,
    SEMANTIC_CLASSES,
    PerceptionHeads,
    chip_targets,
    prompted_objects,
    region_targets,
    synthetic_scene,
)
from earthgptx.training.checkpoints import CHECKPOINT_NAME, load_checkpoint
from earthgptx.training.datasets import AuxSpec, build_run_tokenizer, encode_dataset
from earthgptx.training.prepare import build_model_config
from earthgptx.training.train import train

GRID = 8
PIXELS = 32


def _busy_scene(min_objects: int = 3):  # type: ignore[no-untyped-def]
    for index in range(50):
        scene = build_scene(5, index, 128)
        if len(scene.objects) >= min_objects:
            return scene
    raise AssertionError("no scene with enough objects")


def test_token_targets_agree_with_the_pixels() -> None:
    scene = _busy_scene()
    targets = chip_targets(scene, GRID, PIXELS)
    cell = scene.chip_size // GRID
    assert targets.token_semantic.shape == (GRID * GRID, len(SEMANTIC_CLASSES))
    np.testing.assert_allclose(targets.token_semantic.sum(-1), 1.0, atol=1e-5)
    # Object shares, summed over cells, give each class's rendered pixel count.
    for c, cls in enumerate(OBJECT_CLASSES):
        pixels = sum(int(o.mask.sum()) for o in scene.objects if o.cls == cls)
        total = targets.token_semantic[:, len(LAND_COVERS) + c].sum() * cell * cell
        assert total == pytest.approx(pixels, abs=1e-2)
    # One centre per object, in the cell that holds its centroid.
    for c, cls in enumerate(OBJECT_CLASSES):
        assert targets.token_centres[:, c].sum() == scene.count(cls)
    for obj in scene.objects:
        x, y = obj.centroid_px
        cell_index = int(y // cell) * GRID + int(x // cell)
        assert targets.token_centres[cell_index, OBJECT_CLASSES.index(obj.cls)] >= 1
    # The centre map marks each object once, on the pixel-feature cell of its centroid, which lies on the object.
    block = scene.chip_size // PIXELS
    assert targets.centre_map.shape == (len(OBJECT_CLASSES), PIXELS, PIXELS)
    for c, cls in enumerate(OBJECT_CLASSES):
        assert targets.centre_map[c].sum() == scene.count(cls)
    for obj in scene.objects:
        x, y = obj.centroid_px
        row, col = int(y // block), int(x // block)
        assert targets.centre_map[OBJECT_CLASSES.index(obj.cls), row, col] == 1
        assert obj.mask[row * block : (row + 1) * block, col * block : (col + 1) * block].any()
    # A cell has a box exactly when an object covers part of it, and the box is one whose object touches the cell.
    object_share = targets.token_semantic[:, len(LAND_COVERS) :].sum(-1)
    np.testing.assert_array_equal(targets.token_box_valid, object_share > 0)
    boxes = {tuple(np.asarray(o.bbox_px, dtype=np.float32) / scene.chip_size) for o in scene.objects}
    for t in np.flatnonzero(targets.token_box_valid):
        assert tuple(targets.token_box[t]) in boxes
    # Pixel labels keep every object (max-pooling favours object classes over land cover).
    for obj in scene.objects:
        rows, cols = np.nonzero(obj.mask)
        block = scene.chip_size // PIXELS
        labels = targets.pixel_labels[rows // block, cols // block]
        assert (labels == len(LAND_COVERS) + OBJECT_CLASSES.index(obj.cls)).any()


def test_chip_targets_reject_a_grid_that_does_not_divide_the_chip() -> None:
    with pytest.raises(ValueError, match="multiple"):
        chip_targets(_busy_scene(1), 12, PIXELS)


def test_region_targets_follow_the_prompted_objects(train_dir: Path) -> None:
    records = load_records(train_dir / "records.jsonl")
    seed = json.loads((train_dir / "dataset.json").read_text())["seed"]
    checked = {"relation": 0, "sar-attributes": 0, "counting": 0}
    for record in records:
        scene = synthetic_scene(record, seed, CHIP)
        assert scene is not None and scene.scene_id == record["scene_id"]
        targets = region_targets(record, scene)
        assert targets.shape == (len(record["prompts"]), len(REGION_FIELDS))
        if record["task"] == "relation":
            for slot, index in enumerate(record["answer"]["objects"]):
                assert OBJECT_CLASSES[targets[slot, 0]] == scene.objects[index].cls
            checked["relation"] += 1
        if record["task"] == "attributes" and record["modality"] == "sar":
            colour = [name for name, _ in REGION_FIELDS].index("colour")
            assert targets[0, colour] == IGNORE  # SAR does not show colour
            checked["sar-attributes"] += 1
        if record["task"] == "counting" and record["prompts"]:
            assert prompted_objects(record) == [None]
            assert (targets == IGNORE).all()
            checked["counting"] += 1
    assert checked["relation"] and checked["sar-attributes"]


def test_converted_records_have_no_scene() -> None:
    assert synthetic_scene({"source": "dior-rsvg", "scene_id": "scene000001"}, 0, 128) is None
    assert synthetic_scene({"source": "synthetic", "scene_id": "scene000001"}, None, 128) is None


def test_perception_heads_learn_linear_targets() -> None:
    """On fixed features from which the targets are linearly decodable, fitting the heads lowers every loss."""
    torch.manual_seed(0)
    hidden, dm, batch, tokens = 32, 8, 4, GRID * GRID
    scene = _busy_scene()
    t = chip_targets(scene, GRID, PIXELS)
    semantic = torch.from_numpy(t.token_semantic).expand(batch, -1, -1)
    image = torch.cat([semantic, torch.randn(batch, tokens, hidden - semantic.shape[-1])], -1)
    prompts = torch.randn(batch, 2, 4, hidden)
    features = torch.randn(batch, dm, PIXELS, PIXELS)
    region = torch.full((batch, 2, len(REGION_FIELDS)), IGNORE)
    region[:, 0, 0] = 1
    targets = {
        "aux_token_semantic": semantic,
        "aux_token_box": torch.from_numpy(t.token_box).expand(batch, -1, -1),
        "aux_token_box_valid": torch.from_numpy(t.token_box_valid).expand(batch, -1),
        "aux_token_centres": torch.from_numpy(t.token_centres).expand(batch, -1, -1),
        "aux_pixel_labels": torch.from_numpy(t.pixel_labels).long().expand(batch, -1, -1),
        "aux_region": region,
    }
    heads = PerceptionHeads(hidden, dm)
    with torch.no_grad():
        first = {k: float(v) for k, v in heads.losses(image, prompts, features, targets).items()}
    assert set(first) == {"token_semantic", "token_box", "token_centres", "region", "pixel_semantic"}
    optimizer = torch.optim.Adam(heads.parameters(), lr=0.05)
    for _ in range(60):
        loss = torch.stack(list(heads.losses(image, prompts, features, targets).values())).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        last = {k: float(v) for k, v in heads.losses(image, prompts, features, targets).items()}
    for key in first:
        assert last[key] < first[key], (key, first[key], last[key])


def _encoded_with_aux(run: Any, train_dir: Path, limit: int | None = None) -> tuple[list, Any, Any, Any]:
    """The ``train`` records (the first ``limit``), the run's model config, its processor, and the records encoded
    with their auxiliary targets."""
    records = [r for r in load_records(train_dir / "records.jsonl") if r["split"] == "train"][:limit]
    tokenizer = build_run_tokenizer(records)
    config = build_model_config(run.model, tokenizer)
    processor = EarthGPTXProcessor(tokenizer, config)
    grid = config.vision_config.grid_size // config.projector_downsample
    spec = AuxSpec(seed=3, chip_size=CHIP, grid=grid, pixel_side=CHIP // 2)
    data = encode_dataset(records, train_dir, processor, workers=1, progress=False, aux=spec)
    assert data.aux is not None
    return records, config, processor, data


def test_model_inputs_and_aux_targets_come_apart(tmp_path: Path, train_dir: Path) -> None:
    run = small_run(tmp_path, train_dir)
    records, config, processor, data = _encoded_with_aux(run, train_dir, limit=40)
    grid = config.vision_config.grid_size // config.projector_downsample
    index = torch.arange(8)
    inputs = data.batch(index)
    assert not any(k.startswith("aux_") for k in inputs)
    targets = data.aux_targets(index)
    assert targets is not None and all(k.startswith("aux_") for k in targets)
    assert targets["aux_token_semantic"].shape == (8, grid * grid, len(SEMANTIC_CLASSES))
    assert targets["aux_pixel_labels"].shape == (8, CHIP // 2, CHIP // 2)
    assert targets["aux_centre_map"].shape == (8, len(OBJECT_CLASSES), CHIP // 2, CHIP // 2)
    assert targets["aux_region"].shape[:2] == inputs["prompt_valid"].shape
    # Region targets exist only in valid prompt slots.
    has_target = (targets["aux_region"] != IGNORE).any(-1)
    assert not bool((has_target & ~inputs["prompt_valid"]).any())
    # A subset keeps the per-sample targets aligned.
    sub = data.subset([5, 2])
    sub_targets, data_targets = sub.aux_targets(torch.arange(2)), data.aux_targets(torch.tensor([5, 2]))
    assert sub_targets is not None and data_targets is not None
    torch.testing.assert_close(sub_targets["aux_region"], data_targets["aux_region"])
    plain = encode_dataset(records, train_dir, processor, workers=1, progress=False)
    assert plain.aux is None and plain.aux_targets(index) is None


def test_training_with_aux_losses_logs_them_and_checkpoints_the_heads(
    tmp_path: Path, train_dir: Path
) -> None:
    run = small_run(tmp_path, train_dir, steps=12, checkpoint_every=6, aux_weight=1.0)
    result = train(run, progress=False)
    aux = [entry["aux_loss"] for entry in result.losses]
    assert len(aux) == 12 and all(np.isfinite(aux))
    assert float(np.mean(aux[-3:])) < float(np.mean(aux[:3]))
    state = load_checkpoint(Path(run.train.checkpoint_dir) / CHECKPOINT_NAME)
    assert "aux_heads" in state and any(k.startswith("token_semantic") for k in state["aux_heads"])
    # The heads are training-only: the saved model has none of their weights.
    saved = load_file(Path(run.train.output_dir) / "model.safetensors")
    assert not any("token_semantic" in k for k in saved)


def test_counting_path_trains_its_centre_head_and_reads_the_true_counts(
    tmp_path: Path, train_dir: Path
) -> None:
    from earthgptx.model import EarthGPTXForConditionalGeneration
    from earthgptx.model.surgery_earthgptx import count_name_token_ids, init_count_tokens
    from earthgptx.training.auxiliary import centre_focal_loss
    from earthgptx.training.loop import teacher_forced
    from earthgptx.training.prepare import counted_class_words
    from earthgptx.training.pretrain import chip_modalities, warm_up_centre_head

    run = small_run(tmp_path, train_dir, steps=6, aux_weight=1.0, centre_warmup={"steps": 40})
    run.model.overrides = {**run.model.overrides, "count_classes": len(OBJECT_CLASSES)}
    records, config, processor, data = _encoded_with_aux(run, train_dir)
    torch.manual_seed(0)
    model = EarthGPTXForConditionalGeneration(config)
    frozen = {k: v.clone() for k, v in model.state_dict().items() if ".count_head." not in k}
    assert model.counting_path is not None
    head = model.counting_path.count_head
    assert head is not None
    chips = torch.arange(min(16, data.images.shape[0]))
    modalities = chip_modalities(data)[chips]

    def head_loss() -> float:
        with torch.no_grad():
            features = model.encode_vision(
                data.images[chips].float(), modalities, torch.zeros(len(chips), 1, CHIP, CHIP),
                torch.zeros(len(chips), 1, dtype=torch.bool),
            ).mask_features  # fmt: skip
            return float(centre_focal_loss(head(features), data.aux["aux_centre_map"][chips]))

    # The count tokens start as the words they stand for: the class names' plurals and the numbers.
    tokenizer = processor.tokenizer
    embeddings = model.get_input_embeddings().weight
    projector = model.counting_path
    assert projector is not None
    assert not torch.equal(
        projector.count_numbers.weight[3], embeddings[tokenizer.convert_tokens_to_ids("3")]
    )
    words = counted_class_words(len(OBJECT_CLASSES))
    init_count_tokens(model, tokenizer, words)
    for n in range(config.count_max + 1):
        torch.testing.assert_close(
            projector.count_numbers.weight[n], embeddings[tokenizer.convert_tokens_to_ids(str(n))]
        )
    names = count_name_token_ids(tokenizer, words)
    assert tokenizer.convert_ids_to_tokens(names) == ["ships", "airplanes", "tanks", "vehicles", "buildings"]
    torch.testing.assert_close(projector.count_names.weight, embeddings[torch.tensor(names)])
    with pytest.raises(ValueError, match="object classes"):
        counted_class_words(len(OBJECT_CLASSES) + 1)
    with pytest.raises(ValueError, match="no token for the class word"):
        count_name_token_ids(tokenizer, ["submarines"])
    frozen = {k: v.clone() for k, v in model.state_dict().items() if ".count_head." not in k}

    before = head_loss()
    result = warm_up_centre_head(model, data, steps=40, batch_size=8, lr=1e-2, progress=False)
    assert result.steps == 40 and np.isfinite(result.loss) and 0.0 <= result.count_accuracy <= 1.0
    assert head_loss() < 0.8 * before
    # only the head moved
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in frozen.items())

    # The draw of teacher-forced steps depends only on the seed and the step (a resumed run repeats it).
    draws = [teacher_forced(0, step, 0.5) for step in range(200)]
    assert draws == [teacher_forced(0, step, 0.5) for step in range(200)]
    assert 60 < sum(draws) < 140
    assert all(teacher_forced(0, step, 1.0) for step in range(10))
    assert not any(teacher_forced(0, step, 0.0) for step in range(10))

    # A whole run: the warm-up, then the one-stage training with the counting path, saved with the model.
    trained = train(run, progress=False)
    log = trained.log
    assert log is not None and log["centre_warmup"]["steps"] == 40
    # the count copy is supervised on every step (each batch has a first answer position)
    copy_losses = [entry["copy_loss"] for entry in trained.losses]
    assert copy_losses and all(np.isfinite(copy_losses)) and all(v > 0 for v in copy_losses)
    saved = load_file(Path(run.train.output_dir) / "model.safetensors")
    assert any(".count_head." in k for k in saved) and any(".count_numbers." in k for k in saved)
    # the saved processor expands <image> and <regionI> to the count tokens too
    processor_config = json.loads((Path(run.train.output_dir) / "processor_config.json").read_text())
    assert processor_config["num_image_tokens"] == config.num_image_tokens
    assert processor_config["tokens_per_prompt"] == config.tokens_per_prompt


def test_counting_probe_answers_with_detected_and_true_counts(tmp_path: Path, train_dir: Path) -> None:
    from earthgptx.model import EarthGPTXForConditionalGeneration
    from earthgptx.training.probe_counting import probe_counting

    run = small_run(tmp_path, train_dir)
    run.model.overrides = {**run.model.overrides, "count_classes": len(OBJECT_CLASSES)}
    records = load_records(train_dir / "records.jsonl")
    counting = [r for r in records if r["task"] == "counting"][:6]
    tokenizer = build_run_tokenizer(records)
    config = build_model_config(run.model, tokenizer)
    processor = EarthGPTXProcessor(tokenizer, config)
    torch.manual_seed(0)
    model = EarthGPTXForConditionalGeneration(config)
    result = probe_counting(model, processor, counting, train_dir, seed=3, batch_size=4)
    assert result["records"] == len(counting)
    assert result["whole_image_records"] == sum(r["prompt_type"] == "none" for r in counting)
    for key in ("answer_accuracy_detected_counts", "answer_accuracy_true_counts", "head_count_right"):
        assert 0.0 <= result[key] <= 1.0
    # the untrained head finds no centre: its count is right exactly where the asked class is absent
    whole = [r for r in counting if r["prompt_type"] == "none"]
    expected = sum(r["answer"]["count"] == 0 for r in whole) / max(len(whole), 1)
    assert result["head_count_right"] == pytest.approx(expected)
    # the generate() call is left as it was
    assert "encode_vision" not in vars(model)
    plain = EarthGPTXForConditionalGeneration(
        build_model_config(small_run(tmp_path, train_dir).model, tokenizer)
    )
    with pytest.raises(ValueError, match="no counting path"):
        probe_counting(plain, processor, counting, train_dir, seed=3)


def test_aux_head_weights_name_every_head_and_scale_only_their_own() -> None:
    """``train.aux_head_weights`` knows exactly the heads ``PerceptionHeads.losses`` gives (the counting path's
    included), refuses other names and negative weights, and scales each head's loss alone."""
    from earthgptx.training.auxiliary import weighted_aux_sum
    from earthgptx.training.recipe import AUX_HEADS, TrainSettings

    torch.manual_seed(0)
    hidden, dm, batch = 16, 8, 2
    t = chip_targets(_busy_scene(), GRID, PIXELS)
    region = torch.full((batch, 2, len(REGION_FIELDS)), IGNORE)
    region[:, 0, 0] = 1
    targets = {
        "aux_token_semantic": torch.from_numpy(t.token_semantic).expand(batch, -1, -1),
        "aux_token_box": torch.from_numpy(t.token_box).expand(batch, -1, -1),
        "aux_token_box_valid": torch.from_numpy(t.token_box_valid).expand(batch, -1),
        "aux_token_centres": torch.from_numpy(t.token_centres).expand(batch, -1, -1),
        "aux_pixel_labels": torch.from_numpy(t.pixel_labels).long().expand(batch, -1, -1),
        "aux_centre_map": torch.from_numpy(t.centre_map).expand(batch, -1, -1, -1),
        "aux_region": region,
    }
    heads = PerceptionHeads(hidden, dm)
    with torch.no_grad():
        losses = heads.losses(
            torch.randn(batch, GRID * GRID, hidden), torch.randn(batch, 2, 4, hidden),
            torch.randn(batch, dm, PIXELS, PIXELS), targets, torch.randn(batch, len(OBJECT_CLASSES), PIXELS, PIXELS),
        )  # fmt: skip
    assert set(losses) == set(AUX_HEADS)
    plain = float(weighted_aux_sum(losses, {}))
    near = {"rtol": 1e-5, "atol": 1e-5}  # float32 sums
    torch.testing.assert_close(plain, float(torch.stack(list(losses.values())).sum()), **near)
    heavier = float(weighted_aux_sum(losses, {"count_path": 4.0}))
    torch.testing.assert_close(heavier - plain, 3.0 * float(losses["count_path"]), **near)
    without = float(weighted_aux_sum(losses, {"pixel_semantic": 0.0}))
    torch.testing.assert_close(plain - without, float(losses["pixel_semantic"]), **near)
    with pytest.raises(ValueError, match="unknown heads"):
        TrainSettings(aux_head_weights={"centre": 2.0})
    with pytest.raises(ValueError, match=">= 0"):
        TrainSettings(aux_head_weights={"count_path": -1.0})
