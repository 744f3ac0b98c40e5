"""What the served model takes and gives, independent of Triton: one request in, one answer out.

A request is a chip's raw bands ``(C, H, W)`` (any source dtype, sent as float32), its modality and band names, the
visual prompts in chip pixels (the processor's dicts: ``{"type": "box", "box": [x1, y1, x2, y2]}``, ``point``,
``polygon``, ``scribble`` with ``line``) and the instruction. ``prepare_request`` validates and encodes it with the
project's processor (the one training uses); ``finish_answer`` turns generated ids and mask logits into the answer
(text, label, boxes in chip pixels, count, a mask at chip size). Every problem with a request raises
``InvalidRequest`` naming it, so the server answers that request alone with an error: besides malformed inputs, the
radiometry library's refusals (``earthgptx.radiometry.checks``): a chip that is entirely no-data or NaN (NaN marks
no-data; a partly empty chip is masked), too small, too large, a strip or complex-valued, an empty instruction, a
visual prompt the instruction never refers to as ``<regionI>``.

Answers are parsed with the strict parser (``earthgptx.answers.parse_answer_strict``): a malformed answer is
returned as unparsed (``ServedAnswer.parsed`` False, ``parse_failure`` the reason) with its text and no geometry.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from earthgptx.answers import parse_answer_strict
from earthgptx.model import EarthGPTXProcessor
from earthgptx.model.processing_earthgptx import modality_id
from earthgptx.radiometry import RefusedInput, check_instruction
from earthgptx.serving.answers import InvalidRequest, ServedAnswer, ServingRequest

MAX_BANDS = 13


@dataclass
class PreparedRequest:
    """A request encoded for the model: ``input_ids`` ``(L,)``, ``pixel_values`` ``(13, S, S)``, ``modality_id``,
    ``prompt_masks`` ``(N, S, S)`` and ``prompt_valid`` ``(N,)`` with ``N`` >= 1, the chip's size, and the share of
    its pixels that are no-data (NaN in ``BANDS``; masked)."""

    input_ids: torch.Tensor
    pixel_values: torch.Tensor
    modality_id: int
    prompt_masks: torch.Tensor
    prompt_valid: torch.Tensor
    width: int
    height: int
    max_new_tokens: int
    nodata_fraction: float = 0.0


def parse_prompts(text: str) -> list[dict[str, Any]]:
    """``PROMPTS`` JSON (a list of prompt dicts, or ``{"prompts": [...]}``) → the list; ``InvalidRequest`` if not."""
    if not text.strip():
        return []
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"PROMPTS is not valid JSON: {exc}") from exc
    if isinstance(value, dict) and isinstance(value.get("prompts"), list):
        value = value["prompts"]
    if not isinstance(value, list) or not all(isinstance(p, dict) for p in value):
        raise InvalidRequest('PROMPTS must be a JSON list of prompt objects ({"type": ..., ...})')
    return value


def parse_band_names(text: str) -> list[str]:
    """``BAND_NAMES`` as a JSON list of strings, or comma-separated text."""
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"BAND_NAMES is not valid JSON: {exc}") from exc
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidRequest("BAND_NAMES must be a JSON list of strings")
        return value
    return [name.strip() for name in stripped.split(",") if name.strip()]


def prepare_request(
    processor: EarthGPTXProcessor,
    request: ServingRequest,
    default_max_new_tokens: int,
    max_new_tokens_cap: int,
) -> PreparedRequest:
    """Validate and encode ``request`` (``InvalidRequest`` naming the problem)."""
    bands = np.asarray(request.bands)
    if bands.ndim == 2:
        bands = bands[None]
    if bands.ndim != 3 or min(bands.shape) < 1:
        raise InvalidRequest(f"BANDS must be (C, H, W), got shape {tuple(bands.shape)}")
    if bands.shape[0] > MAX_BANDS:
        raise InvalidRequest(f"BANDS has {bands.shape[0]} bands; at most {MAX_BANDS} are supported")
    if not request.instruction.strip():
        raise InvalidRequest("INSTRUCTION is empty: ask a question or give a command")
    limit = default_max_new_tokens if request.max_new_tokens is None else int(request.max_new_tokens)
    if not 1 <= limit <= max_new_tokens_cap:
        raise InvalidRequest(f"MAX_NEW_TOKENS must be between 1 and {max_new_tokens_cap}, got {limit}")
    try:
        modality_id(request.modality)
        sample = processor.encode(
            bands,
            request.modality,
            request.band_names,
            [{"from": "human", "value": request.instruction}],
            request.prompts,
            train=False,
            sar_scale=request.sar_scale,
        )
        # After encoding, so that a prompt outside the chip or an unknown band is named first.
        check_instruction(request.instruction, len(request.prompts))
    except RefusedInput as exc:  # not an image, or not a question: the reason, never worth a retry
        raise InvalidRequest(str(exc)) from exc
    except (ValueError, TypeError, KeyError) as exc:
        raise InvalidRequest(str(exc)) from exc
    count = int(sample.prompt_masks.shape[0])
    size = processor.image_size
    prompt_masks = sample.prompt_masks if count else torch.zeros(1, size, size)
    prompt_valid = torch.ones(max(count, 1), dtype=torch.bool) if count else torch.zeros(1, dtype=torch.bool)
    return PreparedRequest(
        input_ids=torch.tensor(sample.input_ids, dtype=torch.long),
        pixel_values=sample.pixel_values,
        modality_id=sample.modality_id,
        prompt_masks=prompt_masks,
        prompt_valid=prompt_valid,
        width=int(bands.shape[-1]),
        height=int(bands.shape[-2]),
        max_new_tokens=limit,
        nodata_fraction=sample.nodata_fraction,
    )


_NUMBER = re.compile(r"^\d+$")


def mask_to_chip(mask_logits: torch.Tensor, width: int, height: int, threshold: float = 0.0) -> np.ndarray:
    """``(S, S)`` mask logits at model resolution → a ``(height, width)`` uint8 0/1 mask at chip size (the logits
    are resized bilinearly, then thresholded, so a mask at model size is exactly ``logits > threshold``)."""
    logits = mask_logits.detach().float().cpu()
    if tuple(logits.shape) != (height, width):
        logits = F.interpolate(
            logits[None, None], size=(height, width), mode="bilinear", align_corners=False
        )[0, 0]
    return (logits > threshold).to(torch.uint8).numpy()


def finish_answer(
    processor: EarthGPTXProcessor,
    token_ids: Sequence[int],
    mask_logits: torch.Tensor | None,
    width: int,
    height: int,
    model_version: str = "",
) -> ServedAnswer:
    """Generated ids (+ one mask-logit map per ``[SEG]``) → the answer at chip size, parsed strictly: an unparsed
    answer keeps its text and carries no geometry (``parsed`` False, ``parse_failure`` why)."""
    parsed = parse_answer_strict(processor.decode(list(token_ids)), width=width, height=height)
    masks = (
        [mask_to_chip(m, width, height) for m in mask_logits]
        if mask_logits is not None and parsed.parsed
        else []
    )
    mask = np.zeros((0, 0), dtype=np.uint8)
    if masks:
        mask = np.maximum.reduce(masks) if len(masks) > 1 else masks[0]
    count = int(parsed.label) if _NUMBER.match(parsed.label) else -1
    return ServedAnswer(
        text=parsed.text,
        label=parsed.label,
        boxes=[list(map(float, box)) for box in parsed.boxes_px],
        count=count,
        mask=mask,
        model_version=model_version,
        masks=masks,
        parsed=parsed.parsed,
        parse_failure=parsed.failure or "",
    )


__all__ = [
    "MAX_BANDS",
    "InvalidRequest",
    "PreparedRequest",
    "ServedAnswer",
    "ServingRequest",
    "finish_answer",
    "mask_to_chip",
    "parse_band_names",
    "parse_prompts",
    "prepare_request",
]
