"""One-stage fusion training of EarthGPT-X: every modality and every task mixed in one single phase.

Command line (``make train`` runs the stages in order, ``configs/tiny-stage1.yaml`` first)::

    python -m earthgptx.training.train --config configs/tiny-stage1.yaml
    python -m earthgptx.training.train --config configs/tiny.yaml --steps 200 --out runs/try --resume
    python -m earthgptx.training.train --config configs/tiny.yaml --print-config   # the effective recipe
    torchrun --nproc-per-node 4 -m earthgptx.training.train --config configs/tiny.yaml   # DDP on GPUs

``train`` is a short sequence of named steps:

1. ``prepare_run`` (:mod:`earthgptx.training.prepare`): the data (generated or reused), the tokenizer and
   processor, the records encoded once into tensors, the model (fresh, or continued from ``model.init_from`` with
   the stage's surgery);
2. ``run_pre_phases``: the optional phases that train one part alone first (``vision_pretrain``, ``centre_warmup``;
   :mod:`earthgptx.training.pretrain`);
3. ``build_main_phase``: which parameters train, the auxiliary heads, the optimiser and schedule, the sampler, a
   checkpoint to resume from; then ``TrainingLoop.run`` (:mod:`earthgptx.training.loop`) trains, with a budget
   planner when the run has a time budget;
4. ``save_and_calibrate``: the model folder (+ processor files and ``training_log.json``), with a counting path's
   peak threshold and window chosen on the training seed's ``val`` chips.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from earthgptx.data.vocabulary import OBJECT_CLASSES
from earthgptx.model import EarthGPTXForConditionalGeneration
from earthgptx.model.surgery_earthgptx import count_copy_targets
from earthgptx.training.auxiliary import PerceptionHeads
from earthgptx.training.calibrate_counts import calibrate as calibrate_counts
from earthgptx.training.calibrate_counts import write_calibration
from earthgptx.training.checkpoints import (
    CHECKPOINT_NAME,
    load_checkpoint,
    save_checkpoint,
    save_model,
    set_rng_state,
)
from earthgptx.training.datasets import WeightedStepSampler, answer_balance_factors, cpu_workers
from earthgptx.training.devices import (
    DistInfo,
    hardware_summary,
    pick_device,
    seed_everything,
    setup_distributed,
)
from earthgptx.training.loop import LoopState, StepParts, TrainingLoop, restore
from earthgptx.training.optimisation import WarmupCosine, count_parameters, make_optimizer
from earthgptx.training.prepare import PreparedRun, apply_trainable, prepare_run
from earthgptx.training.pretrain import load_or_pretrain, stored_result, warm_up_centre_head
from earthgptx.training.recipe import Recipe, load_recipe, recipe_from_dict

logger = logging.getLogger(__name__)

COUNT_CALIBRATION_CHIPS = 400  # val chips on which a counting path's peak threshold and window are chosen
TRAINING_LOG_NAME = "training_log.json"


@dataclass
class TrainResult:
    output_dir: Path
    steps: int
    losses: list[dict[str, float]] = field(default_factory=list)
    log: dict[str, Any] = field(default_factory=dict)


@dataclass
class MainPhase:
    """The main training phase, built: the loop, where it starts, the LoRA tuner (``None`` unless LoRA), the task
    shares of the sampler and the parameter counts."""

    loop: TrainingLoop
    state: LoopState
    tuner: Any
    shares: dict[str, float]
    parameters: tuple[int, int]


def train(
    run: Recipe,
    resume: bool = False,
    progress: bool = True,
    deadline: float | None = None,
    stop_at: int | None = None,
) -> TrainResult:
    """Run the recipe; returns where the model went and the loss history (rank 0's view).

    ``deadline`` (a ``time.time()`` value) caps the training loop like ``train.time_budget_s`` does, for callers
    whose budget also covers data generation and encoding. ``stop_at`` ends this session after that step (with
    a checkpoint) without changing the schedule, so a long run can be split into sessions with ``resume``.
    """
    started = time.perf_counter()
    info = setup_distributed()
    device = pick_device(run.train.device, info)
    if run.train.threads > 0:
        torch.set_num_threads(run.train.threads)
    seed_everything(run.train.seed)
    prepared = prepare_run(run, info, device, cpu_workers(run.data.workers), progress)
    checkpoint_path = Path(run.train.checkpoint_dir) / CHECKPOINT_NAME
    resuming = resume and checkpoint_path.exists()
    phases = run_pre_phases(run, prepared, info, device, resuming, progress)
    main = build_main_phase(run, prepared, info, device, checkpoint_path if resuming else None)
    if resume and not resuming:
        logger.info("no checkpoint at %s; starting from scratch", checkpoint_path)
    budget = time_budget(run, main.state, deadline, info)
    train_s = main.loop.run(main.state, budget, checkpoint_path, stop_at, progress)
    prepared.timings["train_s"] = train_s
    log: dict[str, Any] = {}
    if info.is_main:
        log = save_and_calibrate(run, prepared, main, phases, train_s, started, info, device)
    if info.enabled:
        dist.barrier()
        dist.destroy_process_group()
    return TrainResult(Path(run.train.output_dir), main.state.step, main.state.losses, log)


# ------------------------------------------------------------------------------------------- pre-phases
def run_pre_phases(
    run: Recipe, prepared: PreparedRun, info: DistInfo, device: torch.device, resuming: bool, progress: bool
) -> dict[str, dict[str, Any] | None]:
    """The optional phases before the main training, each followed by a fresh seed (the main phase starts from the
    same RNG state either way); a resumed run skips them. Returns what each measured (``None``: it did not run)."""
    return {
        "vision_pretrain": vision_pretrain_phase(run, prepared, info, device, resuming, progress),
        "centre_warmup": centre_warmup_phase(run, prepared, info, device, resuming, progress),
    }


def vision_pretrain_phase(
    run: Recipe, prepared: PreparedRun, info: DistInfo, device: torch.device, resuming: bool, progress: bool
) -> dict[str, Any] | None:
    """Dense pre-training of a fresh model's vision tower (``vision_pretrain``), cached in the checkpoint folder."""
    settings, state_dir = run.vision_pretrain, Path(run.train.checkpoint_dir)
    if settings.steps <= 0:
        return None
    if prepared.init_from is not None or resuming:
        # a resumed run reports what the first session measured
        return stored_result(state_dir) if info.is_main else None
    if prepared.train_data.aux is None:
        raise ValueError("vision_pretrain.steps needs the synthetic dataset's auxiliary targets")
    t0 = time.perf_counter()
    result = None
    if info.is_main:  # DistributedDataParallel hands rank 0's weights to the other ranks
        tower = prepared.model.vision_tower.to(device)
        pretrained, _ = load_or_pretrain(
            tower, prepared.train_data, state_dir, settings.steps, settings.batch_size, settings.lr,
            run.optim.weight_decay, run.train.seed, progress,
        )  # fmt: skip
        result = dict(vars(pretrained))
    if info.enabled:
        dist.barrier()
    prepared.timings["vision_pretrain_s"] = time.perf_counter() - t0
    seed_everything(run.train.seed)
    return result


def centre_warmup_phase(
    run: Recipe, prepared: PreparedRun, info: DistInfo, device: torch.device, resuming: bool, progress: bool
) -> dict[str, Any] | None:
    """The counting path's centre head trained alone (``centre_warmup``)."""
    settings = run.centre_warmup
    if settings.steps <= 0 or resuming:
        return None
    if prepared.train_data.aux is None:
        raise ValueError("centre_warmup.steps needs the synthetic dataset's auxiliary targets")
    t0 = time.perf_counter()
    result = None
    if info.is_main:  # DistributedDataParallel hands rank 0's weights to the other ranks
        model = prepared.model.to(device)  # type: ignore[arg-type]
        warmed = warm_up_centre_head(
            model,
            prepared.train_data,
            settings.steps,
            settings.batch_size,
            settings.lr,
            run.train.seed,
            progress,
        )
        result = dict(vars(warmed))
        logger.info(
            "centre head warm-up: %d steps in %.0f s, focal loss %.4f, exact counts %.3f",
            warmed.steps, warmed.seconds, warmed.loss, warmed.count_accuracy,
        )  # fmt: skip
    if info.enabled:
        dist.barrier()
    prepared.timings["centre_warmup_s"] = time.perf_counter() - t0
    seed_everything(run.train.seed)
    return result


# ------------------------------------------------------------------------------------------- main phase
def build_main_phase(
    run: Recipe, prepared: PreparedRun, info: DistInfo, device: torch.device, checkpoint: Path | None
) -> MainPhase:
    """Which parameters train, the auxiliary heads, optimiser, schedule and sampler, and the loop that uses them;
    restored from ``checkpoint`` when given."""
    model, data, model_config = prepared.model, prepared.train_data, prepared.model_config
    box_task = torch.tensor([task == "grounding" for task in data.tasks], dtype=torch.bool)
    tuner = apply_trainable(model, run.model)
    parameters = count_parameters(model)
    model.to(device)  # type: ignore[arg-type]
    model.train()
    heads = build_heads(run, prepared, device, info)
    counting = model_config.count_classes > 0
    copy_targets = (
        count_copy_targets(data.records, OBJECT_CLASSES[: model_config.count_classes]) if counting else None
    )
    optimizer = make_optimizer(model if heads is None else nn.ModuleList([model, heads]), run.optim)
    schedule = WarmupCosine(run.optim.warmup_steps, run.train.steps, run.optim.min_lr_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    sampler = build_sampler(run, prepared, info)
    parts = StepParts(
        data, prepared.val_data, sampler, heads, copy_targets, box_task, prepared.number_ids, optimizer, scheduler,
        schedule,
    )  # fmt: skip
    state = LoopState(step=0, planned=run.train.steps)
    if checkpoint is not None:
        saved = load_checkpoint(checkpoint)
        state = restore(model, parts, saved)
        set_rng_state(saved["rng"])
        logger.info("resumed from %s at step %d of %d", checkpoint, state.step, state.planned)
    train_model: nn.Module = model
    if info.enabled:
        train_model = DistributedDataParallel(
            model, device_ids=[info.local_rank] if device.type == "cuda" else None
        )
    pad_id = int(prepared.processor.tokenizer.pad_token_id or 0)
    loop = TrainingLoop(run, model, train_model, parts, info, device, pad_id)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    shares = sampler.task_shares(data.tasks)
    check_shares(run, shares)
    if info.is_main:
        logger.info(
            "training %d records (%s) on %s: %.2f M parameters (%.2f M trainable), batch %d x %d, %s steps",
            len(data), ", ".join(f"{t} {s:.0%}" for t, s in shares.items()), device, parameters[0] / 1e6,
            parameters[1] / 1e6, run.train.batch_size, info.world_size,
            f"~{state.planned}" if run.train.time_budget_s else state.planned,
        )  # fmt: skip
    return MainPhase(loop, state, tuner, shares, parameters)


def build_heads(
    run: Recipe, prepared: PreparedRun, device: torch.device, info: DistInfo
) -> PerceptionHeads | None:
    """The auxiliary perception heads, when the data has auxiliary targets (training-only; not saved)."""
    config = prepared.model_config
    heads = None
    if prepared.train_data.aux is not None:
        heads = PerceptionHeads(config.text_config.hidden_size, config.mask_decoder_hidden_size)
        heads.to(device)
        heads.train()
        if info.is_main:
            logger.info("auxiliary perception losses on (weight %g)", run.train.aux_weight)
    if config.count_classes > 0 and (heads is None or run.train.aux_weight <= 0) and info.is_main:
        logger.warning(
            "the model has a counting path but no auxiliary targets (train.aux_weight > 0 on the synthetic dataset): "
            "its centre head gets no training"
        )
    return heads


def build_sampler(run: Recipe, prepared: PreparedRun, info: DistInfo) -> WeightedStepSampler:
    data, train = prepared.train_data, run.train
    factors = answer_balance_factors(data.records, train.answer_balance) if train.answer_balance else None
    return WeightedStepSampler(
        data.tasks,
        train.task_weights,
        train.batch_size,
        train.seed,
        info.rank,
        info.world_size,
        factors=factors,
    )


def check_shares(run: Recipe, shares: dict[str, float]) -> None:
    """A mask-decoder-only stage must sample only pixel grounding (no other task reaches the decoder)."""
    if run.model.trainable != "mask_decoder":
        return
    others = sorted(task for task, share in shares.items() if share > 0 and task != "pixel_grounding")
    if others:
        raise ValueError(
            "model.trainable 'mask_decoder' trains only from [SEG] answers: give the tasks "
            f"{others} weight 0 in train.task_weights (only pixel_grounding has masks)"
        )


def time_budget(run: Recipe, state: LoopState, deadline: float | None, info: DistInfo) -> float:
    """Seconds of training the run may take, earlier sessions included (0: no limit): the recipe's budget, or less
    when a deadline comes first."""
    budget = float(run.train.time_budget_s)
    if deadline is None:
        return budget
    remaining = deadline - time.time() + state.trained_before_s
    if info.is_main:
        logger.info(
            "training until the deadline: %.0f s of training left", remaining - state.trained_before_s
        )
    return min(budget, remaining) if budget else remaining


# ------------------------------------------------------------------------------------------- save
def save_and_calibrate(
    run: Recipe,
    prepared: PreparedRun,
    main: MainPhase,
    phases: dict[str, dict[str, Any] | None],
    train_s: float,
    started: float,
    info: DistInfo,
    device: torch.device,
) -> dict[str, Any]:
    """Rank 0: the last checkpoint, the model folder (LoRA merged, float32 config, ``save_dtype`` weights), a
    counting path's calibration and ``training_log.json``. Returns the log."""
    state, out_dir = main.state, Path(run.train.output_dir)
    if run.train.checkpoint_every:
        save_checkpoint(
            Path(run.train.checkpoint_dir) / CHECKPOINT_NAME, main.loop.checkpoint_state(state, train_s)
        )
    model = prepared.model
    if main.tuner is not None:
        model.language_model = main.tuner.merge_and_unload()
    model.to("cpu").float()  # type: ignore[arg-type]
    save_model(model, prepared.processor, out_dir, run.model.save_dtype)
    calibration = calibrate(prepared, model, out_dir)
    prepared.timings["total_s"] = time.perf_counter() - started
    log = training_log(run, prepared, main, phases, calibration, info, device)
    (out_dir / TRAINING_LOG_NAME).write_text(json.dumps(log, indent=2) + "\n", encoding="utf-8")
    logger.info(
        "saved the model to %s after %d steps (training %.0f s, total %.0f s)", out_dir, state.step, train_s,
        prepared.timings["total_s"],
    )  # fmt: skip
    return log


def calibrate(
    prepared: PreparedRun, model: EarthGPTXForConditionalGeneration, out_dir: Path
) -> dict[str, Any] | None:
    """A counting path's peak threshold and window, chosen on the training seed's val chips and written into the
    saved config; ``None`` without the path (or without the synthetic data's targets)."""
    if prepared.model_config.count_classes <= 0 or prepared.aux_spec is None or not prepared.val_records:
        return None
    t0 = time.perf_counter()
    try:
        calibration = calibrate_counts(
            model, prepared.processor, prepared.val_records, prepared.records_path.parent, prepared.aux_spec.seed,
            COUNT_CALIBRATION_CHIPS, prepared.aux_spec.options,
        )  # fmt: skip
    except ValueError as exc:  # no synthetic val chips: the saved config keeps the threshold it started from
        logger.warning(
            "count calibration skipped (%s); the model keeps its configured threshold and window", exc
        )
        return None
    write_calibration(out_dir, calibration)
    best: dict[str, Any] = calibration["best"]
    prepared.timings["count_calibration_s"] = time.perf_counter() - t0
    logger.info(
        "counting path: threshold %.2f, window %d (exact counts on %d val chips: %.3f present, %.3f absent)",
        best["threshold"], best["window"], calibration["chips"], best["present_exact"], best["absent_exact"],
    )  # fmt: skip
    return best


def training_log(
    run: Recipe,
    prepared: PreparedRun,
    main: MainPhase,
    phases: dict[str, dict[str, Any] | None],
    calibration: dict[str, Any] | None,
    info: DistInfo,
    device: torch.device,
) -> dict[str, Any]:
    """What ``training_log.json`` records: hardware, timings, steps, losses, validation, the phases, the recipe."""
    state = main.state
    return {
        "name": run.name,
        "hardware": hardware_summary(device),
        "world_size": info.world_size,
        "timings_s": {k: round(v, 1) for k, v in prepared.timings.items()},
        "steps": state.step,
        "planned_steps": state.planned,
        "stopped_by_time_budget": state.stopped_by_budget,
        "samples_seen": state.step * run.train.batch_size * info.world_size,
        "train_records": len(prepared.train_data),
        "task_shares": {k: round(v, 4) for k, v in main.shares.items()},
        "parameters": main.parameters[0],
        "trainable_parameters": main.parameters[1],
        "first_loss": state.losses[0]["loss"] if state.losses else None,
        "final_loss": state.losses[-1]["loss"] if state.losses else None,
        "losses": state.losses,
        "validation": state.val_history,
        "vision_pretrain": phases["vision_pretrain"],
        "centre_warmup": phases["centre_warmup"],
        "count_calibration": calibration,
        "config": run.to_dict(),
    }


# ------------------------------------------------------------------------------------------- CLI
def apply_overrides(run: Recipe, args: argparse.Namespace) -> Recipe:
    """Command-line values win over the YAML file."""
    pairs = {
        ("train", "steps"): args.steps,
        ("train", "batch_size"): args.batch_size,
        ("train", "device"): args.device,
        ("train", "output_dir"): args.out,
        ("train", "checkpoint_dir"): args.checkpoint_dir,
        ("train", "time_budget_s"): args.time_budget_s,
        ("train", "threads"): args.threads,
        ("train", "seed"): args.seed,
        ("optim", "lr"): args.lr,
        ("optim", "warmup_steps"): args.warmup_steps,
        ("data", "n_scenes"): args.n_scenes,
        ("data", "train_seed"): args.train_seed,
        ("data", "workers"): args.workers,
        ("data", "train_dir"): args.train_dir,
        ("model", "init_from"): args.init_from,
    }
    for (section, key), value in pairs.items():
        if value is not None:
            setattr(getattr(run, section), key, value)
    # Built again, so the file's checks (held-out seed kept apart, steps >= 1, ...) apply to the flags too.
    return recipe_from_dict(asdict(run))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m earthgptx.training.train", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--config", required=True, type=Path, help="the recipe (YAML under configs/)")
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the effective recipe (base and flags applied) and exit",
    )
    parser.add_argument("--steps", type=int, help="training steps (the most, under a time budget)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--warmup-steps", type=int)
    parser.add_argument("--device", help="auto | cpu | cuda")
    parser.add_argument("--out", help="output directory of the final model")
    parser.add_argument("--init-from", help="a saved model folder to start from (model.init_from)")
    parser.add_argument("--checkpoint-dir", help="where last.pt goes")
    parser.add_argument("--resume", action="store_true", help="continue from <checkpoint-dir>/last.pt")
    parser.add_argument(
        "--time-budget-s", type=float, help="stop and save after this many seconds of training"
    )
    parser.add_argument(
        "--deadline", type=float, help="stop and save by this Unix time (covers data preparation too)"
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--n-scenes", type=int, help="training scenes to generate")
    parser.add_argument("--train-dir", help="folder of the generated training data")
    parser.add_argument(
        "--train-seed", type=int, help="seed of the generated training scenes (data.train_seed; fresh scenes)"
    )
    parser.add_argument(
        "--workers", type=int, help="processes for data generation and encoding (0: all cores)"
    )
    parser.add_argument("--stop-at", type=int, help="end this session after this step (resume later)")
    parser.add_argument("--no-progress", action="store_true", help="log lines instead of progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    run = apply_overrides(load_recipe(args.config), args)
    if args.print_config:
        sys.stdout.write(run.to_yaml())
        return 0
    train(
        run, resume=args.resume, progress=not args.no_progress, deadline=args.deadline, stop_at=args.stop_at
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
