"""Datasets in the EarthGPT-X record format (docs/architecture.md).

- :func:`generate_dataset` writes the synthetic multi-source (optical, multispectral, SAR, thermal infrared),
  multi-level (scene, region, attribute, relation) visual-prompting dataset;
- :func:`load_records` / :func:`validate_record` read and check JSON Lines records;
- ``convert_dior_rsvg`` turns the public DIOR-RSVG layout into the same records.

See ``docs/dataset.md`` for classes, physics, tasks and phrasings.
"""

from earthgptx.data.generate import generate_dataset
from earthgptx.data.record_format import RecordValidationError, load_records, record_schema, validate_record
from earthgptx.formats import box_from_grid, box_to_grid, format_box

__all__ = [
    "RecordValidationError",
    "box_from_grid",
    "box_to_grid",
    "format_box",
    "generate_dataset",
    "load_records",
    "record_schema",
    "validate_record",
]
