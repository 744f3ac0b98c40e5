"""The generator's optional settings: negatives and domain randomisation (issue 25).

With both off the output must stay bit for bit what it was before they existed, so the in-distribution held-out
set (seed 90210) never changes: ``REFERENCE_DIGEST`` was computed from the generator before the settings were added.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.errors import NotGeoreferencedWarning

from earthgptx.answers import parse_answer_strict
from earthgptx.data.generate import SceneOptions, build_scene, generate_dataset, scene_is_randomised
from earthgptx.data.record_format import load_records, validate_record
from earthgptx.data.render import render
from earthgptx.data.scene import rasterize_polygon
from earthgptx.data.tasks import COVER_PHRASES, NEGATIVE_KINDS, NO_OBJECT
from earthgptx.data.vocabulary import LAND_COVERS, OBJECT_CLASSES, PLURALS
from earthgptx.training.auxiliary import synthetic_scene
from earthgptx.visual_prompts import dict_to_geometry
from tests.kits.vector_code import run_portably

# sha256 over records.jsonl, scenes.jsonl and every chip's and mask's pixels (name, dtype, bytes) of the first four
# scenes of seed 90210 (all tasks and modalities, one record per task), generated before the options existed (by
# commit 764cfa3's parent, computed portably: tests/kits/vector_code.py).
REFERENCE_DIGEST = "7ffc871771787e77519043a9e98403e9c65989ae09ebea2bd2ee0e82f816ab09"
# The first reference, bbbae635..., was taken on an AVX-512 host, before digests were computed portably
# (tests/kits/vector_code.py).
_GENERATE = (
    "import json, sys; from pathlib import Path; from earthgptx.data.generate import SceneOptions, generate_dataset;"
    "generate_dataset(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), progress=False,"
    " options=SceneOptions(**json.loads(sys.argv[4])))"
)


def portable_generate(out: Path, n_scenes: int, seed: int, options: SceneOptions) -> None:
    """``generate_dataset`` in a child process without AVX-512 code, so its bits are the same on every x86-64
    host."""
    run_portably(_GENERATE, str(out), str(n_scenes), str(seed), json.dumps(dataclasses.asdict(options)))


def dataset_digest(out: Path) -> str:
    digest = hashlib.sha256()
    for name in ("records.jsonl", "scenes.jsonl"):
        digest.update((out / name).read_bytes())
    files = sorted((out / "images").glob("*.tif")) + sorted((out / "masks").glob("*.png"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        for path in files:
            with rasterio.open(path) as src:
                pixels = src.read()
            digest.update(path.name.encode())
            digest.update(str(pixels.dtype).encode())
            digest.update(np.ascontiguousarray(pixels).tobytes())
    return digest.hexdigest()


def test_options_off_leave_the_held_out_generator_bit_identical(tmp_path: Path) -> None:
    portable_generate(tmp_path, 4, 90210, SceneOptions())
    assert dataset_digest(tmp_path) == REFERENCE_DIGEST


@pytest.fixture(scope="module")
def negatives_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("negatives")
    generate_dataset(
        out, 40, 31, progress=False, options=SceneOptions(negatives=True, randomise=0.5), workers=2
    )
    return out


def test_negative_records_are_valid_and_answered_as_abstentions(negatives_dataset: Path) -> None:
    records = load_records(negatives_dataset / "records.jsonl")
    kinds = Counter(r["answer"].get("negative") for r in records)
    assert set(kinds) - {None} == set(NEGATIVE_KINDS), kinds
    scenes = {
        s["scene_id"]: s
        for s in map(json.loads, (negatives_dataset / "scenes.jsonl").read_text().splitlines())
    }
    for record in records:
        validate_record(record)
        kind = record["answer"].get("negative")
        answer_text = record["conversations"][1]["value"]
        scene = scenes[record["scene_id"]]
        if kind == "background":
            assert answer_text == NO_OBJECT
            assert parse_answer_strict(answer_text, task="region_classification").abstained
        elif kind == "absent class":
            present = {o["class"] for o in scene["objects"]}
            assert record["answer"]["class"] not in present
            assert answer_text == "0" and record["answer"]["count"] == 0
        elif kind == "empty scene":
            assert scene["objects"] == []
            words = answer_text.lower()
            assert not any(c in words or PLURALS[c] in words for c in OBJECT_CLASSES), answer_text


def test_background_prompts_cover_no_object(negatives_dataset: Path) -> None:
    """Every pixel a background prompt marks (its point, or its box) is at least a few pixels from any object."""
    records = load_records(negatives_dataset / "records.jsonl")
    options = SceneOptions(negatives=True, randomise=0.5)
    checked = 0
    for record in records:
        if record["answer"].get("negative") != "background":
            continue
        scene = build_scene(31, int(record["scene_id"][len("scene") :]), 128, options)
        occupied = scene.instance_map > 0
        prompt = record["prompts"][0]
        if prompt["type"] == "box":
            x1, y1, x2, y2 = prompt["box"]
            assert not occupied[int(y1) : int(np.ceil(y2)), int(x1) : int(np.ceil(x2))].any()
        else:
            points = (
                [prompt["point"]] if prompt["type"] == "point" else prompt.get("polygon") or prompt["line"]
            )
            for x, y in points:
                assert not occupied[min(int(y), 127), min(int(x), 127)]
        checked += 1
    assert checked >= 40  # 40 % of 160 chips, give or take


def test_empty_scenes_ask_no_object_level_questions(negatives_dataset: Path) -> None:
    records = load_records(negatives_dataset / "records.jsonl")
    scenes = [json.loads(s) for s in (negatives_dataset / "scenes.jsonl").read_text().splitlines()]
    empty = {s["scene_id"] for s in scenes if not s["objects"]}
    assert empty, "40 scenes at a 10 % share should hold an empty one"
    tasks = {r["task"] for r in records if r["scene_id"] in empty}
    assert tasks == {"scene_classification", "scene_caption", "counting", "region_classification"}


def test_randomised_scenes_are_rebuilt_exactly_for_the_auxiliary_targets(negatives_dataset: Path) -> None:
    scenes = [json.loads(s) for s in (negatives_dataset / "scenes.jsonl").read_text().splitlines()]
    styled = [s for s in scenes if "style" in s]
    plain = [s for s in scenes if "style" not in s]
    assert not any(
        scene_is_randomised(31, int(s["scene_id"][len("scene") :]), SceneOptions(True, 0.5)) for s in plain
    )
    assert 8 <= len(styled) <= 32, len(styled)  # half of 40, give or take
    options = SceneOptions(negatives=True, randomise=0.5)
    for truth in styled[:5]:
        record = {"source": "synthetic", "scene_id": truth["scene_id"]}
        scene = synthetic_scene(record, 31, 128, options)
        assert scene is not None and scene.style is not None
        assert scene_is_randomised(31, int(truth["scene_id"][len("scene") :]), options)
        assert [o.bbox_px for o in scene.objects] == [tuple(o["bbox_px"]) for o in truth["objects"]]
        # Without the options the same index is another layout: the options must travel with the dataset.
        assert json.loads((negatives_dataset / "dataset.json").read_text())["randomise"] == 0.5


def test_randomisation_changes_the_sensor_and_keeps_the_ground_truth_on_the_pixels() -> None:
    options = SceneOptions(randomise=1.0)
    stretches = set()
    for index in range(12):
        scene = build_scene(5, index, 128, options)
        plain = build_scene(5, index, 128)
        assert scene.style is not None and plain.style is None
        stretches.add(scene.style.stretch)
        assert scene.cover == plain.cover  # the layout stream is the same; only shapes and sensors change
        image, _ = render(scene, "sar", np.random.default_rng(index))
        assert np.isfinite(image).all() and image.dtype == np.float32
        optical, _ = render(scene, "optical", np.random.default_rng(index))
        for obj in scene.objects:
            assert obj.mask.any() and obj.area_px == int(obj.mask.sum())
            # The object's pixels differ from the background around it in the optical chip.
            assert optical[:, obj.mask].mean() != pytest.approx(optical[:, ~obj.mask].mean(), abs=0.5)
    assert len(stretches) >= 2


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="randomise"):
        SceneOptions(randomise=1.5)


def test_area_descriptions_name_the_cover_and_the_objects_inside(tmp_path: Path) -> None:
    """``areas``: a large region (not one object) described as a scene caption describes a chip; every other record
    is the same as without the setting."""
    options = SceneOptions(negatives=True, randomise=0.5, effects=True, areas=True)
    generate_dataset(tmp_path / "areas", 16, 33, progress=False, options=options, workers=1)
    generate_dataset(
        tmp_path / "plain", 16, 33, progress=False, options=dataclasses.replace(options, areas=False), workers=1
    )
    records = load_records(tmp_path / "areas" / "records.jsonl")
    areas = [r for r in records if r["answer"].get("area")]
    assert [r for r in records if not r["answer"].get("area")] == load_records(
        tmp_path / "plain" / "records.jsonl"
    )
    assert len(areas) > 10
    empty = 0
    for record in areas:
        validate_record(record)
        assert record["task"] == "region_caption" and record["prompt_type"] in ("box", "polygon")
        text = record["conversations"][1]["value"]
        answer = parse_answer_strict(text, task="region_caption")
        assert answer.parsed, (text, answer.failure)
        scene = synthetic_scene(record, 33, 128, options)
        assert scene is not None
        # the objects named are exactly those whose footprint lies inside the prompt
        region = dict_to_geometry(record["prompts"][0], 128, 128)
        inside = sorted(o.index for o in scene.objects if region.contains(o.polygon.buffer(-0.01)))
        assert record["answer"]["objects"] == inside, record["id"]
        counts = Counter(scene.objects[i].cls for i in inside)
        if counts:
            for cls, n in counts.items():
                assert f"{n} {cls if n == 1 else PLURALS[cls]}" in text
        else:
            empty += 1
            assert text.endswith(f"with {NO_OBJECT}.")
        assert text.lower().startswith(COVER_PHRASES[record["answer"]["cover"]] + " with ")
        # an area is larger than any one object: each side at least 0.45 of the chip
        x1, y1, x2, y2 = region.bounds
        assert min(x2 - x1, y2 - y1) >= 0.45 * 128 - 1e-6
        # the cover named is the one most of the area shows
        under = scene.cover_map[rasterize_polygon(region, 128)]
        assert LAND_COVERS[int(np.bincount(under, minlength=len(LAND_COVERS)).argmax())] == record["answer"]["cover"]
    assert 0 < empty < len(areas)
