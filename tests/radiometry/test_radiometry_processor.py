"""The model units are what the processor expects: the generator's own chips converted by the radiometry library
reach the model exactly as the raw chips do, and real products of the same ground land together."""

from __future__ import annotations

import numpy as np
import pytest

from earthgptx.data.generate import build_scene
from earthgptx.data.render import render
from earthgptx.model.processing_earthgptx import INFRARED_ABSOLUTE_SLOT, normalize_bands
from earthgptx.radiometry import BandMeta, to_model_units

SYNTHETIC = {"generator": "earthgptx-synthetic 1.0"}


@pytest.mark.parametrize("modality", ["optical", "multispectral", "sar", "infrared"])
def test_converted_training_chips_give_the_processor_the_same_input(modality: str) -> None:
    scene = build_scene(0, 3, 128)
    image, bands = render(scene, modality, np.random.default_rng(1))
    metas = [BandMeta(name=b, dtype=image.dtype.name, tags=SYNTHETIC) for b in bands]
    converted = to_model_units(image, modality, metas)
    assert converted.warnings == ()
    raw = normalize_bands(image, modality, bands)  # sar_scale amplitude: the generator's SAR
    ours = normalize_bands(
        converted.values, modality, bands, sar_scale=converted.processor_kwargs()["sar_scale"]
    )
    np.testing.assert_allclose(ours, raw, atol=2e-4)


def test_uint8_and_uint16_of_the_same_ground_reach_the_model_together() -> None:
    rng = np.random.default_rng(2)
    reflectance = np.clip(0.05 + 0.3 * rng.random((3, 64, 64)), 0, 1)
    display8 = np.rint(255 * np.sqrt(reflectance)).astype(np.uint8)
    linear16 = np.rint(10_000 * reflectance).astype(np.uint16)
    bands = ("red", "green", "blue")
    a = to_model_units(display8, "optical", [BandMeta(name=b, dtype="uint8", unit="display") for b in bands])
    b = to_model_units(linear16, "optical", [BandMeta(name=b, dtype="uint16", scale=1e-4) for b in bands])
    # Input slots are standardised (optical std about 0.22): within 0.02 of a standard deviation.
    difference = np.abs(
        normalize_bands(a.values, "optical", bands) - normalize_bands(b.values, "optical", bands)
    )
    assert float(difference.max()) < 0.02
    raw = np.abs(normalize_bands(display8, "optical", bands) - normalize_bands(linear16, "optical", bands))
    assert float(raw[:3].mean()) > 0.5  # the raw integers landed about one standard deviation apart


def test_relative_thermal_leaves_the_absolute_slot_empty() -> None:
    counts = np.rint(20_000 + 3_000 * np.random.default_rng(3).random((1, 64, 64))).astype(np.uint16)
    converted = to_model_units(counts, "infrared", [BandMeta(name="tir", dtype="uint16")])
    assert converted.unit == "relative"
    slots = normalize_bands(converted.values, "infrared", ("tir",))
    assert not slots[INFRARED_ABSOLUTE_SLOT].any()
    assert slots[0].std() > 0.5
    # Raw, the same counts were read as kelvin × 100 (200–230 K ground).
    assert normalize_bands(counts, "infrared", ("tir",))[INFRARED_ABSOLUTE_SLOT].any()


@pytest.mark.parametrize("modality", ["optical", "multispectral", "sar", "infrared"])
def test_nodata_pixels_reach_the_processor_as_nan_and_leave_it_as_zero(modality: str) -> None:
    scene = build_scene(0, 4, 128)
    image, bands = render(scene, modality, np.random.default_rng(2))
    image = image.copy()
    image[:, :40] = 0  # a no-data strip along the top
    metas = [BandMeta(name=b, dtype=image.dtype.name, nodata=0, tags=SYNTHETIC) for b in bands]
    converted = to_model_units(image, modality, metas)
    assert converted.nodata_fraction == pytest.approx(40 / 128)
    assert np.isnan(converted.values[:, :40]).all() and np.isfinite(converted.values[:, 40:]).all()
    slots = normalize_bands(
        converted.values, modality, bands, sar_scale=converted.processor_kwargs()["sar_scale"]
    )
    assert np.isfinite(slots).all()
    assert not slots[:, :40].any()
    # The valid part is normalised from the valid pixels alone, as the whole chip would be.
    assert float(np.abs(slots[:, 40:]).max()) > 0.1
