"""Count calibration picks the peak rule, threshold and window that count best on plain chips, and writes them to the model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from earthgptx.data.vocabulary import OBJECT_CLASSES
from earthgptx.model.counting_earthgptx import PEAK_RULES
from earthgptx.training import calibrate_counts
from earthgptx.training.calibrate_counts import calibrate, sweep, write_calibration

SIDE = 16
SHIP = OBJECT_CLASSES.index("ship")
VEHICLE = OBJECT_CLASSES.index("vehicle")


def _logits(probabilities: list[list[float]]) -> torch.Tensor:
    """Chip ``i`` gets one ship peak of each probability in ``probabilities[i]``, 4 cells apart on one row."""
    logits = torch.full((len(probabilities), len(OBJECT_CLASSES), SIDE, SIDE), -8.0)
    for i, peaks in enumerate(probabilities):
        for k, p in enumerate(peaks):
            logits[i, SHIP, 2, 2 + 4 * k] = torch.logit(torch.tensor(p))
    return logits


def _truth(ships: list[int]) -> torch.Tensor:
    truth = torch.zeros(len(ships), len(OBJECT_CLASSES))
    truth[:, SHIP] = torch.tensor(ships, dtype=torch.float32)
    return truth


def test_sweep_scores_present_and_absent_pairs() -> None:
    # chip 0: two ships, peaks 0.9 and 0.35; chip 1: no ship, a stray peak of 0.25
    rows = sweep(_logits([[0.9, 0.35], [0.25]]), _truth([2, 0]))
    by = {(r["peaks"], r["threshold"], r["window"]): r for r in rows}
    assert len(rows) == len(PEAK_RULES) * len(calibrate_counts.THRESHOLDS) * len(calibrate_counts.WINDOWS)
    for rule in PEAK_RULES:  # one class only: both rules count alike
        low = by[(rule, 0.2, 3)]  # both ships found, but the stray peak too
        assert low["present_exact"] == 1.0 and low["over"] > 0.0
        mid = by[(rule, 0.3, 3)]  # both ships, no stray: every pair right
        assert mid["present_exact"] == 1.0 and mid["absent_exact"] == 1.0 and mid["score"] == pytest.approx(1.0)
        high = by[(rule, 0.5, 3)]  # the weak ship is missed
        assert high["present_exact"] == 0.0 and high["under"] > 0.0
        # a window wider than the peaks' spacing merges the two ships into one
        assert by[(rule, 0.3, 9)]["present_exact"] == 0.0


def test_sweep_scores_each_peak_rule() -> None:
    # one ship that the head also reads, less surely, as a vehicle in the next cell
    logits = _logits([[0.9]])
    logits[0, VEHICLE, 2, 3] = torch.logit(torch.tensor(0.6))
    rows = {(r["peaks"], r["threshold"], r["window"]): r for r in sweep(logits, _truth([1]))}
    assert rows[("per_class", 0.3, 3)]["over"] > 0.0  # a ship and a vehicle
    assert rows[("across_classes", 0.3, 3)]["score"] == pytest.approx(1.0)  # the ship only


def test_calibrate_chooses_on_plain_chips_and_writes_the_model(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    records: list[dict[str, Any]] = [
        {"image": "a.tif", "ships": 2, "peaks": [0.9, 0.35], "randomised": False},
        {"image": "b.tif", "ships": 0, "peaks": [0.25], "randomised": False},
        # a randomised chip whose peaks would pull the choice elsewhere: it must be left out
        {"image": "c.tif", "ships": 1, "peaks": [0.9, 0.45], "randomised": True},
    ]
    seen: list[list[str]] = []

    def fake_map(record: dict[str, Any], *_: Any, **__: Any) -> torch.Tensor:
        return _truth([record["ships"]])[0, :, None, None].expand(-1, SIDE, SIDE) / (SIDE * SIDE)

    def fake_encode(
        _processor: Any, chosen: list[dict[str, Any]], _root: Path
    ) -> tuple[torch.Tensor, torch.Tensor]:
        seen.append([r["image"] for r in chosen])
        return torch.zeros(len(chosen), 1), torch.zeros(len(chosen), dtype=torch.long)

    chosen_peaks: dict[str, list[float]] = {r["image"]: r["peaks"] for r in records}
    monkeypatch.setattr(calibrate_counts, "true_centre_map", fake_map)
    monkeypatch.setattr(calibrate_counts, "is_randomised", lambda record, *_: record["randomised"])
    monkeypatch.setattr(calibrate_counts, "encode_chips", fake_encode)
    monkeypatch.setattr(
        calibrate_counts, "centre_heat", lambda _m, _p, _mod: _logits([chosen_peaks[i] for i in seen[-1]])
    )

    class Model:
        def eval(self) -> None:
            pass

    class Processor:
        image_size = 128

    result = calibrate(Model(), Processor(), records, tmp_path, seed=7, n_chips=10)  # type: ignore[arg-type]
    assert seen == [["a.tif", "b.tif"]] and result["chips"] == 2
    best = result["best"]
    # every threshold in (0.25, 0.35) counts both chips right; ties go to the smallest window
    assert best["score"] == pytest.approx(1.0) and 0.25 <= best["threshold"] < 0.35 and best["window"] == 3

    (tmp_path / "config.json").write_text(
        json.dumps({"count_threshold": 0.5, "count_window": 7}), encoding="utf-8"
    )
    write_calibration(tmp_path, result)
    config = json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))
    assert (config["count_peaks"], config["count_threshold"], config["count_window"]) == (
        best["peaks"], best["threshold"], best["window"]
    )
    stored = json.loads((tmp_path / calibrate_counts.CALIBRATION_NAME).read_text(encoding="utf-8"))
    assert stored["best"] == best and len(stored["sweep"]) == len(result["sweep"])
