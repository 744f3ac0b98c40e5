"""A second, independently written scene renderer, for the out-of-distribution (OOD) held-out split.

Same land covers, object classes, attributes, size classes, product units (8-bit square-root display optical,
uint16 reflectance × 10 000 multispectral, float32 SAR amplitude, uint16 Kelvin × 100 thermal) and record format
as ``earthgptx.data.generate``, so ``earthgptx.data.tasks`` writes the same kinds of records from its scenes;
everything drawn is its own, sharing no drawing code with ``scene.py`` / ``render.py``:

- land cover: a Voronoi partition (straight-edged patches) instead of a smooth boundary; textures from spectral
  (1/f) noise with crop rows on vegetation and swell on water; urban roads as a few straight streets at any angle;
- objects: rounded hulls (ships), delta wings (airplanes), plain rectangles (vehicles), rectangular, T- and
  U-shaped roofs (buildings), tanks with a bright rim and a shadow crescent; axes jittered by up to 8°; roofs and
  decks with a ridge or deck line; cast shadows next to buildings and tanks in the reflective bands;
- sensors: other reflectance and σ⁰ tables within the same physics, a 3 × 3 point-spread function, stronger
  noise, K-distributed SAR clutter (speckle × texture) and other thermal contrasts.

A model that learned the remote-sensing content answers these as it answers the generator's; one that leans on
details of its own generator loses accuracy here. Command line::

    python -m earthgptx.data.ood_render --out data/generated/ood --scenes 60 --seed 4242

writes the same layout as ``generate`` (``records.jsonl``, ``scenes.jsonl``, ``dataset.json``, ``images/``,
``masks/``), every record in the ``test`` split with ``source`` ``synthetic-ood``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
from rasterio import features
from shapely import affinity
from shapely.geometry import LineString, Point, Polygon
from shapely.geometry import box as shapely_box
from shapely.ops import unary_union
from tqdm import tqdm

from earthgptx.data.raster_io import write_geotiff, write_mask_png
from earthgptx.data.record_format import dump_record
from earthgptx.data.scene import Scene, SceneConditions, SceneObject
from earthgptx.data.tasks import ChipContext, build_records
from earthgptx.data.vocabulary import (
    ALLOWED_COVERS,
    BANDS,
    COLOURS,
    DATASET_VERSION,
    LAND_COVERS,
    OBJECT_CLASSES,
    ORIENTATION_ANGLES,
    ORIENTED_CLASSES,
    SIZE_RANGES_PX,
    SIZES,
    TASK_LEVELS,
    TASKS,
    TEMPERATURES,
)
from earthgptx.formats import MODALITIES
from earthgptx.geo import random_georeference

__all__ = [
    "OOD_GENERATOR",
    "OOD_SOURCE",
    "ensure_ood_dataset",
    "generate_ood_dataset",
    "make_ood_scene",
    "ood_outline",
    "render_ood",
]

logger = logging.getLogger(__name__)

OOD_GENERATOR: Final = f"earthgptx-ood {DATASET_VERSION}"
OOD_SOURCE: Final = "synthetic-ood"
_REFERENCE = 128
_MAX_OBJECTS = 6
_ON_COVER = 0.97
_AXIS_JITTER_DEG = 8.0
_LAYOUT, _RENDER, _RECORDS = 11, 111, 211

# (blue, green, red, nir) surface reflectance per cover, and per paint colour.
_COVER_REFLECTANCE: dict[str, tuple[float, float, float, float]] = {
    "water": (0.070, 0.058, 0.036, 0.018),
    "vegetation": (0.036, 0.085, 0.048, 0.380),
    "bare soil": (0.105, 0.150, 0.205, 0.255),
    "urban": (0.140, 0.145, 0.150, 0.180),
}
_ROAD_REFLECTANCE = (0.085, 0.085, 0.090, 0.095)
_PAINT_REFLECTANCE: dict[str, tuple[float, float, float, float]] = {
    "white": (0.640, 0.670, 0.690, 0.600),
    "red": (0.100, 0.090, 0.540, 0.400),
    "blue": (0.470, 0.240, 0.100, 0.230),
    "yellow": (0.120, 0.540, 0.620, 0.500),
}
_TEXTURE_STRENGTH = {"water": 0.08, "vegetation": 0.14, "bare soil": 0.10, "urban": 0.14}
# σ⁰ (VV, VH) in dB per cover and per class of hard target.
_COVER_SIGMA0_DB: dict[str, tuple[float, float]] = {
    "water": (-20.0, -27.0),
    "vegetation": (-9.0, -15.0),
    "bare soil": (-12.5, -20.0),
    "urban": (-4.5, -11.5),
}
_ROAD_SIGMA0_DB = (-15.0, -22.0)
_TARGET_SIGMA0_DB: dict[str, tuple[float, float]] = {
    "ship": (8.5, -1.0),
    "airplane": (5.0, -4.0),
    "storage tank": (11.0, 2.0),
    "vehicle": (3.5, -6.0),
    "building": (7.5, -2.0),
}
_SAR_NOISE_DB = (-24.0, -29.0)
# Brightness temperature (day, night) in K per cover; magnitude of each class's contrast.
_COVER_KELVIN: dict[str, tuple[float, float]] = {
    "water": (292.0, 290.0),
    "vegetation": (299.0, 284.0),
    "bare soil": (311.5, 281.0),
    "urban": (315.0, 288.0),
}
_ROAD_KELVIN = (319.0, 289.5)
_TARGET_CONTRAST_K = {"ship": 8.0, "airplane": 10.0, "storage tank": 13.0, "vehicle": 15.0, "building": 6.5}


# ------------------------------------------------------------------------------------------------ layout
def _spectral_noise(rng: np.random.Generator, size: int, exponent: float) -> np.ndarray:
    """Zero-mean, unit-spread noise with a 1/f^exponent power spectrum (FFT synthesis)."""
    white = rng.standard_normal((size, size))
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    radius = np.hypot(fx, fy)
    radius[0, 0] = 1.0
    spectrum = np.fft.rfft2(white) / radius**exponent
    spectrum[0, 0] = 0.0
    field = np.fft.irfft2(spectrum, s=(size, size))
    return ((field - field.mean()) / max(float(field.std()), 1e-9)).astype(np.float32)


def _voronoi_cover(rng: np.random.Generator, size: int) -> tuple[np.ndarray, str, str | None]:
    dominant = int(rng.integers(len(LAND_COVERS)))
    cover_map = np.full((size, size), dominant, dtype=np.uint8)
    if rng.random() >= 0.5:
        return cover_map, LAND_COVERS[dominant], None
    secondary = int(rng.choice([i for i in range(len(LAND_COVERS)) if i != dominant]))
    sites = rng.uniform(0, size, size=(9, 2))
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    distance = np.hypot(xs[None] - sites[:, 0, None, None], ys[None] - sites[:, 1, None, None])
    cell = distance.argmin(axis=0)
    # Cells join the secondary cover nearest-first from one site until its share lies in 12–30 %.
    start = sites[int(rng.integers(len(sites)))]
    order = np.argsort(np.hypot(sites[:, 0] - start[0], sites[:, 1] - start[1]))
    target = rng.uniform(0.12, 0.30)
    chosen = np.zeros((size, size), dtype=bool)
    for site in order:
        grown = chosen | (cell == site)
        if grown.mean() > 0.30:
            break
        chosen = grown
        if chosen.mean() >= target:
            break
    if chosen.mean() < 0.05:
        return cover_map, LAND_COVERS[dominant], None
    cover_map[chosen] = secondary
    return cover_map, LAND_COVERS[dominant], LAND_COVERS[secondary]


def _texture(rng: np.random.Generator, cover_map: np.ndarray) -> np.ndarray:
    size = cover_map.shape[0]
    base = _spectral_noise(rng, size, 1.4)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    phi = rng.uniform(0, math.pi)
    rows = np.sin((xs * math.cos(phi) + ys * math.sin(phi)) * 2 * math.pi / rng.uniform(3.0, 6.0))
    swell = np.sin((xs * math.sin(phi) - ys * math.cos(phi)) * 2 * math.pi / rng.uniform(9.0, 16.0))
    texture = 0.7 * base
    texture = np.where(cover_map == LAND_COVERS.index("vegetation"), texture + 0.6 * rows, texture)
    texture = np.where(cover_map == LAND_COVERS.index("water"), texture + 0.5 * swell, texture)
    return ((texture - texture.mean()) / max(float(texture.std()), 1e-9)).astype(np.float32)


def _roads(rng: np.random.Generator, cover_map: np.ndarray) -> np.ndarray:
    size = cover_map.shape[0]
    urban = cover_map == LAND_COVERS.index("urban")
    roads = np.zeros((size, size), dtype=bool)
    if not urban.any():
        return roads
    width = max(1.5, 1.5 * size / _REFERENCE)
    lines = []
    for _ in range(int(rng.integers(3, 6))):
        angle = rng.uniform(0, math.pi)
        cx, cy = rng.uniform(0, size, 2)
        dx, dy = math.cos(angle) * size * 2, math.sin(angle) * size * 2
        lines.append(LineString([(cx - dx, cy - dy), (cx + dx, cy + dy)]).buffer(width / 2))
    shape = unary_union(lines)
    if not shape.is_empty:
        roads = features.rasterize([(shape, 1)], out_shape=(size, size), fill=0, dtype="uint8").astype(bool)
    return roads & urban


def ood_outline(
    cls: str, length: float, angle_deg: float, centre: tuple[float, float], variant: int = 0
) -> Polygon:
    """The footprint of an object of ``cls`` whose major extent is ``length`` px along ``angle_deg``
    (counter-clockwise from east, y down), drawn as this renderer draws it. ``variant`` picks a building's roof
    plan (0 rectangle, 1 T, 2 U)."""
    half = length / 2.0
    if cls == "ship":
        beam = max(0.22 * length, 3.6)
        # Square stern, parallel sides, then a half-ellipse bow.
        bow_start = half - min(0.35 * length, 1.6 * beam)
        arc = [
            (bow_start + (half - bow_start) * math.sin(t), -beam / 2 * math.cos(t))
            for t in np.linspace(0, math.pi, 9)
        ]
        local = [(-half, beam / 2), (-half, -beam / 2), *arc]
    elif cls == "airplane":
        body = max(0.12 * length, 3.0)
        span = half
        fuselage = shapely_box(-half, -body / 2, half - body / 2, body / 2).union(
            Point(half - body / 2, 0).buffer(body / 2, quad_segs=4)
        )
        wings = Polygon([(0.2 * length, 0), (-0.22 * length, -span), (-0.32 * length, -span), (-0.12 * length, 0),
                         (-0.32 * length, span), (-0.22 * length, span)])  # fmt: skip
        fins = Polygon([(-0.36 * length, 0), (-half, -0.17 * length), (-half, 0.17 * length)])
        shape = unary_union([fuselage, wings, fins])
        if not isinstance(shape, Polygon):
            shape = shape.convex_hull
        return _placed(shape, angle_deg, centre)
    elif cls == "storage tank":
        return Point(centre).buffer(half, quad_segs=6)
    elif cls == "vehicle":
        width = max(0.42 * length, 4.0)
        local = [(-half, -width / 2), (half, -width / 2), (half, width / 2), (-half, width / 2)]
    elif cls == "building":
        if variant == 1:  # T: a bar along the major axis and a stem
            stem = 0.32 * length
            local = [(-half, -half), (half, -half), (half, -half + stem), (stem / 2, -half + stem),
                     (stem / 2, half * 0.8), (-stem / 2, half * 0.8), (-stem / 2, -half + stem), (-half, -half + stem)]  # fmt: skip
        elif variant == 2:  # U: three wings around a yard
            wing = 0.3 * length
            depth = 0.8 * half
            local = [(-half, -depth), (half, -depth), (half, depth), (half - wing, depth), (half - wing, -depth + wing),
                     (-half + wing, -depth + wing), (-half + wing, depth), (-half, depth)]  # fmt: skip
        else:
            local = [(-half, -0.62 * half), (half, -0.62 * half), (half, 0.62 * half), (-half, 0.62 * half)]
    else:
        raise ValueError(f"unknown object class {cls!r}; expected one of {OBJECT_CLASSES}")
    return _placed(Polygon(local), angle_deg, centre)


def _placed(shape: Polygon, angle_deg: float, centre: tuple[float, float]) -> Polygon:
    # y points down, so a compass angle counter-clockwise (north up) is a clockwise rotation in pixel space.
    rotated = affinity.rotate(shape, -angle_deg, origin=(0, 0))
    return affinity.translate(rotated, centre[0], centre[1])


def _footprint(polygon: Polygon, size: int) -> np.ndarray:
    """Pixels whose centre lies in the polygon (GDAL's rasterisation rule)."""
    return features.rasterize([(polygon, 1)], out_shape=(size, size), fill=0, dtype="uint8").astype(bool)


def _connected(mask: np.ndarray) -> bool:
    return sum(1 for _ in features.shapes(mask.astype(np.uint8), mask=mask, connectivity=8)) == 1


def _place(rng: np.random.Generator, cover_map: np.ndarray, wanted: int) -> list[SceneObject]:
    size = cover_map.shape[0]
    scale = size / _REFERENCE
    inner = shapely_box(2 * scale, 2 * scale, size - 2 * scale, size - 2 * scale)
    gap = 3.0 * scale
    allowed = {
        cls: np.isin(cover_map, [LAND_COVERS.index(c) for c in covers])
        for cls, covers in ALLOWED_COVERS.items()
    }
    classes = [cls for cls in OBJECT_CLASSES if allowed[cls].mean() > 0.06]
    placed: list[SceneObject] = []
    for _ in range(80 * wanted):
        if len(placed) >= wanted or not classes:
            break
        cls = classes[int(rng.integers(len(classes)))]
        size_class = SIZES[int(rng.integers(len(SIZES)))]
        length = float(rng.uniform(*SIZE_RANGES_PX[size_class]) * scale)
        if cls in ORIENTED_CLASSES:
            axis = list(ORIENTATION_ANGLES.values())[int(rng.integers(len(ORIENTATION_ANGLES)))]
            angle = axis + rng.uniform(-_AXIS_JITTER_DEG, _AXIS_JITTER_DEG) + 180.0 * int(rng.integers(2))
        else:
            angle = rng.uniform(0.0, 360.0)
        ys, xs = np.nonzero(allowed[cls])
        pick = int(rng.integers(len(xs)))
        centre = (float(xs[pick] + rng.random()), float(ys[pick] + rng.random()))
        polygon = ood_outline(cls, length, angle, centre, variant=int(rng.integers(3)))
        if not inner.contains(polygon) or any(polygon.distance(o.polygon) < gap for o in placed):
            continue
        mask = _footprint(polygon, size)
        if mask.sum() < 6 or allowed[cls][mask].mean() < _ON_COVER or not _connected(mask):
            continue
        rows, cols = np.nonzero(mask)
        placed.append(
            SceneObject(
                index=len(placed),
                cls=cls,
                size=size_class,
                length_px=round(length, 3),
                angle_deg=angle % 360.0,
                colour=COLOURS[int(rng.integers(len(COLOURS)))],
                temperature=TEMPERATURES[int(rng.integers(len(TEMPERATURES)))],
                paint_gain=float(rng.uniform(0.9, 1.1)),
                polygon=polygon,
                mask=mask,
                bbox_px=(int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1),
                centroid_px=(float(cols.mean() + 0.5), float(rows.mean() + 0.5)),
                area_px=int(rows.size),
            )
        )
    return placed


def make_ood_scene(rng: np.random.Generator, scene_id: str, chip_size: int = _REFERENCE) -> Scene:
    """A scene of this renderer: Voronoi land cover, 1–6 objects of its own shapes, a georeference."""
    if chip_size < 64:
        raise ValueError(f"chip_size must be at least 64 px, got {chip_size}")
    cover_map, cover, secondary = _voronoi_cover(rng, chip_size)
    texture = _texture(rng, cover_map)
    roads = _roads(rng, cover_map)
    wanted = int(rng.integers(1, _MAX_OBJECTS + 1))
    objects = _place(rng, cover_map, wanted)
    while not objects:
        objects = _place(rng, cover_map, wanted)
    conditions = SceneConditions(
        daytime=bool(rng.random() < 0.5),
        sar_looks=int(rng.integers(2, 6)),
        sar_polarisations=("vv", "vh") if rng.random() < 0.6 else ("vv",),
        optical_gain=float(rng.uniform(0.9, 1.1)),
    )
    return Scene(
        scene_id=scene_id,
        chip_size=chip_size,
        cover=cover,
        secondary_cover=secondary,
        cover_map=cover_map,
        texture=texture,
        parcels=np.zeros_like(texture),
        streets=roads,
        objects=tuple(objects),
        georef=random_georeference(rng),
        conditions=conditions,
    )


# ------------------------------------------------------------------------------------------------ pixels
def _table(scene: Scene, values: Mapping[str, tuple[float, ...]]) -> np.ndarray:
    lookup = np.array([values[name] for name in LAND_COVERS], dtype=np.float32)
    return np.moveaxis(lookup[scene.cover_map], -1, 0)


def _strength(scene: Scene) -> np.ndarray:
    return np.array([_TEXTURE_STRENGTH[n] for n in LAND_COVERS], dtype=np.float32)[scene.cover_map]


def _blur(image: np.ndarray) -> np.ndarray:
    """The sensor's point-spread function: a separable [1, 2, 1] / 4 kernel on each band (edges repeated)."""
    padded = np.pad(image, [(0, 0), (1, 1), (1, 1)], mode="edge")
    rows = 0.25 * padded[:, :-2] + 0.5 * padded[:, 1:-1] + 0.25 * padded[:, 2:]
    return (0.25 * rows[:, :, :-2] + 0.5 * rows[:, :, 1:-1] + 0.25 * rows[:, :, 2:]).astype(np.float32)


def _local_coordinates(obj: SceneObject) -> tuple[np.ndarray, np.ndarray]:
    """Each object pixel's position along (u) and across (v) the object's axis, in units of its half length."""
    rows, cols = np.nonzero(obj.mask)
    cx, cy = obj.centroid_px
    theta = math.radians(obj.angle_deg)
    dx, dy = cols + 0.5 - cx, rows + 0.5 - cy
    u = dx * math.cos(theta) - dy * math.sin(theta)
    v = dx * math.sin(theta) + dy * math.cos(theta)
    half = max(obj.length_px / 2.0, 1.0)
    return u / half, v / half


def _pattern(obj: SceneObject) -> np.ndarray:
    """Relative brightness over the object's pixels: a deck line, a roof ridge, a tank's rim."""
    u, v = _local_coordinates(obj)
    pattern = np.ones(u.shape, dtype=np.float32)
    if obj.cls == "ship":
        pattern[np.abs(v) < 0.06] = 0.75
    elif obj.cls == "building":
        pattern[v > 0] = 0.8  # the shaded side of the roof
    elif obj.cls == "storage tank":
        radius = np.hypot(u, v)
        pattern[radius > 0.75] = 1.15
        pattern[(radius < 0.75) & (u < -0.2)] = 0.7
    elif obj.cls == "vehicle":
        pattern[(u > 0.2) & (u < 0.45)] = 0.55  # windscreen
    elif obj.cls == "airplane":
        pattern[np.abs(v) > 0.3] = 0.9
    return pattern


def _shadows(scene: Scene) -> np.ndarray:
    """Background pixels in the cast shadow (towards the lower right) of buildings and tanks."""
    size = scene.chip_size
    occupied = np.zeros((size, size), dtype=bool)
    shadow = np.zeros((size, size), dtype=bool)
    step = max(1, round(2 * size / _REFERENCE))
    for obj in scene.objects:
        occupied |= obj.mask
        if obj.cls in ("building", "storage tank"):
            shifted = np.zeros_like(obj.mask)
            shifted[step:, step:] = obj.mask[:-step, :-step]
            shadow |= shifted
    return shadow & ~occupied


def _reflectance(scene: Scene) -> np.ndarray:
    refl = _table(scene, _COVER_REFLECTANCE) * (1.0 + _strength(scene) * scene.texture)[None]
    refl[:, scene.streets] = np.array(_ROAD_REFLECTANCE, dtype=np.float32)[:, None]
    refl[:, _shadows(scene)] *= 0.45
    for obj in scene.objects:
        paint = np.array(_PAINT_REFLECTANCE[obj.colour], dtype=np.float32) * obj.paint_gain
        refl[:, obj.mask] = paint[:, None] * _pattern(obj)[None]
    return refl


def _optical(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    refl = _blur(_reflectance(scene)[[2, 1, 0]]) * scene.conditions.optical_gain
    dn = 255.0 * np.sqrt(np.clip(refl, 0.0, 1.0)) + 2.5 * rng.standard_normal(refl.shape)
    return np.clip(np.rint(dn), 0, 255).astype(np.uint8)


def _multispectral(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    refl = _blur(_reflectance(scene)) * scene.conditions.optical_gain
    dn = 10_000.0 * refl + 45.0 * rng.standard_normal(refl.shape)
    return np.clip(np.rint(dn), 0, 65_535).astype(np.uint16)


def _sar(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    sigma_db = _table(scene, _COVER_SIGMA0_DB) + 1.5 * _strength(scene)[None] / 0.1 * scene.texture[None]
    sigma_db[:, scene.streets] = np.array(_ROAD_SIGMA0_DB, dtype=np.float32)[:, None]
    for obj in scene.objects:
        target = np.array(_TARGET_SIGMA0_DB[obj.cls], dtype=np.float32) + rng.normal(0.0, 1.5)
        sigma_db[:, obj.mask] = target[:, None] + 10.0 * np.log10(_pattern(obj))[None]
    intensity = 10.0 ** (sigma_db / 10.0) + (10.0 ** (np.array(_SAR_NOISE_DB) / 10.0))[:, None, None]
    looks = scene.conditions.sar_looks
    clutter = rng.gamma(8.0, 1.0 / 8.0, size=intensity.shape)  # K-distributed: texture × speckle
    intensity = intensity * clutter * rng.gamma(looks, 1.0 / looks, size=intensity.shape)
    amplitude = np.sqrt(intensity).astype(np.float32)
    return amplitude[: len(scene.conditions.sar_polarisations)]


def _infrared(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    slot = 0 if scene.conditions.daytime else 1
    kelvin = _table(scene, {k: (v[slot],) for k, v in _COVER_KELVIN.items()})[0]
    kelvin = kelvin + 8.0 * _strength(scene) * scene.texture
    kelvin[scene.streets] = _ROAD_KELVIN[slot]
    for obj in scene.objects:
        ring = _footprint(obj.polygon.buffer(3.0).difference(obj.polygon), scene.chip_size)
        surroundings = float(np.median(kelvin[ring])) if ring.any() else float(kelvin[obj.mask].mean())
        sign = 1.0 if obj.temperature == "warm" else -1.0
        u, _ = _local_coordinates(obj)
        # A gradient along the object (engines, exhausts) instead of a uniform temperature.
        contrast = _TARGET_CONTRAST_K[obj.cls] * rng.uniform(0.85, 1.15) * (1.0 + 0.15 * u)
        kelvin[obj.mask] = surroundings + sign * contrast
    kelvin = _blur(kelvin[None])[0] + 0.08 * rng.standard_normal(kelvin.shape)
    return np.clip(np.rint(kelvin * 100.0), 0, 65_535).astype(np.uint16)[None]


def render_ood(scene: Scene, modality: str, rng: np.random.Generator) -> tuple[np.ndarray, tuple[str, ...]]:
    """Pixels of ``scene`` in ``modality`` (the generator's dtypes and units) and the band names."""
    renderers = {"optical": _optical, "multispectral": _multispectral, "sar": _sar, "infrared": _infrared}
    if modality not in renderers:
        raise ValueError(f"unknown modality {modality!r}; expected one of {MODALITIES}")
    image = renderers[modality](scene, rng)
    bands = scene.conditions.sar_polarisations if modality == "sar" else BANDS[modality]
    return image, tuple(bands)


# ------------------------------------------------------------------------------------------------ datasets
def generate_ood_dataset(
    out_dir: str | Path,
    n_scenes: int,
    seed: int,
    chip_size: int = _REFERENCE,
    tasks: Sequence[str] | None = None,
    modalities: Sequence[str] | None = None,
    records_per_task: int = 1,
    progress: bool = True,
) -> Path:
    """Write ``n_scenes`` OOD scenes in every chosen modality and their records (all ``test``); returns the path
    of ``records.jsonl``."""
    if n_scenes < 1:
        raise ValueError(f"n_scenes must be at least 1, got {n_scenes}")
    chosen_tasks = tuple(tasks) if tasks else TASKS
    chosen_modalities = tuple(modalities) if modalities else MODALITIES
    unknown = sorted(set(chosen_tasks) - set(TASK_LEVELS)) + sorted(set(chosen_modalities) - set(MODALITIES))
    if unknown:
        raise ValueError(f"unknown tasks or modalities {unknown}")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    counts: Counter[str] = Counter()
    records_path = out / "records.jsonl"
    with records_path.open("w", encoding="utf-8") as records, (out / "scenes.jsonl").open("w") as scenes:
        for index in tqdm(range(n_scenes), disable=not progress, desc="ood scenes", unit="scene"):
            scene = make_ood_scene(
                np.random.default_rng([seed, index, _LAYOUT]), f"ood{index:06d}", chip_size
            )
            masks: dict[int, str] = {}

            def mask_for(obj: SceneObject, scene: Scene = scene, masks: dict[int, str] = masks) -> str:
                if obj.index not in masks:
                    masks[obj.index] = f"masks/{scene.scene_id}_obj{obj.index}.png"
                    write_mask_png(out / masks[obj.index], obj.mask)
                return masks[obj.index]

            for modality in chosen_modalities:
                m = MODALITIES.index(modality)
                image, bands = render_ood(scene, modality, np.random.default_rng([seed, index, _RENDER + m]))
                name = f"images/{scene.scene_id}_{modality}.tif"
                tags = {"scene_id": scene.scene_id, "modality": modality, "generator": OOD_GENERATOR}
                write_geotiff(out / name, image, bands, scene.georef.crs, scene.georef.transform, tags)
                ctx = ChipContext(
                    scene=scene, modality=modality, bands=bands, image=name, split="test", mask_for=mask_for
                )
                rng = np.random.default_rng([seed, index, _RECORDS + m])
                for record in build_records(ctx, chosen_tasks, rng, records_per_task):
                    record["source"] = OOD_SOURCE
                    records.write(dump_record(record) + "\n")
                    counts["records"] += 1
            truth = scene.to_json()
            truth["split"] = "test"
            scenes.write(json.dumps(truth, separators=(",", ":")) + "\n")
    meta: dict[str, Any] = {
        "format": "earthgptx-records",
        "version": DATASET_VERSION,
        "renderer": OOD_GENERATOR,
        "seed": seed,
        "n_scenes": n_scenes,
        "chip_size": chip_size,
        "tasks": list(chosen_tasks),
        "modalities": list(chosen_modalities),
        "records_per_task": records_per_task,
        "counts": dict(counts),
    }
    (out / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    logger.info("wrote %d OOD records for %d scenes to %s", counts["records"], n_scenes, records_path)
    return records_path


def ensure_ood_dataset(
    out_dir: str | Path, n_scenes: int, seed: int, chip_size: int = _REFERENCE, records_per_task: int = 1
) -> Path:
    """``records.jsonl`` of the OOD set in ``out_dir``, generated unless one with the same settings is there."""
    out = Path(out_dir)
    meta_path = out / "dataset.json"
    if meta_path.is_file() and (out / "records.jsonl").is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        wanted = (OOD_GENERATOR, seed, n_scenes, chip_size, records_per_task, list(TASKS), list(MODALITIES))
        found = tuple(
            meta.get(k)
            for k in ("renderer", "seed", "n_scenes", "chip_size", "records_per_task", "tasks", "modalities")
        )
        if found == wanted:
            return out / "records.jsonl"
    return generate_ood_dataset(
        out, n_scenes, seed, chip_size, records_per_task=records_per_task, progress=False
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m earthgptx.data.ood_render", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--scenes", required=True, type=int, help="number of scenes")
    parser.add_argument("--seed", type=int, default=4242)
    parser.add_argument("--chip-size", type=int, default=_REFERENCE)
    parser.add_argument("--tasks", help=f"comma-separated subset of: {','.join(TASKS)}")
    parser.add_argument("--modalities", help=f"comma-separated subset of: {','.join(MODALITIES)}")
    parser.add_argument("--records-per-task", type=int, default=1)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def split(text: str | None) -> list[str] | None:
        return [t.strip() for t in text.split(",") if t.strip()] if text else None

    generate_ood_dataset(
        args.out,
        args.scenes,
        args.seed,
        args.chip_size,
        tasks=split(args.tasks),
        modalities=split(args.modalities),
        records_per_task=args.records_per_task,
        progress=not args.no_progress,
    )


if __name__ == "__main__":
    main()
