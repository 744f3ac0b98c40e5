"""Band names each modality accepts: the processor's rules, readable without importing torch.

``earthgptx.model.image_processing_earthgptx`` (which imports torch) maps band names onto the model's band slots; ingest
must refuse a scene whose names the processor would refuse, without loading the model. The tables below are the
processor's (a test, ``tests/scenes/test_bands.py``, keeps them equal); ``canonical_bands`` applies the same rules
(count per modality, known names and aliases, no repeats) and returns the canonical name of each band.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from earthgptx.formats import MODALITIES

__all__ = ["BAND_ALIASES", "BAND_COUNTS", "BAND_SLOTS", "MODALITIES", "canonical_bands"]

# Canonical names per modality, in the model's slot order. Multispectral follows Sentinel-2.
BAND_SLOTS: Final[dict[str, tuple[str, ...]]] = {
    "optical": ("red", "green", "blue"),
    "multispectral": (
        "coastal", "blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "nir08",
        "water_vapour", "cirrus", "swir16", "swir22",
    ),  # fmt: skip
    "sar": ("co", "cross"),
    "infrared": ("tir",),
}
BAND_COUNTS: Final[dict[str, tuple[int, int]]] = {
    "optical": (3, 3),
    "multispectral": (4, 13),
    "sar": (1, 2),
    "infrared": (1, 1),
}
BAND_ALIASES: Final[dict[str, dict[str, str]]] = {
    "optical": {"r": "red", "g": "green", "b": "blue"},
    "multispectral": {
        "b01": "coastal", "b1": "coastal", "coastal_aerosol": "coastal",
        "b02": "blue", "b2": "blue", "b03": "green", "b3": "green", "b04": "red", "b4": "red",
        "b05": "rededge1", "b5": "rededge1", "b06": "rededge2", "b6": "rededge2", "b07": "rededge3", "b7": "rededge3",
        "b08": "nir", "b8": "nir", "nir1": "nir", "b8a": "nir08", "nir_narrow": "nir08",
        "b09": "water_vapour", "b9": "water_vapour", "watervapour": "water_vapour",
        "b10": "cirrus", "b11": "swir16", "swir1": "swir16", "b12": "swir22", "swir2": "swir22",
    },  # fmt: skip
    "sar": {"vv": "co", "hh": "co", "vh": "cross", "hv": "cross"},
    "infrared": {"thermal": "tir", "lwir": "tir", "tir1": "tir", "b10_tir": "tir", "bt": "tir"},
}


def canonical_bands(modality: str, bands: Sequence[str]) -> tuple[str, ...]:
    """The canonical name of each band, or ``ValueError`` naming what the processor would refuse."""
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; expected one of {', '.join(MODALITIES)}")
    low, high = BAND_COUNTS[modality]
    if not low <= len(bands) <= high:
        expected = f"{low}" if low == high else f"{low} to {high}"
        raise ValueError(f"modality {modality!r} needs {expected} bands, got {len(bands)} ({list(bands)})")
    slots, aliases = BAND_SLOTS[modality], BAND_ALIASES[modality]
    names: list[str] = []
    for name in bands:
        key = str(name).strip().lower()
        key = aliases.get(key, key)
        if key not in slots:
            raise ValueError(f"unknown {modality} band {name!r}; known: {', '.join(slots + tuple(aliases))}")
        if key in names:
            raise ValueError(f"band {name!r} appears twice in {list(bands)} for modality {modality!r}")
        names.append(key)
    return tuple(names)
