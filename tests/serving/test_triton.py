"""The served model through the real ``tritonserver`` of the local stack (``make up`` builds and loads it).

Parity: the held-out records' answers through Triton (sent concurrently, so the dynamic batchers mix them) are the
in-process greedy answers token for token, masks agree (IoU >= 0.99) and counts agree. A batch with malformed
requests: each bad one gets a clear error, the others the answers they get alone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from earthgptx.model import EarthGPTXForConditionalGeneration, EarthGPTXProcessor
from earthgptx.serving.client import TritonRejected, answer_many_http
from earthgptx.serving.requests import ServedAnswer
from earthgptx.serving.version import compute_checkpoint_version
from tests.serving.conftest import CHECKPOINT, in_process_answers, mask_iou, prompt_kind, serving_request

pytestmark = pytest.mark.triton

URL = os.environ.get("EGX_TRITON_HTTP_URL", "127.0.0.1:58000")


def test_records_cover_every_task_modality_and_prompt_type(
    held_out: tuple[Path, list[dict[str, Any]]],
) -> None:
    _, records = held_out
    tasks = {r["task"] for r in records}
    assert len(tasks) == 9 and {r["modality"] for r in records} == {
        "optical",
        "multispectral",
        "sar",
        "infrared",
    }
    assert {(r["task"], r["modality"]) for r in records} == {(t, m) for t in tasks for m in
                                                             ("optical", "multispectral", "sar", "infrared")}  # fmt: skip
    kinds = {kind for r in records for kind in prompt_kind(r).split("+")}
    assert kinds == {"none", "point", "box", "polygon", "scribble"}
    assert len(records) <= 60


def test_triton_answers_are_the_in_process_answers(
    tiny_model: EarthGPTXForConditionalGeneration,
    tiny_processor: EarthGPTXProcessor,
    held_out: tuple[Path, list[dict[str, Any]]],
) -> None:
    folder, records = held_out
    reference = in_process_answers(tiny_model, tiny_processor, folder, records)
    served = answer_many_http(URL, [serving_request(folder, r) for r in records])
    version = compute_checkpoint_version(CHECKPOINT)
    mismatches = []
    for record, ours, theirs in zip(records, served, reference, strict=True):
        assert isinstance(ours, ServedAnswer), f"{record['id']}: {ours!r}"
        assert ours.model_version == version
        if ours.text != theirs.text:
            mismatches.append((record["id"], ours.text, theirs.text))
            continue
        assert [pytest.approx(box) for box in theirs.boxes_px] == ours.boxes
        if theirs.label.isdigit():
            assert ours.count == int(theirs.label)
        if theirs.masks:
            assert ours.mask.shape == (record["height"], record["width"])
            assert mask_iou(ours.mask, theirs.masks[0]) >= 0.99, record["id"]
        else:
            assert ours.mask.size == 0
    assert not mismatches
    assert sum(1 for r in records if r["task"] == "counting") >= 4
    assert any(a.mask.size for a in served if isinstance(a, ServedAnswer))


def test_malformed_requests_fail_alone(held_out: tuple[Path, list[dict[str, Any]]]) -> None:
    folder, records = held_out
    good = [
        next(r for r in records if r["task"] == task) for task in ("counting", "pixel_grounding", "relation")
    ]
    optical = next(r for r in records if r["modality"] == "optical")
    bad_bands = serving_request(folder, optical)
    bad_bands.bands = bad_bands.bands[:2]
    outside = serving_request(folder, optical, prompts=[{"type": "point", "point": [64, 500]}],
                              instruction="What is <region1>?")  # fmt: skip
    unknown = serving_request(folder, optical, modality="lidar")
    alone = [answer_many_http(URL, [serving_request(folder, r)])[0] for r in good]
    batch = [serving_request(folder, good[0]), bad_bands, serving_request(folder, good[1]), outside, unknown,
             serving_request(folder, good[2])]  # fmt: skip
    answers = answer_many_http(URL, batch)
    errors = {index: answers[index] for index in (1, 3, 4)}
    for error in errors.values():
        assert isinstance(error, TritonRejected)
    assert "the image has 2 bands but 3 band names" in errors[1].reason
    assert "lies outside the 128x128 chip" in errors[3].reason
    assert "unknown modality 'lidar'" in errors[4].reason
    for ours, single in zip([answers[0], answers[2], answers[5]], alone, strict=True):
        assert isinstance(ours, ServedAnswer) and isinstance(single, ServedAnswer)
        assert (ours.text, ours.count, ours.boxes) == (single.text, single.count, single.boxes)
        assert (ours.mask == single.mask).all()
