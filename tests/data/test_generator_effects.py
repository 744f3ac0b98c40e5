"""The generator's ``effects`` setting (stage 15): sensor and scene effects and composite roofs on randomised scenes.

With it off, randomised scenes must stay bit for bit what they were (stage 14's training data is rebuilt from its
seed): ``RANDOMISED_DIGEST`` was computed from the generator before the setting existed.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import shapely

from earthgptx.data.generate import SceneOptions, build_scene
from earthgptx.data.render import cast_shadows, gaussian_blur, reflectance, render
from earthgptx.data.scene import count_components, draw_style, draw_variant, object_outline, rasterize_polygon
from earthgptx.training.datasets import dataset_options, ensure_dataset
from tests.data.test_generator_options import dataset_digest, portable_generate

# dataset_digest of six scenes of seed 31, negatives on, every scene randomised, made before ``effects`` existed
# (numpy without AVX-512, as the digest of test_generator_options).
RANDOMISED_DIGEST = "43fc0e12e8cf9211812461b25d38924f9a72505a9fe340e10064f3fc6a4e11b5"
EFFECTS = SceneOptions(negatives=True, randomise=1.0, effects=True)


def test_effects_off_leave_randomised_scenes_bit_identical(tmp_path: Path) -> None:
    portable_generate(tmp_path, 6, 31, SceneOptions(negatives=True, randomise=1.0))
    assert dataset_digest(tmp_path) == RANDOMISED_DIGEST
    assert "effects" not in json.loads((tmp_path / "dataset.json").read_text())


def test_effects_are_drawn_after_the_other_style_settings() -> None:
    for seed in range(20):
        plain = draw_style(np.random.default_rng(seed))
        styled = draw_style(np.random.default_rng(seed), effects=True)
        assert styled.effects and not plain.effects
        assert (
            dataclasses.replace(styled, **{f.name: getattr(plain, f.name) for f in dataclasses.fields(plain)})
            == plain
        )
        assert {k: v for k, v in styled.to_json().items() if k in plain.to_json()} == plain.to_json()
    styles = [draw_style(np.random.default_rng(s), effects=True) for s in range(200)]
    # each effect is off on part of the scenes and on with a range of strengths on the rest
    for name, off in (
        ("psf_sigma_px", 0.0),
        ("shadow_length", 0.0),
        ("roof_shading", 1.0),
        ("sar_texture_shape", 0.0),
    ):
        values = np.array([getattr(s, name) for s in styles])
        assert 0.1 < (values == off).mean() < 0.6, name
        assert np.ptp(values[values != off]) > 0.2, name


def test_composite_roofs_are_one_region_within_their_length() -> None:
    rng = np.random.default_rng(7)
    kinds = set()
    for _ in range(400):
        variant = draw_variant("building", rng, effects=True)
        kinds.add(int(variant["kind"]))
        length = float(rng.uniform(12.0, 38.0))
        angle = float(rng.uniform(0.0, 360.0))
        polygon = object_outline("building", length, angle, (64.0, 64.0), variant)
        assert polygon.is_valid and isinstance(polygon, shapely.Polygon), variant
        if variant["kind"] >= 2:
            assert shapely.Point(64.0, 64.0).buffer(length / 2 * 2**0.5 + 1e-6).contains(polygon), variant
            # a composite roof is not its own bounding rectangle: a notch or the corners beside a wing are missing
            assert polygon.area < 0.97 * polygon.minimum_rotated_rectangle.area, variant
            assert count_components(rasterize_polygon(polygon, 128)) == 1, variant
    assert kinds == {0, 1, 2, 3}
    assert {int(draw_variant("building", np.random.default_rng(s))["kind"]) for s in range(50)} == {0, 1}


def test_effect_scenes_rebuild_exactly_and_hold_connected_objects() -> None:
    for index in range(8):
        scene = build_scene(12, index, 128, EFFECTS)
        again = build_scene(12, index, 128, EFFECTS)
        assert scene.style is not None and scene.style.effects
        assert scene.style == again.style
        assert [o.bbox_px for o in scene.objects] == [o.bbox_px for o in again.objects]
        for obj in scene.objects:
            assert count_components(obj.mask) == 1
        for modality in ("optical", "multispectral", "sar", "infrared"):
            a, _ = render(scene, modality, np.random.default_rng(index))
            b, _ = render(again, modality, np.random.default_rng(index))
            assert np.array_equal(a, b) and np.isfinite(a.astype(np.float64)).all()


def _scene_with(effects: dict[str, float], wanted: str = "building") -> object:
    for index in range(200):
        scene = build_scene(12, index, 128, EFFECTS)
        if any(o.cls == wanted for o in scene.objects):
            assert scene.style is not None
            off = {"psf_sigma_px": 0.0, "shadow_length": 0.0, "roof_shading": 1.0, "sar_texture_shape": 0.0}
            return dataclasses.replace(scene, style=dataclasses.replace(scene.style, **(off | effects)))
    raise AssertionError(f"no scene of seed 12 holds a {wanted}")


def test_shadows_fall_on_the_ground_beside_buildings_along_the_azimuth() -> None:
    lit = _scene_with({})
    shaded = _scene_with({"shadow_length": 0.5, "shadow_darkness": 0.5, "shadow_azimuth_deg": 45.0})
    shadow = cast_shadows(shaded)
    assert shadow.any() and not cast_shadows(lit).any()
    occupied = np.logical_or.reduce([o.mask for o in shaded.objects])
    assert not (shadow & occupied).any()
    # the shadow lies towards +x, +y (45 degrees, y down) of the objects that cast it
    rows, cols = np.nonzero(shadow)
    casters = np.logical_or.reduce([o.mask for o in shaded.objects if o.cls in ("building", "storage tank")])
    crow, ccol = np.nonzero(casters)
    assert rows.mean() > crow.mean() and cols.mean() > ccol.mean()
    before, after = reflectance(lit), reflectance(shaded)
    assert after[:, shadow] == pytest.approx(0.5 * before[:, shadow], rel=1e-5)
    assert np.array_equal(after[:, ~shadow], before[:, ~shadow])


def test_roof_shading_darkens_one_slope_of_each_building() -> None:
    flat = _scene_with({})
    gabled = _scene_with({"roof_shading": 0.7})
    before, after = reflectance(flat), reflectance(gabled)
    for obj in gabled.objects:
        ratio = after[0, obj.mask] / before[0, obj.mask]
        if obj.cls == "building":
            assert set(np.round(ratio.astype(np.float64), 4)) == {0.7, 1.0}
        else:
            assert np.allclose(ratio, 1.0)


def test_gaussian_blur_keeps_the_mean_and_smooths() -> None:
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((2, 64, 64)).astype(np.float32)
    assert gaussian_blur(noise, 0.0) is noise
    blurred = gaussian_blur(noise, 1.0)
    assert blurred.shape == noise.shape and blurred.dtype == np.float32
    assert blurred.std() < 0.5 * noise.std()
    assert gaussian_blur(np.full((8, 8), 3.0, np.float32), 1.2) == pytest.approx(np.full((8, 8), 3.0))
    point = np.zeros((15, 15), np.float32)
    point[7, 7] = 1.0
    spread = gaussian_blur(point, 1.0)
    assert (
        spread.sum() == pytest.approx(1.0, rel=1e-5) and spread[7, 7] < 0.2 and spread[7, 8] == spread[8, 7]
    )


def test_sar_clutter_texture_roughens_the_intensity() -> None:
    smooth = _scene_with({}, "ship")
    rough = _scene_with({"sar_texture_shape": 2.0}, "ship")
    background = ~np.logical_or.reduce([o.mask for o in smooth.objects])

    def spread(scene: object) -> float:
        amplitude, _ = render(scene, "sar", np.random.default_rng(3))  # type: ignore[arg-type]
        intensity = amplitude[0].astype(np.float64) ** 2
        return float(intensity[background].std() / intensity[background].mean())

    assert spread(rough) > 1.15 * spread(smooth)


def test_the_setting_travels_with_the_dataset(tmp_path: Path) -> None:
    out = tmp_path / "d"
    ensure_dataset(out, 2, 5, progress=False, options=EFFECTS)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["effects"] is True and dataset_options(meta) == EFFECTS
    ensure_dataset(out, 2, 5, progress=False, options=SceneOptions(negatives=True, randomise=1.0))
    assert dataset_options(json.loads((out / "dataset.json").read_text())).effects is False
