"""Per-modality band preprocessing of EarthGPT-X: raw chips → 13 normalised *band slots* at the model's chip size.

The physics differ, so normalisation is per modality, never one mean/std for all: every chip becomes 13 float32
band slots; each modality fills its own slots (``BAND_SLOTS``) and leaves the rest zero, and the model's learned band
adapter mixes them. Optical (3 bands, uint8 ``/255``, uint16 reflectance ``/10000``, float reflectance — or float
holding those digital numbers, detected by range) and multispectral (4–13 Sentinel-2-like bands selected by name,
reflectance) are standardised with fixed per-band statistics; SAR (1–2 polarisations, amplitude, intensity or dB)
goes to dB, is clipped to the chip's 1st–99th percentile per band (speckle-robust) and standardised; thermal
infrared (1 band) is scaled per chip between its 2nd and 98th percentiles (slot 0), and its absolute brightness
temperature, when the unit is recognised, fills slot 1.

Real products (``EarthGPTXImageProcessor.process``): given the bands' metadata (``earthgptx.radiometry.BandMeta``:
unit, scale, offset, no-data, tags, and the product level), the chip is first converted to the units the model was
trained on (``earthgptx.radiometry.to_model_units``; per-chip robust normalisation, with a warning, where the units
are unknown). Every chip passes ``earthgptx.radiometry.check_chip`` first: entirely no-data or NaN, complex-valued,
too small, too large or strip-shaped chips are refused with a ``RefusedInput`` saying why; the no-data pixels of a
partly empty chip are masked (normalised from the valid pixels alone, then zero) and their share is reported. Without
metadata (the training data) the values are read as before, by dtype and range, and the model input is unchanged.

``EarthGPTXImageProcessor`` is the image half of ``EarthGPTXProcessor`` (as transformers separates image processing
from text processing); it reads no files: callers hand it arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from earthgptx.formats import MODALITIES
from earthgptx.model.configuration_earthgptx import NUM_BAND_SLOTS
from earthgptx.radiometry import BandMeta, check_chip, to_model_units

# Canonical names per modality, in slot order. Multispectral follows Sentinel-2 (B01..B12 with B8A after B08).
BAND_SLOTS: dict[str, tuple[str, ...]] = {
    "optical": ("red", "green", "blue"),
    "multispectral": (
        "coastal",
        "blue",
        "green",
        "red",
        "rededge1",
        "rededge2",
        "rededge3",
        "nir",
        "nir08",
        "water_vapour",
        "cirrus",
        "swir16",
        "swir22",
    ),  # fmt: skip
    "sar": ("co", "cross"),
    "infrared": ("tir",),
}
BAND_COUNTS: dict[str, tuple[int, int]] = {
    "optical": (3, 3),
    "multispectral": (4, 13),
    "sar": (1, 2),
    "infrared": (1, 1),
}
_ALIASES: dict[str, dict[str, str]] = {
    "optical": {"r": "red", "g": "green", "b": "blue"},
    "multispectral": {
        "b01": "coastal",
        "b1": "coastal",
        "coastal_aerosol": "coastal",
        "b02": "blue",
        "b2": "blue",
        "b03": "green",
        "b3": "green",
        "b04": "red",
        "b4": "red",
        "b05": "rededge1",
        "b5": "rededge1",
        "b06": "rededge2",
        "b6": "rededge2",
        "b07": "rededge3",
        "b7": "rededge3",
        "b08": "nir",
        "b8": "nir",
        "nir1": "nir",
        "b8a": "nir08",
        "nir_narrow": "nir08",
        "b09": "water_vapour",
        "b9": "water_vapour",
        "watervapour": "water_vapour",
        "b10": "cirrus",
        "b11": "swir16",
        "swir1": "swir16",
        "b12": "swir22",
        "swir2": "swir22",
    },  # fmt: skip
    "sar": {"vv": "co", "hh": "co", "vh": "cross", "hv": "cross"},
    "infrared": {"thermal": "tir", "lwir": "tir", "tir1": "tir", "b10_tir": "tir", "bt": "tir"},
}
# Fixed per-band statistics (reflectance for optical / multispectral, dB for SAR).
_OPTICAL_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_OPTICAL_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
_MS_MEAN = np.array(
    [0.13, 0.12, 0.11, 0.11, 0.14, 0.21, 0.24, 0.25, 0.26, 0.26, 0.02, 0.20, 0.14], dtype=np.float32
)
_MS_STD = np.array(
    [0.06, 0.07, 0.08, 0.10, 0.09, 0.09, 0.10, 0.11, 0.11, 0.11, 0.02, 0.10, 0.09], dtype=np.float32
)
_SAR_DB_MEAN = np.array([-12.0, -19.0], dtype=np.float32)
_SAR_DB_STD = np.array([5.0, 5.0], dtype=np.float32)
_SAR_DB_RANGE = (-50.0, 20.0)
SAR_SCALES = ("amplitude", "intensity", "db")


def modality_id(modality: str) -> int:
    """Integer id of a modality name (``MODALITY_IDS``)."""
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; expected one of {', '.join(MODALITIES)}")
    return MODALITIES.index(modality)


def band_slots(modality: str, bands: Sequence[str]) -> list[int]:
    """Slot index of each named band; raises ``ValueError`` on a wrong count, an unknown or a repeated band."""
    modality_id(modality)
    low, high = BAND_COUNTS[modality]
    if not low <= len(bands) <= high:
        expected = f"{low}" if low == high else f"{low} to {high}"
        raise ValueError(f"modality {modality!r} needs {expected} bands, got {len(bands)} ({list(bands)})")
    slots = BAND_SLOTS[modality]
    aliases = _ALIASES[modality]
    result: list[int] = []
    for name in bands:
        key = str(name).strip().lower()
        key = aliases.get(key, key)
        if key not in slots:
            raise ValueError(f"unknown {modality} band {name!r}; known: {', '.join(slots + tuple(aliases))}")
        index = slots.index(key)
        if index in result:
            raise ValueError(f"band {name!r} appears twice in {list(bands)} for modality {modality!r}")
        result.append(index)
    return result


def _percentile(values: np.ndarray, q: float) -> float:
    finite = values[np.isfinite(values)]
    return float(np.percentile(finite, q)) if finite.size else 0.0


# Infrared chips fill two slots: the per-chip contrast stretch of the thermal band (slot 0) and its absolute
# brightness temperature (this slot), standardised around typical land-surface temperatures.
INFRARED_ABSOLUTE_SLOT = 1
_TIR_MEAN_K = 295.0
_TIR_STD_K = 10.0


def brightness_temperature_kelvin(values: np.ndarray) -> np.ndarray | None:
    """Thermal band values → brightness temperature in K, or ``None`` when the unit is not recognised.

    Recognised by the median: Kelvin × 100 (the uint16 convention of this project's generator), Kelvin, or
    degrees Celsius. Radiances or other scalings are left alone (the absolute slot then stays zero).
    """
    median = _percentile(values, 50.0)
    if 15_000.0 <= median <= 40_000.0:
        return values / 100.0
    if 150.0 <= median <= 400.0:
        return values
    if -90.0 <= median <= 90.0 and float(np.nanmax(values)) <= 120.0:
        return values + 273.15
    return None


def normalize_bands(
    array: np.ndarray,
    modality: str,
    bands: Sequence[str],
    sar_scale: str = "amplitude",
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """Raw ``(C, H, W)`` band values (native dtype) → ``(13, H, W)`` float32 band slots, per-modality normalised.

    ``sar_scale`` says what SAR values are: ``amplitude`` (|s|), ``intensity`` (|s|²) or already ``db``. ``valid``
    (``(H, W)`` bool) masks no-data pixels: the statistics ignore them and their slots are zero; the dtype rules
    still follow the array's own dtype.
    """
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(f"expected a (bands, height, width) array, got shape {array.shape}")
    if array.shape[0] != len(bands):
        raise ValueError(
            f"the image has {array.shape[0]} bands but {len(bands)} band names were given ({list(bands)})"
        )
    slots = band_slots(modality, bands)
    data = array.astype(np.float32)
    if valid is not None and not valid.all():
        data[:, ~valid] = np.nan  # NaN is ignored by the percentiles and set to zero at the end
    out = np.zeros((NUM_BAND_SLOTS,) + data.shape[1:], dtype=np.float32)

    if modality in ("optical", "multispectral"):
        if array.dtype == np.uint8:
            scaled = data / 255.0
        elif np.issubdtype(array.dtype, np.integer):
            scaled = data / 10000.0  # reflectance × 10 000, the Landsat/Sentinel-2 L2 convention
        elif _percentile(data, 99.0) <= 2.0:
            scaled = data  # float reflectance
        elif modality == "optical" and _percentile(data, 100.0) <= 255.0:
            scaled = data / 255.0  # 8-bit digital numbers stored as float
        else:
            scaled = data / 10000.0  # scaled reflectance stored as float
        scaled = np.clip(scaled, 0.0, 1.5)
        mean, std = (_OPTICAL_MEAN, _OPTICAL_STD) if modality == "optical" else (_MS_MEAN, _MS_STD)
        for band, slot in enumerate(slots):
            # Bright outliers in a low-variance band (cirrus) must not dominate the adapter's input.
            out[slot] = np.clip((scaled[band] - mean[slot]) / std[slot], -10.0, 10.0)
    elif modality == "sar":
        if sar_scale not in SAR_SCALES:
            raise ValueError(f"unknown sar_scale {sar_scale!r}; expected one of {', '.join(SAR_SCALES)}")
        for band, slot in enumerate(slots):
            values = data[band]
            if sar_scale == "amplitude":
                db = 20.0 * np.log10(np.maximum(np.abs(values), 1e-6))
            elif sar_scale == "intensity":
                db = 10.0 * np.log10(np.maximum(values, 1e-12))
            else:
                db = values
            low = max(_percentile(db, 1.0), _SAR_DB_RANGE[0])
            high = min(_percentile(db, 99.0), _SAR_DB_RANGE[1])
            db = np.clip(db, low, max(high, low))
            out[slot] = (db - _SAR_DB_MEAN[slot]) / _SAR_DB_STD[slot]
    else:  # infrared
        values = data[0]
        low, high = _percentile(values, 2.0), _percentile(values, 98.0)
        scaled = np.clip((values - low) / max(high - low, 1e-6), 0.0, 1.0)
        out[slots[0]] = (scaled - 0.5) / 0.25
        # The stretch above keeps the contrast but loses the absolute temperature, which is what tells warm
        # urban ground from cool water; a second slot carries it when the unit can be recognised.
        kelvin = brightness_temperature_kelvin(values)
        if kelvin is not None:
            out[INFRARED_ABSOLUTE_SLOT] = np.clip((kelvin - _TIR_MEAN_K) / _TIR_STD_K, -5.0, 5.0)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def resize_chip(slots: np.ndarray, size: int) -> torch.Tensor:
    """``(13, H, W)`` → ``(13, size, size)`` float32 tensor (antialiased bilinear)."""
    tensor = torch.from_numpy(np.ascontiguousarray(slots))
    if tensor.shape[-2:] == (size, size):
        return tensor
    return F.interpolate(
        tensor[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )[0]


UNITS_FROM_VALUES_WARNING = (
    "no band metadata: units taken from the dtype and value range (uint8 display, uint16 reflectance × 10000)"
)


@dataclass(frozen=True)
class ProcessedImage:
    """One chip ready for the model, with what to record next to its answer.

    ``pixel_values`` ``(13, S, S)`` float32; ``nodata_fraction`` the share of the chip's pixels that are no-data or
    NaN (masked); ``warnings`` the assumptions made about its units; ``unit`` the model unit the values were
    converted to (``None`` when there was no band metadata and the values were read as they came).
    """

    pixel_values: torch.Tensor
    nodata_fraction: float
    warnings: tuple[str, ...]
    unit: str | None


class EarthGPTXImageProcessor:
    """Raw ``(C, H, W)`` bands of one chip → ``(13, S, S)`` normalised float32 band slots at chip size ``S``."""

    def __init__(self, image_size: int) -> None:
        self.image_size = int(image_size)

    def __call__(
        self,
        array: np.ndarray,
        modality: str,
        bands: Sequence[str],
        sar_scale: str = "amplitude",
        *,
        band_metas: Sequence[BandMeta] | None = None,
        nodata: Sequence[float | None] | float | None = None,
        product_level: str | None = None,
        sensor: str | None = None,
    ) -> torch.Tensor:
        return self.preprocess(
            array,
            modality,
            bands,
            sar_scale,
            band_metas=band_metas,
            nodata=nodata,
            product_level=product_level,
            sensor=sensor,
        )

    def preprocess(
        self,
        array: np.ndarray,
        modality: str,
        bands: Sequence[str],
        sar_scale: str = "amplitude",
        *,
        band_metas: Sequence[BandMeta] | None = None,
        nodata: Sequence[float | None] | float | None = None,
        product_level: str | None = None,
        sensor: str | None = None,
    ) -> torch.Tensor:
        """The pixel values of :meth:`process` (which see)."""
        return self.process(
            array,
            modality,
            bands,
            sar_scale,
            band_metas=band_metas,
            nodata=nodata,
            product_level=product_level,
            sensor=sensor,
        ).pixel_values

    def process(
        self,
        array: np.ndarray,
        modality: str,
        bands: Sequence[str],
        sar_scale: str = "amplitude",
        *,
        band_metas: Sequence[BandMeta] | None = None,
        nodata: Sequence[float | None] | float | None = None,
        product_level: str | None = None,
        sensor: str | None = None,
    ) -> ProcessedImage:
        """Check the chip (``check_chip``: a ``RefusedInput`` says why it is not an image), convert it to model units
        when ``band_metas`` describe its bands (then ``sar_scale`` follows the conversion and ``nodata`` comes from
        the metadata), mask its no-data pixels, ``normalize_bands`` and resize antialiased to the chip size.

        ``nodata`` (one value, or one per band) marks no-data pixels of a chip without metadata; NaN always does.
        """
        array = np.asarray(array)
        if array.ndim == 2:
            array = array[None]
        if band_metas is None:
            checked = check_chip(array, nodata)  # a band count that does not match: normalize_bands names it
            slots = normalize_bands(array, modality, bands, sar_scale, valid=checked.valid)
            return ProcessedImage(
                resize_chip(slots, self.image_size),
                checked.nodata_fraction,
                (UNITS_FROM_VALUES_WARNING,),
                None,
            )
        if nodata is not None:
            raise ValueError("give the no-data values in band_metas (BandMeta.nodata), not as well in nodata")
        if len(band_metas) != len(bands):
            raise ValueError(
                f"{len(band_metas)} band descriptions for {len(bands)} band names ({list(bands)})"
            )
        band_slots(modality, bands)  # an unknown modality or band is refused before any conversion
        converted = to_model_units(array, modality, band_metas, product_level, sensor, bands=bands)
        slots = normalize_bands(converted.values, modality, bands, converted.processor_kwargs()["sar_scale"])
        if modality == "infrared" and converted.unit != "kelvin":
            slots[INFRARED_ABSOLUTE_SLOT] = 0.0  # relative temperatures: no absolute temperature is invented
        return ProcessedImage(
            resize_chip(slots, self.image_size), converted.nodata_fraction, converted.warnings, converted.unit
        )


__all__ = [
    "BAND_COUNTS",
    "BAND_SLOTS",
    "INFRARED_ABSOLUTE_SLOT",
    "SAR_SCALES",
    "UNITS_FROM_VALUES_WARNING",
    "EarthGPTXImageProcessor",
    "ProcessedImage",
    "band_slots",
    "brightness_temperature_kelvin",
    "modality_id",
    "normalize_bands",
    "resize_chip",
]
