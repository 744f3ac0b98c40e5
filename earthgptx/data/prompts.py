"""Visual prompts for an object: a point inside it, a box around it, a jittered outline, a scribble across it.

All coordinates are chip pixels (floats, x right, y down) and stay inside ``[0, size]``. The dicts returned
are the ``prompts`` entries of a record (``{"type": "point", "point": [x, y]}`` ...).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import shapely
from shapely.geometry import LineString, MultiLineString, Polygon
from shapely.geometry import box as shapely_box

from earthgptx.data.scene import SceneObject

Prompt = dict[str, Any]


def _clip(value: float, size: int) -> float:
    return round(min(max(value, 0.0), float(size)), 2)


def _clip_many(values: Sequence[float] | np.ndarray, size: int) -> list[float]:
    return [float(v) for v in np.round(np.clip(np.asarray(values, dtype=float), 0.0, float(size)), 2)]


def _erode(mask: np.ndarray) -> np.ndarray:
    """One-pixel 4-neighbour erosion (so a prompted point is not on the object's rim)."""
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return inner


def point_prompt(obj: SceneObject, rng: np.random.Generator, size: int) -> Prompt:
    """A point on a random interior pixel of the object (its rendered pixels, away from the rim)."""
    x1, y1, x2, y2 = obj.bbox_px
    # Work on the box grown by a background pixel on each side: the same erosion, a fraction of the work.
    crop = np.pad(obj.mask[y1:y2, x1:x2], 1)
    inner = _erode(crop)
    rows, cols = np.nonzero(inner if inner.any() else crop)
    pick = int(rng.integers(rows.size))
    x = x1 - 1 + cols[pick] + 0.5 + rng.uniform(-0.25, 0.25)
    y = y1 - 1 + rows[pick] + 0.5 + rng.uniform(-0.25, 0.25)
    return {"type": "point", "point": [_clip(x, size), _clip(y, size)]}


def box_prompt(obj: SceneObject, rng: np.random.Generator, size: int) -> Prompt:
    """The object's tight box with each side moved by up to about a pixel, as a person would draw it."""
    x1, y1, x2, y2 = obj.bbox_px
    jitter = rng.uniform(-0.8, 1.5, 4)
    return {
        "type": "box",
        "box": [
            _clip(x1 - jitter[0], size),
            _clip(y1 - jitter[1], size),
            _clip(x2 + jitter[2], size),
            _clip(y2 + jitter[3], size),
        ],
    }


def polygon_prompt(obj: SceneObject, rng: np.random.Generator, size: int) -> Prompt:
    """A jittered outline around the object: its footprint grown by ~1 px, 8–14 vertices, each nudged."""
    outline = obj.polygon.buffer(float(rng.uniform(0.3, 1.5)), quad_segs=4).exterior
    n = int(rng.integers(8, 15))
    start = float(rng.uniform(0, 1))
    at = shapely.line_interpolate_point(outline, (start + np.arange(n) / n) % 1.0, normalized=True)
    coords = shapely.get_coordinates(at) + rng.normal(0, 0.5, (n, 2))
    vertices = [
        [x, y] for x, y in zip(_clip_many(coords[:, 0], size), _clip_many(coords[:, 1], size), strict=True)
    ]
    return {"type": "polygon", "polygon": vertices}


def scribble_prompt(obj: SceneObject, rng: np.random.Generator, size: int) -> Prompt:
    """A stroke across the object: a chord through an interior point, near the major axis, hand-wobbled."""
    anchor = point_prompt(obj, rng, size)["point"]
    axis = obj.angle_deg if obj.orientation is not None else float(rng.uniform(0, 180))
    theta = math.radians(axis + rng.uniform(-25, 25))
    reach = obj.length_px
    dx, dy = math.cos(theta) * reach, -math.sin(theta) * reach
    chord = LineString([(anchor[0] - dx, anchor[1] - dy), (anchor[0] + dx, anchor[1] + dy)]).intersection(
        obj.polygon
    )
    segments = list(chord.geoms) if isinstance(chord, MultiLineString) else [chord]
    segments = [s for s in segments if isinstance(s, LineString) and not s.is_empty]
    if not segments or max(s.length for s in segments) < 2.0:
        # The footprint is too small for a chord: a short stroke over the interior point.
        line = [[anchor[0] - 1.0, anchor[1]], [anchor[0] + 1.0, anchor[1]]]
        return {"type": "scribble", "line": [[_clip(x, size), _clip(y, size)] for x, y in line]}
    segment = max(segments, key=lambda s: s.length)
    # Keep the middle 60–90 % so the stroke stays on the object despite the wobble.
    keep = float(rng.uniform(0.6, 0.9))
    n = int(rng.integers(4, 9))
    fractions = np.linspace((1 - keep) / 2, 1 - (1 - keep) / 2, n)
    at = shapely.line_interpolate_point(segment, fractions, normalized=True)
    coords = shapely.get_coordinates(at) + rng.normal(0, 0.35, (n, 2))
    line = [
        [x, y] for x, y in zip(_clip_many(coords[:, 0], size), _clip_many(coords[:, 1], size), strict=True)
    ]
    return {"type": "scribble", "line": line}


def object_prompt(kind: str, obj: SceneObject, rng: np.random.Generator, size: int) -> Prompt:
    """A prompt of type ``kind`` (point, box, polygon, scribble) on ``obj``."""
    makers = {
        "point": point_prompt,
        "box": box_prompt,
        "polygon": polygon_prompt,
        "scribble": scribble_prompt,
    }
    if kind not in makers:
        raise ValueError(f"unknown visual prompt type {kind!r}; expected one of {sorted(makers)}")
    return makers[kind](obj, rng, size)


def _free_coordinates(low: np.ndarray, high: np.ndarray, size: int) -> np.ndarray:
    """Integer coordinates in ``[0, size]`` that no interval ``[low_i, high_i]`` covers."""
    free = np.ones(size + 1, dtype=bool)
    for a, b in zip(np.floor(low).astype(int), np.ceil(high).astype(int), strict=True):
        free[max(a, 0) : min(b, size) + 1] = False
    return np.flatnonzero(free)


def region_prompt(
    kind: str,
    objects: tuple[SceneObject, ...],
    rng: np.random.Generator,
    size: int,
    tries: int = 20,
    *,
    allow_empty: bool = False,
    shortest_share: float = 0.3,
) -> tuple[Prompt, Polygon, list[SceneObject]] | None:
    """A box or polygon region that holds some objects whole and leaves the others wholly outside.

    ``allow_empty`` also accepts a region that holds no object; each side is at least ``shortest_share`` of the chip.

    Returns the prompt, its geometry and the objects inside, or ``None`` if no clean region was found:
    counting inside a region is only well defined when no object straddles its edge. The box edges are
    drawn from the coordinates that no (slightly grown) object spans, so no object can straddle them; a
    polygon region is such a box with its corners cut, kept only while it still holds its objects whole.
    """
    if kind not in ("box", "polygon"):
        raise ValueError(f"region prompts are boxes or polygons, not {kind!r}")
    grown = np.array([obj.polygon.buffer(1.0, quad_segs=2) for obj in objects], dtype=object)
    bounds = shapely.bounds(grown).reshape(-1, 4)  # (n, 4) x1, y1, x2, y2
    free_x = _free_coordinates(bounds[:, 0], bounds[:, 2], size)
    free_y = _free_coordinates(bounds[:, 1], bounds[:, 3], size)
    shortest = shortest_share * size
    for _ in range(tries):
        x1, x2 = np.sort(rng.choice(free_x, 2))
        y1, y2 = np.sort(rng.choice(free_y, 2))
        if x2 - x1 < shortest or y2 - y1 < shortest:
            continue
        inside = (bounds[:, 0] >= x1) & (bounds[:, 2] <= x2) & (bounds[:, 1] >= y1) & (bounds[:, 3] <= y2)
        if not inside.any() and not allow_empty:
            continue
        corners = [float(x1), float(y1), float(x2), float(y2)]
        region: Polygon = shapely_box(*corners)
        prompt: Prompt = {"type": "box", "box": corners}
        if kind == "polygon":
            cuts = rng.uniform(0.05, 0.3, 4) * min(x2 - x1, y2 - y1)
            for _ in range(3):
                cut_region = _cut_corners(corners, cuts, size)
                if not inside.any() or bool(np.all(shapely.contains(cut_region, grown[inside]))):
                    break
                cuts = cuts / 2
            else:
                cut_region = _cut_corners(corners, np.zeros(4), size)
            region = cut_region
            prompt = {"type": "polygon", "polygon": [list(p) for p in region.exterior.coords[:-1]]}
        return prompt, region, [obj for obj, keep in zip(objects, inside, strict=True) if keep]
    return None


def _cut_corners(corners: list[float], cuts: np.ndarray, size: int) -> Polygon:
    x1, y1, x2, y2 = corners
    a, b, c, d = (float(v) for v in cuts)
    ring = [
        (x1 + a, y1), (x2 - b, y1), (x2, y1 + b), (x2, y2 - c),
        (x2 - c, y2), (x1 + d, y2), (x1, y2 - d), (x1, y1 + a),
    ]  # fmt: skip
    xs = _clip_many([p[0] for p in ring], size)
    ys = _clip_many([p[1] for p in ring], size)
    return Polygon(list(zip(xs, ys, strict=True))).simplify(0.0)
