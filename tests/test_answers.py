"""The strict answer parser: malformed boxes and answers of the wrong form are reported as unparsed."""

from __future__ import annotations

from pathlib import Path

import pytest

from earthgptx.answers import AnswerParseError, parse_answer_strict, validate_box
from earthgptx.data import generate_dataset, load_records
from earthgptx.data.vocabulary import TASKS


def test_a_grounding_answer() -> None:
    answer = parse_answer_strict("[120, 40, 360, 200]", task="grounding", width=128, height=128)
    assert answer.parsed and answer.failure is None
    assert answer.boxes == [[120, 40, 360, 200]]
    assert answer.boxes_px == [[15.36, 5.12, 46.08, 25.6]]
    assert answer.require() is answer


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[120, 400, 360, 200]", "y2 <= y1"),  # y2 < y1
        ("[360, 40, 120, 200]", "x2 <= x1"),
        ("[120, 40, 120, 200]", "x2 <= x1"),  # empty box
        ("[120, 40, 360, 1000]", "outside"),
        ("[120, 40, 360, 1200]", "outside"),
        ("[-5, 40, 360, 200]", "not a non-negative integer"),
        ("[12.5, 40, 360, 200]", "not a non-negative integer"),
        ("[120, 40, 360]", "4 coordinates"),
        ("[120, 40, 360, 200, 7]", "4 coordinates"),
        ("[ship, 40, 360, 200]", "not a non-negative integer"),
        ("[120, 40, 360, 200", "unbalanced"),
        ("ship 120 40 360 200]", "unbalanced"),
    ],
)
def test_malformed_boxes_are_unparsed_never_geometry(text: str, reason: str) -> None:
    answer = parse_answer_strict(text, task="grounding")
    assert not answer.parsed
    assert answer.failure is not None and reason in answer.failure
    assert answer.boxes == [] and answer.boxes_px == []
    with pytest.raises(AnswerParseError, match=reason.split()[0]):
        answer.require()


def test_one_bad_box_makes_the_whole_answer_unparsed() -> None:
    answer = parse_answer_strict("ship [10, 10, 50, 50] and [60, 90, 80, 20]")
    assert not answer.parsed and answer.boxes == []


@pytest.mark.parametrize(
    ("text", "task"),
    [
        ("ship", "grounding"),  # no box
        ("Here it is.", "pixel_grounding"),  # no [SEG]
        ("many", "counting"),
        ("maybe", "relation"),
        ("forest", "scene_classification"),
        ("1 2 3 4 5 6", "region_classification"),
        ("purple", "attributes"),
        ("3 [10, 10, 50, 50]", "counting"),
        ("", None),
        ("   ", "scene_caption"),
    ],
)
def test_answers_of_the_wrong_form_are_unparsed(text: str, task: str | None) -> None:
    answer = parse_answer_strict(text, task=task)
    assert not answer.parsed and answer.failure


@pytest.mark.parametrize(
    ("text", "task", "field", "value"),
    [
        ("3", "counting", "count", 3),
        ("two", "counting", "count", 2),
        ("yes", "relation", "yes_no", "yes"),
        ("No.", "relation", "yes_no", "no"),
        ("bare soil", "scene_classification", "label", "bare soil"),
        ("storage tank", "region_classification", "label", "storage tank"),
        ("water", "region_classification", "label", "water"),
        ("northeast-southwest", "attributes", "label", "northeast-southwest"),
        ("[SEG]", "pixel_grounding", "has_seg", True),
        ("a large red ship [100, 100, 300, 200]", "region_caption", "boxes", [[100, 100, 300, 200]]),
    ],
)
def test_well_formed_answers(text: str, task: str, field: str, value: object) -> None:
    answer = parse_answer_strict(text, task=task)
    assert answer.parsed, answer.failure
    assert getattr(answer, field) == value


@pytest.mark.parametrize("task", ["grounding", "pixel_grounding", "region_classification", None])
def test_abstentions_are_answers_without_geometry(task: str | None) -> None:
    answer = parse_answer_strict("No object.", task=task)
    assert answer.parsed and answer.abstained
    assert answer.boxes == [] and not answer.has_seg


def test_validate_box_and_unknown_task() -> None:
    assert validate_box(["0", " 1", "999", "2 "]) == [0, 1, 999, 2]
    with pytest.raises(AnswerParseError):
        validate_box([0, 5, 10, 5])
    with pytest.raises(ValueError, match="unknown task"):
        parse_answer_strict("ship", task="detection")


def test_every_answer_of_the_dataset_parses(tmp_path: Path) -> None:
    path = generate_dataset(tmp_path / "d", 4, seed=11, progress=False, records_per_task=2)
    records = load_records(path)
    assert {r["task"] for r in records} == set(TASKS)
    for record in records:
        answer = parse_answer_strict(
            record["conversations"][1]["value"], task=record["task"], width=128, height=128
        )
        assert answer.parsed, (record["id"], record["conversations"][1]["value"], answer.failure)
        if record["task"] == "grounding":
            assert answer.boxes == [record["answer"]["box"]]
        if record["task"] == "counting":
            assert answer.count == record["answer"]["count"]


@pytest.mark.parametrize(
    "text",
    [
        "a large yellow no object no object yellow no object yellow no object object object object object",
        "a large warm no object no object no object built object object object",
        "a small ship ship ship",
        "a small warm no object no object warm ship object warm ship object",
        "a large no object built object built object built object",
        # the stage-16 model, asked to describe a large polygon in `make demo`: one "no object", then a loop
        "a large cold no object built-up object built-up object",
        "a small no object ship",
        "a large warm built-up object built-up object",
    ],
)
def test_a_degenerate_generation_is_reported_unparsed(text: str) -> None:
    """The stage-14 and stage-16 models loop like this when asked to describe a large polygon over several things
    (an AOI)."""
    answer = parse_answer_strict(text)
    assert not answer.parsed and answer.failure.startswith("degenerate answer")
    assert answer.text == text and answer.label == ""


@pytest.mark.parametrize(
    "text",
    [
        "A water area with no object.",
        "a water area beside bare soil with 2 ships and 1 building",
        "no object",
        "No object.",
        "yes",
        "a large cold building oriented north-south",
        "an image of water with no object",
    ],
)
def test_well_formed_answers_are_not_degenerate(text: str) -> None:
    assert parse_answer_strict(text).parsed
