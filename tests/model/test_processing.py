from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from earthgptx.model import EarthGPTXProcessor
from earthgptx.model.image_processing_earthgptx import (
    INFRARED_ABSOLUTE_SLOT,
    EarthGPTXImageProcessor,
    band_slots,
    brightness_temperature_kelvin,
    normalize_bands,
)
from earthgptx.model.processing_earthgptx import (
    parse_answer,
    prompt_centroid_grid,
    prompt_to_grid,
    rasterize_prompt,
)
from earthgptx.training.datasets import collate_records, encode_record

CONV = [{"from": "human", "value": "<image>\nWhat is <region1>?"}, {"from": "gpt", "value": "a ship"}]


# ------------------------------------------------------------------ bands
def test_image_processor_normalises_per_modality_and_resizes_to_the_chip() -> None:
    image_processor = EarthGPTXImageProcessor(image_size=16)
    array = np.broadcast_to(np.array([40, 120, 200], np.uint8)[:, None, None], (3, 32, 32)).copy()
    out = image_processor(array, "optical", ["red", "green", "blue"])
    assert out.shape == (13, 16, 16) and out.dtype == torch.float32
    slots = torch.from_numpy(normalize_bands(array, "optical", ["red", "green", "blue"]))
    torch.testing.assert_close(out, slots[:, :16, :16])  # a flat chip keeps its values when resized
    assert not out[3:].any()  # the other modalities' slots stay zero
    with pytest.raises(ValueError, match="modality 'sar' needs 1 to 2 bands"):
        image_processor(array, "sar", ["vv", "vh", "hh"])


@pytest.mark.parametrize(
    ("modality", "bands", "dtype", "slots"),
    [
        ("optical", ["red", "green", "blue"], np.uint8, [0, 1, 2]),
        ("optical", ["blue", "green", "red"], np.uint16, [2, 1, 0]),
        ("multispectral", ["blue", "green", "red", "nir"], np.uint16, [1, 2, 3, 7]),
        (
            "multispectral",
            [f"B{i:02d}" for i in range(1, 13)] + ["B8A"],
            np.float32,
            list(range(8)) + list(range(9, 13)) + [8],
        ),
        ("sar", ["vv", "vh"], np.float32, [0, 1]),
        ("sar", ["hv"], np.float32, [1]),
        ("infrared", ["tir"], np.uint16, [0]),
    ],
)
def test_every_modality_fills_its_slots(
    modality: str, bands: list[str], dtype: type, slots: list[int]
) -> None:
    rng = np.random.default_rng(0)
    high = 255 if dtype == np.uint8 else 8000
    array = (rng.random((len(bands), 32, 40)) * high).astype(dtype) + (1 if dtype != np.uint8 else 0)
    out = normalize_bands(array, modality, bands)
    assert out.shape == (13, 32, 40) and out.dtype == np.float32
    assert band_slots(modality, bands) == slots
    filled = [s for s in range(13) if np.abs(out[s]).sum() > 0]
    assert sorted(filled) == sorted(slots)
    assert np.isfinite(out).all()
    assert np.abs(out).max() < 20  # standardised, not raw digital numbers


def test_optical_uint8_and_uint16_reflectance_agree() -> None:
    refl = np.random.default_rng(1).random((3, 16, 16)) * 0.9
    as_uint8 = normalize_bands((refl * 255).round().astype(np.uint8), "optical", ["red", "green", "blue"])
    as_uint16 = normalize_bands((refl * 10000).round().astype(np.uint16), "optical", ["red", "green", "blue"])
    np.testing.assert_allclose(as_uint8[:3], as_uint16[:3], atol=0.05)


def test_modalities_are_not_normalised_alike() -> None:
    values = np.full((1, 8, 8), 1000, dtype=np.uint16)
    values[0, 0, 0] = 3000
    ir = normalize_bands(values, "infrared", ["tir"])[0]
    ms = normalize_bands(np.repeat(values, 4, 0), "multispectral", ["blue", "green", "red", "nir"])[1]
    assert not np.allclose(ir, ms)


def test_sar_amplitude_intensity_and_db_agree() -> None:
    amplitude = np.random.default_rng(2).gamma(2.0, 0.05, (2, 32, 32)).astype(np.float32) + 1e-3
    from_amp = normalize_bands(amplitude, "sar", ["vv", "vh"], sar_scale="amplitude")
    from_int = normalize_bands(amplitude**2, "sar", ["vv", "vh"], sar_scale="intensity")
    from_db = normalize_bands(20 * np.log10(amplitude), "sar", ["vv", "vh"], sar_scale="db")
    np.testing.assert_allclose(from_amp, from_int, atol=1e-4)
    np.testing.assert_allclose(from_amp, from_db, atol=1e-4)


def test_sar_clipping_is_robust_to_speckle_outliers() -> None:
    amplitude = np.full((1, 50, 50), 0.1, dtype=np.float32)
    amplitude[0, 0, 0] = 1e4  # one extreme bright scatterer
    out = normalize_bands(amplitude, "sar", ["vv"])
    assert out[0].max() == pytest.approx(out[0, 10, 10], abs=1e-6)


def test_infrared_keeps_the_stretch_and_the_absolute_temperature() -> None:
    cold = np.random.default_rng(3).integers(27000, 28000, (1, 32, 32)).astype(np.uint16)  # K x 100
    warm = cold + 3000
    cold_out, warm_out = (
        normalize_bands(cold, "infrared", ["tir"]),
        normalize_bands(warm, "infrared", ["tir"]),
    )
    # slot 0: the per-chip stretch, blind to a uniform offset
    np.testing.assert_allclose(cold_out[0], warm_out[0], atol=1e-5)
    # slot 1: the absolute temperature, 30 K warmer = 3 standard units
    assert INFRARED_ABSOLUTE_SLOT == 1
    np.testing.assert_allclose(warm_out[1] - cold_out[1], 3.0, atol=1e-4)
    np.testing.assert_allclose(cold_out[1].mean(), (275.0 - 295.0) / 10.0, atol=0.1)
    assert not np.abs(cold_out[2:]).any()


@pytest.mark.parametrize(
    ("values", "kelvin"),
    [(np.array([29315.0, 30315.0]), [293.15, 303.15]), (np.array([293.15, 303.15]), [293.15, 303.15]),
     (np.array([20.0, 30.0]), [293.15, 303.15])],
)  # fmt: skip
def test_brightness_temperature_units(values: np.ndarray, kelvin: list[float]) -> None:
    np.testing.assert_allclose(brightness_temperature_kelvin(values), kelvin, atol=1e-3)


def test_unknown_thermal_units_leave_the_absolute_slot_empty() -> None:
    radiance = np.random.default_rng(4).uniform(5000, 9000, (1, 16, 16)).astype(np.float32)
    assert brightness_temperature_kelvin(radiance[0]) is None
    out = normalize_bands(radiance, "infrared", ["tir"])
    assert np.abs(out[0]).sum() > 0 and not np.abs(out[INFRARED_ABSOLUTE_SLOT]).any()


@pytest.mark.parametrize(
    ("modality", "bands", "count"),
    [
        ("optical", ["red", "green", "blue", "nir"], 4),
        ("sar", ["vv", "vh", "hh"], 3),
        ("infrared", ["tir", "tir2"], 2),
        ("multispectral", ["red", "green", "blue"], 3),
    ],
)
def test_wrong_band_count_names_the_modality(modality: str, bands: list[str], count: int) -> None:
    with pytest.raises(ValueError, match=rf"modality '{modality}' needs .* bands, got {count}"):
        normalize_bands(np.zeros((count, 8, 8), np.float32), modality, bands)


def test_band_array_and_names_must_agree() -> None:
    with pytest.raises(ValueError, match="has 2 bands but 3 band names"):
        normalize_bands(np.zeros((2, 8, 8), np.uint8), "optical", ["red", "green", "blue"])
    with pytest.raises(ValueError, match="unknown optical band 'nir'"):
        normalize_bands(np.zeros((3, 8, 8), np.uint8), "optical", ["red", "green", "nir"])
    with pytest.raises(ValueError, match="unknown modality"):
        normalize_bands(np.zeros((3, 8, 8), np.uint8), "hyperspectral", ["red", "green", "blue"])


# ------------------------------------------------------------------ prompts
def test_point_is_a_small_disc_at_the_right_place() -> None:
    mask = rasterize_prompt({"type": "point", "point": [100.0, 20.0]}, 200, 200, 100)
    ys, xs = np.nonzero(mask)
    assert abs(xs.mean() - 50) <= 1 and abs(ys.mean() - 10) <= 1
    assert 4 <= mask.sum() <= 30


def test_box_and_polygon_fill_their_area() -> None:
    box = rasterize_prompt({"type": "box", "box": [10, 20, 50, 40]}, 128, 128, 128)
    assert abs(box.sum() - 40 * 20) <= 2 * (40 + 20) + 4
    assert box[30, 30] == 1 and box[5, 5] == 0
    triangle = rasterize_prompt({"type": "polygon", "polygon": [[0, 0], [100, 0], [0, 100]]}, 128, 128, 128)
    assert abs(triangle.sum() - 5000) < 250
    assert triangle[10, 10] == 1 and triangle[90, 90] == 0


def test_scribble_is_a_thin_line() -> None:
    mask = rasterize_prompt({"type": "scribble", "line": [[0, 64], [127, 64]]}, 128, 128, 128)
    assert mask[64, 10] == 1 and mask[64, 120] == 1 and mask[40, 64] == 0
    assert mask.sum() < 128 * 6


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ({"type": "point", "point": [129.0, 5.0]}, "outside the 128x128 chip"),
        ({"type": "box", "box": [-3, 0, 10, 10]}, "outside the 128x128 chip"),
        ({"type": "polygon", "polygon": [[0, 0], [200, 0], [0, 20]]}, "outside"),
        ({"type": "polygon", "polygon": []}, "empty"),
        ({"type": "polygon", "polygon": [[1, 1], [5, 5], [1, 1]]}, "degenerate"),
        ({"type": "polygon", "polygon": [[1, 1], [5, 5], [9, 9]]}, "degenerate: zero area"),
        ({"type": "box", "box": [10, 10, 10, 30]}, "degenerate"),
        ({"type": "scribble", "line": [[3, 3], [3, 3]]}, "degenerate"),
        ({"type": "circle", "center": [3, 3]}, "unknown type"),
        ({"type": "box", "box": [1, 2, 3]}, r"\[x1, y1, x2, y2\]"),
    ],
)
def test_bad_prompts_raise_value_error_naming_the_problem(prompt: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rasterize_prompt(prompt, 128, 128, 128)


def test_prompt_to_grid() -> None:
    assert prompt_to_grid({"type": "box", "box": [0, 64, 127.9, 128]}, 128, 128) == {
        "type": "box",
        "box": [0, 500, 999, 999],
    }
    assert prompt_to_grid({"type": "point", "point": [32, 96]}, 128, 128)["point"] == [250, 750]
    assert prompt_to_grid({"type": "scribble", "line": [[0, 0], [64, 32]]}, 128, 64)["line"] == [
        [0, 0],
        [500, 500],
    ]


def test_prompt_centroid_grid() -> None:
    assert prompt_centroid_grid({"type": "point", "point": [32, 96]}, 128, 128) == (250, 750)
    assert prompt_centroid_grid({"type": "box", "box": [0, 64, 64, 128]}, 128, 128) == (250, 750)
    triangle = {"type": "polygon", "polygon": [[0, 0], [96, 0], [0, 96]]}  # area centroid (32, 32)
    assert prompt_centroid_grid(triangle, 128, 128) == (250, 250)
    assert prompt_centroid_grid({"type": "scribble", "line": [[0, 0], [64, 0]]}, 128, 64) == (250, 0)
    with pytest.raises(ValueError, match="outside"):
        prompt_centroid_grid({"type": "point", "point": [200, 0]}, 128, 128)


# ------------------------------------------------------------------ text and labels
def test_labels_cover_only_the_answer(processor: EarthGPTXProcessor) -> None:
    ids, labels = processor.build_conversation(CONV, num_prompts=1, train=True)
    answer = [t for t, lab in zip(ids, labels, strict=True) if lab != -100]
    tok = processor.tokenizer
    assert tok.convert_ids_to_tokens(answer) == ["a", "ship", tok.eos_token]
    assert all(lab == -100 or lab == t for t, lab in zip(ids, labels, strict=True))
    assert ids.count(processor.image_token_id) == processor.num_image_tokens
    assert ids.count(processor.region_token_ids[0]) == processor.tokens_per_prompt


def test_multi_turn_labels_every_answer(processor: EarthGPTXProcessor) -> None:
    conv = CONV + [{"from": "human", "value": "And <region1>?"}, {"from": "gpt", "value": "a storage tank"}]
    ids, labels = processor.build_conversation(conv, num_prompts=1, train=True)
    answered = processor.tokenizer.decode([t for t, lab in zip(ids, labels, strict=True) if lab != -100])
    assert answered.split() == ["a", "ship", "</s>", "a", "storage", "tank", "</s>"]
    prompt_ids, _ = processor.build_conversation(conv, num_prompts=1, train=False)
    # inference keeps both human turns and the first answer, and ends where the model must continue
    assert processor.tokenizer.convert_ids_to_tokens(prompt_ids[-1:]) == [":"]
    assert prompt_ids == ids[: len(prompt_ids)]
    assert len(prompt_ids) < len(ids)


def test_image_placeholder_is_added_once(processor: EarthGPTXProcessor) -> None:
    ids, _ = processor.build_conversation([{"from": "human", "value": "Describe the scene."}], 0, train=False)
    assert ids.count(processor.image_token_id) == processor.num_image_tokens
    with pytest.raises(ValueError, match="mentions <image> 2 times"):
        processor.build_conversation([{"from": "human", "value": "<image> <image>"}], 0, train=False)


def test_more_regions_in_text_than_prompts(processor: EarthGPTXProcessor) -> None:
    conv = [{"from": "human", "value": "Compare <region1> with <region3>."}, {"from": "gpt", "value": "same"}]
    with pytest.raises(ValueError, match=r"<region3> but only 2 visual prompt\(s\)"):
        processor.build_conversation(conv, num_prompts=2, train=True)
    with pytest.raises(ValueError, match="at most 8 prompts"):
        processor.build_conversation([{"from": "human", "value": "<region9>"}], 9, train=False)


def test_too_many_prompts(processor: EarthGPTXProcessor) -> None:
    prompts = [{"type": "point", "point": [i, i]} for i in range(9)]
    with pytest.raises(ValueError, match="at most 8"):
        processor.prompt_masks(prompts, 128, 128)


# ------------------------------------------------------------------ records and batches
def test_training_batch_from_records(
    processor: EarthGPTXProcessor, records_dir: tuple[Path, list[dict[str, Any]]]
) -> None:
    root, records = records_dir
    batch = collate_records(records, root, processor, train=True)
    b, length = batch["input_ids"].shape
    assert b == 4
    assert batch["pixel_values"].shape == (4, 13, 128, 128)
    assert batch["modality_ids"].tolist() == [0, 1, 2, 3]
    assert batch["prompt_masks"].shape == (4, 3, 128, 128)
    assert batch["prompt_valid"].tolist() == [
        [True, True, False],
        [True, False, False],
        [True, True, True],
        [False, False, False],
    ]
    assert batch["target_masks"].shape == (1, 128, 128)
    assert batch["target_masks"][0, 50, 60] == 1 and batch["target_masks"][0, 10, 10] == 0
    # right padding: every row starts with <s>
    assert (batch["input_ids"][:, 0] == processor.tokenizer.bos_token_id).all()
    lengths = batch["attention_mask"].sum(1)
    assert int(lengths.max()) == length and int(lengths.min()) < length
    assert ((batch["labels"] != -100) <= batch["attention_mask"].bool()).all()


def test_inference_batch_is_left_padded(
    processor: EarthGPTXProcessor, records_dir: tuple[Path, list[dict[str, Any]]]
) -> None:
    root, records = records_dir
    batch = collate_records(records, root, processor, train=False)
    assert "labels" not in batch
    assert (batch["attention_mask"][:, -1] == 1).all()
    assert (batch["attention_mask"][:, 0] == 0).any()
    seg = processor.seg_token_id
    assert not (batch["input_ids"] == seg).any()  # the answer is not in the prompt


def test_inference_collate_left_pads_each_sample(
    processor: EarthGPTXProcessor, records_dir: tuple[Path, list[dict[str, Any]]]
) -> None:
    """``collate`` (through ``collate_banks``) puts each sample's ids at the right end, pads on the left."""
    root, records = records_dir
    samples = [encode_record(r, root, processor, train=False) for r in records]
    batch = processor.collate(samples, train=False)
    length = batch["input_ids"].shape[1]
    pad = processor.tokenizer.pad_token_id
    for i, sample in enumerate(samples):
        n = len(sample.input_ids)
        assert batch["input_ids"][i, length - n :].tolist() == sample.input_ids
        assert (batch["input_ids"][i, : length - n] == pad).all()
        assert batch["attention_mask"][i].tolist() == [0] * (length - n) + [1] * n
        count = sample.prompt_masks.shape[0]
        assert torch.equal(batch["prompt_masks"][i, :count], sample.prompt_masks)
        assert not batch["prompt_masks"][i, count:].any()
        assert torch.equal(batch["pixel_values"][i], sample.pixel_values)


def test_record_errors_name_the_record(
    processor: EarthGPTXProcessor, records_dir: tuple[Path, list[dict[str, Any]]]
) -> None:
    root, records = records_dir
    bad = dict(records[0], bands=["red", "green"])
    with pytest.raises(ValueError, match=r"record opt-2: .*3 bands but 2 band names"):
        encode_record(bad, root, processor)
    missing_mask = {k: v for k, v in records[2].items() if k != "mask"}
    with pytest.raises(ValueError, match=r"1 \[SEG\] but 0 mask"):
        encode_record(missing_mask, root, processor)


def test_encode_in_memory_request(processor: EarthGPTXProcessor) -> None:
    image = np.random.default_rng(0).integers(0, 255, (3, 256, 200), dtype=np.uint8)
    sample = processor.encode(
        image, "optical", ["red", "green", "blue"], CONV, [{"type": "box", "box": [100, 128, 200, 256]}]
    )
    assert sample.pixel_values.shape == (13, 128, 128)
    mask = sample.prompt_masks[0]
    assert mask[100, 100] == 1 and mask[20, 20] == 0  # prompt scaled with the chip
    assert (sample.width, sample.height) == (200, 256)


# ------------------------------------------------------------------ parsing
def test_parse_answer() -> None:
    parsed = parse_answer("Two ships at [12, 340, 56, 789] and [0,0,999,999]. [SEG]", 128, 256)
    assert parsed.boxes == [[12, 340, 56, 789], [0, 0, 999, 999]]
    assert parsed.boxes_px[0] == pytest.approx([12 * 0.128, 340 * 0.256, 56 * 0.128, 789 * 0.256])
    assert parsed.has_seg
    assert parsed.label == "Two ships at and"
    assert parse_answer("a harbour").label == "a harbour" and not parse_answer("a harbour").boxes


def test_decode_and_post_process(processor: EarthGPTXProcessor) -> None:
    tok = processor.tokenizer
    ids = tok("It is at [120, 340, 450, 800]. [SEG]", add_special_tokens=False)["input_ids"] + [
        tok.eos_token_id,
        0,
        0,
    ]
    sequences = torch.tensor([ids])
    logits = torch.full((1, 128, 128), -5.0)
    logits[0, :10, :10] = 5.0
    answers = processor.post_process_generation(sequences, logits, torch.tensor([0]), sizes=[(128, 128)])
    assert answers[0].text == "It is at [120, 340, 450, 800]. [SEG]"
    assert answers[0].boxes == [[120, 340, 450, 800]]
    assert answers[0].masks[0].sum() == 100


def test_processor_round_trip(tmp_path: Path, processor: EarthGPTXProcessor) -> None:
    processor.save_pretrained(tmp_path)
    loaded = EarthGPTXProcessor.from_pretrained(tmp_path)
    assert loaded.to_dict() == processor.to_dict()
    assert loaded.build_conversation(CONV, 1, True) == processor.build_conversation(CONV, 1, True)


def test_prompt_coordinates_follow_each_region(
    tokenizer: Any, config: Any, processor: EarthGPTXProcessor
) -> None:
    """With ``prompt_coordinates`` each ``<regionI>`` of a question becomes its K tokens and ``[x, y]`` (the
    prompt's centroid on the grid); answers and the default processor are unchanged."""
    with_coords = EarthGPTXProcessor(tokenizer, config, prompt_coordinates=True)
    assert processor.prompt_coordinates is False
    conv = [
        {"from": "human", "value": "<image>\nIs <region1> left of <region2>?"},
        {"from": "gpt", "value": "<region1> is a ship"},
    ]
    prompts = [{"type": "point", "point": [32, 96]}, {"type": "box", "box": [64, 0, 128, 64]}]
    image = np.zeros((3, 128, 128), dtype=np.uint8)
    sample = with_coords.encode(image, "optical", ["red", "green", "blue"], conv, prompts, train=True)
    k = with_coords.tokens_per_prompt
    region = " ".join(["<region1>"] * k) + " [ 250 , 750 ] left of " + " ".join(["<region2>"] * k)
    text = with_coords.tokenizer.decode(sample.input_ids)
    assert region + " [ 750 , 250 ] ?" in text, text
    answer = [t for t, lab in zip(sample.input_ids, sample.labels, strict=True) if lab != -100]
    assert with_coords.tokenizer.decode(answer).split() == ["<region1>", "is", "a", "ship", "</s>"]
    plain = processor.encode(image, "optical", ["red", "green", "blue"], conv, prompts, train=True)
    assert "[" not in processor.tokenizer.decode(plain.input_ids)
    assert len(sample.input_ids) == len(plain.input_ids) + 10
    with pytest.raises(ValueError, match=r"needs one per prompt: 2 prompt\(s\), none"):
        with_coords.build_conversation(conv, 2, train=True)
    with pytest.raises(ValueError, match=r"2 prompt\(s\), 1 centroid"):
        with_coords.build_conversation(conv, 2, train=True, prompt_points=[(0, 0)])


def test_prompt_coordinates_come_from_the_config_and_survive_saving(
    tmp_path: Path, tokenizer: Any, config: Any
) -> None:
    on = config.__class__.from_dict({**config.to_dict(), "prompt_coordinates": True})
    processor = EarthGPTXProcessor(tokenizer, on)
    assert processor.prompt_coordinates is True
    processor.save_pretrained(tmp_path)
    assert EarthGPTXProcessor.from_pretrained(tmp_path).prompt_coordinates is True
