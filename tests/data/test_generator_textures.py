"""The generator's ``textures`` setting: class-blind brightness patterns on the objects of randomised scenes.

With it off nothing changes (the digests of ``test_generator_options`` and ``test_generator_effects`` pin that); with
it on, only the pixels of objects change, every modality's, and the scene's geometry and other style settings stay
the draws they were.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

import numpy as np

from earthgptx.data.generate import SceneOptions, build_scene
from earthgptx.data.render import TEXTURE_KINDS, object_texture, render
from earthgptx.data.scene import draw_style
from earthgptx.training.datasets import dataset_options, ensure_dataset

EFFECTS = SceneOptions(negatives=True, randomise=1.0, effects=True)
TEXTURES = dataclasses.replace(EFFECTS, textures=True)


def test_texture_seed_is_drawn_last_and_left_out_when_off() -> None:
    for seed in range(20):
        for effects in (False, True):
            before = draw_style(np.random.default_rng(seed), effects=effects)
            textured = draw_style(np.random.default_rng(seed), effects=effects, textures=True)
            assert textured.texture_seed > 0 and before.texture_seed == 0
            assert dataclasses.replace(textured, texture_seed=0) == before
            assert "texture_seed" not in before.to_json()
            assert textured.to_json() == {**before.to_json(), "texture_seed": textured.texture_seed}


def test_textures_change_object_pixels_only_in_every_modality() -> None:
    changed_somewhere = Counter[str]()
    for index in range(6):
        plain = build_scene(21, index, 128, EFFECTS)
        textured = build_scene(21, index, 128, TEXTURES)
        # the same layout, objects and style, bar the texture seed
        assert [o.polygon.wkt for o in plain.objects] == [o.polygon.wkt for o in textured.objects]
        assert textured.style is not None and plain.style is not None
        assert dataclasses.replace(textured.style, texture_seed=0) == plain.style
        union = np.zeros((128, 128), dtype=bool)
        for obj in plain.objects:
            union |= obj.mask
        for modality in ("optical", "multispectral", "sar", "infrared"):
            a, _ = render(plain, modality, np.random.default_rng([index, 1]))
            b, _ = render(textured, modality, np.random.default_rng([index, 1]))
            differs = np.any(a != b, axis=0)
            # a blurred product spreads an object's pixels past its footprint by the blur's radius (gaussian_blur)
            sigma = plain.style.psf_sigma_px
            near = union if sigma == 0.0 else _grown(union, max(1, int(np.ceil(3.0 * sigma))))
            assert not (differs & ~near).any(), (index, modality)
            if differs.any():
                changed_somewhere[modality] += 1
    assert set(changed_somewhere) == {"optical", "multispectral", "sar", "infrared"}


def _grown(mask: np.ndarray, steps: int) -> np.ndarray:
    """``mask`` grown by ``steps`` pixels in every direction, diagonals included (a separable blur's reach)."""
    out = mask.copy()
    for _ in range(steps):
        rows = out.copy()
        rows[1:] |= out[:-1]
        rows[:-1] |= out[1:]
        out = rows.copy()
        out[:, 1:] |= rows[:, :-1]
        out[:, :-1] |= rows[:, 1:]
    return out


def test_object_textures_are_class_blind_and_rebuild_exactly() -> None:
    kinds_by_class: dict[str, set[int]] = {}
    for index in range(40):
        scene = build_scene(22, index, 128, TEXTURES)
        again = build_scene(22, index, 128, TEXTURES)
        for obj, twin in zip(scene.objects, again.objects, strict=True):
            texture = object_texture(scene, obj)
            assert texture.shape == (obj.area_px,) and texture.dtype == np.float32
            assert np.array_equal(texture, object_texture(again, twin))
            assert 0.3 < float(texture.min()) and float(texture.max()) < 2.5
            # the kind is the texture's first draw; the class plays no part in it
            assert scene.style is not None
            kind = int(np.random.default_rng([scene.style.texture_seed, obj.index]).integers(len(TEXTURE_KINDS)))
            if TEXTURE_KINDS[kind] == "none":
                assert np.all(texture == 1.0)
            kinds_by_class.setdefault(obj.cls, set()).add(kind)
    assert len(kinds_by_class) == 5
    for cls, kinds in kinds_by_class.items():
        assert len(kinds) >= 4, (cls, kinds)  # every class gets most kinds
    plain = build_scene(22, 0, 128, EFFECTS)
    assert all(np.all(object_texture(plain, o) == 1.0) for o in plain.objects)


def test_dataset_records_the_textures_setting(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    ensure_dataset(out, 2, 5, progress=False, options=TEXTURES)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["textures"] is True and dataset_options(meta) == TEXTURES
    ensure_dataset(out, 2, 5, progress=False, options=EFFECTS)  # another setting: written again, without it
    meta = json.loads((out / "dataset.json").read_text())
    assert "textures" not in meta and dataset_options(meta) == EFFECTS
