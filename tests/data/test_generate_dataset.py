"""generate_dataset end to end: files, records, georeference, prompts, determinism, CLI."""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import shapely
from pyproj import Transformer
from rasterio import features
from shapely.geometry import Point, Polygon, box, shape

from earthgptx.data import generate_dataset, load_records, validate_record
from earthgptx.data.generate import main
from earthgptx.data.raster_io import read_mask_png
from earthgptx.data.vocabulary import BANDS, TASK_LEVELS, TASK_PROMPT_TYPES
from earthgptx.formats import MODALITIES

N_SCENES = 8


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synthetic")
    return generate_dataset(out, N_SCENES, seed=123, progress=False, records_per_task=2)


@pytest.fixture(scope="module")
def records(dataset: Path) -> list[dict[str, Any]]:
    return load_records(dataset)


@pytest.fixture(scope="module")
def scenes(dataset: Path) -> dict[str, dict[str, Any]]:
    lines = (dataset.parent / "scenes.jsonl").read_text().splitlines()
    return {s["scene_id"]: s for s in map(json.loads, lines)}


def object_polygon(scene: dict[str, Any], index: int) -> Polygon:
    return shape({"type": "Polygon", "coordinates": scene["objects"][index]["polygon"]})


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(path.relative_to(folder).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_every_record_validates_and_ids_are_unique(records: list[dict[str, Any]]) -> None:
    for record in records:
        validate_record(record)
    assert len({r["id"] for r in records}) == len(records)


def test_all_levels_tasks_modalities_and_prompt_types_occur(records: list[dict[str, Any]]) -> None:
    assert {r["task"] for r in records} == set(TASK_LEVELS)
    assert {r["level"] for r in records} == {"L1", "L2", "L3", "L4"}
    assert {r["modality"] for r in records} == set(MODALITIES)
    for task in ("region_classification", "attributes", "region_caption", "pixel_grounding"):
        seen = {r["prompt_type"] for r in records if r["task"] == task}
        assert seen == set(TASK_PROMPT_TYPES[task]), task
    assert all(len(r["prompts"]) == 2 for r in records if r["task"] == "relation")
    # Several records per scene, and every scene in all four modalities.
    per_scene = Counter(r["scene_id"] for r in records)
    assert len(per_scene) == N_SCENES and min(per_scene.values()) >= 4 * 9
    for scene_id in per_scene:
        assert {r["modality"] for r in records if r["scene_id"] == scene_id} == set(MODALITIES)


def test_human_turns_vary_and_answers_stay_short(records: list[dict[str, Any]]) -> None:
    for task in ("scene_classification", "counting", "region_classification", "attributes", "relation"):
        questions = {r["conversations"][0]["value"] for r in records if r["task"] == task}
        assert len(questions) >= 3, task
    for record in records:
        if record["task"] not in ("scene_caption", "region_caption"):
            assert len(record["conversations"][1]["value"].split()) <= 4, record["conversations"][1]["value"]


def test_images_are_geotiffs_matching_their_records(
    dataset: Path, records: list[dict[str, Any]], scenes: dict[str, dict[str, Any]]
) -> None:
    dtypes = {"optical": "uint8", "multispectral": "uint16", "sar": "float32", "infrared": "uint16"}
    checked = set()
    for record in records:
        if record["image"] in checked:
            continue
        checked.add(record["image"])
        with rasterio.open(dataset.parent / record["image"]) as src:
            assert (src.width, src.height) == (record["width"], record["height"]) == (128, 128)
            assert list(src.descriptions) == record["bands"]
            assert src.dtypes[0] == dtypes[record["modality"]]
            if record["modality"] != "sar":
                assert tuple(record["bands"]) == BANDS[record["modality"]]
            epsg = src.crs.to_epsg()
            assert 32601 <= epsg <= 32660 or 32701 <= epsg <= 32760
            pixel = src.transform.a
            assert 0.3 <= pixel <= 10.0 and src.transform.e == -pixel
            # The chip's top-left corner is the scene's lon/lat, and the zone is the one containing it.
            scene = scenes[record["scene_id"]]
            lon, lat = Transformer.from_crs(src.crs, 4326, always_xy=True).transform(
                src.transform.c, src.transform.f
            )
            assert (lon, lat) == pytest.approx((scene["lon"], scene["lat"]), abs=1e-5)
            assert epsg % 100 == min(int((scene["lon"] + 180) // 6) + 1, 60)
            assert (epsg // 100 == 326) == (scene["lat"] >= 0)
    assert len(checked) == N_SCENES * 4


def test_masks_are_the_objects_and_boxes_bound_them(
    dataset: Path, records: list[dict[str, Any]], scenes: dict[str, dict[str, Any]]
) -> None:
    masks = [r for r in records if r["task"] == "pixel_grounding"]
    assert masks
    for record in masks:
        assert "[SEG]" in record["conversations"][1]["value"] and record["answer"]["mask"] == record["mask"]
        mask = read_mask_png(dataset.parent / record["mask"])
        scene = scenes[record["scene_id"]]
        polygon = object_polygon(scene, record["answer"]["object"])
        # GDAL's rasterisation of the stored polygon (pixel-centre rule) reproduces the mask.
        gdal_mask = features.rasterize([(polygon, 1)], out_shape=mask.shape, dtype="uint8").astype(bool)
        assert np.logical_xor(mask, gdal_mask).sum() <= 1
        rows, cols = np.nonzero(mask)
        x1, y1, x2, y2 = cols.min(), rows.min(), cols.max() + 1, rows.max() + 1
        expected = [min(math.floor(v / 128 * 1000), 999) for v in (x1, y1, x2, y2)]
        assert record["answer"]["box"] == expected
    for record in records:
        if record["task"] == "grounding":
            obj = scenes[record["scene_id"]]["objects"][record["answer"]["object"]]
            expected = [min(math.floor(v / 128 * 1000), 999) for v in obj["bbox_px"]]
            assert record["answer"]["box"] == expected
            assert record["conversations"][1]["value"] == "[{}, {}, {}, {}]".format(*expected)


def _object_indices(record: dict[str, Any]) -> list[int]:
    answer = record["answer"]
    if "objects" in answer:
        return list(answer["objects"])
    return [answer["object"]] if "object" in answer else []


def test_prompts_lie_in_the_chip_and_on_their_objects(
    records: list[dict[str, Any]], scenes: dict[str, dict[str, Any]]
) -> None:
    kinds = Counter()
    for record in records:
        for prompt in record["prompts"]:
            coords = np.array(
                [prompt["point"]] if prompt["type"] == "point"
                else np.reshape(prompt["box"], (2, 2)) if prompt["type"] == "box"
                else prompt.get("polygon", prompt.get("line"))
            )  # fmt: skip
            assert coords.min() >= 0.0 and coords.max() <= 128.0
        if record["task"] == "counting" or not record["prompts"]:
            continue
        for prompt, index in zip(record["prompts"], _object_indices(record), strict=True):
            polygon = object_polygon(scenes[record["scene_id"]], index)
            kinds[prompt["type"]] += 1
            if prompt["type"] == "point":
                assert polygon.buffer(0.5).contains(Point(prompt["point"]))
            elif prompt["type"] == "box":
                # A hand-drawn box: the box of the rendered pixels with about a pixel of jitter per side.
                b = box(*prompt["box"])
                pixels = box(*scenes[record["scene_id"]]["objects"][index]["bbox_px"])
                assert b.intersection(pixels).area / b.union(pixels).area >= 0.5
                assert b.buffer(0.81, join_style="mitre").contains(pixels)
            elif prompt["type"] == "polygon":
                outline = shapely.make_valid(Polygon(prompt["polygon"]))
                assert outline.intersection(polygon).area / polygon.area >= 0.75
                assert outline.area <= 3.0 * polygon.area + 40
            else:
                line = np.array(prompt["line"])
                assert len(line) >= 2
                assert all(polygon.buffer(1.5).contains(Point(p)) for p in line)
    assert set(kinds) == {"point", "box", "polygon", "scribble"}


def test_region_counting_regions_hold_objects_whole(
    records: list[dict[str, Any]], scenes: dict[str, dict[str, Any]]
) -> None:
    regional = [r for r in records if r["task"] == "counting" and r["prompts"]]
    assert regional
    for record in regional:
        prompt = record["prompts"][0]
        region = box(*prompt["box"]) if prompt["type"] == "box" else Polygon(prompt["polygon"])
        scene = scenes[record["scene_id"]]
        inside = 0
        for index, obj in enumerate(scene["objects"]):
            polygon = object_polygon(scene, index)
            assert region.contains(polygon) or region.disjoint(polygon)
            inside += int(region.contains(polygon) and obj["class"] == record["answer"]["class"])
        assert record["answer"]["count"] == inside


def test_splits_are_per_scene(records: list[dict[str, Any]]) -> None:
    split_of: dict[str, set[str]] = {}
    for record in records:
        split_of.setdefault(record["scene_id"], set()).add(record["split"])
    assert all(len(s) == 1 for s in split_of.values())


def test_same_seed_same_bytes_and_scenes_do_not_depend_on_n(tmp_path: Path, dataset: Path) -> None:
    tasks = ["counting", "pixel_grounding", "relation"]
    a = generate_dataset(tmp_path / "a", 3, seed=5, tasks=tasks, progress=False)
    b = generate_dataset(tmp_path / "b", 3, seed=5, tasks=tasks, progress=False)
    assert digest(a.parent) == digest(b.parent)
    c = generate_dataset(tmp_path / "c", 3, seed=6, tasks=tasks, progress=False)
    assert a.read_bytes() != c.read_bytes()
    # The first scenes of a larger run are the same scenes.
    d = generate_dataset(tmp_path / "d", 5, seed=5, tasks=tasks, progress=False)
    first = [r for r in load_records(d) if r["scene_id"] in {"scene000000", "scene000001", "scene000002"}]
    assert first == load_records(a)
    assert (a.parent / "images" / "scene000002_sar.tif").read_bytes() == (
        d.parent / "images" / "scene000002_sar.tif"
    ).read_bytes()


def test_subsets_of_tasks_and_modalities(tmp_path: Path) -> None:
    path = generate_dataset(
        tmp_path, 2, seed=1, tasks=["attributes"], modalities=["infrared"], progress=False
    )
    records = load_records(path)
    assert {r["task"] for r in records} == {"attributes"} and {r["modality"] for r in records} == {"infrared"}
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [
        "scene000000_infrared.tif",
        "scene000001_infrared.tif",
    ]
    with pytest.raises(ValueError, match="unknown task"):
        generate_dataset(tmp_path, 1, seed=1, tasks=["dancing"], progress=False)
    with pytest.raises(ValueError, match="unknown modality"):
        generate_dataset(tmp_path, 1, seed=1, modalities=["lidar"], progress=False)


def test_cli_writes_a_dataset(tmp_path: Path) -> None:
    main(
        [
            "--out",
            str(tmp_path / "cli"),
            "--scenes",
            "2",
            "--seed",
            "3",
            "--no-progress",
            "--tasks",
            "scene_classification,grounding",
        ]
    )
    records = load_records(tmp_path / "cli" / "records.jsonl")
    assert {r["task"] for r in records} <= {"scene_classification", "grounding"} and records
    meta = json.loads((tmp_path / "cli" / "dataset.json").read_text())
    assert meta["n_scenes"] == 2 and meta["counts"]["records"] == len(records)


def test_worker_processes_do_not_change_the_output(tmp_path: Path) -> None:
    one = generate_dataset(tmp_path / "one", 6, seed=9, progress=False, workers=1)
    two = generate_dataset(tmp_path / "two", 6, seed=9, progress=False, workers=2)
    assert digest(one.parent) == digest(two.parent)
