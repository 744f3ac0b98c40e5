"""Scene layout: a land-cover map and non-overlapping objects with exact ground truth.

A scene is modality-free geometry. ``render.py`` turns it into pixels of each modality; the masks, boxes and
centroids kept here are taken from the same rasterised footprints the renderer paints, so the ground truth
agrees with the pixels by construction.

Conventions: chip pixel coordinates, x to the right, y down, origin at the chip's top-left corner; pixel
``(row, col)`` covers ``[col, col + 1) × [row, row + 1)``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely
from rasterio import features
from shapely.geometry import Point, Polygon, box, mapping
from shapely.ops import unary_union

from earthgptx.data.vocabulary import (
    ALLOWED_COVERS,
    COLOURS,
    LAND_COVERS,
    OBJECT_CLASSES,
    ORIENTATION_ANGLES,
    ORIENTED_CLASSES,
    SIZE_RANGES_PX,
    SIZES,
    TEMPERATURES,
)
from earthgptx.geo import GeoReference, random_georeference

REFERENCE_CHIP = 128
MAX_OBJECTS = 6
# The footprint of an object must lie on its allowed land cover (ships on water ...) to this fraction.
COVER_AGREEMENT = 0.97


@dataclass(frozen=True)
class SceneObject:
    """One object with its geometry (chip pixels) and attributes."""

    index: int
    cls: str
    size: str
    length_px: float
    angle_deg: float
    colour: str
    temperature: str
    paint_gain: float  # brightness of this object's paint relative to its colour's nominal spectrum
    polygon: Polygon
    mask: np.ndarray = field(repr=False)
    # Measured once from ``mask`` (see ``measure_mask``): the rendered pixels, not the polygon.
    bbox_px: tuple[int, int, int, int] = (0, 0, 0, 0)  # tight box [x1, y1, x2, y2) in pixel edges
    centroid_px: tuple[float, float] = (0.0, 0.0)  # mean of the pixel centres, (x, y)
    area_px: int = 0

    @property
    def orientation(self) -> str | None:
        """Axis of the major extent, or ``None`` for classes without one (tanks, L-shaped buildings)."""
        if self.cls not in ORIENTED_CLASSES:
            return None
        axis = self.angle_deg % 180.0
        return min(ORIENTATION_ANGLES, key=lambda name: abs(ORIENTATION_ANGLES[name] - axis))

    def attributes(self) -> dict[str, str]:
        values = {"size": self.size, "colour": self.colour, "temperature": self.temperature}
        if self.orientation is not None:
            values["orientation"] = self.orientation
        return values


@dataclass(frozen=True)
class SceneConditions:
    """Acquisition conditions drawn once per scene and shared by its modalities."""

    daytime: bool
    sar_looks: int
    sar_polarisations: tuple[str, ...]
    optical_gain: float


@dataclass(frozen=True)
class SceneStyle:
    """Domain randomisation of one scene (``generate``'s ``randomise`` setting; ``None`` on a plain scene).

    Drawn from the scene's own stream (:func:`draw_style`), so a randomised scene is rebuilt exactly from its seed.
    ``shape_seed`` drives the per-object shape variants (``object_outline``'s ``variant``); the rest are sensor
    and product settings that ``render.py`` applies: gains and offsets, texture strength, noise, the optical
    display stretch, the SAR calibration and number of looks, a thermal offset and contrast scale.
    """

    shape_seed: int
    texture_gain: float  # multiplies every cover's texture strength
    noise_gain: float  # multiplies every sensor's noise
    band_gains: tuple[
        float, float, float, float
    ]  # blue, green, red, nir: a colour balance / calibration error
    reflectance_offset: float  # additive path radiance (haze) in reflectance units
    stretch: str  # optical display: "sqrt" (the plain generator's), "gamma" or "linear"
    stretch_param: float  # gamma exponent, or the linear stretch's gain
    ms_offset_dn: float  # multispectral DN offset
    sar_calibration_db: float  # constant added to every sigma0 (a miscalibrated product)
    sar_looks: int
    thermal_offset_k: float
    thermal_contrast_gain: float
    # Sensor and scene effects (``generate``'s ``effects`` setting, stage 15); their defaults change nothing, so a
    # style drawn without them renders, and is written, exactly as before they existed.
    effects: bool = False
    psf_sigma_px: float = 0.0  # a Gaussian point-spread function over the radiometry, before noise
    # the direction the cast shadows of buildings and tanks fall (image angle, y down)
    shadow_azimuth_deg: float = 0.0
    shadow_length: float = 0.0  # shadow length as a share of the object's length (0: no shadows)
    shadow_darkness: float = 1.0  # reflectance factor inside a shadow
    # reflectance factor on one side of a building's ridge (a lit and a shaded slope)
    roof_shading: float = 1.0
    sar_texture_shape: float = 0.0  # shape of a Gamma-distributed clutter texture under the speckle (0: none)
    # Object textures (``generate``'s ``textures`` setting): the seed of each object's brightness pattern, the same
    # class-blind patterns for every class (``render.object_texture``); 0: none, and left out of the JSON.
    texture_seed: int = 0

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if not self.effects:
            for name in EFFECT_FIELDS:
                del out[name]
        if not self.texture_seed:
            del out["texture_seed"]
        return out


EFFECT_FIELDS = ("effects", "psf_sigma_px", "shadow_azimuth_deg", "shadow_length", "shadow_darkness",
                 "roof_shading", "sar_texture_shape")  # fmt: skip


def draw_style(rng: np.random.Generator, effects: bool = False, textures: bool = False) -> SceneStyle:
    """A random :class:`SceneStyle` (ranges chosen to stay inside what real products of each sensor show).

    ``effects`` also draws the sensor and scene effects (blur, cast shadows, roof shading, SAR clutter texture),
    after every other draw, so the other settings are the same draws with or without them; ``textures`` then draws
    the seed of the objects' textures, last of all, for the same reason.
    """
    stretch = str(rng.choice(["sqrt", "gamma", "linear"]))
    param = {"sqrt": 0.5, "gamma": float(rng.uniform(0.35, 0.8)), "linear": float(rng.uniform(1.5, 4.0))}[
        stretch
    ]
    return SceneStyle(
        shape_seed=int(rng.integers(2**31)),
        texture_gain=float(np.exp(rng.uniform(np.log(0.4), np.log(2.5)))),
        noise_gain=float(np.exp(rng.uniform(np.log(0.5), np.log(3.0)))),
        band_gains=tuple(float(g) for g in rng.uniform(0.85, 1.15, 4) * rng.uniform(0.75, 1.3)),  # type: ignore[arg-type]
        reflectance_offset=float(rng.uniform(-0.01, 0.04)),
        stretch=stretch,
        stretch_param=param,
        ms_offset_dn=float(rng.uniform(0.0, 300.0)),
        sar_calibration_db=float(rng.uniform(-5.0, 5.0)),
        sar_looks=int(rng.integers(1, 10)),
        thermal_offset_k=float(rng.uniform(-5.0, 5.0)),
        thermal_contrast_gain=float(rng.uniform(0.6, 1.4)),
        **(_draw_effects(rng) if effects else {}),
        texture_seed=int(rng.integers(1, 2**31)) if textures else 0,  # drawn only with textures, after the rest
    )


def _draw_effects(rng: np.random.Generator) -> dict[str, Any]:
    """The effect settings of a style: each is off on part of the scenes, so the plain look stays common."""
    psf, shadow, length, darkness, shading, texture = rng.random(6)
    return {
        "effects": True,
        # A sharp product to one blurred by about two pixels' width (a 10 m band resampled, an older sensor).
        "psf_sigma_px": float(0.3 + 0.9 * psf) if psf < 0.7 else 0.0,
        "shadow_azimuth_deg": float(rng.uniform(0.0, 360.0)),
        "shadow_length": float(0.15 + 0.55 * length) if shadow < 0.6 else 0.0,
        "shadow_darkness": float(0.35 + 0.4 * darkness),
        "roof_shading": float(0.65 + 0.3 * shading) if shading < 0.8 else 1.0,
        # Heterogeneous clutter (K-distributed intensity): small shapes are rough, large ones nearly uniform.
        "sar_texture_shape": float(np.exp(rng.uniform(np.log(1.5), np.log(30.0)))) if texture < 0.6 else 0.0,
    }


@dataclass(frozen=True, eq=False)  # identity semantics: renderers cache per-scene intermediates
class Scene:
    """Everything needed to render the four modalities and to write the ground truth."""

    scene_id: str
    chip_size: int
    cover: str
    secondary_cover: str | None
    cover_map: np.ndarray = field(repr=False)  # (H, W) uint8 index into LAND_COVERS
    texture: np.ndarray = field(repr=False)  # (H, W) float32, zero mean, unit spread
    parcels: np.ndarray = field(repr=False)  # (H, W) float32 in {0, 1/3, 2/3, 1}: field parcels
    streets: np.ndarray = field(repr=False)  # (H, W) bool, only on urban cover
    objects: tuple[SceneObject, ...]
    georef: GeoReference
    conditions: SceneConditions
    style: SceneStyle | None = None  # domain randomisation; None: the plain generator

    @property
    def instance_map(self) -> np.ndarray:
        """(H, W) int16: 0 for background, ``i + 1`` on object ``i``."""
        out = np.zeros((self.chip_size, self.chip_size), dtype=np.int16)
        for obj in self.objects:
            out[obj.mask] = obj.index + 1
        return out

    def count(self, cls: str) -> int:
        return sum(1 for obj in self.objects if obj.cls == cls)

    def to_json(self) -> dict[str, Any]:
        """Ground truth of the scene for ``scenes.jsonl`` (geometry in chip pixels)."""
        return {
            "scene_id": self.scene_id,
            "chip_size": self.chip_size,
            "cover": self.cover,
            "secondary_cover": self.secondary_cover,
            "cover_fractions": {
                name: round(float((self.cover_map == i).mean()), 4) for i, name in enumerate(LAND_COVERS)
            },
            "crs": f"EPSG:{self.georef.epsg}",
            "transform": list(self.georef.transform)[:6],
            "lon": self.georef.lon,
            "lat": self.georef.lat,
            "daytime": self.conditions.daytime,
            "objects": [
                {
                    "index": obj.index,
                    "class": obj.cls,
                    "bbox_px": list(obj.bbox_px),
                    "centroid_px": [round(v, 3) for v in obj.centroid_px],
                    "area_px": obj.area_px,
                    "angle_deg": obj.angle_deg,
                    "attributes": obj.attributes(),
                    "polygon": mapping(obj.polygon)["coordinates"],
                }
                for obj in self.objects
            ],
        } | ({"style": self.style.to_json()} if self.style is not None else {})


def measure_mask(mask: np.ndarray) -> tuple[tuple[int, int, int, int], tuple[float, float], int]:
    """Tight box ``[x1, y1, x2, y2)`` (pixel edges), centroid ``(x, y)`` of pixel centres, and pixel count."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        raise ValueError("an empty mask has no box")
    box_ = (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)
    return box_, (float(cols.mean() + 0.5), float(rows.mean() + 0.5)), int(rows.size)


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Band-limited noise: a ``(cells + 1)²`` lattice of normal values bilinearly upsampled to ``size²``."""
    lattice = rng.standard_normal((cells + 1, cells + 1))
    coords = np.linspace(0.0, cells, size, endpoint=False) + cells / (2 * size)
    i0 = np.minimum(coords.astype(np.int64), cells - 1)
    frac = coords - i0
    top = lattice[i0][:, i0] * (1 - frac)[None, :] + lattice[i0][:, i0 + 1] * frac[None, :]
    bottom = lattice[i0 + 1][:, i0] * (1 - frac)[None, :] + lattice[i0 + 1][:, i0 + 1] * frac[None, :]
    out = top * (1 - frac)[:, None] + bottom * frac[:, None]
    spread = out.std()
    return ((out - out.mean()) / (spread if spread > 0 else 1.0)).astype(np.float32)


def rasterize_polygon(polygon: Polygon, size: int) -> np.ndarray:
    """Pixels whose centre lies inside ``polygon`` (x = column, y = row).

    Only the pixel centres inside the polygon's bounds are tested (vectorised ``shapely.contains_xy``),
    which is several times faster than a GDAL rasterisation call for footprints this small.
    """
    mask = np.zeros((size, size), dtype=bool)
    x1, y1, x2, y2 = polygon.bounds
    c0, r0 = max(int(math.floor(x1)), 0), max(int(math.floor(y1)), 0)
    c1, r1 = min(int(math.ceil(x2)), size), min(int(math.ceil(y2)), size)
    if c1 <= c0 or r1 <= r0:
        return mask
    xs, ys = np.meshgrid(np.arange(c0, c1) + 0.5, np.arange(r0, r1) + 0.5)
    mask[r0:r1, c0:c1] = shapely.contains_xy(polygon, xs, ys)
    return mask


def count_components(mask: np.ndarray) -> int:
    """Number of 8-connected regions of ``True`` pixels."""
    if not mask.any():
        return 0
    shapes = features.shapes(mask.astype(np.uint8), mask=mask, connectivity=8)
    return sum(1 for _ in shapes)


def draw_variant(cls: str, rng: np.random.Generator, effects: bool = False) -> dict[str, float]:
    """Shape parameters of one object of a randomised scene (``object_outline``'s ``variant``). With ``effects``
    buildings also take composite roofs: a block with a notch cut from one side (a U, or an L when the notch
    reaches an end) and two crossing wings (a T, or a cross)."""
    if cls == "ship":
        return {"beam": float(rng.uniform(0.2, 0.36)), "bow": float(rng.uniform(0.5, 1.3))}
    if cls == "airplane":
        return {
            "body": float(rng.uniform(0.12, 0.2)),
            "chord": float(rng.uniform(0.14, 0.26)),
            "sweep": float(rng.uniform(-0.05, 0.35)),  # 0.22: the plain generator's swept wings
            "tail": float(rng.uniform(0.1, 0.16)),
        }
    if cls == "vehicle":
        return {"width": float(rng.uniform(0.3, 0.6)), "cut": float(rng.uniform(0.0, 0.35))}
    if cls == "building":
        # 0: L-shaped roof with arms of a random thickness; 1: a rectangle, axis-aligned; with effects also
        # 2: a notched block, 3: two crossing wings
        roof = {"kind": float(rng.integers(4 if effects else 2)), "arm": float(rng.uniform(0.35, 0.65)),
                "aspect": float(rng.uniform(0.45, 1.0))}  # fmt: skip
        if effects:  # where along the block the notch or the second wing sits
            roof["at"] = float(rng.uniform(0.0, 1.0))
        return roof
    return {}


def object_outline(
    cls: str,
    length: float,
    angle_deg: float,
    centre: tuple[float, float],
    variant: dict[str, float] | None = None,
) -> Polygon:
    """Footprint of an object of class ``cls`` whose major extent is ``length`` px along ``angle_deg``.

    Shapes are chosen to stay distinct at 12 px: a pointed hull, a swept-wing cross, a disk, a short
    rectangle and an L-shaped roof. Thin parts keep at least ~3 px so the rasterised footprint stays one
    connected region. ``variant`` (:func:`draw_variant`, randomised scenes only) changes the proportions: hull
    beam and bow, wing sweep and chord, vehicle width (car to truck), L-shaped or rectangular roofs.
    """
    if variant:
        return _variant_outline(cls, length, angle_deg, centre, variant)
    half = length / 2.0
    if cls == "ship":
        beam = max(0.28 * length, 3.6)
        bow = min(beam * 0.9, half)
        local = [
            (-half, -beam / 2),
            (half - bow, -beam / 2),
            (half, 0.0),
            (half - bow, beam / 2),
            (-half, beam / 2),
        ]
        return _place(local, angle_deg, centre)
    if cls == "airplane":
        body = max(0.16 * length, 3.0)
        chord = max(0.2 * length, 3.0)
        tail = max(0.12 * length, 2.6)
        fuselage = [
            (-half, -body / 2),
            (half - body / 2, -body / 2),
            (half, 0.0),
            (half - body / 2, body / 2),
            (-half, body / 2),
        ]
        wings = [
            (0.12 * length, -body / 2), (-0.10 * length, -half), (-0.10 * length - chord, -half),
            (0.12 * length - chord, -body / 2), (0.12 * length - chord, body / 2),
            (-0.10 * length - chord, half), (-0.10 * length, half), (0.12 * length, body / 2),
        ]  # fmt: skip
        tailplane = [
            (-half, -0.2 * length),
            (-half + tail, -0.2 * length),
            (-half + tail, 0.2 * length),
            (-half, 0.2 * length),
        ]
        parts = [_place(p, angle_deg, centre) for p in (fuselage, wings, tailplane)]
        merged = unary_union(parts)
        if not isinstance(merged, Polygon):  # parts overlap by construction; guard anyway
            merged = merged.convex_hull
        return merged
    if cls == "storage tank":
        return Point(centre).buffer(half, quad_segs=12)
    if cls == "vehicle":
        width = max(0.5 * length, 4.0)
        cut = min(1.0, width / 4)
        local = [
            (-half + cut, -width / 2), (half - cut, -width / 2), (half, -width / 2 + cut), (half, width / 2 - cut),
            (half - cut, width / 2), (-half + cut, width / 2), (-half, width / 2 - cut), (-half, -width / 2 + cut),
        ]  # fmt: skip
        return _place(local, angle_deg, centre)
    if cls == "building":
        local = [(-half, -half), (half, -half), (half, 0.0), (0.0, 0.0), (0.0, half), (-half, half)]
        return _place(local, angle_deg, centre)
    raise ValueError(f"unknown object class {cls!r}; expected one of {OBJECT_CLASSES}")


def _variant_outline(
    cls: str, length: float, angle_deg: float, centre: tuple[float, float], v: dict[str, float]
) -> Polygon:
    half = length / 2.0
    if cls == "ship":
        beam = max(v["beam"] * length, 3.6)
        bow = min(beam * v["bow"], half)
        local = [
            (-half, -beam / 2),
            (half - bow, -beam / 2),
            (half, 0.0),
            (half - bow, beam / 2),
            (-half, beam / 2),
        ]
        return _place(local, angle_deg, centre)
    if cls == "airplane":
        body = max(v["body"] * length, 3.0)
        chord = max(v["chord"] * length, 3.0)
        tail = max(v["tail"] * length, 2.6)
        root = 0.12 * length
        tip = root - v["sweep"] * length  # the wing tip's along-axis position: swept back when sweep > 0
        fuselage = [(-half, -body / 2), (half - body / 2, -body / 2), (half, 0.0), (half - body / 2, body / 2),
                    (-half, body / 2)]  # fmt: skip
        wings = [
            (root, -body / 2), (tip, -half), (tip - chord, -half), (root - chord, -body / 2),
            (root - chord, body / 2), (tip - chord, half), (tip, half), (root, body / 2),
        ]  # fmt: skip
        tailplane = [(-half, -0.2 * length), (-half + tail, -0.2 * length), (-half + tail, 0.2 * length),
                     (-half, 0.2 * length)]  # fmt: skip
        merged = unary_union([_place(p, angle_deg, centre) for p in (fuselage, wings, tailplane)])
        return merged if isinstance(merged, Polygon) else merged.convex_hull
    if cls == "vehicle":
        width = max(v["width"] * length, 3.6)
        cut = v["cut"] * width / 2
        local = [
            (-half + cut, -width / 2), (half - cut, -width / 2), (half, -width / 2 + cut), (half, width / 2 - cut),
            (half - cut, width / 2), (-half + cut, width / 2), (-half, width / 2 - cut), (-half, -width / 2 + cut),
        ]  # fmt: skip
        return _place(local, angle_deg, centre)
    if cls == "building":
        if v["kind"] == 1:  # an axis-aligned rectangle
            across = max(v["aspect"] * length, 4.0) / 2
            cx, cy = centre
            return box(cx - half, cy - across, cx + half, cy + across)
        if v["kind"] >= 2:
            return _place(_composite_roof(length, v), angle_deg, centre)
        arm = max(v["arm"] * length, 3.5)
        local = [(-half, -half), (half, -half), (half, -half + arm), (-half + arm, -half + arm),
                 (-half + arm, half), (-half, half)]  # fmt: skip
        return _place(local, angle_deg, centre)
    return object_outline(cls, length, angle_deg, centre)


def _composite_roof(length: float, v: dict[str, float]) -> list[tuple[float, float]]:
    """The local outline (u along the major axis, v across) of a notched block (kind 2) or of two crossing wings
    (kind 3), within ``length`` each way. Every part keeps at least 3.5 px across (a part that would be thinner
    is dropped: a notch then reaches the block's end), so the roof rasterises as one region."""
    half = length / 2.0
    depth = min(max(v["aspect"] * length, 7.5), length)  # the block's extent across its major axis
    width = max(0.3 * length, 3.5)  # the notch's or the second wing's extent along the major axis
    start = -half + v["at"] * (length - width)
    if start - -half < 3.5:
        start = -half
    if half - (start + width) < 3.5:
        start = half - width if start > -half else start
    end = start + width
    if v["kind"] == 2:  # a notch cut from the front (v > 0) side, leaving a strip along the back
        top, bottom = -depth / 2, depth / 2
        cut = top + min(max(v["arm"] * depth, 3.5), depth - 3.5)
        right = [(half, bottom), (end, bottom), (end, cut)] if end < half else [(half, cut)]
        left = [(start, cut), (start, bottom), (-half, bottom)] if start > -half else [(-half, cut)]
        return [(-half, top), (half, top), *right, *left]
    # kind 3: a bar along the major axis and a wing across it on one side of the bar (a T) or both (a cross)
    bar = max(v["arm"] * depth * 0.5, 3.5) / 2
    reach = max(depth / 2, bar + 3.5)
    far = -reach if v["at"] < 0.5 else -bar
    return [(-half, -bar), (start, -bar), (start, far), (end, far), (end, -bar), (half, -bar), (half, bar),
            (end, bar), (end, reach), (start, reach), (start, bar), (-half, bar)]  # fmt: skip


def _place(local: list[tuple[float, float]], angle_deg: float, centre: tuple[float, float]) -> Polygon:
    # Local u runs along the major axis, v across it. With y pointing down, the axis at compass angle θ
    # (counter-clockwise from east, north up) is (cos θ, -sin θ) in image coordinates.
    theta = math.radians(angle_deg)
    ax, ay = math.cos(theta), -math.sin(theta)
    bx, by = math.sin(theta), math.cos(theta)
    cx, cy = centre
    return Polygon([(cx + u * ax + v * bx, cy + u * ay + v * by) for u, v in local])


def _land_cover(rng: np.random.Generator, size: int) -> tuple[np.ndarray, str, str | None]:
    dominant = int(rng.integers(len(LAND_COVERS)))
    cover_map = np.full((size, size), dominant, dtype=np.uint8)
    secondary: int | None = None
    if rng.random() < 0.5:
        secondary = int(rng.choice([i for i in range(len(LAND_COVERS)) if i != dominant]))
        # A tilted gradient plus low-frequency noise gives one coherent patch (a lake, a shore, a town edge)
        # rather than confetti; the quantile fixes its share so the dominant cover stays ≥ 70 %.
        phi = rng.uniform(0, 2 * math.pi)
        ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / size
        field_ = smooth_noise(rng, size, 2) + 2.0 * (xs * math.cos(phi) + ys * math.sin(phi))
        share = rng.uniform(0.12, 0.30)
        cover_map[field_ > np.quantile(field_, 1.0 - share)] = secondary
    return cover_map, LAND_COVERS[dominant], LAND_COVERS[secondary] if secondary is not None else None


def _streets(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    spacing = rng.uniform(16, 26) * scale
    width = max(2.0, 2.0 * scale)
    phi = math.radians(rng.uniform(0, 90))
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    u = xs * math.cos(phi) + ys * math.sin(phi) + rng.uniform(0, spacing)
    v = -xs * math.sin(phi) + ys * math.cos(phi) + rng.uniform(0, spacing)
    return (np.mod(u, spacing) < width) | (np.mod(v, spacing) < width)


def make_scene(
    rng: np.random.Generator,
    scene_id: str,
    chip_size: int = REFERENCE_CHIP,
    n_objects: int | None = None,
    style: SceneStyle | None = None,
) -> Scene:
    """Draw a scene: land cover, 1–6 objects placed without overlap on allowed cover, georeference.

    ``n_objects=0`` draws an empty scene (the negatives of ``generate``); ``style`` randomises the objects'
    shapes here and the sensors in ``render.py``. Without them the draws are exactly those of the plain generator.
    """
    if chip_size < 64:
        raise ValueError(f"chip_size must be at least 64 px, got {chip_size}")
    if n_objects is not None and not 0 <= n_objects <= MAX_OBJECTS:
        raise ValueError(f"n_objects must be in 0..{MAX_OBJECTS}, got {n_objects}")
    size = chip_size
    scale = size / REFERENCE_CHIP
    cover_map, cover, secondary = _land_cover(rng, size)
    texture = 0.65 * smooth_noise(rng, size, 4) + 0.35 * smooth_noise(rng, size, 16)
    parcels = np.floor((smooth_noise(rng, size, 6) + 2.0).clip(0, 3.999)) / 3.0
    urban = cover_map == LAND_COVERS.index("urban")
    streets = _streets(rng, size, scale) & urban if urban.any() else np.zeros_like(urban)
    target = int(rng.integers(1, MAX_OBJECTS + 1)) if n_objects is None else n_objects
    shapes = np.random.default_rng(style.shape_seed) if style is not None else None
    effects = style is not None and style.effects
    objects = _place_objects(rng, cover_map, target, scale, shapes, effects) if target else []
    while target and not objects:  # a scene asked to hold objects has one; an empty draw is vanishingly rare
        objects = _place_objects(rng, cover_map, target, scale, shapes, effects)
    conditions = SceneConditions(
        daytime=bool(rng.random() < 0.6),
        sar_looks=int(rng.integers(3, 7)),
        sar_polarisations=("vv", "vh") if rng.random() < 0.7 else ("vv",),
        optical_gain=float(rng.uniform(0.85, 1.15)),
    )
    return Scene(
        scene_id=scene_id,
        chip_size=size,
        cover=cover,
        secondary_cover=secondary,
        cover_map=cover_map,
        texture=texture.astype(np.float32),
        parcels=parcels.astype(np.float32),
        streets=streets,
        objects=tuple(objects),
        georef=random_georeference(rng),
        conditions=conditions,
        style=style,
    )


def _place_objects(
    rng: np.random.Generator,
    cover_map: np.ndarray,
    target: int,
    scale: float,
    shapes: np.random.Generator | None = None,
    effects: bool = False,
) -> list[SceneObject]:
    size = cover_map.shape[0]
    gap = max(3.0, 4.0 * scale)
    edge = max(2.0, 2.0 * scale)
    chip_inner = box(edge, edge, size - edge, size - edge)
    cover_index = {name: i for i, name in enumerate(LAND_COVERS)}
    allowed_pixels: dict[str, np.ndarray] = {}
    allowed_masks: dict[str, np.ndarray] = {}
    for cls, covers in ALLOWED_COVERS.items():
        table = np.zeros(len(LAND_COVERS), dtype=bool)
        table[[cover_index[c] for c in covers]] = True
        allowed = table[cover_map]
        allowed_masks[cls] = allowed
        allowed_pixels[cls] = np.flatnonzero(allowed)
    # A class needs room for at least a small footprint of its cover.
    feasible = [cls for cls in OBJECT_CLASSES if allowed_pixels[cls].size > 0.06 * size * size]

    placed: list[SceneObject] = []
    attempts = 0
    while len(placed) < target and attempts < 60 * target and feasible:
        attempts += 1
        cls = feasible[int(rng.integers(len(feasible)))]
        size_class = SIZES[int(rng.integers(len(SIZES)))]
        low, high = SIZE_RANGES_PX[size_class]
        length = float(rng.uniform(low, high) * scale)
        if cls in ORIENTED_CLASSES:
            axis = list(ORIENTATION_ANGLES.values())[int(rng.integers(len(ORIENTATION_ANGLES)))]
            angle = axis + 180.0 * int(rng.integers(2))  # bow or nose may point either way along the axis
        else:
            angle = 45.0 * int(rng.integers(8))
        # Centres are drawn on the allowed cover so ships rarely need many tries to find water.
        flat = int(allowed_pixels[cls][int(rng.integers(allowed_pixels[cls].size))])
        centre = (flat % size + float(rng.uniform(0, 1)), flat // size + float(rng.uniform(0, 1)))
        variant = draw_variant(cls, shapes, effects) if shapes is not None else None
        if variant and cls == "building" and variant["kind"] == 1:
            angle = 90.0 * (angle // 90.0)  # rectangular roofs are axis-aligned
        polygon = object_outline(cls, length, angle, centre, variant)
        if not chip_inner.contains(polygon):
            continue
        if any(polygon.distance(other.polygon) < gap for other in placed):
            continue
        mask = rasterize_polygon(polygon, size)
        if not mask.any() or allowed_masks[cls][mask].mean() < COVER_AGREEMENT:
            continue
        # Only the swept wings of a small airplane are thin enough to break apart when rasterised (and, with
        # effects, a composite roof's narrow parts).
        if (cls == "airplane" or effects) and count_components(mask) != 1:
            continue
        bbox, centroid, area = measure_mask(mask)
        placed.append(
            SceneObject(
                index=len(placed),
                cls=cls,
                size=size_class,
                length_px=round(length, 3),
                angle_deg=angle % 360.0,
                colour=COLOURS[int(rng.integers(len(COLOURS)))],
                temperature=TEMPERATURES[int(rng.integers(len(TEMPERATURES)))],
                paint_gain=float(rng.uniform(0.95, 1.05)),
                polygon=polygon,
                mask=mask,
                bbox_px=bbox,
                centroid_px=centroid,
                area_px=area,
            )
        )
    return placed
