"""The strict answer parser: model text → a structured answer, or a parse failure reported as such.

An answer the model wrote badly must be stored as an *unparsed* answer with its reason, never as a wrong
geometry. :func:`parse_answer_strict` therefore checks everything written in brackets: a box is exactly four
integers on the ``[0, 1000)`` grid with ``x1 < x2`` and ``y1 < y2`` (docs/architecture.md); anything else in brackets
but ``[SEG]`` (``[12, 40, 55]``, ``[-3, 4, 10, 20]``, ``[1.5, ...]``, an unclosed ``[``, ``y2 < y1``) makes
the answer unparsed. With a ``task`` (``earthgptx.data.vocabulary.TASKS``) the answer must also have that task's
form: a box for grounding, ``[SEG]`` for pixel grounding, a count for counting, yes/no for relations, a word of
the closed vocabulary for classification and attributes. An abstention ("no object", "none", "nothing") is a
parsed answer with ``abstained`` set and no geometry.

Nothing here imports torch: services (inference, resultstore, api) use it as it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from earthgptx.data.vocabulary import ATTRIBUTE_VALUES, LAND_COVERS, OBJECT_CLASSES, TASKS
from earthgptx.formats import GRID, SEG_TOKEN, box_from_grid

__all__ = ["ABSTENTIONS", "AnswerParseError", "StrictAnswer", "parse_answer_strict", "validate_box"]

ABSTENTIONS: Final = ("no object", "nothing", "none", "no objects", "there is nothing", "not present")
_BRACKETS = re.compile(r"\[([^\[\]]*)\]")
_INTEGER = re.compile(r"^\d{1,4}$")
_NUMBER_WORDS: Final = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5,
    "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
}  # fmt: skip
_ATTRIBUTE_WORDS: Final = frozenset(v for values in ATTRIBUTE_VALUES.values() for v in values)
_TASKS_WITHOUT_BOXES: Final = frozenset(
    {"counting", "relation", "attributes", "scene_classification", "region_classification"}
)


class AnswerParseError(ValueError):
    """An answer that does not have the form it must have; raised by :func:`validate_box` and by
    ``StrictAnswer.require``."""


@dataclass(frozen=True)
class StrictAnswer:
    """An answer taken apart. ``parsed`` is False when the text is malformed (``failure`` says why); the
    geometry is then empty, so nothing wrong is ever stored as a box.

    ``boxes`` are grid integers ``[x1, y1, x2, y2]``; ``boxes_px`` the same in chip pixels when the chip size is
    known; ``label`` is the text without boxes and ``[SEG]``.
    """

    text: str
    parsed: bool
    failure: str | None = None
    label: str = ""
    boxes: list[list[int]] = field(default_factory=list)
    boxes_px: list[list[float]] = field(default_factory=list)
    has_seg: bool = False
    count: int | None = None
    yes_no: str | None = None
    abstained: bool = False

    def require(self) -> StrictAnswer:
        """This answer, or ``AnswerParseError`` with the failure when it is unparsed."""
        if not self.parsed:
            raise AnswerParseError(self.failure or "unparsed answer")
        return self


def validate_box(values: list[str] | tuple[int, ...] | list[int]) -> list[int]:
    """Four grid integers with ``0 <= x1 < x2 < 1000`` and ``0 <= y1 < y2 < 1000``, else ``AnswerParseError``."""
    if len(values) != 4:
        raise AnswerParseError(f"a box has 4 coordinates, got {len(values)}: {list(values)}")
    numbers: list[int] = []
    for value in values:
        text = str(value).strip()
        if not _INTEGER.match(text):
            raise AnswerParseError(f"box coordinate {text!r} is not a non-negative integer")
        numbers.append(int(text))
    x1, y1, x2, y2 = numbers
    outside = [v for v in numbers if not 0 <= v < GRID]
    if outside:
        raise AnswerParseError(f"box {numbers} has coordinates outside [0, {GRID}): {outside}")
    if x2 <= x1:
        raise AnswerParseError(f"box {numbers} has x2 <= x1")
    if y2 <= y1:
        raise AnswerParseError(f"box {numbers} has y2 <= y1")
    return numbers


def _words(text: str) -> list[str]:
    return re.sub(r"[^\w\s-]", " ", text.lower()).split()


def _is_abstention(label: str) -> bool:
    normalised = " ".join(_words(label))
    return any(normalised == a or normalised.startswith(a + " ") for a in ABSTENTIONS)


def _degenerate(label: str) -> str | None:
    """Why ``label`` is a degenerate generation (a loop), or None. No well-formed answer of any task has any of:
    the abstention phrase more than once; the abstention phrase with more words after it (an empty scene's caption
    ends with "with no object", an abstention is "no object" alone); a run of one word repeated three times in a row
    ("object object object"); a run of two or three words repeated twice in a row ("built-up object built-up
    object"). The looping descriptions of a large area (several things, not one object) show these."""
    words = _words(label)
    pairs = [i for i, pair in enumerate(zip(words, words[1:], strict=False)) if pair == ("no", "object")]
    if len(pairs) > 1:
        return f"degenerate answer: 'no object' {len(pairs)} times"
    if pairs and pairs[0] + 2 < len(words):
        return f"degenerate answer: 'no object' followed by {' '.join(words[pairs[0] + 2 :])!r}"
    for i in range(len(words) - 2):
        if words[i] == words[i + 1] == words[i + 2]:
            return f"degenerate answer: {words[i]!r} three times in a row"
    for n in (2, 3):
        for i in range(len(words) - 2 * n + 1):
            if words[i : i + n] == words[i + n : i + 2 * n]:
                return f"degenerate answer: {' '.join(words[i : i + n])!r} twice in a row"
    return None


def _count(label: str) -> int | None:
    for word in _words(label):
        if word.isdigit():
            return int(word)
        if word in _NUMBER_WORDS:
            return _NUMBER_WORDS[word]
    return None


def _task_failure(
    task: str, label: str, boxes: list[list[int]], has_seg: bool, abstained: bool
) -> str | None:
    words = " ".join(_words(label))
    if task == "grounding":
        if not boxes and not abstained:
            return "a grounding answer needs a box [x1, y1, x2, y2]"
    elif task == "pixel_grounding":
        if not has_seg and not abstained:
            return f"a pixel grounding answer needs {SEG_TOKEN}"
    elif task == "counting":
        if _count(label) is None:
            return "a counting answer needs a number"
    elif task == "relation":
        if not words.split()[:1] or words.split()[0] not in ("yes", "no"):
            return "a relation answer must start with yes or no"
    elif task == "scene_classification":
        if words not in LAND_COVERS:
            return f"a scene class must be one of {', '.join(LAND_COVERS)}, got {label!r}"
    elif task == "region_classification":
        if words not in OBJECT_CLASSES and words not in LAND_COVERS and not abstained:
            return f"a region class must be an object class, a land cover or 'no object', got {label!r}"
    elif task == "attributes":
        if words not in _ATTRIBUTE_WORDS:
            return f"an attribute answer must be one of {', '.join(sorted(_ATTRIBUTE_WORDS))}, got {label!r}"
    if boxes and task in _TASKS_WITHOUT_BOXES:
        return f"a {task} answer has no boxes"
    return None


def parse_answer_strict(
    text: str, task: str | None = None, width: float | None = None, height: float | None = None
) -> StrictAnswer:
    """Parse ``text``; never raises for a malformed answer (see ``StrictAnswer.parsed``/``failure``).

    ``task`` (one of ``TASKS``) adds that task's form; ``width``/``height`` (chip pixels) fill ``boxes_px``.
    """
    if task is not None and task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    clean = text.strip()

    def failed(reason: str) -> StrictAnswer:
        return StrictAnswer(text=clean, parsed=False, failure=reason)

    if not clean:
        return failed("empty answer")
    boxes: list[list[int]] = []
    without_seg = clean.replace(SEG_TOKEN, " ")
    for match in _BRACKETS.finditer(without_seg):
        try:
            boxes.append(validate_box([part for part in match.group(1).split(",")]))
        except AnswerParseError as exc:
            return failed(f"malformed box {match.group(0)!r}: {exc}")
    rest = _BRACKETS.sub(" ", without_seg)
    if "[" in rest or "]" in rest:
        return failed("unbalanced brackets in the answer")
    label = re.sub(r"\s+", " ", rest).strip(" .,;:")
    has_seg = SEG_TOKEN in clean
    abstained = _is_abstention(label) and not boxes and not has_seg
    degenerate = _degenerate(label)
    if degenerate is not None:
        return failed(degenerate)
    if task is not None:
        reason = _task_failure(task, label, boxes, has_seg, abstained)
        if reason is not None:
            return failed(reason)
    words = _words(label)
    boxes_px = [box_from_grid(b, width, height) for b in boxes] if width and height else []
    return StrictAnswer(
        text=clean,
        parsed=True,
        label=label,
        boxes=boxes,
        boxes_px=boxes_px,
        has_seg=has_seg,
        count=_count(label) if task in (None, "counting") else None,
        yes_no=words[0] if words and words[0] in ("yes", "no") else None,
        abstained=abstained,
    )
