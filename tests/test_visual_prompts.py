"""Visual prompts between protobuf ``VisualPrompt``, shapely and the processor's dicts: round trips for every
prompt type, and the error paths."""

from __future__ import annotations

from typing import Any

import pytest
from shapely.geometry import LineString, MultiPoint, Point, Polygon, box

from earthgptx.formats import VISUAL_PROMPT_TYPES
from earthgptx.v1.events_pb2 import PixelBox, PixelPoint, VisualPrompt
from earthgptx.visual_prompts import (
    dict_to_geometry,
    dict_to_message,
    geometry_to_dict,
    geometry_to_message,
    message_region,
    message_to_dict,
    message_to_geometry,
    messages_to_dicts,
    pixel_box,
)

# Coordinates a float32 holds exactly, so protobuf round trips compare equal.
DICTS: dict[str, dict[str, Any]] = {
    "point": {"type": "point", "point": [12.5, 40.25]},
    "box": {"type": "box", "box": [10.0, 20.0, 50.5, 60.0]},
    "polygon": {"type": "polygon", "polygon": [[0.0, 0.0], [30.0, 0.0], [30.0, 20.0], [5.0, 25.0]]},
    "scribble": {"type": "scribble", "line": [[1.0, 1.0], [20.0, 5.5], [40.0, 2.0]]},
}
GEOMETRIES = {
    "point": Point(12.5, 40.25),
    "box": box(10.0, 20.0, 50.5, 60.0),
    "polygon": Polygon([(0, 0), (30, 0), (30, 20), (5, 25)]),
    "scribble": LineString([(1, 1), (20, 5.5), (40, 2)]),
}


def test_every_prompt_type_is_covered() -> None:
    assert set(DICTS) == set(GEOMETRIES) == set(VISUAL_PROMPT_TYPES)


@pytest.mark.parametrize("kind", VISUAL_PROMPT_TYPES)
def test_dict_message_dict_round_trip(kind: str) -> None:
    message = dict_to_message(DICTS[kind])
    assert message.WhichOneof("shape") == kind
    assert message_to_dict(message) == DICTS[kind]
    # And through the wire format, as the inference service receives it.
    assert message_to_dict(VisualPrompt.FromString(message.SerializeToString())) == DICTS[kind]


@pytest.mark.parametrize("kind", VISUAL_PROMPT_TYPES)
def test_geometry_message_geometry_round_trip(kind: str) -> None:
    geometry = GEOMETRIES[kind]
    message = geometry_to_message(geometry, kind="box" if kind == "box" else None)
    assert message.WhichOneof("shape") == kind
    assert message_to_geometry(message).equals(geometry)


@pytest.mark.parametrize("kind", VISUAL_PROMPT_TYPES)
def test_geometry_dict_geometry_round_trip(kind: str) -> None:
    geometry = GEOMETRIES[kind]
    prompt = geometry_to_dict(geometry, kind="box" if kind == "box" else None)
    assert prompt == DICTS[kind]
    assert dict_to_geometry(prompt, 64, 64).equals(geometry)


def test_message_and_dict_give_the_same_geometry() -> None:
    for kind, prompt in DICTS.items():
        assert message_to_geometry(dict_to_message(prompt)).equals(dict_to_geometry(prompt, 64, 64)), kind


def test_a_task_s_prompts_become_dicts_in_order() -> None:
    messages = [dict_to_message(DICTS[kind]) for kind in ("scribble", "point", "box")]
    assert messages_to_dicts(messages) == [DICTS["scribble"], DICTS["point"], DICTS["box"]]
    with pytest.raises(ValueError, match="prompt 2: visual prompt has no shape"):
        messages_to_dicts([messages[0], VisualPrompt()])


def test_a_scribble_keeps_its_stroke_width_in_protobuf_only() -> None:
    message = geometry_to_message(GEOMETRIES["scribble"], stroke_width=4.0)
    assert message.scribble.stroke_width == 4.0
    assert "stroke_width" not in message_to_dict(message)
    assert dict_to_message(message_to_dict(message)).scribble.stroke_width == 0.0


def test_message_region_widens_a_scribble_by_its_stroke() -> None:
    scribble = VisualPrompt()
    scribble.scribble.points.extend([PixelPoint(x=0, y=0), PixelPoint(x=10, y=0)])
    scribble.scribble.stroke_width = 2.0
    assert message_region(scribble).bounds == pytest.approx((-1.0, -1.0, 11.0, 1.0))
    assert message_region(scribble).area > 0
    # Unset (0) stroke width counts as one pixel.
    scribble.scribble.stroke_width = 0.0
    assert message_region(scribble).bounds == pytest.approx((-0.5, -0.5, 10.5, 0.5))
    polygon = dict_to_message(DICTS["polygon"])
    assert message_region(polygon).equals(message_to_geometry(polygon))


def test_pixel_box_takes_corners_in_any_order() -> None:
    assert pixel_box(PixelBox(x1=50, y1=60, x2=10, y2=20)).equals(box(10, 20, 50, 60))


def test_a_polygon_ring_is_open_in_prompts() -> None:
    message = geometry_to_message(GEOMETRIES["polygon"])
    assert len(message.polygon.points) == 4
    assert (message.polygon.points[0].x, message.polygon.points[0].y) == (0.0, 0.0)


@pytest.mark.parametrize(
    ("prompt", "reason"),
    [
        ({"type": "circle", "center": [3, 3]}, "unknown type 'circle'"),
        ({"point": [3, 3]}, "unknown type None"),
        ({"type": "point"}, "no 'point' field"),
        ({"type": "point", "point": []}, "is empty"),
        ({"type": "box", "box": [1, 2, 3]}, r"needs \[x1, y1, x2, y2\]"),
        ({"type": "box", "box": [5, 5, 5, 9]}, "not a valid geometry"),
        ({"type": "polygon", "polygon": [[0, 0], [1, 1], [2, 2]]}, "not a valid geometry"),
        ({"type": "scribble", "line": [[0, 0]]}, "at least 2 points"),
        ({"type": "point", "point": [[1, 2], [3, 4]]}, "needs one"),
        ({"type": "point", "point": ["a", 1]}, "non-numeric"),
        ({"type": "point", "point": [float("nan"), 1]}, "non-finite"),
    ],
)
def test_bad_dicts_do_not_become_messages(prompt: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        dict_to_message(prompt)


def test_bad_messages_raise() -> None:
    with pytest.raises(ValueError, match="no shape"):
        message_to_geometry(VisualPrompt())
    with pytest.raises(ValueError, match="no shape"):
        message_to_dict(VisualPrompt())
    two_points = VisualPrompt()
    two_points.polygon.points.extend([PixelPoint(x=0, y=0), PixelPoint(x=1, y=1)])
    with pytest.raises(ValueError, match="at least 3 points"):
        message_to_geometry(two_points)
    bow_tie = VisualPrompt()
    bow_tie.polygon.points.extend(PixelPoint(x=x, y=y) for x, y in [(0, 0), (2, 2), (2, 0), (0, 2)])
    with pytest.raises(ValueError, match="not a valid geometry"):
        message_region(bow_tie)


@pytest.mark.parametrize(
    ("geometry", "kind", "reason"),
    [
        (Point(), None, "empty Point"),
        (Polygon(), "polygon", "empty Polygon"),
        (MultiPoint([(0, 0), (1, 1)]), None, "not one visual prompt"),
        (Point(1, 1), "box", "degenerate"),
        (Point(1, 1), "polygon", "cannot be a polygon prompt"),
        (box(0, 0, 4, 4), "circle", "unknown prompt type 'circle'"),
        (box(0, 0, 9, 9).difference(box(3, 3, 6, 6)), None, "holes"),
        (LineString([(1, 1), (1, 1)]), None, "two distinct points"),
        (Point(float("inf"), 0), None, "non-finite"),
    ],
)
def test_geometries_that_are_not_one_prompt_raise(geometry: Any, kind: str | None, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        geometry_to_message(geometry, kind=kind)
    with pytest.raises(ValueError, match=reason):
        geometry_to_dict(geometry, kind=kind)


def test_any_geometry_can_be_a_box_prompt() -> None:
    assert geometry_to_dict(GEOMETRIES["scribble"], kind="box") == {
        "type": "box",
        "box": [1.0, 1.0, 40.0, 5.5],
    }


@pytest.mark.parametrize(
    ("prompt", "reason"),
    [
        ({"type": "point", "point": [129.0, 5.0]}, "outside the 128x128 chip"),
        ({"type": "box", "box": [30, 0, 10, 10]}, "degenerate"),
        ({"type": "polygon", "polygon": [[0, 0], [1, 1], [0, 0]]}, "2 distinct vertices, need 3"),
        ({"type": "polygon", "polygon": [[0, 0], [1, 1], [2, 2]]}, "zero area"),
        ({"type": "scribble", "line": [[3, 3], [3, 3]]}, "two distinct points"),
    ],
)
def test_dict_to_geometry_checks_the_chip_and_names_the_prompt(prompt: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValueError, match=f"prompt 3 .*{reason}"):
        dict_to_geometry(prompt, 128, 128, index=2)
