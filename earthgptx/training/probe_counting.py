"""Does the language model read the counting path? A diagnostic for models with ``count_classes`` > 0.

    python -m earthgptx.training.probe_counting --config configs/tiny.yaml --model DIR --records 256

On the first ``--records`` counting questions of the held-out set, answers are generated twice: with the counts the
model's centre head detects (as at inference), and with the true object centres handed to the counting path (the
teacher forcing of training). On whole-image questions it also scores the head's own count of the asked class, and
how often the answer equals it. A language model that reads the path answers better with the true counts, and its
answers follow the head's; one that ignores it answers the same either way.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from earthgptx.data.vocabulary import OBJECT_CLASSES
from earthgptx.model import EarthGPTXForConditionalGeneration, EarthGPTXProcessor
from earthgptx.model.counting_earthgptx import centre_peaks
from earthgptx.training.calibrate_counts import true_centre_map
from earthgptx.training.datasets import encode_for_inference, ensure_eval_dataset, load_split
from earthgptx.training.recipe import load_recipe


@torch.no_grad()
def probe_counting(
    model: EarthGPTXForConditionalGeneration,
    processor: EarthGPTXProcessor,
    records: Sequence[dict[str, Any]],
    root: Path,
    seed: int,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Scores on ``records`` (synthetic counting questions of dataset seed ``seed``)."""
    if model.config.count_classes <= 0:
        raise ValueError("the model has no counting path (count_classes = 0)")
    model.eval()
    size = processor.image_size
    truths = [true_centre_map(r, seed, model, size) for r in records]
    records = [r for r, truth in zip(records, truths, strict=True) if truth is not None]
    maps = torch.stack([truth for truth in truths if truth is not None])
    samples = encode_for_inference(records, root, processor, 1, False)
    answers: dict[str, list[str]] = {"detected": [], "true": []}
    head_counts: list[float] = []
    for start in range(0, len(records), batch_size):
        chunk = list(range(start, min(start + batch_size, len(records))))
        batch = processor.collate([samples[i] for i in chunk], train=False)
        vision = model.encode_vision(
            batch["pixel_values"], batch["modality_ids"], batch["prompt_masks"], batch["prompt_valid"]
        )
        assert vision.centre_logits is not None
        peaks = centre_peaks(
            vision.centre_logits, model.config.count_threshold, model.config.count_window, model.config.count_peaks
        )
        for j, i in enumerate(chunk):
            head_counts.append(float(peaks[j, OBJECT_CLASSES.index(records[i]["answer"]["class"])].sum()))
        for mode in answers:
            centre_maps = maps[chunk] if mode == "true" else None
            # generate() runs encode_vision without centre_maps; hand them over for this batch
            model.encode_vision = functools.partial(  # type: ignore[method-assign]
                type(model).encode_vision, model, centre_maps=centre_maps
            )
            try:
                generated = model.generate(
                    input_ids=batch["input_ids"], pixel_values=batch["pixel_values"],
                    modality_ids=batch["modality_ids"], attention_mask=batch["attention_mask"],
                    prompt_masks=batch["prompt_masks"], prompt_valid=batch["prompt_valid"], max_new_tokens=4,
                )  # fmt: skip
            finally:
                del model.encode_vision
            assert generated.sequences is not None
            decoded = processor.post_process_generation(
                generated.sequences, None, None, sizes=[(size, size)] * len(chunk)
            )
            answers[mode] += [a.text.strip() for a in decoded]
    truth = [str(r["answer"]["count"]) for r in records]
    whole = [i for i, r in enumerate(records) if r.get("prompt_type") == "none"]

    def share(hits: Sequence[bool]) -> float:
        return sum(hits) / max(len(hits), 1)

    return {
        "records": len(records),
        "answer_accuracy_detected_counts": share(
            [a == t for a, t in zip(answers["detected"], truth, strict=True)]
        ),
        "answer_accuracy_true_counts": share([a == t for a, t in zip(answers["true"], truth, strict=True)]),
        "whole_image_records": len(whole),
        "head_count_right": share([head_counts[i] == records[i]["answer"]["count"] for i in whole]),
        "answer_equals_head_count": share(
            [answers["detected"][i] == str(int(head_counts[i])) for i in whole]
        ),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="run config whose held-out set (data.eval_*) to use")
    parser.add_argument("--model", required=True, help="saved model folder with a counting path")
    parser.add_argument(
        "--records", type=int, default=256, help="how many counting questions (the first ones)"
    )
    args = parser.parse_args(argv)
    data = load_recipe(args.config).data
    records_path = ensure_eval_dataset(data, progress=False)
    records = [r for r in load_split(records_path, ["all"]) if r.get("task") == "counting"][: args.records]
    model = EarthGPTXForConditionalGeneration.from_pretrained(args.model)
    processor = EarthGPTXProcessor.from_pretrained(Path(args.model))
    result = probe_counting(model, processor, records, records_path.parent, data.eval_seed)
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
