"""How well does the counting path's detector count, split by split? A diagnostic of the centre head alone.

    python -m earthgptx.training.count_head_report --config configs/tiny.yaml --model models/earthgptx-tiny \
        --out count_head_report.json

Every whole-image counting question (no visual prompt) of four sets is answered by the centre head alone: the number
of its peaks of the asked class (``centre_peaks``), set against the record's answer. The sets: the training seed's
``val`` chips drawn plainly and those drawn with domain randomisation (``data.train_dir``), the held-out set
(``data.eval_dir``) and the second renderer's OOD set (``data.ood_dir``). For each, the exact-count share per class
(and under/over) at the model's own peak rule, threshold and window, and over a sweep of all three.

The sweep is for reading only: the threshold the model uses is chosen by ``calibrate_counts`` on the training seed's
plain ``val`` chips, never on the held-out or OOD sets. What the figures separate is whether a gap is the detector's
threshold (some threshold would close it) or its features (none does).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from earthgptx.data.ood_render import ensure_ood_dataset
from earthgptx.data.vocabulary import OBJECT_CLASSES
from earthgptx.model import EarthGPTXForConditionalGeneration, EarthGPTXProcessor
from earthgptx.model.counting_earthgptx import PEAK_RULES, centre_peaks
from earthgptx.training.calibrate_counts import centre_heat, encode_chips, is_randomised
from earthgptx.training.datasets import ensure_dataset, ensure_eval_dataset, load_split, scene_options
from earthgptx.training.recipe import load_recipe

THRESHOLDS = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5)
WINDOWS = (3, 5)


def whole_image_counting(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The counting questions about the whole image (no visual prompt)."""
    return [r for r in records if r["task"] == "counting" and r["prompt_type"] == "none"]


def score_counts(
    logits: torch.Tensor,
    chip: torch.Tensor,
    cls: torch.Tensor,
    truth: torch.Tensor,
    threshold: float,
    window: int,
    rule: str = "per_class",
) -> dict[str, Any]:
    """``logits`` ``(N, C, P, P)`` centre logits of ``N`` chips; question ``q`` asks chip ``chip[q]`` for class
    ``cls[q]`` whose true count is ``truth[q]``. The share of exact, under- and over-counts, overall and per class."""
    found = centre_peaks(logits, threshold, window, rule).sum((-2, -1))[chip, cls]

    def shares(sel: torch.Tensor) -> dict[str, float | int]:
        n = int(sel.sum())
        if n == 0:
            return {"n": 0}
        return {
            "n": n,
            "exact": float((found[sel] == truth[sel]).float().mean()),
            "under": float((found[sel] < truth[sel]).float().mean()),
            "over": float((found[sel] > truth[sel]).float().mean()),
        }

    every = torch.ones_like(truth, dtype=torch.bool)
    return {
        "peaks": rule,
        "threshold": threshold,
        "window": window,
        "overall": shares(every),
        "by_class": {name: shares(cls == c) for c, name in enumerate(OBJECT_CLASSES)},
    }


def split_report(
    model: EarthGPTXForConditionalGeneration,
    processor: EarthGPTXProcessor,
    records: Sequence[dict[str, Any]],
    root: Path,
) -> dict[str, Any]:
    """The head's counts on ``records`` (whole-image counting questions; images under ``root``): at the model's own
    threshold and window, and the sweep."""
    if not records:
        return {"questions": 0}
    first: dict[str, dict[str, Any]] = {}
    for record in records:
        first.setdefault(str(record["image"]), record)
    chips = {image: i for i, image in enumerate(first)}
    pixels, modalities = encode_chips(processor, list(first.values()), root)
    model.eval()
    logits = centre_heat(model, pixels, modalities)
    chip = torch.tensor([chips[r["image"]] for r in records])
    cls = torch.tensor([OBJECT_CLASSES.index(r["answer"]["class"]) for r in records])
    truth = torch.tensor([int(r["answer"]["count"]) for r in records])
    config = model.config
    return {
        "questions": len(records),
        "chips": len(chips),
        "model_setting": score_counts(
            logits, chip, cls, truth, config.count_threshold, config.count_window, config.count_peaks
        ),
        "sweep": [
            {k: v for k, v in score_counts(logits, chip, cls, truth, t, w, rule).items() if k != "by_class"}
            for rule in PEAK_RULES
            for w in WINDOWS
            for t in THRESHOLDS
        ],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="recipe whose data settings name the sets")
    parser.add_argument("--model", required=True, help="saved model folder with a counting path")
    parser.add_argument("--out", help="write the report as JSON here")
    args = parser.parse_args(argv)
    data = load_recipe(args.config).data
    options = scene_options(data)
    train_path = ensure_dataset(
        data.train_dir, data.n_scenes, data.train_seed, data.chip_size, data.records_per_task, progress=False,
        options=options,
    )  # fmt: skip
    val = whole_image_counting(load_split(train_path, ["val"]))
    eval_path = ensure_eval_dataset(data, 0, False)
    ood_path = ensure_ood_dataset(
        data.ood_dir, data.n_ood_scenes, data.ood_seed, data.chip_size, data.records_per_task
    )
    sets = {
        "train_val_plain": ([r for r in val if not is_randomised(r, data.train_seed, options)], train_path.parent),
        "train_val_randomised": ([r for r in val if is_randomised(r, data.train_seed, options)], train_path.parent),
        "held_out": (whole_image_counting(load_split(eval_path, data.eval_splits)), eval_path.parent),
        "ood": (whole_image_counting(load_split(ood_path, ["all"])), ood_path.parent),
    }
    model = EarthGPTXForConditionalGeneration.from_pretrained(args.model)
    if model.counting_path is None:
        parser.error(f"{args.model} has no counting path (count_classes = 0)")
    processor = EarthGPTXProcessor.from_pretrained(Path(args.model))
    report = {"model": args.model, "splits": {n: split_report(model, processor, r, root) for n, (r, root) in sets.items()}}
    for name, split in report["splits"].items():
        if not split["questions"]:
            sys.stdout.write(f"{name}: no whole-image counting questions\n")
            continue
        own = split["model_setting"]
        best = max(split["sweep"], key=lambda row: row["overall"]["exact"])
        classes = ", ".join(
            f"{c} {s['exact']:.3f}" for c, s in own["by_class"].items() if s["n"]
        )
        sys.stdout.write(
            f"{name} ({split['questions']} questions): exact {own['overall']['exact']:.3f} with {own['peaks']} "
            f"peaks at threshold "
            f"{own['threshold']}, window {own['window']} ({classes}); best of the sweep "
            f"{best['overall']['exact']:.3f} ({best['peaks']} peaks, threshold {best['threshold']}, window "
            f"{best['window']})\n"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
