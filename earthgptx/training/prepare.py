"""Preparing a run: its data, tokenizer and processor, the model (fresh or continued, with the stage's surgery),
and which of its parameters train.

``prepare_run`` does it all and returns a :class:`PreparedRun`; the steps are functions of their own so that a
newcomer can read each in one sitting.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from earthgptx.data import load_records
from earthgptx.data.vocabulary import OBJECT_CLASSES, PLURALS
from earthgptx.model import EarthGPTXConfig, EarthGPTXForConditionalGeneration, EarthGPTXProcessor
from earthgptx.model.surgery_earthgptx import (
    apply_init_overrides,
    count_number_ids,
    init_count_tokens,
    init_ordinal_numbers,
    number_token_ids,
    reinit_parts,
    saved_count_tokens,
)
from earthgptx.training.datasets import (
    AuxSpec,
    EncodedDataset,
    build_run_tokenizer,
    dataset_options,
    encode_dataset,
    ensure_dataset,
    scene_options,
)
from earthgptx.training.devices import DistInfo, seed_everything
from earthgptx.training.recipe import ModelSettings, Recipe

logger = logging.getLogger(__name__)


@dataclass
class PreparedRun:
    """What the phases of a run work on: the records, the processor and model config, the encoded data, the model
    (on the CPU, untrained parts initialised) and the ids of the number tokens (``None`` when the tokenizer lacks
    some)."""

    records_path: Path
    val_records: list[dict[str, Any]]
    processor: EarthGPTXProcessor
    model_config: EarthGPTXConfig
    init_from: Path | None
    aux_spec: AuxSpec | None
    train_data: EncodedDataset
    val_data: EncodedDataset | None
    model: EarthGPTXForConditionalGeneration
    number_ids: torch.Tensor | None
    timings: dict[str, float] = field(default_factory=dict)


def prepare_run(
    run: Recipe, info: DistInfo, device: torch.device, workers: int, progress: bool
) -> PreparedRun:
    """Data, processor, encoded data and model of ``run``, in that order (the model is built from a fresh seed)."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    records_path = prepare_records(run, info, workers, progress)
    timings["data_s"] = time.perf_counter() - t0
    records = load_records(records_path)
    train_records = [r for r in records if r.get("split") == "train"]
    val_records = [r for r in records if r.get("split") == "val"]
    init_from = Path(run.model.init_from).expanduser() if run.model.init_from else None
    processor, model_config = prepare_processor(run.model, init_from, train_records)
    t0 = time.perf_counter()
    aux_spec = auxiliary_spec(run, records_path, model_config)
    train_data, val_data = encode_run_data(
        run,
        train_records,
        val_records,
        records_path,
        processor,
        aux_spec,
        device,
        workers,
        progress and info.is_main,
    )
    if info.is_main and train_data.device != device:
        logger.info("the encoded data (%.1f GB) stays in host memory", train_data.nbytes() / 1e9)
    timings["encode_s"] = time.perf_counter() - t0
    if model_config.count_classes > 0 and not model_config.count_number_ids:
        # build_model_config sets them for a fresh model; an init_from folder may gain the path by an override
        model_config.count_number_ids = count_number_ids(processor.tokenizer, model_config.count_max)
    seed_everything(run.train.seed)
    model, number_ids = build_model(run.model, model_config, processor.tokenizer, init_from)
    return PreparedRun(
        records_path, val_records, processor, model_config, init_from, aux_spec, train_data, val_data, model,
        number_ids, timings,
    )  # fmt: skip


def prepare_records(run: Recipe, info: DistInfo, workers: int, progress: bool) -> Path:
    """``records.jsonl`` of the run's training data: rank 0 generates it (or reuses it), the other ranks then read
    what it wrote."""
    data = run.data

    def ensure(show: bool) -> Path:
        return ensure_dataset(
            data.train_dir,
            data.n_scenes,
            data.train_seed,
            data.chip_size,
            data.records_per_task,
            workers,
            show,
            scene_options(data),
        )

    records_path = ensure(progress) if info.is_main else None
    if info.enabled:
        dist.barrier()
    return records_path if records_path is not None else ensure(False)


def prepare_processor(
    settings: ModelSettings, init_from: Path | None, train_records: list[dict[str, Any]]
) -> tuple[EarthGPTXProcessor, EarthGPTXConfig]:
    """The processor and model config: an ``init_from`` folder's (with the stage's top-level overrides), or a fresh
    tokenizer built from the training records and the preset's config."""
    if init_from is None:
        tokenizer = build_run_tokenizer(train_records)
        model_config = build_model_config(settings, tokenizer)
        return EarthGPTXProcessor(tokenizer, model_config), model_config
    processor = EarthGPTXProcessor.from_pretrained(init_from)
    model_config = EarthGPTXConfig.from_pretrained(str(init_from))
    apply_init_overrides(model_config, settings.overrides)
    if (
        processor.prompt_coordinates != model_config.prompt_coordinates
        or processor.num_image_tokens != model_config.num_image_tokens
        or processor.tokens_per_prompt != model_config.tokens_per_prompt
    ):
        # an override turned the prompts' centroids in the text on or off, or added count tokens
        processor = EarthGPTXProcessor(
            processor.tokenizer,
            model_config,
            point_radius=processor.point_radius,
            line_width=processor.line_width,
        )
    return processor, model_config


def encode_run_data(
    run: Recipe,
    train_records: list[dict[str, Any]],
    val_records: list[dict[str, Any]],
    records_path: Path,
    processor: EarthGPTXProcessor,
    aux_spec: AuxSpec | None,
    device: torch.device,
    workers: int,
    progress: bool,
) -> tuple[EncodedDataset, EncodedDataset | None]:
    """The training records encoded (with the auxiliary targets of ``aux_spec``), and the first validation batches
    when the run validates; on ``device`` when they fit there."""
    root = records_path.parent
    train_data = encode_dataset(train_records, root, processor, workers, progress, aux_spec)
    val_data = None
    if run.train.val_every > 0 and val_records:
        val_take = val_records[: run.train.val_batches * run.train.batch_size]
        val_data = encode_dataset(val_take, root, processor, workers, False)
    if fits_on_device(train_data, device):
        train_data = train_data.to(device)
        val_data = val_data.to(device) if val_data is not None else None
    return train_data, val_data


def build_model(
    settings: ModelSettings, model_config: EarthGPTXConfig, tokenizer: Any, init_from: Path | None
) -> tuple[EarthGPTXForConditionalGeneration, torch.Tensor | None]:
    """The model: loaded from ``init_from`` (parts the overrides add start from their own initialisation, and
    ``reinit_parts`` start again) or built fresh (number tokens ordinal when asked); a new counting path's count
    tokens start as the words they stand for. Returns it with the number tokens' ids."""
    if init_from is not None:
        model = EarthGPTXForConditionalGeneration.from_pretrained(str(init_from), config=model_config)
        reinit_parts(model, settings.reinit_parts)
    else:
        if settings.reinit_parts:
            logger.warning(
                "model.reinit_parts is ignored without model.init_from: every part starts afresh anyway"
            )
        model = EarthGPTXForConditionalGeneration(model_config)
    number_ids = number_token_ids(tokenizer)
    if settings.ordinal_numbers and init_from is None and number_ids is not None:
        init_ordinal_numbers(model, number_ids)
    if model_config.count_classes > 0 and not saved_count_tokens(init_from):
        init_count_tokens(model, tokenizer, counted_class_words(model_config.count_classes))
    return model, number_ids


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


def counted_class_words(classes: int) -> list[str]:
    """For each class the counting path counts (``OBJECT_CLASSES`` order), the word a counting question ends its
    name with: the last word of its plural ("storage tanks" → "tanks")."""
    if classes > len(OBJECT_CLASSES):
        raise ValueError(
            f"count_classes is {classes}, but the dataset has {len(OBJECT_CLASSES)} object classes"
        )
    return [PLURALS[c].split()[-1] for c in OBJECT_CLASSES[:classes]]


def auxiliary_spec(run: Recipe, records_path: Path, config: EarthGPTXConfig) -> AuxSpec | None:
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
        options=dataset_options(meta),
    )
