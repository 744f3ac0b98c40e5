"""The text and coordinate formats that the dataset, the model and the services share (docs/architecture.md).

Defined once here and imported by ``earthgptx.data`` (records, generator), ``earthgptx.model`` (tokenizer,
processor) and the platform; changing one is a change of the dataset format and needs a version bump.

- **Modalities**: ``MODALITIES``, in the order of the model's modality ids.
- **Placeholders**: the image is ``<image>``, the i-th visual prompt ``<region{i}>`` (1-based), a mask in an
  answer ``[SEG]``.
- **Coordinates in text** are integers on the ``[0, 1000)`` grid of the chip (x right, y down, origin at the
  top-left corner); a box is written ``[x1, y1, x2, y2]``.
- **Visual prompts** in records and processor dicts: ``{"type": "point", "point": [x, y]}``,
  ``{"type": "box", "box": [x1, y1, x2, y2]}``, ``{"type": "polygon", "polygon": [[x, y], ...]}`` and
  ``{"type": "scribble", "line": [[x, y], ...]}``, in chip pixels.

Nothing here imports torch.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Final

__all__ = [
    "BOX_TEXT_PATTERN",
    "GRID",
    "IMAGE_TOKEN",
    "MODALITIES",
    "PROMPT_FIELDS",
    "REGION_TOKEN_PATTERN",
    "SEG_TOKEN",
    "VISUAL_PROMPT_TYPES",
    "box_from_grid",
    "box_to_grid",
    "boxes_in_text",
    "format_box",
    "region_indices",
    "region_token",
    "to_grid",
]

MODALITIES: Final[tuple[str, ...]] = ("optical", "multispectral", "sar", "infrared")

IMAGE_TOKEN: Final = "<image>"
SEG_TOKEN: Final = "[SEG]"
REGION_TOKEN_PATTERN: Final = re.compile(r"<region(\d+)>")

GRID: Final = 1000
"""Coordinates in text are integers in ``[0, GRID)``."""

# The field that holds a prompt's coordinates, per prompt type (a scribble's stroke is its "line").
PROMPT_FIELDS: Final[dict[str, str]] = {
    "point": "point",
    "box": "box",
    "polygon": "polygon",
    "scribble": "line",
}
VISUAL_PROMPT_TYPES: Final[tuple[str, ...]] = tuple(PROMPT_FIELDS)

# A box in answer text: four grid integers in brackets; spaces as the word-level tokenizer leaves them.
BOX_TEXT_PATTERN: Final = re.compile(r"\[\s*(\d{1,3})\s*,\s*(\d{1,3})\s*,\s*(\d{1,3})\s*,\s*(\d{1,3})\s*\]")


def region_token(index: int) -> str:
    """The placeholder of the ``index``-th visual prompt (1-based), e.g. ``<region3>``."""
    if index < 1:
        raise ValueError(f"region index is 1-based, got {index}")
    return f"<region{index}>"


def region_indices(text: str) -> list[int]:
    """1-based indices of every ``<regionI>`` mentioned in ``text``, in order of appearance."""
    return [int(m) for m in REGION_TOKEN_PATTERN.findall(text)]


def to_grid(value: float, extent: float) -> int:
    """A pixel coordinate (of a chip ``extent`` pixels wide or high) as an integer on the grid (floor, clamped)."""
    return min(max(int(math.floor(value / extent * GRID)), 0), GRID - 1)


def box_to_grid(box: Sequence[float], width: float, height: float) -> list[int]:
    """``[x1, y1, x2, y2]`` in chip pixels → integers in ``[0, 1000)``."""
    x1, y1, x2, y2 = box
    return [to_grid(x1, width), to_grid(y1, height), to_grid(x2, width), to_grid(y2, height)]


def box_from_grid(box: Sequence[float], width: float, height: float) -> list[float]:
    """Integers on the grid → chip pixels (the inverse of :func:`box_to_grid` up to the flooring)."""
    x1, y1, x2, y2 = box
    return [x1 * width / GRID, y1 * height / GRID, x2 * width / GRID, y2 * height / GRID]


def format_box(box: Sequence[int]) -> str:
    """The text form of a grid box in answers: ``[x1, y1, x2, y2]``."""
    return "[" + ", ".join(str(int(v)) for v in box) + "]"


def boxes_in_text(text: str) -> list[list[int]]:
    """Every grid box ``[x1, y1, x2, y2]`` written in ``text``, in order."""
    return [[int(v) for v in match] for match in BOX_TEXT_PATTERN.findall(text)]
