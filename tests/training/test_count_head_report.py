"""The centre-head count diagnostic scores peaks against answers per class, and its sweep moves with the threshold."""

from __future__ import annotations

import torch

from earthgptx.data.vocabulary import OBJECT_CLASSES
from earthgptx.training.count_head_report import score_counts, whole_image_counting


def _logits() -> torch.Tensor:
    """Two chips, 16 x 16 cells: chip 0 has two ship peaks (p 0.9 and 0.3) and one building peak (0.9); chip 1 none."""
    logits = torch.full((2, len(OBJECT_CLASSES), 16, 16), -8.0)
    ship, building = OBJECT_CLASSES.index("ship"), OBJECT_CLASSES.index("building")
    logits[0, ship, 3, 3] = torch.logit(torch.tensor(0.9))
    logits[0, ship, 12, 12] = torch.logit(torch.tensor(0.3))
    logits[0, building, 8, 4] = torch.logit(torch.tensor(0.9))
    return logits


def test_score_counts_sets_peaks_against_answers_per_class() -> None:
    ship, building = OBJECT_CLASSES.index("ship"), OBJECT_CLASSES.index("building")
    chip = torch.tensor([0, 0, 1, 1])
    cls = torch.tensor([ship, building, ship, building])
    truth = torch.tensor([2, 1, 0, 1])
    high = score_counts(_logits(), chip, cls, truth, threshold=0.5, window=3)
    # at 0.5 the weak ship peak is missed (an undercount); chip 1's building is missed too
    assert high["overall"] == {"n": 4, "exact": 0.5, "under": 0.5, "over": 0.0}
    assert high["by_class"]["ship"] == {"n": 2, "exact": 0.5, "under": 0.5, "over": 0.0}
    assert high["by_class"]["building"]["exact"] == 0.5
    assert high["by_class"]["vehicle"] == {"n": 0}
    low = score_counts(_logits(), chip, cls, truth, threshold=0.2, window=3)
    assert low["by_class"]["ship"]["exact"] == 1.0 and low["overall"]["exact"] == 0.75


def test_only_whole_image_counting_questions_are_scored() -> None:
    records = [
        {"task": "counting", "prompt_type": "none"},
        {"task": "counting", "prompt_type": "box"},
        {"task": "grounding", "prompt_type": "none"},
    ]
    assert whole_image_counting(records) == [records[0]]
