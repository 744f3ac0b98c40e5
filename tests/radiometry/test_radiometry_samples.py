"""Real files: the sample GeoTIFFs that ``make up`` unpacks (``deploy/local/samples.sh``): an 8-bit Landsat ETM+
Level-1 subset with its thermal band and no calibration metadata, and an 8-bit RGB over the Bahamas with no-data 0.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from rasterio.windows import Window

from earthgptx.radiometry import EmptyChipError, read_chip
from earthgptx.radiometry.conversions import RELATIVE_THERMAL_BASE


def sample(name: str) -> Path:
    cache = Path(os.environ.get("EGX_CACHE") or Path.home() / ".cache" / "earthgptx")
    path = cache / "samples" / "localtileserver" / name
    if not path.is_file():
        pytest.fail(f"sample {name} is missing; run `deploy/local/samples.sh install` (make up does)")
    return path


WINDOW = Window(256, 256, 128, 128)


def test_uncalibrated_landsat_dn_are_normalised_per_chip_with_a_warning() -> None:
    # B1–B4 of ETM+ are blue, green, red, NIR; the file carries no MTL, unit, scale or product level.
    result = read_chip(
        sample("landsat.tif"),
        "multispectral",
        indexes=[1, 2, 3, 4],
        window=WINDOW,
        bands=["blue", "green", "red", "nir"],
    )
    assert result.values.shape == (4, 128, 128)
    assert all(c.kind == "robust" for c in result.conversions)
    assert result.warnings and "unknown" in result.warnings[0]
    values = result.values
    assert np.isfinite(values).all()
    assert 0.0 <= float(values.min()) and float(values.max()) <= 1.5
    assert float(values.std()) > 0.02


def test_uncalibrated_thermal_dn_give_no_absolute_temperature() -> None:
    # B6 (thermal) of the same file: 8-bit DN with a median around 216, which a unit guess would take for 216 K.
    result = read_chip(sample("landsat.tif"), "infrared", indexes=[6], window=WINDOW, bands=["tir"])
    assert result.unit == "relative"
    # Outside every range the processor would read as a temperature (its 150–400 K range included).
    assert RELATIVE_THERMAL_BASE <= float(np.median(result.values)) <= 2 * RELATIVE_THERMAL_BASE
    assert any("no absolute temperature" in w for w in result.warnings)


def test_a_real_rgb_with_nodata_edges() -> None:
    path = sample("bahamas_rgb.tif")
    with pytest.raises(EmptyChipError, match="every pixel"):
        read_chip(path, "optical", window=Window(0, 0, 128, 128), bands=["red", "green", "blue"])
    partial = read_chip(path, "optical", window=Window(0, 128, 128, 128), bands=["red", "green", "blue"])
    assert 0.0 < partial.nodata_fraction < 1.0
    valid = np.isfinite(partial.values)
    assert valid.mean() == pytest.approx(1.0 - partial.nodata_fraction)
    assert any("square-root display stretch" in w for w in partial.warnings)
    assert 0.0 <= float(np.nanmin(partial.values)) and float(np.nanmax(partial.values)) <= 1.0
