"""The out-of-distribution renderer: its own shapes and drawing code, the generator's vocabulary, units and record
format, exact ground truth, and held-out records the existing record code validates."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from shapely.geometry import Polygon

from earthgptx.data import ood_render
from earthgptx.data.ood_render import (
    OOD_GENERATOR,
    OOD_SOURCE,
    ensure_ood_dataset,
    generate_ood_dataset,
    make_ood_scene,
    ood_outline,
    render_ood,
)
from earthgptx.data.raster_io import read_mask_png
from earthgptx.data.record_format import load_records, validate_record
from earthgptx.data.scene import object_outline
from earthgptx.data.vocabulary import ALLOWED_COVERS, BANDS, LAND_COVERS, SIZE_RANGES_PX
from earthgptx.formats import MODALITIES

SCENES = [make_ood_scene(np.random.default_rng([5, i]), f"ood{i}") for i in range(12)]


def test_the_renderer_shares_no_drawing_code_with_the_generator() -> None:
    tree = ast.parse(Path(ood_render.__file__).read_text(encoding="utf-8"))
    imported = {
        (node.module, alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
        for alias in node.names
    }
    assert not any(module == "earthgptx.data.render" for module, _ in imported)
    # From scene.py only the data classes that the record code reads.
    assert {name for module, name in imported if module == "earthgptx.data.scene"} == {
        "Scene",
        "SceneConditions",
        "SceneObject",
    }


@pytest.mark.parametrize("cls", ["ship", "airplane", "vehicle", "building"])
def test_its_shapes_differ_from_the_generators(cls: str) -> None:
    ours = ood_outline(cls, 30.0, 0.0, (64.0, 64.0))
    theirs = object_outline(cls, 30.0, 0.0, (64.0, 64.0))
    assert isinstance(ours, Polygon) and ours.is_valid
    overlap = ours.intersection(theirs).area / ours.union(theirs).area
    assert overlap < 0.85, f"{cls}: IoU {overlap:.2f} with the generator's shape"


def test_buildings_come_in_three_plans() -> None:
    areas = {round(ood_outline("building", 30.0, 0.0, (64.0, 64.0), variant=v).area) for v in range(3)}
    assert len(areas) == 3


def test_ground_truth_is_exact_and_objects_stand_on_their_cover() -> None:
    for scene in SCENES:
        assert 1 <= len(scene.objects) <= 6
        shares = np.bincount(scene.cover_map.ravel(), minlength=4) / scene.cover_map.size
        assert LAND_COVERS[int(shares.argmax())] == scene.cover and shares.max() >= 0.7
        occupied = np.zeros_like(scene.cover_map, dtype=bool)
        for obj in scene.objects:
            rows, cols = np.nonzero(obj.mask)
            assert obj.area_px == rows.size and not (occupied & obj.mask).any()
            occupied |= obj.mask
            assert obj.bbox_px == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
            assert obj.centroid_px == pytest.approx((cols.mean() + 0.5, rows.mean() + 0.5))
            allowed = [LAND_COVERS.index(c) for c in ALLOWED_COVERS[obj.cls]]
            assert np.isin(scene.cover_map[obj.mask], allowed).mean() >= 0.97
            low, high = SIZE_RANGES_PX[obj.size]
            assert low <= obj.length_px <= high


def test_pixels_have_the_generators_units_and_show_the_objects() -> None:
    scene = next(s for s in SCENES if any(o.temperature == "warm" for o in s.objects))
    expected = {"optical": np.uint8, "multispectral": np.uint16, "sar": np.float32, "infrared": np.uint16}
    images = {}
    for modality in MODALITIES:
        image, bands = render_ood(scene, modality, np.random.default_rng(0))
        assert image.dtype == expected[modality] and image.shape[1:] == (128, 128)
        if modality != "sar":
            assert bands == BANDS[modality]
        images[modality] = image
    background = scene.instance_map == 0
    sar = images["sar"][0]
    kelvin = images["infrared"][0] / 100.0
    assert 150 < float(np.median(kelvin)) < 400
    for obj in scene.objects:
        # Hard targets are brighter than the median background in SAR.
        assert float(np.median(sar[obj.mask])) > float(np.median(sar[background]))
        if obj.temperature == "warm":
            ring = np.zeros_like(obj.mask)
            rows, cols = np.nonzero(obj.mask)
            ring[max(rows.min() - 3, 0) : rows.max() + 4, max(cols.min() - 3, 0) : cols.max() + 4] = True
            ring &= background
            assert float(kelvin[obj.mask].mean()) > float(np.median(kelvin[ring]))
    with pytest.raises(ValueError, match="unknown modality"):
        render_ood(scene, "lidar", np.random.default_rng(0))


def test_held_out_records_in_the_generators_format(tmp_path: Path) -> None:
    path = generate_ood_dataset(
        tmp_path / "ood", 3, seed=7, progress=False, modalities=["optical", "infrared"]
    )
    records = load_records(path)
    assert records
    for record in records:
        validate_record(record)
        assert record["split"] == "test" and record["source"] == OOD_SOURCE
    assert {r["modality"] for r in records} == {"optical", "infrared"}
    assert {r["task"] for r in records} >= {
        "scene_classification",
        "region_classification",
        "counting",
        "grounding",
    }
    with rasterio.open(path.parent / records[0]["image"]) as src:
        assert src.tags()["generator"] == OOD_GENERATOR
    pixel = next(r for r in records if r["task"] == "pixel_grounding")
    assert read_mask_png(path.parent / pixel["mask"]).any()
    meta = json.loads((path.parent / "dataset.json").read_text())
    assert meta["renderer"] == OOD_GENERATOR and meta["counts"]["records"] == len(records)


def test_generation_is_deterministic_and_reused(tmp_path: Path) -> None:
    a = generate_ood_dataset(tmp_path / "a", 2, seed=3, progress=False, modalities=["sar"])
    b = generate_ood_dataset(tmp_path / "b", 2, seed=3, progress=False, modalities=["sar"])
    assert a.read_text() == b.read_text().replace(str(tmp_path / "b"), str(tmp_path / "a"))
    full = ensure_ood_dataset(tmp_path / "full", 1, seed=3)
    stamp = full.stat().st_mtime_ns
    assert ensure_ood_dataset(tmp_path / "full", 1, seed=3).stat().st_mtime_ns == stamp
