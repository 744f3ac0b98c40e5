"""Checkpoints of a run (``last.pt``: everything ``--resume`` needs) and the saved model folder."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from earthgptx.model import EarthGPTXForConditionalGeneration, EarthGPTXProcessor
from earthgptx.training.evaluate import PARTIAL_REPORT_JSON, PARTIAL_REPORT_MD, REPORT_JSON, REPORT_MD

CHECKPOINT_NAME = "last.pt"


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write atomically, so an interrupted save never leaves a truncated ``last.pt``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save(state, partial)
    os.replace(partial, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    # The checkpoint holds RNG states and python objects that we wrote ourselves.
    return torch.load(path, map_location="cpu", weights_only=False)  # type: ignore[no-any-return]


def save_model(
    model: EarthGPTXForConditionalGeneration,
    processor: EarthGPTXProcessor,
    out_dir: Path,
    save_dtype: str,
) -> None:
    """``save_pretrained`` (float32 config) + processor files; weights stored in ``save_dtype``.

    The config keeps ``dtype: float32``, so ``from_pretrained`` casts half-precision weights back to float32.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    # Reports in the folder describe older weights.
    for stale in (REPORT_JSON, REPORT_MD, PARTIAL_REPORT_JSON, PARTIAL_REPORT_MD):
        (out_dir / stale).unlink(missing_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    if save_dtype != "float32":
        dtype = getattr(torch, save_dtype)
        weights = out_dir / "model.safetensors"
        tensors = load_file(weights)
        cast = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}
        save_file(cast, weights, metadata={"format": "pt"})
