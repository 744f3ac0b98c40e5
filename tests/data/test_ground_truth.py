"""The generator's ground truth agrees with the pixels it renders.

The rendered object pixels are found without the generator's masks: each scene is rendered twice with the
same random stream, once with and once without its objects, and the pixels that differ are the objects.
Connected regions of those pixels (GDAL's polygonizer, not the generator's code) are then compared with the
boxes, counts, classes and relations the records state.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from rasterio import features
from shapely.geometry import shape

from earthgptx.data.generate import build_scene
from earthgptx.data.render import render
from earthgptx.data.scene import Scene
from earthgptx.data.tasks import ChipContext, build_records
from earthgptx.data.vocabulary import LAND_COVERS, PLURALS, TASKS
from earthgptx.formats import GRID, MODALITIES

SEEDS_AND_SCENES = [(7, i) for i in range(12)]


def rendered_object_pixels(scene: Scene, modality: str, seed: int = 3) -> np.ndarray:
    with_objects, _ = render(scene, modality, np.random.default_rng(seed))
    empty = dataclasses.replace(scene, objects=())
    background, _ = render(empty, modality, np.random.default_rng(seed))
    return np.any(with_objects != background, axis=0)


def components(pixels: np.ndarray) -> list[np.ndarray]:
    """Each 8-connected region of ``pixels`` as its own boolean mask (via rasterio's polygonizer)."""
    labels = np.zeros(pixels.shape, dtype=np.int32)
    regions = []
    for k, (geometry, _) in enumerate(
        features.shapes(pixels.astype(np.uint8), mask=pixels, connectivity=8), start=1
    ):
        mask = features.rasterize([(shape(geometry), 1)], out_shape=pixels.shape, dtype="uint8").astype(bool)
        labels[mask & pixels] = k
        regions.append(mask & pixels)
    return regions


def centroid(mask: np.ndarray) -> tuple[float, float]:
    rows, cols = np.nonzero(mask)
    return float(cols.mean() + 0.5), float(rows.mean() + 0.5)


@pytest.mark.parametrize("modality", MODALITIES)
@pytest.mark.parametrize(("seed", "index"), SEEDS_AND_SCENES[:6])
def test_rendered_pixels_are_exactly_the_object_masks(seed: int, index: int, modality: str) -> None:
    scene = build_scene(seed, index, 128)
    pixels = rendered_object_pixels(scene, modality)
    union = np.zeros_like(pixels)
    for obj in scene.objects:
        union |= obj.mask
    assert np.array_equal(pixels, union)


@pytest.mark.parametrize(("seed", "index"), SEEDS_AND_SCENES)
def test_each_box_covers_its_objects_rendered_pixels(seed: int, index: int) -> None:
    scene = build_scene(seed, index, 128)
    pixels = rendered_object_pixels(scene, "optical")
    regions = components(pixels)
    # Objects are separated by a margin, so each object is one region of its own.
    assert len(regions) == len(scene.objects)
    for region in regions:
        owners = [obj for obj in scene.objects if (obj.mask & region).any()]
        assert len(owners) == 1
        x1, y1, x2, y2 = owners[0].bbox_px
        rows, cols = np.nonzero(region)
        # The box covers every rendered pixel (pixel edges) and is tight on all four sides.
        assert (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1) == (x1, y1, x2, y2)


@pytest.mark.parametrize(("seed", "index"), SEEDS_AND_SCENES)
def test_record_answers_agree_with_the_rendered_pixels(seed: int, index: int) -> None:
    scene = build_scene(seed, index, 128)
    size = scene.chip_size
    pixels = rendered_object_pixels(scene, "sar")
    regions = components(pixels)
    owner = {}
    for region in regions:
        (obj,) = [o for o in scene.objects if (o.mask & region).any()]
        owner[obj.index] = region
    ctx = ChipContext(scene, "sar", ("vv",), "images/x.tif", "train", lambda o: f"masks/{o.index}.png")
    records = build_records(ctx, TASKS, np.random.default_rng(index), records_per_task=6)
    checked = {"counting": 0, "relation": 0, "grounding": 0, "region_classification": 0}
    for record in records:
        answer = record["answer"]
        if record["task"] == "counting" and record["prompt_type"] == "none":
            cls = answer["class"]
            assert f" {PLURALS[cls]}" in record["conversations"][0]["value"]
            in_pixels = sum(1 for o in scene.objects if o.cls == cls and o.index in owner)
            assert int(record["conversations"][1]["value"]) == answer["count"] == in_pixels
            checked["counting"] += 1
        elif record["task"] == "relation":
            first, second = (owner[i] for i in answer["objects"])
            (x1, y1), (x2, y2) = centroid(first), centroid(second)
            centre = size / 2
            truth = {
                "left of": x1 < x2,
                "above": y1 < y2,
                "nearer to": math.hypot(x1 - centre, y1 - centre) < math.hypot(x2 - centre, y2 - centre),
                "larger than": first.sum() > second.sum(),
            }[answer["relation"]]
            assert answer["value"] == ("yes" if truth else "no") == record["conversations"][1]["value"]
            checked["relation"] += 1
        elif record["task"] == "grounding":
            rows, cols = np.nonzero(owner[answer["object"]])
            expected = [
                math.floor(cols.min() / size * GRID),
                math.floor(rows.min() / size * GRID),
                min(math.floor((cols.max() + 1) / size * GRID), GRID - 1),
                min(math.floor((rows.max() + 1) / size * GRID), GRID - 1),
            ]
            assert answer["box"] == expected
            assert record["conversations"][1]["value"] == "[{}, {}, {}, {}]".format(*expected)
            checked["grounding"] += 1
        elif record["task"] == "region_classification":
            prompt = record["prompts"][0]
            if prompt["type"] == "point":
                x, y = prompt["point"]
                hit = owner[answer["object"]][int(y), int(x)]
                assert hit, "a point prompt must fall on the prompted object's rendered pixels"
            assert record["conversations"][1]["value"] == scene.objects[answer["object"]].cls
            checked["region_classification"] += 1
    assert checked["counting"] > 0 and checked["grounding"] > 0 and checked["region_classification"] > 0
    if len(scene.objects) >= 2:
        assert checked["relation"] > 0


def test_relation_answers_are_balanced_and_clear_over_many_scenes() -> None:
    values = []
    for index in range(40):
        scene = build_scene(11, index, 128)
        ctx = ChipContext(
            scene, "optical", ("red", "green", "blue"), "images/x.tif", "train", lambda o: "masks/x.png"
        )
        for record in build_records(ctx, ("relation",), np.random.default_rng(index), records_per_task=3):
            values.append(record["answer"]["value"])
    share_yes = values.count("yes") / len(values)
    assert 0.3 < share_yes < 0.7


def test_objects_stand_on_allowed_cover_and_keep_apart() -> None:
    for index in range(30):
        scene = build_scene(5, index, 128)
        assert 1 <= len(scene.objects) <= 6
        for obj in scene.objects:
            covers = {LAND_COVERS[c] for c in np.unique(scene.cover_map[obj.mask])}
            if obj.cls == "ship":
                assert covers == {"water"} or np.mean(scene.cover_map[obj.mask] == 0) >= 0.97
            else:
                assert np.mean(scene.cover_map[obj.mask] == 0) <= 0.03
        for a in scene.objects:
            for b in scene.objects:
                if a.index < b.index:
                    assert not (a.mask & b.mask).any()
                    assert a.polygon.distance(b.polygon) >= 3.0


def test_dominant_cover_is_the_scene_label() -> None:
    for index in range(30):
        scene = build_scene(9, index, 128)
        shares = np.bincount(scene.cover_map.ravel(), minlength=len(LAND_COVERS)) / scene.cover_map.size
        assert LAND_COVERS[int(np.argmax(shares))] == scene.cover
        assert shares.max() >= 0.69


def test_chip_size_is_configurable() -> None:
    scene = build_scene(1, 0, 96)
    assert scene.cover_map.shape == (96, 96)
    image, _ = render(scene, "optical", np.random.default_rng(0))
    assert image.shape == (3, 96, 96)
    for obj in scene.objects:
        x1, y1, x2, y2 = obj.bbox_px
        assert 0 <= x1 < x2 <= 96 and 0 <= y1 < y2 <= 96
