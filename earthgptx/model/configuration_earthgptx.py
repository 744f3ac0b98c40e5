"""Configuration of the EarthGPT-X model (docs/architecture.md).

A composite configuration in the transformers style: ``EarthGPTXConfig`` holds four named sub-configurations —
``vision_config`` (the hybrid ConvNeXt + DINOv2 tower, which itself nests a ``ConvNextConfig`` and a
``Dinov2Config``), ``prompt_config`` (the visual-prompt ViT), ``fusion_config`` and ``text_config`` (a Llama-family
causal LM) — plus the token ids that tie the model to its tokenizer. ``EarthGPTXConfig.tiny()`` and
``EarthGPTXConfig.paper()`` are the two presets. Every constructor validates its values and raises ``ValueError``
naming the offending field.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from transformers import AutoConfig, ConvNextConfig, Dinov2Config, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from earthgptx.formats import IMAGE_TOKEN, MODALITIES, SEG_TOKEN, region_token

# The checkpoint format produced by ``save_pretrained``. Bump it when the parameter layout or the meaning of a
# config field changes, and teach ``from_pretrained`` to migrate or refuse older versions.
CHECKPOINT_FORMAT_VERSION = 1

NUM_BAND_SLOTS = 13
"""Every chip enters the model as 13 channels; each modality fills its own slots (see processing)."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


class EarthGPTXVisionConfig(PreTrainedConfig):
    """The hybrid vision tower: a per-modality band adapter, a ConvNeXt branch and a DINOv2 branch.

    The ConvNeXt stage outputs (strides 4, 8, 16, 32) are resampled to the DINOv2 patch grid and concatenated
    with the DINOv2 patch tokens, so each image token carries ``sum(convnext hidden_sizes) + dinov2 hidden_size``
    channels. ``num_views`` is 1 (the chip) or 5 (a global view plus four zoomed quadrants; the input is then
    ``2 * image_size`` pixels wide).
    """

    model_type: ClassVar[str] = "earthgptx_vision"
    base_config_key: ClassVar[str] = "vision_config"
    sub_configs_defaults: ClassVar[dict[str, SubConfigSpec]] = {
        # Defaults are the tiny preset's encoders, so that ``EarthGPTXVisionConfig()`` is valid on its own.
        "convnext_config": SubConfigSpec(
            config_class=AutoConfig,
            model_type="convnext",
            init_kwargs={"hidden_sizes": [32, 64, 128, 192], "depths": [1, 1, 2, 1], "layer_norm_eps": 1e-6},
        ),
        "dinov2_config": SubConfigSpec(
            config_class=AutoConfig,
            model_type="dinov2",
            init_kwargs={
                "hidden_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "mlp_ratio": 2,
                "patch_size": 8,
                "image_size": 128,
            },
        ),
    }

    if TYPE_CHECKING:  # after __post_init__ the sub-configs are config objects, whatever was passed in
        convnext_config: ConvNextConfig
        dinov2_config: Dinov2Config
    else:
        convnext_config: dict | PreTrainedConfig | None = None
        dinov2_config: dict | PreTrainedConfig | None = None
    image_size: int = 128
    num_views: int = 1
    num_band_slots: int = NUM_BAND_SLOTS
    num_modalities: int = len(MODALITIES)
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        _require(self.image_size >= 16, f"vision_config.image_size must be >= 16, got {self.image_size}")
        _require(self.num_views in (1, 5), f"vision_config.num_views must be 1 or 5, got {self.num_views}")
        _require(
            self.num_band_slots == NUM_BAND_SLOTS,
            f"vision_config.num_band_slots must be {NUM_BAND_SLOTS}, got {self.num_band_slots}",
        )
        _require(
            self.num_modalities == len(MODALITIES),
            f"vision_config.num_modalities must be {len(MODALITIES)}, got {self.num_modalities}",
        )
        patch = self.dinov2_patch_size
        _require(
            self.image_size % patch == 0,
            f"vision_config.image_size={self.image_size} is not a multiple of the DINOv2 patch size {patch}",
        )
        _require(
            self.image_size % 32 == 0,
            f"vision_config.image_size={self.image_size} must be a multiple of 32 (ConvNeXt stride)",
        )
        _require(
            len(self.convnext_config.hidden_sizes or ()) == 4,
            f"vision_config.convnext_config.hidden_sizes must have 4 stages, got {self.convnext_config.hidden_sizes}",
        )
        # The sub-encoders always see a 3-channel picture made by the band adapter, at the view size.
        self.convnext_config.num_channels = 3
        self.dinov2_config.num_channels = 3
        self.convnext_config.image_size = self.image_size
        self.dinov2_config.image_size = self.image_size

    @property
    def dinov2_patch_size(self) -> int:
        patch = self.dinov2_config.patch_size
        return int(patch if isinstance(patch, int) else patch[0])

    @property
    def grid_size(self) -> int:
        """Side of the token grid of one view."""
        return self.image_size // self.dinov2_patch_size

    @property
    def input_size(self) -> int:
        """Side of ``pixel_values`` (and of prompt masks) the model expects."""
        return self.image_size * (2 if self.num_views == 5 else 1)

    @property
    def feature_size(self) -> int:
        """Channels of one image token out of the tower."""
        return int(sum(self.convnext_config.hidden_sizes or ())) + int(self.dinov2_config.hidden_size)


class EarthGPTXPromptConfig(PreTrainedConfig):
    """The visual-prompt encoder: a randomly initialised ViT over each prompt's rasterised mask.

    ``mask_size`` is the side of the mask (the chip resolution the model sees); it is cut into
    ``patch_size`` patches and summarised by ``tokens_per_prompt`` learned query tokens, which become the K tokens
    each ``<regionI>`` expands to. Up to ``max_prompts`` prompts per request.
    """

    model_type: ClassVar[str] = "earthgptx_prompt"
    base_config_key: ClassVar[str] = "prompt_config"

    max_prompts: int = 8
    mask_size: int = 128
    patch_size: int = 16
    hidden_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    mlp_ratio: int = 4
    tokens_per_prompt: int = 4
    layer_norm_eps: float = 1e-6
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        _require(self.max_prompts >= 8, f"prompt_config.max_prompts must be >= 8, got {self.max_prompts}")
        _require(
            self.mask_size % self.patch_size == 0,
            f"prompt_config.mask_size={self.mask_size} is not a multiple of patch_size={self.patch_size}",
        )
        _require(
            self.hidden_size % self.num_attention_heads == 0,
            f"prompt_config.hidden_size={self.hidden_size} is not divisible by "
            f"num_attention_heads={self.num_attention_heads}",
        )
        _require(
            self.tokens_per_prompt >= 1,
            f"prompt_config.tokens_per_prompt must be >= 1, got {self.tokens_per_prompt}",
        )
        _require(
            self.num_hidden_layers >= 1,
            f"prompt_config.num_hidden_layers must be >= 1, got {self.num_hidden_layers}",
        )


class EarthGPTXFusionConfig(PreTrainedConfig):
    """The fusion of image and prompt tokens.

    Each of ``num_hidden_layers`` layers runs: self-attention (+ MLP) over image tokens, a feed-forward layer over
    prompt tokens, cross-attention from prompts to image (biased towards the image tokens each prompt covers), and
    self-attention over all prompt tokens of a request (so prompts can relate to one another).
    """

    model_type: ClassVar[str] = "earthgptx_fusion"
    base_config_key: ClassVar[str] = "fusion_config"

    hidden_size: int = 128
    num_hidden_layers: int = 1
    num_attention_heads: int = 4
    mlp_ratio: int = 4
    layer_norm_eps: float = 1e-6
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        _require(
            self.hidden_size % self.num_attention_heads == 0,
            f"fusion_config.hidden_size={self.hidden_size} is not divisible by "
            f"num_attention_heads={self.num_attention_heads}",
        )
        _require(
            self.num_hidden_layers >= 1,
            f"fusion_config.num_hidden_layers must be >= 1, got {self.num_hidden_layers}",
        )

    def items(self) -> list[tuple[str, Any]]:
        """No kernel fusions requested.

        transformers' ``from_pretrained`` also reads ``config.fusion_config``, as a mapping of runtime kernel
        fusions to apply; our sub-config of the same name answers that it requests none.
        """
        return []


class EarthGPTXConfig(PreTrainedConfig):
    """The whole EarthGPT-X model.

    Token ids (``image_token_id``, ``region_token_ids``, ``seg_token_id``) must match the tokenizer; build the
    config with ``EarthGPTXConfig.tiny(tokenizer=...)`` (or ``paper(tokenizer=...)``) to take them from it.
    ``projector_downsample`` merges r×r neighbouring image tokens into one LLM token (channels concatenated, so no
    spatial information is thrown away), dividing the image tokens the LLM sees by r².
    ``prompt_position_features`` adds each prompt mask's centroid (x, y) and its distance from the chip centre,
    through a learned linear map that starts at zero, to the prompt's tokens as the LLM reads them, so that spatial
    relations between prompts do not depend on the fusion keeping positions. ``prompt_position_sincos`` adds that
    many fixed sine/cosine features of each of the three values (even; 0: the three values only).
    ``prompt_coordinates`` makes the processor write each prompt's centroid on the ``[0, 1000)`` grid as text,
    ``[x, y]``, after the prompt's K tokens (a hybrid region reference: the prompt's features and its place in
    words the language model already reads and writes for boxes).
    ``count_classes`` > 0 adds a counting path to the projector (single-view towers only): a small convolutional
    head on the mask decoder's pixel features (half the chip's resolution) draws a heatmap of object centres for
    each of that many classes; its local maxima (in ``count_window`` × ``count_window`` cells, odd) above
    ``count_threshold`` are the detected objects (``count_peaks``: ``"per_class"``, a class's maximum among its own
    heat, or ``"across_classes"``, among every class's heat: one class per object). Their
    number per class over the whole image, and inside each prompt's region (a peak weighted by the share of its
    cell the prompt covers), reaches the language model as words: one token per class, the embedding of the class's
    name plus that of its count (``0..count_max``) as a number, after the image tokens (whole-image counts) and
    after each prompt's tokens (the region's counts). So ``num_image_tokens`` and ``tokens_per_prompt`` each grow by
    ``count_classes``. With the path the model also has a count copy: a pointer from an answer's first position
    to the count tokens that mixes the count it points at into that position's next-token distribution through a
    learned gate (only there: a count is a whole answer, and the numbers are also the box coordinates written
    later in other answers); ``count_number_ids`` are the vocabulary ids of the numbers ``0..count_max`` it writes
    (train.py sets them from the tokenizer). Given the right count token of a counting question, ``forward`` also
    supervises the copy: ``count_copy_loss_weight`` × (the pointer's cross-entropy on that token + the gate's
    binary cross-entropy, open for a counting question and shut for any other). Attention averages and a count is
    a sum: the path hands the language model the count.
    """

    model_type: ClassVar[str] = "earthgptx"
    sub_configs_defaults: ClassVar[dict[str, SubConfigSpec]] = {
        "vision_config": SubConfigSpec(config_class=EarthGPTXVisionConfig),
        "prompt_config": SubConfigSpec(config_class=EarthGPTXPromptConfig),
        "fusion_config": SubConfigSpec(config_class=EarthGPTXFusionConfig),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
    }

    if TYPE_CHECKING:  # after __post_init__ the sub-configs are config objects, whatever was passed in
        vision_config: EarthGPTXVisionConfig
        prompt_config: EarthGPTXPromptConfig
        fusion_config: EarthGPTXFusionConfig
        text_config: Any  # a Llama-family config
        region_token_ids: list[int]
    else:
        vision_config: dict | PreTrainedConfig | None = None
        prompt_config: dict | PreTrainedConfig | None = None
        fusion_config: dict | PreTrainedConfig | None = None
        text_config: dict | PreTrainedConfig | None = None
        region_token_ids: list[int] | None = None
    image_token_id: int = 4
    seg_token_id: int = 5
    projector_downsample: int = 1
    projector_hidden_act: str = "gelu"
    prompt_position_features: bool = False
    prompt_position_sincos: int = 32
    prompt_coordinates: bool = False
    count_classes: int = 0
    count_max: int = 8
    count_threshold: float = 0.5
    count_window: int = 3
    count_peaks: str = "per_class"
    count_number_ids: list[int] | None = None
    count_copy_loss_weight: float = 1.0
    mask_decoder_hidden_size: int = 64
    mask_loss_weight: float = 1.0
    dice_loss_weight: float = 1.0
    ignore_index: int = -100
    initializer_range: float = 0.02
    checkpoint_format_version: int = CHECKPOINT_FORMAT_VERSION
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        n_prompts = self.prompt_config.max_prompts
        if self.region_token_ids is None:
            # The default layout of the tiny tokenizer: specials 0..5, then <region1>..<regionN>.
            self.region_token_ids = list(range(6, 6 + n_prompts))
        self.region_token_ids = [int(i) for i in self.region_token_ids]
        _require(
            len(self.region_token_ids) == n_prompts,
            f"region_token_ids has {len(self.region_token_ids)} ids but prompt_config.max_prompts={n_prompts}",
        )
        _require(
            self.checkpoint_format_version == CHECKPOINT_FORMAT_VERSION,
            f"checkpoint_format_version={self.checkpoint_format_version} is not supported "
            f"(this code reads version {CHECKPOINT_FORMAT_VERSION})",
        )
        vocab = self.text_config.vocab_size
        special = {"image_token_id": self.image_token_id, "seg_token_id": self.seg_token_id}
        special.update({f"region_token_ids[{i}]": t for i, t in enumerate(self.region_token_ids)})
        for name, token_id in special.items():
            _require(0 <= token_id < vocab, f"{name}={token_id} is outside the vocabulary (size {vocab})")
        _require(
            len(set(special.values())) == len(special),
            f"image, [SEG] and region token ids must be distinct, got {special}",
        )
        grid = self.vision_config.grid_size
        _require(
            self.projector_downsample >= 1 and grid % self.projector_downsample == 0,
            f"projector_downsample={self.projector_downsample} must divide the token grid side {grid}",
        )
        _require(
            self.prompt_config.mask_size == self.vision_config.input_size,
            f"prompt_config.mask_size={self.prompt_config.mask_size} must equal the chip size the vision tower "
            f"reads ({self.vision_config.input_size})",
        )
        _require(
            self.prompt_position_sincos >= 0 and self.prompt_position_sincos % 2 == 0,
            f"prompt_position_sincos must be even and >= 0, got {self.prompt_position_sincos}",
        )
        _require(
            self.count_classes >= 0 and self.count_max >= 1,
            f"count_classes must be >= 0 and count_max >= 1, got {self.count_classes} and {self.count_max}",
        )
        _require(
            0.0 < self.count_threshold < 1.0,
            f"count_threshold is a centre probability in (0, 1), got {self.count_threshold}",
        )
        _require(
            not self.count_number_ids or len(self.count_number_ids) == self.count_max + 1,
            f"count_number_ids holds the ids of 0..count_max ({self.count_max + 1} ids), got "
            f"{len(self.count_number_ids or [])}",
        )
        _require(
            self.count_window >= 1 and self.count_window % 2 == 1,
            f"count_window is an odd number of cells, got {self.count_window}",
        )
        _require(
            self.count_peaks in ("per_class", "across_classes"),
            f"count_peaks is 'per_class' or 'across_classes', got {self.count_peaks!r}",
        )
        _require(
            self.count_classes == 0 or self.vision_config.num_views == 1,
            "count_classes needs a single-view vision tower (the sum over views would count objects twice), "
            f"got num_views={self.vision_config.num_views}",
        )
        _require(
            self.mask_decoder_hidden_size >= 8,
            f"mask_decoder_hidden_size must be >= 8, got {self.mask_decoder_hidden_size}",
        )

    # ------------------------------------------------------------------ derived sizes
    @property
    def num_image_tokens(self) -> int:
        """How many LLM tokens one ``<image>`` expands to."""
        per_view = (self.vision_config.grid_size // self.projector_downsample) ** 2
        return per_view * self.vision_config.num_views + self.count_tokens

    @property
    def tokens_per_prompt(self) -> int:
        """How many LLM tokens one ``<regionI>`` expands to."""
        return int(self.prompt_config.tokens_per_prompt) + self.count_tokens

    @property
    def count_tokens(self) -> int:
        """How many count tokens (one per class: its name plus its count) follow the image's and each prompt's
        tokens."""
        return self.count_classes

    @property
    def max_prompts(self) -> int:
        return int(self.prompt_config.max_prompts)

    @property
    def image_size(self) -> int:
        """Side of the chip (``pixel_values`` and prompt masks) the model expects."""
        return int(self.vision_config.input_size)

    # ------------------------------------------------------------------ presets
    @classmethod
    def tiny(cls, tokenizer: Any = None, **overrides: Any) -> EarthGPTXConfig:
        """A few million parameters, 128 px chips; trains on a CPU.

        ``tokenizer`` (optional) supplies the vocabulary size and special token ids; ``overrides`` replace
        top-level fields or whole sub-config dicts.
        """
        vision = {
            "image_size": 128,
            "num_views": 1,
            "convnext_config": {
                "hidden_sizes": [32, 64, 128, 192],
                "depths": [1, 1, 2, 1],
                "layer_norm_eps": 1e-6,
            },
            "dinov2_config": {
                "hidden_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "mlp_ratio": 2,
                "patch_size": 8,
                "layerscale_value": 1.0,
            },
        }
        prompt = {
            "max_prompts": 8,
            "mask_size": 128,
            "patch_size": 16,
            "hidden_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "mlp_ratio": 2,
            "tokens_per_prompt": 4,
        }
        fusion = {"hidden_size": 192, "num_hidden_layers": 2, "num_attention_heads": 4, "mlp_ratio": 2}
        text = {
            "vocab_size": 1600,
            "hidden_size": 256,
            "intermediate_size": 688,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "max_position_embeddings": 1024,
            "rms_norm_eps": 1e-6,
            "pad_token_id": 0,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "tie_word_embeddings": False,
        }
        fields: dict[str, Any] = {
            "vision_config": vision,
            "prompt_config": prompt,
            "fusion_config": fusion,
            "text_config": text,
            "projector_downsample": 2,
            "mask_decoder_hidden_size": 64,
            "prompt_position_features": True,
        }
        return cls._build(fields, tokenizer, overrides)

    @classmethod
    def paper(cls, tokenizer: Any = None, **overrides: Any) -> EarthGPTXConfig:
        """DINOv2-L/14 + ConvNeXt-L at 448 px + a 7B Llama-shaped LLM (the paper's scale)."""
        vision = {
            "image_size": 448,
            "num_views": 1,
            "convnext_config": {
                "hidden_sizes": [192, 384, 768, 1536],
                "depths": [3, 3, 27, 3],
                "layer_norm_eps": 1e-6,
            },
            "dinov2_config": {
                "hidden_size": 1024,
                "num_hidden_layers": 24,
                "num_attention_heads": 16,
                "mlp_ratio": 4,
                "patch_size": 14,
                "layerscale_value": 1e-5,
            },
        }
        prompt = {
            "max_prompts": 8,
            "mask_size": 448,
            "patch_size": 28,
            "hidden_size": 384,
            "num_hidden_layers": 6,
            "num_attention_heads": 6,
            "mlp_ratio": 4,
            "tokens_per_prompt": 8,
        }
        fusion = {"hidden_size": 1024, "num_hidden_layers": 2, "num_attention_heads": 16, "mlp_ratio": 4}
        text = {
            "vocab_size": 32000 + 2 + 8,
            "hidden_size": 4096,
            "intermediate_size": 11008,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 32,
            "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-5,
            "pad_token_id": 0,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "tie_word_embeddings": False,
        }
        fields: dict[str, Any] = {
            "vision_config": vision,
            "prompt_config": prompt,
            "fusion_config": fusion,
            "text_config": text,
            "projector_downsample": 1,
            "mask_decoder_hidden_size": 128,
            "prompt_position_features": True,
            # A Llama tokenizer has 32000 ids; <image>, [SEG] and <region1..8> are appended after them.
            "image_token_id": 32000,
            "seg_token_id": 32001,
            "region_token_ids": list(range(32002, 32010)),
        }
        return cls._build(fields, tokenizer, overrides)

    @classmethod
    def _build(cls, fields: dict[str, Any], tokenizer: Any, overrides: dict[str, Any]) -> EarthGPTXConfig:
        for key, value in overrides.items():
            if (
                key in cls.sub_configs_defaults
                and isinstance(value, dict)
                and isinstance(fields.get(key), dict)
            ):
                merged = dict(fields[key])
                for sub_key, sub_value in value.items():
                    if isinstance(sub_value, dict) and isinstance(merged.get(sub_key), dict):
                        merged[sub_key] = {**merged[sub_key], **sub_value}
                    else:
                        merged[sub_key] = sub_value
                fields[key] = merged
            else:
                fields[key] = value
        if tokenizer is not None:
            fields.update(token_ids_from_tokenizer(tokenizer, int(fields["prompt_config"]["max_prompts"])))
            fields["text_config"] = {**fields["text_config"], **fields.pop("_text_ids")}
        return cls(**fields)


def token_ids_from_tokenizer(tokenizer: Any, max_prompts: int) -> dict[str, Any]:
    """Special token ids (and vocabulary size) a config needs, read from a transformers tokenizer."""
    def token_id(token: str) -> int:
        value = tokenizer.convert_tokens_to_ids(token)
        if value is None or value == tokenizer.unk_token_id:
            raise ValueError(f"tokenizer has no token {token!r}; add the EarthGPT-X special tokens first")
        return int(value)

    return {
        "image_token_id": token_id(IMAGE_TOKEN),
        "seg_token_id": token_id(SEG_TOKEN),
        "region_token_ids": [token_id(region_token(i + 1)) for i in range(max_prompts)],
        "_text_ids": {
            "vocab_size": len(tokenizer),
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
        },
    }


__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "NUM_BAND_SLOTS",
    "EarthGPTXConfig",
    "EarthGPTXFusionConfig",
    "EarthGPTXPromptConfig",
    "EarthGPTXVisionConfig",
    "token_ids_from_tokenizer",
]
