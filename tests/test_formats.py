"""The shared record format: the [0, 1000) grid, box text and the placeholders."""

from __future__ import annotations

import pytest

from earthgptx.formats import (
    GRID,
    IMAGE_TOKEN,
    SEG_TOKEN,
    box_from_grid,
    box_to_grid,
    boxes_in_text,
    format_box,
    region_indices,
    region_token,
    to_grid,
)


def test_to_grid_floors_and_clamps() -> None:
    assert GRID == 1000
    assert [to_grid(v, 128) for v in (0.0, 0.127, 0.128, 64.0, 127.99, 128.0, 500.0, -3.0)] == [
        0,
        0,
        1,
        500,
        999,
        999,
        999,
        0,
    ]


def test_boxes_round_trip_through_the_grid_to_within_one_cell() -> None:
    width, height = 256.0, 128.0
    pixels = [10.3, 20.7, 200.0, 127.0]
    grid = box_to_grid(pixels, width, height)
    assert grid == [40, 161, 781, 992]
    back = box_from_grid(grid, width, height)
    cell = [width / GRID, height / GRID] * 2
    assert all(0.0 <= p - b < c for p, b, c in zip(pixels, back, cell, strict=True))


def test_box_text_round_trip() -> None:
    text = f"two ships {format_box([1, 22, 333, 999])} and {format_box([0, 0, 5, 5])} {SEG_TOKEN}"
    assert text.startswith("two ships [1, 22, 333, 999] and [0, 0, 5, 5]")
    assert boxes_in_text(text) == [[1, 22, 333, 999], [0, 0, 5, 5]]
    # The word-level tokenizer's spacing is read too; four-digit numbers are not grid coordinates.
    assert boxes_in_text("[ 12 , 340 , 56 , 789 ] [1000, 1, 2, 3]") == [[12, 340, 56, 789]]


def test_placeholders() -> None:
    assert (IMAGE_TOKEN, SEG_TOKEN, region_token(3)) == ("<image>", "[SEG]", "<region3>")
    assert region_indices(f"{IMAGE_TOKEN}\n<region2> and <region10> near <region2>") == [2, 10, 2]
    with pytest.raises(ValueError, match="1-based"):
        region_token(0)
