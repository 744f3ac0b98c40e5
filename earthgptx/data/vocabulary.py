"""The closed vocabulary of the synthetic dataset: land covers, object classes, attributes, tasks.

Answers use exactly these words, so a tiny model has a small, consistent target vocabulary and evaluation can
compare strings after light normalisation (``earthgptx.training.scoring.normalize_answer``). The record format
itself (modalities, placeholders, the coordinate grid, prompt types) is ``earthgptx.formats``.
"""

from __future__ import annotations

from typing import Final

from earthgptx.formats import VISUAL_PROMPT_TYPES

DATASET_VERSION: Final = "1.0"

# Band names per modality, in file order. SAR is dual-polarised unless a scene draws single polarisation.
BANDS: Final[dict[str, tuple[str, ...]]] = {
    "optical": ("red", "green", "blue"),
    "multispectral": ("blue", "green", "red", "nir"),
    "sar": ("vv", "vh"),
    "infrared": ("tir",),
}

LAND_COVERS: Final = ("water", "vegetation", "bare soil", "urban")

OBJECT_CLASSES: Final = ("ship", "airplane", "storage tank", "vehicle", "building")

PLURALS: Final[dict[str, str]] = {
    "ship": "ships",
    "airplane": "airplanes",
    "storage tank": "storage tanks",
    "vehicle": "vehicles",
    "building": "buildings",
}

# Where each class may stand: ships float, everything else needs land.
ALLOWED_COVERS: Final[dict[str, tuple[str, ...]]] = {
    "ship": ("water",),
    "airplane": ("bare soil", "urban"),
    "storage tank": ("bare soil", "urban", "vegetation"),
    "vehicle": ("urban", "bare soil", "vegetation"),
    "building": ("urban", "vegetation", "bare soil"),
}

# Length of the object's major extent in pixels at a 128 px chip (scaled with the chip). The gaps between
# the ranges keep the size attribute unambiguous.
SIZE_RANGES_PX: Final[dict[str, tuple[float, float]]] = {
    "small": (12.0, 16.0),
    "medium": (20.0, 26.0),
    "large": (31.0, 38.0),
}
SIZES: Final = tuple(SIZE_RANGES_PX)

# Axis of the major extent; the images are north-up, so compass words are exact. Angle in degrees,
# counter-clockwise from east (image x axis) with north up.
ORIENTATION_ANGLES: Final[dict[str, float]] = {
    "east-west": 0.0,
    "northeast-southwest": 45.0,
    "north-south": 90.0,
    "northwest-southeast": 135.0,
}
ORIENTATIONS: Final = tuple(ORIENTATION_ANGLES)
# A disk has no axis and an L-shaped roof has no single one.
ORIENTED_CLASSES: Final = frozenset({"ship", "airplane", "vehicle"})

COLOURS: Final = ("white", "red", "blue", "yellow")
TEMPERATURES: Final = ("warm", "cold")

# Which attributes a modality lets one see: colour needs visible bands, temperature needs thermal.
VISIBLE_ATTRIBUTES: Final[dict[str, tuple[str, ...]]] = {
    "optical": ("size", "orientation", "colour"),
    "multispectral": ("size", "orientation", "colour"),
    "sar": ("size", "orientation"),
    "infrared": ("size", "orientation", "temperature"),
}
ATTRIBUTE_VALUES: Final[dict[str, tuple[str, ...]]] = {
    "size": SIZES,
    "orientation": ORIENTATIONS,
    "colour": COLOURS,
    "temperature": TEMPERATURES,
}

RELATIONS: Final = ("left of", "above", "nearer to", "larger than")
YES_NO: Final = ("yes", "no")

TASK_LEVELS: Final[dict[str, str]] = {
    "scene_classification": "L1",
    "scene_caption": "L1",
    "counting": "L1",
    "region_classification": "L2",
    "region_caption": "L2",
    "grounding": "L2",
    "pixel_grounding": "L2",
    "attributes": "L3",
    "relation": "L4",
}
TASKS: Final = tuple(TASK_LEVELS)

PROMPT_TYPES: Final = ("none", *VISUAL_PROMPT_TYPES)

# Prompt types each task is asked with. Counting takes an optional region (box or polygon); grounding is
# text → box, or a point/free-form mark → box; the others point at objects.
TASK_PROMPT_TYPES: Final[dict[str, tuple[str, ...]]] = {
    "scene_classification": ("none",),
    "scene_caption": ("none",),
    "counting": ("none", "box", "polygon"),
    "region_classification": VISUAL_PROMPT_TYPES,
    "region_caption": VISUAL_PROMPT_TYPES,
    "grounding": ("none", "point", "polygon", "scribble"),
    "pixel_grounding": PROMPT_TYPES,
    "attributes": VISUAL_PROMPT_TYPES,
    "relation": VISUAL_PROMPT_TYPES,
}
