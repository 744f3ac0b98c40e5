"""Dense pre-training of the vision tower: the tiny model's stand-in for pretrained encoders.

The paper starts from DINOv2 and ConvNeXt weights that already see shapes; the tiny model starts from random
weights, and the language-model loss (one label per answer) teaches its vision tower to tell a ship from a
vehicle only slowly. Before the one-stage training, this stage trains the tower alone on a dense task the
synthetic scenes give for free: the land cover or object class of every cell of its token grid (the class
holding most of the cell's pixels, from the auxiliary pixel labels). A linear head reads the tower's image
tokens — the features the projector hands to the language model — and is thrown away afterwards.

Each step takes ``batch_size`` chips at random and turns each by a random multiple of 90 degrees (labels with
it); the objects' classes do not depend on their orientation. Object cells weigh ``OBJECT_WEIGHT`` times a land
cover cell in the loss, since they are few and are what the later tasks ask about. AdamW, linear warm-up, cosine
to zero. Without a vision tower forward through the language model, a step costs a fraction of a training step.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from earthgptx.data.vocabulary import LAND_COVERS
from earthgptx.model.counting_earthgptx import centre_peaks
from earthgptx.model.modeling_earthgptx import (
    EarthGPTXForConditionalGeneration,
    EarthGPTXVisionTower,
    run_vision_side,
)
from earthgptx.training.auxiliary import SEMANTIC_CLASSES, centre_focal_loss
from earthgptx.training.datasets import EncodedDataset

logger = logging.getLogger(__name__)

OBJECT_WEIGHT = 3.0
WARMUP_STEPS = 100
EVAL_CHIPS = 256
STATE_NAME = "vision_pretrain.pt"
CENTRE_CACHE_CHIPS = (
    6000  # pixel features cached by the centre head warm-up (float16, 0.5 MB a chip at 128 px)
)


@dataclass
class PretrainResult:
    steps: int
    seconds: float
    loss: float  # mean training loss over the last 50 steps
    cell_accuracy: (
        float  # on the last EVAL_CHIPS chips (seen in training; a progress gauge, not a held-out score)
    )
    object_cell_accuracy: float  # the same, on cells whose majority class is an object


def cell_labels(pixel_labels: torch.Tensor, grid: int) -> torch.Tensor:
    """``(N, P, P)`` class indices → ``(N, grid, grid)``: the class with the most pixels in each cell
    (ties go to the lower index)."""
    side = pixel_labels.shape[-1]
    if side % grid:
        raise ValueError(f"pixel label side {side} is not a multiple of the token grid {grid}")
    one_hot = F.one_hot(pixel_labels.long(), len(SEMANTIC_CLASSES)).permute(0, 3, 1, 2).float()
    return F.avg_pool2d(one_hot, side // grid).argmax(1)


def chip_modalities(data: EncodedDataset) -> torch.Tensor:
    """The modality id of each chip of ``data.images`` (a chip has one modality, shared by its samples)."""
    out = torch.zeros(data.images.shape[0], dtype=torch.long, device=data.modality_ids.device)
    return out.scatter_(0, data.image_index, data.modality_ids)


def _adamw_warmup_cosine(
    parameters: list[nn.Parameter], lr: float, weight_decay: float, steps: int, warmup: int
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (matrices decay, 1-d parameters do not) with a linear warm-up over ``warmup`` steps, then a cosine to
    zero at ``steps``."""
    decay = [p for p in parameters if p.ndim >= 2]
    no_decay = [p for p in parameters if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / warmup)
        return warm * 0.5 * (1.0 + math.cos(math.pi * step / steps))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _step(
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    parameters: list[nn.Parameter],
) -> float:
    """One optimiser step on ``loss`` (gradients clipped to norm 1); returns the loss value."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(parameters, 1.0)
    optimizer.step()
    scheduler.step()
    return float(loss.detach())


def _optimise(
    steps: int,
    batch_loss: Callable[[], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    parameters: list[nn.Parameter],
    desc: str,
    log_every: int,
    progress: bool,
) -> float:
    """``steps`` optimiser steps on ``batch_loss()`` (which draws its own batch), with a progress bar and the mean
    loss of the last 50 steps logged every ``log_every`` steps and at the end; returns that last mean."""
    recent: list[float] = []
    bar = tqdm(total=steps, disable=not progress, desc=desc, unit="step", mininterval=2.0)
    for step in range(steps):
        recent = (recent + [_step(batch_loss(), optimizer, scheduler, parameters)])[-50:]
        bar.update(1)
        if (step + 1) % log_every == 0 or step + 1 == steps:
            logger.info("%s step %d/%d: loss %.4f", desc, step + 1, steps, sum(recent) / len(recent))
    bar.close()
    return sum(recent) / len(recent)


def pretrain_vision_tower(
    tower: EarthGPTXVisionTower,
    data: EncodedDataset,
    steps: int,
    batch_size: int,
    lr: float,
    weight_decay: float = 0.05,
    seed: int = 0,
    progress: bool = True,
) -> PretrainResult:
    """Train ``tower`` (an :class:`EarthGPTXVisionTower`) in place on ``data``'s per-cell classes.

    ``data`` must carry the auxiliary targets (``encode_dataset(..., aux=...)``). Deterministic for a given
    ``seed`` on a CPU.
    """
    if data.aux is None:
        raise ValueError("vision pre-training needs the auxiliary targets of the synthetic dataset")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    config = tower.config
    if config.num_views != 1:
        raise ValueError("vision pre-training supports a single-view tower only")
    device = data.images.device
    grid = config.grid_size
    # In slices: the one-hot pooling of every chip at once would take ~150 kB per chip.
    labels = torch.cat(
        [cell_labels(part.to(device), grid) for part in data.aux["aux_pixel_labels"].split(512)]
    )
    modalities = chip_modalities(data)
    n_chips = labels.shape[0]
    n_classes = len(SEMANTIC_CLASSES)
    n_covers = len(LAND_COVERS)
    feature_size = config.feature_size
    generator = torch.Generator().manual_seed(seed)
    head = nn.Linear(feature_size, n_classes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head.reset_parameters()
    head.to(device)
    weight = torch.ones(n_classes, device=device)
    weight[n_covers:] = OBJECT_WEIGHT
    parameters = [p for p in tower.parameters() if p.requires_grad] + list(head.parameters())
    optimizer, scheduler = _adamw_warmup_cosine(parameters, lr, weight_decay, steps, WARMUP_STEPS)
    tower.train()
    started = time.perf_counter()

    def batch_loss() -> torch.Tensor:
        index = torch.randint(0, n_chips, (batch_size,), generator=generator)
        turns = int(torch.randint(0, 4, (), generator=generator))
        index = index.to(device)
        pixels = torch.rot90(data.images[index].float(), turns, (2, 3))
        target = torch.rot90(labels[index], turns, (1, 2))
        tokens = tower(pixels, modalities[index]).image_features  # (B, grid², C), row-major cells
        logits = head(tokens).reshape(-1, n_classes)
        return F.cross_entropy(logits, target.reshape(-1), weight=weight)

    loss = _optimise(
        steps, batch_loss, optimizer, scheduler, parameters, "vision pre-training", 500, progress
    )
    seconds = time.perf_counter() - started
    accuracy, object_accuracy = _cell_accuracy(tower, head, data, labels, modalities, n_covers)
    tower.train()
    return PretrainResult(steps, seconds, loss, accuracy, object_accuracy)


@torch.no_grad()
def _cell_accuracy(
    tower: EarthGPTXVisionTower,
    head: nn.Linear,
    data: EncodedDataset,
    labels: torch.Tensor,
    modalities: torch.Tensor,
    n_covers: int,
) -> tuple[float, float]:
    tower.eval()
    start = max(0, labels.shape[0] - EVAL_CHIPS)
    correct = total = object_correct = object_total = 0
    for i in range(start, labels.shape[0], 64):
        j = min(i + 64, labels.shape[0])
        predicted = head(tower(data.images[i:j].float(), modalities[i:j]).image_features).argmax(-1)
        truth = labels[i:j].reshape(j - i, -1)
        hit = predicted == truth
        objects = truth >= n_covers
        correct += int(hit.sum())
        total += truth.numel()
        object_correct += int(hit[objects].sum())
        object_total += int(objects.sum())
    return correct / max(total, 1), object_correct / max(object_total, 1)


def stored_result(state_dir: Path) -> dict[str, float] | None:
    """The measured result saved with the pre-trained tower in ``state_dir``, if there is one."""
    path = Path(state_dir) / STATE_NAME
    if not path.exists():
        return None
    return dict(torch.load(path, map_location="cpu", weights_only=True)["result"])


def load_or_pretrain(
    tower: EarthGPTXVisionTower,
    data: EncodedDataset,
    state_dir: Path,
    steps: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    seed: int,
    progress: bool,
) -> tuple[PretrainResult, bool]:
    """Pre-train ``tower``, or load the result of an identical earlier pre-training from ``state_dir``.

    The state is keyed by its settings and the dataset size, so a changed recipe trains afresh. Returns the
    result (as measured when it was made) and whether the weights were reused.
    """
    key = {"steps": steps, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay, "seed": seed,
           "chips": int(data.images.shape[0])}  # fmt: skip
    path = Path(state_dir) / STATE_NAME
    if path.exists():
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("key") == key:
            tower.load_state_dict(state["tower"])
            logger.info("vision tower: pre-trained weights loaded from %s", path)
            return PretrainResult(**state["result"]), True
        logger.info("vision tower: %s was made with other settings; pre-training again", path)
    result = pretrain_vision_tower(tower, data, steps, batch_size, lr, weight_decay, seed, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"key": key, "tower": tower.state_dict(), "result": result.__dict__}, tmp)
    tmp.replace(path)
    logger.info(
        "vision pre-training: %d steps in %.0f s, loss %.4f, cell accuracy %.3f (object cells %.3f)",
        result.steps, result.seconds, result.loss, result.cell_accuracy, result.object_cell_accuracy,
    )  # fmt: skip
    return result, False


# ---------------------------------------------------------------------------------------------------- centre head
@dataclass
class CentreWarmupResult:
    steps: int
    seconds: float
    loss: float  # mean focal loss over the last 50 steps
    count_accuracy: (
        float  # exact per-class image counts from the peaks, on the last EVAL_CHIPS chips (a gauge)
    )


def _no_prompts(batch: int, size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros(batch, 1, size, size, device=device), torch.zeros(
        batch, 1, dtype=torch.bool, device=device
    )


def _pixel_features(
    model: EarthGPTXForConditionalGeneration, pixels: torch.Tensor, modalities: torch.Tensor
) -> torch.Tensor:
    masks, valid = _no_prompts(pixels.shape[0], pixels.shape[-1], pixels.device)
    with torch.no_grad():
        return run_vision_side(model, pixels, modalities, masks, valid).mask_features


def warm_up_centre_head(
    model: EarthGPTXForConditionalGeneration,
    data: EncodedDataset,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int = 0,
    progress: bool = True,
) -> CentreWarmupResult:
    """Train the counting path's centre head alone, in place, on ``data``'s object centres, before the one-stage
    training, so that the head the language model then learns to rely on starts out finding objects.

    Every other weight is frozen, so the pixel features of up to ``CENTRE_CACHE_CHIPS`` chips are computed once
    (float16) and a step costs only the head. The last ``EVAL_CHIPS`` chips are kept out: the accuracy reported is
    measured on chips the head never saw. Each step takes ``batch_size`` cached chips at random. AdamW, linear
    warm-up, cosine to zero; the penalty-reduced focal loss of the auxiliary losses.
    """
    if model.counting_path is None:
        raise ValueError(
            "the model has no counting path (count_classes = 0): there is no centre head to warm up"
        )
    head = model.counting_path.count_head
    if data.aux is None or "aux_centre_map" not in data.aux:
        raise ValueError("the centre head warm-up needs the synthetic dataset's auxiliary targets")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    device = data.images.device
    centres = data.aux["aux_centre_map"]
    modalities = chip_modalities(data)
    n_chips = centres.shape[0]
    held_out = min(EVAL_CHIPS, n_chips // 4)
    generator = torch.Generator().manual_seed(seed)
    pool = (
        torch.randperm(n_chips - held_out, generator=generator)[:CENTRE_CACHE_CHIPS].sort().values.to(device)
    )
    was_training = model.training
    model.eval()  # the frozen parts run as at inference
    started = time.perf_counter()
    features = torch.cat(
        [
            _pixel_features(model, data.images[part].float(), modalities[part]).half()
            for part in pool.split(64)
        ]
    )
    targets = centres[pool]
    logger.info(
        "centre head warm-up: pixel features of %d chips in %.0f s", len(pool), time.perf_counter() - started
    )

    parameters = list(head.parameters())
    warmup = min(WARMUP_STEPS, max(1, steps // 10))
    optimizer, scheduler = _adamw_warmup_cosine(parameters, lr, 0.01, steps, warmup)
    head.train()

    def batch_loss() -> torch.Tensor:
        index = torch.randint(0, len(pool), (batch_size,), generator=generator).to(device)
        return centre_focal_loss(head(features[index].float()), targets[index])

    loss = _optimise(
        steps, batch_loss, optimizer, scheduler, parameters, "centre head warm-up", 250, progress
    )
    seconds = time.perf_counter() - started
    accuracy = centre_count_accuracy(model, data, modalities, range(n_chips - held_out, n_chips))
    model.train(was_training)
    return CentreWarmupResult(steps, seconds, loss, accuracy)


@torch.no_grad()
def centre_count_accuracy(
    model: EarthGPTXForConditionalGeneration, data: EncodedDataset, modalities: torch.Tensor, chips: range
) -> float:
    """The share of (chip, class) pairs whose peak count equals the true count, over ``chips``."""
    assert model.counting_path is not None and data.aux is not None
    head = model.counting_path.count_head
    threshold, window = model.config.count_threshold, model.config.count_window
    hits = total = 0
    for start in range(chips.start, chips.stop, 64):
        index = torch.arange(start, min(start + 64, chips.stop), device=data.images.device)
        logits = head(_pixel_features(model, data.images[index].float(), modalities[index]))
        found = centre_peaks(logits, threshold, window, model.config.count_peaks).sum((-2, -1))
        truth = data.aux["aux_centre_map"][index].float().sum((-2, -1))
        hits += int((found == truth).sum())
        total += truth.numel()
    return hits / max(total, 1)
