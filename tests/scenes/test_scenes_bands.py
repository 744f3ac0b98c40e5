"""Ingest refuses exactly the band names the processor refuses: its tables are the processor's."""

from __future__ import annotations

import pytest

from earthgptx.scenes.bands import BAND_ALIASES, BAND_COUNTS, BAND_SLOTS, canonical_bands


def test_tables_equal_the_processors() -> None:
    processing = pytest.importorskip("earthgptx.model.image_processing_earthgptx")
    assert BAND_SLOTS == processing.BAND_SLOTS
    assert BAND_COUNTS == processing.BAND_COUNTS
    assert BAND_ALIASES == processing._ALIASES


@pytest.mark.parametrize(
    ("modality", "bands"),
    [
        ("optical", ["red", "green", "blue"]),
        ("optical", ["R", "G", "B"]),
        ("multispectral", ["B02", "B03", "B04", "B08"]),
        ("sar", ["VV", "VH"]),
        ("infrared", ["thermal"]),
        ("optical", ["red", "green"]),
        ("optical", ["red", "green", "nir"]),
        ("sar", ["VV", "HH"]),
        ("multispectral", ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12", "B13"]),
    ],
)
def test_same_verdict_as_the_processor(modality: str, bands: list[str]) -> None:
    processing = pytest.importorskip("earthgptx.model.image_processing_earthgptx")
    try:
        slots = processing.band_slots(modality, bands)
    except ValueError as exc:
        with pytest.raises(ValueError) as ours:
            canonical_bands(modality, bands)
        assert str(ours.value) == str(exc)
    else:
        assert [BAND_SLOTS[modality].index(name) for name in canonical_bands(modality, bands)] == slots


def test_unknown_modality_is_named() -> None:
    with pytest.raises(ValueError, match="unknown modality 'lidar'"):
        canonical_bands("lidar", ["z"])
