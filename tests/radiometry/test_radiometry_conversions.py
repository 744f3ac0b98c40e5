"""Each product's conversion on a small file written as the real product is (dtype, no-data, tags, MTL keys,
scales/offsets), read back with ``read_chip`` and compared with the physical value the DN were made from."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from earthgptx.radiometry import (
    BandMeta,
    ComplexBandError,
    EmptyChipError,
    band_meta_from_ingest,
    band_metas_from_stac,
    conversion_for,
    normalise_product_level,
    parse_mtl,
    read_chip,
    to_model_units,
)
from earthgptx.radiometry.conversions import RELATIVE_THERMAL_BASE

SIZE = 32

# Excerpt of a Landsat 8 Collection 2 Level-1 MTL (ODL text), with the values the USGS writes.
LANDSAT_L1_MTL = """GROUP = LANDSAT_METADATA_FILE
  GROUP = PRODUCT_CONTENTS
    COLLECTION_NUMBER = 02
    PROCESSING_LEVEL = "L1TP"
  END_GROUP = PRODUCT_CONTENTS
  GROUP = IMAGE_ATTRIBUTES
    SPACECRAFT_ID = "LANDSAT_8"
    SUN_AZIMUTH = 148.61553421
    SUN_ELEVATION = 41.37659839
    EARTH_SUN_DISTANCE = 1.0094386
  END_GROUP = IMAGE_ATTRIBUTES
  GROUP = LEVEL1_RADIOMETRIC_RESCALING
    RADIANCE_MULT_BAND_10 = 3.3420E-04
    RADIANCE_ADD_BAND_10 = 0.10000
    REFLECTANCE_MULT_BAND_2 = 2.0000E-05
    REFLECTANCE_MULT_BAND_3 = 2.0000E-05
    REFLECTANCE_MULT_BAND_4 = 2.0000E-05
    REFLECTANCE_MULT_BAND_5 = 2.0000E-05
    REFLECTANCE_ADD_BAND_2 = -0.100000
    REFLECTANCE_ADD_BAND_3 = -0.100000
    REFLECTANCE_ADD_BAND_4 = -0.100000
    REFLECTANCE_ADD_BAND_5 = -0.100000
  END_GROUP = LEVEL1_RADIOMETRIC_RESCALING
  GROUP = LEVEL1_THERMAL_CONSTANTS
    K1_CONSTANT_BAND_10 = 774.8853
    K2_CONSTANT_BAND_10 = 1321.0789
    K1_CONSTANT_BAND_11 = 480.8883
    K2_CONSTANT_BAND_11 = 1201.1442
  END_GROUP = LEVEL1_THERMAL_CONSTANTS
END_GROUP = LANDSAT_METADATA_FILE
END
"""
SUN_ELEVATION = 41.37659839


def _ground(seed: int, bands: int, low: float, high: float) -> np.ndarray:
    """A smooth, textured ground of ``bands`` bands with values in ``[low, high]``."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    base = 0.5 + 0.3 * np.sin(6 * xs + seed) * np.cos(4 * ys) + 0.1 * rng.standard_normal((bands, SIZE, SIZE))
    return (low + (high - low) * np.clip(base, 0.0, 1.0)).astype(np.float64)


def write_tif(
    path: Path,
    data: np.ndarray,
    *,
    descriptions: Sequence[str] = (),
    nodata: float | None = None,
    tags: Mapping[str, str] | None = None,
    band_tags: Sequence[Mapping[str, str]] = (),
    units: Sequence[str] = (),
    scales: Sequence[float] = (),
    offsets: Sequence[float] = (),
) -> Path:
    profile = {
        "driver": "GTiff",
        "height": data.shape[1],
        "width": data.shape[2],
        "count": data.shape[0],
        "dtype": data.dtype.name,
        "crs": "EPSG:32633",
        "transform": from_origin(500_000, 4_600_000, 30, 30),
        "nodata": nodata,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for index, name in enumerate(descriptions, start=1):
            dst.set_band_description(index, name)
        for index, unit in enumerate(units, start=1):
            dst.set_band_unit(index, unit)
        if scales:
            dst.scales = tuple(scales)
        if offsets:
            dst.offsets = tuple(offsets)
        if tags:
            dst.update_tags(**tags)
        for index, values in enumerate(band_tags, start=1):
            dst.update_tags(index, **values)
    return path


# ------------------------------------------------------------------------------------------------ Landsat L1
def test_landsat_l1_oli_dn_become_toa_reflectance_with_the_sun_elevation(tmp_path: Path) -> None:
    reflectance = _ground(1, 4, 0.03, 0.45)
    dn = np.rint((reflectance * np.sin(np.radians(SUN_ELEVATION)) + 0.1) / 2e-5).astype(np.uint16)
    dn[:, :3, :] = 0  # the fill value of Level-1 products, along the scene edge
    path = write_tif(tmp_path / "LC08_L1TP_B2345.TIF", dn, descriptions=["B2", "B3", "B4", "B5"], nodata=0)
    result = read_chip(
        path,
        "multispectral",
        bands=["B2", "B3", "B4", "B5"],
        extra_tags=parse_mtl(LANDSAT_L1_MTL),
        product_level="L1TP",
    )
    assert result.unit == "reflectance"
    assert [c.kind for c in result.conversions] == ["toa_reflectance"] * 4
    assert result.warnings == ()
    valid = np.isfinite(result.values)
    assert not valid[:, :3, :].any() and valid[:, 3:, :].all()
    assert result.nodata_fraction == pytest.approx(3 / SIZE)
    np.testing.assert_allclose(result.values[:, 3:], reflectance[:, 3:], atol=1e-4)
    # What the processor used to do with these DN: read them as reflectance × 10 000 (all near 1, saturated).
    assert float(np.median(dn[:, 3:] / 10_000)) > 0.5


def test_landsat_l1_sun_elevation_from_the_files_own_tags(tmp_path: Path) -> None:
    reflectance = _ground(2, 3, 0.05, 0.30)
    dn = np.rint((reflectance * np.sin(np.radians(30.0)) + 0.1) / 2e-5).astype(np.uint16)
    tags = {"SUN_ELEVATION": "30.0", "PROCESSING_LEVEL": "L1TP"}
    band_tags = [
        {f"REFLECTANCE_MULT_BAND_{b}": "2.0E-05", f"REFLECTANCE_ADD_BAND_{b}": "-0.1"} for b in "432"
    ]
    path = write_tif(
        tmp_path / "rgb.tif", dn, descriptions=["B4", "B3", "B2"], tags=tags, band_tags=band_tags
    )
    result = read_chip(path, "optical", bands=["red", "green", "blue"])
    assert [c.kind for c in result.conversions] == ["toa_reflectance"] * 3
    assert result.conversions[0].sun_elevation_deg == 30.0
    # Optical model units are the training data's square-root display stretch of reflectance.
    np.testing.assert_allclose(result.values, np.sqrt(reflectance), atol=2e-4)


def test_landsat_l1_without_sun_elevation_warns(tmp_path: Path) -> None:
    mtl = {k: v for k, v in parse_mtl(LANDSAT_L1_MTL).items() if k != "SUN_ELEVATION"}
    meta = BandMeta(name="B4", dtype="uint16", tags=mtl)
    conversion = conversion_for(meta, "multispectral", "L1TP")
    assert conversion.kind == "toa_reflectance" and conversion.sun_elevation_deg is None
    assert conversion.warning is not None and "sun elevation" in conversion.warning


def test_landsat_l1_tirs_dn_become_brightness_temperature(tmp_path: Path) -> None:
    kelvin = _ground(3, 1, 283.0, 300.0)
    radiance = 774.8853 / (np.exp(1321.0789 / kelvin) - 1.0)
    dn = np.rint((radiance - 0.1) / 3.342e-4).astype(np.uint16)
    path = write_tif(tmp_path / "LC08_L1TP_B10.TIF", dn, descriptions=["B10"], nodata=0)
    result = read_chip(
        path, "infrared", bands=["tir"], extra_tags=parse_mtl(LANDSAT_L1_MTL), product_level="L1TP"
    )
    # ``bands`` renames to the processor's name; the sensor band number still comes from the description.
    assert result.conversions[0].kind == "thermal_radiance"
    assert result.unit == "kelvin"
    np.testing.assert_allclose(result.values, kelvin, atol=0.05)
    # The old reading (kelvin × 100) put ground near 288 K at about 236 K.
    assert float(np.median(dn)) / 100 < 250.0


def test_mtl_json_and_text_agree() -> None:
    text = parse_mtl(LANDSAT_L1_MTL)
    document = {
        "LANDSAT_METADATA_FILE": {
            "IMAGE_ATTRIBUTES": {"SUN_ELEVATION": "41.37659839"},
            "LEVEL1_THERMAL_CONSTANTS": {"K1_CONSTANT_BAND_10": "774.8853"},
        }
    }
    from_json = parse_mtl(json.dumps(document))
    assert from_json["SUN_ELEVATION"] == text["SUN_ELEVATION"]
    assert from_json["K1_CONSTANT_BAND_10"] == text["K1_CONSTANT_BAND_10"]
    assert text["PROCESSING_LEVEL"] == "L1TP"
    with pytest.raises(ValueError, match="not a Landsat MTL"):
        parse_mtl("just some text")


# ------------------------------------------------------------------------------------------------ Landsat L2
def test_landsat_l2_surface_reflectance_and_temperature(tmp_path: Path) -> None:
    reflectance = _ground(4, 4, 0.02, 0.40)
    sr = np.rint((reflectance + 0.2) / 2.75e-5).astype(np.uint16)
    sr_path = write_tif(
        tmp_path / "LC08_L2SP_SR.TIF", sr, descriptions=["SR_B2", "SR_B3", "SR_B4", "SR_B5"], nodata=0
    )
    result = read_chip(sr_path, "multispectral", bands=["blue", "green", "red", "nir"], product_level="L2SP")
    np.testing.assert_allclose(result.values, reflectance, atol=3e-5)

    kelvin = _ground(5, 1, 270.0, 320.0)
    st = np.rint((kelvin - 149.0) / 0.00341802).astype(np.uint16)
    st_path = write_tif(tmp_path / "LC08_L2SP_ST_B10.TIF", st, descriptions=["ST_B10"], nodata=0)
    thermal = read_chip(st_path, "infrared", bands=["tir"], product_level="L2SP")
    assert thermal.unit == "kelvin"
    np.testing.assert_allclose(thermal.values, kelvin, atol=2e-3)


def test_declared_scale_and_offset_win(tmp_path: Path) -> None:
    reflectance = _ground(6, 4, 0.02, 0.40)
    sr = np.rint((reflectance + 0.2) / 2.75e-5).astype(np.uint16)
    path = write_tif(
        tmp_path / "sr_cog.tif", sr, scales=[2.75e-5] * 4, offsets=[-0.2] * 4, units=["reflectance"] * 4
    )
    result = read_chip(path, "multispectral", bands=["blue", "green", "red", "nir"])
    assert result.warnings == ()
    np.testing.assert_allclose(result.values, reflectance, atol=3e-5)


# ------------------------------------------------------------------------------------------------ Sentinel-2
@pytest.mark.parametrize(
    ("level", "baseline", "offset_tag", "offset"),
    [
        ("L2A", "05.09", None, -1000.0),  # from the processing baseline
        ("L2A", "03.01", None, 0.0),  # before baseline 04.00 there was no offset
        ("L2A", "04.00", "BOA_ADD_OFFSET", -1000.0),
        ("L1C", "04.00", "RADIO_ADD_OFFSET", -1000.0),
        ("S2MSI1C", "02.09", None, 0.0),
    ],
)
def test_sentinel2_quantification_and_baseline_offset(
    tmp_path: Path, level: str, baseline: str, offset_tag: str | None, offset: float
) -> None:
    reflectance = _ground(7, 4, 0.01, 0.50)
    dn = np.rint(reflectance * 10_000 - offset).astype(np.uint16)
    tags = {
        "PROCESSING_BASELINE": baseline,
        "QUANTIFICATION_VALUE": "10000",
        "SPACECRAFT_NAME": "Sentinel-2B",
    }
    band_tags = [{offset_tag: str(int(offset))} for _ in range(4)] if offset_tag else []
    names = ["B02", "B03", "B04", "B08"]
    path = write_tif(tmp_path / "s2.tif", dn, descriptions=names, nodata=0, tags=tags, band_tags=band_tags)
    result = read_chip(path, "multispectral", product_level=level)
    assert result.warnings == ()
    np.testing.assert_allclose(result.values, reflectance, atol=1e-4)


def test_sentinel2_without_baseline_assumes_the_current_offset_and_warns() -> None:
    conversion = conversion_for(BandMeta(name="B04", dtype="uint16"), "multispectral", "L2A")
    assert conversion.bias == pytest.approx(-0.1)
    assert conversion.warning is not None and "baseline" in conversion.warning


def test_sentinel2_from_a_stac_item() -> None:
    # Cloud-optimised copies (e.g. Earth Search) declare the offset on the asset's raster:bands.
    metas = band_metas_from_stac(
        [{"nodata": 0, "data_type": "uint16", "scale": 0.0001, "offset": -0.1}],
        names=["B04"],
        properties={"s2:processing_baseline": "05.10", "platform": "sentinel-2a"},
    )
    dn = np.array([[[1000, 1500], [2200, 0]]], dtype=np.uint16)
    result = to_model_units(np.tile(dn, (1, 16, 16)), "multispectral", metas, "L2A")
    np.testing.assert_allclose(result.values[0, :2, :2], [[0.0, 0.05], [0.12, np.nan]], atol=1e-6)
    assert result.nodata_fraction == pytest.approx(0.25)


# ------------------------------------------------------------------------------------------------ optical
def test_uint8_display_and_uint16_reflectance_of_the_same_ground_agree(tmp_path: Path) -> None:
    reflectance = _ground(8, 3, 0.02, 0.60)
    display8 = np.rint(255.0 * np.sqrt(reflectance)).astype(np.uint8)  # the training data's 8-bit stretch
    linear16 = np.rint(10_000.0 * reflectance).astype(np.uint16)  # 16-bit linear reflectance (L2 convention)
    a = read_chip(
        write_tif(tmp_path / "rgb8.tif", display8, units=["display"] * 3),
        "optical",
        bands=["red", "green", "blue"],
    )
    b = read_chip(
        write_tif(tmp_path / "rgb16.tif", linear16, scales=[1e-4] * 3, units=["reflectance"] * 3),
        "optical",
        bands=["red", "green", "blue"],
    )
    assert a.unit == b.unit == "display"
    difference = np.abs(a.values - b.values)
    # Within the 8-bit quantisation (0.5 / 255 in display units, 0.009 of the processor's optical std 0.224).
    assert float(difference.max()) < 0.004
    assert float(difference.mean()) < 0.002
    # Read as the processor reads raw integers (uint8 / 255, uint16 / 10 000), the same ground lands far apart.
    assert float(np.abs(display8 / 255.0 - linear16 / 10_000.0).mean()) > 0.15


def test_undeclared_uint8_optical_is_taken_as_the_training_stretch_with_a_warning() -> None:
    conversion = conversion_for(BandMeta(name="red", dtype="uint8"), "optical")
    assert conversion.kind == "display" and conversion.warning is not None


def test_float_reflectance(tmp_path: Path) -> None:
    reflectance = _ground(9, 4, 0.0, 0.8).astype(np.float32)
    path = write_tif(tmp_path / "refl.tif", reflectance, units=["reflectance"] * 4)
    result = read_chip(path, "multispectral", bands=["blue", "green", "red", "nir"])
    assert result.warnings == ()
    np.testing.assert_allclose(result.values, reflectance, atol=1e-6)


def test_unknown_optical_units_are_normalised_per_chip_with_a_warning(tmp_path: Path) -> None:
    counts = np.rint(_ground(10, 3, 3000.0, 21000.0)).astype(np.uint16)
    result = read_chip(write_tif(tmp_path / "dn.tif", counts), "optical", bands=["red", "green", "blue"])
    assert result.conversions[0].kind == "robust"
    assert result.warnings and "unknown" in result.warnings[0]
    assert 0.0 <= float(result.values.min()) and float(result.values.max()) <= 1.0
    assert float(result.values.std()) > 0.05  # contrast kept, nothing saturated
    # Bands are stretched together: their order of brightness survives.
    means = counts.reshape(3, -1).mean(axis=1)
    assert list(np.argsort(result.values.reshape(3, -1).mean(axis=1))) == list(np.argsort(means))


# ------------------------------------------------------------------------------------------------ SAR
def test_sar_amplitude_intensity_and_db_agree(tmp_path: Path) -> None:
    sigma0_db = _ground(11, 2, -25.0, -5.0)
    intensity = (10.0 ** (sigma0_db / 10.0)).astype(np.float32)
    amplitude = np.sqrt(intensity).astype(np.float32)
    for name, data, unit in (
        ("amp", amplitude, "amplitude"),
        ("int", intensity, "intensity"),
        ("db", sigma0_db.astype(np.float32), "dB"),
    ):
        result = read_chip(
            write_tif(tmp_path / f"{name}.tif", data, units=[unit] * 2), "sar", bands=["vv", "vh"]
        )
        assert result.unit == "db" and result.warnings == ()
        assert result.processor_kwargs()["sar_scale"] == "db"
        np.testing.assert_allclose(result.values, sigma0_db, atol=1e-3)


def test_uncalibrated_sar_dn_keep_their_contrast_with_a_warning(tmp_path: Path) -> None:
    # Sentinel-1 GRD-like amplitude DN: medians around 50–120, the case that used to clip to a constant image.
    rng = np.random.default_rng(12)
    sigma0_db = _ground(12, 1, -20.0, -6.0)
    speckle = rng.gamma(4.0, 1 / 4.0, size=sigma0_db.shape)
    dn = np.rint(np.sqrt(10 ** (sigma0_db / 10) * speckle) * 400.0).astype(np.uint16)
    assert 40 <= float(np.median(dn)) <= 150
    result = read_chip(
        write_tif(tmp_path / "grd.tif", dn, nodata=0), "sar", bands=["vv"], product_level="GRD"
    )
    assert result.conversions[0].kind == "robust"
    assert any("uncalibrated" in w for w in result.warnings)
    values = result.values[np.isfinite(result.values)]
    assert float(np.median(values)) == pytest.approx(-12.0, abs=1e-3)
    # The contrast in dB is exactly the data's: only the unknown calibration constant is replaced.
    expected = 20 * np.log10(dn[dn > 0].astype(np.float64))
    assert float(values.std()) == pytest.approx(float(expected.std()), rel=1e-4)
    assert float(values.std()) > 1.0


def test_sar_dn_with_a_calibration_constant_are_calibrated(tmp_path: Path) -> None:
    sigma0_db = _ground(13, 1, -22.0, -4.0)
    dn = np.rint(np.sqrt(10 ** (sigma0_db / 10)) * 600.0).astype(np.uint16)
    path = write_tif(tmp_path / "cal.tif", dn, tags={"CALIBRATION_CONSTANT": "600"})
    result = read_chip(path, "sar", bands=["vv"], product_level="GRD")
    assert result.warnings == ()
    np.testing.assert_allclose(result.values, sigma0_db, atol=0.2)


def test_undeclared_float_sar_is_decided_from_its_values() -> None:
    sigma0_db = _ground(14, 1, -22.0, -4.0).astype(np.float32)
    meta = [BandMeta(name="vv", dtype="float32")]
    as_amplitude = to_model_units(np.sqrt(10 ** (sigma0_db / 10)), "sar", meta)
    np.testing.assert_allclose(as_amplitude.values, sigma0_db, atol=1e-3)
    assert any("amplitude" in w for w in as_amplitude.warnings)
    as_db = to_model_units(sigma0_db, "sar", meta)
    np.testing.assert_allclose(as_db.values, sigma0_db, atol=1e-6)
    uncalibrated = to_model_units(np.sqrt(10 ** (sigma0_db / 10)) * 500.0, "sar", meta)
    assert float(np.median(uncalibrated.values)) == pytest.approx(-12.0, abs=1e-3)


# ------------------------------------------------------------------------------------------------ thermal
def test_thermal_kelvin_and_celsius(tmp_path: Path) -> None:
    kelvin = _ground(15, 1, 280.0, 310.0).astype(np.float32)
    as_k = read_chip(write_tif(tmp_path / "k.tif", kelvin, units=["K"]), "infrared", bands=["tir"])
    as_c = read_chip(
        write_tif(tmp_path / "c.tif", (kelvin - 273.15).astype(np.float32), units=["degC"]),
        "infrared",
        bands=["tir"],
    )
    for result in (as_k, as_c):
        assert result.unit == "kelvin" and result.warnings == ()
        np.testing.assert_allclose(result.values, kelvin, atol=1e-3)


def test_thermal_radiance_with_k1_k2(tmp_path: Path) -> None:
    kelvin = _ground(16, 1, 285.0, 305.0)
    radiance = (774.8853 / (np.exp(1321.0789 / kelvin) - 1.0)).astype(np.float32)
    tags = {"K1_CONSTANT": "774.8853", "K2_CONSTANT": "1321.0789"}
    path = write_tif(tmp_path / "rad.tif", radiance, units=["W/(m2 sr um)"], tags=tags)
    result = read_chip(path, "infrared", bands=["tir"])
    np.testing.assert_allclose(result.values, kelvin, atol=1e-3)


def test_unknown_thermal_units_keep_relative_contrast_only(tmp_path: Path) -> None:
    counts = np.rint(_ground(17, 1, 20000.0, 26000.0)).astype(np.uint16)
    result = read_chip(write_tif(tmp_path / "tirs_dn.tif", counts), "infrared", bands=["tir"])
    assert result.unit == "relative"
    assert any("relative" in w for w in result.warnings)
    values = result.values
    assert RELATIVE_THERMAL_BASE <= float(values.min()) and float(values.max()) <= 2 * RELATIVE_THERMAL_BASE
    assert np.corrcoef(values.ravel(), counts.ravel())[0, 1] > 0.99


# ------------------------------------------------------------------------------------------------ the project's own chips
def test_the_generators_chips_are_recognised_by_their_tag(tmp_path: Path) -> None:
    tags = {"generator": "earthgptx-synthetic 1.0", "modality": "infrared"}
    kelvin = _ground(18, 1, 285.0, 300.0)
    path = write_tif(tmp_path / "synthetic_ir.tif", np.rint(kelvin * 100).astype(np.uint16), tags=tags)
    result = read_chip(path, "infrared", bands=["tir"])
    assert result.warnings == ()
    np.testing.assert_allclose(result.values, kelvin, atol=0.01)


# ------------------------------------------------------------------------------------------------ the table
@pytest.mark.parametrize(
    ("meta", "modality", "level", "kind"),
    [
        (BandMeta(name="SR_B4", dtype="uint16"), "multispectral", "L2SP", "reflectance"),
        (BandMeta(name="ST_B10", dtype="uint16"), "infrared", "L2SP", "temperature"),
        (
            BandMeta(name="B04", dtype="uint16", tags={"PROCESSING_BASELINE": "05.00"}),
            "optical",
            "L1C",
            "reflectance",
        ),
        (BandMeta(name="B4", dtype="uint16"), "optical", "L1TP", "robust"),  # Landsat L1 without its MTL
        (BandMeta(name="vv", dtype="uint16"), "sar", "GRD", "robust"),
        (BandMeta(name="vv", dtype="float32", unit="dB"), "sar", None, "sar"),
        (BandMeta(name="vv", dtype="float32"), "sar", None, "sar_undeclared"),
        (BandMeta(name="tir", dtype="float32", unit="celsius"), "infrared", None, "temperature"),
        (BandMeta(name="tir", dtype="uint16"), "infrared", None, "robust"),
        (BandMeta(name="red", dtype="uint8"), "optical", None, "display"),
        (BandMeta(name="red", dtype="uint16"), "optical", None, "robust"),
    ],
)
def test_conversion_for(meta: BandMeta, modality: str, level: str | None, kind: str) -> None:
    assert conversion_for(meta, modality, level).kind == kind


def test_product_levels_are_normalised() -> None:
    assert [normalise_product_level(x) for x in ("L1TP", "L2SP", "Level-1C", "S2MSI2A", "grd", None)] == [
        "L1",
        "L2",
        "L1C",
        "L2A",
        "GRD",
        None,
    ]


def test_unknown_modality_and_all_nodata_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown modality"):
        conversion_for(BandMeta(), "lidar")
    with pytest.raises(EmptyChipError):
        to_model_units(
            np.zeros((1, SIZE, SIZE), np.uint16), "sar", [BandMeta(name="vv", nodata=0, dtype="uint16")]
        )


def test_band_records_from_ingest_map_to_conversions() -> None:
    # As earthgptx.scenes stores a band (BandInfo.to_json) with the scene's dtype and dataset tags.
    stored = {
        "index": 1,
        "name": "red",
        "canonical": "red",
        "description": "B4",
        "unit": None,
        "scale": 1.0,
        "offset": 0.0,
        "nodata": 0.0,
        "colorinterp": "gray",
        "tags": {},
    }
    meta = band_meta_from_ingest(stored, parse_mtl(LANDSAT_L1_MTL), dtype="uint16")
    assert meta.sensor_band == "4" and meta.nodata == 0.0
    conversion = conversion_for(meta, "optical", "L1TP")
    assert conversion.kind == "toa_reflectance" and conversion.sun_elevation_deg == pytest.approx(
        SUN_ELEVATION
    )
    nan_nodata = band_meta_from_ingest({**stored, "nodata": "nan", "unit": "K"}, dtype="float32")
    assert nan_nodata.nodata is not None and np.isnan(nan_nodata.nodata)
    assert conversion_for(nan_nodata, "infrared").kind == "temperature"


def test_landsat_bands_named_only_by_the_processors_names() -> None:
    mtl = parse_mtl(LANDSAT_L1_MTL)
    red = conversion_for(BandMeta(name="red", dtype="uint16", tags=mtl), "optical", "L1TP")
    assert red.kind == "toa_reflectance" and red.gain == pytest.approx(2e-5)
    tir = conversion_for(BandMeta(name="tir", dtype="uint16", tags=mtl), "infrared", "L1TP")
    assert tir.kind == "thermal_radiance" and tir.k1 == pytest.approx(774.8853)


def test_complex_sar_is_refused_by_its_metadata_and_its_pixels() -> None:
    with pytest.raises(ComplexBandError):
        conversion_for(BandMeta(name="vv", dtype="complex64"), "sar", "SLC")
    slc = np.ones((1, SIZE, SIZE), dtype=np.complex64)
    with pytest.raises(ComplexBandError):
        to_model_units(slc, "sar", [BandMeta(name="vv", dtype="complex64")])
