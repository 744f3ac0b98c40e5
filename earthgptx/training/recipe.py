"""The recipe of a training run, read from a YAML file under ``configs/`` (``configs/tiny.yaml``).

Words, one meaning each across the training code: a *recipe* is one run's YAML file (with its base applied); a
*settings* class is one section of it (``data``, ``model``, ``optim``, ``train``, the two optional pre-phases
``vision_pretrain`` and ``centre_warmup``, ``eval``); a *config* is a model's configuration (``EarthGPTXConfig``,
``config.json``); a *stage* is one run of the shipped chain (``tiny-stage1.yaml`` ... ``tiny.yaml``), and a *phase*
a part of one run (the pre-phases, then the main training).

A recipe file names its base, ``base: tiny-common.yaml`` (relative to its own folder); each of its sections is the
base's section with the keys the file names replaced whole (``train.task_weights`` is the file's own, not a
merge). A base has no base of its own: every stage reads as the common file plus what it changes. Unknown keys
raise ``ValueError`` naming them, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from earthgptx.data.vocabulary import TASKS

T = TypeVar("T")


@dataclass
class DataSettings:
    """Training data (generated from ``train_seed``) and the held-out set (generated from ``eval_seed``)."""

    train_dir: str = "data/generated/tiny-train"
    train_seed: int = 0
    n_scenes: int = 2000
    records_per_task: int = 1
    eval_dir: str = "data/generated/tiny-eval"
    eval_seed: int = 90210
    n_eval_scenes: int = 300
    # Every scene of the eval-seed dataset is unseen in training; ``all`` evaluates all of them, or name splits.
    eval_splits: list[str] = field(default_factory=lambda: ["all"])
    chip_size: int = 128
    # Processes for generation and pre-encoding (0: all cores).
    workers: int = 0
    # The generator's options for the training data (``earthgptx.data.generate``; both off: the plain generator):
    # negatives (empty scenes, prompts over background, counts of absent classes) and the share of scenes drawn
    # with domain randomisation.
    negatives: bool = False
    randomise: float = 0.0
    # Randomised scenes also draw sensor and scene effects (blur, cast shadows, roof shading, SAR clutter texture)
    # and composite roofs (stage 15).
    effects: bool = False
    # Half the chips also get a description of a large area that is not one object (a standing query's AOI): the
    # land cover most of it shows and the objects inside, or "no object" (stage 18).
    areas: bool = False
    # Randomised scenes also give each object a class-blind brightness pattern (``render.object_texture``).
    textures: bool = False
    # The out-of-distribution split (``earthgptx.data.ood_render``, the second renderer) and the abstention split
    # (the generator with negatives on, randomisation off), evaluated with ``evaluate --ood --abstention``.
    ood_dir: str = "data/generated/tiny-ood"
    ood_seed: int = 4242
    n_ood_scenes: int = 300
    abstention_dir: str = "data/generated/tiny-abstention"
    abstention_seed: int = 90211
    n_abstention_scenes: int = 100
    # The area-description split (the generator with negatives and areas on), evaluated with ``evaluate --areas``.
    areas_dir: str = "data/generated/tiny-areas"
    areas_seed: int = 90212
    n_areas_scenes: int = 100

    def __post_init__(self) -> None:
        held_out = {
            "eval_seed": self.eval_seed,
            "ood_seed": self.ood_seed,
            "abstention_seed": self.abstention_seed,
            "areas_seed": self.areas_seed,
        }
        for name, seed in held_out.items():
            if self.train_seed == seed:
                raise ValueError(f"data.{name} must differ from data.train_seed (both {self.train_seed})")
        if not 0.0 <= self.randomise <= 1.0:
            raise ValueError(f"data.randomise is a share of scenes in [0, 1], got {self.randomise}")
        if self.n_ood_scenes < 1 or self.n_abstention_scenes < 1 or self.n_areas_scenes < 1:
            raise ValueError(
                "data.n_ood_scenes, data.n_abstention_scenes and data.n_areas_scenes must be >= 1"
            )
        if self.n_scenes < 1 or self.n_eval_scenes < 1:
            raise ValueError(
                f"data.n_scenes and data.n_eval_scenes must be >= 1, got {self.n_scenes}, {self.n_eval_scenes}"
            )


@dataclass
class LoraSettings:
    """peft LoRA on the language model (used when ``trainable: frozen_encoders_lora``)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


# The auxiliary heads' loss names (earthgptx.training.auxiliary.PerceptionHeads.losses).
AUX_HEADS = ("token_semantic", "token_box", "token_centres", "count_path", "region", "pixel_semantic")
TRAINABLE = ("all", "frozen_encoders_lora", "mask_decoder")


@dataclass
class ModelSettings:
    """Which preset, with which overrides (top-level fields or parts of sub-configs, as ``EarthGPTXConfig.tiny``)."""

    preset: str = "tiny"
    overrides: dict[str, Any] = field(default_factory=dict)
    # A saved EarthGPT-X folder to start from (e.g. the output of ``earthgptx.model.convert_earthgptx_weights``
    # with pretrained encoders and LLM, or an earlier training stage); its tokenizer and config are used, ``preset``
    # is ignored, and of ``overrides`` only top-level fields apply (e.g. ``prompt_position_features: true``, whose
    # new weights start from their own initialisation); sub-config overrides are ignored with a warning.
    init_from: str | None = None
    # ``all`` trains every parameter; ``frozen_encoders_lora`` freezes the ConvNeXt/DINOv2 encoders and the LM
    # and trains LoRA adapters in the LM plus the new parts (band adapter, prompt encoder, fusion, projector,
    # mask decoder, token embeddings and LM head). ``mask_decoder`` freezes everything but the mask decoder, so
    # that a stage can sharpen the masks while every text answer of its ``init_from`` model stays as it was.
    trainable: str = "all"
    lora: LoraSettings = field(default_factory=LoraSettings)
    # dtype of the weights written into the shipped checkpoint; the config keeps float32 so that loading casts
    # them back (halves the file size; fp16's 11-bit mantissa is far finer than the weights need).
    save_dtype: str = "float16"
    # Initialise the embeddings and LM-head rows of the number tokens 0..999 with sine/cosine features of their
    # value, so that neighbouring numbers start out similar (box coordinates are read as numbers).
    ordinal_numbers: bool = False
    # Parts of an ``init_from`` model that start again from their own initialisation, by module name (e.g.
    # ``count_copy.query``): for a part whose trained weights are known to be stuck.
    reinit_parts: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.preset not in ("tiny", "paper"):
            raise ValueError(f"model.preset must be 'tiny' or 'paper', got {self.preset!r}")
        if self.trainable not in TRAINABLE:
            raise ValueError(f"model.trainable must be one of {list(TRAINABLE)}, got {self.trainable!r}")
        if self.save_dtype not in ("float32", "float16", "bfloat16"):
            raise ValueError(
                f"model.save_dtype must be float32, float16 or bfloat16, got {self.save_dtype!r}"
            )


@dataclass
class OptimSettings:
    """AdamW with linear warm-up and a cosine decay to ``min_lr_ratio × lr``."""

    lr: float = 1e-3
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = 200
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0
    # Learning-rate multiplier (and no weight decay) for the counting path's maps into the tokens (image_count,
    # prompt_count): they start at zero, and at the shared rate they stayed too small for the language model to read.
    count_path_lr_scale: float = 1.0

    def __post_init__(self) -> None:
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        if self.lr <= 0:
            raise ValueError(f"optim.lr must be > 0, got {self.lr}")
        if self.count_path_lr_scale <= 0:
            raise ValueError(f"optim.count_path_lr_scale must be > 0, got {self.count_path_lr_scale}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")


@dataclass
class TrainSettings:
    """Steps, batch, sampling, checkpoints, devices."""

    steps: int = 3000
    batch_size: int = 32
    seed: int = 0
    # Relative sampling weight per task (missing tasks weigh 1): hard tasks get more steps.
    task_weights: dict[str, float] = field(default_factory=dict)
    # Per task, an exponent a in [0, 1]: within the task a record is drawn in proportion to n^-a, n being how many of
    # the task's records share its answer (1: every answer equally often; 0: as generated). The task's share of the
    # steps does not change. For answers as lopsided as counting's, where "1" is half the records.
    answer_balance: dict[str, float] = field(default_factory=dict)
    checkpoint_dir: str = "runs/tiny"
    checkpoint_every: int = 500
    log_every: int = 50
    val_every: int = 0
    val_batches: int = 8
    device: str = "auto"
    threads: int = 0
    # bf16 autocast on CUDA (ignored on CPU).
    bf16: bool = True
    # Stop and save cleanly after this many seconds of training (0: no limit); the schedule then spans the
    # steps that fit, estimated from a timing warm-up.
    time_budget_s: float = 0.0
    output_dir: str = "models/earthgptx-tiny"
    # Box coordinates: besides the exact-token cross-entropy, a cross-entropy against a Gaussian over the number
    # tokens centred on the true value (sigma in the 0..999 units; 0 disables it), weighted by coordinate_weight,
    # so that an answer off by a pixel costs less than one off by half the image.
    coordinate_sigma: float = 0.0
    coordinate_weight: float = 1.0
    # Weight of the auxiliary perception losses (linear probes on image tokens, region tokens and pixel features
    # against the synthetic scenes' exact ground truth; see earthgptx.training.auxiliary). 0 disables them.
    aux_weight: float = 0.0
    # Per auxiliary head, a multiplier on its loss within the auxiliary sum (missing heads weigh 1; names as
    # ``AUX_HEADS``), e.g. ``count_path: 4.0`` so that the shared pixel features learn object centres harder.
    aux_head_weights: dict[str, float] = field(default_factory=dict)
    # For a model with a counting path (model count_classes > 0): the share of batches whose counts, as the language
    # model reads them, come from the true object centres rather than the centre head's peaks (teacher forcing: the
    # language model learns to read exact counts while the head, trained by its own loss, learns to find them).
    count_teacher_forcing: float = 1.0

    def __post_init__(self) -> None:
        if self.coordinate_sigma < 0 or self.coordinate_weight < 0:
            raise ValueError("train.coordinate_sigma and train.coordinate_weight must be >= 0")
        if self.aux_weight < 0:
            raise ValueError("train.aux_weight must be >= 0")
        unknown = sorted(set(self.aux_head_weights) - set(AUX_HEADS))
        if unknown:
            raise ValueError(
                f"train.aux_head_weights names unknown heads {unknown}; heads are {list(AUX_HEADS)}"
            )
        negative = {h: w for h, w in self.aux_head_weights.items() if float(w) < 0}
        if negative:
            raise ValueError(f"train.aux_head_weights must be >= 0, got {negative}")
        if not 0.0 <= self.count_teacher_forcing <= 1.0:
            raise ValueError("train.count_teacher_forcing is a share of batches, in [0, 1]")
        unknown = sorted(set(self.task_weights) - set(TASKS))
        if unknown:
            raise ValueError(f"train.task_weights names unknown tasks {unknown}; tasks are {list(TASKS)}")
        unknown = sorted(set(self.answer_balance) - set(TASKS))
        if unknown:
            raise ValueError(f"train.answer_balance names unknown tasks {unknown}; tasks are {list(TASKS)}")
        outside = {t: a for t, a in self.answer_balance.items() if not 0.0 <= float(a) <= 1.0}
        if outside:
            raise ValueError(f"train.answer_balance exponents must lie in [0, 1], got {outside}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(
                f"train.steps and train.batch_size must be >= 1, got {self.steps}, {self.batch_size}"
            )


@dataclass
class PhaseSettings:
    """An optional phase before the main training that trains one part alone: ``steps`` (0: the phase is off), its
    batch size and peak learning rate (linear warm-up, cosine to zero; see ``earthgptx.training.pretrain``)."""

    steps: int = 0
    batch_size: int = 32
    lr: float = 1.0e-3

    def check(self, section: str) -> None:
        if self.steps < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(
                f"{section}.steps must be >= 0, {section}.batch_size >= 1 and {section}.lr > 0, got "
                f"{self.steps}, {self.batch_size}, {self.lr}"
            )


@dataclass
class VisionPretrainSettings(PhaseSettings):
    """Dense pre-training of the vision tower (per-cell classes), the stand-in for the paper's pretrained encoders.
    It needs the synthetic dataset's auxiliary targets (``train.aux_weight`` > 0)."""

    def __post_init__(self) -> None:
        self.check("vision_pretrain")


@dataclass
class CentreWarmupSettings(PhaseSettings):
    """The counting path's centre head trained alone (everything else frozen) on cached pixel features."""

    def __post_init__(self) -> None:
        self.check("centre_warmup")


@dataclass
class EvalSettings:
    """Batched greedy decoding of the held-out set."""

    batch_size: int = 64
    max_new_tokens: int = 48


@dataclass
class Recipe:
    """A whole run: its name, data, model, optimiser, training, the optional pre-phases and evaluation settings."""

    name: str = "tiny"
    data: DataSettings = field(default_factory=DataSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    optim: OptimSettings = field(default_factory=OptimSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    vision_pretrain: VisionPretrainSettings = field(default_factory=VisionPretrainSettings)
    centre_warmup: CentreWarmupSettings = field(default_factory=CentreWarmupSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)

    def __post_init__(self) -> None:
        if self.vision_pretrain.steps > 0 and self.train.aux_weight <= 0:
            raise ValueError(
                "vision_pretrain.steps needs train.aux_weight > 0 (its targets are the auxiliary ones)"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        """The effective recipe (base applied, every default filled in) as YAML, sections in their order."""
        return yaml.safe_dump(_plain(self.to_dict()), sort_keys=False, default_flow_style=None, width=118)


def _plain(value: Any) -> Any:
    """Tuples as lists, so that ``yaml.safe_dump`` writes them."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _build(cls: type[T], values: Any, where: str) -> T:
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ValueError(f"{where} must be a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in {where}; known: {sorted(fields)}")
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        nested = _NESTED.get((cls, name))
        kwargs[name] = _build(nested, value, f"{where}.{name}") if nested else value
    return cls(**kwargs)


_NESTED: dict[tuple[type, str], type] = {
    (Recipe, "data"): DataSettings,
    (Recipe, "model"): ModelSettings,
    (Recipe, "optim"): OptimSettings,
    (Recipe, "train"): TrainSettings,
    (Recipe, "vision_pretrain"): VisionPretrainSettings,
    (Recipe, "centre_warmup"): CentreWarmupSettings,
    (Recipe, "eval"): EvalSettings,
    (ModelSettings, "lora"): LoraSettings,
}


def recipe_from_dict(values: dict[str, Any]) -> Recipe:
    """A ``Recipe`` from plain values (as read from YAML); raises ``ValueError`` on unknown keys."""
    return _build(Recipe, values, "recipe")


def load_recipe(path: str | Path) -> Recipe:
    """Read a recipe from a YAML file, with its base (``base: <file>``, one level: a base has no base) applied."""
    return recipe_from_dict(read_with_base(Path(path)))


def _read_mapping(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        values = yaml.safe_load(handle) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a mapping, got {type(values).__name__}")
    return values


def read_with_base(path: Path) -> dict[str, Any]:
    """The plain values of the recipe file ``path`` with its base applied: each section is the base's with the keys
    the file names replaced whole."""
    values = _read_mapping(path)
    base = values.pop("base", None)
    if base is None:
        return values
    if not isinstance(base, str):
        raise ValueError(f"{path}: base must be a file name, got {base!r}")
    merged = _read_mapping(path.parent / base)
    if "base" in merged:
        raise ValueError(
            f"{path.name}: its base {base} names a base of its own ({merged['base']}); a recipe inherits from one "
            "common file only"
        )
    for section, value in values.items():
        if isinstance(value, dict) and isinstance(merged.get(section), dict):
            merged[section] = {**merged[section], **value}
        else:
            merged[section] = value
    return merged
