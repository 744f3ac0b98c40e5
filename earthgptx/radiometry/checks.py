"""Refusals: what is not an image, or not a question, never reaches the model, and the error says why.

Every refusal is a ``RefusedInput`` (a ``ValueError``), one subclass per reason, so a caller maps them once (the
entry model to a per-request ``TritonError``, promptgen to "skip this tile", the API to 422):

- ``EmptyChipError``: every pixel is no-data or NaN (never sent to the model);
- ``ChipTooLargeError`` / ``ChipTooSmallError`` / ``ChipAspectError``: outside the size or aspect-ratio limits
  (tile upstream, never squash); :func:`pad_to_square` keeps a chip's aspect ratio by padding it with no-data at
  the right and bottom, so prompt pixel coordinates stay valid;
- ``ChipShapeError``: not a ``(bands, height, width)`` array, or not the number of bands named;
- ``ComplexBandError``: complex-valued bands (SLC); take amplitude or intensity before sending;
- ``EmptyInstructionError``: no instruction text;
- ``UnreferencedPromptError`` / ``UnknownRegionError``: a visual prompt the instruction never mentions, or a
  ``<regionI>`` without its prompt.

Partly no-data chips are accepted: :func:`nodata_mask` finds the pixels and :func:`check_chip` returns their
share (``ChipCheck.nodata_fraction``), which the caller records with the result; the converters write NaN there,
which the processor's per-modality normalisation ignores and sets to zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from earthgptx.formats import region_indices

__all__ = [
    "DEFAULT_MAX_CHIP_PIXELS",
    "DEFAULT_MIN_CHIP_SIDE",
    "DEFAULT_MAX_ASPECT_RATIO",
    "ChipAspectError",
    "ChipCheck",
    "ChipShapeError",
    "ChipTooLargeError",
    "ChipTooSmallError",
    "ComplexBandError",
    "EmptyChipError",
    "EmptyInstructionError",
    "RefusedInput",
    "UnknownRegionError",
    "UnreferencedPromptError",
    "check_chip",
    "check_chip_size",
    "check_instruction",
    "check_not_complex",
    "nodata_mask",
    "pad_to_square",
]

# A chip is at most 1024 × 1024 pixels (any aspect ratio within that area and the side limit below); bigger
# rasters are scenes, which are tiled into model-size chips upstream (earthgptx.geo.tiles).
DEFAULT_MAX_CHIP_PIXELS = 1024 * 1024
DEFAULT_MAX_CHIP_SIDE = 2048
# Below this a chip holds no object of the sizes the model knows (the smallest is 12 px at 128 px).
DEFAULT_MIN_CHIP_SIDE = 16
# A longer side more than twice the shorter is a strip: tile it (the model's input is square; padding a strip
# to a square would leave most of the input empty).
DEFAULT_MAX_ASPECT_RATIO = 2.0


class RefusedInput(ValueError):
    """An input the model must not be asked about; the message says why and what to do instead."""


class ChipShapeError(RefusedInput):
    """Not a ``(bands, height, width)`` array, or band names that do not match its bands."""


class EmptyChipError(RefusedInput):
    """Every pixel of the chip is no-data or NaN."""


class ChipTooLargeError(RefusedInput):
    """Larger than a chip may be; tile the scene upstream."""


class ChipAspectError(RefusedInput):
    """A strip: the longer side is more than ``max_aspect`` times the shorter."""


class ChipTooSmallError(RefusedInput):
    """Smaller than any object the model knows."""


class ComplexBandError(RefusedInput):
    """Complex-valued bands (e.g. SAR SLC) given where amplitude or intensity is expected."""


class EmptyInstructionError(RefusedInput):
    """The instruction is empty or only whitespace."""


class UnreferencedPromptError(RefusedInput):
    """A visual prompt that the instruction never refers to with its ``<regionI>``."""


class UnknownRegionError(RefusedInput):
    """The instruction refers to a ``<regionI>`` for which no visual prompt was given."""


@dataclass(frozen=True)
class ChipCheck:
    """A chip that passed: its size and the share of its pixels that are no-data (to record with the result)."""

    width: int
    height: int
    nodata_fraction: float
    valid: np.ndarray  # (H, W) bool: True where every band holds data


def check_not_complex(array: np.ndarray) -> None:
    """``ComplexBandError`` for complex-valued bands (their real part alone is not an image of anything)."""
    if np.iscomplexobj(array):
        raise ComplexBandError(
            f"the chip has complex-valued bands ({array.dtype}); convert SLC data to amplitude (|s|) or intensity "
            "(|s|²) and declare which, instead of sending the complex samples"
        )


def check_chip_size(
    width: int,
    height: int,
    max_pixels: int = DEFAULT_MAX_CHIP_PIXELS,
    max_side: int = DEFAULT_MAX_CHIP_SIDE,
    min_side: int = DEFAULT_MIN_CHIP_SIDE,
    max_aspect: float = DEFAULT_MAX_ASPECT_RATIO,
) -> None:
    """Refuse chips outside the size and aspect limits: a long strip is refused here rather than squashed into
    the model's square input (pad a near-square chip with :func:`pad_to_square`)."""
    if width < min_side or height < min_side:
        raise ChipTooSmallError(
            f"the chip is {width} x {height} px; the smallest chip the model reads is {min_side} x {min_side} px"
        )
    if width * height > max_pixels or max(width, height) > max_side:
        raise ChipTooLargeError(
            f"the chip is {width} x {height} px, over the limit of {max_pixels:,} pixels and {max_side} px a "
            "side; tile the scene into model-size chips upstream (earthgptx.geo.tiles) instead of sending it whole"
        )
    if max(width, height) > max_aspect * min(width, height):
        raise ChipAspectError(
            f"the chip is {width} x {height} px, a strip longer than {max_aspect:g} times its width; the model "
            "reads square chips and never squashes one: tile it into square chips upstream"
        )


def nodata_mask(array: np.ndarray, nodata: Sequence[float | None] | float | None = None) -> np.ndarray:
    """``(H, W)`` bool, True where any band is NaN, infinite or equal to its no-data value.

    ``nodata`` is one value for all bands or one per band (``None``: the band has none).
    """
    if array.ndim == 2:
        array = array[None]
    per_band: Sequence[float | None]
    per_band = list(nodata) if isinstance(nodata, Sequence) else [nodata] * array.shape[0]
    if len(per_band) != array.shape[0]:
        raise ChipShapeError(f"{len(per_band)} no-data values for {array.shape[0]} bands")
    mask = np.zeros(array.shape[1:], dtype=bool)
    for band, value in zip(array, per_band, strict=True):
        if np.issubdtype(band.dtype, np.floating):
            mask |= ~np.isfinite(band)
        if value is not None and not (isinstance(value, float) and np.isnan(value)):
            mask |= band == value
    return mask


def check_chip(
    array: np.ndarray,
    nodata: Sequence[float | None] | float | None = None,
    *,
    band_count: int | None = None,
    max_pixels: int = DEFAULT_MAX_CHIP_PIXELS,
    max_side: int = DEFAULT_MAX_CHIP_SIDE,
    min_side: int = DEFAULT_MIN_CHIP_SIDE,
    max_aspect: float = DEFAULT_MAX_ASPECT_RATIO,
) -> ChipCheck:
    """Every refusal for pixels, in order: shape, complex values, size, entirely no-data."""
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ChipShapeError(f"expected a (bands, height, width) array, got shape {array.shape}")
    if band_count is not None and array.shape[0] != band_count:
        raise ChipShapeError(f"the chip has {array.shape[0]} bands but {band_count} band names were given")
    check_not_complex(array)
    height, width = int(array.shape[1]), int(array.shape[2])
    check_chip_size(width, height, max_pixels, max_side, min_side, max_aspect)
    invalid = nodata_mask(array, nodata)
    fraction = float(invalid.mean())
    if fraction >= 1.0:
        raise EmptyChipError(
            f"every pixel of the {width} x {height} chip is no-data or NaN; there is nothing to ask the model about"
        )
    return ChipCheck(width=width, height=height, nodata_fraction=fraction, valid=~invalid)


def pad_to_square(array: np.ndarray) -> np.ndarray:
    """``(bands, H, W)`` → ``(bands, S, S)`` float32 with ``S = max(H, W)``: the chip at the top-left, NaN
    (no-data) to the right or below. Pixel coordinates of prompts are unchanged; the chip's size becomes S × S."""
    if array.ndim == 2:
        array = array[None]
    bands, height, width = array.shape
    side = max(height, width)
    out = np.full((bands, side, side), np.nan, dtype=np.float32)
    out[:, :height, :width] = array
    return out


def check_instruction(instruction: str, num_prompts: int) -> list[int]:
    """Refuse an empty instruction and prompts it does not match; returns the region indices it mentions.

    Every visual prompt ``1..num_prompts`` must be referenced as ``<regionI>``, and no other region may be.
    """
    if not instruction or not instruction.strip():
        raise EmptyInstructionError("the instruction is empty; ask a question or give a command")
    mentioned = region_indices(instruction)
    unknown = sorted({i for i in mentioned if not 1 <= i <= num_prompts})
    if unknown:
        names = ", ".join(f"<region{i}>" for i in unknown)
        raise UnknownRegionError(
            f"the instruction refers to {names} but {num_prompts} visual prompt(s) were given"
        )
    unreferenced = sorted(set(range(1, num_prompts + 1)) - set(mentioned))
    if unreferenced:
        names = ", ".join(f"<region{i}>" for i in unreferenced)
        raise UnreferencedPromptError(
            f"visual prompt(s) {', '.join(map(str, unreferenced))} are never referenced; write {names} in the "
            "instruction where each prompt is meant, or leave the prompt out"
        )
    return mentioned
