"""Dense perception targets and linear probes: auxiliary losses of the one-stage training.

An answer token carries one label per sample; the generator knows every pixel. Linear heads on what the language
model reads — the projected image tokens and region tokens — and on the mask decoder's pixel features are trained
beside the language-model loss, from the exact ground truth of the synthetic scenes:

- every image token (one cell of the token grid): the share of each land cover and object class in its cell, the
  box of the object that fills most of it, and how many object centres of each class fall in it;
- every region token group (the K tokens of one prompt): the prompted object's class, size, orientation and,
  where the modality shows them, colour or temperature;
- every pixel feature: its land cover or object class;
- the model's own counting path (``count_classes``), when it has one: its centre heatmap is trained with a focal
  loss against a Gaussian bump at every object's centre on the pixel-feature grid (this head is part of the saved
  model; the counts it hands the language model come from the true centres during training, see ``centre_maps``).

The heads are linear, so the information has to be linearly present in the tokens the language model reads;
they exist only during training and are not part of the saved model. The scene layout is rebuilt from the
dataset's seed (``build_scene`` is deterministic and takes a few milliseconds), so the dataset format is unchanged;
records of other sources (converted datasets) simply have no auxiliary targets.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from earthgptx.data.generate import PLAIN, SceneOptions, build_scene
from earthgptx.data.scene import Scene
from earthgptx.data.vocabulary import (
    COLOURS,
    LAND_COVERS,
    OBJECT_CLASSES,
    ORIENTATIONS,
    SIZES,
    TEMPERATURES,
    VISIBLE_ATTRIBUTES,
)

IGNORE = -100
SEMANTIC_CLASSES = (*LAND_COVERS, *OBJECT_CLASSES)
# Per prompted object: its class, then each attribute (ignored where the modality does not show it).
REGION_FIELDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("class", OBJECT_CLASSES),
    ("size", SIZES),
    ("orientation", ORIENTATIONS),
    ("colour", COLOURS),
    ("temperature", TEMPERATURES),
)


@dataclass
class ChipTargets:
    """Targets of one chip: ``token_semantic (T, C)`` shares, ``token_box (T, 4)`` in [0, 1] with
    ``token_box_valid (T,)``, ``token_centres (T, n_objects)`` counts, ``pixel_labels (P, P)`` class indices,
    ``centre_map (n_objects, P, P)`` 1 in the pixel-feature cell of each object's centre."""

    token_semantic: np.ndarray
    token_box: np.ndarray
    token_box_valid: np.ndarray
    token_centres: np.ndarray
    pixel_labels: np.ndarray
    centre_map: np.ndarray


def semantic_map(scene: Scene) -> np.ndarray:
    """``(S, S)`` uint8: the land cover index, or ``len(LAND_COVERS) + class`` on an object's pixels."""
    out = scene.cover_map.astype(np.uint8).copy()
    for obj in scene.objects:
        out[obj.mask] = len(LAND_COVERS) + OBJECT_CLASSES.index(obj.cls)
    return out


def chip_targets(scene: Scene, grid: int, pixel_side: int) -> ChipTargets:
    """Targets on a ``grid × grid`` token grid (row-major, as the projector orders tokens) and a
    ``pixel_side × pixel_side`` pixel-feature map."""
    size = scene.chip_size
    if size % grid or size % pixel_side:
        raise ValueError(
            f"chip size {size} is not a multiple of the token grid {grid} and pixel side {pixel_side}"
        )
    semantic = semantic_map(scene)
    cell = size // grid
    n_classes = len(SEMANTIC_CLASSES)
    one_hot = np.eye(n_classes, dtype=np.float32)[semantic]  # (S, S, C)
    shares = (
        one_hot.reshape(grid, cell, grid, cell, n_classes).mean(axis=(1, 3)).reshape(grid * grid, n_classes)
    )

    instance = (
        scene.instance_map.reshape(grid, cell, grid, cell).transpose(0, 2, 1, 3).reshape(grid * grid, -1)
    )
    boxes = np.zeros((grid * grid, 4), dtype=np.float32)
    valid = np.zeros(grid * grid, dtype=bool)
    for t in range(grid * grid):
        counts = np.bincount(instance[t], minlength=len(scene.objects) + 1)
        counts[0] = 0
        if counts.any():
            obj = scene.objects[int(counts.argmax()) - 1]
            boxes[t] = np.asarray(obj.bbox_px, dtype=np.float32) / size
            valid[t] = True

    centres = np.zeros((grid * grid, len(OBJECT_CLASSES)), dtype=np.float32)
    centre_map = np.zeros((len(OBJECT_CLASSES), pixel_side, pixel_side), dtype=np.uint8)
    block = size // pixel_side
    for obj in scene.objects:
        x, y = obj.centroid_px
        c = OBJECT_CLASSES.index(obj.cls)
        row, col = min(int(y // cell), grid - 1), min(int(x // cell), grid - 1)
        centres[row * grid + col, c] += 1.0
        centre_map[c, min(int(y // block), pixel_side - 1), min(int(x // block), pixel_side - 1)] = 1

    # Object classes have the higher indices, so a max-pool keeps a small object that touches a block.
    pixels = semantic.reshape(pixel_side, block, pixel_side, block).max(axis=(1, 3)).astype(np.uint8)
    return ChipTargets(shares, boxes, valid, centres, pixels, centre_map)


def prompted_objects(record: Mapping[str, Any]) -> list[int | None]:
    """The scene object behind each of the record's prompts (``None`` where a prompt names a region, not an
    object, as in counting inside a box)."""
    prompts = record.get("prompts") or []
    answer = record.get("answer") or {}
    if not prompts:
        return []
    if isinstance(answer.get("objects"), list) and len(answer["objects"]) == len(prompts):
        return [int(i) for i in answer["objects"]]
    if "object" in answer and len(prompts) == 1:
        return [int(answer["object"])]
    return [None] * len(prompts)


def region_targets(record: Mapping[str, Any], scene: Scene) -> np.ndarray:
    """``(n_prompts, len(REGION_FIELDS))`` int64 class indices, ``IGNORE`` where unknown or not visible."""
    objects = prompted_objects(record)
    out = np.full((len(objects), len(REGION_FIELDS)), IGNORE, dtype=np.int64)
    visible = VISIBLE_ATTRIBUTES.get(str(record.get("modality")), ())
    for slot, index in enumerate(objects):
        if index is None or not 0 <= index < len(scene.objects):
            continue
        obj = scene.objects[index]
        values = {"class": obj.cls, **{k: v for k, v in obj.attributes().items() if k in visible}}
        for f, (name, vocabulary) in enumerate(REGION_FIELDS):
            if values.get(name) in vocabulary:
                out[slot, f] = vocabulary.index(values[name])
    return out


def synthetic_scene(
    record: Mapping[str, Any], seed: int | None, chip_size: int, options: SceneOptions = PLAIN
) -> Scene | None:
    """The layout behind a synthetic record (rebuilt from the dataset seed and the generator's ``options``, those
    in its ``dataset.json``), or ``None`` for other sources."""
    scene_id = str(record.get("scene_id", ""))
    if seed is None or record.get("source") != "synthetic" or not scene_id.startswith("scene"):
        return None
    try:
        index = int(scene_id[len("scene") :])
    except ValueError:
        return None
    scene = build_scene(seed, index, chip_size, options)
    return scene if scene.scene_id == scene_id else None


class PerceptionHeads(nn.Module):
    """Linear probes on image tokens, region tokens and pixel features; :meth:`losses` gives their losses."""

    def __init__(self, text_hidden: int, pixel_channels: int) -> None:
        super().__init__()
        n_sem, n_obj = len(SEMANTIC_CLASSES), len(OBJECT_CLASSES)
        self.token_semantic = nn.Linear(text_hidden, n_sem)
        self.token_box = nn.Linear(text_hidden, 4)
        self.token_centres = nn.Linear(text_hidden, n_obj)
        self.region = nn.ModuleList(nn.Linear(text_hidden, len(v)) for _, v in REGION_FIELDS)
        self.pixel = nn.Conv2d(pixel_channels, n_sem, 1)

    def losses(
        self,
        image_tokens: torch.Tensor,
        prompt_tokens: torch.Tensor,
        mask_features: torch.Tensor,
        targets: Mapping[str, torch.Tensor],
        centre_logits: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """``image_tokens (B, T, H)``, ``prompt_tokens (B, N, K, H)``, ``mask_features (B, D, P, P)``, the
        batch's ``aux_*`` targets and, for a model with a counting path, its ``centre_logits (B, C, P, P)`` → one
        scalar loss per head (heads without targets in the batch are left out)."""
        image_tokens = image_tokens.float()
        out: dict[str, torch.Tensor] = {}
        semantic = targets["aux_token_semantic"].float()
        log_probs = F.log_softmax(self.token_semantic(image_tokens), dim=-1)
        out["token_semantic"] = -(semantic * log_probs).sum(-1).mean()
        valid = targets["aux_token_box_valid"].bool()
        if bool(valid.any()):
            boxes = torch.sigmoid(self.token_box(image_tokens))[valid]
            out["token_box"] = F.l1_loss(boxes, targets["aux_token_box"].float()[valid]) * 4.0
        centres = self.token_centres(image_tokens)
        out["token_centres"] = F.mse_loss(centres, targets["aux_token_centres"].float())
        if centre_logits is not None:
            centre_map = targets["aux_centre_map"]
            if centre_logits.shape != centre_map.shape:
                raise ValueError(
                    f"the counting path gives {tuple(centre_logits.shape)} centre logits but the targets are "
                    f"{tuple(centre_map.shape)}"
                )
            out["count_path"] = centre_focal_loss(centre_logits, centre_map)

        region = targets["aux_region"].long()  # (B, N, F)
        n = min(region.shape[1], prompt_tokens.shape[1])
        region = region[:, :n]
        pooled = prompt_tokens[:, :n].float().mean(2)  # (B, N, H)
        field_losses = []
        for f, head in enumerate(self.region):
            labels = region[..., f].reshape(-1)
            if bool((labels != IGNORE).any()):
                logits = head(pooled).reshape(-1, head.out_features)
                field_losses.append(F.cross_entropy(logits, labels, ignore_index=IGNORE))
        if field_losses:
            out["region"] = torch.stack(field_losses).mean()

        pixel_logits = self.pixel(mask_features.float())
        labels = targets["aux_pixel_labels"].long()
        if pixel_logits.shape[-2:] != labels.shape[-2:]:
            pixel_logits = F.interpolate(
                pixel_logits, size=labels.shape[-2:], mode="bilinear", align_corners=False
            )
        out["pixel_semantic"] = F.cross_entropy(pixel_logits, labels)
        return out


CENTRE_SIGMA = 1.0  # of the Gaussian bump around each centre, in pixel-feature cells


def centre_heat_targets(centre_map: torch.Tensor, sigma: float = CENTRE_SIGMA) -> torch.Tensor:
    """``(B, C, P, P)`` 0/1 centre cells → heat targets in [0, 1]: 1 at each centre, falling off as a Gaussian
    (the largest bump where two meet)."""
    radius = max(1, math.ceil(2 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32, device=centre_map.device)
    bump = torch.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * sigma**2))
    batch, classes, side, _ = centre_map.shape
    flat = centre_map.float().reshape(batch * classes, 1, side, side)
    # A max over shifted copies, not a sum (a sum would let two close bumps exceed 1 between them).
    padded = F.pad(flat, (radius, radius, radius, radius))
    heat = torch.zeros_like(flat)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            window = padded[..., dy : dy + side, dx : dx + side]
            heat = torch.maximum(heat, window * bump[dy, dx])
    return heat.reshape(batch, classes, side, side)


def centre_focal_loss(
    logits: torch.Tensor, centre_map: torch.Tensor, alpha: float = 2.0, beta: float = 4.0
) -> torch.Tensor:
    """The penalty-reduced focal loss of a centre heatmap (as in CenterNet): ``-(1-p)^alpha log p`` at each centre
    cell, ``-(1-y)^beta p^alpha log(1-p)`` elsewhere (``y`` the Gaussian target, so cells next to a centre are
    barely punished), summed and divided by the number of centres."""
    logits = logits.float()
    positive = centre_map.float()
    target = centre_heat_targets(positive)
    prob = torch.sigmoid(logits)
    log_p = F.logsigmoid(logits)
    log_not_p = F.logsigmoid(-logits)
    pos = -((1 - prob) ** alpha) * log_p * positive
    neg = -((1 - target) ** beta) * prob**alpha * log_not_p * (1 - positive)
    return (pos.sum() + neg.sum()) / positive.sum().clamp_min(1.0)


def weighted_aux_sum(losses: Mapping[str, torch.Tensor], weights: Mapping[str, float]) -> torch.Tensor:
    """The auxiliary loss: the heads' ``losses`` summed, each times its ``weights`` entry (1 where it has none)."""
    return torch.stack([loss * float(weights.get(name, 1.0)) for name, loss in losses.items()]).sum()


def stack_region_targets(per_sample: Sequence[np.ndarray], max_prompts: int) -> torch.Tensor:
    """``(n, max_prompts, F)`` int16 tensor of region targets, ``IGNORE`` in unused slots."""
    out = torch.full((len(per_sample), max_prompts, len(REGION_FIELDS)), IGNORE, dtype=torch.int16)
    for i, rows in enumerate(per_sample):
        if len(rows):
            take = min(len(rows), max_prompts)
            out[i, :take] = torch.from_numpy(rows[:take].astype(np.int16))
    return out
