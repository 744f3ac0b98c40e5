"""Scoring of the OOD split beside the ID one and of the abstention split (issue 25)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from earthgptx.training import scoring


def _row(
    task: str, modality: str, prediction: str, answer: dict[str, Any], prompt_type: str = "none"
) -> dict[str, Any]:
    return {
        "task": task,
        "modality": modality,
        "prompt_type": prompt_type,
        "prediction": prediction,
        "answer": answer,
    }


@pytest.mark.parametrize(
    ("kind", "prediction", "right"),
    [
        ("background", "no object", True),
        ("background", "No object.", True),
        ("background", "nothing", True),
        ("background", "ship", False),
        ("background", "", False),
        ("absent class", "0", True),
        ("absent class", "zero", True),
        ("absent class", "1", False),
        ("absent class", "no object", True),  # the counting scorer reads "no"/"none" as 0, as in the ID split
        ("absent class", "ship", False),
        ("empty scene", "A water area with no object.", True),
        ("empty scene", "A water area with 2 ships.", False),
        ("empty scene", "An urban area with 1 storage tank.", False),
        ("empty scene", "A vegetated area with tanks.", False),
        ("empty scene", "A vegetated area beside a built-up area.", True),
    ],
)
def test_each_kind_of_negative_is_judged_by_its_own_rule(kind: str, prediction: str, right: bool) -> None:
    assert scoring.abstention_row_correct(kind, prediction) is right


def test_unknown_negative_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        scoring.abstention_row_correct("cloud", "no object")


def test_abstention_report_counts_per_kind_and_modality_and_false_abstentions() -> None:
    rows = [
        _row(
            "region_classification", "optical", "no object", {"label": "no object", "negative": "background"}
        ),
        _row("region_classification", "sar", "ship", {"label": "no object", "negative": "background"}),
        _row("region_classification", "sar", "ship", {"label": "no object", "negative": "background"}),
        _row("counting", "optical", "0", {"count": 0, "class": "ship", "negative": "absent class"}),
        _row(
            "scene_caption",
            "infrared",
            "A water area with no object.",
            {"caption": "x", "negative": "empty scene"},
        ),
        # Not a negative: left out of the abstention figures.
        _row("counting", "optical", "3", {"count": 3, "class": "ship"}),
    ]
    id_rows = [
        _row("region_classification", "optical", "no object", {"label": "ship"}),
        _row("region_classification", "optical", "ship", {"label": "ship"}),
        _row("region_classification", "sar", "vehicle", {"label": "vehicle"}),
        _row("region_classification", "sar", "airplane", {"label": "vehicle"}),
    ]
    report = scoring.abstention_report(rows, id_rows)
    kinds = report["kinds"]
    assert set(kinds) == {"background", "absent class", "empty scene"}
    assert kinds["background"]["n"] == 3
    assert kinds["background"]["accuracy"] == pytest.approx(1 / 3)
    assert kinds["background"]["by_modality"]["sar"] == {"n": 2, "accuracy": 0.0}
    assert kinds["background"]["wrong_answers"] == {"ship": 2}
    assert not kinds["background"]["meets_goal"]
    assert kinds["absent class"]["accuracy"] == 1.0 and kinds["absent class"]["meets_goal"]
    assert report["false_abstention"] == {"n": 4, "rate": 0.25}
    text = scoring.extra_markdown(
        {"abstention": {**report, "eval_data": {"records": 5, "n_scenes": 1, "seed": 90211}}}
    )
    assert "| background | 3 | **0.333** |" in text
    assert "False abstentions: 0.250 of 4" in text


def test_ood_comparison_sets_each_task_beside_its_id_figure() -> None:
    def report(values: dict[str, dict[str, float]]) -> dict[str, Any]:
        rows = []
        for modality, (right, total) in values.items():
            for i in range(int(total)):
                answer = {"label": "ship", "object": 0}
                rows.append(
                    _row(
                        "region_classification", modality, "ship" if i < right else "vehicle", answer, "point"
                    )
                )
        return scoring.build_report(rows)

    id_report = report({"optical": (9, 10), "sar": (10, 10)})
    ood_report = report({"optical": (6, 10), "sar": (9, 10), "infrared": (5, 10)})
    comparison = scoring.ood_comparison(id_report, ood_report)
    entry = comparison["tasks"]["region_classification"]
    assert entry["metric"] == "accuracy"
    assert entry["by_modality"]["optical"]["ratio"] == pytest.approx(0.6 / 0.9)
    assert entry["by_modality"]["sar"]["ratio"] == pytest.approx(0.9)
    assert entry["by_modality"]["infrared"]["ratio"] is None  # no ID figure for that modality
    assert entry["overall"]["ratio"] == pytest.approx((20 / 30) / (19 / 20))
    assert not entry["overall"]["meets_goal"]
    assert comparison["goal_ratio"] == scoring.OOD_RATIO_GOAL
    text = scoring.extra_markdown(
        {"ood": {"comparison": comparison, "eval_data": {"records": 30, "n_scenes": 1, "seed": 4242}}}
    )
    assert "(below goal)" in text and "OOD goal met by 0 of 1 tasks." in text


def test_ood_ratio_is_none_where_id_is_zero_or_nan() -> None:
    id_report = {"tasks": {"counting": {"overall": {"n": 5, "accuracy": 0.0}, "by_modality": {}}}}
    ood_report = {"tasks": {"counting": {"overall": {"n": 5, "accuracy": 0.4}, "by_modality": {}}}}
    assert scoring.ood_comparison(id_report, ood_report)["tasks"]["counting"]["overall"]["ratio"] is None
    id_report["tasks"]["counting"]["overall"]["accuracy"] = math.nan
    assert scoring.ood_comparison(id_report, ood_report)["tasks"]["counting"]["overall"]["ratio"] is None


def _area(prediction: str, caption: str, objects: list[int], modality: str = "optical") -> dict[str, Any]:
    answer = {"caption": caption, "references": [caption], "area": True, "objects": objects}
    return _row("region_caption", modality, prediction, answer, prompt_type="polygon")


def test_area_report_judges_cover_objects_and_loops_apart() -> None:
    rows = [
        # right, in other words order and case
        _area(
            "A water area with 1 building and 2 ships", "A water area with 2 ships and 1 building.", [0, 1, 2]
        ),
        # the cover right, one object wrong
        _area("A water area with 2 ships.", "A water area with 2 ships and 1 building.", [0, 1, 2], "sar"),
        # an empty area: right
        _area("An urban area with no object.", "An urban area with no object.", []),
        # an empty area: an invented object, the wrong cover
        _area("A vegetated area with 1 vehicle.", "An urban area with no object.", [], "sar"),
        # the stage-16 loop: unparsed, nothing right
        _area(
            "a large cold no object built-up object built-up object", "An urban area with 1 building.", [3]
        ),
        # an object caption where an area was asked
        _area("a large red ship", "A water area with 1 ship.", [4]),
        # not an area record: left out
        _row("region_caption", "optical", "a ship", {"caption": "a small red ship", "references": []}),
    ]
    report = scoring.area_report(rows)
    assert report["n"] == 6
    assert report["parsed"] == pytest.approx(5 / 6)
    assert report["cover"] == pytest.approx(3 / 6)
    assert report["objects"] == pytest.approx(2 / 6)
    assert report["exact"] == pytest.approx(1 / 6)  # word order counts for exact, not for objects
    assert report["empty"] == {"n": 2, "parsed": 1.0, "cover": 0.5, "objects": 0.5, "exact": 0.5}
    assert report["holding_objects"]["n"] == 4 and report["holding_objects"]["objects"] == pytest.approx(0.25)
    assert report["by_modality"]["sar"]["n"] == 2 and report["by_modality"]["sar"]["cover"] == pytest.approx(
        0.5
    )
    assert "large red ship" in report["wrong_answers"]
    assert scoring.area_report(rows[-1:]) == {"n": 0}
    markdown = scoring.extra_markdown(
        {"areas": {**report, "eval_data": {"records": 6, "n_scenes": 2, "seed": 90212}}}
    )
    assert "## Area descriptions" in markdown and "| **all** | 6 |" in markdown
