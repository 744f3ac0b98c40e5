"""Each modality shows the physics it is meant to: NIR-bright vegetation, dark speckled SAR water with bright
hard targets, thermal inertia and warm/cold objects in the thermal band."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from earthgptx.data.generate import build_scene
from earthgptx.data.render import render
from earthgptx.data.scene import Scene
from earthgptx.data.vocabulary import LAND_COVERS

WATER, VEGETATION, SOIL, URBAN = range(4)


def find_scene(predicate: Callable[[Scene], bool], seed: int = 21) -> Scene:
    for index in range(400):
        scene = build_scene(seed, index, 128)
        if predicate(scene):
            return scene
    raise AssertionError("no scene matches")


def background(scene: Scene, cover: int) -> np.ndarray:
    """Pixels of ``cover`` away from objects and streets (and one pixel away from cover edges)."""
    mask = scene.cover_map == cover
    inner = mask.copy()
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return inner & (scene.instance_map == 0) & ~scene.streets


def test_vegetation_is_bright_in_nir_and_water_is_dark() -> None:
    scene = find_scene(lambda s: s.cover == "vegetation" and s.secondary_cover == "water")
    image, bands = render(scene, "multispectral", np.random.default_rng(0))
    assert bands == ("blue", "green", "red", "nir") and image.dtype == np.uint16
    reflectance = image.astype(float) / 10_000
    blue, green, red, nir = reflectance
    veg, water = background(scene, VEGETATION), background(scene, WATER)
    assert veg.sum() > 1000 and water.sum() > 300
    assert nir[veg].mean() > 3 * red[veg].mean()
    ndvi = (nir - red) / (nir + red + 1e-6)
    assert ndvi[veg].mean() > 0.6
    assert ndvi[water].mean() < 0.0
    assert nir[water].mean() < 0.05
    # In visible light vegetation is green: green above red and blue.
    optical, _ = render(scene, "optical", np.random.default_rng(0))
    r, g, b = optical.astype(float)
    assert g[veg].mean() > r[veg].mean() and g[veg].mean() > b[veg].mean()


def test_sar_water_is_dark_speckled_and_hard_targets_are_bright() -> None:
    scene = find_scene(
        lambda s: s.cover == "water" and s.secondary_cover in ("bare soil", "vegetation", "urban")
    )
    amplitude, bands = render(scene, "sar", np.random.default_rng(1))
    assert amplitude.dtype == np.float32 and bands == scene.conditions.sar_polarisations
    assert amplitude.shape[0] == len(bands)
    intensity = amplitude[0].astype(float) ** 2
    water = background(scene, WATER)
    land = background(scene, LAND_COVERS.index(scene.secondary_cover))
    assert water.sum() > 2000 and land.sum() > 300
    # Calm water reflects the pulse away: at least 8 dB below land.
    assert 10 * np.log10(intensity[land].mean() / intensity[water].mean()) > 8.0
    # Fully developed speckle: the intensity's coefficient of variation is about 1/sqrt(looks).
    cv = intensity[water].std() / intensity[water].mean()
    expected = 1 / np.sqrt(scene.conditions.sar_looks)
    assert 0.8 * expected < cv < 1.5 * expected
    # Multiplicative: the ratio of two renderings with different noise has the same spread everywhere.
    other = render(scene, "sar", np.random.default_rng(2))[0][0].astype(float) ** 2
    ratio = intensity / other
    assert abs(np.log(ratio[water]).std() - np.log(ratio[land]).std()) < 0.15
    for obj in scene.objects:
        assert intensity[obj.mask].mean() > 10 * intensity[water].mean()


def test_thermal_inertia_day_and_night() -> None:
    day = find_scene(
        lambda s: s.conditions.daytime and s.cover == "bare soil" and s.secondary_cover == "water"
    )
    night = find_scene(
        lambda s: not s.conditions.daytime and s.cover == "bare soil" and s.secondary_cover == "water"
    )
    for scene, water_warmer in ((day, False), (night, True)):
        image, bands = render(scene, "infrared", np.random.default_rng(3))
        assert bands == ("tir",) and image.dtype == np.uint16
        kelvin = image[0].astype(float) / 100
        assert 250 < kelvin.min() and kelvin.max() < 350
        water, soil = kelvin[background(scene, WATER)].mean(), kelvin[background(scene, SOIL)].mean()
        assert (water > soil) == water_warmer, (scene.conditions.daytime, water, soil)
        assert abs(water - soil) > 5.0


@pytest.mark.parametrize("seed", [4, 5])
def test_warm_and_cold_objects_in_the_thermal_band(seed: int) -> None:
    seen = set()
    for index in range(15):
        scene = build_scene(seed, index, 128)
        kelvin = render(scene, "infrared", np.random.default_rng(index))[0][0].astype(float) / 100
        free = scene.instance_map == 0
        for obj in scene.objects:
            rows, cols = np.nonzero(obj.mask)
            # Surroundings: a ring a few pixels wide around the object's box.
            r0, r1 = max(rows.min() - 4, 0), min(rows.max() + 5, 128)
            c0, c1 = max(cols.min() - 4, 0), min(cols.max() + 5, 128)
            ring = np.zeros_like(free)
            ring[r0:r1, c0:c1] = True
            ring &= free
            contrast = kelvin[obj.mask].mean() - np.median(kelvin[ring])
            if obj.temperature == "warm":
                assert contrast > 4.0
            else:
                assert contrast < -4.0
            seen.add(obj.temperature)
    assert seen == {"warm", "cold"}


def test_colour_attribute_shows_in_optical() -> None:
    for index in range(20):
        scene = build_scene(8, index, 128)
        rgb = render(scene, "optical", np.random.default_rng(index))[0].astype(float)
        for obj in scene.objects:
            r, g, b = (rgb[k][obj.mask].mean() for k in range(3))
            if obj.colour == "red":
                assert r > g + 60 and r > b + 60
            elif obj.colour == "blue":
                assert b > r + 60 and b > g + 30
            elif obj.colour == "yellow":
                assert r > b + 60 and g > b + 60
            else:
                assert min(r, g, b) > 180


def test_rendering_is_deterministic_per_stream() -> None:
    scene = build_scene(2, 0, 128)
    a, _ = render(scene, "sar", np.random.default_rng(7))
    b, _ = render(scene, "sar", np.random.default_rng(7))
    c, _ = render(scene, "sar", np.random.default_rng(8))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    with pytest.raises(ValueError, match="lidar"):
        render(scene, "lidar", np.random.default_rng(0))
