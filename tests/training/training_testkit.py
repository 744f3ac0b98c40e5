"""Helpers of the training tests: a small model and a small recipe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from earthgptx.training.recipe import Recipe, recipe_from_dict

CHIP = 64
# A model small enough to train a few dozen steps on a shared CPU in seconds (64 px chips, narrow parts).
SMALL_MODEL: dict[str, Any] = {
    "vision_config": {
        "image_size": CHIP,
        "convnext_config": {"hidden_sizes": [16, 32, 48, 64], "depths": [1, 1, 1, 1]},
        "dinov2_config": {
            "hidden_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "patch_size": 8,
        },
    },
    "prompt_config": {"mask_size": CHIP, "hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2},
    "fusion_config": {"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2},
    "text_config": {
        "hidden_size": 96,
        "intermediate_size": 192,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
    },
    "mask_decoder_hidden_size": 32,
}
TRAIN_SCENES = 12


def small_run(
    tmp_path: Path,
    train_dir: Path,
    vision_pretrain: dict[str, Any] | None = None,
    centre_warmup: dict[str, Any] | None = None,
    **train: Any,
) -> Recipe:
    """A run of the small model on ``train_dir``, writing under ``tmp_path``; ``train`` keys go to the ``train``
    section, the phases' settings to theirs."""
    values: dict[str, Any] = {
        "name": "test",
        "data": {
            "train_dir": str(train_dir),
            "train_seed": 3,
            "n_scenes": TRAIN_SCENES,
            "eval_dir": str(tmp_path / "eval-data"),
            "eval_seed": 11,
            "n_eval_scenes": 2,
            "chip_size": CHIP,
            "workers": 1,
        },
        "model": {"overrides": SMALL_MODEL, "save_dtype": "float16"},
        "optim": {"lr": 2e-3, "warmup_steps": 5},
        "train": {
            "steps": 10,
            "batch_size": 8,
            "checkpoint_dir": str(tmp_path / "checkpoints"),
            "checkpoint_every": 0,
            "log_every": 1,
            "threads": 2,
            "device": "cpu",
            "output_dir": str(tmp_path / "model"),
            **train,
        },
        "vision_pretrain": vision_pretrain or {},
        "centre_warmup": centre_warmup or {},
        "eval": {"batch_size": 16},
    }
    return recipe_from_dict(values)
