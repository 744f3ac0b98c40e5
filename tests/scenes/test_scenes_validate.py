"""The validation rules of issue 22, each with its reason; good scenes of every modality pass; GCP files are
rectified; COGs are valid; STAC items carry the extensions; footprints split at the antimeridian."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from kits.scene_files import (
    ORIGIN,
    baseline_tiff_header,
    gcp_scene,
    generated_scene,
    truncated_scene,
    write_raster,
)
from rasterio.crs import CRS
from rio_cogeo.cogeo import cog_validate
from shapely.geometry import MultiPolygon, Polygon

from earthgptx.geo.outline import scene_outline
from earthgptx.scenes import SceneMetadata, SceneRejected, inspect_scene, parse_sidecar
from earthgptx.scenes.cog import write_cog
from earthgptx.scenes.stac import scene_stac_item
from earthgptx.scenes.validate import open_rectified

RGB = SceneMetadata(modality="optical", bands=("red", "green", "blue"))


def _rejected(path: Path, metadata: SceneMetadata = RGB) -> SceneRejected:
    with pytest.raises(SceneRejected) as caught:
        inspect_scene(path, metadata)
    assert caught.value.reason
    assert str(path.parent) not in caught.value.reason  # the server's paths never reach a client
    return caught.value


@pytest.mark.parametrize("modality", ["optical", "multispectral", "sar", "infrared"])
def test_generated_scenes_pass_and_become_valid_cogs_with_stac(tmp_path: Path, modality: str) -> None:
    path, bands = generated_scene(tmp_path, modality)
    scene = inspect_scene(path, SceneMetadata(modality=modality))  # band names from the file's descriptions
    assert scene.bands == bands and scene.georeference == "transform"
    assert [b.name for b in scene.band_info] == list(bands)
    cog = tmp_path / "cog.tif"
    with rasterio.open(path) as src:
        write_cog(src, cog)
    assert cog_validate(str(cog), quiet=True)[0]
    footprint = scene_outline(Affine(*scene.transform), scene.crs, scene.width, scene.height)
    item = scene_stac_item(str(cog), scene, scene_id="s1", footprint=footprint, asset_href="s3://b/k", source="t")
    extensions = " ".join(item["stac_extensions"])
    assert "projection" in extensions and "raster" in extensions
    assert ("sar" in extensions) == (modality == "sar")
    assert ("/eo/" in extensions) == (modality != "sar")
    assert item["properties"]["earthgptx:modality"] == modality
    assert len(item["assets"]["data"]["raster:bands"]) == len(bands)
    json.dumps(item)  # JSON-safe


def test_large_scene_cog_is_tiled_with_overviews(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    path = write_raster(tmp_path / "big.tif", rng.integers(0, 3000, (4, 1500, 1200), dtype=np.uint16))
    cog = tmp_path / "cog.tif"
    with rasterio.open(path) as src:
        write_cog(src, cog)
    with rasterio.open(cog) as out:
        assert out.block_shapes[0] == (512, 512)
        assert out.overviews(1) == [2, 4]
        assert out.compression is not None
        assert (out.read(2, window=((100, 110), (200, 210))) == rasterio.open(path).read(2, window=((100, 110), (200, 210)))).all()


def test_not_a_tiff(tmp_path: Path) -> None:
    path = tmp_path / "photo.tif"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 200)
    assert _rejected(path).kind == "not_geotiff"


def test_a_png_is_not_a_geotiff(tmp_path: Path) -> None:
    path = tmp_path / "image.png"
    with rasterio.open(path, "w", driver="PNG", width=64, height=64, count=1, dtype="uint8") as dst:
        dst.write(np.ones((1, 64, 64), np.uint8))
    error = _rejected(path)
    assert error.kind == "not_geotiff" and "PNG" in error.reason


def test_truncated_tiff(tmp_path: Path) -> None:
    path = truncated_scene(tmp_path)  # header intact, the last 40 % of the pixel data missing
    assert "truncated file" in _rejected(path).reason


def test_unreadable_pixels_are_refused_when_the_cog_is_written(tmp_path: Path) -> None:
    # Complete in length, but a block in the middle overwritten: only decoding finds it.
    truncated_scene(tmp_path)  # also leaves the complete file, laid_out.tif
    laid_out = tmp_path / "laid_out.tif"
    with rasterio.open(laid_out) as src:
        offset = int(src.get_tag_item("BLOCK_OFFSET_2_2", "TIFF", bidx=1))
    whole = laid_out.read_bytes()
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(whole[:offset] + b"\xff" * 64 + whole[offset + 64 :])
    scene = inspect_scene(corrupt, RGB)  # the first block decodes
    with rasterio.open(corrupt) as src, pytest.raises(SceneRejected, match="truncated or corrupt"):
        with open_rectified(src, scene.georeference) as grid:
            write_cog(grid, tmp_path / "cog.tif")


def test_tiff_cut_inside_its_header(tmp_path: Path) -> None:
    whole = write_raster(tmp_path / "w.tif", np.ones((3, 64, 64), np.uint8))
    cut = tmp_path / "cut.tif"
    cut.write_bytes(whole.read_bytes()[:300])
    assert "truncated" in _rejected(cut).reason


def test_no_georeference(tmp_path: Path) -> None:
    path = write_raster(tmp_path / "plain.tif", np.ones((3, 64, 64), np.uint8), crs=None)
    assert "no georeference" in _rejected(path).reason


def test_crs_with_identity_transform(tmp_path: Path) -> None:
    path = write_raster(tmp_path / "identity.tif", np.ones((3, 64, 64), np.uint8), transform=Affine.identity())
    assert "identity transform" in _rejected(path).reason


@pytest.mark.parametrize(("width", "height"), [(0, 0), (2_000_000, 2_000_000)])
def test_headers_of_impossible_sizes(tmp_path: Path, width: int, height: int) -> None:
    path = baseline_tiff_header(tmp_path / f"{width}.tif", width, height)
    reason = _rejected(path).reason
    if width:
        assert "2000000 x 2000000 px" in reason


def test_one_by_one(tmp_path: Path) -> None:
    path = write_raster(tmp_path / "dot.tif", np.ones((3, 1, 1), np.uint8))
    assert "1 x 1 px" in _rejected(path).reason


def test_nan_only_band(tmp_path: Path) -> None:
    data = np.random.default_rng(0).random((2, 64, 64)).astype(np.float32)
    data[1] = np.nan
    path = write_raster(tmp_path / "nan.tif", data)
    assert "band(s) 2 hold no valid pixel" in _rejected(path, SceneMetadata(modality="sar", bands=("VV", "VH"))).reason


def test_nodata_only_band(tmp_path: Path) -> None:
    data = np.zeros((1, 64, 64), np.uint16)
    path = write_raster(tmp_path / "empty.tif", data, nodata=0)
    assert "no valid pixel" in _rejected(path, SceneMetadata(modality="infrared", bands=("tir",))).reason


def test_fourteen_bands(tmp_path: Path) -> None:
    path = write_raster(tmp_path / "b14.tif", np.ones((14, 64, 64), np.uint16))
    assert "14 bands" in _rejected(path, SceneMetadata(modality="multispectral")).reason


def test_dtype_not_accepted(tmp_path: Path) -> None:
    path = write_raster(tmp_path / "f64.tif", np.ones((3, 64, 64), np.float64))
    assert "float64" in _rejected(path).reason


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        (SceneMetadata(modality="optical", bands=("red", "green", "nir")), "unknown optical band 'nir'"),
        (SceneMetadata(modality="sar", bands=("VV", "HH", "VH")), "needs 1 to 2 bands"),
        (SceneMetadata(modality="lidar", bands=("z", "i", "r")), "unknown modality 'lidar'"),
        (SceneMetadata(bands=("red", "green", "blue")), "no modality"),
        (SceneMetadata(modality="optical"), "no band names"),
        (SceneMetadata(modality="multispectral", bands=("B02", "B03", "B04", "B08")), "4 band names were given for a raster of 3"),
    ],
)
def test_band_names_and_modality(tmp_path: Path, metadata: SceneMetadata, expected: str) -> None:
    path = write_raster(tmp_path / "rgb.tif", np.ones((3, 64, 64), np.uint8))
    assert expected in _rejected(path, metadata).reason


def test_modality_from_the_file_tags(tmp_path: Path) -> None:
    path = write_raster(tmp_path / "tagged.tif", np.ones((1, 64, 64), np.uint16), descriptions=("tir",))
    with rasterio.open(path, "r+") as dst:
        dst.update_tags(modality="infrared", PROCESSING_LEVEL="L1TP")
    scene = inspect_scene(path, SceneMetadata())
    assert scene.modality == "infrared" and scene.metadata.product_level == "L1TP"
    # The request wins over the file.
    assert inspect_scene(path, SceneMetadata(product_level="L2SP")).metadata.product_level == "L2SP"


def test_band_radiometry_is_recorded(tmp_path: Path) -> None:
    path = write_raster(tmp_path / "scaled.tif", np.full((1, 64, 64), 300, np.uint16), nodata=0)
    with rasterio.open(path, "r+") as dst:
        dst.scales, dst.offsets, dst.units = (0.01,), (-10.0,), ("K",)
    info = inspect_scene(path, SceneMetadata(modality="infrared", bands=("tir",))).band_info[0]
    assert (info.scale, info.offset, info.unit, info.nodata, info.canonical) == (0.01, -10.0, "K", 0.0, "tir")
    assert info.to_json()["unit"] == "K"


def test_gcp_scene_is_rectified(tmp_path: Path) -> None:
    path = gcp_scene(tmp_path)
    scene = inspect_scene(path, RGB)
    assert scene.georeference == "gcps" and scene.gcp_count == 4
    assert scene.crs == "EPSG:32633"
    a, b, c, d, e, f = scene.transform
    assert (round(a, 6), round(e, 6), round(c, 3), round(f, 3)) == (10.0, -10.0, 500_000.0, 5_000_000.0)
    cog = tmp_path / "cog.tif"
    with rasterio.open(path) as src, open_rectified(src, scene.georeference) as grid:
        write_cog(grid, cog)
    with rasterio.open(cog) as out:
        assert out.crs == CRS.from_epsg(32633) and not out.gcps[0] and out.transform.almost_equals(Affine(*scene.transform))


def test_footprint_split_at_the_antimeridian() -> None:
    fiji = scene_outline(Affine(0.001, 0, 179.6, 0, -0.001, -16.5), "EPSG:4326", 800, 500)
    assert isinstance(fiji, MultiPolygon) and len(fiji.geoms) == 2
    west, east = sorted(fiji.geoms, key=lambda g: g.bounds[0])
    assert west.bounds[0] == -180.0 and east.bounds[2] == 180.0
    assert abs(fiji.area - 0.8 * 0.5) < 1e-9
    utm = scene_outline(ORIGIN, "EPSG:32633", 256, 256)
    assert isinstance(utm, Polygon) and len(utm.exterior.coords) > 5  # densified


def test_sidecar_and_metadata_parsing() -> None:
    meta = parse_sidecar(b'{"modality": "SAR", "bands": "VV, VH", "acquired_at": "2025-06-01T10:30:00Z", "orbit": 12}')
    assert meta.modality == "sar" and meta.bands == ("VV", "VH") and meta.extra == {"orbit": "12"}
    assert meta.acquired_at is not None and meta.acquired_at.utcoffset() is not None
    for bad, expected in [(b"{not json", "not readable JSON"), (b"[1, 2]", "must be a JSON object"),
                          (b'{"acquired_at": "yesterday"}', "not an ISO 8601 time"),
                          (b'{"bands": 3}', "list of band names")]:  # fmt: skip
        with pytest.raises(SceneRejected, match=expected):
            parse_sidecar(bad)


def test_writing_a_cog_leaves_gdal_a_usable_block_cache(tmp_path: Path) -> None:
    # rasterio keeps GDAL_CACHEMAX for the process: given in MB it would be read as bytes, and every later read
    # (the STAC statistics, the next scene) would take minutes.
    path, _ = generated_scene(tmp_path, "optical")
    with rasterio.open(path) as src:
        write_cog(src, tmp_path / "cog.tif", cache_mb=64)
    assert int(rasterio.env.get_gdal_config("GDAL_CACHEMAX")) >= 64 * 1024 * 1024


@pytest.mark.parametrize(
    "values",
    [{"modality": "opt\x00ical"}, {"note\x00": "x"}, {"extra": {"deep": ["a", "b\x00"]}}, {"sensor": "S2\x00"}],
)
def test_metadata_with_a_nul_character_is_refused(values: dict) -> None:
    # PostgreSQL cannot store NUL in text or JSONB: refused up front with the field named, never a 500 later.
    with pytest.raises(SceneRejected, match="NUL"):
        SceneMetadata.parse(values)
