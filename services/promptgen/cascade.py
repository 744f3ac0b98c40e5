"""The cascade's rules (docs/architecture.md), pure: which questions to ask of a tile, given what is already known. No I/O.

- L1, per tile: scene classification, caption, and one count per object class;
- L2, per class that L1 counted (count > 0): grounding (a box), and ``[SEG]`` pixel grounding when the policy
  asks for masks;
- L3, per grounded object (at most ``max_objects_per_tile`` per grounding answer): each of the policy's attributes
  that the modality shows, with the object as a box or a point prompt;
- L4, once every L2 question of the tile is answered: relations between the nearest pairs of the tile's grounded
  objects (at most ``max_relations_per_tile``), as two-prompt tasks.

Instructions are the dataset's own templates (``earthgptx.data.tasks``: the first wording of each), so the model
sees questions it was trained on, and the same question always gets the same words (and so the same task id).
A ``Policy`` is chosen per deployment (``EGX_PROMPTGEN_POLICY`` as JSON).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations

from pydantic import BaseModel, Field, field_validator
from shapely.geometry import Point, box
from shapely.geometry.base import BaseGeometry

from earthgptx.data.tasks import (
    ATTRIBUTE_QUESTIONS,
    COUNTING,
    GROUNDING_TEXT,
    MODALITY_NAMES,
    RELATION_QUESTIONS,
    SCENE_CAPTION,
    SCENE_CLASSIFICATION,
    SEGMENT_TEXT,
)
from earthgptx.data.vocabulary import OBJECT_CLASSES, PLURALS, RELATIONS, VISIBLE_ATTRIBUTES

L1, L2, L3, L4 = 1, 2, 3, 4
SCENE_TASKS = ("scene_classification", "scene_caption")
COUNTING_TASK = "counting"
GROUNDING_TASK = "grounding"
SEGMENT_TASK = "pixel_grounding"
ATTRIBUTE_TASK = "attributes"
RELATION_TASK = "relation"
AOI_TASK = "aoi"
QUERY_TASK = "query"
REGION = "<region1>"


class Policy(BaseModel):
    """Which levels and tasks run, and the caps per tile (one per deployment)."""

    levels: tuple[int, ...] = (L1, L2, L3, L4)
    scene_tasks: tuple[str, ...] = SCENE_TASKS
    count_classes: tuple[str, ...] = OBJECT_CLASSES
    masks: bool = False
    attributes: tuple[str, ...] = ("size", "colour", "temperature")
    object_prompt: str = "box"
    max_objects_per_tile: int = Field(default=2, ge=0)
    relations: tuple[str, ...] = ("left of",)
    max_relations_per_tile: int = Field(default=2, ge=0)

    @field_validator("levels")
    @classmethod
    def _levels(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        bad = [level for level in value if level not in (L1, L2, L3, L4)]
        if bad:
            raise ValueError(f"levels must be among 1..4, got {bad}")
        return value

    @field_validator("count_classes")
    @classmethod
    def _classes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [name for name in value if name not in OBJECT_CLASSES]
        if bad:
            raise ValueError(f"count_classes must be among {OBJECT_CLASSES}, got {bad}")
        return value

    @field_validator("object_prompt")
    @classmethod
    def _object_prompt(cls, value: str) -> str:
        if value not in ("box", "point"):
            raise ValueError(f"object_prompt must be 'box' or 'point', got {value!r}")
        return value

    @field_validator("relations")
    @classmethod
    def _relations(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [name for name in value if name not in RELATIONS]
        if bad:
            raise ValueError(f"relations must be among {RELATIONS}, got {bad}")
        return value


@dataclass(frozen=True)
class Prompt:
    """A visual prompt in chip pixels: ``kind`` is point, box or polygon."""

    kind: str
    geometry: BaseGeometry


@dataclass(frozen=True)
class Question:
    """One task to ask of a tile: everything but the tile, chip and ids, which the handler adds."""

    level: int
    task: str
    instruction: str
    prompts: tuple[Prompt, ...] = ()
    subject: str = ""  # the object class (L1 counting, L2), the attribute (L3) or the relation (L4) asked about


@dataclass(frozen=True)
class GroundedObject:
    """An object an L2 answer pointed at, in chip pixels."""

    label: str
    box: tuple[float, float, float, float]
    score: float = 0.0
    key: str = field(default="", compare=False)  # stable order among objects (task id and ordinal)

    @property
    def centre(self) -> Point:
        x1, y1, x2, y2 = self.box
        return Point((x1 + x2) / 2.0, (y1 + y2) / 2.0)


def _modality(modality: str) -> str:
    return MODALITY_NAMES.get(modality, modality)


def scene_questions(policy: Policy, modality: str) -> list[Question]:
    """L1 of one tile."""
    if L1 not in policy.levels:
        return []
    mod = _modality(modality)
    wording = {"scene_classification": SCENE_CLASSIFICATION[0], "scene_caption": SCENE_CAPTION[0]}
    questions = [Question(L1, task, wording[task].format(mod=mod)) for task in policy.scene_tasks if task in wording]
    questions += [
        Question(L1, COUNTING_TASK, counting_instruction(name, modality), subject=name)
        for name in policy.count_classes
    ]
    return questions


def counting_instruction(name: str, modality: str) -> str:
    return COUNTING[0].format(plural=PLURALS[name], mod=_modality(modality))


def counted_class(instruction: str, modality: str) -> str | None:
    """The class an L1 counting instruction asked about (None if it is not one of ours)."""
    for name in OBJECT_CLASSES:
        if counting_instruction(name, modality) == instruction:
            return name
    return None


def grounding_questions(policy: Policy, modality: str, name: str, count: int) -> list[Question]:
    """L2 for one class that L1 counted on the tile."""
    if L2 not in policy.levels or count <= 0:
        return []
    mod = _modality(modality)
    questions = [Question(L2, GROUNDING_TASK, GROUNDING_TEXT[0].format(desc=name, mod=mod), subject=name)]
    if policy.masks:
        questions.append(Question(L2, SEGMENT_TASK, SEGMENT_TEXT[0].format(desc=name, mod=mod), subject=name))
    return questions


def object_prompt(policy: Policy, obj: GroundedObject) -> Prompt:
    if policy.object_prompt == "point":
        return Prompt("point", obj.centre)
    return Prompt("box", box(*obj.box))


def attribute_questions(policy: Policy, modality: str, objects: Sequence[GroundedObject]) -> list[Question]:
    """L3: every attribute the modality shows, for each of the first ``max_objects_per_tile`` objects."""
    if L3 not in policy.levels:
        return []
    shown = [name for name in VISIBLE_ATTRIBUTES.get(modality, ("size",)) if name in policy.attributes]
    ordered = sorted(objects, key=lambda o: (-o.score, o.key))[: policy.max_objects_per_tile]
    return [
        Question(L3, ATTRIBUTE_TASK, ATTRIBUTE_QUESTIONS[name][0], (object_prompt(policy, obj),), subject=name)
        for obj in ordered
        for name in shown
    ]


def nearest_pairs(objects: Sequence[GroundedObject], limit: int) -> list[tuple[GroundedObject, GroundedObject]]:
    """The ``limit`` closest pairs of distinct objects (by centre distance; ties broken by the objects' keys)."""
    ordered = sorted(objects, key=lambda o: o.key)
    pairs = sorted(
        combinations(ordered, 2),
        key=lambda pair: (pair[0].centre.distance(pair[1].centre), pair[0].key, pair[1].key),
    )
    return pairs[:limit]


def relation_questions(policy: Policy, objects: Sequence[GroundedObject]) -> list[Question]:
    """L4: the policy's relations between the nearest pairs of a tile's grounded objects."""
    if L4 not in policy.levels or not policy.relations:
        return []
    questions = []
    for first, second in nearest_pairs(objects, policy.max_relations_per_tile):
        prompts = (object_prompt(policy, first), object_prompt(policy, second))
        questions += [
            Question(L4, RELATION_TASK, RELATION_QUESTIONS[name][0], prompts, subject=name)
            for name in policy.relations
        ]
    return questions


def region_instruction(instruction: str) -> str:
    """An AOI's or query's instruction, made to refer to its prompt (``<region1>``) when it does not."""
    text = " ".join(instruction.split())
    return text if REGION in text else f"{text} {REGION}".strip()
