"""Products in, model units out: which conversion a band needs (:func:`conversion_for`) and applying it
(:func:`to_model_units`).

**Model units** are what the shipped model was trained on (the generator's chips, ``earthgptx/data/render.py``,
as the processor reads them); a converted chip is float32 in these units, so the processor gives a real product
the same input as the training data of the same ground:

| modality | model unit | training data | processor argument |
|---|---|---|---|
| optical | ``display``: √reflectance in [0, 1] | uint8 = 255·√reflectance | float ≤ 2 is taken as is |
| multispectral | ``reflectance`` in [0, 1.5] | uint16 = 10 000·reflectance | float ≤ 2 is taken as is |
| sar | ``db``: σ⁰ in dB | float32 amplitude | ``sar_scale="db"`` |
| infrared | ``kelvin``: brightness temperature | uint16 = 100·K | median in 150–400 is read as K |

Where the units are unknown, a per-chip robust normalisation stands in and a warning is recorded with the result
(:class:`ModelInput`): optical and multispectral bands are stretched together (band ratios kept) from their 2nd–98th
percentiles onto a typical reflectance range; uncalibrated SAR keeps its contrast in dB and is shifted so its median
sits at a typical σ⁰ (an unknown calibration is one constant gain, an additive dB offset); thermal values of unknown
unit keep their relative contrast (unit ``relative``) and no absolute temperature. ``docs/radiometry.md`` has the
decision table per product.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Final

import numpy as np

from earthgptx.formats import MODALITIES
from earthgptx.radiometry import physics
from earthgptx.radiometry.checks import ComplexBandError, EmptyChipError, check_chip
from earthgptx.radiometry.metadata import BandMeta

__all__ = [
    "CONVERSION_KINDS",
    "MODEL_UNITS",
    "RELATIVE_THERMAL_BASE",
    "Conversion",
    "ModelInput",
    "conversion_for",
    "normalise_product_level",
    "to_model_units",
]

MODEL_UNITS: Final[dict[str, str]] = {
    "optical": "display",
    "multispectral": "reflectance",
    "sar": "db",
    "infrared": "kelvin",
}
CONVERSION_KINDS: Final = (
    "reflectance",  # value·gain + bias is reflectance (Landsat L2 SR, Sentinel-2, float reflectance, declared scale)
    "toa_reflectance",  # Landsat L1: (value·gain + bias) / sin(sun elevation)
    "display",  # 8-bit square-root display stretch (the training data's optical chips): value·gain in [0, 1]
    "temperature",  # value·gain + bias is Kelvin (°C declared: bias includes +273.15)
    "thermal_radiance",  # value·gain + bias is radiance; K1/K2 give the brightness temperature
    "sar",  # value·gain + bias is amplitude, intensity or dB (sar_quantity); or DN with a calibration constant
    "sar_undeclared",  # float SAR without a unit: amplitude, dB or uncalibrated, decided from the values
    "robust",  # unknown units: per-chip robust normalisation (and a warning)
)

# Robust normalisation targets, typical of the training data: a reflectance range for optical/multispectral, a
# median σ⁰ per polarisation (co, cross) for SAR.
_ROBUST_REFLECTANCE = (0.02, 0.40)
_ROBUST_SAR_MEDIAN_DB = (-12.0, -19.0)
RELATIVE_THERMAL_BASE: Final = 1000.0
"""Thermal values of unknown unit become ``1000 + 1000 × stretch`` (2nd–98th percentile → 0–1): the processor's
per-chip contrast stretch sees the same picture, and the range lies outside every unit the processor recognises
as a temperature, so no absolute temperature is invented."""

_SYNTHETIC_GENERATOR = "earthgptx-synthetic"
_SAR_CO = ("vv", "hh", "co")
_DB_UNITS = {"db", "decibel", "decibels", "db(sigma0)", "sigma0_db"}
_AMPLITUDE_UNITS = {"amplitude", "sigma0_amplitude", "linear amplitude"}
_INTENSITY_UNITS = {
    "intensity",
    "power",
    "sigma0",
    "linear",
    "linear power",
    "sigma nought",
    "gamma0",
    "beta0",
}
_KELVIN_UNITS = {"k", "kelvin"}
_CELSIUS_UNITS = {"c", "°c", "degc", "deg_c", "celsius", "degree_celsius"}
_REFLECTANCE_UNITS = {"reflectance", "1", "none", "unitless", "dimensionless", "toa reflectance", "sr"}
_DISPLAY_UNITS = {"display", "display_sqrt", "sqrt", "8-bit display"}
_DN_UNITS = {"dn", "digital number", "digital numbers", "counts"}
# Landsat 8/9 band numbers of the processor's band names, for products whose bands carry only those names.
_LANDSAT_BAND_NUMBERS: Final[dict[str, str]] = {
    "coastal": "1", "blue": "2", "green": "3", "red": "4", "nir": "5", "swir16": "6", "swir22": "7",
    "cirrus": "9", "tir": "10", "b": "2", "g": "3", "r": "4", "swir1": "6", "swir2": "7", "thermal": "10",
}  # fmt: skip


@dataclass(frozen=True)
class Conversion:
    """How one band's stored values become model units (one of ``CONVERSION_KINDS``; ``warning`` is recorded
    with the result when the conversion rests on an assumption)."""

    kind: str
    gain: float = 1.0
    bias: float = 0.0
    sun_elevation_deg: float | None = None
    k1: float | None = None
    k2: float | None = None
    sar_quantity: str | None = None
    calibration_constant: float | None = None
    warning: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in CONVERSION_KINDS:
            raise ValueError(f"unknown conversion kind {self.kind!r}; expected one of {CONVERSION_KINDS}")
        if self.kind == "thermal_radiance" and (self.k1 is None or self.k2 is None):
            raise ValueError("a thermal radiance conversion needs both K1 and K2")
        if self.kind == "sar" and self.sar_quantity not in ("amplitude", "intensity", "db"):
            raise ValueError(f"SAR quantity must be amplitude, intensity or db, got {self.sar_quantity!r}")

    def describe(self) -> str:
        """One line for logs and reports, e.g. ``toa_reflectance: (2e-05·DN + -0.1) / sin(45.2°)``."""
        linear = f"{self.gain:g}·DN + {self.bias:g}"
        if self.kind == "toa_reflectance":
            sun = f"{self.sun_elevation_deg:g}°" if self.sun_elevation_deg is not None else "90° (unknown)"
            return f"toa_reflectance: ({linear}) / sin({sun})"
        if self.kind == "thermal_radiance":
            return f"thermal_radiance: L = {linear}; T = {self.k2:g} / ln({self.k1:g} / L + 1)"
        if self.kind == "sar":
            if self.calibration_constant is not None:
                return f"sar: σ⁰ = DN² / {self.calibration_constant:g}² → dB"
            return f"sar: {self.sar_quantity} = {linear} → dB"
        if self.kind in ("robust", "sar_undeclared"):
            return self.kind
        return f"{self.kind}: {linear}"


@dataclass(frozen=True)
class ModelInput:
    """A chip in model units, ready for the processor (``processor_kwargs()``), with what to record next to the
    result: ``warnings`` (assumed or unknown units), ``nodata_fraction`` and the ``conversions`` applied."""

    values: np.ndarray  # (C, H, W) float32 in ``unit``; NaN where no-data
    modality: str
    bands: tuple[str, ...]
    unit: str
    nodata_fraction: float
    conversions: tuple[Conversion, ...]
    warnings: tuple[str, ...] = field(default=())

    def processor_kwargs(self) -> dict[str, str]:
        """Keyword arguments for the processor's ``encode`` / ``preprocess_image`` besides the array and bands."""
        return {"modality": self.modality, "sar_scale": "db" if self.modality == "sar" else "amplitude"}


def normalise_product_level(product_level: str | None) -> str | None:
    """``L1TP``/``L1GT``/``L1GS`` → ``L1``; ``L2SP``/``L2SR`` → ``L2``; ``Level-1C``/``S2MSI1C`` → ``L1C``;
    ``S2MSI2A`` → ``L2A``; GRD/SLC/SYNTHETIC kept; anything else upper-cased."""
    if not product_level:
        return None
    text = re.sub(r"[\s_-]", "", product_level.strip().upper()).replace("LEVEL", "L")
    if text in ("S2MSI1C", "MSIL1C", "L1C"):
        return "L1C"
    if text in ("S2MSI2A", "MSIL2A", "L2A"):
        return "L2A"
    if re.fullmatch(r"L1(TP|GT|GS|T)?", text):
        return "L1"
    if re.fullmatch(r"L2(SP|SR|ST)?", text):
        return "L2"
    return text


def _unit(meta: BandMeta) -> str | None:
    return meta.unit.strip().lower() if meta.unit and meta.unit.strip() else None


def _is_synthetic(meta: BandMeta, level: str | None) -> bool:
    generator = meta.tag("generator") or ""
    return level == "SYNTHETIC" or generator.startswith(_SYNTHETIC_GENERATOR)


def _integer(meta: BandMeta) -> bool:
    return meta.dtype is not None and np.issubdtype(np.dtype(meta.dtype), np.integer)


def _is_sentinel2(meta: BandMeta, level: str | None, sensor: str | None) -> bool:
    named = (sensor or meta.tag("sensor", "SPACECRAFT_NAME", "platform") or "").lower().replace("_", "-")
    return level in ("L1C", "L2A") or "sentinel-2" in named or meta.tag("PROCESSING_BASELINE") is not None


def _baseline(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    match = re.match(r"^\D*(\d+)\.(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _sentinel2(meta: BandMeta, level: str | None) -> Conversion:
    band = meta.sensor_band
    add_keys = (
        ("BOA_ADD_OFFSET", "RADIO_ADD_OFFSET") if level != "L1C" else ("RADIO_ADD_OFFSET", "BOA_ADD_OFFSET")
    )
    keys = [
        *(f"{k}_B{band}" for k in add_keys if band),
        *(f"{k}_B0{band}" for k in add_keys if band),
        *add_keys,
    ]
    quantification = (
        meta.number("BOA_QUANTIFICATION_VALUE", "QUANTIFICATION_VALUE") or physics.SENTINEL2_QUANTIFICATION
    )
    offset = meta.number(*keys)
    if offset is not None:
        return Conversion("reflectance", gain=1.0 / quantification, bias=offset / quantification)
    if meta.has_scaling:  # scale/offset written on the band (GDAL's SENTINEL2 driver, cloud-optimised copies)
        return Conversion("reflectance", gain=meta.scale, bias=meta.offset)
    baseline = _baseline(meta.tag("PROCESSING_BASELINE"))
    if baseline is None:
        return Conversion(
            "reflectance",
            gain=1.0 / quantification,
            bias=physics.SENTINEL2_BASELINE_OFFSET / quantification,
            warning="Sentinel-2 processing baseline not declared: the offset of baseline 04.00 and later (-1000) "
            "is assumed",
        )
    offset = physics.SENTINEL2_BASELINE_OFFSET if baseline >= physics.SENTINEL2_OFFSET_BASELINE else 0.0
    return Conversion("reflectance", gain=1.0 / quantification, bias=offset / quantification)


def _reflective(meta: BandMeta, modality: str, level: str | None, sensor: str | None) -> Conversion:
    unit = _unit(meta)
    if unit in _DISPLAY_UNITS or (meta.tag("stretch") or "").lower() == "sqrt":
        return Conversion("display", gain=1.0 / 255.0 if meta.dtype in ("uint8", None) else meta.scale)
    reflectance_mult = meta.band_number("REFLECTANCE_MULT_BAND_{band}")
    if level == "L1" and reflectance_mult is not None:
        add = meta.band_number("REFLECTANCE_ADD_BAND_{band}")
        sun = meta.number("SUN_ELEVATION", "view:sun_elevation")
        return Conversion(
            "toa_reflectance",
            gain=reflectance_mult,
            bias=add if add is not None else 0.0,
            sun_elevation_deg=sun,
            warning=None
            if sun is not None
            else "sun elevation unknown: Landsat TOA reflectance not corrected for it",
        )
    if level == "L1" and not _is_sentinel2(meta, level, sensor):
        return Conversion(
            "robust",
            warning="Landsat Level-1 digital numbers without REFLECTANCE_MULT/ADD for this band: calibration "
            "unknown, per-chip robust normalisation",
        )
    if _is_sentinel2(meta, level, sensor):
        return _sentinel2(meta, level)
    if level == "L2":
        if meta.has_scaling:
            return Conversion("reflectance", gain=meta.scale, bias=meta.offset)
        return Conversion("reflectance", gain=physics.LANDSAT_L2_SR_SCALE, bias=physics.LANDSAT_L2_SR_OFFSET)
    if meta.has_scaling and (unit is None or unit in _REFLECTANCE_UNITS):
        return Conversion("reflectance", gain=meta.scale, bias=meta.offset)
    if unit in _REFLECTANCE_UNITS:
        if _integer(meta):
            return Conversion(
                "reflectance",
                gain=1.0 / 255.0 if meta.dtype == "uint8" else 1.0 / 10_000.0,
                warning=f"integer reflectance without a scale: {meta.dtype} taken as reflectance × "
                f"{'255' if meta.dtype == 'uint8' else '10000'}",
            )
        return Conversion("reflectance")
    if unit is None and meta.dtype is not None and not _integer(meta):
        return Conversion("reflectance", warning="unit not declared: float values taken as reflectance")
    if unit is None and modality == "optical" and meta.dtype == "uint8":
        return Conversion(
            "display",
            gain=1.0 / 255.0,
            warning="8-bit optical without a declared stretch: taken as the square-root display stretch of the "
            "training data",
        )
    return Conversion(
        "robust",
        warning=f"{modality} units unknown ({meta.dtype or 'unknown dtype'}, unit {meta.unit or 'none'}, product "
        f"level {level or 'none'}): per-chip robust normalisation",
    )


def _thermal(meta: BandMeta, level: str | None) -> Conversion:
    unit = _unit(meta)
    if unit in _KELVIN_UNITS:
        return Conversion("temperature", gain=meta.scale, bias=meta.offset)
    if unit in _CELSIUS_UNITS:
        return Conversion("temperature", gain=meta.scale, bias=meta.offset + physics.CELSIUS_TO_KELVIN)
    k1 = meta.band_number("K1_CONSTANT_BAND_{band}") or meta.number("K1_CONSTANT")
    k2 = meta.band_number("K2_CONSTANT_BAND_{band}") or meta.number("K2_CONSTANT")
    radiance_units = unit is not None and "w" in unit and "sr" in unit
    if level == "L1" and not radiance_units:
        mult = meta.band_number("RADIANCE_MULT_BAND_{band}")
        add = meta.band_number("RADIANCE_ADD_BAND_{band}")
        if mult is not None and k1 is not None and k2 is not None:
            return Conversion("thermal_radiance", gain=mult, bias=add or 0.0, k1=k1, k2=k2)
    if radiance_units:
        if k1 is not None and k2 is not None:
            return Conversion("thermal_radiance", gain=meta.scale, bias=meta.offset, k1=k1, k2=k2)
        return Conversion(
            "robust", warning="thermal radiance without K1/K2 constants: relative temperatures only"
        )
    if level == "L2":
        if meta.has_scaling:
            return Conversion("temperature", gain=meta.scale, bias=meta.offset)
        return Conversion(
            "temperature", gain=physics.LANDSAT_L2_ST_SCALE, bias=physics.LANDSAT_L2_ST_OFFSET_K
        )
    return Conversion(
        "robust",
        warning=f"thermal units unknown ({meta.dtype or 'unknown dtype'}, unit {meta.unit or 'none'}, product level "
        f"{level or 'none'}): relative temperatures only, no absolute temperature",
    )


def _sar(meta: BandMeta, level: str | None) -> Conversion:
    unit = _unit(meta)
    quantity = (meta.tag("sar:quantity", "SAR_QUANTITY") or "").lower() or None
    if unit in _DB_UNITS:
        return Conversion("sar", gain=meta.scale, bias=meta.offset, sar_quantity="db")
    if unit in _AMPLITUDE_UNITS:
        return Conversion("sar", gain=meta.scale, bias=meta.offset, sar_quantity="amplitude")
    if unit in _INTENSITY_UNITS:
        return Conversion("sar", gain=meta.scale, bias=meta.offset, sar_quantity="intensity")
    constant = meta.number("CALIBRATION_CONSTANT", "SIGMA0_CALIBRATION_CONSTANT", "sar:calibration_constant")
    if constant is not None:
        return Conversion("sar", sar_quantity="intensity", calibration_constant=constant)
    if unit in _DN_UNITS or _integer(meta) or level in ("GRD", "SLC"):
        return Conversion(
            "robust",
            sar_quantity=quantity if quantity in ("amplitude", "intensity") else "amplitude",
            warning="uncalibrated SAR digital numbers: dB contrast kept, level shifted to a typical σ⁰ per chip",
        )
    return Conversion(
        "sar_undeclared", warning="SAR unit not declared: amplitude, intensity or dB decided from the values"
    )


def conversion_for(
    band_meta: BandMeta, modality: str, product_level: str | None = None, sensor: str | None = None
) -> Conversion:
    """The conversion of one band from what ingest recorded about it (see ``docs/radiometry.md``)."""
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; expected one of {', '.join(MODALITIES)}")
    if band_meta.dtype is not None and np.issubdtype(np.dtype(band_meta.dtype), np.complexfloating):
        raise ComplexBandError(f"complex band {band_meta.name!r}: convert it to amplitude or intensity first")
    level = normalise_product_level(product_level)
    if band_meta.sensor_band is None and level in ("L1", "L2") and band_meta.name:
        number = _LANDSAT_BAND_NUMBERS.get(band_meta.name.strip().lower())
        band_meta = replace(band_meta, sensor_band=number) if number else band_meta
    if _is_synthetic(band_meta, level):
        return {
            "optical": Conversion("display", gain=1.0 / 255.0),
            "multispectral": Conversion("reflectance", gain=1.0 / 10_000.0),
            "sar": Conversion("sar", sar_quantity="amplitude"),
            "infrared": Conversion("temperature", gain=0.01),
        }[modality]
    if modality in ("optical", "multispectral"):
        return _reflective(band_meta, modality, level, sensor)
    if modality == "infrared":
        return _thermal(band_meta, level)
    return _sar(band_meta, level)


# ------------------------------------------------------------------------------------------------- applying
def _percentiles(values: np.ndarray, low: float, high: float) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise EmptyChipError("no valid pixel left to normalise")
    lo, hi = np.percentile(finite, [low, high])
    return float(lo), float(hi)


def _sar_db(values: np.ndarray, conversion: Conversion) -> tuple[np.ndarray, str | None]:
    """Calibrated SAR → dB, or (for ``sar_undeclared``) the quantity guessed from the values."""
    if conversion.kind == "sar":
        if conversion.calibration_constant is not None:
            return physics.intensity_to_db(
                physics.calibrated_intensity(values, conversion.calibration_constant)
            ), None
        linear = values * conversion.gain + conversion.bias
        if conversion.sar_quantity == "db":
            return linear.astype(np.float32), None
        if conversion.sar_quantity == "intensity":
            return physics.intensity_to_db(linear), None
        return physics.amplitude_to_db(linear), None
    finite = values[np.isfinite(values)]
    median = float(np.median(finite)) if finite.size else 0.0
    if finite.size and float(finite.min()) < 0.0 and -45.0 <= median <= 10.0:
        return values.astype(np.float32), f"negative values with a median of {median:.1f}: taken as dB"
    if 1e-3 <= median <= 3.0:
        return physics.amplitude_to_db(values), f"median {median:.3g}: taken as calibrated amplitude"
    return np.full_like(values, np.nan), None  # left to the robust path


def _robust_reflectance(values: np.ndarray) -> np.ndarray:
    """Bands of unknown unit stretched together from their 2nd–98th percentiles onto a typical reflectance range."""
    lo, hi = _percentiles(values, 2.0, 98.0)
    low, high = _ROBUST_REFLECTANCE
    return (low + (values - lo) * (high - low) / max(hi - lo, 1e-12)).astype(np.float32)


def _robust_sar(values: np.ndarray, quantity: str | None, band: str) -> np.ndarray:
    positive = np.where(values > 0, values, np.nan)
    db = physics.intensity_to_db(positive) if quantity == "intensity" else physics.amplitude_to_db(positive)
    db = np.where(np.isfinite(positive), db, np.nan)
    median = float(np.nanmedian(db)) if np.isfinite(db).any() else 0.0
    target = _ROBUST_SAR_MEDIAN_DB[0] if band.strip().lower() in _SAR_CO else _ROBUST_SAR_MEDIAN_DB[1]
    return (db - median + target).astype(np.float32)


def _robust_thermal(values: np.ndarray) -> np.ndarray:
    lo, hi = _percentiles(values, 2.0, 98.0)
    stretch = np.clip((values - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    return (RELATIVE_THERMAL_BASE * (1.0 + stretch)).astype(np.float32)


def to_model_units(
    array: np.ndarray,
    modality: str,
    band_metas: Sequence[BandMeta],
    product_level: str | None = None,
    sensor: str | None = None,
    bands: Sequence[str] | None = None,
) -> ModelInput:
    """Raw ``(C, H, W)`` values of one chip → :class:`ModelInput` in the model units of ``modality``.

    The chip passes :func:`earthgptx.radiometry.checks.check_chip` first (complex bands, sizes, entirely
    no-data are refused); no-data pixels (any band) become NaN in every band.
    """
    if array.ndim == 2:
        array = array[None]
    if len(band_metas) != array.shape[0]:
        raise ValueError(f"{len(band_metas)} band descriptions for a chip of {array.shape[0]} bands")
    names = (
        tuple(bands)
        if bands is not None
        else tuple(m.name or f"band{i + 1}" for i, m in enumerate(band_metas))
    )
    if len(names) != array.shape[0]:
        raise ValueError(f"{len(names)} band names for a chip of {array.shape[0]} bands")
    checked = check_chip(array, [m.nodata for m in band_metas])
    conversions = tuple(conversion_for(m, modality, product_level, sensor) for m in band_metas)
    warnings = [c.warning for c in conversions if c.warning]
    data = np.where(checked.valid[None], array.astype(np.float64), np.nan)
    out = np.full(data.shape, np.nan, dtype=np.float32)
    robust: list[int] = []
    unit = MODEL_UNITS[modality]
    for index, (values, conversion) in enumerate(zip(data, conversions, strict=True)):
        if conversion.kind == "robust":
            robust.append(index)
        elif conversion.kind in ("reflectance", "display"):
            out[index] = (values * conversion.gain + conversion.bias).astype(np.float32)
        elif conversion.kind == "toa_reflectance":
            out[index] = physics.toa_reflectance(
                values, conversion.gain, conversion.bias, conversion.sun_elevation_deg
            )
        elif conversion.kind == "temperature":
            out[index] = (values * conversion.gain + conversion.bias).astype(np.float32)
        elif conversion.kind == "thermal_radiance":
            assert conversion.k1 is not None and conversion.k2 is not None
            radiance = physics.linear_radiance(values, conversion.gain, conversion.bias)
            out[index] = physics.brightness_temperature(radiance, conversion.k1, conversion.k2)
        else:  # sar, sar_undeclared
            db, note = _sar_db(values, conversion)
            if note:
                warnings.append(f"band {names[index]}: {note}")
            if conversion.kind == "sar_undeclared" and not np.isfinite(db).any():
                robust.append(index)
                warnings.append(
                    f"band {names[index]}: values look uncalibrated; level shifted to a typical σ⁰"
                )
            else:
                out[index] = db
    if robust:
        if modality in ("optical", "multispectral"):
            out[robust] = _robust_reflectance(data[robust])
        elif modality == "sar":
            for index in robust:
                out[index] = _robust_sar(data[index], conversions[index].sar_quantity, names[index])
        else:
            out[robust] = _robust_thermal(data[robust])
            unit = "relative"
    out = np.where(checked.valid[None], out, np.nan).astype(np.float32)
    if modality == "optical":
        display = [i for i, c in enumerate(conversions) if c.kind == "display"]
        others = [i for i in range(len(conversions)) if i not in display]
        out[others] = physics.display_stretch(out[others])
        out[display] = np.clip(out[display], 0.0, 1.0)
        out = np.where(checked.valid[None], out, np.nan).astype(np.float32)
    elif modality == "multispectral":
        display = [i for i, c in enumerate(conversions) if c.kind == "display"]
        out[display] = physics.undo_display_stretch(out[display])
        out = np.clip(out, 0.0, 1.5)  # NaN stays NaN; the processor clips reflectance to the same range
    return ModelInput(
        values=out,
        modality=modality,
        bands=names,
        unit=unit,
        nodata_fraction=checked.nodata_fraction,
        conversions=conversions,
        warnings=tuple(dict.fromkeys(warnings)),
    )
