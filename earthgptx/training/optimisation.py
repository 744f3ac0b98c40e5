"""The optimiser and the learning-rate schedule of the main training phase."""

from __future__ import annotations

import math

import torch
from torch import nn

from earthgptx.training.recipe import OptimSettings


def count_parameters(model: nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


COUNT_MAP_PARTS = (".count_numbers.", ".count_names.", ".count_copy.")


def make_optimizer(model: nn.Module, optim: OptimSettings) -> torch.optim.AdamW:
    """AdamW; matrices decay, biases / norms / 1-d parameters do not; the counting path's token tables and count copy take
    ``optim.count_path_lr_scale`` times the learning rate, without decay."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    count_maps: list[nn.Parameter] = []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if any(part in f".{name}" for part in COUNT_MAP_PARTS):
            count_maps.append(parameter)
        else:
            (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    groups = [
        {"params": decay, "weight_decay": optim.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if count_maps:
        groups.append({"params": count_maps, "weight_decay": 0.0, "lr": optim.lr * optim.count_path_lr_scale})
    return torch.optim.AdamW(groups, lr=optim.lr, betas=optim.betas, fused=False)


class WarmupCosine:
    """Learning-rate factor: linear warm-up over ``warmup`` steps, then a cosine to ``min_ratio`` at ``total``.

    ``total`` may be set once the run knows how many steps fit its time budget (before the warm-up ends).
    """

    def __init__(self, warmup: int, total: int, min_ratio: float) -> None:
        self.warmup = warmup
        self.total = total
        self.min_ratio = min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / max(1, self.warmup)
        span = max(1, self.total - self.warmup)
        progress = min(1.0, (step - self.warmup) / span)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
