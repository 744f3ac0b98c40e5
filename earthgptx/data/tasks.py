"""Instruction/answer records for one rendered chip, at all four levels, with varied phrasings.

Human turns vary (several templates per task, modality named or not); answers stay short and drawn from the
closed vocabulary (``vocabulary.py``) so a small model can learn them: ``ship``, ``3``, ``large``, ``yes``,
``[x1, y1, x2, y2]``, ``[SEG]``. Every answer is computed from the scene's geometry (masks, centroids,
areas), never from the renderer's pixels, and ``answer`` holds the same truth in structured form.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from shapely import affinity as shapely_affinity
from shapely.geometry import box as shapely_box

from earthgptx.data.prompts import Prompt, object_prompt, region_prompt
from earthgptx.data.record_format import Record
from earthgptx.data.scene import REFERENCE_CHIP, Scene, SceneObject, measure_mask, rasterize_polygon
from earthgptx.data.vocabulary import (
    COLOURS,
    LAND_COVERS,
    OBJECT_CLASSES,
    PLURALS,
    RELATIONS,
    TASK_LEVELS,
    TASK_PROMPT_TYPES,
    TEMPERATURES,
    VISIBLE_ATTRIBUTES,
)
from earthgptx.formats import IMAGE_TOKEN, SEG_TOKEN, box_to_grid, format_box

MODALITY_NAMES = {
    "optical": "optical",
    "multispectral": "multispectral",
    "sar": "SAR",
    "infrared": "thermal infrared",
}

SCENE_CLASSIFICATION = (
    "What is the dominant land cover in this image?",
    "Classify this {mod} scene.",
    "Which land-cover class best describes this {mod} image? Choose from water, vegetation, bare soil or urban.",
    "What type of scene is shown here?",
    "Identify the main land cover of the scene.",
    "Is this scene mostly water, vegetation, bare soil or urban?",
    "What kind of area does this {mod} image show? Answer with the land-cover class.",
)
SCENE_CAPTION = (
    "Describe this image in one sentence.",
    "Write a short caption for this {mod} image.",
    "Give a brief description of the scene.",
    "What does this {mod} image show?",
    "Caption the scene.",
)
COUNTING = (
    "How many {plural} are there in the image?",
    "Count the {plural} in this {mod} image.",
    "How many {plural} can you see?",
    "What is the number of {plural} in the scene?",
    "Count all {plural}. Answer with a number.",
)
COUNTING_REGION = (
    "How many {plural} are inside <region1>?",
    "Count the {plural} within <region1>.",
    "How many {plural} does <region1> contain?",
    "What is the number of {plural} in <region1>?",
)
REGION_CLASSIFICATION = (
    "What is the object in <region1>?",
    "Classify <region1>.",
    "What kind of object is marked by <region1>?",
    "Which category does <region1> belong to?",
    "Name the object at <region1>.",
    "What is <region1>? Answer with its class.",
)
REGION_CAPTION = (
    "Describe <region1>.",
    "Give a short description of the object in <region1>.",
    "What can you tell me about <region1>?",
    "Describe the object marked by <region1> in a few words.",
)
# An area (a large region holding several things or none, not one object: a standing query's AOI) is asked about
# with the generic wordings only; the answer describes it as a scene caption does (areas generator setting).
AREA_CAPTION = ("Describe <region1>.", "What can you tell me about <region1>?", "Describe the area <region1>.")
GROUNDING_TEXT = (
    "Where is the {desc}? Answer with a bounding box.",
    "Locate the {desc}.",
    "Give the bounding box of the {desc}.",
    "Find the {desc} in this {mod} image.",
    "Detect the {desc} and output its box.",
    "Output the coordinates of the {desc}.",
)
GROUNDING_PROMPT = (
    "Give the bounding box of the object at <region1>.",
    "Output the box of the object marked by <region1>.",
    "What are the box coordinates of <region1>?",
    "Draw a bounding box around <region1>.",
)
SEGMENT_TEXT = (
    "Segment the {desc}.",
    "Please output the segmentation mask of the {desc}.",
    "Give a pixel mask for the {desc}.",
    "Which pixels belong to the {desc}? Segment it.",
)
SEGMENT_PROMPT = (
    "Segment <region1>.",
    "Output a mask of the object in <region1>.",
    "Give the pixel mask of the object marked by <region1>.",
    "Segment the object at <region1>.",
)
ATTRIBUTE_QUESTIONS: dict[str, tuple[str, ...]] = {
    "size": (
        "What is the size of <region1>?",
        "Is <region1> small, medium or large?",
        "How big is the object in <region1>?",
        "What size class is <region1>?",
    ),
    "orientation": (
        "What is the orientation of <region1>?",
        "Along which axis does <region1> lie?",
        "How is <region1> oriented?",
        "In which direction is the object in <region1> aligned?",
    ),
    "colour": (
        "What colour is <region1>?",
        "What is the colour of the object in <region1>?",
        "Which colour does <region1> have?",
    ),
    "temperature": (
        "Is <region1> warm or cold?",
        "Is the object in <region1> warmer or colder than its surroundings? Answer warm or cold.",
        "What is the thermal state of <region1>?",
    ),
}
RELATION_QUESTIONS: dict[str, tuple[str, ...]] = {
    "left of": (
        "Is <region1> to the left of <region2>?",
        "Is <region1> left of <region2>?",
        "Does <region1> lie to the left of <region2>?",
        "Is <region1> west of <region2>?",
    ),
    "above": (
        "Is <region1> above <region2>?",
        "Is <region1> located above <region2> in the image?",
        "Is <region1> north of <region2>?",
        "Does <region1> appear higher in the image than <region2>?",
    ),
    "nearer to": (
        "Is <region1> nearer to the image centre than <region2>?",
        "Is <region1> closer to the centre of the image than <region2>?",
        "Compared with <region2>, is <region1> nearer to the image centre?",
    ),
    "larger than": (
        "Is <region1> larger than <region2>?",
        "Is <region1> bigger than <region2>?",
        "Does <region1> cover a larger area than <region2>?",
        "Is the object in <region1> larger than the one in <region2>?",
    ),
}
COVER_PHRASES = {
    "water": "a water area",
    "vegetation": "a vegetated area",
    "bare soil": "an area of bare soil",
    "urban": "an urban area",
}
SECONDARY_PHRASES = {
    "water": "beside water",
    "vegetation": "beside vegetation",
    "bare soil": "beside bare soil",
    "urban": "beside a built-up area",
}

# Negatives (generate's ``negatives`` setting): the abstention answer (``earthgptx.answers`` parses it as an
# abstention), and the tag each negative record carries in ``answer["negative"]`` (evaluation scores them apart).
NO_OBJECT = "no object"
NEGATIVE_BACKGROUND = "background"
NEGATIVE_ABSENT_CLASS = "absent class"
NEGATIVE_EMPTY_SCENE = "empty scene"
NEGATIVE_KINDS = (NEGATIVE_BACKGROUND, NEGATIVE_ABSENT_CLASS, NEGATIVE_EMPTY_SCENE)
# A background prompt keeps this far (px at 128 px) from every object, beyond a prompt's ~1.5 px jitter.
BACKGROUND_CLEARANCE_PX = 4.0
# Shares of chips that get a background prompt and an extra count of an absent class.
BACKGROUND_SHARE = 0.4
ABSENT_COUNT_SHARE = 0.25

# Area descriptions (generate's ``areas`` setting): the share of chips that get one, the shortest side of the area
# (a share of the chip) and the tag its answer carries in ``answer["area"]``.
AREA_SHARE = 0.5
AREA_SHORTEST_SHARE = 0.45

# Relations are only asked when the geometry answers them with a clear margin (pixels at 128 px,
# area ratio), so the label never hinges on a pixel.
RELATION_MARGIN_PX = 6.0
AREA_RATIO_MARGIN = 1.25


@dataclass(frozen=True)
class ChipContext:
    """One scene rendered in one modality, and where its files are (paths relative to the JSONL)."""

    scene: Scene
    modality: str
    bands: tuple[str, ...]
    image: str
    split: str
    mask_for: Callable[[SceneObject], str]


# ---------------------------------------------------------------------------------------------- helpers


def _pick(rng: np.random.Generator, options: Sequence[Any]) -> Any:
    return options[int(rng.integers(len(options)))]


def _count_phrase(count: int, cls: str) -> str:
    return f"{count} {cls if count == 1 else PLURALS[cls]}"


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def visible_attributes(obj: SceneObject, modality: str) -> list[str]:
    """Attributes of ``obj`` one can see in ``modality`` (orientation only for classes that have an axis)."""
    return [a for a in VISIBLE_ATTRIBUTES[modality] if a != "orientation" or obj.orientation is not None]


def describe_object(obj: SceneObject, modality: str) -> str:
    """Canonical short caption: ``a large red ship oriented north-south`` (only what the modality shows)."""
    attributes = obj.attributes()
    words = [attributes["size"]]
    if "colour" in VISIBLE_ATTRIBUTES[modality]:
        words.append(attributes["colour"])
    if "temperature" in VISIBLE_ATTRIBUTES[modality]:
        words.append(attributes["temperature"])
    words.append(obj.cls)
    text = "a " + " ".join(words)
    if obj.orientation is not None:
        text += f" oriented {obj.orientation}"
    return text


def referring_expression(
    obj: SceneObject, objects: Sequence[SceneObject], modality: str, scale: float
) -> str | None:
    """The shortest description among a fixed ladder that singles ``obj`` out in the scene, or ``None``."""
    attrs = obj.attributes()
    tint = (
        "colour"
        if "colour" in VISIBLE_ATTRIBUTES[modality]
        else "temperature"
        if modality == "infrared"
        else None
    )
    ladder: list[tuple[tuple[str, ...], str]] = [((), obj.cls), (("size",), f"{attrs['size']} {obj.cls}")]
    if tint is not None:
        ladder.append(((tint,), f"{attrs[tint]} {obj.cls}"))
    if obj.orientation is not None:
        ladder.append((("orientation",), f"{obj.cls} oriented {obj.orientation}"))
    if tint is not None:
        ladder.append((("size", tint), f"{attrs['size']} {attrs[tint]} {obj.cls}"))
    for keys, text in ladder:
        same = [
            o for o in objects if o.cls == obj.cls and all(o.attributes().get(k) == attrs[k] for k in keys)
        ]
        if same == [obj]:
            return text
    # Position among objects of its class, when it is clearly the extreme one.
    peers = [o for o in objects if o.cls == obj.cls and o is not obj]
    x, y = obj.centroid_px
    margin = RELATION_MARGIN_PX * scale
    for word, ok in (
        ("leftmost", all(x < o.centroid_px[0] - margin for o in peers)),
        ("rightmost", all(x > o.centroid_px[0] + margin for o in peers)),
        ("topmost", all(y < o.centroid_px[1] - margin for o in peers)),
        ("bottommost", all(y > o.centroid_px[1] + margin for o in peers)),
    ):
        if ok:
            return f"{word} {obj.cls}"
    return None


def relation_holds(relation: str, first: SceneObject, second: SceneObject, chip_size: int) -> bool:
    """Truth of ``first <relation> second`` from the rendered pixels (centroids, areas)."""
    (x1, y1), (x2, y2) = first.centroid_px, second.centroid_px
    if relation == "left of":
        return x1 < x2
    if relation == "above":
        return y1 < y2
    if relation == "nearer to":
        centre = chip_size / 2.0
        return math.hypot(x1 - centre, y1 - centre) < math.hypot(x2 - centre, y2 - centre)
    if relation == "larger than":
        return first.area_px > second.area_px
    raise ValueError(f"unknown relation {relation!r}; expected one of {RELATIONS}")


def relation_is_clear(relation: str, first: SceneObject, second: SceneObject, chip_size: int) -> bool:
    """Whether the pair is far enough from the decision boundary of ``relation`` to ask about it."""
    margin = RELATION_MARGIN_PX * chip_size / REFERENCE_CHIP
    (x1, y1), (x2, y2) = first.centroid_px, second.centroid_px
    if relation == "left of":
        return abs(x1 - x2) >= margin
    if relation == "above":
        return abs(y1 - y2) >= margin
    if relation == "nearer to":
        centre = chip_size / 2.0
        return abs(math.hypot(x1 - centre, y1 - centre) - math.hypot(x2 - centre, y2 - centre)) >= margin
    if relation == "larger than":
        order = ("small", "medium", "large")
        big, small = (first, second) if first.area_px >= second.area_px else (second, first)
        return big.area_px >= AREA_RATIO_MARGIN * small.area_px and order.index(big.size) > order.index(
            small.size
        )
    raise ValueError(f"unknown relation {relation!r}; expected one of {RELATIONS}")


# ---------------------------------------------------------------------------------------------- builders


class _Builder:
    def __init__(self, ctx: ChipContext, rng: np.random.Generator) -> None:
        self.ctx = ctx
        self.rng = rng
        self.size = ctx.scene.chip_size
        self.scale = self.size / REFERENCE_CHIP
        self.mod = MODALITY_NAMES[ctx.modality]

    def record(
        self,
        task: str,
        key: str,
        question: str,
        answer_text: str,
        answer: dict[str, Any],
        prompts: list[Prompt] | None = None,
        mask: str | None = None,
    ) -> Record:
        prompts = prompts or []
        rec: Record = {
            "id": f"{self.ctx.scene.scene_id}-{self.ctx.modality}-{task}-{key}",
            "scene_id": self.ctx.scene.scene_id,
            "source": "synthetic",
            "image": self.ctx.image,
            "modality": self.ctx.modality,
            "bands": list(self.ctx.bands),
            "width": self.size,
            "height": self.size,
            "prompts": prompts,
            "prompt_type": prompts[0]["type"] if prompts else "none",
            "conversations": [
                {"from": "human", "value": f"{IMAGE_TOKEN}\n{question}"},
                {"from": "gpt", "value": answer_text},
            ],
            "level": TASK_LEVELS[task],
            "task": task,
            "answer": answer,
            "split": self.ctx.split,
        }
        if mask is not None:
            rec["mask"] = mask
        return rec

    def prompt_type(self, task: str, weights: Sequence[float] | None = None) -> str:
        options = TASK_PROMPT_TYPES[task]
        if weights is None:
            return str(_pick(self.rng, options))
        p = np.asarray(weights, dtype=float)
        return str(options[int(self.rng.choice(len(options), p=p / p.sum()))])

    def any_object(self) -> SceneObject:
        return _pick(self.rng, self.ctx.scene.objects)  # type: ignore[no-any-return]

    @property
    def empty(self) -> bool:
        """An object-free scene (a negative of ``generate``): only scene-level questions apply."""
        return not self.ctx.scene.objects

    # L1 -------------------------------------------------------------------------------------------

    def scene_classification(self, key: str) -> Record:
        question = _pick(self.rng, SCENE_CLASSIFICATION).format(mod=self.mod)
        cover = self.ctx.scene.cover
        return self.record("scene_classification", key, question, cover, {"label": cover})

    def scene_caption(self, key: str) -> Record:
        scene = self.ctx.scene
        counts = [_count_phrase(scene.count(c), c) for c in OBJECT_CLASSES if scene.count(c)]
        place = COVER_PHRASES[scene.cover]
        if scene.secondary_cover is not None:
            place += " " + SECONDARY_PHRASES[scene.secondary_cover]
        if not counts:
            return self._empty_caption(key, place)
        things = _join(counts)
        caption = f"{place[0].upper()}{place[1:]} with {things}."
        references = [
            caption,
            f"{things[0].upper()}{things[1:]} in {place}.",
            f"An image of {place} containing {things}.",
        ]
        question = _pick(self.rng, SCENE_CAPTION).format(mod=self.mod)
        return self.record(
            "scene_caption", key, question, caption, {"caption": caption, "references": references}
        )

    def _empty_caption(self, key: str, place: str) -> Record:
        """The caption of an object-free scene: the place, and that it holds no object (names no class)."""
        caption = f"{place[0].upper()}{place[1:]} with {NO_OBJECT}."
        references = [caption, f"{place[0].upper()}{place[1:]}.", f"An image of {place} with {NO_OBJECT}."]
        question = _pick(self.rng, SCENE_CAPTION).format(mod=self.mod)
        answer = {"caption": caption, "references": references, "negative": NEGATIVE_EMPTY_SCENE}
        return self.record("scene_caption", key, question, caption, answer)

    def counting(self, key: str) -> Record | None:
        scene = self.ctx.scene
        if self.empty:
            return self.absent_count(key)
        kind = self.prompt_type("counting", (0.6, 0.2, 0.2))
        prompts: list[Prompt] = []
        pool = scene.objects
        if kind != "none":
            found = region_prompt(kind, scene.objects, self.rng, self.size)
            if found is None:
                kind = "none"
            else:
                prompt, _, pool_list = found
                prompts, pool = [prompt], tuple(pool_list)
        present = sorted({o.cls for o in pool}, key=OBJECT_CLASSES.index)
        absent = [c for c in OBJECT_CLASSES if c not in present]
        cls = _pick(self.rng, absent) if absent and self.rng.random() < 0.2 else _pick(self.rng, present)
        count = sum(1 for o in pool if o.cls == cls)
        templates = COUNTING if kind == "none" else COUNTING_REGION
        question = _pick(self.rng, templates).format(plural=PLURALS[cls], mod=self.mod)
        return self.record("counting", key, question, str(count), {"count": count, "class": cls}, prompts)

    # L2 -------------------------------------------------------------------------------------------

    def region_classification(self, key: str) -> Record | None:
        if self.empty:
            return None
        obj = self.any_object()
        prompt = object_prompt(self.prompt_type("region_classification"), obj, self.rng, self.size)
        question = _pick(self.rng, REGION_CLASSIFICATION)
        answer = {"label": obj.cls, "object": obj.index}
        return self.record("region_classification", key, question, obj.cls, answer, [prompt])

    def region_caption(self, key: str) -> Record | None:
        if self.empty:
            return None
        obj = self.any_object()
        prompt = object_prompt(self.prompt_type("region_caption"), obj, self.rng, self.size)
        caption = describe_object(obj, self.ctx.modality)
        shorter = caption.split(" oriented ")[0]
        references = [caption, shorter] if shorter != caption else [caption]
        answer = {"caption": caption, "references": references, "object": obj.index}
        return self.record("region_caption", key, _pick(self.rng, REGION_CAPTION), caption, answer, [prompt])

    def _referable(self) -> tuple[SceneObject, str] | None:
        order = self.rng.permutation(len(self.ctx.scene.objects))
        for i in order:
            obj = self.ctx.scene.objects[int(i)]
            text = referring_expression(obj, self.ctx.scene.objects, self.ctx.modality, self.scale)
            if text is not None:
                return obj, text
        return None

    def grounding(self, key: str) -> Record | None:
        if self.empty:
            return None
        kind = self.prompt_type("grounding", (0.6, 0.4 / 3, 0.4 / 3, 0.4 / 3))
        if kind == "none":
            found = self._referable()
            if found is None:
                return None
            obj, text = found
            question = _pick(self.rng, GROUNDING_TEXT).format(desc=text, mod=self.mod)
            prompts: list[Prompt] = []
        else:
            obj = self.any_object()
            prompts = [object_prompt(kind, obj, self.rng, self.size)]
            question = _pick(self.rng, GROUNDING_PROMPT)
        grid = box_to_grid(obj.bbox_px, self.size, self.size)
        answer = {"box": grid, "class": obj.cls, "object": obj.index}
        return self.record("grounding", key, question, format_box(grid), answer, prompts)

    def pixel_grounding(self, key: str) -> Record | None:
        if self.empty:
            return None
        kind = self.prompt_type("pixel_grounding", (0.4, 0.15, 0.15, 0.15, 0.15))
        if kind == "none":
            found = self._referable()
            if found is None:
                return None
            obj, text = found
            question = _pick(self.rng, SEGMENT_TEXT).format(desc=text)
            prompts: list[Prompt] = []
        else:
            obj = self.any_object()
            prompts = [object_prompt(kind, obj, self.rng, self.size)]
            question = _pick(self.rng, SEGMENT_PROMPT)
        mask = self.ctx.mask_for(obj)
        grid = box_to_grid(obj.bbox_px, self.size, self.size)
        answer = {"mask": mask, "box": grid, "class": obj.cls, "object": obj.index}
        return self.record("pixel_grounding", key, question, SEG_TOKEN, answer, prompts, mask=mask)

    # L3 -------------------------------------------------------------------------------------------

    def attributes(self, key: str) -> Record | None:
        if self.empty:
            return None
        obj = self.any_object()
        attribute = str(_pick(self.rng, visible_attributes(obj, self.ctx.modality)))
        value = obj.attributes()[attribute]
        prompt = object_prompt(self.prompt_type("attributes"), obj, self.rng, self.size)
        question = _pick(self.rng, ATTRIBUTE_QUESTIONS[attribute])
        answer = {"attribute": attribute, "value": value, "object": obj.index}
        return self.record("attributes", key, question, value, answer, [prompt])

    # L4 -------------------------------------------------------------------------------------------

    def relation(self, key: str) -> Record | None:
        objects = self.ctx.scene.objects
        if len(objects) < 2:
            return None
        for r in self.rng.permutation(len(RELATIONS)):
            relation = RELATIONS[int(r)]
            pairs = [
                (a, b) for a in objects for b in objects
                if a is not b and relation_is_clear(relation, a, b, self.size)
            ]  # fmt: skip
            if pairs:
                break
        else:
            return None
        first, second = pairs[int(self.rng.integers(len(pairs)))]
        value = "yes" if relation_holds(relation, first, second, self.size) else "no"
        kind = self.prompt_type("relation")
        prompts = [
            object_prompt(kind, first, self.rng, self.size),
            object_prompt(kind, second, self.rng, self.size),
        ]
        question = _pick(self.rng, RELATION_QUESTIONS[relation])
        answer = {"relation": relation, "value": value, "objects": [first.index, second.index]}
        return self.record("relation", key, question, value, answer, prompts)

    # Negatives -------------------------------------------------------------------------------------

    def absent_count(self, key: str) -> Record | None:
        """Counting a class the whole chip does not hold: the answer is 0."""
        absent = [c for c in OBJECT_CLASSES if not self.ctx.scene.count(c)]
        if not absent:
            return None
        cls = _pick(self.rng, absent)
        question = _pick(self.rng, COUNTING).format(plural=PLURALS[cls], mod=self.mod)
        answer = {"count": 0, "class": cls, "negative": NEGATIVE_ABSENT_CLASS}
        return self.record("counting", key, question, "0", answer)

    def area_caption(self, key: str) -> Record | None:
        """A large box or polygon over part of the chip (several objects, one or none, each whole inside or wholly
        outside) described as a scene caption describes a chip: the land cover most of the area shows, and the
        objects inside it, or that it holds none."""
        scene = self.ctx.scene
        kind = "box" if self.rng.random() < 0.5 else "polygon"
        found = region_prompt(
            kind, scene.objects, self.rng, self.size, allow_empty=True, shortest_share=AREA_SHORTEST_SHARE
        )
        if found is None:
            return None
        prompt, region, inside = found
        under = scene.cover_map[rasterize_polygon(region, self.size)]
        if under.size == 0:
            return None
        cover = LAND_COVERS[int(np.bincount(under, minlength=len(LAND_COVERS)).argmax())]
        place = COVER_PHRASES[cover]
        counts = [
            _count_phrase(n, c) for c in OBJECT_CLASSES if (n := sum(1 for o in inside if o.cls == c))
        ]
        things = _join(counts) if counts else NO_OBJECT
        caption = f"{place[0].upper()}{place[1:]} with {things}."
        references = [caption]
        if counts:
            references.append(f"{things[0].upper()}{things[1:]} in {place}.")
        answer = {"caption": caption, "references": references, "area": True, "cover": cover,
                  "objects": sorted(o.index for o in inside)}  # fmt: skip
        question = _pick(self.rng, AREA_CAPTION)
        return self.record("region_caption", key, question, caption, answer, [prompt])

    def background_region(self, key: str) -> Record | None:
        """A visual prompt over background (no object pixel under or near it), answered ``no object``."""
        phantom = background_patch(self.ctx.scene, self.rng)
        if phantom is None:
            return None
        prompt = object_prompt(self.prompt_type("region_classification"), phantom, self.rng, self.size)
        question = _pick(self.rng, REGION_CLASSIFICATION)
        answer = {"label": NO_OBJECT, "negative": NEGATIVE_BACKGROUND}
        return self.record("region_classification", key, question, NO_OBJECT, answer, [prompt])


def background_patch(scene: Scene, rng: np.random.Generator, tries: int = 40) -> SceneObject | None:
    """A made-up object-shaped patch of background (a rotated rectangle 8–24 px long at 128 px) at least
    ``BACKGROUND_CLEARANCE_PX`` from every object, to prompt over; ``None`` if none fits in ``tries`` draws.
    It is not one of the scene's objects: its mask and polygon only serve the prompt makers."""
    size = scene.chip_size
    scale = size / REFERENCE_CHIP
    clearance = BACKGROUND_CLEARANCE_PX * scale
    inner = shapely_box(2 * scale, 2 * scale, size - 2 * scale, size - 2 * scale)
    for _ in range(tries):
        length = float(rng.uniform(8.0, 24.0) * scale)
        width = float(rng.uniform(0.4, 1.0) * length)
        angle = float(rng.uniform(0.0, 180.0))
        centre = (float(rng.uniform(0, size)), float(rng.uniform(0, size)))
        polygon = shapely_affinity.rotate(
            shapely_box(
                centre[0] - length / 2, centre[1] - width / 2, centre[0] + length / 2, centre[1] + width / 2
            ),
            -angle,
            origin=centre,
        )
        if not inner.contains(polygon):
            continue
        if any(polygon.distance(o.polygon) < clearance for o in scene.objects):
            continue
        mask = rasterize_polygon(polygon, size)
        if mask.sum() < 4:
            continue
        bbox, centroid, area = measure_mask(mask)
        return SceneObject(
            index=-1, cls="building", size="small", length_px=round(length, 3), angle_deg=angle,
            colour=COLOURS[0], temperature=TEMPERATURES[0], paint_gain=1.0, polygon=polygon, mask=mask,
            bbox_px=bbox, centroid_px=centroid, area_px=area,
        )  # fmt: skip
    return None


def build_negatives(ctx: ChipContext, rng: np.random.Generator, tasks: Sequence[str]) -> list[Record]:
    """The negatives of one chip (``generate``'s ``negatives`` setting): on ``BACKGROUND_SHARE`` of chips a prompt
    over background answered ``no object`` (region classification), on ``ABSENT_COUNT_SHARE`` a count of a class
    the chip does not hold (answer 0; counting already asks about an absent class one time in five). Drawn from
    their own stream, so the chip's other records are the same with or without them; an object-free scene's
    caption (naming no object) comes from ``scene_caption`` itself. The shares keep positives the majority, so
    that a fine-tune on them does not learn to abstain where an object is."""
    builder = _Builder(ctx, rng)
    records: list[Record] = []
    background, absent = rng.random(2)
    if "region_classification" in tasks and (background < BACKGROUND_SHARE or builder.empty):
        record = builder.background_region("neg")
        if record is not None:
            records.append(record)
    # An empty scene's counting record is an absent count already.
    if "counting" in tasks and absent < ABSENT_COUNT_SHARE and not builder.empty:
        record = builder.absent_count("neg")
        if record is not None:
            records.append(record)
    return records


def build_areas(ctx: ChipContext, rng: np.random.Generator, tasks: Sequence[str]) -> list[Record]:
    """The area description of one chip (``generate``'s ``areas`` setting), on ``AREA_SHARE`` of chips: a
    ``region_caption`` record whose region is a large area, not one object (``_Builder.area_caption``). Drawn
    from its own stream, so the chip's other records are the same with or without it."""
    if "region_caption" not in tasks or rng.random() >= AREA_SHARE:
        return []
    record = _Builder(ctx, rng).area_caption("area")
    return [] if record is None else [record]


def build_records(
    ctx: ChipContext, tasks: Sequence[str], rng: np.random.Generator, records_per_task: int = 1
) -> list[Record]:
    """All records of one chip: ``records_per_task`` per task (fewer where a task does not apply)."""
    builder = _Builder(ctx, rng)
    records: list[Record] = []
    for task in tasks:
        if task not in TASK_LEVELS:
            raise ValueError(f"unknown task {task!r}; expected one of {sorted(TASK_LEVELS)}")
        make: Callable[[str], Record | None] = getattr(builder, task)
        for k in range(records_per_task):
            record = make(str(k))
            if record is not None:
                records.append(record)
    return records
