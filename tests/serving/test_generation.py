"""The serving library in process: batched generation against ``model.generate``, request validation, answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from earthgptx.model import EarthGPTXForConditionalGeneration, EarthGPTXProcessor
from earthgptx.serving.generation import BatchedGenerator, GenerationItem
from earthgptx.serving.requests import InvalidRequest, finish_answer, prepare_request
from earthgptx.serving.text import decode_text, encode_text
from earthgptx.serving.version import checkpoint_version, compute_checkpoint_version
from tests.serving.conftest import CHECKPOINT, MAX_NEW_TOKENS, in_process_answers, mask_iou, serving_request


def _items(
    model: EarthGPTXForConditionalGeneration,
    processor: EarthGPTXProcessor,
    folder: Path,
    records: list[dict[str, Any]],
    **overrides: Any,
) -> tuple[list[GenerationItem], list[Any]]:
    """GenerationItems from the torch vision side, one request at a time (as the server gets them)."""
    items, prepared = [], []
    for record in records:
        request = prepare_request(processor, serving_request(folder, record), MAX_NEW_TOKENS, 256)
        with torch.no_grad():
            vision = model.encode_vision(
                request.pixel_values[None],
                torch.tensor([request.modality_id]),
                request.prompt_masks[None],
                request.prompt_valid[None],
            )
        assert vision.count_mix is not None and vision.region_count_mix is not None
        items.append(
            GenerationItem(
                input_ids=request.input_ids,
                image_tokens=vision.image_tokens[0],
                prompt_tokens=vision.prompt_tokens[0],
                prompt_valid=request.prompt_valid,
                mask_features=vision.mask_features[0],
                count_mix=vision.count_mix[0],
                region_count_mix=vision.region_count_mix[0],
                max_new_tokens=MAX_NEW_TOKENS,
                **overrides,
            )
        )
        prepared.append(request)
    return items, prepared


def test_batched_generation_matches_generate_token_for_token(
    tiny_model: EarthGPTXForConditionalGeneration,
    tiny_processor: EarthGPTXProcessor,
    held_out: tuple[Path, list[dict[str, Any]]],
) -> None:
    folder, records = held_out
    records = records[:20]
    reference = in_process_answers(tiny_model, tiny_processor, folder, records, batch_size=8)
    items, prepared = _items(tiny_model, tiny_processor, folder, records)
    generator = BatchedGenerator(tiny_model)
    served = []
    for start in range(0, len(items), 6):  # another batch composition than the reference's
        results = generator.generate(items[start : start + 6])
        for result, request in zip(results, prepared[start : start + 6], strict=True):
            served.append(
                finish_answer(
                    tiny_processor, result.token_ids, result.mask_logits, request.width, request.height
                )
            )
    assert [a.text for a in served] == [a.text for a in reference]
    for ours, theirs in zip(served, reference, strict=True):
        if theirs.masks:
            assert mask_iou(ours.mask, theirs.masks[0]) >= 0.99


def test_per_request_limits_and_cancellation(
    tiny_model: EarthGPTXForConditionalGeneration,
    tiny_processor: EarthGPTXProcessor,
    held_out: tuple[Path, list[dict[str, Any]]],
) -> None:
    folder, records = held_out
    captions = [r for r in records if r["task"] in ("scene_caption", "region_caption")][:3]
    items, _ = _items(tiny_model, tiny_processor, folder, captions)
    generator = BatchedGenerator(tiny_model)
    full = generator.generate(items)
    items[0].max_new_tokens = 2
    items[1].is_cancelled = lambda: True
    limited = generator.generate(items)
    assert limited[0].token_ids == full[0].token_ids[:2] and len(full[0].token_ids) > 2
    assert limited[1].cancelled and not limited[0].cancelled
    assert limited[2].token_ids == full[2].token_ids


def test_generator_names_a_malformed_item(
    tiny_model: EarthGPTXForConditionalGeneration,
    tiny_processor: EarthGPTXProcessor,
    held_out: tuple[Path, list[dict[str, Any]]],
) -> None:
    folder, records = held_out
    items, _ = _items(tiny_model, tiny_processor, folder, records[:1])
    generator = BatchedGenerator(tiny_model)
    item = items[0]
    item.image_tokens = item.image_tokens[:5]
    with pytest.raises(ValueError, match="IMAGE_TOKENS has shape"):
        generator.validate(item)
    items[0].image_tokens = torch.zeros(
        tiny_model.config.num_image_tokens, tiny_model.config.text_config.hidden_size
    )
    items[0].count_mix = None
    with pytest.raises(ValueError, match="COUNT_MIX"):
        generator.validate(items[0])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"band_names": ["red", "green"]}, "band names were given"),
        ({"prompts": [{"type": "box", "box": [10, 10, 400, 60]}]}, "outside the 128x128 chip"),
        ({"modality": "hyperspectral"}, "unknown modality 'hyperspectral'"),
        ({"instruction": "  "}, "INSTRUCTION is empty"),
        ({"max_new_tokens": 0}, "MAX_NEW_TOKENS must be between 1 and 256"),
    ],
)
def test_invalid_requests_are_named(
    tiny_processor: EarthGPTXProcessor,
    held_out: tuple[Path, list[dict[str, Any]]],
    change: dict[str, Any],
    message: str,
) -> None:
    folder, records = held_out
    record = next(r for r in records if r["modality"] == "optical")
    with pytest.raises(InvalidRequest, match=message):
        prepare_request(tiny_processor, serving_request(folder, record, **change), MAX_NEW_TOKENS, 256)


def test_bad_band_count_is_invalid(
    tiny_processor: EarthGPTXProcessor, held_out: tuple[Path, list[dict[str, Any]]]
) -> None:
    folder, records = held_out
    request = serving_request(folder, records[0])
    request.bands = request.bands[:2]
    with pytest.raises(InvalidRequest, match="the image has 2 bands but 3 band names"):
        prepare_request(tiny_processor, request, MAX_NEW_TOKENS, 256)


def test_finish_answer_parses_counts_boxes_and_masks(tiny_processor: EarthGPTXProcessor) -> None:
    ids = tiny_processor.tokenizer("3", add_special_tokens=False)["input_ids"]
    counted = finish_answer(tiny_processor, ids, None, 256, 128, "v")
    assert (counted.count, counted.label, counted.mask.shape) == (3, "3", (0, 0))
    boxed = finish_answer(
        tiny_processor, tiny_processor.tokenizer("[100, 200, 300, 400]", add_special_tokens=False)["input_ids"],
        None, 256, 128,
    )  # fmt: skip
    assert boxed.boxes == [[25.6, 25.6, 76.8, 51.2]] and boxed.count == -1
    logits = torch.full((1, 128, 128), -1.0)
    logits[0, :64, :] = 1.0
    seg = finish_answer(tiny_processor, [tiny_processor.seg_token_id], logits, 256, 128)
    assert seg.mask.shape == (128, 256) and seg.mask.dtype == np.uint8
    assert seg.mask[:60].all() and not seg.mask[68:].any()


def test_text_tensors_round_trip() -> None:
    text = 'Zählen: {"prompts": []} <region1>'
    assert decode_text(encode_text(text)) == text
    assert decode_text(np.zeros(0, dtype=np.float64)) == ""
    with pytest.raises(ValueError, match="UINT8"):
        decode_text(np.zeros(3, dtype=np.int32))


def test_checkpoint_version_follows_the_weights(tmp_path: Path) -> None:
    version = compute_checkpoint_version(CHECKPOINT)
    assert version.startswith("earthgptx-tiny@") and version == checkpoint_version(CHECKPOINT)
    copy = tmp_path / "earthgptx-tiny"
    copy.mkdir()
    for name in ("config.json", "model.safetensors"):
        (copy / name).write_bytes((CHECKPOINT / name).read_bytes())
    other = compute_checkpoint_version(copy)
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (copy / "model.safetensors").write_bytes(bytes(data))
    assert compute_checkpoint_version(copy) != other
    (copy / "version.txt").write_text("stamped@1\n")
    assert checkpoint_version(copy) == "stamped@1"
