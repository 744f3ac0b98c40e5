"""What a client sends the served model and what it gets back (plain data: NumPy, no torch), so that a service
calling Triton needs neither torch nor the model code; ``earthgptx.serving.requests`` encodes and parses them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


class InvalidRequest(ValueError):
    """A request the model cannot answer as given (bad bands, prompts, modality, text); never worth a retry."""


@dataclass
class ServingRequest:
    """One question about one chip (see the module docstring)."""

    bands: np.ndarray
    modality: str
    band_names: list[str]
    prompts: list[dict[str, Any]]
    instruction: str
    max_new_tokens: int | None = None
    sar_scale: str = "amplitude"


@dataclass
class ServedAnswer:
    """The answer to one request: ``boxes`` ``[x1, y1, x2, y2]`` in chip pixels; ``count`` -1 when the answer is
    not a number; ``mask`` ``(H, W)`` uint8 at chip size (0/1; ``(0, 0)`` when the answer has no ``[SEG]``).

    ``parsed`` is False when the text is malformed (the strict parser, ``earthgptx.answers``: a box with
    ``y2 < y1``, three coordinates, an unclosed bracket, ...); ``parse_failure`` then says why, and the answer carries
    no geometry (no boxes, no mask, count -1), only its text."""

    text: str
    label: str
    boxes: list[list[float]]
    count: int
    mask: np.ndarray
    model_version: str = ""
    masks: list[np.ndarray] = field(default_factory=list)
    parsed: bool = True
    parse_failure: str = ""


__all__ = ["InvalidRequest", "ServedAnswer", "ServingRequest"]
