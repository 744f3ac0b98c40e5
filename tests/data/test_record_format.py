"""Records follow the schema and the format rules; bad records are rejected with a reason."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from earthgptx.data import (
    RecordValidationError,
    box_from_grid,
    box_to_grid,
    format_box,
    load_records,
    record_schema,
    validate_record,
)


def good_record() -> dict[str, Any]:
    return {
        "id": "scene000001-sar-relation-0",
        "scene_id": "scene000001",
        "source": "synthetic",
        "image": "images/scene000001_sar.tif",
        "modality": "sar",
        "bands": ["vv", "vh"],
        "width": 128,
        "height": 128,
        "prompts": [{"type": "point", "point": [10.5, 20.25]}, {"type": "point", "point": [100.0, 90.0]}],
        "prompt_type": "point",
        "conversations": [
            {"from": "human", "value": "<image>\nIs <region1> to the left of <region2>?"},
            {"from": "gpt", "value": "yes"},
        ],
        "level": "L4",
        "task": "relation",
        "answer": {"relation": "left of", "value": "yes", "objects": [0, 1]},
        "split": "train",
    }


def test_schema_is_a_valid_json_schema() -> None:
    import jsonschema

    schema = record_schema()
    jsonschema.validators.validator_for(schema).check_schema(schema)


def test_a_good_record_validates() -> None:
    validate_record(good_record())


def _broken(change: Any) -> dict[str, Any]:
    record = copy.deepcopy(good_record())
    change(record)
    return record


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda r: r.pop("split"), "split"),
        (lambda r: r.update(modality="radar"), "modality"),
        (lambda r: r.update(bands=["red", "green", "blue"]), "bands"),
        (lambda r: r.update(image="/abs/path.tif"), "image"),
        (lambda r: r.update(level="L2"), "level"),
        (lambda r: r["prompts"].pop(), "placeholders"),
        (lambda r: r["prompts"][0].update(point=[130.0, 5.0]), "outside"),
        (lambda r: r.update(prompt_type="box"), "prompt_type"),
        (lambda r: r["prompts"].__setitem__(0, {"type": "box", "box": [5, 5, 5, 9]}), "box"),
        (lambda r: r["answer"].update(value="maybe"), "maybe"),
        (lambda r: r["conversations"].reverse(), "turn"),
        (lambda r: r["conversations"][0].update(value="Is <region1> left of <region2>?"), "<image>"),
        (lambda r: r.update(mask="masks/x.png"), "mask"),
        (lambda r: r.update(extra_field=1), "extra_field"),
        (lambda r: r["prompts"].__setitem__(0, {"type": "polygon", "polygon": [[1, 1], [2, 2]]}), "prompts"),
    ],
)
def test_bad_records_are_rejected(change: Any, reason: str) -> None:
    with pytest.raises(RecordValidationError, match=reason.replace("[", r"\[")) as info:
        validate_record(_broken(change))
    assert "scene000001-sar-relation-0" in str(info.value)


def test_pixel_grounding_needs_a_mask_and_seg() -> None:
    record = _broken(lambda r: None)
    record.update(
        task="pixel_grounding",
        level="L2",
        prompts=[{"type": "scribble", "line": [[1.0, 1.0], [5.0, 6.0]]}],
        prompt_type="scribble",
        conversations=[
            {"from": "human", "value": "<image>\nSegment <region1>."},
            {"from": "gpt", "value": "[SEG]"},
        ],
        answer={"mask": "masks/scene000001_obj0.png"},
    )
    with pytest.raises(RecordValidationError, match="mask"):
        validate_record(record)
    record["mask"] = "masks/scene000001_obj0.png"
    validate_record(record)
    record["conversations"][1]["value"] = "done"
    with pytest.raises(RecordValidationError, match="SEG"):
        validate_record(record)


def test_grounding_answer_text_must_write_the_box() -> None:
    record = _broken(lambda r: None)
    record.update(
        task="grounding",
        level="L2",
        prompts=[],
        prompt_type="none",
        conversations=[
            {"from": "human", "value": "<image>\nLocate the ship."},
            {"from": "gpt", "value": "[10, 20, 30, 40]"},
        ],
        answer={"box": [10, 20, 30, 40]},
    )
    validate_record(record)
    record["answer"]["box"] = [10, 20, 30, 41]
    with pytest.raises(RecordValidationError, match="box"):
        validate_record(record)
    record["answer"]["box"] = [10, 20, 30, 1000]
    with pytest.raises(RecordValidationError, match="1000"):
        validate_record(record)


def test_grid_boxes() -> None:
    assert box_to_grid([0, 0, 128, 128], 128, 128) == [0, 0, 999, 999]
    assert box_to_grid([32, 64, 96, 100], 128, 128) == [250, 500, 750, 781]
    assert box_to_grid([-3, 5, 200, 64], 128, 128) == [0, 39, 999, 500]
    assert box_from_grid([250, 500, 750, 781], 128, 128) == pytest.approx([32, 64, 96, 99.968])
    assert format_box([1, 22, 333, 999]) == "[1, 22, 333, 999]"


def test_load_records_round_trip_and_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps(good_record()) + "\n\n" + json.dumps(good_record()) + "\n")
    assert load_records(path) == [good_record(), good_record()]
    path.write_text(json.dumps(good_record()) + "\n{not json\n")
    with pytest.raises(RecordValidationError, match=":2:"):
        load_records(path)
