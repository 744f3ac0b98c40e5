"""The processor applies the radiometry library: refusals, no-data masking, conversions from band metadata, and an
unchanged model input for the training data (no metadata)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from earthgptx.model import EarthGPTXConfig, EarthGPTXProcessor, build_tokenizer
from earthgptx.model.image_processing_earthgptx import (
    INFRARED_ABSOLUTE_SLOT,
    UNITS_FROM_VALUES_WARNING,
    EarthGPTXImageProcessor,
    normalize_bands,
    resize_chip,
)
from earthgptx.radiometry import (
    BandMeta,
    ChipAspectError,
    ChipTooLargeError,
    ChipTooSmallError,
    ComplexBandError,
    EmptyChipError,
    RefusedInput,
)
from tests.kits.vector_code import run_portably

RGB = ("red", "green", "blue")


def _training_like_chips() -> Iterator[tuple[str, tuple[str, ...], str, np.ndarray]]:
    """Chips in the training data's dtypes and ranges (uint8 optical, uint16 multispectral and thermal, float32 SAR
    amplitude), plus float reflectance, a non-square chip and SAR in dB."""
    rng = np.random.default_rng(25)
    yield "optical", RGB, "amplitude", rng.integers(0, 256, (3, 128, 128)).astype(np.uint8)
    yield "multispectral", ("blue", "green", "red", "nir"), "amplitude", rng.integers(0, 6000, (4, 128, 128)).astype(np.uint16)  # fmt: skip
    yield "sar", ("vv", "vh"), "amplitude", rng.gamma(4.0, 0.05, (2, 128, 128)).astype(np.float32)
    yield "infrared", ("tir",), "amplitude", rng.integers(28000, 31000, (1, 128, 128)).astype(np.uint16)
    yield "optical", RGB, "amplitude", rng.random((3, 200, 160)).astype(np.float32)
    yield "sar", ("hh",), "db", rng.normal(-12, 4, (1, 96, 96)).astype(np.float32)


# Computed with the processor of commit 0b40a3f (before the radiometry was wired in), on the chips above, with torch's
# and numpy's vector code held to AVX2 (tests/kits/vector_code.py). The first reference, 2d8b0dc6..., was taken without
# that on an AVX-512 host; on an AVX2 host the same old processor gives 59e87b09... (checked 2026-12-05), and torch's
# plain (non-vector) kernels give yet another digest: the resize's float32 sums round differently per kernel.
DIGEST_BEFORE_WIRING = "59e87b093a1820e76afc08f78df374a9901b7e5fe014d5cd2d5e4bca59b52399"


def _digest_of_training_like_chips() -> str:
    processor = EarthGPTXImageProcessor(128)
    digest = hashlib.sha256()
    for modality, bands, sar_scale, chip in _training_like_chips():
        values = processor(chip, modality, bands, sar_scale)
        # The checks and masking add nothing to a chip without no-data: the plain normalisation, bit for bit.
        plain = resize_chip(normalize_bands(chip, modality, bands, sar_scale), 128)
        assert torch.equal(values, plain)
        digest.update(values.numpy().tobytes())
    return digest.hexdigest()


def test_chips_without_metadata_reach_the_model_bit_identical_to_before() -> None:
    _digest_of_training_like_chips()  # the equality with the plain normalisation, in this process
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from tests.radiometry.test_radiometry_processor_wiring import _digest_of_training_like_chips as d;"
        "print(d())"
    )
    digest = run_portably(script, str(Path(__file__).resolve().parents[2]))
    assert digest == DIGEST_BEFORE_WIRING


def test_process_reports_no_data_share_and_that_units_were_taken_from_values() -> None:
    processed = EarthGPTXImageProcessor(64).process(
        np.random.default_rng(0).integers(1, 255, (3, 64, 64)).astype(np.uint8), "optical", RGB
    )
    assert processed.nodata_fraction == 0.0
    assert processed.warnings == (UNITS_FROM_VALUES_WARNING,)
    assert processed.unit is None


@pytest.mark.parametrize(
    ("chip", "error", "reason"),
    [
        (np.full((3, 64, 64), np.nan, np.float32), EmptyChipError, "every pixel"),
        (np.zeros((3, 1, 1), np.float32), ChipTooSmallError, "1 x 1"),
        (np.zeros((3, 2048, 2048), np.uint8), ChipTooLargeError, "tile the scene"),
        (np.ones((3, 128, 400), np.uint8), ChipAspectError, "strip"),
        (np.ones((3, 64, 64), np.complex64), ComplexBandError, "complex"),
    ],
)
def test_what_is_not_an_image_is_refused_with_the_reason(
    chip: np.ndarray, error: type[RefusedInput], reason: str
) -> None:
    with pytest.raises(error, match=reason):
        EarthGPTXImageProcessor(64)(chip, "optical", RGB)


def test_a_declared_no_data_value_empties_or_masks_the_chip() -> None:
    processor = EarthGPTXImageProcessor(64)
    with pytest.raises(EmptyChipError):
        processor(np.zeros((3, 64, 64), np.uint8), "optical", RGB, nodata=0)
    chip = np.random.default_rng(1).integers(1, 255, (3, 64, 64)).astype(np.uint8)
    chip[:, :16] = 0
    processed = processor.process(chip, "optical", RGB, nodata=0)
    assert processed.nodata_fraction == pytest.approx(0.25)
    assert not processed.pixel_values[:3, :15].any()  # masked rows are zero (the mean), not "black" ground
    unmasked = processor(chip, "optical", RGB)
    assert float(unmasked[:3, :15].abs().min()) > 1.0  # read as data, 0 would be far below the mean
    # The valid rows are normalised as the chip of valid rows alone would be.
    alone = normalize_bands(chip[:, 16:], "optical", RGB)
    torch.testing.assert_close(processed.pixel_values[:, 20:], torch.from_numpy(alone)[:, 4:])


def test_band_metadata_converts_to_model_units_and_records_warnings() -> None:
    processor = EarthGPTXImageProcessor(64)
    rng = np.random.default_rng(2)
    reflectance = np.clip(0.05 + 0.3 * rng.random((3, 64, 64)), 0, 1)
    display8 = np.rint(255 * np.sqrt(reflectance)).astype(np.uint8)
    linear16 = np.rint(10_000 * reflectance).astype(np.uint16)
    a = processor.process(display8, "optical", RGB, band_metas=[BandMeta(name=b, dtype="uint8", unit="display") for b in RGB])  # fmt: skip
    b = processor.process(linear16, "optical", RGB, band_metas=[BandMeta(name=b, dtype="uint16", scale=1e-4) for b in RGB])  # fmt: skip
    assert float((a.pixel_values - b.pixel_values).abs().max()) < 0.02  # same ground, same model input
    assert a.unit == b.unit == "display" and a.warnings == () and b.warnings == ()
    # Raw, the same two chips land about one standard deviation apart.
    assert (
        float((processor(display8, "optical", RGB) - processor(linear16, "optical", RGB))[:3].abs().mean())
        > 0.5
    )

    # Uncalibrated SAR amplitude DN: without metadata it is clipped flat; with it, normalised with a warning.
    dn = rng.gamma(4.0, 20.0, (1, 64, 64)).astype(np.float32) + 40.0
    flat = processor(dn, "sar", ("vv",))
    assert float(flat[0].std()) < 0.05
    sar = processor.process(dn, "sar", ("vv",), band_metas=[BandMeta(name="vv", dtype="uint16")], product_level="GRD")  # fmt: skip
    assert float(sar.pixel_values[0].std()) > 0.3
    assert any("uncalibrated" in w for w in sar.warnings)

    # Thermal of unknown unit: relative contrast only, no absolute temperature invented.
    counts = np.rint(20_000 + 3_000 * rng.random((1, 64, 64))).astype(np.uint16)
    thermal = processor.process(
        counts, "infrared", ("tir",), band_metas=[BandMeta(name="tir", dtype="uint16")]
    )
    assert thermal.unit == "relative" and thermal.warnings
    assert not thermal.pixel_values[INFRARED_ABSOLUTE_SLOT].any()
    assert processor(counts, "infrared", ("tir",))[INFRARED_ABSOLUTE_SLOT].any()


def test_metadata_no_data_is_masked_and_reported() -> None:
    chip = np.random.default_rng(3).integers(100, 5000, (4, 64, 64)).astype(np.uint16)
    chip[:, 48:] = 0
    bands = ("blue", "green", "red", "nir")
    metas = [BandMeta(name=b, dtype="uint16", scale=1e-4, nodata=0) for b in bands]
    processed = EarthGPTXImageProcessor(64).process(chip, "multispectral", bands, band_metas=metas)
    assert processed.nodata_fraction == pytest.approx(0.25)
    assert not processed.pixel_values[:, 49:].any()
    with pytest.raises(ValueError, match="band_metas"):
        EarthGPTXImageProcessor(64).process(chip, "multispectral", bands, band_metas=metas, nodata=0)
    with pytest.raises(EmptyChipError):
        EarthGPTXImageProcessor(64).process(np.zeros_like(chip), "multispectral", bands, band_metas=metas)


def test_encode_carries_the_no_data_share_and_warnings() -> None:
    tokenizer = build_tokenizer(["what is it?", "USER: ASSISTANT:"])
    processor = EarthGPTXProcessor(tokenizer, EarthGPTXConfig.tiny(tokenizer=tokenizer))
    chip = np.random.default_rng(4).integers(1, 255, (3, 64, 64)).astype(np.uint8)
    chip[:, :, :32] = 255
    sample = processor.encode(
        chip, "optical", list(RGB), [{"from": "human", "value": "what is it?"}], nodata=255
    )
    assert sample.nodata_fraction == pytest.approx(0.5)
    assert sample.warnings == (UNITS_FROM_VALUES_WARNING,)
