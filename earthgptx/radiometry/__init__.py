"""Radiometry: real products in, the model's units out, and refusals for what is not an image (no torch).

- :mod:`~earthgptx.radiometry.metadata`: ``BandMeta`` (unit, scale, offset, no-data, tags per band) from a file,
  a STAC item's ``raster:bands`` or a Landsat MTL;
- :mod:`~earthgptx.radiometry.conversions`: ``conversion_for(band_meta, modality, product_level)`` and
  ``to_model_units`` (Landsat C2 L1/L2, Sentinel-2 L1C/L2A, float reflectance, SAR amplitude/intensity/dB/DN,
  thermal DN/radiance/K/°C, 8-bit display vs 16-bit reflectance; robust per-chip normalisation and a warning when
  units are unknown);
- :mod:`~earthgptx.radiometry.physics`: the formulas;
- :mod:`~earthgptx.radiometry.checks`: refusals (entirely no-data chips, sizes, strips, complex bands, empty
  instructions, unreferenced prompts);
- :mod:`~earthgptx.radiometry.read`: ``read_chip`` (windowed rasterio read + conversion).

``docs/radiometry.md`` has the table of products and conversions.
"""

from earthgptx.radiometry.checks import (
    ChipAspectError,
    ChipCheck,
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
from earthgptx.radiometry.conversions import (
    MODEL_UNITS,
    Conversion,
    ModelInput,
    conversion_for,
    normalise_product_level,
    to_model_units,
)
from earthgptx.radiometry.metadata import (
    BandMeta,
    band_meta_from_ingest,
    band_metas_from_stac,
    parse_mtl,
    read_band_metas,
)
from earthgptx.radiometry.read import read_chip

__all__ = [
    "MODEL_UNITS",
    "BandMeta",
    "ChipAspectError",
    "ChipCheck",
    "ChipShapeError",
    "ChipTooLargeError",
    "ChipTooSmallError",
    "ComplexBandError",
    "Conversion",
    "EmptyChipError",
    "EmptyInstructionError",
    "ModelInput",
    "RefusedInput",
    "UnknownRegionError",
    "UnreferencedPromptError",
    "band_meta_from_ingest",
    "band_metas_from_stac",
    "check_chip",
    "check_instruction",
    "conversion_for",
    "nodata_mask",
    "normalise_product_level",
    "pad_to_square",
    "parse_mtl",
    "read_band_metas",
    "read_chip",
    "to_model_units",
]
