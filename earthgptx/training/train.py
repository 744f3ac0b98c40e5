"""One-stage fusion training of EarthGPT-X: every modality and every task mixed in one single stage.

Command line (``make train`` runs the first)::

    python -m earthgptx.training.train --config configs/tiny.yaml
    python -m earthgptx.training.train --config configs/tiny.yaml --steps 200 --out runs/try --resume
    torchrun --nproc-per-node 4 -m earthgptx.training.train --config configs/tiny.yaml   # DDP on GPUs

The run generates (or reuses) the training data, builds the tokenizer from the training records, pre-encodes the
records once (in parallel) into tensors on the training device, and trains with AdamW under a linear warm-up +
cosine schedule, sampling tasks with configurable weights. Checkpoints (model, optimiser, schedule, step, RNG
states) are written every ``checkpoint_every`` steps and ``--resume`` continues from the last one. With a time
budget the schedule spans the steps that fit (estimated from a timing warm-up) and the run stops cleanly when
the budget is spent. The final model (+ processor files and ``training_log.json``) goes to ``output_dir``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from earthgptx.data import load_records
from earthgptx.data.vocabulary import OBJECT_CLASSES, PLURALS
from earthgptx.model import EarthGPTXConfig, EarthGPTXForConditionalGeneration, EarthGPTXProcessor
from earthgptx.model.modeling_earthgptx import count_source_key, sincos_1d
from earthgptx.model.tokenization_earthgptx import NUMBER_RANGE, region_indices
from earthgptx.training.auxiliary import PerceptionHeads
from earthgptx.training.calibrate_counts import calibrate as calibrate_counts
from earthgptx.training.calibrate_counts import write_calibration
from earthgptx.training.config import ModelSettings, RunConfig, load_run_config, run_config_from_dict
from earthgptx.training.datasets import (
    AuxSpec,
    EncodedDataset,
    WeightedStepSampler,
    answer_balance_factors,
    build_run_tokenizer,
    cpu_workers,
    encode_dataset,
    ensure_dataset,
)
from earthgptx.training.evaluate import PARTIAL_REPORT_JSON, PARTIAL_REPORT_MD, REPORT_JSON, REPORT_MD
from earthgptx.training.pretrain import load_or_pretrain, stored_result, warm_up_centre_head

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "last.pt"
COUNT_CALIBRATION_CHIPS = 400  # val chips on which a counting path's peak threshold and window are chosen
TRAINING_LOG_NAME = "training_log.json"
# Steps timed before planning the schedule under a time budget (the first few are discarded as warm-up).
_TIMING_STEPS, _TIMING_SKIP = 40, 10
# Seconds kept back from a time budget for the final save.
_SAVE_RESERVE_S = 5.0


# ------------------------------------------------------------------------------------------- setup
@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup_distributed() -> DistInfo:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1), else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend=backend)
    info = DistInfo(rank=dist.get_rank(), local_rank=int(os.environ.get("LOCAL_RANK", "0")), world_size=world)
    if torch.cuda.is_available():
        torch.cuda.set_device(info.local_rank)
    return info


def pick_device(requested: str, info: DistInfo) -> torch.device:
    """``auto`` → this rank's GPU when CUDA is available, else the CPU."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but CUDA is not available")
        return torch.device("cuda", info.local_rank)
    return torch.device(requested)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware_summary(device: torch.device) -> dict[str, Any]:
    """What the run ran on (for ``training_log.json`` and the docs)."""
    info: dict[str, Any] = {
        "device": str(device),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            gpu=props.name, gpu_memory_gb=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda
        )
    return info


# ------------------------------------------------------------------------------------------- model
def fits_on_device(data: EncodedDataset, device: torch.device) -> bool:
    """Whether the encoded data can live on ``device`` (a GPU keeps most of its memory for the model)."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return data.nbytes() < 0.4 * free


def build_model_config(settings: ModelSettings, tokenizer: Any) -> EarthGPTXConfig:
    preset = EarthGPTXConfig.tiny if settings.preset == "tiny" else EarthGPTXConfig.paper
    config = preset(tokenizer=tokenizer, **settings.overrides)
    if config.count_classes > 0 and not config.count_number_ids:
        config.count_number_ids = count_number_ids(tokenizer, config.count_max)
    return config


def apply_init_overrides(config: EarthGPTXConfig, overrides: dict[str, Any]) -> None:
    """Apply ``model.overrides`` to the config of an ``init_from`` folder: top-level fields only. Sub-config
    overrides are ignored with a warning, since the folder's weights fix those shapes; unknown fields are refused."""
    for key, value in overrides.items():
        if key in EarthGPTXConfig.sub_configs_defaults:
            logger.warning("model.overrides[%r] is ignored: model.init_from's config decides it", key)
            continue
        if not hasattr(config, key):
            raise ValueError(
                f"model.overrides[{key!r}] is not a top-level field of the saved config, so it cannot be applied "
                "with model.init_from"
            )
        setattr(config, key, value)
    EarthGPTXConfig.from_dict(config.to_dict())  # run the config's checks again on the changed fields


def apply_trainable(model: EarthGPTXForConditionalGeneration, settings: ModelSettings) -> Any:
    """Set which parameters train. Returns the peft LoRA tuner (or ``None`` when everything trains).

    ``frozen_encoders_lora`` freezes the pretrained ConvNeXt/DINOv2 encoders and the language model, injects
    LoRA adapters (peft) into the LM's ``target_modules``, and keeps the new parts trainable: band adapter,
    prompt encoder, fusion, projector, mask decoder, token embeddings and LM head (new tokens live there).
    ``mask_decoder`` freezes everything else: the text the model generates cannot change, only its masks.
    """
    if settings.trainable in ("all", "mask_decoder"):
        for parameter in model.parameters():
            parameter.requires_grad_(settings.trainable == "all")
        for parameter in model.mask_decoder.parameters():
            parameter.requires_grad_(True)
        return None
    from peft import LoraConfig, LoraModel

    lora = settings.lora
    config = LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(lora.target_modules)
    )
    # LoraModel injects the adapters into the LM in place; merge_and_unload() gives the plain LM back for saving.
    tuner = LoraModel(model.language_model, config, "default")
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for name, parameter in model.named_parameters():
        if "lora_" in name:
            parameter.requires_grad_(True)
    trainable_parts: list[nn.Module] = [
        model.vision_tower.band_adapter,
        model.prompt_encoder,
        model.fusion,
        model.multi_modal_projector,
        model.mask_decoder,
        model.get_input_embeddings(),
        model.get_output_embeddings(),
    ]
    for part in trainable_parts:
        for parameter in part.parameters():
            parameter.requires_grad_(True)
    return tuner


def number_token_ids(tokenizer: Any) -> torch.Tensor | None:
    """Ids of the tokens ``"0"`` … ``"999"`` in value order, or ``None`` when the tokenizer lacks some."""
    ids = [tokenizer.convert_tokens_to_ids(str(n)) for n in range(NUMBER_RANGE)]
    unk = tokenizer.unk_token_id
    if any(i is None or i == unk for i in ids):
        return None
    return torch.tensor(ids, dtype=torch.long)


@torch.no_grad()
def init_ordinal_numbers(model: EarthGPTXForConditionalGeneration, number_ids: torch.Tensor) -> None:
    """Give the number tokens' embeddings and LM-head rows sine/cosine features of their value.

    The scale matches the random rows around them (norm ``initializer_range * sqrt(hidden)``); only the
    initialisation changes, everything stays trainable.
    """
    values = torch.arange(len(number_ids), dtype=torch.float32)
    matrices: list[torch.Tensor] = [model.get_input_embeddings().weight, model.get_output_embeddings().weight]  # type: ignore[list-item]
    for matrix in matrices:
        hidden = int(matrix.shape[1])
        features = sincos_1d(values, hidden, max_period=4.0 * len(number_ids))
        scale = model.config.text_config.initializer_range * math.sqrt(2.0)
        matrix[number_ids.to(matrix.device)] = (features * scale).to(matrix.dtype).to(matrix.device)


@torch.no_grad()
def reinit_parts(model: EarthGPTXForConditionalGeneration, names: Sequence[str]) -> None:
    """Start the named modules (``model.reinit_parts``) and everything inside them again from the model's own
    initialisation."""
    modules = dict(model.named_modules())
    missing = [name for name in names if name not in modules]
    if missing:
        raise ValueError(f"model.reinit_parts names no module of this model: {missing}")
    for name in names:
        for part in modules[name].modules():
            # from_pretrained marks loaded tensors as initialised, and the init functions then leave them be
            for tensor in [*part.parameters(recurse=False), *part.buffers(recurse=False)]:
                tensor._is_hf_initialized = False  # type: ignore[attr-defined]
            model._init_weights(part)
        logger.info("re-initialised %s", name)


def count_name_token_ids(tokenizer: Any, classes: int) -> list[int]:
    """The token id standing for each counted class (``OBJECT_CLASSES`` order): the last word of its plural, the
    word a counting question ends the class name with ("storage tanks" → "tanks")."""
    if classes > len(OBJECT_CLASSES):
        raise ValueError(
            f"count_classes is {classes}, but the dataset has {len(OBJECT_CLASSES)} object classes"
        )
    ids = [tokenizer.convert_tokens_to_ids(PLURALS[c].split()[-1]) for c in OBJECT_CLASSES[:classes]]
    missing = [c for c, i in zip(OBJECT_CLASSES, ids, strict=False) if i in (None, tokenizer.unk_token_id)]
    if missing:
        raise ValueError(f"the tokenizer has no word for the plural of {missing}")
    return ids


def saved_count_tokens(folder: Path | None) -> bool:
    """Whether a saved model folder holds trained count-token tables (a counting stage continued)."""
    if folder is None:
        return False
    with safe_open(str(folder / "model.safetensors"), framework="pt") as saved:
        return any(".count_numbers." in f".{key}" for key in saved.keys())  # noqa: SIM118 (not a dict)


def count_number_ids(tokenizer: Any, count_max: int) -> list[int]:
    """The token ids of the numbers ``"0"`` … ``count_max`` (what the count copy writes)."""
    numbers = [tokenizer.convert_tokens_to_ids(str(n)) for n in range(count_max + 1)]
    if any(i in (None, tokenizer.unk_token_id) for i in numbers):
        raise ValueError(f"the tokenizer lacks a number token in 0..{count_max}")
    return numbers


@torch.no_grad()
def init_count_tokens(model: EarthGPTXForConditionalGeneration, tokenizer: Any) -> None:
    """Start the counting path's name and number tables from the text embeddings of the class names and of the
    numbers ``"0"`` … ``count_max``: the count tokens then read, to the language model, as words it knows."""
    projector = model.multi_modal_projector
    embeddings: torch.Tensor = model.get_input_embeddings().weight  # type: ignore[assignment]
    numbers = count_number_ids(tokenizer, model.config.count_max)
    names = count_name_token_ids(tokenizer, model.config.count_classes)
    projector.count_numbers.weight.copy_(embeddings[torch.tensor(numbers, device=embeddings.device)])
    projector.count_names.weight.copy_(embeddings[torch.tensor(names, device=embeddings.device)])


def count_copy_targets(records: Sequence[dict[str, Any]], classes: int) -> torch.Tensor:
    """``(N,)`` the count copy's targets for ``records`` (``forward``'s ``count_targets``): for a counting question,
    the key of the count token that answers it (its class, over the whole image or inside the region the question
    names); -1 for every other record, and for a question about a class the counting path does not count (its gate
    learns to stay shut there)."""
    targets = torch.full((len(records),), -1, dtype=torch.long)
    counted = OBJECT_CLASSES[:classes]
    for i, record in enumerate(records):
        answer = record.get("answer")
        if (
            record.get("task") != "counting"
            or not isinstance(answer, dict)
            or answer.get("class") not in counted
        ):
            continue
        question = " ".join(str(turn["value"]) for turn in record["conversations"] if turn["from"] == "human")
        mentions = region_indices(question)
        region = mentions[0] - 1 if mentions else None
        targets[i] = count_source_key(counted.index(str(answer["class"])), region, classes)
    return targets


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


def auxiliary_spec(run: RunConfig, records_path: Path, config: EarthGPTXConfig) -> AuxSpec | None:
    """Where the auxiliary targets come from, or ``None`` when they are off or cannot be built (a dataset that
    is not the synthetic generator's, or a multi-view vision tower)."""
    if run.train.aux_weight <= 0:
        return None
    meta_path = records_path.parent / "dataset.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.exists() else {}
    vision = config.vision_config
    if "seed" not in meta or vision.num_views != 1:
        logger.warning(
            "auxiliary losses are off: they need the synthetic dataset and a single-view vision tower"
        )
        return None
    return AuxSpec(
        seed=int(meta["seed"]),
        chip_size=int(meta.get("chip_size", config.image_size)),
        grid=vision.grid_size // config.projector_downsample,
        pixel_side=config.image_size // 2,
    )


def teacher_forced(seed: int, step: int, share: float) -> bool:
    """Whether step ``step`` hands the language model the true counts (a draw that depends only on the seed and the
    step, so a resumed run makes the same choices)."""
    if share >= 1.0:
        return True
    return share > 0.0 and random.Random(seed * 1_000_003 + step).random() < share


def count_parameters(model: nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


COUNT_MAP_PARTS = (".count_numbers.", ".count_names.", ".count_copy.")


def make_optimizer(model: nn.Module, run: RunConfig) -> torch.optim.AdamW:
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
        {"params": decay, "weight_decay": run.optim.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if count_maps:
        groups.append(
            {"params": count_maps, "weight_decay": 0.0, "lr": run.optim.lr * run.optim.count_path_lr_scale}
        )
    return torch.optim.AdamW(groups, lr=run.optim.lr, betas=run.optim.betas, fused=False)


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


# ------------------------------------------------------------------------------------------- checkpoints
def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
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


# ------------------------------------------------------------------------------------------- training
@dataclass
class TrainResult:
    output_dir: Path
    steps: int
    losses: list[dict[str, float]] = field(default_factory=list)
    log: dict[str, Any] = field(default_factory=dict)


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
    autocast: Any,
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


def train(
    run: RunConfig,
    resume: bool = False,
    progress: bool = True,
    deadline: float | None = None,
    stop_at: int | None = None,
) -> TrainResult:
    """Run the whole recipe; returns where the model went and the loss history (rank 0's view).

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
    workers = cpu_workers(run.data.workers)
    timings: dict[str, float] = {}

    # ---- data (rank 0 generates, the others reuse what it wrote)
    t0 = time.perf_counter()
    if info.is_main:
        records_path = ensure_dataset(
            run.data.train_dir, run.data.n_scenes, run.data.train_seed, run.data.chip_size,
            run.data.records_per_task, workers, progress,
        )  # fmt: skip
    if info.enabled:
        dist.barrier()
    if not info.is_main:
        records_path = ensure_dataset(
            run.data.train_dir, run.data.n_scenes, run.data.train_seed, run.data.chip_size,
            run.data.records_per_task, workers, False,
        )  # fmt: skip
    timings["data_s"] = time.perf_counter() - t0
    records = load_records(records_path)
    train_records = [r for r in records if r.get("split") == "train"]
    val_records = [r for r in records if r.get("split") == "val"]
    init_from = Path(run.model.init_from).expanduser() if run.model.init_from else None
    if init_from is not None:
        processor = EarthGPTXProcessor.from_pretrained(init_from)
        tokenizer = processor.tokenizer
        model_config = EarthGPTXConfig.from_pretrained(str(init_from))
        apply_init_overrides(model_config, run.model.overrides)
        if (
            processor.prompt_coordinates != model_config.prompt_coordinates
            or processor.num_image_tokens != model_config.num_image_tokens
            or processor.tokens_per_prompt != model_config.tokens_per_prompt
        ):
            processor = EarthGPTXProcessor(
                tokenizer,
                model_config,
                point_radius=processor.point_radius,
                line_width=processor.line_width,
            )  # an override turned the prompts' centroids in the text on or off, or added count tokens
    else:
        tokenizer = build_run_tokenizer(train_records)
        model_config = build_model_config(run.model, tokenizer)
        processor = EarthGPTXProcessor(tokenizer, model_config)
    pad_id = int(tokenizer.pad_token_id or 0)

    t0 = time.perf_counter()
    aux_spec = auxiliary_spec(run, records_path, model_config)
    train_data = encode_dataset(
        train_records, records_path.parent, processor, workers, progress and info.is_main, aux_spec
    )
    val_data = None
    if run.train.val_every > 0 and val_records:
        val_take = val_records[: run.train.val_batches * run.train.batch_size]
        val_data = encode_dataset(val_take, records_path.parent, processor, workers, False)
    if fits_on_device(train_data, device):
        train_data = train_data.to(device)
        val_data = val_data.to(device) if val_data is not None else None
    elif info.is_main:
        logger.info("the encoded data (%.1f GB) stays in host memory", train_data.nbytes() / 1e9)
    timings["encode_s"] = time.perf_counter() - t0

    # ---- model, optimiser, schedule
    if model_config.count_classes > 0 and not model_config.count_number_ids:
        # build_model_config sets them for a fresh model; an init_from folder may gain the path by an override
        model_config.count_number_ids = count_number_ids(tokenizer, model_config.count_max)
    seed_everything(run.train.seed)
    if init_from is not None:
        # Parts the overrides add (e.g. prompt_position_features) are missing from the folder and start from
        # their own initialisation.
        model = EarthGPTXForConditionalGeneration.from_pretrained(str(init_from), config=model_config)
        reinit_parts(model, run.model.reinit_parts)
    else:
        if run.model.reinit_parts:
            logger.warning(
                "model.reinit_parts is ignored without model.init_from: every part starts afresh anyway"
            )
        model = EarthGPTXForConditionalGeneration(model_config)
    number_ids = number_token_ids(tokenizer)
    if run.model.ordinal_numbers and init_from is None and number_ids is not None:
        init_ordinal_numbers(model, number_ids)
    if model_config.count_classes > 0 and not saved_count_tokens(init_from):
        init_count_tokens(model, tokenizer)
    checkpoint_path = Path(run.train.checkpoint_dir) / CHECKPOINT_NAME
    vision_pretrain: dict[str, Any] | None = None
    if (
        run.train.vision_pretrain_steps > 0
        and init_from is None
        and not (resume and checkpoint_path.exists())
    ):
        t0 = time.perf_counter()
        if train_data.aux is None:
            raise ValueError("train.vision_pretrain_steps needs the synthetic dataset's auxiliary targets")
        if info.is_main:  # DistributedDataParallel hands rank 0's weights to the other ranks
            model.vision_tower.to(device)
            pretrained, _ = load_or_pretrain(
                model.vision_tower, train_data, Path(run.train.checkpoint_dir),
                run.train.vision_pretrain_steps, run.train.vision_pretrain_batch_size, run.train.vision_pretrain_lr,
                run.optim.weight_decay, run.train.seed, progress,
            )  # fmt: skip
        if info.enabled:
            dist.barrier()
        timings["vision_pretrain_s"] = time.perf_counter() - t0
        if info.is_main:
            vision_pretrain = dict(vars(pretrained))
        seed_everything(run.train.seed)  # the one-stage training starts from the same RNG state either way
    elif run.train.vision_pretrain_steps > 0 and info.is_main:
        # resumed: report what the first session measured
        vision_pretrain = stored_result(Path(run.train.checkpoint_dir))
    centre_warmup: dict[str, Any] | None = None
    if run.train.count_head_warmup_steps > 0 and not (resume and checkpoint_path.exists()):
        t0 = time.perf_counter()
        if train_data.aux is None:
            raise ValueError("train.count_head_warmup_steps needs the synthetic dataset's auxiliary targets")
        if info.is_main:  # DistributedDataParallel hands rank 0's weights to the other ranks
            model.to(device)  # type: ignore[arg-type]
            warmed = warm_up_centre_head(
                model, train_data, run.train.count_head_warmup_steps, run.train.vision_pretrain_batch_size,
                run.train.vision_pretrain_lr, run.train.seed, progress,
            )  # fmt: skip
            centre_warmup = dict(vars(warmed))
            logger.info(
                "centre head warm-up: %d steps in %.0f s, focal loss %.4f, exact counts %.3f",
                warmed.steps, warmed.seconds, warmed.loss, warmed.count_accuracy,
            )  # fmt: skip
        if info.enabled:
            dist.barrier()
        timings["centre_warmup_s"] = time.perf_counter() - t0
        seed_everything(run.train.seed)
    box_task = torch.tensor([task == "grounding" for task in train_data.tasks], dtype=torch.bool)
    use_coordinate_loss = run.train.coordinate_sigma > 0 and number_ids is not None
    tuner = apply_trainable(model, run.model)
    total_params, trainable_params = count_parameters(model)
    model.to(device)  # type: ignore[arg-type]
    model.train()
    heads: PerceptionHeads | None = None
    if train_data.aux is not None:
        heads = PerceptionHeads(model_config.text_config.hidden_size, model_config.mask_decoder_hidden_size)
        heads.to(device)
        heads.train()
        if info.is_main:
            logger.info("auxiliary perception losses on (weight %g)", run.train.aux_weight)
    counting = model_config.count_classes > 0
    if counting and (heads is None or run.train.aux_weight <= 0) and info.is_main:
        logger.warning(
            "the model has a counting path but no auxiliary targets (train.aux_weight > 0 on the synthetic dataset): "
            "its centre head gets no training"
        )
    copy_targets = count_copy_targets(train_data.records, model_config.count_classes) if counting else None
    optimizer = make_optimizer(model if heads is None else nn.ModuleList([model, heads]), run)
    schedule = WarmupCosine(run.optim.warmup_steps, run.train.steps, run.optim.min_lr_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)

    start_step = 0
    losses: list[dict[str, float]] = []
    val_history: list[dict[str, float]] = []
    trained_s_before = 0.0
    planned = run.train.steps
    budget = float(run.train.time_budget_s)
    if resume and checkpoint_path.exists():
        state = load_checkpoint(checkpoint_path)
        model.load_state_dict(state["model"])
        if heads is not None and "aux_heads" in state:
            heads.load_state_dict(state["aux_heads"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        schedule.total = planned = int(state["planned_steps"])
        start_step = int(state["step"])
        losses = list(state.get("losses", []))
        val_history = list(state.get("val", []))
        trained_s_before = float(state.get("train_s", 0.0))
        _set_rng_state(state["rng"])
        logger.info("resumed from %s at step %d of %d", checkpoint_path, start_step, planned)
    elif resume:
        logger.info("no checkpoint at %s; starting from scratch", checkpoint_path)

    train_model: nn.Module = model
    if info.enabled:
        train_model = DistributedDataParallel(
            model, device_ids=[info.local_rank] if device.type == "cuda" else None
        )
    use_bf16 = device.type == "cuda" and run.train.bf16

    def autocast() -> Any:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16)

    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    sampler = WeightedStepSampler(
        train_data.tasks,
        run.train.task_weights,
        run.train.batch_size,
        run.train.seed,
        info.rank,
        info.world_size,
        factors=answer_balance_factors(train_data.records, run.train.answer_balance)
        if run.train.answer_balance
        else None,
    )
    shares = sampler.task_shares(train_data.tasks)
    if run.model.trainable == "mask_decoder":
        others = sorted(task for task, share in shares.items() if share > 0 and task != "pixel_grounding")
        if others:
            raise ValueError(
                "model.trainable 'mask_decoder' trains only from [SEG] answers: give the tasks "
                f"{others} weight 0 in train.task_weights (only pixel_grounding has masks)"
            )
    if info.is_main:
        logger.info(
            "training %d records (%s) on %s: %.2f M parameters (%.2f M trainable), batch %d x %d, %s steps",
            len(train_data), ", ".join(f"{t} {s:.0%}" for t, s in shares.items()), device,
            total_params / 1e6, trainable_params / 1e6, run.train.batch_size, info.world_size,
            f"~{planned}" if budget else planned,
        )  # fmt: skip

    def checkpoint_state(step: int, train_s: float) -> dict[str, Any]:
        return {
            "model": model.state_dict(),
            **({"aux_heads": heads.state_dict()} if heads is not None else {}),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "planned_steps": planned,
            "step": step,
            "losses": losses,
            "val": val_history,
            "train_s": train_s,
            "rng": _rng_state(),
            "config": run.to_dict(),
        }

    # ---- loop
    if deadline is not None:
        remaining = deadline - time.time() + trained_s_before
        budget = min(budget, remaining) if budget else remaining
        if info.is_main:
            logger.info("training until the deadline: %.0f s of training left", remaining - trained_s_before)
    # Losses stay on the device until they are logged, so steps do not wait for each other.
    window: dict[str, list[torch.Tensor]] = {
        "loss": [], "lm_loss": [], "mask_loss": [], "coord_loss": [], "aux_loss": [], "copy_loss": [],
    }  # fmt: skip
    bar = tqdm(
        total=planned, initial=start_step, disable=not (progress and info.is_main), desc="training", unit="step",
        dynamic_ncols=True, mininterval=1.0,
    )  # fmt: skip
    loop_start = time.perf_counter()
    step_marks: list[float] = []
    step = start_step
    stopped_by_budget = False
    while step < planned:
        indices = sampler.indices(step)
        batch = train_data.batch(indices, pad_id, with_aux=heads is not None)
        if train_data.device != device:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        aux_targets = {k: batch.pop(k) for k in list(batch) if k.startswith("aux_")}
        centre_maps = aux_targets.get("aux_centre_map")
        if (
            counting
            and centre_maps is not None
            and teacher_forced(run.train.seed, step, run.train.count_teacher_forcing)
        ):
            batch["centre_maps"] = centre_maps
        if copy_targets is not None:
            batch["count_targets"] = copy_targets[indices.cpu().long()].to(device)
        with autocast():
            out = train_model(**batch)
        loss = out.loss
        aux_loss = None
        if heads is not None and aux_targets:
            assert out.image_tokens is not None and out.prompt_tokens is not None
            assert out.mask_features is not None
            extra = model_config.count_tokens  # the counting path's tokens carry no per-cell targets
            image_tokens = out.image_tokens[:, : out.image_tokens.shape[1] - extra]
            prompt_tokens = out.prompt_tokens[:, :, : out.prompt_tokens.shape[2] - extra]
            parts = heads.losses(
                image_tokens, prompt_tokens, out.mask_features, aux_targets, out.centre_logits
            )
            aux_loss = torch.stack(list(parts.values())).sum()
            loss = loss + run.train.aux_weight * aux_loss
        coord = None
        if use_coordinate_loss and number_ids is not None:
            coord = coordinate_loss(
                out.logits,
                batch["labels"],
                box_task[indices.cpu().long()],
                number_ids,
                run.train.coordinate_sigma,
            )
            if coord is not None:
                loss = loss + run.train.coordinate_weight * coord
        if not loss.requires_grad:  # e.g. trainable mask_decoder on a batch without [SEG]: nothing can learn
            raise ValueError(
                f"step {step + 1}: the loss does not depend on any trainable parameter "
                f"(model.trainable={run.model.trainable!r}); give weight only to tasks that train those parts"
            )
        loss.backward()
        if heads is not None and info.enabled:
            # The heads sit outside DistributedDataParallel: average their gradients by hand.
            for parameter in heads.parameters():
                if parameter.grad is not None:
                    dist.all_reduce(parameter.grad)
                    parameter.grad /= info.world_size
        if run.optim.grad_clip > 0:
            clipped = list(model.parameters()) + ([] if heads is None else list(heads.parameters()))
            torch.nn.utils.clip_grad_norm_(clipped, run.optim.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        window["loss"].append(loss.detach())
        if out.lm_loss is not None:
            window["lm_loss"].append(out.lm_loss.detach())
        if out.mask_loss is not None:
            window["mask_loss"].append(out.mask_loss.detach())
        if out.copy_loss is not None:
            window["copy_loss"].append(out.copy_loss.detach())
        if coord is not None:
            window["coord_loss"].append(coord.detach())
        if aux_loss is not None:
            window["aux_loss"].append(aux_loss.detach())
        if budget and step in (start_step + _TIMING_SKIP, start_step + _TIMING_STEPS):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            step_marks.append(time.perf_counter())
        elapsed = time.perf_counter() - loop_start

        if budget and step == start_step + _TIMING_STEPS:
            per_step = (step_marks[1] - step_marks[0]) / (_TIMING_STEPS - _TIMING_SKIP)
            fits = int((budget - trained_s_before - elapsed - _SAVE_RESERVE_S) / max(per_step, 1e-6) * 0.97)
            new_total = max(step + 1, min(run.train.steps, step + fits))
            if info.enabled:
                agreed = torch.tensor([new_total], device=device)
                dist.broadcast(agreed, 0)
                new_total = int(agreed.item())
            planned = schedule.total = new_total
            bar.total = planned
            if info.is_main:
                logger.info(
                    "%.3f s/step: planning %d steps within the %.0f s budget", per_step, planned, budget
                )

        if step % run.train.log_every == 0 or step == planned:
            entry = {
                "step": step,
                "loss": _tensor_mean(window["loss"]),
                "lm_loss": _tensor_mean(window["lm_loss"]),
                "mask_loss": _tensor_mean(window["mask_loss"]),
                "coord_loss": _tensor_mean(window["coord_loss"]),
                "aux_loss": _tensor_mean(window["aux_loss"]),
                "copy_loss": _tensor_mean(window["copy_loss"]),
                "lr": float(scheduler.get_last_lr()[0]),
                "elapsed_s": round(trained_s_before + elapsed, 2),
            }
            losses.append(entry)
            window = {k: [] for k in window}
            if info.is_main:
                bar.set_postfix(loss=f"{entry['loss']:.3f}", lr=f"{entry['lr']:.2e}")
                if not progress:
                    logger.info(
                        "step %d/%d loss %.4f (lm %.4f, mask %.4f, aux %.4f, copy %.4f) lr %.2e, %.0f s",
                        step, planned, entry["loss"], entry["lm_loss"], entry["mask_loss"], entry["aux_loss"],
                        entry["copy_loss"], entry["lr"],
                        entry["elapsed_s"],
                    )  # fmt: skip
        bar.update(1)
        if val_data is not None and step % run.train.val_every == 0:
            value = validation_loss(
                train_model, val_data, run.train.batch_size, run.train.val_batches, autocast, pad_id, device
            )
            val_history.append({"step": step, "val_loss": value})
            if info.is_main:
                logger.info("step %d: validation loss %.4f", step, value)
        if info.is_main and run.train.checkpoint_every and step % run.train.checkpoint_every == 0:
            save_checkpoint(checkpoint_path, checkpoint_state(step, trained_s_before + elapsed))

        over = bool(budget) and trained_s_before + elapsed + _SAVE_RESERVE_S >= budget
        if info.enabled:
            flag = torch.tensor([1.0 if over else 0.0], device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            over = bool(flag.item() > 0)
        if over and step < planned:
            stopped_by_budget = True
            if info.is_main:
                logger.info("time budget of %.0f s reached at step %d of %d; stopping", budget, step, planned)
            break
        if stop_at is not None and step >= stop_at and step < planned:
            if info.is_main:
                logger.info("stopping this session at step %d of %d (resume to continue)", step, planned)
            break
    bar.close()
    train_s = trained_s_before + time.perf_counter() - loop_start
    timings["train_s"] = train_s

    # ---- save (rank 0)
    out_dir = Path(run.train.output_dir)
    log: dict[str, Any] = {}
    if info.is_main:
        if run.train.checkpoint_every:
            save_checkpoint(checkpoint_path, checkpoint_state(step, train_s))
        final_model = model
        if tuner is not None:
            model.language_model = tuner.merge_and_unload()
        final_model.to("cpu").float()  # type: ignore[arg-type]
        save_model(final_model, processor, out_dir, run.model.save_dtype)
        count_calibration = None
        if model_config.count_classes > 0 and aux_spec is not None and val_records:
            # The centre head's peak threshold and window, chosen on the training seed's val chips.
            t0 = time.perf_counter()
            calibration = calibrate_counts(
                final_model,
                processor,
                val_records,
                records_path.parent,
                aux_spec.seed,
                COUNT_CALIBRATION_CHIPS,
            )
            write_calibration(out_dir, calibration)
            count_calibration = calibration["best"]
            timings["count_calibration_s"] = time.perf_counter() - t0
            logger.info(
                "counting path: threshold %.2f, window %d (exact counts on %d val chips: %.3f present, %.3f absent)",
                count_calibration["threshold"], count_calibration["window"], calibration["chips"],
                count_calibration["present_exact"], count_calibration["absent_exact"],
            )  # fmt: skip
        timings["total_s"] = time.perf_counter() - started
        log = {
            "name": run.name,
            "hardware": hardware_summary(device),
            "world_size": info.world_size,
            "timings_s": {k: round(v, 1) for k, v in timings.items()},
            "steps": step,
            "planned_steps": planned,
            "stopped_by_time_budget": stopped_by_budget,
            "samples_seen": step * run.train.batch_size * info.world_size,
            "train_records": len(train_data),
            "task_shares": {k: round(v, 4) for k, v in shares.items()},
            "parameters": total_params,
            "trainable_parameters": trainable_params,
            "first_loss": losses[0]["loss"] if losses else None,
            "final_loss": losses[-1]["loss"] if losses else None,
            "losses": losses,
            "validation": val_history,
            "vision_pretrain": vision_pretrain,
            "centre_warmup": centre_warmup,
            "count_calibration": count_calibration,
            "config": run.to_dict(),
        }
        (out_dir / TRAINING_LOG_NAME).write_text(json.dumps(log, indent=2) + "\n", encoding="utf-8")
        logger.info(
            "saved the model to %s after %d steps (training %.0f s, total %.0f s)", out_dir, step, train_s,
            timings["total_s"],
        )  # fmt: skip
    if info.enabled:
        dist.barrier()
        dist.destroy_process_group()
    return TrainResult(output_dir=out_dir, steps=step, losses=losses, log=log)


# ------------------------------------------------------------------------------------------- CLI
def apply_overrides(run: RunConfig, args: argparse.Namespace) -> RunConfig:
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
    return run_config_from_dict(asdict(run))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m earthgptx.training.train", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--config", required=True, type=Path, help="run configuration (YAML)")
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
    run = apply_overrides(load_run_config(args.config), args)
    train(
        run, resume=args.resume, progress=not args.no_progress, deadline=args.deadline, stop_at=args.stop_at
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
