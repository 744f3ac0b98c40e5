"""The vision side of a served EarthGPT-X: the exported ONNX graph, run on a batch made of many requests.

Requests may differ in their number of prompt slots ``N``; ``run_batched`` pads them to the largest ``N`` with
``PROMPT_VALID=False`` (as the processor pads an in-process batch), runs the graph once, and gives each request its
own rows back, cut to its own ``N``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from earthgptx.model.export_onnx import COUNT_OUTPUT_NAMES, VisionOnnxRunner

PROMPT_OUTPUTS = frozenset({"PROMPT_TOKENS", "REGION_COUNT_MIX"})


@dataclass
class VisionInputs:
    """One request's graph inputs, with its own batch ``b`` (usually 1): ``pixel_values`` ``(b, 13, S, S)``,
    ``modality_ids`` ``(b,)``, ``prompt_masks`` ``(b, N, S, S)``, ``prompt_valid`` ``(b, N)``."""

    pixel_values: np.ndarray
    modality_ids: np.ndarray
    prompt_masks: np.ndarray
    prompt_valid: np.ndarray

    def check(self, image_size: int) -> None:
        """Raise ``ValueError`` naming a shape that does not fit the graph."""
        b = self.pixel_values.shape[0] if self.pixel_values.ndim == 4 else -1
        if self.pixel_values.shape[1:] != (13, image_size, image_size) or b < 1:
            raise ValueError(
                f"PIXEL_VALUES must be (B, 13, {image_size}, {image_size}), got {self.pixel_values.shape}"
            )
        if self.modality_ids.reshape(-1).shape != (b,):
            raise ValueError(
                f"MODALITY_IDS must hold one id per image ({b}), got shape {self.modality_ids.shape}"
            )
        if not np.isin(self.modality_ids, np.arange(4)).all():
            raise ValueError(f"MODALITY_IDS must be in 0..3, got {self.modality_ids.reshape(-1).tolist()}")
        if self.prompt_masks.ndim != 4 or self.prompt_masks.shape[0] != b or self.prompt_masks.shape[1] < 1:
            raise ValueError(f"PROMPT_MASKS must be (B, N, S, S) with N >= 1, got {self.prompt_masks.shape}")
        if self.prompt_masks.shape[2:] != (image_size, image_size):
            raise ValueError(f"PROMPT_MASKS must be {image_size} px, got {self.prompt_masks.shape}")
        if self.prompt_valid.shape != self.prompt_masks.shape[:2]:
            raise ValueError(
                f"PROMPT_VALID {self.prompt_valid.shape} does not match PROMPT_MASKS {self.prompt_masks.shape}"
            )


class BatchedVisionEncoder:
    """The ONNX vision graph in ONNX Runtime, over many requests at once."""

    def __init__(
        self, path: str | Path, providers: list[str] | None = None, intra_op_threads: int | None = None
    ):
        self.runner = VisionOnnxRunner(path, providers=providers, intra_op_threads=intra_op_threads)
        self.output_names = self.runner.output_names
        shape = self.runner.session.get_inputs()[0].shape
        self.image_size = int(shape[-1]) if isinstance(shape[-1], int) else 0

    @property
    def counts(self) -> bool:
        return set(COUNT_OUTPUT_NAMES) <= set(self.output_names)

    def run_batched(self, requests: Sequence[VisionInputs]) -> list[dict[str, np.ndarray]]:
        """One graph run for all ``requests``; each gets its own outputs (its batch rows, its prompt slots)."""
        if not requests:
            return []
        prompts = max(r.prompt_masks.shape[1] for r in requests)
        sizes = [r.pixel_values.shape[0] for r in requests]

        def padded(array: np.ndarray, fill: float | bool) -> np.ndarray:
            if array.shape[1] == prompts:
                return array
            pad = np.full(
                (array.shape[0], prompts - array.shape[1], *array.shape[2:]), fill, dtype=array.dtype
            )
            return np.concatenate([array, pad], axis=1)

        outputs = self.runner.run(
            np.concatenate([r.pixel_values for r in requests]).astype(np.float32, copy=False),
            np.concatenate([r.modality_ids.reshape(-1) for r in requests]).astype(np.int64, copy=False),
            np.concatenate([padded(r.prompt_masks.astype(np.float32, copy=False), 0.0) for r in requests]),
            np.concatenate([padded(r.prompt_valid.astype(np.bool_, copy=False), False) for r in requests]),
        )
        results: list[dict[str, np.ndarray]] = []
        start = 0
        for request, size in zip(requests, sizes, strict=True):
            own = request.prompt_masks.shape[1]
            rows = slice(start, start + size)
            results.append(
                {
                    name: np.ascontiguousarray(value[rows, :own] if name in PROMPT_OUTPUTS else value[rows])
                    for name, value in outputs.items()
                }
            )
            start += size
        return results


__all__ = ["PROMPT_OUTPUTS", "BatchedVisionEncoder", "VisionInputs"]
