"""Moved: chip geometry is in ``earthgptx.geo``, prompt shapes in ``earthgptx.visual_prompts``.

This module only keeps old imports working until every caller has moved; it is removed with issue 19.
"""

from earthgptx.geo import (
    affine_from_message,
    affine_to_message,
    chip_to_scene,
    chip_to_scene_transform,
    chip_to_world,
    chip_transform_for,
    is_georeferenced,
    make_tile,
)
from earthgptx.visual_prompts import message_region as prompt_geometry
from earthgptx.visual_prompts import pixel_box

__all__ = [
    "affine_from_message",
    "affine_to_message",
    "chip_to_scene",
    "chip_to_scene_transform",
    "chip_to_world",
    "chip_transform_for",
    "is_georeferenced",
    "make_tile",
    "pixel_box",
    "prompt_geometry",
]
