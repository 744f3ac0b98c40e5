"""Refusals and unparsed answers at the serving call sites: in process (``prepare_request``/``finish_answer``) and
through the real ``tritonserver`` (a refused request fails alone with its reason; the rest of the batch is
answered as it is alone)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from earthgptx.answers import parse_answer_strict
from earthgptx.model import EarthGPTXProcessor
from earthgptx.serving.client import TritonRejected, answer_many_http
from earthgptx.serving.requests import InvalidRequest, ServedAnswer, finish_answer, prepare_request
from tests.serving.conftest import MAX_NEW_TOKENS, serving_request

URL = os.environ.get("EGX_TRITON_HTTP_URL", "127.0.0.1:58000")


def _optical(held_out: tuple[Path, list[dict[str, Any]]]) -> tuple[Path, dict[str, Any]]:
    folder, records = held_out
    return folder, next(r for r in records if r["modality"] == "optical" and not r.get("prompts"))


def _refused_requests(folder: Path, record: dict[str, Any]) -> dict[str, tuple[Any, str]]:
    """Name → (request, a part of the reason the refusal must give)."""
    base = serving_request(folder, record)
    all_nan = serving_request(folder, record, bands=np.full_like(base.bands, np.nan))
    one_pixel = serving_request(folder, record, bands=base.bands[:, :1, :1].copy())
    strip = serving_request(folder, record, bands=np.tile(base.bands[:, :64, :], (1, 1, 4)))
    unreferenced = serving_request(
        folder,
        record,
        prompts=[{"type": "point", "point": [64, 64]}],
        instruction="What kind of scene is this?",
    )
    unknown_region = serving_request(folder, record, instruction="What is in <region2>?")
    return {
        "all NaN": (all_nan, "every pixel of the 128 x 128 chip is no-data or NaN"),
        "1 x 1": (one_pixel, "the chip is 1 x 1 px"),
        "strip": (strip, "a strip longer than 2 times its width"),
        "unreferenced prompt": (unreferenced, "visual prompt(s) 1 are never referenced"),
        "unknown region": (unknown_region, "<region2>"),
    }


def test_refusals_name_the_reason(
    tiny_processor: EarthGPTXProcessor, held_out: tuple[Path, list[dict[str, Any]]]
) -> None:
    folder, record = _optical(held_out)
    for name, (request, reason) in _refused_requests(folder, record).items():
        with pytest.raises(InvalidRequest) as refused:
            prepare_request(tiny_processor, request, MAX_NEW_TOKENS, 256)
        assert reason in str(refused.value), name


def test_a_partly_empty_chip_is_masked_and_its_share_reported(
    tiny_processor: EarthGPTXProcessor, held_out: tuple[Path, list[dict[str, Any]]]
) -> None:
    folder, record = _optical(held_out)
    request = serving_request(folder, record)
    whole = prepare_request(tiny_processor, request, MAX_NEW_TOKENS, 256)
    assert whole.nodata_fraction == 0.0
    request.bands = request.bands.copy()
    request.bands[:, :32, :] = np.nan  # the top quarter is no-data
    masked = prepare_request(tiny_processor, request, MAX_NEW_TOKENS, 256)
    assert masked.nodata_fraction == pytest.approx(0.25)
    assert torch.isfinite(masked.pixel_values).all()
    assert not masked.pixel_values[:, :31].any()
    assert torch.equal(masked.input_ids, whole.input_ids)


def _ids(processor: EarthGPTXProcessor, text: str) -> list[int]:
    return list(processor.tokenizer(text, add_special_tokens=False)["input_ids"])


@pytest.mark.parametrize(
    ("text", "failure"),
    [
        ("ship [100, 400, 300, 200]", "y2 <= y1"),
        ("ship [100, 200, 300]", "4 coordinates"),
        ("ship [100, 200, 300, 400", "unbalanced brackets"),
    ],
)
def test_malformed_answers_are_unparsed_and_carry_no_geometry(
    tiny_processor: EarthGPTXProcessor, text: str, failure: str
) -> None:
    logits = torch.ones((1, 128, 128))
    answer = finish_answer(tiny_processor, _ids(tiny_processor, text), logits, 256, 128, "v")
    assert not answer.parsed and failure in answer.parse_failure
    assert answer.boxes == [] and answer.mask.size == 0 and answer.masks == [] and answer.count == -1
    assert answer.text == parse_answer_strict(tiny_processor.decode(_ids(tiny_processor, text))).text
    good = finish_answer(tiny_processor, _ids(tiny_processor, "ship [100, 200, 300, 400]"), logits, 256, 128)
    assert good.parsed and good.parse_failure == "" and good.boxes == [[25.6, 25.6, 76.8, 51.2]]
    assert good.mask.shape == (128, 256)


@pytest.mark.triton
def test_refused_requests_fail_alone_through_triton(held_out: tuple[Path, list[dict[str, Any]]]) -> None:
    folder, records = held_out
    _, record = _optical(held_out)
    good = [next(r for r in records if r["task"] == task) for task in ("counting", "grounding")]
    refused = _refused_requests(folder, record)
    partly_empty = serving_request(folder, good[1])
    partly_empty.bands = partly_empty.bands.copy()
    partly_empty.bands[:, -16:, :] = np.nan
    batch = [serving_request(folder, good[0]), *(r for r, _ in refused.values()), serving_request(folder, good[1]),
             partly_empty]  # fmt: skip
    answers = answer_many_http(URL, batch)
    alone = [answer_many_http(URL, [serving_request(folder, r)])[0] for r in good]
    for (name, (_, reason)), answer in zip(refused.items(), answers[1:-2], strict=True):
        assert isinstance(answer, TritonRejected), name
        assert reason in answer.reason, (name, answer.reason)
    for ours, single in zip([answers[0], answers[-2]], alone, strict=True):
        assert isinstance(ours, ServedAnswer) and isinstance(single, ServedAnswer)
        assert (ours.text, ours.count, ours.boxes, ours.parsed) == (
            single.text,
            single.count,
            single.boxes,
            single.parsed,
        )
    assert isinstance(answers[-1], ServedAnswer)  # partly no-data: answered, not refused


def test_the_client_reports_whether_the_served_answer_parsed() -> None:
    from earthgptx.serving.client import parse_outputs
    from earthgptx.serving.text import text_tensor

    class Result:
        def __init__(self, text: str) -> None:
            self.outputs = {
                "ANSWER": text_tensor(text)[None], "LABEL": text_tensor("")[None],
                "BOXES": np.zeros((1, 0, 4), np.float32), "COUNT": np.array([[-1]], np.int32),
                "MASK": np.zeros((1, 0, 0), np.uint8), "MODEL_VERSION": text_tensor("v")[None],
            }  # fmt: skip

        def as_numpy(self, name: str) -> np.ndarray:
            return self.outputs[name]

    bad = parse_outputs(Result("ship [10, 400, 300, 200]"))
    assert not bad.parsed and "y2 <= y1" in bad.parse_failure
    good = parse_outputs(Result("a ship"))
    assert good.parsed and good.parse_failure == ""
