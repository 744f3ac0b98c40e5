"""Render a scene in each modality with a simple version of its physics.

- optical: surface reflectance in red/green/blue, 8-bit with a square-root display stretch;
- multispectral: blue/green/red/NIR reflectance × 10 000 (uint16) — vegetation is bright in NIR, water dark;
- SAR: backscatter σ⁰ per surface (calm water specular and dark, rough vegetation and soil moderate, urban
  double bounce bright), hard targets brighter still, a noise floor, and multiplicative speckle
  (intensity × Gamma(L, 1/L) for L looks); stored as amplitude √I (float32), VV and optionally VH;
- infrared: brightness temperature in Kelvin × 100 (uint16); land heats by day and cools by night faster
  than water (thermal inertia), objects are warmer or colder than their surroundings.

Objects are painted on exactly the pixels of their rasterised footprint, so the masks of ``scene.py`` are
the rendered pixels in every modality.

A randomised scene (``scene.style``, a :class:`~earthgptx.data.scene.SceneStyle`) is rendered with its own sensor:
texture strength, noise, per-band gains and a haze offset, the optical display stretch (square root, a gamma or a
clipped linear stretch), a multispectral DN offset, a SAR calibration offset and number of looks, a thermal offset
and contrast gain. A style drawn with effects (``style.effects``) adds a Gaussian point-spread function over every
modality's radiometry (before noise), shadows cast by buildings and tanks onto the ground in the reflective bands,
a shaded roof slope on one side of a building's ridge, and a Gamma-distributed clutter texture under the SAR
speckle (K-distributed intensity). A style with object textures (``style.texture_seed``) gives each object a
brightness pattern drawn without regard to its class (:func:`object_texture`: a stripe, two halves, a rim or a
speckle), in every modality, so that no class can be told by the inside of its footprint alone. A plain scene
(``style`` ``None``) renders exactly as it always has.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from functools import lru_cache

import numpy as np

from earthgptx.data.scene import Scene, SceneObject
from earthgptx.data.vocabulary import BANDS, LAND_COVERS
from earthgptx.formats import MODALITIES

# Surface reflectance (blue, green, red, nir).
COVER_REFLECTANCE: dict[str, tuple[float, float, float, float]] = {
    "water": (0.060, 0.050, 0.030, 0.010),
    "vegetation": (0.030, 0.075, 0.040, 0.420),
    "bare soil": (0.120, 0.170, 0.220, 0.280),
    "urban": (0.160, 0.160, 0.170, 0.200),
}
ASPHALT_REFLECTANCE = (0.070, 0.070, 0.070, 0.080)
# Relative texture strength per cover (multiplies the scene's texture field).
COVER_TEXTURE = {"water": 0.05, "vegetation": 0.10, "bare soil": 0.12, "urban": 0.15}
COLOUR_REFLECTANCE: dict[str, tuple[float, float, float, float]] = {
    "white": (0.720, 0.730, 0.740, 0.650),
    "red": (0.080, 0.100, 0.620, 0.450),
    "blue": (0.560, 0.260, 0.080, 0.200),
    "yellow": (0.100, 0.600, 0.700, 0.550),
}

# σ⁰ in dB (VV, VH) and its spatial spread in dB.
COVER_SIGMA0_DB: dict[str, tuple[float, float]] = {
    "water": (-22.0, -29.0),
    "vegetation": (-10.5, -16.5),
    "bare soil": (-14.0, -22.0),
    "urban": (-6.0, -13.0),
}
COVER_SIGMA0_SPREAD_DB = {"water": 1.0, "vegetation": 1.2, "bare soil": 1.5, "urban": 2.5}
ASPHALT_SIGMA0_DB = (-17.0, -24.0)
# Hard targets: distinct per class so the class shows in SAR by brightness as well as by shape, and at least
# 8 dB above the brightest surface (urban) so even a small target stands out of the speckle.
OBJECT_SIGMA0_DB: dict[str, tuple[float, float]] = {
    "ship": (7.0, -2.0),
    "airplane": (4.0, -5.0),
    "storage tank": (10.0, 1.0),
    "vehicle": (2.0, -7.0),
    "building": (6.0, -3.0),
}
NOISE_FLOOR_DB = (-26.0, -31.0)

# Brightness temperature in K by day and by night.
COVER_TEMPERATURE_K: dict[str, tuple[float, float]] = {
    "water": (291.0, 289.0),
    "vegetation": (297.0, 282.5),
    "bare soil": (309.0, 280.0),
    "urban": (313.0, 286.5),
}
ASPHALT_TEMPERATURE_K = (317.0, 288.0)
COVER_TEMPERATURE_SPREAD_K = {"water": 0.25, "vegetation": 0.8, "bare soil": 1.0, "urban": 1.2}
# Magnitude of an object's contrast to its surroundings; the sign is its warm/cold attribute.
OBJECT_THERMAL_CONTRAST_K = {
    "ship": 9.0,
    "airplane": 12.0,
    "storage tank": 15.0,
    "vehicle": 18.0,
    "building": 7.0,
}
NETD_K = 0.05


def render(scene: Scene, modality: str, rng: np.random.Generator) -> tuple[np.ndarray, tuple[str, ...]]:
    """Pixels of ``scene`` in ``modality`` as ``(bands, H, W)`` in the native dtype, and the band names."""
    renderers: dict[str, Callable[[Scene, np.random.Generator, np.random.Generator], np.ndarray]] = {
        "optical": render_optical,
        "multispectral": render_multispectral,
        "sar": render_sar,
        "infrared": render_infrared,
    }
    if modality not in renderers:
        raise ValueError(f"unknown modality {modality!r}; expected one of {MODALITIES}")
    # Sensor noise and object appearance draw from separate streams, so the background of a scene renders
    # identically with or without its objects (the tests rely on it to find the rendered object pixels).
    noise_rng, object_rng = rng.spawn(2)
    image = renderers[modality](scene, noise_rng, object_rng)
    bands = scene.conditions.sar_polarisations if modality == "sar" else BANDS[modality]
    return image, tuple(bands)


def _per_cover(scene: Scene, values: Mapping[str, tuple[float, ...]], channels: int) -> np.ndarray:
    """(channels, H, W) float32 holding each pixel's cover value."""
    table = np.array([values[name] for name in LAND_COVERS], dtype=np.float32)  # (covers, channels)
    out = table[scene.cover_map]  # (H, W, channels)
    assert out.shape[-1] == channels
    return np.moveaxis(out, -1, 0)


def _texture_strength(scene: Scene, strengths: dict[str, float]) -> np.ndarray:
    table = np.array([strengths[name] for name in LAND_COVERS], dtype=np.float32)
    if scene.style is not None:
        table = table * np.float32(scene.style.texture_gain)
    return table[scene.cover_map]


def _noise_gain(scene: Scene) -> float:
    return 1.0 if scene.style is None else scene.style.noise_gain


def _object_pattern(obj: SceneObject) -> np.ndarray:
    """Relative brightness over the object's pixels: a tank's floating roof reads darker than its rim."""
    pattern = np.ones(obj.area_px, dtype=np.float32)
    if obj.cls == "storage tank":
        rows, cols = np.nonzero(obj.mask)
        cx, cy = obj.centroid_px
        radius = np.hypot(cols + 0.5 - cx, rows + 0.5 - cy)
        pattern[radius < 0.3 * obj.length_px] = 0.7
    return pattern


TEXTURE_KINDS = ("none", "stripe", "halves", "rim", "speckle")


def object_texture(scene: Scene, obj: SceneObject) -> np.ndarray:
    """A relative brightness (around 1) over the object's pixels, in mask order, drawn from the scene style's
    ``texture_seed`` and the object's index alone, whatever the object's class: none; a stripe across or along the
    object's axis (a windscreen, a deck line, a roof's skylight); two halves either side of an axis (a lit and a
    shaded side); a rim brighter or darker than the inside (a parapet, a tank's wall); or a speckle. All ones when
    the scene has no object textures."""
    style = scene.style
    if style is None or not style.texture_seed:
        return np.ones(obj.area_px, dtype=np.float32)
    rng = np.random.default_rng([style.texture_seed, obj.index])
    # Every draw is made whatever the kind, so one object's kind never shifts another's.
    kind = TEXTURE_KINDS[int(rng.integers(len(TEXTURE_KINDS)))]
    factor = float(np.exp(rng.uniform(np.log(0.5), np.log(1.4))))
    along = bool(rng.integers(2))
    place, width, rim = (float(x) for x in rng.uniform((-0.6, 0.12, 0.55), (0.6, 0.35, 0.8)))
    spread = float(rng.uniform(0.05, 0.2))
    rows, cols = np.nonzero(obj.mask)
    cx, cy = obj.centroid_px
    theta = math.radians(obj.angle_deg)
    dx, dy = cols + 0.5 - cx, rows + 0.5 - cy
    half = max(obj.length_px / 2.0, 1.0)
    u = (dx * math.cos(theta) - dy * math.sin(theta)) / half  # along the major axis (image y points down)
    v = (dx * math.sin(theta) + dy * math.cos(theta)) / half  # across it
    axis = u if along else v
    texture = np.ones(obj.area_px, dtype=np.float32)
    if kind == "stripe":
        texture[np.abs(axis - place) < width / 2] = factor
    elif kind == "halves":
        texture[axis > place / 3] = factor
    elif kind == "rim":
        radius = np.hypot(u, v)
        texture[radius > rim * max(float(radius.max()), 1e-6)] = factor
    elif kind == "speckle":
        texture = np.exp(spread * rng.standard_normal(obj.area_px)).astype(np.float32)
    return texture


@lru_cache(maxsize=4)
def reflectance(scene: Scene) -> np.ndarray:
    """(4, H, W) surface reflectance in blue, green, red, NIR (read-only; shared by optical and multispectral).

    It depends on the scene alone, so the optical and multispectral chips of a scene see the same surface;
    the cache (scenes hash by identity) spares computing it twice.
    """
    refl = _per_cover(scene, COVER_REFLECTANCE, 4)
    strength = _texture_strength(scene, COVER_TEXTURE)
    modulation = 1.0 + strength * scene.texture
    vegetation = scene.cover_map == LAND_COVERS.index("vegetation")
    # Field parcels differ in vigour: more chlorophyll means darker red and brighter NIR.
    vigour = np.where(vegetation, 0.75 + 0.5 * scene.parcels, 1.0).astype(np.float32)
    refl = refl * modulation[None]
    refl[2] *= np.where(vegetation, 2.0 - vigour, 1.0)
    refl[3] *= vigour
    refl[:, scene.streets] = np.array(ASPHALT_REFLECTANCE, dtype=np.float32)[:, None]
    for obj in scene.objects:
        spectrum = np.array(COLOUR_REFLECTANCE[obj.colour], dtype=np.float32) * obj.paint_gain
        pattern = _object_pattern(obj) * object_texture(scene, obj)
        refl[:, obj.mask] = spectrum[:, None] * pattern[None, :]
    style = scene.style
    if style is not None and style.effects:
        for obj in scene.objects:
            if obj.cls == "building" and style.roof_shading != 1.0:
                refl[:, obj.mask] *= np.where(
                    _far_slope(obj), np.float32(style.roof_shading), np.float32(1.0)
                )
        shadow = cast_shadows(scene)
        refl[:, shadow] *= np.float32(style.shadow_darkness)
        refl = gaussian_blur(refl, style.psf_sigma_px)
    refl.flags.writeable = False
    return refl


def _far_slope(obj: SceneObject) -> np.ndarray:
    """Over the object's pixels: whether each lies on the far side of the line along its major axis through its
    centroid (one slope of a gabled roof)."""
    rows, cols = np.nonzero(obj.mask)
    theta = np.radians(obj.angle_deg)
    cx, cy = obj.centroid_px
    return (cols + 0.5 - cx) * np.sin(theta) + (rows + 0.5 - cy) * np.cos(theta) > 0


def _shifted(mask: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """``mask`` moved by ``(dx, dy)`` pixels, with nothing wrapping round the edges."""
    out = np.zeros_like(mask)
    h, w = mask.shape
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = mask[
        max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)
    ]
    return out


def cast_shadows(scene: Scene) -> np.ndarray:
    """(H, W) bool: ground pixels in the shadow that the scene's buildings and tanks cast along the style's
    azimuth, over a share of each object's length (none on a plain scene or a style without shadows)."""
    size = scene.chip_size
    shadow = np.zeros((size, size), dtype=bool)
    style = scene.style
    if style is None or style.shadow_length <= 0.0:
        return shadow
    dx, dy = np.cos(np.radians(style.shadow_azimuth_deg)), np.sin(np.radians(style.shadow_azimuth_deg))
    occupied = np.zeros_like(shadow)
    for obj in scene.objects:
        occupied |= obj.mask
        if obj.cls not in ("building", "storage tank"):
            continue
        for step in range(1, max(1, round(style.shadow_length * obj.length_px)) + 1):
            shadow |= _shifted(obj.mask, round(step * dx), round(step * dy))
    return shadow & ~occupied


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """``image`` (..., H, W) convolved with a Gaussian of ``sigma`` px along both axes (edges mirrored); the image
    itself when ``sigma`` is 0."""
    if sigma <= 0.0:
        return image
    radius = max(1, int(np.ceil(3.0 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2).astype(np.float32)
    taps /= taps.sum()
    out = image.astype(np.float32)
    for axis in (-2, -1):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="reflect")
        n = out.shape[axis]
        out = sum(tap * np.take(padded, np.arange(i, i + n), axis=axis) for i, tap in enumerate(taps))
    return out.astype(np.float32)


def render_optical(scene: Scene, rng: np.random.Generator, object_rng: np.random.Generator) -> np.ndarray:
    """(3, H, W) uint8 red, green, blue."""
    refl = reflectance(scene)[[2, 1, 0]] * scene.conditions.optical_gain
    style = scene.style
    if style is None:
        dn = 255.0 * np.sqrt(np.clip(refl, 0.0, 1.0)) + 1.5 * rng.standard_normal(
            refl.shape, dtype=np.float32
        )
        return np.clip(np.rint(dn), 0, 255).astype(np.uint8)
    gains = np.array(style.band_gains, dtype=np.float32)[[2, 1, 0], None, None]
    refl = np.clip(refl * gains + np.float32(style.reflectance_offset), 0.0, 1.0)
    if style.stretch == "linear":
        shown = np.clip(refl * np.float32(style.stretch_param), 0.0, 1.0)
    else:  # "sqrt" (exponent 0.5) or "gamma"
        shown = refl ** np.float32(style.stretch_param)
    dn = 255.0 * shown + 1.5 * style.noise_gain * rng.standard_normal(refl.shape, dtype=np.float32)
    return np.clip(np.rint(dn), 0, 255).astype(np.uint8)


def render_multispectral(
    scene: Scene, rng: np.random.Generator, object_rng: np.random.Generator
) -> np.ndarray:
    """(4, H, W) uint16 blue, green, red, NIR reflectance × 10 000."""
    refl = reflectance(scene) * scene.conditions.optical_gain
    style = scene.style
    if style is None:
        dn = 10_000.0 * refl + 30.0 * rng.standard_normal(refl.shape, dtype=np.float32)
        return np.clip(np.rint(dn), 0, 65_535).astype(np.uint16)
    refl = refl * np.array(style.band_gains, dtype=np.float32)[:, None, None] + np.float32(
        style.reflectance_offset
    )
    dn = (
        10_000.0 * refl
        + np.float32(style.ms_offset_dn)
        + 30.0 * style.noise_gain * rng.standard_normal(refl.shape, dtype=np.float32)
    )
    return np.clip(np.rint(dn), 0, 65_535).astype(np.uint16)


def render_sar(scene: Scene, rng: np.random.Generator, object_rng: np.random.Generator) -> np.ndarray:
    """(P, H, W) float32 amplitude for the scene's polarisations (VV, or VV and VH)."""
    sigma_db = _per_cover(scene, COVER_SIGMA0_DB, 2)
    sigma_db += _texture_strength(scene, COVER_SIGMA0_SPREAD_DB)[None] * scene.texture[None]
    sigma_db[:, scene.streets] = np.array(ASPHALT_SIGMA0_DB, dtype=np.float32)[:, None]
    for obj in scene.objects:
        target = np.array(OBJECT_SIGMA0_DB[obj.cls], dtype=np.float32) + object_rng.normal(0.0, 1.0)
        # Floating roof: the rim's double bounce is stronger than the roof.
        pattern = _object_pattern(obj) * object_texture(scene, obj)
        sigma_db[:, obj.mask] = target[:, None] + 10.0 * np.log10(pattern)[None, :]
    noise_floor = np.array(NOISE_FLOOR_DB, dtype=np.float32)
    looks = scene.conditions.sar_looks
    if scene.style is not None:
        # A miscalibrated product: every sigma0 and the noise floor shift by the same constant; the noise floor
        # also moves with the noise gain.
        sigma_db += np.float32(scene.style.sar_calibration_db)
        noise_floor = noise_floor + np.float32(
            scene.style.sar_calibration_db + 10.0 * np.log10(_noise_gain(scene))
        )
        looks = scene.style.sar_looks
    sigma0 = 10.0 ** (sigma_db / 10.0)
    if scene.style is not None and scene.style.effects:
        sigma0 = gaussian_blur(sigma0, scene.style.psf_sigma_px)
        shape = scene.style.sar_texture_shape
        if shape > 0.0:  # clutter texture: the same for both polarisations, mean 1
            sigma0 = sigma0 * (rng.standard_gamma(shape, size=sigma0.shape[1:], dtype=np.float32) / shape)
    intensity = sigma0 + (10.0 ** (noise_floor / 10.0))[:, None, None]
    intensity *= rng.standard_gamma(looks, size=intensity.shape, dtype=np.float32) / looks
    amplitude = np.sqrt(intensity).astype(np.float32)
    return amplitude[: len(scene.conditions.sar_polarisations)]


def render_infrared(scene: Scene, rng: np.random.Generator, object_rng: np.random.Generator) -> np.ndarray:
    """(1, H, W) uint16 brightness temperature in K × 100."""
    slot = 0 if scene.conditions.daytime else 1
    temperatures = {name: (value[slot],) for name, value in COVER_TEMPERATURE_K.items()}
    kelvin = _per_cover(scene, temperatures, 1)[0]
    kelvin += _texture_strength(scene, COVER_TEMPERATURE_SPREAD_K) * scene.texture
    kelvin[scene.streets] = ASPHALT_TEMPERATURE_K[slot]
    for obj in scene.objects:
        surroundings = float(kelvin[obj.mask].mean())
        sign = 1.0 if obj.temperature == "warm" else -1.0
        contrast = OBJECT_THERMAL_CONTRAST_K[obj.cls] * object_rng.uniform(0.9, 1.1)
        if scene.style is not None:
            contrast *= scene.style.thermal_contrast_gain
        # Only a textured scene takes the float32 product: a plain one keeps its float64 sum, bit for bit as before.
        if scene.style is not None and scene.style.texture_seed:
            kelvin[obj.mask] = surroundings + sign * contrast * object_texture(scene, obj)
        else:
            kelvin[obj.mask] = surroundings + sign * contrast
    if scene.style is not None:
        kelvin = kelvin + np.float32(scene.style.thermal_offset_k)
        if scene.style.effects:
            kelvin = gaussian_blur(kelvin, scene.style.psf_sigma_px)
    kelvin = kelvin + NETD_K * _noise_gain(scene) * rng.standard_normal(kelvin.shape, dtype=np.float32)
    return np.clip(np.rint(kelvin * 100.0), 0, 65_535).astype(np.uint16)[None]
