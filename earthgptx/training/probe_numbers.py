"""How linearly a model's number tokens carry their value: a diagnostic for coordinates and relations.

    python -m earthgptx.training.probe_numbers --model models/earthgptx-tiny

For the input embeddings and the LM-head rows of the tokens ``"0"`` … ``"999"``, a ridge regression is fitted from
the even numbers' rows to their values and scored on the odd numbers: R², the mean absolute error, and how often
the fitted readout orders two held-out numbers correctly (all pairs drawn at random, and pairs at least
``wide_gap`` apart). A high score says the value is there for the language model to compare; a relation such as
"left of" that stays wrong for far-apart prompts is then failing in the model's computation, not its input.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from earthgptx.model import EarthGPTXForConditionalGeneration, EarthGPTXProcessor
from earthgptx.model.surgery_earthgptx import number_token_ids


@dataclass
class NumberReadout:
    """Held-out scores of a linear readout of value from number-token rows."""

    r2: float
    mean_abs_error: float
    pair_order_accuracy: float
    wide_pair_order_accuracy: float


def linear_readout(
    rows: np.ndarray, ridge: float = 1.0, pairs: int = 20_000, wide_gap: int = 250, seed: int = 0
) -> NumberReadout:
    """Fit value ~ rows (ridge, with a bias) on even values, score on odd ones; ``rows[v]`` is value ``v``'s row."""
    values = np.arange(len(rows), dtype=np.float64)
    features = np.c_[np.asarray(rows, dtype=np.float64), np.ones(len(rows))]
    train, test = values % 2 == 0, values % 2 == 1
    a = features[train]
    weights = np.linalg.solve(a.T @ a + ridge * np.eye(a.shape[1]), a.T @ values[train])
    predicted, truth = features[test] @ weights, values[test]
    r2 = 1.0 - float(((predicted - truth) ** 2).sum() / ((truth - truth.mean()) ** 2).sum())
    draw = np.random.default_rng(seed).integers(0, len(truth), (pairs, 2))
    distinct = truth[draw[:, 0]] != truth[draw[:, 1]]
    right = (predicted[draw[:, 0]] < predicted[draw[:, 1]]) == (truth[draw[:, 0]] < truth[draw[:, 1]])
    wide = np.abs(truth[draw[:, 0]] - truth[draw[:, 1]]) >= wide_gap
    return NumberReadout(
        r2=r2,
        mean_abs_error=float(np.abs(predicted - truth).mean()),
        pair_order_accuracy=float(right[distinct].mean()),
        wide_pair_order_accuracy=float(right[wide].mean()) if wide.any() else float("nan"),
    )


def probe_model(model: EarthGPTXForConditionalGeneration, tokenizer: object) -> dict[str, NumberReadout]:
    """The readout of the input embeddings and of the LM head; fails when the tokenizer lacks number tokens."""
    ids = number_token_ids(tokenizer)
    if ids is None:
        raise ValueError("the tokenizer does not have every number token 0..999")
    matrices = {"input": model.get_input_embeddings().weight, "output": model.get_output_embeddings().weight}
    with torch.no_grad():
        return {
            name: linear_readout(matrix[ids].float().cpu().numpy())  # type: ignore[index]
            for name, matrix in matrices.items()
        }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m earthgptx.training.probe_numbers", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--model", required=True, help="a saved model folder")
    args = parser.parse_args(argv)
    processor = EarthGPTXProcessor.from_pretrained(args.model)
    model = EarthGPTXForConditionalGeneration.from_pretrained(args.model)
    result = {name: asdict(readout) for name, readout in probe_model(model, processor.tokenizer).items()}
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
