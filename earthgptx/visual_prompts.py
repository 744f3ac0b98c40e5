"""One vocabulary for visual prompts: protobuf ``VisualPrompt``, shapely geometry and the processor's dicts.

The platform's events speak ``VisualPrompt`` (``earthgptx.v1``), the model's processor and the dataset records
speak dicts (``{"type": "scribble", "line": [[x, y], ...]}``, ``earthgptx.formats``), and geometry work is done
in shapely. Every prompt is in chip pixels (x right, y down, origin at the chip's top-left corner).

=========  =========================  ====================  ==========================================
type       protobuf ``shape``         dict field            shapely
=========  =========================  ====================  ==========================================
point      ``point`` (x, y)           ``point`` [x, y]      ``Point``
box        ``box`` (x1, y1, x2, y2)   ``box`` [x1, ..]      axis-aligned ``Polygon`` (``kind="box"``)
polygon    ``polygon`` (open ring)    ``polygon`` [[x, y]]  ``Polygon`` without holes
scribble   ``scribble`` (+ width)     ``line`` [[x, y]]     ``LineString``
=========  =========================  ====================  ==========================================

A scribble's ``stroke_width`` has no place in a dict (the processor draws strokes with its own line width):
it is dropped going to a dict and unset (0) coming back. Protobuf coordinates are float32. Every conversion
raises ``ValueError`` for an unknown type or an empty or degenerate shape. Nothing here imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import shapely
from shapely.geometry import LineString, Point, Polygon
from shapely.geometry import box as shapely_box
from shapely.geometry.base import BaseGeometry

from earthgptx.formats import PROMPT_FIELDS, VISUAL_PROMPT_TYPES
from earthgptx.v1.events_pb2 import PixelBox, PixelPoint, VisualPrompt

__all__ = [
    "dict_to_geometry",
    "dict_to_message",
    "geometry_to_dict",
    "geometry_to_message",
    "message_region",
    "message_to_dict",
    "message_to_geometry",
    "messages_to_dicts",
    "pixel_box",
]

Coordinates = list[Any]
"""A point or box as a flat list of numbers, a polygon or scribble as a list of [x, y]."""


# ------------------------------------------------------------------------------------------------- protobuf
def pixel_box(b: PixelBox) -> Polygon:
    """A ``PixelBox`` as a polygon (its x1/x2 and y1/y2 may come in any order; validate them before)."""
    return shapely_box(b.x1, b.y1, b.x2, b.y2)


def message_to_geometry(prompt: VisualPrompt) -> BaseGeometry:
    """The chip-pixel shape of a visual prompt: a ``Point``, a box or a polygon as a ``Polygon``, a scribble as
    its ``LineString``. Raises ``ValueError`` for a prompt without a shape or an empty or degenerate one."""
    kind = prompt.WhichOneof("shape")
    geometry: BaseGeometry
    if kind == "point":
        geometry = Point(prompt.point.x, prompt.point.y)
    elif kind == "box":
        geometry = pixel_box(prompt.box)
    elif kind == "polygon":
        if len(prompt.polygon.points) < 3:
            raise ValueError(f"a polygon prompt needs at least 3 points, got {len(prompt.polygon.points)}")
        geometry = Polygon([(p.x, p.y) for p in prompt.polygon.points])
    elif kind == "scribble":
        if len(prompt.scribble.points) < 2:
            raise ValueError(f"a scribble prompt needs at least 2 points, got {len(prompt.scribble.points)}")
        geometry = LineString([(p.x, p.y) for p in prompt.scribble.points])
    else:
        raise ValueError("visual prompt has no shape")
    if geometry.is_empty or not geometry.is_valid:
        raise ValueError(f"{kind} prompt is not a valid geometry")
    return geometry


def message_region(prompt: VisualPrompt) -> BaseGeometry:
    """The chip-pixel region a visual prompt marks: its shape, with a scribble as the area its stroke covers
    (the line widened by half the stroke, at least half a pixel, on each side)."""
    geometry = message_to_geometry(prompt)
    if prompt.WhichOneof("shape") == "scribble":
        return geometry.buffer(max(prompt.scribble.stroke_width, 1.0) / 2.0)
    return geometry


def geometry_to_message(
    geometry: BaseGeometry, kind: str | None = None, stroke_width: float = 0.0
) -> VisualPrompt:
    """A chip-pixel geometry as a ``VisualPrompt`` of type ``kind``: by default a ``Point`` is a point, a
    ``Polygon`` a polygon and a ``LineString`` a scribble (of ``stroke_width``); ``kind="box"`` takes the
    geometry's bounds."""
    kind, coordinates = _geometry_coordinates(geometry, kind)
    prompt = VisualPrompt()
    if kind == "point":
        x, y = coordinates
        prompt.point.CopyFrom(PixelPoint(x=x, y=y))
    elif kind == "box":
        x1, y1, x2, y2 = coordinates
        prompt.box.CopyFrom(PixelBox(x1=x1, y1=y1, x2=x2, y2=y2))
    elif kind == "polygon":
        prompt.polygon.points.extend(PixelPoint(x=x, y=y) for x, y in coordinates)
    else:
        prompt.scribble.points.extend(PixelPoint(x=x, y=y) for x, y in coordinates)
        prompt.scribble.stroke_width = stroke_width
    return prompt


def message_to_dict(prompt: VisualPrompt) -> dict[str, Any]:
    """A ``VisualPrompt`` as the processor's prompt dict (validated as :func:`message_to_geometry` does; the
    chip bounds are the processor's to check)."""
    message_to_geometry(prompt)
    kind = prompt.WhichOneof("shape")
    coordinates: Coordinates
    if kind == "point":
        coordinates = [prompt.point.x, prompt.point.y]
    elif kind == "box":
        coordinates = [prompt.box.x1, prompt.box.y1, prompt.box.x2, prompt.box.y2]
    else:
        points = prompt.polygon.points if kind == "polygon" else prompt.scribble.points
        coordinates = [[p.x, p.y] for p in points]
    return {"type": kind, PROMPT_FIELDS[str(kind)]: coordinates}


def messages_to_dicts(prompts: Iterable[VisualPrompt]) -> list[dict[str, Any]]:
    """A task's prompts, in order (the i-th is ``<region{i+1}>``), as processor dicts; an error names the prompt
    (1-based)."""
    dicts = []
    for index, prompt in enumerate(prompts):
        try:
            dicts.append(message_to_dict(prompt))
        except ValueError as exc:
            raise ValueError(f"prompt {index + 1}: {exc}") from exc
    return dicts


def dict_to_message(prompt: dict[str, Any], index: int = 0) -> VisualPrompt:
    """A processor prompt dict as a ``VisualPrompt`` (a scribble gets no stroke width); errors name the prompt
    by ``index`` (0-based, 1-based in the message)."""
    kind = _kind(prompt, index)
    points = _dict_points(prompt, kind, index)
    if kind == "point":
        if len(points) != 1:
            raise ValueError(f"prompt {index + 1} (point) needs one [x, y], got {len(points)} points")
        (x, y) = points[0]
        message = VisualPrompt(point=PixelPoint(x=x, y=y))
    elif kind == "box":
        (x1, y1), (x2, y2) = points
        message = VisualPrompt(box=PixelBox(x1=x1, y1=y1, x2=x2, y2=y2))
    elif kind == "polygon":
        message = VisualPrompt()
        message.polygon.points.extend(PixelPoint(x=x, y=y) for x, y in points)
    else:
        message = VisualPrompt()
        message.scribble.points.extend(PixelPoint(x=x, y=y) for x, y in points)
    try:
        message_to_geometry(message)
    except ValueError as exc:
        raise ValueError(f"prompt {index + 1} ({kind}): {exc}") from exc
    return message


# ------------------------------------------------------------------------------------------------- dicts
def geometry_to_dict(geometry: BaseGeometry, kind: str | None = None) -> dict[str, Any]:
    """A chip-pixel geometry as a processor prompt dict (types chosen as in :func:`geometry_to_message`)."""
    kind, coordinates = _geometry_coordinates(geometry, kind)
    return {"type": kind, PROMPT_FIELDS[kind]: coordinates}


def dict_to_geometry(prompt: dict[str, Any], width: float, height: float, index: int = 0) -> BaseGeometry:
    """Validate one processor prompt dict (chip pixels of a ``width × height`` chip) and return its geometry.

    Raises ``ValueError`` naming the prompt (``index`` is 0-based, the message 1-based) for an unknown type, a
    coordinate outside the chip, a degenerate box, an empty or degenerate polygon, or a scribble with fewer
    than two distinct points. A self-intersecting polygon is made valid.
    """
    kind = _kind(prompt, index)
    points = _dict_points(prompt, kind, index)
    eps = 1e-6
    outside = (
        (points[:, 0] < -eps)
        | (points[:, 0] > width + eps)
        | (points[:, 1] < -eps)
        | (points[:, 1] > height + eps)
    )
    if outside.any():
        x, y = points[int(np.argmax(outside))]
        raise ValueError(
            f"prompt {index + 1} ({kind}) lies outside the {width:g}x{height:g} chip: point ({x:g}, {y:g})"
        )
    if kind == "point":
        if len(points) != 1:
            raise ValueError(f"prompt {index + 1} (point) needs one [x, y], got {len(points)} points")
        return Point(points[0])
    if kind == "box":
        (x1, y1), (x2, y2) = points
        if x2 <= x1 or y2 <= y1:
            raise ValueError(f"prompt {index + 1} (box) is degenerate: [{x1:g}, {y1:g}, {x2:g}, {y2:g}]")
        return shapely_box(x1, y1, x2, y2)
    if kind == "polygon":
        distinct = np.unique(points, axis=0)
        if len(distinct) < 3:
            raise ValueError(
                f"prompt {index + 1} (polygon) is empty or degenerate: {len(distinct)} distinct vertices, need 3"
            )
        polygon = shapely.make_valid(Polygon(points))
        if polygon.is_empty or polygon.area <= 0:
            raise ValueError(f"prompt {index + 1} (polygon) is empty or degenerate: zero area")
        return polygon
    distinct = np.unique(points, axis=0)
    if len(distinct) < 2:
        raise ValueError(f"prompt {index + 1} (scribble) is degenerate: needs two distinct points")
    return LineString(points)


# ------------------------------------------------------------------------------------------------- helpers
def _kind(prompt: dict[str, Any], index: int = 0) -> str:
    kind = prompt.get("type")
    if kind not in VISUAL_PROMPT_TYPES:
        raise ValueError(
            f"prompt {index + 1} has unknown type {kind!r}; expected one of {', '.join(VISUAL_PROMPT_TYPES)}"
        )
    key = PROMPT_FIELDS[kind]
    if key not in prompt:
        raise ValueError(f"prompt {index + 1} ({kind}) has no {key!r} field")
    return str(kind)


def _points(value: Any, what: str, index: int) -> np.ndarray[Any, Any]:
    try:
        points = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"prompt {index + 1} ({what}) has non-numeric coordinates: {value!r}") from exc
    if points.ndim == 1:
        points = points[None]
    if points.size == 0:
        raise ValueError(f"prompt {index + 1} ({what}) is empty")
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"prompt {index + 1} ({what}) needs [x, y] pairs, got shape {points.shape}")
    if not np.all(np.isfinite(points)):
        raise ValueError(f"prompt {index + 1} ({what}) has non-finite coordinates")
    return points


def _dict_points(prompt: dict[str, Any], kind: str, index: int) -> np.ndarray[Any, Any]:
    """The prompt's coordinates as ``(n, 2)`` float64 (a box as its two corners)."""
    raw = prompt[PROMPT_FIELDS[kind]]
    if kind != "box":
        return _points(raw, kind, index)
    try:
        flat = np.asarray(raw, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"prompt {index + 1} (box) has non-numeric coordinates: {raw!r}") from exc
    if flat.size != 4:
        raise ValueError(f"prompt {index + 1} (box) needs [x1, y1, x2, y2], got {raw!r}")
    return _points(flat.reshape(2, 2), kind, index)


def _geometry_coordinates(geometry: BaseGeometry, kind: str | None) -> tuple[str, Coordinates]:
    """The prompt type and the dict coordinates of a shapely geometry."""
    if geometry.is_empty:
        raise ValueError(f"cannot make a visual prompt of an empty {geometry.geom_type}")
    if not all(math.isfinite(v) for v in geometry.bounds):
        raise ValueError(f"cannot make a visual prompt of a {geometry.geom_type} with non-finite coordinates")
    natural = {"Point": "point", "Polygon": "polygon", "LineString": "scribble"}.get(geometry.geom_type)
    if kind is None:
        if natural is None:
            raise ValueError(
                f"a {geometry.geom_type} is not one visual prompt (point, polygon or scribble); "
                "make one prompt per part or pass kind='box'"
            )
        kind = natural
    if kind not in VISUAL_PROMPT_TYPES:
        raise ValueError(f"unknown prompt type {kind!r}; expected one of {', '.join(VISUAL_PROMPT_TYPES)}")
    if kind == "box":
        x1, y1, x2, y2 = (float(v) for v in geometry.bounds)
        if x2 <= x1 or y2 <= y1:
            raise ValueError(f"a box prompt needs an area; the {geometry.geom_type}'s bounds are degenerate")
        return kind, [x1, y1, x2, y2]
    if kind != natural:
        raise ValueError(f"a {geometry.geom_type} cannot be a {kind} prompt")
    if isinstance(geometry, Point):
        return kind, [float(geometry.x), float(geometry.y)]
    if isinstance(geometry, Polygon):
        if geometry.interiors:
            raise ValueError("a polygon prompt has no holes; this polygon has some")
        if not geometry.is_valid or geometry.area <= 0:
            raise ValueError("a polygon prompt needs a valid polygon with an area")
        ring = [[float(x), float(y)] for x, y in geometry.exterior.coords]
        return kind, ring[:-1]  # the ring is open in prompts
    if geometry.length <= 0:
        raise ValueError("a scribble prompt needs two distinct points")
    return kind, [[float(x), float(y)] for x, y in geometry.coords]
