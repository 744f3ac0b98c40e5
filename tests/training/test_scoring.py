"""Evaluation metrics on hand-made cases with values worked out by hand."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from earthgptx.training.scoring import (
    acc_at_iou,
    accuracy,
    bleu4,
    box_iou,
    build_report,
    check_thresholds,
    cider,
    mask_iou,
    mean_iou,
    normalize_answer,
    parse_box,
    parse_count,
    parse_yes_no,
    relation_gap,
    report_markdown,
    row_from_record,
)


def test_box_iou_of_hand_made_boxes() -> None:
    # Two 10x10 boxes overlapping in a 5x10 strip: 50 / (100 + 100 - 50) = 1/3.
    assert box_iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(1 / 3)
    # Nested: 4 / 16.
    assert box_iou([0, 0, 4, 4], [1, 1, 3, 3]) == pytest.approx(0.25)
    assert box_iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert box_iou([0, 0, 1, 1], [2, 2, 3, 3]) == 0.0
    # Touching edges share no area; a degenerate box has none either.
    assert box_iou([0, 0, 1, 1], [1, 0, 2, 1]) == 0.0
    assert box_iou([5, 5, 5, 9], [0, 0, 10, 10]) == 0.0


def test_acc_at_iou_counts_misses_and_unparsed_answers() -> None:
    gts = [[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]]
    preds = [[0, 0, 10, 10], [0, 0, 10, 5], [5, 0, 15, 10], None]  # IoU 1, 0.5, 1/3, miss
    assert acc_at_iou(preds, gts, thr=0.5) == pytest.approx(0.5)
    assert acc_at_iou(preds, gts, thr=0.3) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="predicted boxes"):
        acc_at_iou(preds[:2], gts)


def test_mask_iou_and_mean_iou() -> None:
    a = np.zeros((4, 4), dtype=bool)
    b = np.zeros((4, 4), dtype=bool)
    a[:2, :] = True  # 8 pixels
    b[1:3, :] = True  # 8 pixels, 4 shared -> 4 / 12
    assert mask_iou(a, b) == pytest.approx(1 / 3)
    assert mask_iou(a, a) == 1.0
    assert mask_iou(np.zeros((4, 4), bool), np.zeros((4, 4), bool)) == 1.0
    assert mean_iou([a, a, None], [b, a, a]) == pytest.approx((1 / 3 + 1 + 0) / 3)
    with pytest.raises(ValueError, match="shapes differ"):
        mask_iou(a, np.zeros((3, 3), bool))


def test_accuracy_normalises_text() -> None:
    assert (
        accuracy(
            ["Ship.", "the storage tank", "bare soil", "urban"],
            ["ship", "storage tank", "bare soil", "water"],
        )
        == 0.75
    )
    assert accuracy([3, None], [3, 0]) == 0.5
    with pytest.raises(ValueError):
        accuracy([], [])


def test_parsers() -> None:
    assert parse_box("The ship is at [12, 40, 300, 999].") == [12.0, 40.0, 300.0, 999.0]
    assert parse_box("[0.1,0.2, 0.3 ,0.4]") == [0.1, 0.2, 0.3, 0.4]
    assert parse_box("[12, 40, 300]") is None
    assert parse_box("no box here") is None
    assert parse_count("3") == 3
    assert parse_count("There are three ships.") == 3
    assert parse_count("none") == 0
    assert parse_count("many") is None
    assert parse_yes_no("Yes, it is.") == "yes"
    assert parse_yes_no("no") == "no"
    assert parse_yes_no("maybe") is None
    assert normalize_answer("  The North-South  ") == "north-south"


def test_bleu4_of_identical_and_disjoint_captions() -> None:
    refs = [["a large red ship oriented north-south"], ["an urban area with 2 buildings and 1 vehicle"]]
    hyps = [r[0] for r in refs]
    assert bleu4(hyps, refs) == pytest.approx(100.0)
    assert bleu4(
        ["completely different words here now", "nothing in common at all today"], refs
    ) == pytest.approx(0.0)
    # A second reference that matches rescues a hypothesis the first reference does not.
    assert bleu4(
        ["a small blue vehicle oriented east-west"],
        [["x y z w v", "a small blue vehicle oriented east-west"]],
    ) == pytest.approx(100.0)


def test_bleu4_partial_match_matches_a_hand_computation() -> None:
    # Hypothesis "a b c d e" vs reference "a b c d f": precisions 4/5, 3/4, 2/3, 1/2, equal lengths (BP = 1).
    expected = 100.0 * (4 / 5 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25
    assert bleu4(["a b c d e"], [["a b c d f"]]) == pytest.approx(expected, rel=1e-6)


def test_cider_of_identical_captions_is_ten_and_wrong_ones_score_lower() -> None:
    refs = [["a large red ship"], ["a small blue vehicle"], ["an urban area with 2 buildings"]]
    assert cider([r[0] for r in refs], refs) == pytest.approx(10.0)
    shuffled = ["a small blue vehicle", "an urban area with 2 buildings", "a large red ship"]
    assert cider(shuffled, refs) < 1.0


def _row(task: str, modality: str, prompt_type: str, prediction: str, answer: dict) -> dict:
    return {
        "task": task,
        "modality": modality,
        "prompt_type": prompt_type,
        "prediction": prediction,
        "answer": answer,
    }


def test_build_report_groups_by_task_modality_and_prompt_type() -> None:
    mask = np.zeros((8, 8), dtype=bool)
    mask[2:6, 2:6] = True
    half = np.zeros((8, 8), dtype=bool)
    half[2:6, 2:4] = True
    rows = [
        _row("region_classification", "sar", "point", "ship", {"label": "ship"}),
        _row("region_classification", "sar", "box", "vehicle", {"label": "ship"}),
        _row("region_classification", "optical", "point", "Ship.", {"label": "ship"}),
        _row("counting", "optical", "none", "2", {"count": 2, "class": "ship"}),
        _row("counting", "infrared", "box", "three", {"count": 2, "class": "ship"}),
        _row("relation", "optical", "scribble", "yes", {"relation": "left of", "value": "yes"}),
        _row("grounding", "optical", "none", "[0, 0, 100, 100]", {"box": [0, 0, 100, 100]}),
        _row("grounding", "optical", "none", "I cannot tell", {"box": [0, 0, 100, 100]}),
        {
            **_row("pixel_grounding", "sar", "none", "[SEG]", {"mask": "masks/x.png"}),
            "pred_mask": half,
            "gt_mask": mask,
        },
        _row(
            "scene_caption",
            "optical",
            "none",
            "A water area with 1 ship.",
            {"caption": "A water area with 1 ship.", "references": ["A water area with 1 ship."]},
        ),
        _row(
            "scene_caption",
            "sar",
            "none",
            "An urban area with 2 buildings.",
            {"caption": "An urban area with 2 buildings.", "references": ["An urban area with 2 buildings."]},
        ),
    ]
    report = build_report(rows)
    json.dumps(report)  # plain JSON
    rc = report["tasks"]["region_classification"]
    assert rc["overall"] == {"n": 3, "accuracy": pytest.approx(2 / 3)}
    assert rc["by_modality"]["sar"]["accuracy"] == 0.5
    assert rc["by_modality"]["optical"]["accuracy"] == 1.0
    assert rc["by_prompt_type"]["point"]["accuracy"] == 1.0
    assert rc["by_prompt_type"]["box"]["accuracy"] == 0.0
    cells = {(c["modality"], c["prompt_type"]): c for c in rc["cells"]}
    assert cells[("sar", "box")]["n"] == 1 and cells[("sar", "box")]["accuracy"] == 0.0
    assert report["tasks"]["counting"]["overall"]["accuracy"] == 0.5
    assert report["tasks"]["grounding"]["overall"]["acc@0.5"] == 0.5
    assert report["tasks"]["grounding"]["overall"]["parsed"] == 0.5
    assert report["tasks"]["pixel_grounding"]["overall"]["miou"] == pytest.approx(0.5)
    assert report["tasks"]["scene_caption"]["overall"]["bleu4"] == pytest.approx(100.0)
    assert report["tasks"]["scene_caption"]["overall"]["cider"] == pytest.approx(10.0)
    assert list(report["tasks"]) == [
        "scene_caption", "counting", "region_classification", "grounding", "pixel_grounding", "relation",
    ]  # fmt: skip

    checks = {c["task"]: c for c in check_thresholds(report)}
    assert checks["region_classification"]["passed"] is False
    assert checks["region_classification"]["value"] == 0.0  # worst group: prompt_type=box
    assert checks["relation"]["passed"] is True
    assert (
        checks["scene_classification"]["passed"] is False and checks["scene_classification"]["value"] is None
    )
    markdown = report_markdown(report)
    assert "| sar | box | 1 | 0.000 |" in markdown
    assert "## Acceptance" in markdown


def test_row_from_record_and_unknown_task() -> None:
    record = {
        "id": "r1",
        "task": "attributes",
        "modality": "infrared",
        "prompt_type": "polygon",
        "answer": {"attribute": "temperature", "value": "warm"},
    }
    row = row_from_record(record, "warm")
    assert build_report([row])["tasks"]["attributes"]["overall"]["accuracy"] == 1.0
    with pytest.raises(ValueError, match="unknown task"):
        build_report([{**row, "task": "dancing"}])


def test_cider_is_nan_without_pycocoevalcap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hosts without pycocoevalcap (the lent GPU image) still evaluate; CIDEr then reads NaN, not a crash."""
    import math
    import sys

    monkeypatch.setitem(sys.modules, "pycocoevalcap.cider.cider", None)
    assert math.isnan(cider(["a ship"], [["a ship"]]))


def test_report_groups_by_the_kind_of_question() -> None:
    def record(relation: str, value: str) -> dict[str, Any]:
        answer = {"relation": relation, "value": value, "objects": [0, 1]}
        return {"id": "r", "task": "relation", "modality": "sar", "prompt_type": "box", "answer": answer}

    rows = [
        row_from_record(record("left of", "yes"), "yes"),
        row_from_record(record("left of", "no"), "yes"),
        row_from_record(record("larger than", "no"), "no"),
    ]
    assert [r["kind"] for r in rows] == ["left of", "left of", "larger than"]
    entry = build_report(rows)["tasks"]["relation"]
    assert entry["kind_field"] == "relation"
    assert entry["by_kind"]["left of"] == {"n": 2, "accuracy": 0.5}
    assert entry["by_kind"]["larger than"] == {"n": 1, "accuracy": 1.0}
    markdown = report_markdown(build_report(rows))
    assert "| relation | n | accuracy |" in markdown and "| left of | 2 | 0.500 |" in markdown
    # rows without the field (made by hand, or a converted dataset) are reported without the grouping
    plain = build_report([{k: v for k, v in r.items() if k != "kind"} for r in rows])
    assert "by_kind" not in plain["tasks"]["relation"]


def test_relation_gap_and_report_by_gap() -> None:
    """The gap is what each relation compares, on the grid; the report bins relation accuracy by it."""
    assert relation_gap("left of", (100, 900), (420, 10)) == 320
    assert relation_gap("above", (100, 900), (420, 10)) == 890
    # distances from the centre (500, 500): 300 and 100
    assert relation_gap("nearer to", (200, 500), (500, 600)) == pytest.approx(200.0)
    assert relation_gap("larger than", (0, 0), (999, 999)) is None

    def row(relation: str, value: str, prediction: str, gap: float | None) -> dict[str, Any]:
        answer = {"relation": relation, "value": value, "objects": [0, 1]}
        record = {"id": "r", "task": "relation", "modality": "sar", "prompt_type": "box", "answer": answer}
        return row_from_record(record, prediction, gap=gap)

    rows = [
        row("left of", "yes", "yes", 40.0),
        row("left of", "yes", "no", 99.9),
        row("left of", "no", "no", 100.0),
        row("left of", "no", "no", 600.0),
        row("above", "yes", "no", 250.0),
        row("larger than", "yes", "yes", None),
    ]
    entry = build_report(rows)["tasks"]["relation"]
    assert entry["by_gap"] == {
        "above": {">= 250": {"n": 1, "accuracy": 0.0}},
        "left of": {
            "< 100": {"n": 2, "accuracy": 0.5},
            "100-249": {"n": 1, "accuracy": 1.0},
            ">= 250": {"n": 1, "accuracy": 1.0},
        },
    }
    markdown = report_markdown(build_report(rows))
    assert "| relation (grid units apart) | < 100 | 100-249 | >= 250 |" in markdown
    assert "| left of | 0.500 (n=2) | 1.000 (n=1) | 1.000 (n=1) |" in markdown
    assert "| above | — | — | 0.000 (n=1) |" in markdown


def test_counting_report_by_true_count() -> None:
    """Counting is broken down by the true count, with what was answered, so a fall-back on one count shows."""

    def row(count: int, prediction: str) -> dict[str, Any]:
        answer = {"count": count, "class": "ship"}
        record = {"id": "c", "task": "counting", "modality": "sar", "prompt_type": "none", "answer": answer}
        return row_from_record(record, prediction)

    rows = [row(2, "1"), row(2, "1"), row(2, "2"), row(2, "many"), row(0, "0"), row(10, "1")]
    entry = build_report(rows)["tasks"]["counting"]
    assert list(entry["by_count"]) == ["0", "2", "10"]  # numeric order, not string order
    assert entry["by_count"]["2"] == {"n": 4, "accuracy": 0.25, "answered": {"1": 2, "2": 1, "?": 1}}
    assert entry["by_count"]["0"] == {"n": 1, "accuracy": 1.0, "answered": {"0": 1}}
    assert entry["by_count"]["10"]["accuracy"] == 0.0
    markdown = report_markdown(build_report(rows))
    assert "| true count | n | accuracy | answered (count: n) |" in markdown
    assert "| 2 | 4 | 0.250 | 1: 2, 2: 1, ?: 1 |" in markdown
    answer = {"relation": "above", "value": "no", "objects": [0, 1]}
    other = {"id": "r", "task": "relation", "modality": "sar", "prompt_type": "box", "answer": answer}
    assert "by_count" not in build_report([row_from_record(other, "no")])["tasks"]["relation"]
