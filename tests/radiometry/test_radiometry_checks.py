"""Refusals: each bad input raises its own exception type with a message that says why."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from earthgptx.radiometry import (
    ChipAspectError,
    ChipShapeError,
    ChipTooLargeError,
    ChipTooSmallError,
    ComplexBandError,
    EmptyChipError,
    EmptyInstructionError,
    RefusedInput,
    UnknownRegionError,
    UnreferencedPromptError,
    check_chip,
    check_instruction,
    nodata_mask,
    pad_to_square,
)


def test_all_nan_and_all_nodata_chips_are_refused() -> None:
    with pytest.raises(EmptyChipError, match="every pixel"):
        check_chip(np.full((3, 64, 64), np.nan, dtype=np.float32))
    with pytest.raises(EmptyChipError, match="no-data"):
        check_chip(np.zeros((2, 64, 64), dtype=np.uint16), nodata=0)
    # A band that is entirely no-data leaves no pixel with every band valid.
    image = np.ones((2, 64, 64), dtype=np.float32)
    image[1] = -9999.0
    with pytest.raises(EmptyChipError):
        check_chip(image, nodata=[None, -9999.0])


def test_partly_nodata_chips_pass_with_their_nodata_fraction() -> None:
    image = np.ones((2, 64, 64), dtype=np.float32)
    image[0, :16] = np.nan  # a quarter of the rows, in one band
    image[1, :, :8] = 0.0  # an eighth of the columns, in the other
    checked = check_chip(image, nodata=[None, 0.0])
    assert checked.nodata_fraction == pytest.approx(0.25 + 0.75 / 8)
    assert checked.valid.shape == (64, 64)
    assert not checked.valid[:16].any() and not checked.valid[:, :8].any() and checked.valid[16:, 8:].all()


def test_infinite_values_are_nodata() -> None:
    image = np.ones((1, 32, 32), dtype=np.float64)
    image[0, 0, 0] = np.inf
    assert nodata_mask(image).sum() == 1


def test_size_limits() -> None:
    with pytest.raises(ChipTooSmallError, match="1 x 1"):
        check_chip(np.ones((3, 1, 1), dtype=np.uint8))
    with pytest.raises(ChipTooLargeError, match="tile the scene"):
        check_chip(np.ones((1, 2000, 2000), dtype=np.uint8))
    with pytest.raises(ChipTooLargeError):
        check_chip(np.ones((1, 128, 4000), dtype=np.uint8))  # a strip, over the side limit too
    with pytest.raises(ChipAspectError, match="never squashes"):
        check_chip(np.ones((1, 128, 600), dtype=np.uint8))
    assert check_chip(np.ones((1, 128, 256), dtype=np.uint8)).width == 256
    assert check_chip(np.ones((1, 1024, 1024), dtype=np.uint8)).height == 1024


def test_pad_to_square_keeps_the_aspect_ratio_and_prompt_coordinates() -> None:
    image = np.arange(2 * 64 * 100, dtype=np.float32).reshape(2, 64, 100)
    square = pad_to_square(image)
    assert square.shape == (2, 100, 100)
    np.testing.assert_array_equal(square[:, :64, :], image)  # pixel (x, y) is where it was
    assert np.isnan(square[:, 64:, :]).all()
    assert check_chip(square).nodata_fraction == pytest.approx(36 / 100)


def test_complex_bands_are_refused() -> None:
    slc = (np.ones((1, 64, 64)) + 1j * np.ones((1, 64, 64))).astype(np.complex64)
    with pytest.raises(ComplexBandError, match="amplitude"):
        check_chip(slc)


def test_shape_errors() -> None:
    with pytest.raises(ChipShapeError, match="bands, height, width"):
        check_chip(np.ones((1, 2, 64, 64)))
    with pytest.raises(ChipShapeError, match="2 band names"):
        check_chip(np.ones((3, 64, 64)), band_count=2)
    with pytest.raises(ChipShapeError, match="no-data values"):
        nodata_mask(np.ones((3, 8, 8)), [0, 0])


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_instruction_is_refused(text: str) -> None:
    with pytest.raises(EmptyInstructionError, match="empty"):
        check_instruction(text, 0)


def test_prompts_and_regions_must_match() -> None:
    assert check_instruction("Is <region1> left of <region2>?", 2) == [1, 2]
    assert check_instruction("How many ships are there?", 0) == []
    with pytest.raises(UnreferencedPromptError, match="<region2>"):
        check_instruction("What is <region1>?", 2)
    with pytest.raises(UnreferencedPromptError, match="<region1>"):
        check_instruction("Describe this image.", 1)
    with pytest.raises(UnknownRegionError, match="<region3>"):
        check_instruction("What is <region3>?", 1)


def test_every_refusal_is_a_value_error() -> None:
    for error in (
        EmptyChipError,
        ChipTooLargeError,
        ComplexBandError,
        EmptyInstructionError,
        UnknownRegionError,
    ):
        assert issubclass(error, RefusedInput) and issubclass(error, ValueError)


def test_the_library_loads_without_torch() -> None:
    # Services of the torch-free image (promptgen, resultstore, api) call these modules.
    code = "import sys, earthgptx.radiometry, earthgptx.answers; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
