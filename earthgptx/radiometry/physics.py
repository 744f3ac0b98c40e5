"""The radiometric formulas, one function each, on numpy arrays (no I/O, no metadata look-up).

Sources: the Landsat 8-9 Collection 2 Level-1 and Level-2 data format control books and product guides (USGS:
TOA reflectance, radiance, the thermal constants, the Level-2 scale factors); the Sentinel-2 products
specification (quantification value and the radiometric offset introduced with processing baseline 04.00);
the ESA Sentinel-1 calibration note (σ⁰ = DN² / A²). ``docs/radiometry.md`` has the table of which product uses
which formula.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "CELSIUS_TO_KELVIN",
    "LANDSAT_L2_SR_OFFSET",
    "LANDSAT_L2_SR_SCALE",
    "LANDSAT_L2_ST_OFFSET_K",
    "LANDSAT_L2_ST_SCALE",
    "SENTINEL2_BASELINE_OFFSET",
    "SENTINEL2_OFFSET_BASELINE",
    "SENTINEL2_QUANTIFICATION",
    "amplitude_to_db",
    "brightness_temperature",
    "calibrated_intensity",
    "display_stretch",
    "intensity_to_db",
    "linear_radiance",
    "sentinel2_reflectance",
    "toa_reflectance",
    "undo_display_stretch",
]

CELSIUS_TO_KELVIN = 273.15
# Landsat Collection 2 Level-2: surface reflectance and surface temperature (Kelvin) as scaled integers.
LANDSAT_L2_SR_SCALE = 2.75e-5
LANDSAT_L2_SR_OFFSET = -0.2
LANDSAT_L2_ST_SCALE = 0.00341802
LANDSAT_L2_ST_OFFSET_K = 149.0
# Sentinel-2 L1C/L2A: reflectance = (DN + offset) / 10 000; from processing baseline 04.00 (January 2022) the
# offset is -1000 (RADIO_ADD_OFFSET in L1C, BOA_ADD_OFFSET in L2A), before it, 0.
SENTINEL2_QUANTIFICATION = 10_000.0
SENTINEL2_BASELINE_OFFSET = -1000.0
SENTINEL2_OFFSET_BASELINE = (4, 0)

_DB_FLOOR_INTENSITY = 1e-12


def toa_reflectance(dn: np.ndarray, mult: float, add: float, sun_elevation_deg: float | None) -> np.ndarray:
    """Landsat Level-1 DN → top-of-atmosphere reflectance: ``(M·DN + A) / sin(sun elevation)``.

    Without a sun elevation the result is the planetary reflectance not corrected for the sun angle (the caller
    records a warning).
    """
    reflectance = mult * dn.astype(np.float64) + add
    if sun_elevation_deg is not None:
        if not 0.0 < sun_elevation_deg <= 90.0:
            raise ValueError(f"sun elevation {sun_elevation_deg} degrees is not in (0, 90]")
        reflectance = reflectance / np.sin(np.radians(sun_elevation_deg))
    return reflectance.astype(np.float32)


def linear_radiance(dn: np.ndarray, mult: float, add: float) -> np.ndarray:
    """Level-1 DN → spectral radiance (W/(m²·sr·µm)): ``M·DN + A``."""
    return (mult * dn.astype(np.float64) + add).astype(np.float32)


def brightness_temperature(radiance: np.ndarray, k1: float, k2: float) -> np.ndarray:
    """At-sensor brightness temperature in Kelvin from radiance: ``K2 / ln(K1 / L + 1)``.

    Non-positive radiance has no temperature and becomes NaN.
    """
    values = radiance.astype(np.float64)
    out = np.full(values.shape, np.nan)
    positive = values > 0
    out[positive] = k2 / np.log(k1 / values[positive] + 1.0)
    return out.astype(np.float32)


def sentinel2_reflectance(dn: np.ndarray, offset: float, quantification: float) -> np.ndarray:
    """Sentinel-2 L1C (TOA) or L2A (BOA) DN → reflectance: ``(DN + offset) / quantification``."""
    if quantification <= 0:
        raise ValueError(f"quantification value must be positive, got {quantification}")
    return ((dn.astype(np.float64) + offset) / quantification).astype(np.float32)


def calibrated_intensity(dn: np.ndarray, calibration_constant: float) -> np.ndarray:
    """Sentinel-1 style calibration of amplitude DN: ``σ⁰ = DN² / A²`` (linear intensity)."""
    if calibration_constant <= 0:
        raise ValueError(f"calibration constant must be positive, got {calibration_constant}")
    values = dn.astype(np.float64)
    return (values * values / (calibration_constant * calibration_constant)).astype(np.float32)


def intensity_to_db(intensity: np.ndarray) -> np.ndarray:
    """Linear intensity (σ⁰, |s|²) → dB; zero and negative values are floored at -120 dB."""
    return (10.0 * np.log10(np.maximum(intensity.astype(np.float64), _DB_FLOOR_INTENSITY))).astype(np.float32)


def amplitude_to_db(amplitude: np.ndarray) -> np.ndarray:
    """Amplitude (|s|) → dB (``20·log10``), the same floor as :func:`intensity_to_db`."""
    values = np.abs(amplitude.astype(np.float64))
    return intensity_to_db(values * values)


def display_stretch(reflectance: np.ndarray) -> np.ndarray:
    """Linear reflectance → the square-root display stretch of the training data's 8-bit optical chips, in
    ``[0, 1]`` (an 8-bit value is ``255 ×`` this)."""
    return np.sqrt(np.clip(reflectance.astype(np.float32), 0.0, 1.0))


def undo_display_stretch(display: np.ndarray) -> np.ndarray:
    """The inverse of :func:`display_stretch` (``[0, 1]`` display values → linear reflectance)."""
    values = np.clip(display.astype(np.float32), 0.0, 1.0)
    return values * values
