"""Choose the counting path's peak rule, threshold and window on a training seed's validation chips.

    python -m earthgptx.training.calibrate_counts --config configs/tiny.yaml --model models/earthgptx-tiny --write

The centre head of a model with a counting path (``count_classes`` > 0) is trained with a focal loss, whose
probabilities at object centres need not reach 0.5; the threshold, the window of the local-maximum test and its rule
(a class's own heat, or every class's: ``centre_peaks``) that turn its heatmap into counts are therefore chosen after
training, on chips of the *training* seed's ``val`` split
(``data.train_dir``; never the held-out evaluation seed). Every (chip, class) pair is scored: is the number of peaks
the true number of objects? The score weighs pairs whose class is present by 0.8 and absent ones by 0.2, the mix of
the generator's counting questions (which ask about an absent class one time in five). ``--write`` stores the best
setting in the model folder's ``config.json`` and the whole sweep in ``count_calibration.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch

from earthgptx.data.generate import PLAIN, SceneOptions, scene_is_randomised
from earthgptx.model import EarthGPTXForConditionalGeneration, EarthGPTXProcessor
from earthgptx.model.counting_earthgptx import PEAK_RULES, centre_peaks
from earthgptx.model.modeling_earthgptx import run_vision_side
from earthgptx.training.auxiliary import chip_targets, synthetic_scene
from earthgptx.training.datasets import ensure_dataset, load_split, scene_options
from earthgptx.training.recipe import load_recipe

logger = logging.getLogger(__name__)

CALIBRATION_NAME = "count_calibration.json"
THRESHOLDS = tuple(round(0.1 + 0.05 * i, 2) for i in range(11))  # 0.10 … 0.60
WINDOWS = (3, 5, 7, 9)
PRESENT_WEIGHT = 0.8


def chip_records(records: Sequence[dict[str, Any]], n_chips: int, seed: int) -> list[dict[str, Any]]:
    """One record per chip (image), ``n_chips`` of them drawn at random (all when there are fewer)."""
    first: dict[str, dict[str, Any]] = {}
    for record in records:
        first.setdefault(str(record["image"]), record)
    chips = list(first.values())
    if len(chips) > n_chips:
        picked = np.random.default_rng(seed).choice(len(chips), n_chips, replace=False)
        chips = [chips[i] for i in sorted(picked)]
    return chips


def encode_chips(
    processor: EarthGPTXProcessor, records: Sequence[dict[str, Any]], root: Path
) -> tuple[torch.Tensor, torch.Tensor]:
    """The chips of ``records`` (images under ``root``), one per record, encoded without prompts: ``(N, B, S, S)``
    pixel values and ``(N,)`` modality ids."""
    pixels, modalities = [], []
    for record in records:
        with rasterio.open(root / str(record["image"])) as src:
            image = src.read()
        encoded = processor.encode_loaded_record(record, image, [], train=False)
        pixels.append(encoded.pixel_values)
        modalities.append(encoded.modality_id)
    return torch.stack(pixels), torch.tensor(modalities)


@torch.no_grad()
def centre_heat(
    model: EarthGPTXForConditionalGeneration,
    pixel_values: torch.Tensor,
    modality_ids: torch.Tensor,
    batch: int = 32,
) -> torch.Tensor:
    """``(N, C, P, P)`` centre logits of the chips (no prompts)."""
    out = []
    size = pixel_values.shape[-1]
    for start in range(0, len(pixel_values), batch):
        pixels = pixel_values[start : start + batch]
        n = pixels.shape[0]
        masks = torch.zeros(n, 1, size, size)
        valid = torch.zeros(n, 1, dtype=torch.bool)
        vision = run_vision_side(model, pixels, modality_ids[start : start + batch], masks, valid)
        if vision.centre_logits is None:
            raise ValueError("the model has no counting path (count_classes = 0)")
        out.append(vision.centre_logits.float())
    return torch.cat(out)


def sweep(logits: torch.Tensor, truth: torch.Tensor) -> list[dict[str, Any]]:
    """Score every (peak rule, threshold, window): exact counts on present and absent (chip, class) pairs, and their
    mix."""
    present = truth > 0
    rows: list[dict[str, Any]] = []
    for rule in PEAK_RULES:
        for window in WINDOWS:
            for threshold in THRESHOLDS:
                found = centre_peaks(logits, threshold, window, rule).sum((-2, -1))
                exact = found == truth
                on_present = float(exact[present].float().mean()) if present.any() else 0.0
                on_absent = float(exact[~present].float().mean()) if (~present).any() else 0.0
                rows.append(
                    {
                        "peaks": rule,
                        "threshold": threshold,
                        "window": window,
                        "present_exact": on_present,
                        "absent_exact": on_absent,
                        "score": PRESENT_WEIGHT * on_present + (1 - PRESENT_WEIGHT) * on_absent,
                        "over": float((found > truth).float().mean()),
                        "under": float((found < truth).float().mean()),
                    }
                )
    return rows


def true_centre_map(
    record: dict[str, Any],
    seed: int,
    model: EarthGPTXForConditionalGeneration,
    chip_size: int,
    options: SceneOptions = PLAIN,
) -> torch.Tensor | None:
    """``(C, S/2, S/2)`` float: 1.0 in the pixel-feature cell of each object's centre in the record's chip (rebuilt
    from dataset seed ``seed`` and the generator ``options`` it was written with), or ``None`` for a record that is
    not synthetic."""
    scene = synthetic_scene(record, seed, chip_size, options)
    if scene is None:
        return None
    grid = model.config.vision_config.grid_size // model.config.projector_downsample
    return torch.from_numpy(chip_targets(scene, grid, chip_size // 2).centre_map).float()


def is_randomised(record: dict[str, Any], seed: int, options: SceneOptions) -> bool:
    """Whether the record's scene was drawn with domain randomisation (never, with ``options.randomise`` 0)."""
    scene_id = str(record.get("scene_id", ""))
    if record.get("source") != "synthetic" or not scene_id.startswith("scene"):
        return False
    return scene_is_randomised(seed, int(scene_id[len("scene") :]), options)


def calibrate(
    model: EarthGPTXForConditionalGeneration,
    processor: EarthGPTXProcessor,
    records: Sequence[dict[str, Any]],
    root: Path,
    seed: int,
    n_chips: int = 400,
    options: SceneOptions = PLAIN,
) -> dict[str, Any]:
    """Sweep thresholds and windows on ``n_chips`` chips of ``records`` (synthetic, dataset seed ``seed``, generator
    ``options``). The domain-randomised chips among them are left out, so the threshold is chosen on chips drawn like
    the held-out set, unless no other chip is there."""
    maps = [
        (record, true_centre_map(record, seed, model, processor.image_size, options))
        for record in chip_records(records, n_chips, seed)
    ]
    plain = [(r, m) for r, m in maps if m is not None and not is_randomised(r, seed, options)]
    kept = [(record, centre_map) for record, centre_map in plain or maps if centre_map is not None]
    if not kept:
        raise ValueError("no synthetic chips to calibrate on")
    pixels, modalities = encode_chips(processor, [record for record, _ in kept], root)
    model.eval()
    logits = centre_heat(model, pixels, modalities)
    rows = sweep(logits, torch.stack([centre_map.sum((-2, -1)) for _, centre_map in kept]))
    best = max(rows, key=lambda row: (row["score"], -row["window"]))
    return {"chips": len(pixels), "seed": seed, "split": sorted({str(r.get("split")) for r in records}), "best": best,
            "sweep": rows}  # fmt: skip


def write_calibration(model_dir: Path, result: dict[str, Any]) -> None:
    """Store the best peak rule, threshold and window in ``model_dir/config.json`` and the sweep beside it."""
    config_path = model_dir / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    best = result["best"]
    config["count_threshold"], config["count_window"] = best["threshold"], best["window"]
    config["count_peaks"] = best.get("peaks", "per_class")
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (model_dir / CALIBRATION_NAME).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="run config whose data.train_dir / train_seed to use")
    parser.add_argument("--model", required=True, help="saved model folder (with a counting path)")
    parser.add_argument("--chips", type=int, default=400)
    parser.add_argument(
        "--write", action="store_true", help="store the best peak rule, threshold and window in config.json"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run = load_recipe(args.config)
    data = run.data
    options = scene_options(data)
    records_path = ensure_dataset(
        data.train_dir, data.n_scenes, data.train_seed, data.chip_size, data.records_per_task, progress=False,
        options=options,
    )  # fmt: skip
    records = load_split(records_path, ["val"])
    model_dir = Path(args.model)
    model = EarthGPTXForConditionalGeneration.from_pretrained(str(model_dir))
    processor = EarthGPTXProcessor.from_pretrained(model_dir)
    result = calibrate(model, processor, records, records_path.parent, data.train_seed, args.chips, options)
    best = result["best"]
    sys.stdout.write(
        f"{result['chips']} chips: {best['peaks']} peaks, threshold {best['threshold']}, window {best['window']}: "
        "exact counts "
        f"{best['present_exact']:.3f} where the class is present, {best['absent_exact']:.3f} where absent\n"
    )
    if args.write:
        write_calibration(model_dir, result)
        sys.stdout.write(f"wrote count_peaks, count_threshold and count_window to {model_dir / 'config.json'}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
