"""Dataset records (JSON Lines, docs/architecture.md): schema validation, reading and writing.

A record is one instruction/answer sample on one image chip. Paths inside a record (``image``, ``mask``) are
relative to the JSON Lines file. Coordinates of ``prompts`` are chip pixels; boxes written in answer text
and in ``answer["box"]`` are integers on the ``[0, 1000)`` grid (``earthgptx.formats``, which also holds the
placeholders and the grid conversions).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from earthgptx.data.vocabulary import TASK_LEVELS
from earthgptx.formats import IMAGE_TOKEN, PROMPT_FIELDS, SEG_TOKEN, format_box, region_indices

Record = dict[str, Any]


class RecordValidationError(ValueError):
    """A record does not follow the format; the message names the record and the problem."""


@lru_cache(maxsize=1)
def record_schema() -> dict[str, Any]:
    """The JSON Schema of one record (``earthgptx/data/record_schema.json``)."""
    text = resources.files("earthgptx.data").joinpath("record_schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@lru_cache(maxsize=1)
def _validator() -> jsonschema.protocols.Validator:
    schema = record_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)


def validate_record(record: Record) -> None:
    """Raise :class:`RecordValidationError` unless ``record`` follows the schema and the format's rules.

    Beyond the JSON Schema: the level matches the task, turns alternate human/gpt starting with one
    ``<image>``, the ``<regionN>`` placeholders are exactly 1..len(prompts), prompt types agree with
    ``prompt_type``, prompt coordinates lie inside the chip, and pixel grounding answers carry ``[SEG]``.
    """
    name = record.get("id", "<no id>") if isinstance(record, dict) else "<not an object>"
    errors = sorted(_validator().iter_errors(record), key=lambda e: list(e.absolute_path))
    if errors:
        worst = jsonschema.exceptions.best_match(errors)
        where = "/".join(str(p) for p in worst.absolute_path) or "<root>"
        raise RecordValidationError(f"record {name}: {where}: {worst.message}")
    problems = list(_format_problems(record))
    if problems:
        raise RecordValidationError(f"record {name}: " + "; ".join(problems))


def _format_problems(record: Record) -> Iterable[str]:
    if TASK_LEVELS[record["task"]] != record["level"]:
        yield f"task {record['task']} is level {TASK_LEVELS[record['task']]}, not {record['level']}"
    turns = record["conversations"]
    for i, turn in enumerate(turns):
        expected = "human" if i % 2 == 0 else "gpt"
        if turn["from"] != expected:
            yield f"turn {i} is from {turn['from']!r}, expected {expected!r}"
    if len(turns) % 2:
        yield "the conversation ends on a human turn"
    human_text = " ".join(t["value"] for t in turns if t["from"] == "human")
    if not turns[0]["value"].startswith(IMAGE_TOKEN + "\n"):
        yield f"the first human turn must start with {IMAGE_TOKEN!r} and a newline"
    if human_text.count(IMAGE_TOKEN) != 1:
        yield f"the human turns must hold exactly one {IMAGE_TOKEN}"
    prompts = record["prompts"]
    referenced = set(region_indices(human_text))
    if referenced != set(range(1, len(prompts) + 1)):
        yield f"region placeholders {sorted(referenced)} do not match {len(prompts)} prompt(s)"
    kinds = {p["type"] for p in prompts}
    if record["prompt_type"] == "none":
        if prompts:
            yield "prompt_type is 'none' but prompts are given"
    elif kinds != {record["prompt_type"]}:
        yield f"prompt_type {record['prompt_type']!r} but prompts are {sorted(kinds)}"
    width, height = record["width"], record["height"]
    for i, prompt in enumerate(prompts):
        for x, y in _prompt_points(prompt):
            if not (0.0 <= x <= width and 0.0 <= y <= height):
                yield f"prompt {i + 1} has ({x}, {y}) outside the {width}x{height} chip"
                break
        if prompt["type"] == "box":
            x1, y1, x2, y2 = prompt["box"]
            if not (x1 < x2 and y1 < y2):
                yield f"prompt {i + 1} box {prompt['box']} is empty"
    answers = " ".join(t["value"] for t in turns if t["from"] == "gpt")
    if record["task"] == "pixel_grounding" and SEG_TOKEN not in answers:
        yield f"a pixel grounding answer must contain {SEG_TOKEN}"
    if record["task"] == "grounding" and format_box(record["answer"]["box"]) not in answers:
        yield f"the grounding answer does not write the box {record['answer']['box']}"


def _prompt_points(prompt: dict[str, Any]) -> list[tuple[float, float]]:
    kind = prompt["type"]
    if kind == "point":
        return [tuple(prompt["point"])]  # type: ignore[list-item]
    if kind == "box":
        x1, y1, x2, y2 = prompt["box"]
        return [(x1, y1), (x2, y2)]
    return [tuple(p) for p in prompt[PROMPT_FIELDS[kind]]]  # type: ignore[misc]


def load_records(jsonl_path: str | Path) -> list[Record]:
    """Read every record of a JSON Lines file (blank lines are skipped; a bad line raises with its number)."""
    path = Path(jsonl_path)
    records: list[Record] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise RecordValidationError(f"{path}:{number}: not JSON ({exc.msg})") from exc
    return records


def dump_record(record: Record) -> str:
    """One record as one JSON line (compact, UTF-8 kept readable)."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))
