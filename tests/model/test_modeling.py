from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from earthgptx.model import EarthGPTXConfig, EarthGPTXForConditionalGeneration, EarthGPTXProcessor
from earthgptx.training.datasets import collate_records


@pytest.fixture(scope="module")
def train_batch(
    processor: EarthGPTXProcessor, records_dir: tuple[Path, list[dict[str, Any]]]
) -> dict[str, torch.Tensor]:
    root, records = records_dir
    return collate_records(records, root, processor, train=True)


@pytest.fixture(scope="module")
def infer_batch(
    processor: EarthGPTXProcessor, records_dir: tuple[Path, list[dict[str, Any]]]
) -> dict[str, torch.Tensor]:
    root, records = records_dir
    return collate_records(records, root, processor, train=False)


def test_forward_shapes(
    model: EarthGPTXForConditionalGeneration, train_batch: dict[str, torch.Tensor]
) -> None:
    config = model.config
    with torch.no_grad():
        out = model(**train_batch)
    b, length = train_batch["input_ids"].shape
    n = train_batch["prompt_masks"].shape[1]
    hidden = config.text_config.hidden_size
    assert out.logits.shape == (b, length, config.text_config.vocab_size)
    assert out.image_tokens.shape == (b, config.num_image_tokens, hidden)
    assert out.prompt_tokens.shape == (b, n, config.tokens_per_prompt, hidden)
    assert out.mask_logits.shape == (1, config.image_size, config.image_size)
    assert out.seg_batch_index.tolist() == [2]
    for value in (out.loss, out.lm_loss, out.mask_loss):
        assert value.ndim == 0 and torch.isfinite(value)
    assert torch.allclose(out.loss, out.lm_loss + out.mask_loss)
    # prompt tokens of empty slots are zero
    assert not out.prompt_tokens[3].any() and out.prompt_tokens[1, 0].abs().sum() > 0


def test_loss_counts_only_answer_tokens(
    model: EarthGPTXForConditionalGeneration,
    train_batch: dict[str, torch.Tensor],
    processor: EarthGPTXProcessor,
    records_dir: tuple[Path, list[dict[str, Any]]],
) -> None:
    batch = {k: v for k, v in train_batch.items() if k != "target_masks"}
    with torch.no_grad():
        out = model(**batch)
    labels = batch["labels"]
    logits = out.logits[:, :-1]
    target = labels[:, 1:]
    keep = target != -100
    expected = F.cross_entropy(logits[keep], target[keep])
    assert torch.allclose(out.lm_loss, expected, atol=1e-5)
    assert out.mask_loss is None
    # exactly the answer tokens (+ </s> each), with region placeholders expanded to K tokens
    expected_count = 0
    for record in records_dir[1]:
        ids = processor._encode_text(record["conversations"][1]["value"], expand_regions=False)
        expected_count += len(ids) + 1
    assert int(keep.sum()) == expected_count


def test_regions_named_in_answers_keep_their_token_embedding(
    model: EarthGPTXForConditionalGeneration,
    train_batch: dict[str, torch.Tensor],
    processor: EarthGPTXProcessor,
) -> None:
    ids, labels = train_batch["input_ids"][:1], train_batch["labels"][:1]
    answer = labels != -100
    region1 = processor.region_token_ids[0]
    assert int(((ids == region1) & answer).sum()) == 1  # "<region1> is left of <region2>." names it once
    assert int(((ids == region1) & ~answer).sum()) == processor.tokens_per_prompt
    with torch.no_grad():
        vision = model.encode_vision(
            train_batch["pixel_values"][:1],
            train_batch["modality_ids"][:1],
            train_batch["prompt_masks"][:1],
            train_batch["prompt_valid"][:1],
        )
        embeds = model.embed_inputs(
            ids, vision.image_tokens, vision.prompt_tokens, train_batch["prompt_valid"][:1], answer
        )
        table = model.get_input_embeddings().weight
    at_answer = ((ids == region1) & answer).nonzero()[0]
    torch.testing.assert_close(embeds[0, at_answer[1]], table[region1])
    prompt_side = ((ids == region1) & ~answer).nonzero()[:, 1]
    torch.testing.assert_close(embeds[0, prompt_side], vision.prompt_tokens[0, 0])


def test_all_masked_labels_give_zero_not_nan(
    model: EarthGPTXForConditionalGeneration, train_batch: dict[str, torch.Tensor]
) -> None:
    batch = dict(train_batch, labels=torch.full_like(train_batch["labels"], -100))
    batch.pop("target_masks")
    with torch.no_grad():
        assert model(**batch).loss.item() == 0.0


def test_backward_reaches_every_part(config: EarthGPTXConfig, train_batch: dict[str, torch.Tensor]) -> None:
    torch.manual_seed(1)
    model = EarthGPTXForConditionalGeneration(config).train()
    model(**train_batch).loss.backward()
    for part in (
        "vision_tower",
        "prompt_encoder",
        "fusion",
        "multi_modal_projector",
        "language_model",
        "mask_decoder",
    ):
        grads = [p.grad for p in getattr(model, part).parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), part
    assert model.vision_tower.band_adapter.weight.grad[:, :, :].abs().sum() > 0


def _single(batch: dict[str, torch.Tensor], i: int, n_prompts: int, train: bool) -> dict[str, torch.Tensor]:
    """Sample i alone, with its own padding removed."""
    mask = batch["attention_mask"][i].bool()
    one = {k: v[i : i + 1] for k, v in batch.items() if k not in ("target_masks",)}
    for key in ("input_ids", "attention_mask") + (("labels",) if train else ()):
        one[key] = one[key][:, mask]
    one["prompt_masks"] = one["prompt_masks"][:, : max(1, n_prompts)]
    one["prompt_valid"] = one["prompt_valid"][:, : max(1, n_prompts)]
    return one


def test_mixed_prompt_counts_match_single_samples(
    model: EarthGPTXForConditionalGeneration, train_batch: dict[str, torch.Tensor]
) -> None:
    batch = {k: v for k, v in train_batch.items() if k != "target_masks"}
    with torch.no_grad():
        full = model(**batch)
        for i, n in enumerate([2, 1, 3, 0]):
            alone = model(**_single(batch, i, n, train=True))
            mask = batch["attention_mask"][i].bool()
            torch.testing.assert_close(full.logits[i][mask], alone.logits[0], rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(
                full.prompt_tokens[i, :n], alone.prompt_tokens[0, :n], rtol=1e-4, atol=1e-4
            )


@pytest.mark.parametrize("modality_id", [0, 1, 2, 3])
def test_modality_changes_the_image_tokens(
    model: EarthGPTXForConditionalGeneration, train_batch: dict[str, torch.Tensor], modality_id: int
) -> None:
    pixel_values = train_batch["pixel_values"][:1]
    masks, valid = train_batch["prompt_masks"][:1], train_batch["prompt_valid"][:1]
    with torch.no_grad():
        ours = model.encode_vision(pixel_values, torch.tensor([modality_id]), masks, valid).image_tokens
        other = model.encode_vision(
            pixel_values, torch.tensor([(modality_id + 1) % 4]), masks, valid
        ).image_tokens
    assert torch.isfinite(ours).all()
    assert not torch.allclose(ours, other)


def test_prompt_position_changes_prompt_tokens(model: EarthGPTXForConditionalGeneration) -> None:
    pixel_values = torch.randn(1, 13, 128, 128)
    masks = torch.zeros(1, 2, 128, 128)
    masks[0, 0, 40:50, 40:50] = 1
    masks[0, 1, 40:50, 52:62] = 1  # the same box, shifted next to the first
    with torch.no_grad():
        tokens = model.encode_vision(
            pixel_values, torch.tensor([0]), masks, torch.tensor([[True, True]])
        ).prompt_tokens
    difference = (tokens[0, 0] - tokens[0, 1]).norm() / tokens[0, 0].norm()
    assert difference > 0.05


def test_error_more_regions_than_prompts(
    model: EarthGPTXForConditionalGeneration, train_batch: dict[str, torch.Tensor]
) -> None:
    batch = {k: v for k, v in train_batch.items() if k != "target_masks"}
    batch["prompt_valid"] = batch["prompt_valid"].clone()
    batch["prompt_valid"][0, 1] = False  # sample 0 mentions <region2>
    with pytest.raises(ValueError, match=r"sample 0 refers to <region2> but only 1 visual prompt"):
        model(**batch)


def test_error_image_token_count(
    model: EarthGPTXForConditionalGeneration,
    train_batch: dict[str, torch.Tensor],
    processor: EarthGPTXProcessor,
) -> None:
    batch = {k: v for k, v in train_batch.items() if k != "target_masks"}
    ids = batch["input_ids"].clone()
    first = int((ids[1] == processor.image_token_id).nonzero()[0])
    ids[1, first] = processor.tokenizer.unk_token_id
    with pytest.raises(ValueError, match=r"image tokens and image features do not match: sample 1 has 63"):
        model(**dict(batch, input_ids=ids))


def test_error_target_mask_count(
    model: EarthGPTXForConditionalGeneration, train_batch: dict[str, torch.Tensor]
) -> None:
    batch = dict(train_batch, target_masks=torch.zeros(2, 128, 128))
    with pytest.raises(ValueError, match=r"found 1 \[SEG\] tokens in input_ids but target_masks has 2"):
        model(**batch)


def test_generate_batch_matches_single_requests(
    model: EarthGPTXForConditionalGeneration, infer_batch: dict[str, torch.Tensor]
) -> None:
    out = model.generate(**infer_batch, max_new_tokens=6)
    assert out.sequences.shape == (4, 6)
    for i, n in enumerate([2, 1, 3, 0]):
        alone = model.generate(**_single(infer_batch, i, n, train=False), max_new_tokens=6)
        assert out.sequences[i].tolist() == alone.sequences[0].tolist()
    # the first generated token is the argmax of a plain forward pass at the last position
    with torch.no_grad():
        logits = model(**infer_batch).logits[:, -1]
    assert out.sequences[:, 0].tolist() == logits.argmax(-1).tolist()


def test_generate_rejects_right_padding(
    model: EarthGPTXForConditionalGeneration, train_batch: dict[str, torch.Tensor]
) -> None:
    batch = {k: v for k, v in train_batch.items() if k not in ("labels", "target_masks")}
    with pytest.raises(ValueError, match="left-padded"):
        model.generate(**batch, max_new_tokens=2)


def test_generated_seg_gives_the_same_mask_as_teacher_forcing(
    model: EarthGPTXForConditionalGeneration,
    infer_batch: dict[str, torch.Tensor],
    processor: EarthGPTXProcessor,
) -> None:
    seg = processor.seg_token_id
    bias = torch.zeros(model.config.text_config.vocab_size)
    bias[seg] = 1e4  # make the untrained model answer with [SEG]
    handle = model.language_model.lm_head.register_forward_hook(lambda _m, _i, out: out + bias)
    try:
        one = _single(infer_batch, 2, 3, train=False)
        out = model.generate(**one, max_new_tokens=2)
        assert out.sequences[0].tolist() == [seg, seg]
        assert out.mask_logits.shape == (2, 128, 128)
        assert out.seg_batch_index.tolist() == [0, 0] and out.seg_token_index.tolist() == [0, 1]
        forced = dict(one)
        forced["input_ids"] = torch.cat([one["input_ids"], torch.tensor([[seg, seg]])], 1)
        forced["attention_mask"] = torch.ones_like(forced["input_ids"])
        with torch.no_grad():
            teacher = model(**forced)
        torch.testing.assert_close(out.mask_logits, teacher.mask_logits, rtol=1e-4, atol=1e-4)
    finally:
        handle.remove()


def test_save_and_load_round_trip(
    tmp_path: Path,
    model: EarthGPTXForConditionalGeneration,
    processor: EarthGPTXProcessor,
    infer_batch: dict[str, torch.Tensor],
) -> None:
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json"} <= names
    loaded = EarthGPTXForConditionalGeneration.from_pretrained(tmp_path).eval()
    loaded_processor = EarthGPTXProcessor.from_pretrained(tmp_path)
    assert loaded_processor.to_dict() == processor.to_dict()
    original, restored = model.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    assert all(torch.equal(original[k], restored[k]) for k in original)
    with torch.no_grad():
        torch.testing.assert_close(model(**infer_batch).logits, loaded(**infer_batch).logits)


def test_five_views(tokenizer: Any) -> None:
    config = EarthGPTXConfig.tiny(
        tokenizer=tokenizer,
        vision_config={"num_views": 5},
        prompt_config={"mask_size": 256, "patch_size": 32},
    )
    model = EarthGPTXForConditionalGeneration(config).eval()
    masks = torch.zeros(2, 1, 256, 256)
    masks[:, 0, 10:100, 20:60] = 1
    with torch.no_grad():
        out = model.encode_vision(
            torch.randn(2, 13, 256, 256), torch.tensor([0, 2]), masks, torch.ones(2, 1, dtype=torch.bool)
        )
    assert out.image_tokens.shape == (2, 5 * 64, config.text_config.hidden_size)
    assert out.mask_features.shape == (2, config.mask_decoder_hidden_size, 64, 64)
    with torch.no_grad():
        masks_out = model.predict_masks(
            torch.randn(3, config.text_config.hidden_size), torch.tensor([0, 1, 1]), out.mask_features
        )
    assert masks_out.shape == (3, 256, 256)


def test_sincos_positions_are_distinct_and_smooth() -> None:
    from earthgptx.model.modeling_earthgptx import sincos_1d, sincos_2d

    grid = sincos_2d(8, 64)
    assert grid.shape == (64, 64)
    assert torch.unique(grid, dim=0).shape[0] == 64  # every cell has its own code
    distance = torch.cdist(grid, grid)
    # cell (0,0) is nearer, in feature space, to (0,1) than to (7,7)
    assert distance[0, 1] < distance[0, 63]
    line = sincos_1d(torch.arange(1000), 128, max_period=4000.0)
    similarity = F.cosine_similarity(line[100:101], line, dim=-1)
    assert similarity[101] > similarity[110] > similarity[600]


def test_position_features_are_initialised(config: EarthGPTXConfig) -> None:
    from earthgptx.model.modeling_earthgptx import sincos_2d

    model = EarthGPTXForConditionalGeneration(config)
    prompt = config.prompt_config
    side = prompt.mask_size // prompt.patch_size
    torch.testing.assert_close(
        model.prompt_encoder.position_embeddings[0], sincos_2d(side, prompt.hidden_size)
    )
    features = model.mask_decoder.position_features
    assert features.shape[-1] == config.vision_config.image_size // 2 and features.abs().sum() > 0


def test_prompt_position_features_are_the_centroid_and_start_as_a_no_op(config: EarthGPTXConfig) -> None:
    assert config.prompt_position_features  # on in the tiny preset
    torch.manual_seed(0)
    model = EarthGPTXForConditionalGeneration(config).eval()
    projector = model.multi_modal_projector
    assert projector.prompt_position is not None
    assert not projector.prompt_position.weight.any() and not projector.prompt_position.bias.any()

    masks = torch.zeros(1, 2, 128, 128)
    masks[0, 0, 10:30, 40:90] = 1  # rows 10..29, columns 40..89: centroid x = 65, y = 20
    masks[0, 1, 100:102, 2:4] = 1  # a point near the lower left corner: centroid (3, 101)
    features = projector.position_features(masks)
    assert features.shape == (1, 2, 3 + 3 * 32)
    r0 = ((65 - 64) ** 2 + (20 - 64) ** 2) ** 0.5
    r1 = ((3 - 64) ** 2 + (101 - 64) ** 2) ** 0.5
    expected = torch.tensor([[1 / 64, -44 / 64, (r0 - 64) / 64], [-61 / 64, 37 / 64, (r1 - 64) / 64]])
    torch.testing.assert_close(features[0, :, :3], expected)

    # Without the part, the same weights give the same tokens: a checkpoint trained without it loads unchanged.
    off = EarthGPTXForConditionalGeneration(
        EarthGPTXConfig.from_dict({**config.to_dict(), "prompt_position_features": False})
    )
    result = off.load_state_dict(model.state_dict(), strict=False)
    assert not result.missing_keys and set(result.unexpected_keys) == {
        "multi_modal_projector.prompt_position.weight",
        "multi_modal_projector.prompt_position.bias",
    }
    off.eval()
    pixel_values = torch.randn(1, 13, 128, 128)
    valid = torch.tensor([[True, True]])
    with torch.no_grad():
        with_part = model.encode_vision(pixel_values, torch.tensor([0]), masks, valid).prompt_tokens
        without = off.encode_vision(pixel_values, torch.tensor([0]), masks, valid).prompt_tokens
        torch.testing.assert_close(with_part, without)
        # Once trained, the part moves each prompt's tokens by a function of where the prompt is.
        torch.nn.init.normal_(projector.prompt_position.weight, std=0.1)
        moved = model.encode_vision(pixel_values, torch.tensor([0]), masks, valid).prompt_tokens
    shift = moved - with_part
    assert shift[0, 0].abs().sum() > 0
    torch.testing.assert_close(shift[0, 0, 0], shift[0, 0, 1])  # the same shift for each of the K tokens
    assert not torch.allclose(shift[0, 0, 0], shift[0, 1, 0])
    with pytest.raises(ValueError, match="prompt_masks"):
        projector(torch.zeros(1, 256, 192), torch.zeros(1, 2, 4, 192), torch.tensor([0]))
    # the sine/cosine part: the first pair has the longest period, 4 × 128 px
    assert features[0, 0, 3].item() == pytest.approx(math.sin(2 * math.pi * 65 / 512), abs=1e-5)
    assert features[0, 0, 3 + 16].item() == pytest.approx(math.cos(2 * math.pi * 65 / 512), abs=1e-5)
    only_values = EarthGPTXForConditionalGeneration(
        EarthGPTXConfig.from_dict({**config.to_dict(), "prompt_position_sincos": 0})
    ).multi_modal_projector
    assert only_values.prompt_position is not None and only_values.prompt_position.in_features == 3
    torch.testing.assert_close(only_values.position_features(masks), features[..., :3])


def test_checkpoints_with_the_counting_path_under_the_projector_still_load(
    tmp_path: Path, config: EarthGPTXConfig
) -> None:
    """Weights saved before the counting path had a module of its own (the shipped model's) are read under their
    present names (``CHECKPOINT_KEY_MAPPING``): nothing missing, nothing left over, every tensor in place."""
    from safetensors.torch import load_file, save_file

    with_path = EarthGPTXConfig.from_dict(
        {**config.to_dict(), "count_classes": 5, "count_number_ids": list(range(9))}
    )
    torch.manual_seed(3)
    model = EarthGPTXForConditionalGeneration(with_path).eval()
    model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    old = {
        key.replace("counting_path.count_", "multi_modal_projector.count_"): v for key, v in weights.items()
    }
    assert any(key.startswith("multi_modal_projector.count_head.") for key in old)
    save_file(old, tmp_path / "model.safetensors", metadata={"format": "pt"})
    loaded, info = EarthGPTXForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    expected = model.state_dict()
    for key, value in loaded.state_dict().items():
        torch.testing.assert_close(value, expected[key], msg=key)


def test_counting_path_counts_centre_peaks_and_hands_over_count_tokens(config: EarthGPTXConfig) -> None:
    from earthgptx.data.vocabulary import OBJECT_CLASSES
    from earthgptx.model.counting_earthgptx import CENTRE_PRIOR_BIAS, centre_peaks
    from earthgptx.model.modeling_earthgptx import cell_shares

    n_classes = len(OBJECT_CLASSES)
    with_path = EarthGPTXConfig.from_dict({**config.to_dict(), "count_classes": n_classes})
    assert with_path.num_image_tokens == config.num_image_tokens + n_classes
    assert with_path.tokens_per_prompt == config.tokens_per_prompt + n_classes
    torch.manual_seed(0)
    model = EarthGPTXForConditionalGeneration(with_path).eval()
    projector = model.counting_path
    assert projector is not None and projector.count_head.out.out_channels == n_classes
    torch.testing.assert_close(
        projector.count_head.out.bias, torch.full((n_classes,), CENTRE_PRIOR_BIAS)
    )  # a low centre probability everywhere at first

    # Count tokens: per class its name plus its number; a fractional count mixes two numbers; counts past
    # count_max saturate.
    numbers, names = projector.count_numbers.weight, projector.count_names.weight
    tokens = projector.count_tokens(torch.tensor([[2.25, 0.0, 20.0] + [0.0] * (n_classes - 3)]))
    assert tokens.shape == (1, n_classes, numbers.shape[1])
    torch.testing.assert_close(tokens[0, 0], names[0] + 0.75 * numbers[2] + 0.25 * numbers[3])
    torch.testing.assert_close(tokens[0, 1], names[1] + numbers[0])  # class 1: zero objects
    torch.testing.assert_close(tokens[0, 2], names[2] + numbers[with_path.count_max])  # clipped to count_max

    # Peaks: local maxima above the threshold. Class 0 has two bumps (each with a weaker neighbour, which is not a
    # peak) and a faint one below the threshold; class 1 has a single cell.
    logits = torch.full((1, 2, 64, 64), -8.0)
    logits[0, 0, 3, 3], logits[0, 0, 3, 4] = 4.0, 2.0
    logits[0, 0, 40, 40], logits[0, 0, 41, 41] = 3.0, 1.0
    logits[0, 0, 20, 50] = -1.0  # p = 0.27
    logits[0, 1, 10, 60] = 0.5  # p = 0.62
    peaks = centre_peaks(logits, 0.5)
    assert peaks.shape == logits.shape
    assert peaks[0, 0].sum().item() == 2 and peaks[0, 0, 3, 3] == 1 and peaks[0, 0, 40, 40] == 1
    assert peaks[0, 1].sum().item() == 1
    assert centre_peaks(logits, 0.2)[0, 0].sum().item() == 3
    # a wider window keeps one peak of two that lie three cells apart
    close = torch.full((1, 1, 16, 16), -8.0)
    close[0, 0, 8, 4], close[0, 0, 8, 7] = 3.0, 2.5
    assert centre_peaks(close, 0.5).sum().item() == 2
    assert centre_peaks(close, 0.5, window=7).sum().item() == 1
    # Across classes: a peak must also top every other class's heat in its window, so an object that two classes
    # both peak on counts once, for the surer class; peaks of two classes farther apart than the window both count.
    both = torch.full((1, 3, 16, 16), -8.0)
    both[0, 0, 4, 4], both[0, 1, 4, 5] = 3.0, 2.0  # one object, read as class 0 (surer) and class 1
    both[0, 2, 12, 12] = 1.0  # another object, far from the first
    per_class = centre_peaks(both, 0.5, 3, "per_class").sum((-2, -1))[0]
    across = centre_peaks(both, 0.5, 3, "across_classes").sum((-2, -1))[0]
    assert per_class.tolist() == [1.0, 1.0, 1.0] and across.tolist() == [1.0, 0.0, 1.0]
    assert centre_peaks(both, 0.5, 1, "across_classes").sum().item() == 3  # a 1-cell window: no neighbour compared
    with pytest.raises(ValueError, match="peak rule"):
        centre_peaks(both, 0.5, 3, "per_object")

    # Region counts: the top-left quarter of the chip holds the class-0 peak at (3, 3) (chip pixels 6-7), not the
    # one at (40, 40); a region over half of a peak's cell counts it by half.
    masks = torch.zeros(1, 2, 128, 128)
    masks[0, 0, :64, :64] = 1
    masks[0, 1, 80:82, 80] = 1  # one of the two pixel columns of cell (40, 40)
    region = projector.region_counts(peaks, cell_shares(masks, 64))
    assert region.shape == (1, 2, 2)
    torch.testing.assert_close(region[0], torch.tensor([[1.0, 0.0], [0.5, 0.0]]))

    # The path leaves the tokens of a model without it as they were and appends its count tokens: a checkpoint
    # trained without it loads unchanged.
    off = EarthGPTXForConditionalGeneration(config).eval()
    result = off.load_state_dict(model.state_dict(), strict=False)
    assert not result.missing_keys
    unexpected = {".".join(k.split(".")[:2]) for k in result.unexpected_keys}
    assert unexpected == {
        "counting_path.count_head", "counting_path.count_numbers",
        "counting_path.count_names", "count_copy.query", "count_copy.key", "count_copy.gate",
    }  # fmt: skip
    pixel_values = torch.randn(1, 13, 128, 128)
    valid = torch.tensor([[True, True]])
    plain_tokens = config.num_image_tokens
    k = config.tokens_per_prompt
    with torch.no_grad():
        on = model.encode_vision(pixel_values, torch.tensor([0]), masks, valid)
        plain = off.encode_vision(pixel_values, torch.tensor([0]), masks, valid)
        assert on.image_tokens.shape[1] == with_path.num_image_tokens
        assert on.prompt_tokens.shape[2] == with_path.tokens_per_prompt
        torch.testing.assert_close(on.image_tokens[:, :plain_tokens], plain.image_tokens)
        torch.testing.assert_close(on.prompt_tokens[:, :, :k], plain.prompt_tokens)
        assert plain.centre_logits is None
        assert on.centre_logits is not None and on.centre_logits.shape == (1, n_classes, 64, 64)
        # Teacher forcing: true centres replace the detected peaks; the detector's own peaks change nothing.
        own = centre_peaks(on.centre_logits, with_path.count_threshold, with_path.count_window)
        same = model.encode_vision(pixel_values, torch.tensor([0]), masks, valid, centre_maps=own)
        torch.testing.assert_close(same.image_tokens, on.image_tokens)
        centres = torch.zeros(1, n_classes, 64, 64)
        centres[0, 2, 3, 3] = centres[0, 2, 50, 50] = 1.0  # two objects of class 2, one inside prompt 0
        forced = model.encode_vision(pixel_values, torch.tensor([0]), masks, valid, centre_maps=centres)
        with pytest.raises(ValueError, match="centre_maps"):
            model.encode_vision(pixel_values, torch.tensor([0]), masks, valid, centre_maps=centres[:, :2])
    assert not own.any()  # the untrained head finds nothing: every count token says 0
    torch.testing.assert_close(on.image_tokens[0, plain_tokens + 2], names[2] + numbers[0])
    # the forced counts: 2 of class 2 in the image, 1 in prompt 0, none in prompt 1; the rest is unchanged
    torch.testing.assert_close(forced.image_tokens[0, plain_tokens + 2], names[2] + numbers[2])
    torch.testing.assert_close(forced.prompt_tokens[0, 0, k + 2], names[2] + numbers[1])
    torch.testing.assert_close(forced.prompt_tokens[0, 1, k + 2], names[2] + numbers[0])
    others = [i for i in range(with_path.num_image_tokens) if i != plain_tokens + 2]
    torch.testing.assert_close(forced.image_tokens[:, others], on.image_tokens[:, others])
    others = [i for i in range(with_path.tokens_per_prompt) if i != k + 2]
    torch.testing.assert_close(forced.prompt_tokens[:, :, others], on.prompt_tokens[:, :, others])

    multi_view = {**with_path.to_dict()}
    multi_view["vision_config"] = {**multi_view["vision_config"], "num_views": 5}
    multi_view["prompt_config"] = {**multi_view["prompt_config"], "mask_size": 256}  # 5 views read a 256 chip
    with pytest.raises(ValueError, match="single-view"):
        EarthGPTXConfig.from_dict(multi_view)
    with pytest.raises(ValueError, match="count_threshold"):
        EarthGPTXConfig.from_dict({**with_path.to_dict(), "count_threshold": 1.0})
    with pytest.raises(ValueError, match="count_window"):
        EarthGPTXConfig.from_dict({**with_path.to_dict(), "count_window": 4})
    with pytest.raises(ValueError, match="count_peaks"):
        EarthGPTXConfig.from_dict({**with_path.to_dict(), "count_peaks": "per_object"})


def test_counting_path_is_trained_with_a_focal_loss_on_the_centres() -> None:
    from earthgptx.training.auxiliary import PerceptionHeads, centre_focal_loss, centre_heat_targets

    # Heat targets: 1 on each centre, a Gaussian (sigma 1 cell) around it, the larger bump where two meet.
    centres = torch.zeros(1, 1, 8, 8)
    centres[0, 0, 2, 2] = centres[0, 0, 2, 4] = 1.0
    heat = centre_heat_targets(centres)
    assert heat[0, 0, 2, 2] == 1.0 and heat[0, 0, 2, 4] == 1.0
    assert heat[0, 0, 2, 3].item() == pytest.approx(math.exp(-0.5))  # between the two: the max, not the sum
    assert heat[0, 0, 3, 3].item() == pytest.approx(math.exp(-1.0))
    assert heat[0, 0, 7, 7] == 0.0

    # All logits 0 (p = 0.5) on a 3 x 3 map with one centre in the middle, worked by hand.
    one = torch.zeros(1, 1, 3, 3)
    one[0, 0, 1, 1] = 1.0
    log_half = math.log(0.5)
    edge, corner = (1 - math.exp(-0.5)) ** 4, (1 - math.exp(-1.0)) ** 4
    expected = -(0.5**2) * log_half - (0.5**2) * log_half * (4 * edge + 4 * corner)
    assert centre_focal_loss(torch.zeros(1, 1, 3, 3), one).item() == pytest.approx(expected, rel=1e-5)
    # a confident, right heatmap costs almost nothing; the same heatmap one cell off costs a lot
    right = torch.where(one > 0, 12.0, -12.0)
    assert centre_focal_loss(right, one).item() < 1e-4
    assert centre_focal_loss(right.roll(1, dims=-1), one).item() > 1.0

    heads = PerceptionHeads(16, 8)
    b, t = 2, 4
    targets = {
        "aux_token_semantic": torch.full((b, t, len(heads.token_semantic.weight)), 1.0 / 20),
        "aux_token_box": torch.zeros(b, t, 4),
        "aux_token_box_valid": torch.zeros(b, t, dtype=torch.bool),
        "aux_token_centres": torch.zeros(b, t, heads.token_centres.out_features),
        "aux_region": torch.full((b, 1, 5), -100, dtype=torch.int16),
        "aux_pixel_labels": torch.zeros(b, 4, 4, dtype=torch.long),
        "aux_centre_map": torch.zeros(b, 5, 4, 4, dtype=torch.uint8),
    }
    targets["aux_centre_map"][0, 1, 2, 2] = 1
    args = (torch.zeros(b, t, 16), torch.zeros(b, 1, 2, 16), torch.zeros(b, 8, 4, 4), targets)
    assert "count_path" not in heads.losses(*args)
    logits = torch.randn(b, 5, 4, 4)
    loss = heads.losses(*args, centre_logits=logits)["count_path"]
    torch.testing.assert_close(loss, centre_focal_loss(logits, targets["aux_centre_map"]))
    with pytest.raises(ValueError, match="counting path"):
        heads.losses(*args, centre_logits=torch.zeros(b, 3, 4, 4))


def test_init_from_with_overrides_adds_the_new_part(config: EarthGPTXConfig, tmp_path: Path) -> None:
    from earthgptx.model.surgery_earthgptx import apply_init_overrides

    torch.manual_seed(1)
    stage1 = EarthGPTXForConditionalGeneration(
        EarthGPTXConfig.from_dict({**config.to_dict(), "prompt_position_features": False})
    )
    stage1.save_pretrained(tmp_path)
    loaded_config = EarthGPTXConfig.from_pretrained(str(tmp_path))
    assert not loaded_config.prompt_position_features
    apply_init_overrides(loaded_config, {"prompt_position_features": True})
    stage2 = EarthGPTXForConditionalGeneration.from_pretrained(str(tmp_path), config=loaded_config)
    assert stage2.multi_modal_projector.prompt_position is not None
    assert not stage2.multi_modal_projector.prompt_position.weight.any()
    # from_pretrained builds on the meta device: the position features must still be computed right
    masks = torch.zeros(1, 1, 128, 128)
    masks[0, 0, 10:30, 40:90] = 1
    fresh = EarthGPTXForConditionalGeneration(loaded_config).multi_modal_projector
    features = stage2.multi_modal_projector.position_features(masks)
    assert torch.isfinite(features).all() and features.abs().max() <= 1.0 + 1e-6
    torch.testing.assert_close(features, fresh.position_features(masks))
    for name, value in stage1.state_dict().items():
        torch.testing.assert_close(stage2.state_dict()[name], value, msg=name)
    hidden = loaded_config.text_config.hidden_size
    # a sub-config override is ignored, with a warning
    apply_init_overrides(loaded_config, {"text_config": {"hidden_size": hidden * 2}})
    assert loaded_config.text_config.hidden_size == hidden
    with pytest.raises(ValueError, match="top-level"):
        apply_init_overrides(loaded_config, {"no_such_field": 1})
    with pytest.raises(ValueError, match="prompt_position_sincos must be even"):
        apply_init_overrides(loaded_config, {"prompt_position_sincos": 3})


def test_count_copy_mixes_the_pointed_counts_into_the_next_token() -> None:
    from earthgptx.model.counting_earthgptx import COPY_GATE_BIAS, COPY_POINTER_SCALE, EarthGPTXCountCopy

    torch.manual_seed(0)
    hidden, vocab = 8, 20
    copy = EarthGPTXCountCopy(hidden)
    copy.gate.reset_custom_parameters()
    torch.nn.init.zeros_(copy.query.weight)  # every source scores alike: a plain average of the valid ones
    logits, states, sources = torch.randn(2, vocab), torch.randn(2, hidden), torch.randn(2, 4, hidden)
    mix = torch.zeros(2, 4, 9)
    mix[0, 0, 2] = mix[0, 1, 5] = mix[0, 2, 5] = 1.0
    mix[0, 3, 7] = 1.0  # not a source: masked out
    source_mask = torch.tensor([[True, True, True, False], [False] * 4])
    number_ids = torch.arange(10, 19)
    out = copy(logits, states, sources, mix, source_mask, number_ids)
    gate = torch.sigmoid(torch.tensor(COPY_GATE_BIAS))
    expected = torch.softmax(logits[0], -1) * (1 - gate)
    expected[12] += gate / 3
    expected[15] += gate * 2 / 3
    torch.testing.assert_close(out.log_probs[0].exp(), expected)
    torch.testing.assert_close(out.log_attention[0, :3].exp(), torch.full((3,), 1 / 3))
    assert torch.isfinite(out.log_attention).all() and out.log_attention[0, 3] < -1e6
    torch.testing.assert_close(out.gate_logit, torch.full((2,), COPY_GATE_BIAS))
    # a sample without count tokens keeps the language model's own distribution
    torch.testing.assert_close(out.log_probs[1], torch.log_softmax(logits[1], -1))
    # whatever its weights, the pointer's gaps stay within 2 x COPY_POINTER_SCALE (a bounded cosine), so even its
    # least-weighted count token keeps a gradient
    torch.nn.init.normal_(copy.query.weight, std=100.0)
    torch.nn.init.normal_(copy.key.weight, std=100.0)
    out = copy(logits, states, sources, mix, source_mask, number_ids)
    valid = out.log_attention[0, :3]
    assert float(valid.max() - valid.min()) <= 2 * COPY_POINTER_SCALE + 1e-4
    (-valid[int(valid.argmin())]).backward()
    assert copy.query.weight.grad is not None and copy.query.weight.grad.abs().sum() > 0


def test_copy_positions_are_each_answers_first_prediction(config: EarthGPTXConfig) -> None:
    model = EarthGPTXForConditionalGeneration(config)
    ignore = config.ignore_index
    input_ids = torch.arange(12).reshape(2, 6)
    labels = torch.full((3, 6), ignore)
    labels[0, 3:5] = 7  # the answer starts at 3: position 2 predicts it
    labels[2, 1] = 7
    samples, at = model.copy_positions(torch.zeros(3, 6, dtype=torch.long), labels, None)
    assert samples.tolist() == [0, 2] and at.tolist() == [2, 0]  # sample 1 has no answer
    # without labels: the last real position, for right and for left padding
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1]])
    samples, at = model.copy_positions(input_ids, None, mask)
    assert samples.tolist() == [0, 1] and at.tolist() == [3, 5]
    assert model.copy_positions(input_ids, None, None)[1].tolist() == [5, 5]


def test_count_copy_loss_points_at_the_asked_count_and_opens_the_gate_for_counting_only() -> None:
    from earthgptx.model.modeling_earthgptx import CountCopyResult, CountSources, count_source_key

    cfg = EarthGPTXConfig.from_dict({"count_copy_loss_weight": 2.0})
    model = EarthGPTXForConditionalGeneration.__new__(EarthGPTXForConditionalGeneration)
    model.config = cfg  # count_copy_loss reads only the config
    classes = 5
    key = torch.tensor([[-1, 0, 1, 2, 3, 4, 5 + 0, 5 + 1], [-1, 0, 1, 2, 3, 4, -1, -1], [-1] * 8])
    is_source = key >= 0
    sources = CountSources(torch.zeros(3, 8, 9), is_source, key)
    attention = torch.zeros(3, 8)
    attention[0, 6], attention[0, 1] = 0.25, 0.75  # sample 0 asks for region 1's class 0: 0.25 on it
    attention[1, 1:6] = 0.2
    gate_logit = torch.tensor([0.5, -1.0, 3.0])
    result = CountCopyResult(torch.zeros(3, 20), attention.log(), gate_logit)
    targets = torch.tensor([count_source_key(0, 0, classes), -1, 2])
    assert targets[0] == 5
    loss = model.count_copy_loss(result, sources, torch.arange(3), targets)
    # sample 2 has no count tokens at all: neither term; sample 1 is not a counting question: gate shut
    gate_terms = torch.nn.functional.binary_cross_entropy_with_logits(
        gate_logit[:2], torch.tensor([1.0, 0.0])
    )
    torch.testing.assert_close(loss, 2.0 * (-torch.log(torch.tensor(0.25)) + gate_terms))
    with pytest.raises(ValueError, match="outside"):
        count_source_key(5, None, classes)


def test_count_copy_answers_with_the_detected_counts(
    config: EarthGPTXConfig, tokenizer: Any, records_dir: tuple[Path, list[dict[str, Any]]]
) -> None:
    from earthgptx.data.vocabulary import OBJECT_CLASSES

    root, records = records_dir
    n_classes = len(OBJECT_CLASSES)
    numbers = [tokenizer.convert_tokens_to_ids(str(n)) for n in range(9)]
    with_path = EarthGPTXConfig.from_dict(
        {**config.to_dict(), "count_classes": n_classes, "count_number_ids": numbers}
    )
    processor = EarthGPTXProcessor(tokenizer, with_path)
    batch = collate_records(records, root, processor, train=False)
    torch.manual_seed(0)
    model = EarthGPTXForConditionalGeneration(with_path).eval()
    assert model.count_copy is not None
    with torch.no_grad():
        vision = model.encode_vision(
            batch["pixel_values"], batch["modality_ids"], batch["prompt_masks"], batch["prompt_valid"]
        )
        sources = model.count_sources(batch["input_ids"], vision)
        mix, is_source = sources.mix, sources.is_source
        # the last C image ids, and the last C ids of every <regionI> occurrence, are the count tokens
        regions = (batch["input_ids"].unsqueeze(-1) == torch.tensor(with_path.region_token_ids)).any(-1)
        occurrences = regions.sum(-1) // with_path.tokens_per_prompt
        assert is_source.sum(-1).tolist() == (n_classes * (1 + occurrences)).tolist()
        image_at = (batch["input_ids"] == with_path.image_token_id).nonzero()
        last_image = image_at[image_at[:, 0] == 0][-n_classes:, 1]
        assert is_source[0, last_image].all()
        assert sources.key[0, last_image].tolist() == list(range(n_classes))  # class by class
        assert ((sources.key >= 0) == is_source).all()
        torch.testing.assert_close(mix[0, last_image], vision.count_mix[0])
        # the untrained head finds nothing: every count token carries 0
        assert (mix[is_source].argmax(-1) == 0).all()
        closed_all = model(**batch).logits
        closed = closed_all[:, -1]
        torch.testing.assert_close(closed.exp().sum(-1), torch.ones(len(records)))  # log-probabilities
        torch.nn.init.constant_(
            model.count_copy.gate.bias, 30.0
        )  # the gate wide open: the answer is the count
        opened_all = model(**batch).logits
        opened = opened_all[:, -1]
    assert opened.argmax(-1).tolist() == [numbers[0]] * len(records)
    assert not torch.allclose(opened, closed)
    # the copy acts at the answer's start only
    torch.testing.assert_close(opened_all[:, :-1], closed_all[:, :-1])
    # generate applies the same copy as the forward pass, to the first new token only
    generated = model.generate(**batch, max_new_tokens=2)
    first = generated.sequences[:, :1]
    assert first.flatten().tolist() == [numbers[0]] * len(records)
    ignore = with_path.ignore_index
    labels = torch.cat([torch.full_like(batch["input_ids"], ignore), first], dim=1)
    extended = {
        **batch,
        "input_ids": torch.cat([batch["input_ids"], first], dim=1),
        "attention_mask": torch.cat([batch["attention_mask"], torch.ones_like(first)], dim=1),
        "labels": labels,
    }
    with torch.no_grad():
        after_first = model(**extended).logits[:, -1]  # the language model's own choice (not an answer start)
    assert generated.sequences[:, 1].tolist() == after_first.argmax(-1).tolist()
    with pytest.raises(ValueError, match="count_number_ids"):
        EarthGPTXForConditionalGeneration(
            EarthGPTXConfig.from_dict({**with_path.to_dict(), "count_number_ids": None})
        ).eval()(**batch)
