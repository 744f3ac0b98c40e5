"""The main training phase: one step at a time, a budget planner, and the loss log.

``TrainingLoop.step`` draws a step's batch (model inputs and, apart, the auxiliary targets), runs the model, adds the
coordinate and auxiliary losses, and takes the optimiser step. ``TrainingLoop.run`` repeats it up to the planned
number of steps, logs the losses, validates, writes checkpoints, and stops when the time budget is spent.
``BudgetPlanner`` times steps 10-40 and plans how many steps fit the budget; the schedule then spans those.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from earthgptx.model import EarthGPTXForConditionalGeneration
from earthgptx.training.auxiliary import PerceptionHeads, weighted_aux_sum
from earthgptx.training.checkpoints import rng_state, save_checkpoint
from earthgptx.training.datasets import EncodedDataset, WeightedStepSampler
from earthgptx.training.devices import DistInfo
from earthgptx.training.optimisation import WarmupCosine
from earthgptx.training.recipe import Recipe

# Steps timed before planning the schedule under a time budget (the first few are discarded as warm-up).
TIMING_STEPS, TIMING_SKIP = 40, 10
# Seconds kept back from a time budget for the final save.
SAVE_RESERVE_S = 5.0
LOSS_NAMES = ("loss", "lm_loss", "mask_loss", "coord_loss", "aux_loss", "copy_loss")

logger = logging.getLogger(__name__)


def coordinate_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    is_box_sample: torch.Tensor,
    number_ids: torch.Tensor,
    sigma: float,
) -> torch.Tensor | None:
    """Cross-entropy of the box-coordinate tokens against a Gaussian over the number tokens.

    ``logits`` ``(B, L, V)`` and ``labels`` ``(B, L)`` as in the model (unshifted); ``is_box_sample`` ``(B,)``
    marks the samples whose answer is a box. Returns the mean over coordinate tokens, ``None`` when there is none.
    """
    shift_labels = labels[:, 1:]
    lookup = torch.full((int(logits.shape[-1]),), -1, dtype=torch.long, device=labels.device)
    lookup[number_ids.to(labels.device)] = torch.arange(len(number_ids), device=labels.device)
    value = lookup[shift_labels.clamp_min(0)].masked_fill(shift_labels < 0, -1)
    selected = (value >= 0) & is_box_sample.to(labels.device)[:, None]
    if not bool(selected.any()):
        return None
    log_probs = torch.log_softmax(logits[:, :-1][selected].float(), dim=-1)[:, number_ids.to(logits.device)]
    grid = torch.arange(len(number_ids), device=logits.device, dtype=torch.float32)
    target = torch.exp(-0.5 * ((grid[None, :] - value[selected][:, None].float()) / sigma) ** 2)
    target = target / target.sum(-1, keepdim=True)
    return -(target * log_probs).sum(-1).mean()


def teacher_forced(seed: int, step: int, share: float) -> bool:
    """Whether step ``step`` hands the language model the true counts (a draw that depends only on the seed and the
    step, so a resumed run makes the same choices)."""
    if share >= 1.0:
        return True
    return share > 0.0 and random.Random(seed * 1_000_003 + step).random() < share


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


def _tensor_mean(values: Sequence[torch.Tensor]) -> float:
    return float(torch.stack(list(values)).float().mean()) if values else float("nan")


@torch.no_grad()
def validation_loss(
    model: nn.Module,
    data: EncodedDataset,
    batch_size: int,
    batches: int,
    autocast: Callable[[], AbstractContextManager[Any]],
    pad_id: int,
    device: torch.device,
) -> float:
    model.eval()
    losses = []
    for b in range(min(batches, math.ceil(len(data) / batch_size))):
        index = torch.arange(b * batch_size, min(len(data), (b + 1) * batch_size))
        batch = {k: v.to(device) for k, v in data.batch(index, pad_id).items()}
        with autocast():
            out = model(**batch)
        losses.append(float(out.loss))
    model.train()
    return _mean(losses)


class LossWindow:
    """The losses of the steps since the last log line; they stay on the device until logged, so steps do not wait
    for each other."""

    def __init__(self) -> None:
        self.values: dict[str, list[torch.Tensor]] = {name: [] for name in LOSS_NAMES}

    def add(self, losses: dict[str, torch.Tensor | None]) -> None:
        for name, value in losses.items():
            if value is not None:
                self.values[name].append(value.detach())

    def entry(self, step: int, lr: float, elapsed_s: float) -> dict[str, float]:
        """The log entry of the window (means; NaN for a loss no step had), which then starts afresh."""
        entry: dict[str, float] = {"step": step}
        entry.update({name: _tensor_mean(values) for name, values in self.values.items()})
        entry.update(lr=lr, elapsed_s=round(elapsed_s, 2))
        self.values = {name: [] for name in LOSS_NAMES}
        return entry


class BudgetPlanner:
    """Plans how many steps fit a time budget: times steps ``TIMING_SKIP`` … ``TIMING_STEPS`` after the start, then
    fits the rest of the budget (less ``SAVE_RESERVE_S``) at that pace, at most the recipe's steps."""

    def __init__(self, budget_s: float, trained_before_s: float, start_step: int, max_steps: int) -> None:
        self.budget_s = budget_s
        self.trained_before_s = trained_before_s
        self.start_step = start_step
        self.max_steps = max_steps
        self.marks: list[float] = []

    def mark(self, step: int, device: torch.device) -> None:
        """Note the time at the two timing steps."""
        if self.budget_s and step in (self.start_step + TIMING_SKIP, self.start_step + TIMING_STEPS):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            self.marks.append(time.perf_counter())

    def plan(self, step: int, elapsed_s: float) -> tuple[int, float] | None:
        """At the last timing step: the planned total of steps and the measured seconds per step; else ``None``."""
        if not self.budget_s or step != self.start_step + TIMING_STEPS:
            return None
        per_step = (self.marks[1] - self.marks[0]) / (TIMING_STEPS - TIMING_SKIP)
        left = self.budget_s - self.trained_before_s - elapsed_s - SAVE_RESERVE_S
        fits = int(left / max(per_step, 1e-6) * 0.97)
        return max(step + 1, min(self.max_steps, step + fits)), per_step

    def over(self, elapsed_s: float) -> bool:
        """Whether the budget is spent (keeping the save's reserve)."""
        return bool(self.budget_s) and self.trained_before_s + elapsed_s + SAVE_RESERVE_S >= self.budget_s


@dataclass
class LoopState:
    """Where the loop stands (what a checkpoint restores): the next step, the planned total, the loss log, the
    validation log and the seconds trained in earlier sessions."""

    step: int
    planned: int
    losses: list[dict[str, float]] = field(default_factory=list)
    val_history: list[dict[str, float]] = field(default_factory=list)
    trained_before_s: float = 0.0
    stopped_by_budget: bool = False


@dataclass
class StepParts:
    """What one step needs besides the model: the data and its sampler, the auxiliary heads, per-sample facts for
    the extra losses, and the optimiser with its schedule."""

    data: EncodedDataset
    val_data: EncodedDataset | None
    sampler: WeightedStepSampler
    heads: PerceptionHeads | None
    copy_targets: torch.Tensor | None  # (N,) count copy targets, or None without a counting path
    box_task: torch.Tensor  # (N,) bool: answers that are boxes (coordinate loss)
    number_ids: torch.Tensor | None  # ids of "0".."999" for the coordinate loss, None when it is off
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    schedule: WarmupCosine


def restore(model: nn.Module, parts: StepParts, checkpoint: dict[str, Any]) -> LoopState:
    """Load a checkpoint's weights (model and heads), optimiser and schedule; returns the loop state it saved."""
    model.load_state_dict(checkpoint["model"])
    if parts.heads is not None and "aux_heads" in checkpoint:
        parts.heads.load_state_dict(checkpoint["aux_heads"])
    parts.optimizer.load_state_dict(checkpoint["optimizer"])
    parts.scheduler.load_state_dict(checkpoint["scheduler"])
    planned = int(checkpoint["planned_steps"])
    parts.schedule.total = planned
    return LoopState(
        step=int(checkpoint["step"]),
        planned=planned,
        losses=list(checkpoint.get("losses", [])),
        val_history=list(checkpoint.get("val", [])),
        trained_before_s=float(checkpoint.get("train_s", 0.0)),
    )


class TrainingLoop:
    """The main training phase of ``run`` for ``model`` (``train_model`` is it, or its DDP wrapper)."""

    def __init__(
        self,
        run: Recipe,
        model: EarthGPTXForConditionalGeneration,
        train_model: nn.Module,
        parts: StepParts,
        info: DistInfo,
        device: torch.device,
        pad_id: int,
    ) -> None:
        self.run_recipe = run
        self.model = model
        self.train_model = train_model
        self.parts = parts
        self.info = info
        self.device = device
        self.pad_id = pad_id
        self.use_bf16 = device.type == "cuda" and run.train.bf16

    def autocast(self) -> AbstractContextManager[Any]:
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16)

    def _inputs(
        self, step: int, indices: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Step ``step``'s model inputs and auxiliary targets (empty without heads), on the device."""
        parts, train = self.parts, self.run_recipe.train
        inputs = parts.data.batch(indices, self.pad_id)
        targets = parts.data.aux_targets(indices) if parts.heads is not None else None
        targets = targets or {}
        if parts.data.device != self.device:
            inputs = {k: v.to(self.device, non_blocking=True) for k, v in inputs.items()}
            targets = {k: v.to(self.device, non_blocking=True) for k, v in targets.items()}
        centre_maps = targets.get("aux_centre_map")
        counting = self.model.config.count_classes > 0
        if (
            counting
            and centre_maps is not None
            and teacher_forced(train.seed, step, train.count_teacher_forcing)
        ):
            inputs["centre_maps"] = centre_maps
        if parts.copy_targets is not None:
            inputs["count_targets"] = parts.copy_targets[indices.cpu().long()].to(self.device)
        return inputs, targets

    def _aux_loss(self, out: Any, targets: dict[str, torch.Tensor]) -> torch.Tensor | None:
        heads = self.parts.heads
        if heads is None or not targets:
            return None
        assert (
            out.image_tokens is not None and out.prompt_tokens is not None and out.mask_features is not None
        )
        extra = self.model.config.count_tokens  # the counting path's tokens carry no per-cell targets
        image_tokens = out.image_tokens[:, : out.image_tokens.shape[1] - extra]
        prompt_tokens = out.prompt_tokens[:, :, : out.prompt_tokens.shape[2] - extra]
        losses = heads.losses(image_tokens, prompt_tokens, out.mask_features, targets, out.centre_logits)
        return weighted_aux_sum(losses, self.run_recipe.train.aux_head_weights)

    def step(self, step: int) -> dict[str, torch.Tensor | None]:
        """Train one step (``step`` counts from 0); returns its losses (``None`` for a loss the step had not)."""
        run, parts = self.run_recipe, self.parts
        indices = parts.sampler.indices(step)
        inputs, targets = self._inputs(step, indices)
        with self.autocast():
            out = self.train_model(**inputs)
        loss = out.loss
        aux = self._aux_loss(out, targets)
        if aux is not None:
            loss = loss + run.train.aux_weight * aux
        coord = None
        if run.train.coordinate_sigma > 0 and parts.number_ids is not None:
            is_box = parts.box_task[indices.cpu().long()]
            coord = coordinate_loss(
                out.logits, inputs["labels"], is_box, parts.number_ids, run.train.coordinate_sigma
            )
            if coord is not None:
                loss = loss + run.train.coordinate_weight * coord
        if not loss.requires_grad:  # e.g. trainable mask_decoder on a batch without [SEG]: nothing can learn
            raise ValueError(
                f"step {step + 1}: the loss does not depend on any trainable parameter "
                f"(model.trainable={run.model.trainable!r}); give weight only to tasks that train those parts"
            )
        loss.backward()
        self._optimiser_step()
        return {"loss": loss, "lm_loss": out.lm_loss, "mask_loss": out.mask_loss, "coord_loss": coord,
                "aux_loss": aux, "copy_loss": out.copy_loss}  # fmt: skip

    def _optimiser_step(self) -> None:
        heads, info = self.parts.heads, self.info
        if heads is not None and info.enabled:
            # The heads sit outside DistributedDataParallel: average their gradients by hand.
            for parameter in heads.parameters():
                if parameter.grad is not None:
                    dist.all_reduce(parameter.grad)
                    parameter.grad /= info.world_size
        if self.run_recipe.optim.grad_clip > 0:
            clipped = list(self.model.parameters()) + ([] if heads is None else list(heads.parameters()))
            torch.nn.utils.clip_grad_norm_(clipped, self.run_recipe.optim.grad_clip)
        self.parts.optimizer.step()
        self.parts.scheduler.step()
        self.parts.optimizer.zero_grad(set_to_none=True)

    def checkpoint_state(self, state: LoopState, train_s: float) -> dict[str, Any]:
        """Everything ``--resume`` needs to continue bit for bit."""
        heads = self.parts.heads
        return {
            "model": self.model.state_dict(),
            **({"aux_heads": heads.state_dict()} if heads is not None else {}),
            "optimizer": self.parts.optimizer.state_dict(),
            "scheduler": self.parts.scheduler.state_dict(),
            "planned_steps": state.planned,
            "step": state.step,
            "losses": state.losses,
            "val": state.val_history,
            "train_s": train_s,
            "rng": rng_state(),
            "config": self.run_recipe.to_dict(),
        }

    def _agree(self, value: float, op: str) -> float:
        """Rank 0's value (``op`` "broadcast") or the ranks' maximum (``op`` "max") under DDP; the value itself
        otherwise."""
        if not self.info.enabled:
            return value
        tensor = torch.tensor([value], device=self.device)
        if op == "broadcast":
            dist.broadcast(tensor, 0)
        else:
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return float(tensor.item())

    def run(
        self, state: LoopState, budget_s: float, checkpoint_path: Path, stop_at: int | None, progress: bool
    ) -> float:
        """Train from ``state`` until the planned steps are done, the budget is spent, or ``stop_at`` (a session's
        end); ``state`` is updated in place. Returns the seconds trained, earlier sessions included."""
        run, info = self.run_recipe, self.info
        planner = BudgetPlanner(budget_s, state.trained_before_s, state.step, run.train.steps)
        window = LossWindow()
        bar = tqdm(
            total=state.planned, initial=state.step, disable=not (progress and info.is_main), desc="training",
            unit="step", dynamic_ncols=True, mininterval=1.0,
        )  # fmt: skip
        loop_start = time.perf_counter()
        while state.step < state.planned:
            window.add(self.step(state.step))
            state.step += 1
            planner.mark(state.step, self.device)
            elapsed = time.perf_counter() - loop_start
            self._replan(state, planner, elapsed, bar)
            if state.step % run.train.log_every == 0 or state.step == state.planned:
                self._log(state, window, elapsed, bar, progress)
            bar.update(1)
            self._validate_and_checkpoint(state, elapsed, checkpoint_path)
            if self._should_stop(state, planner, elapsed, stop_at):
                break
        bar.close()
        return state.trained_before_s + time.perf_counter() - loop_start

    def _replan(self, state: LoopState, planner: BudgetPlanner, elapsed: float, bar: Any) -> None:
        planned = planner.plan(state.step, elapsed)
        if planned is None:
            return
        total, per_step = planned
        state.planned = self.parts.schedule.total = int(self._agree(total, "broadcast"))
        bar.total = state.planned
        if self.info.is_main:
            logger.info(
                "%.3f s/step: planning %d steps within the %.0f s budget",
                per_step,
                state.planned,
                planner.budget_s,
            )

    def _log(self, state: LoopState, window: LossWindow, elapsed: float, bar: Any, progress: bool) -> None:
        lr = float(self.parts.scheduler.get_last_lr()[0])
        entry = window.entry(state.step, lr, state.trained_before_s + elapsed)
        state.losses.append(entry)
        if not self.info.is_main:
            return
        bar.set_postfix(loss=f"{entry['loss']:.3f}", lr=f"{entry['lr']:.2e}")
        if not progress:
            logger.info(
                "step %d/%d loss %.4f (lm %.4f, mask %.4f, aux %.4f, copy %.4f) lr %.2e, %.0f s",
                state.step, state.planned, entry["loss"], entry["lm_loss"], entry["mask_loss"], entry["aux_loss"],
                entry["copy_loss"], entry["lr"], entry["elapsed_s"],
            )  # fmt: skip

    def _validate_and_checkpoint(self, state: LoopState, elapsed: float, checkpoint_path: Path) -> None:
        train = self.run_recipe.train
        if self.parts.val_data is not None and state.step % train.val_every == 0:
            value = validation_loss(
                self.train_model, self.parts.val_data, train.batch_size, train.val_batches, self.autocast,
                self.pad_id, self.device,
            )  # fmt: skip
            state.val_history.append({"step": state.step, "val_loss": value})
            if self.info.is_main:
                logger.info("step %d: validation loss %.4f", state.step, value)
        if self.info.is_main and train.checkpoint_every and state.step % train.checkpoint_every == 0:
            save_checkpoint(checkpoint_path, self.checkpoint_state(state, state.trained_before_s + elapsed))

    def _should_stop(
        self, state: LoopState, planner: BudgetPlanner, elapsed: float, stop_at: int | None
    ) -> bool:
        over = self._agree(1.0 if planner.over(elapsed) else 0.0, "max") > 0
        if over and state.step < state.planned:
            state.stopped_by_budget = True
            if self.info.is_main:
                logger.info(
                    "time budget of %.0f s reached at step %d of %d; stopping",
                    planner.budget_s, state.step, state.planned,
                )  # fmt: skip
            return True
        if stop_at is not None and state.step >= stop_at and state.step < state.planned:
            if self.info.is_main:
                logger.info(
                    "stopping this session at step %d of %d (resume to continue)", state.step, state.planned
                )
            return True
        return False
