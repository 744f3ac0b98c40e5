"""The EarthGPT-X network (docs/architecture.md), laid out like transformers' LLaVA.

Parts, named for their role:

- ``vision_tower``: a per-modality band adapter (13 band slots → 3 channels), then a ConvNeXt branch whose four
  stage outputs are resampled to the DINOv2 patch grid, and a DINOv2 branch; both are concatenated per token.
- ``prompt_encoder``: a randomly initialised ViT over each visual prompt's rasterised mask; K learned query
  tokens per prompt summarise it.
- ``fusion``: per layer, self-attention over image tokens, a feed-forward layer over prompt tokens,
  cross-attention from prompts to image (biased towards the tokens the prompt covers) and self-attention over
  the prompt tokens of a request.
- ``multi_modal_projector``: MLPs into the LLM's hidden size (image tokens optionally merged r×r), plus a learned
  modality embedding.
- ``language_model``: a Llama-family ``*ForCausalLM``; ``<image>`` and ``<regionI>`` placeholder tokens are
  replaced by projected tokens.
- ``mask_decoder``: pixel perception; a dynamic kernel computed from the hidden state that predicts a ``[SEG]``
  token, applied to a high-resolution pixel feature map (ConvNeXt stride-4/8 features + fused tokens + image).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    ConvNextModel,
    Dinov2Model,
    GenerationConfig,
    LogitsProcessorList,
    PreTrainedModel,
)
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.utils import ModelOutput

from earthgptx.model.configuration_earthgptx import (
    EarthGPTXConfig,
    EarthGPTXFusionConfig,
    EarthGPTXPromptConfig,
    EarthGPTXVisionConfig,
)
from earthgptx.model.counting_earthgptx import (
    CountCopyLogitsProcessor,
    CountCopyResult,
    CountSources,
    EarthGPTXCountCopy,
    EarthGPTXCountingPath,
    copy_positions,
    count_copy_loss,
    count_number_tensor,
    count_source_key,
    count_sources,
)

logger = logging.getLogger(__name__)

# Checkpoints written before the counting path had a module of its own (the shipped models/earthgptx-tiny among
# them) hold its weights under the projector; ``from_pretrained`` reads them under their present names.
CHECKPOINT_KEY_MAPPING: dict[str, str] = {r"^multi_modal_projector\.count_": "counting_path.count_"}


# ---------------------------------------------------------------------------------------------------- outputs
@dataclass
class EarthGPTXVisionOutput:
    """Everything the vision side produces (what the ONNX graph returns).

    Args:
        image_tokens: ``(batch, num_image_tokens, text_hidden)`` — replaces the ``<image>`` placeholders.
        prompt_tokens: ``(batch, num_prompts, tokens_per_prompt, text_hidden)`` — token ``k`` of prompt ``i``
            replaces the ``k``-th placeholder of ``<region{i+1}>``; rows of invalid prompts are zero.
        mask_features: ``(batch, mask_decoder_hidden, image_size / 2, image_size / 2)`` — the pixel feature map
            the mask decoder applies its ``[SEG]`` kernels to.
        centre_logits: ``(batch, count_classes, image_size / 2, image_size / 2)`` — the counting path's
            object-centre heatmap logits (``None`` without the path; not part of the ONNX graph, which returns what
            the counts add to the tokens).
        count_mix: ``(batch, count_classes, count_max + 1)`` — the counting path's whole-image count of each class
            as weights over the numbers ``0..count_max`` (a one-hot for a whole count; ``None`` without the path).
        region_count_mix: ``(batch, num_prompts, count_classes, count_max + 1)`` — the same inside each prompt.
    """

    image_tokens: torch.Tensor
    prompt_tokens: torch.Tensor
    mask_features: torch.Tensor
    centre_logits: torch.Tensor | None = None
    count_mix: torch.Tensor | None = None
    region_count_mix: torch.Tensor | None = None


@dataclass
class EarthGPTXOutput(ModelOutput):
    """Output of ``EarthGPTXForConditionalGeneration.forward``.

    Args:
        loss: scalar, ``lm_loss + mask_loss + copy_loss`` (the parts that were computed).
        lm_loss: scalar, next-token cross-entropy over the tokens whose label is not ``ignore_index``.
        mask_loss: scalar, the weighted BCE + dice of the ``[SEG]`` masks (only when ``target_masks`` given).
        logits: ``(batch, seq_len, vocab_size)``, whose softmax is the next-token distribution. With the count copy,
            the row of each answer's first position holds log-probabilities with the copied count mixed in.
        mask_logits: ``(num_seg, image_size, image_size)`` — one mask per ``[SEG]`` token in ``input_ids``,
            in row-major order (sample, then position); ``None`` when there is none.
        seg_batch_index: ``(num_seg,)`` — the sample each mask belongs to.
        image_tokens: ``(batch, num_image_tokens, text_hidden)``.
        prompt_tokens: ``(batch, num_prompts, tokens_per_prompt, text_hidden)``.
        mask_features: ``(batch, mask_decoder_hidden_size, S/2, S/2)``, the mask decoder's pixel features.
        centre_logits: ``(batch, count_classes, S/2, S/2)``, the counting path's object-centre heatmap logits (or
            ``None``).
        copy_loss: scalar, the count copy's supervision (only when ``count_targets`` given; see
            ``EarthGPTXForConditionalGeneration.count_copy_loss``); part of ``loss``.
    """

    loss: torch.Tensor | None = None
    lm_loss: torch.Tensor | None = None
    mask_loss: torch.Tensor | None = None
    copy_loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    mask_logits: torch.Tensor | None = None
    seg_batch_index: torch.Tensor | None = None
    image_tokens: torch.Tensor | None = None
    prompt_tokens: torch.Tensor | None = None
    mask_features: torch.Tensor | None = None
    centre_logits: torch.Tensor | None = None


@dataclass
class EarthGPTXGenerateOutput(ModelOutput):
    """Output of ``EarthGPTXForConditionalGeneration.generate``.

    Args:
        sequences: ``(batch, num_new_tokens)`` — the generated ids only (no prompt), padded with the pad id after
            each sample's end-of-sequence.
        mask_logits: ``(num_seg, image_size, image_size)`` — one mask per generated ``[SEG]``, in row-major order;
            ``None`` when none was generated (or ``return_masks=False``).
        seg_batch_index: ``(num_seg,)`` — the sample each mask belongs to.
        seg_token_index: ``(num_seg,)`` — the position of that ``[SEG]`` in ``sequences``.
    """

    sequences: torch.Tensor | None = None
    mask_logits: torch.Tensor | None = None
    seg_batch_index: torch.Tensor | None = None
    seg_token_index: torch.Tensor | None = None


# ---------------------------------------------------------------------------------------------------- positions
def sincos_1d(positions: torch.Tensor, dim: int, max_period: float, min_period: float = 2.0) -> torch.Tensor:
    """Sine/cosine features ``(..., dim)`` of real ``positions``; periods from ``max_period`` down to
    ``min_period``, geometrically spaced."""
    half = dim // 2
    exponents = torch.arange(half, device=positions.device, dtype=torch.float32) / max(half - 1, 1)
    frequencies = (2 * math.pi / max_period) * (max_period / min_period) ** exponents
    angles = positions.float().unsqueeze(-1) * frequencies
    features = torch.cat([angles.sin(), angles.cos()], dim=-1)
    return F.pad(features, (0, dim - 2 * half))


def sincos_2d(grid: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sine/cosine position features ``(grid * grid, dim)``, row-major (half the channels per axis)."""
    coords = torch.arange(grid, dtype=torch.float32)
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    half = dim // 2
    period = 2.0 * grid
    return torch.cat(
        [sincos_1d(xs.flatten(), half, period), sincos_1d(ys.flatten(), dim - half, period)], dim=-1
    )


# ---------------------------------------------------------------------------------------------------- blocks
class EarthGPTXAttention(nn.Module):
    """Multi-head attention (self or cross) on ``scaled_dot_product_attention``, with an additive bias."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.o_proj = nn.Linear(dim, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def forward(
        self, hidden: torch.Tensor, context: torch.Tensor | None = None, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``hidden`` ``(B, Lq, D)`` attends to ``context`` ``(B, Lk, D)`` (itself if None); ``bias`` broadcasts
        to ``(B, heads, Lq, Lk)``."""
        context = hidden if context is None else context
        q = self._heads(self.q_proj(hidden))
        k = self._heads(self.k_proj(context))
        v = self._heads(self.v_proj(context))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.o_proj(out.transpose(1, 2).flatten(2))


class EarthGPTXMLP(nn.Module):
    def __init__(self, dim: int, hidden: int, out_dim: int | None = None, act: str = "gelu") -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = ACT2FN[act]
        self.fc2 = nn.Linear(hidden, out_dim or dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class EarthGPTXEncoderBlock(nn.Module):
    """A pre-norm transformer block (self-attention + MLP)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int, eps: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = EarthGPTXAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = EarthGPTXMLP(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), bias=bias)
        return x + self.mlp(self.norm2(x))


# ---------------------------------------------------------------------------------------------------- vision
class EarthGPTXBandAdapter(nn.Module):
    """A learned 1×1 mixing of the 13 band slots into 3 channels, one matrix per modality."""

    def __init__(self, num_modalities: int, num_band_slots: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_modalities, 3, num_band_slots))
        self.bias = nn.Parameter(torch.empty(num_modalities, 3))

    def reset_custom_parameters(self) -> None:
        # Start from a physically sensible picture per modality so pretrained RGB encoders see something
        # familiar: RGB for optical, true colour from the Sentinel-2 slots for multispectral, the co-pol band
        # (plus a little cross-pol) for SAR, and the thermal band for infrared.
        weight = torch.zeros_like(self.weight)
        weight[0, 0, 0] = weight[0, 1, 1] = weight[0, 2, 2] = 1.0
        if weight.shape[0] > 1:
            weight[1, 0, 3] = weight[1, 1, 2] = weight[1, 2, 1] = 1.0
        if weight.shape[0] > 2:
            weight[2, :, 0] = 0.8
            weight[2, :, 1] = 0.2
        if weight.shape[0] > 3:
            # false colour: absolute temperature (slot 1) in the first channel, the contrast stretch in the others
            weight[3, 0, 1] = 1.0
            weight[3, 1:, 0] = 1.0
        init.copy_(self.weight, weight)
        init.zeros_(self.bias)

    def forward(self, pixel_values: torch.Tensor, modality_ids: torch.Tensor) -> torch.Tensor:
        batch, slots, height, width = pixel_values.shape
        weight = self.weight[modality_ids]  # (B, 3, slots)
        mixed = torch.bmm(weight, pixel_values.reshape(batch, slots, height * width))
        mixed = mixed + self.bias[modality_ids].unsqueeze(-1)
        return mixed.reshape(batch, 3, height, width)


def split_views(x: torch.Tensor, num_views: int) -> torch.Tensor:
    """``(B, C, H, W)`` → ``(B * V, C, H / s, W / s)``: the global view, then (for 5 views) the four quadrants.

    With 5 views the input is twice the view size: the global view is its 2× average-pooled copy and each
    quadrant is a native-resolution zoom, so the zoomed views carry real extra detail.
    """
    if num_views == 1:
        return x
    height, width = x.shape[-2] // 2, x.shape[-1] // 2
    views = [
        F.avg_pool2d(x, 2),
        x[..., :height, :width],
        x[..., :height, width:],
        x[..., height:, :width],
        x[..., height:, width:],
    ]
    return torch.stack(views, dim=1).flatten(0, 1)


def cell_shares(masks: torch.Tensor, grid: int) -> torch.Tensor:
    """``(..., S, S)`` masks → ``(..., grid, grid)``: the mean of each cell (average-pooled when ``grid`` divides
    ``S``, adaptively otherwise), i.e. the share of the cell a mask covers."""
    if masks.shape[-1] % grid:
        return F.adaptive_avg_pool2d(masks, grid)
    return F.avg_pool2d(masks, masks.shape[-1] // grid)


def resample_to_grid(features: torch.Tensor, grid: int) -> torch.Tensor:
    """Average-pool (when the size divides) or bilinearly resample a ``(B, C, h, w)`` map to ``grid × grid``."""
    size = features.shape[-1]
    if size == grid:
        return features
    if size > grid and size % grid == 0:
        return F.avg_pool2d(features, size // grid)
    return F.interpolate(features, size=(grid, grid), mode="bilinear", align_corners=False)


@dataclass
class EarthGPTXTowerOutput:
    """Internal: ``image_features`` ``(B, V*g*g, feature_size)``; ``stride4`` / ``stride8`` the global view's
    ConvNeXt maps ``(B, C, S/4, S/4)`` / ``(B, C, S/8, S/8)``; ``adapted`` the band-adapted image ``(B, 3, S, S)``."""

    image_features: torch.Tensor
    stride4: torch.Tensor
    stride8: torch.Tensor
    adapted: torch.Tensor


class EarthGPTXVisionTower(nn.Module):
    def __init__(self, config: EarthGPTXVisionConfig) -> None:
        super().__init__()
        self.config = config
        self.band_adapter = EarthGPTXBandAdapter(config.num_modalities, config.num_band_slots)
        self.convnext = ConvNextModel(config.convnext_config)
        self.dinov2 = Dinov2Model(config.dinov2_config)
        # The ConvNeXt pooled-output norm is not used (we read the stage maps); drop it from the parameters.
        self.convnext.layernorm = nn.Identity()  # type: ignore[assignment]

    def forward(self, pixel_values: torch.Tensor, modality_ids: torch.Tensor) -> EarthGPTXTowerOutput:
        num_views = self.config.num_views
        grid = self.config.grid_size
        adapted = self.band_adapter(pixel_values, modality_ids)
        views = split_views(adapted, num_views)
        hidden = self.convnext.embeddings(views)
        stage_maps = []
        for stage in self.convnext.encoder.stages:
            hidden = stage(hidden)
            stage_maps.append(hidden)
        conv_tokens = (
            torch.cat([resample_to_grid(m, grid) for m in stage_maps], dim=1).flatten(2).transpose(1, 2)
        )
        # DINOv2's own forward builds an all-ones attention mask when traced for export (it cannot prove the mask
        # away there), which costs a masked softmax over every attention matrix in the ONNX graph; without
        # padding there is nothing to mask, so run its parts directly (the same computation, mask-free).
        dino = self.dinov2
        dino_hidden = dino.encoder(dino.embeddings(views)).last_hidden_state
        dino_tokens = dino.layernorm(dino_hidden)[:, 1:]
        tokens = torch.cat([conv_tokens, dino_tokens], dim=-1)
        batch = pixel_values.shape[0]
        tokens = tokens.reshape(batch, num_views * grid * grid, tokens.shape[-1])
        stride4, stride8 = stage_maps[0], stage_maps[1]
        if num_views > 1:
            stride4 = stride4.unflatten(0, (batch, num_views))[:, 0]
            stride8 = stride8.unflatten(0, (batch, num_views))[:, 0]
            adapted = F.avg_pool2d(adapted, 2)
        return EarthGPTXTowerOutput(image_features=tokens, stride4=stride4, stride8=stride8, adapted=adapted)


# ---------------------------------------------------------------------------------------------------- prompts
class EarthGPTXPromptEncoder(nn.Module):
    """A ViT over one-channel prompt masks. Returns ``(B, N, K, hidden)``.

    The patch embedding is a linear map of every pixel of a patch, so a prompt's exact position inside a patch
    survives; the learned position embeddings tell the K query tokens where the patches are.
    """

    def __init__(self, config: EarthGPTXPromptConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.hidden_size
        num_patches = (config.mask_size // config.patch_size) ** 2
        self.patch_embed = nn.Conv2d(1, dim, kernel_size=config.patch_size, stride=config.patch_size)
        self.position_embeddings = nn.Parameter(torch.empty(1, num_patches, dim))
        self.query_tokens = nn.Parameter(torch.empty(1, config.tokens_per_prompt, dim))
        self.layers = nn.ModuleList(
            EarthGPTXEncoderBlock(dim, config.num_attention_heads, config.mlp_ratio, config.layer_norm_eps)
            for _ in range(config.num_hidden_layers)
        )
        self.norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)

    def reset_custom_parameters(self) -> None:
        # 2-D sine/cosine positions (learnable from there): where a prompt lies is most of what it says.
        side = self.config.mask_size // self.config.patch_size
        init.copy_(self.position_embeddings, sincos_2d(side, self.config.hidden_size).unsqueeze(0))
        init.trunc_normal_(self.query_tokens, std=0.02)

    def forward(self, prompt_masks: torch.Tensor) -> torch.Tensor:
        batch, num_prompts, height, width = prompt_masks.shape
        flat = prompt_masks.reshape(batch * num_prompts, 1, height, width)
        patches = self.patch_embed(flat).flatten(2).transpose(1, 2) + self.position_embeddings
        queries = self.query_tokens.expand(patches.shape[0], -1, -1)
        hidden = torch.cat([queries, patches], dim=1)
        for layer in self.layers:
            hidden = layer(hidden)
        k = self.config.tokens_per_prompt
        out = self.norm(hidden[:, :k])
        return out.reshape(batch, num_prompts, k, out.shape[-1])


# ---------------------------------------------------------------------------------------------------- fusion
class EarthGPTXFusionLayer(nn.Module):
    def __init__(self, config: EarthGPTXFusionConfig) -> None:
        super().__init__()
        dim, heads, ratio, eps = (
            config.hidden_size,
            config.num_attention_heads,
            config.mlp_ratio,
            config.layer_norm_eps,
        )
        self.image_block = EarthGPTXEncoderBlock(dim, heads, ratio, eps)
        self.prompt_ffn_norm = nn.LayerNorm(dim, eps=eps)
        self.prompt_ffn = EarthGPTXMLP(dim, dim * ratio)
        self.cross_norm = nn.LayerNorm(dim, eps=eps)
        self.cross_context_norm = nn.LayerNorm(dim, eps=eps)
        self.cross_attn = EarthGPTXAttention(dim, heads)
        # Per-head weight of the "look where the prompt is" bias of the cross-attention.
        self.coverage_scale = nn.Parameter(torch.empty(heads))
        self.prompt_self_norm = nn.LayerNorm(dim, eps=eps)
        self.prompt_self_attn = EarthGPTXAttention(dim, heads)

    def reset_custom_parameters(self) -> None:
        init.constant_(self.coverage_scale, 4.0)

    def forward(
        self,
        image: torch.Tensor,
        prompts: torch.Tensor,
        coverage: torch.Tensor,
        prompt_bias: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``image`` ``(B, T, D)``, ``prompts`` ``(B, NK, D)``, ``coverage`` ``(B, NK, T)`` in [0, 1],
        ``prompt_bias`` ``(B, 1, NK, NK)`` additive."""
        image = self.image_block(image)
        prompts = prompts + self.prompt_ffn(self.prompt_ffn_norm(prompts))
        cross_bias = coverage.unsqueeze(1) * self.coverage_scale.view(1, -1, 1, 1).to(coverage.dtype)
        prompts = prompts + self.cross_attn(
            self.cross_norm(prompts), context=self.cross_context_norm(image), bias=cross_bias
        )
        prompts = prompts + self.prompt_self_attn(self.prompt_self_norm(prompts), bias=prompt_bias)
        return image, prompts


class EarthGPTXFusion(nn.Module):
    """Fuses image tokens ``(B, T, F)`` and prompt tokens ``(B, N, K, P)`` into ``(B, T, D)`` and ``(B, N, K, D)``."""

    def __init__(self, config: EarthGPTXConfig) -> None:
        super().__init__()
        fusion = config.fusion_config
        vision = config.vision_config
        dim = fusion.hidden_size
        self.num_views = vision.num_views
        self.grid_size = vision.grid_size
        num_tokens = vision.num_views * vision.grid_size**2
        self.image_in = nn.Linear(vision.feature_size, dim)
        self.image_in_norm = nn.LayerNorm(dim, eps=fusion.layer_norm_eps)
        self.image_positions = nn.Parameter(torch.empty(1, num_tokens, dim))
        self.prompt_in = nn.Linear(config.prompt_config.hidden_size, dim)
        # Mask-pooled image content of each prompt's region, added to its tokens before fusion.
        self.region_pool = nn.Linear(dim, dim)
        self.layers = nn.ModuleList(EarthGPTXFusionLayer(fusion) for _ in range(fusion.num_hidden_layers))
        self.image_norm = nn.LayerNorm(dim, eps=fusion.layer_norm_eps)
        self.prompt_norm = nn.LayerNorm(dim, eps=fusion.layer_norm_eps)

    def reset_custom_parameters(self) -> None:
        # 2-D sine/cosine positions per view (learnable from there), so image tokens know where they are.
        per_view = sincos_2d(self.grid_size, self.image_positions.shape[-1])
        init.copy_(self.image_positions, per_view.repeat(self.num_views, 1).unsqueeze(0))

    def coverage(self, prompt_masks: torch.Tensor) -> torch.Tensor:
        """Fraction of each image token's cell covered by each prompt: ``(B, N, S, S)`` → ``(B, N, V*g*g)``."""
        batch, num_prompts = prompt_masks.shape[:2]
        views = split_views(prompt_masks.flatten(0, 1).unsqueeze(1), self.num_views)
        return cell_shares(views, self.grid_size).reshape(batch, num_prompts, -1)

    def forward(
        self,
        image_features: torch.Tensor,
        prompt_features: torch.Tensor,
        prompt_masks: torch.Tensor,
        prompt_valid: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch, num_prompts, k, _ = prompt_features.shape
        image = self.image_in_norm(self.image_in(image_features)) + self.image_positions
        prompts = self.prompt_in(prompt_features)

        cover = self.coverage(prompt_masks.to(image.dtype))  # (B, N, T)
        pool_weights = cover / cover.sum(-1, keepdim=True).clamp_min(1e-6)
        region_content = torch.bmm(pool_weights, image)  # (B, N, D)
        prompts = prompts + self.region_pool(region_content).unsqueeze(2)
        # Normalise per prompt so that a point (covering a sliver of one cell) biases as strongly as a box.
        cover = cover / cover.amax(-1, keepdim=True).clamp_min(1e-6)
        cover = cover.repeat_interleave(k, dim=1)  # (B, N*K, T)

        # Prompt tokens may attend to tokens of valid prompts and always to their own prompt's tokens.
        prompt_of_token = torch.arange(num_prompts, device=image.device).repeat_interleave(k)
        same_prompt = prompt_of_token.unsqueeze(0) == prompt_of_token.unsqueeze(1)  # (NK, NK)
        key_valid = prompt_valid.bool().repeat_interleave(k, dim=1)  # (B, NK)
        allowed = same_prompt.unsqueeze(0) | key_valid.unsqueeze(1)
        prompt_bias = torch.zeros(allowed.shape, dtype=image.dtype, device=image.device)
        prompt_bias = prompt_bias.masked_fill(~allowed, float("-inf")).unsqueeze(1)

        prompts = prompts.reshape(batch, num_prompts * k, -1)
        for layer in self.layers:
            image, prompts = layer(image, prompts, cover, prompt_bias)
        image = self.image_norm(image)
        prompts = self.prompt_norm(prompts).reshape(batch, num_prompts, k, -1)
        return image, prompts


# ---------------------------------------------------------------------------------------------------- projector
class EarthGPTXZeroLinear(nn.Linear):
    """A linear map that starts at zero, whatever order the initialisation visits modules in: an added part that
    starts as a no-op, so a checkpoint trained without it behaves the same when loaded with it."""

    def reset_custom_parameters(self) -> None:
        init.zeros_(self.weight)
        init.zeros_(self.bias)


class EarthGPTXMultiModalProjector(nn.Module):
    """Maps fused tokens into the LLM's hidden size; adds the modality embedding to image tokens (and, with
    ``prompt_position_features``, the position features of each prompt to its tokens)."""

    def __init__(self, config: EarthGPTXConfig) -> None:
        super().__init__()
        dim = config.fusion_config.hidden_size
        text_hidden = config.text_config.hidden_size
        r = config.projector_downsample
        self.downsample = r
        self.num_views = config.vision_config.num_views
        self.grid_size = config.vision_config.grid_size
        self.image_proj = EarthGPTXMLP(dim * r * r, text_hidden, text_hidden, config.projector_hidden_act)
        self.prompt_proj = EarthGPTXMLP(dim, text_hidden, text_hidden, config.projector_hidden_act)
        self.modality_embedding = nn.Embedding(config.vision_config.num_modalities, text_hidden)
        self.prompt_position: nn.Linear | None = None
        self.position_sincos = config.prompt_position_sincos
        if config.prompt_position_features:
            self.prompt_position = EarthGPTXZeroLinear(3 + 3 * self.position_sincos, text_hidden)

    def position_features(self, prompt_masks: torch.Tensor) -> torch.Tensor:
        """``(B, N, S, S)`` masks → ``(B, N, 3 + 3F)``: the centroid (x, y) and its distance from the chip centre,
        each as a value in about [-1, 1] and as F (``prompt_position_sincos``) sine/cosine features of its pixel
        value, with periods from 4 chip sides down to 4 pixels.

        The frequencies are computed here, not kept in a buffer: ``from_pretrained`` builds the model on the meta
        device and would leave a non-persistent buffer uninitialised."""
        masks = prompt_masks.float()
        size = masks.shape[-1]
        coords = torch.arange(size, device=masks.device, dtype=torch.float32) + 0.5
        mass = masks.sum((-2, -1)).clamp_min(1e-6)
        x = (masks.sum(-2) * coords).sum(-1) / mass
        y = (masks.sum(-1) * coords).sum(-1) / mass
        centre = size / 2.0
        r = torch.sqrt((x - centre) ** 2 + (y - centre) ** 2)
        values = torch.stack([x, y, r], dim=-1)  # (B, N, 3) in pixels
        scaled = (values - centre) / centre
        if self.position_sincos == 0:
            return scaled
        # (B, N, 3, F): periods from 4 chip sides (monotonic across the chip) down to 4 pixels
        sincos = sincos_1d(values, self.position_sincos, max_period=4.0 * size, min_period=4.0)
        return torch.cat([scaled, sincos.flatten(-2)], dim=-1)

    def merge_neighbours(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, V*g*g, D)`` → ``(B, V*(g/r)^2, r*r*D)``: each r×r block of tokens becomes one token."""
        r = self.downsample
        if r == 1:
            return image
        batch, _, dim = image.shape
        g, v = self.grid_size, self.num_views
        x = image.reshape(batch * v, g // r, r, g // r, r, dim).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(batch, v * (g // r) ** 2, r * r * dim)

    def forward(
        self,
        image: torch.Tensor,
        prompts: torch.Tensor,
        modality_ids: torch.Tensor,
        prompt_masks: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``image`` ``(B, V*g*g, D)``, ``prompts`` ``(B, N, K, D)`` → image tokens ``(B, T, H)`` and prompt tokens
        ``(B, N, K, H)``; ``prompt_masks`` ``(B, N, S, S)`` is needed with ``prompt_position_features``."""
        image_tokens = self.image_proj(self.merge_neighbours(image))
        image_tokens = image_tokens + self.modality_embedding(modality_ids).unsqueeze(1)
        prompt_tokens = self.prompt_proj(prompts)
        if self.prompt_position is not None:
            if prompt_masks is None:
                raise ValueError("this model adds prompt position features: pass prompt_masks")
            features = self.position_features(prompt_masks).to(self.prompt_position.weight.dtype)
            shift = self.prompt_position(features).unsqueeze(2)
            prompt_tokens = prompt_tokens + shift.to(prompt_tokens.dtype)
        return image_tokens, prompt_tokens


# ---------------------------------------------------------------------------------------------------- masks
MASK_POSITION_CHANNELS = 32


class EarthGPTXMaskDecoder(nn.Module):
    """Pixel perception: ``[SEG]`` hidden state + vision features → mask logits at chip resolution.

    ``pixel_features`` depends only on the image (so it is part of the ONNX vision graph);
    ``predict`` turns each ``[SEG]`` hidden state into a kernel (after attending to the pixel features of its
    sample) and takes its dot product with every pixel feature (half the view resolution), upsampled to the chip.
    """

    def __init__(self, config: EarthGPTXConfig) -> None:
        super().__init__()
        dm = config.mask_decoder_hidden_size
        conv_sizes = list(config.vision_config.convnext_config.hidden_sizes or ())
        groups = 8 if dm % 8 == 0 else 1
        self.grid_size = config.vision_config.grid_size
        # Masks come out at the chip size (twice the view size when the chip is read as 5 views).
        self.output_size = config.image_size
        self.grid_proj = nn.Conv2d(config.fusion_config.hidden_size, dm, 1)
        self.stride4_proj = nn.Conv2d(conv_sizes[0], dm, 1)
        self.stride8_proj = nn.Conv2d(conv_sizes[1], dm, 1)
        self.merge = nn.Sequential(nn.Conv2d(dm, dm, 3, padding=1), nn.GroupNorm(groups, dm), nn.GELU())
        self.upsample = nn.ConvTranspose2d(dm, dm, 2, stride=2)
        self.image_proj = nn.Conv2d(3, dm, 3, padding=1)
        # Fixed 2-D sine/cosine features of every pixel-feature position (a [SEG] kernel can then select a place),
        # mixed in by a learned 1x1 projection.
        self.feature_side = config.vision_config.image_size // 2
        self.register_buffer("position_features", self._positions(), persistent=False)
        self.position_proj = nn.Conv2d(MASK_POSITION_CHANNELS, dm, 1)
        self.refine = nn.Sequential(
            nn.Conv2d(dm, dm, 3, padding=1), nn.GroupNorm(groups, dm), nn.GELU(), nn.Conv2d(dm, dm, 1)
        )
        self.query_in = EarthGPTXMLP(config.text_config.hidden_size, dm * 2, dm)
        self.query_norm = nn.LayerNorm(dm)
        self.context_norm = nn.LayerNorm(dm)
        self.query_attn = EarthGPTXAttention(dm, max(1, dm // 32))
        self.kernel = EarthGPTXMLP(dm, dm * 2, dm)
        self.mask_bias = nn.Parameter(torch.empty(1))

    def _positions(self) -> torch.Tensor:
        side = self.feature_side
        features = sincos_2d(side, MASK_POSITION_CHANNELS).T
        return features.reshape(1, MASK_POSITION_CHANNELS, side, side)

    def reset_custom_parameters(self) -> None:
        init.zeros_(self.mask_bias)
        # A non-persistent buffer: recomputed here because from_pretrained builds the model on the meta device.
        buffer = self.position_features
        assert isinstance(buffer, torch.Tensor)
        init.copy_(buffer, self._positions())

    def pixel_features(
        self, fused_image: torch.Tensor, stride4: torch.Tensor, stride8: torch.Tensor, adapted: torch.Tensor
    ) -> torch.Tensor:
        """``fused_image`` ``(B, T, D)`` (global view first), ConvNeXt maps, adapted image → ``(B, dm, S/2, S/2)``."""
        batch, _, dim = fused_image.shape
        g = self.grid_size
        grid = fused_image[:, : g * g].transpose(1, 2).reshape(batch, dim, g, g)
        size4 = stride4.shape[-2:]
        x = self.stride4_proj(stride4)
        x = x + F.interpolate(self.stride8_proj(stride8), size=size4, mode="bilinear", align_corners=False)
        x = x + F.interpolate(self.grid_proj(grid), size=size4, mode="bilinear", align_corners=False)
        x = self.upsample(self.merge(x))
        x = x + self.image_proj(F.avg_pool2d(adapted, 2))
        x = x + self.position_proj(self.position_features.to(x.dtype))
        return self.refine(x)

    def predict(self, seg_hidden: torch.Tensor, pixel_features: torch.Tensor) -> torch.Tensor:
        """``seg_hidden`` ``(M, H)``, ``pixel_features`` ``(M, dm, h, w)`` (of each mask's sample) → ``(M, S, S)``."""
        query = self.query_in(seg_hidden.to(pixel_features.dtype)).unsqueeze(1)  # (M, 1, dm)
        context = F.adaptive_avg_pool2d(pixel_features, self.grid_size).flatten(2).transpose(1, 2)
        query = query + self.query_attn(self.query_norm(query), context=self.context_norm(context))
        kernel = self.kernel(query).squeeze(1)  # (M, dm)
        logits = torch.einsum("md,mdhw->mhw", kernel, pixel_features) / math.sqrt(kernel.shape[-1])
        logits = logits + self.mask_bias
        size = (self.output_size, self.output_size)
        return F.interpolate(logits.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)


def mask_losses(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean per-pixel BCE and mean soft dice loss of ``(M, S, S)`` logits against ``(M, S, S)`` targets in [0, 1]."""
    targets = targets.to(logits.dtype)
    bce = F.binary_cross_entropy_with_logits(logits, targets)
    probs = logits.sigmoid().flatten(1)
    flat = targets.flatten(1)
    dice = 1 - (2 * (probs * flat).sum(-1) + 1) / (probs.sum(-1) + flat.sum(-1) + 1)
    return bce, dice.mean()


# ---------------------------------------------------------------------------------------------------- model
class VisionParts(Protocol):
    """Anything holding the vision-side parts under their names (the model, or the ONNX wrapper); ``counting_path``
    is ``None`` without the counting path."""

    vision_tower: EarthGPTXVisionTower
    prompt_encoder: EarthGPTXPromptEncoder
    fusion: EarthGPTXFusion
    multi_modal_projector: EarthGPTXMultiModalProjector
    mask_decoder: EarthGPTXMaskDecoder
    counting_path: EarthGPTXCountingPath | None


def run_vision_side(
    parts: VisionParts,
    pixel_values: torch.Tensor,
    modality_ids: torch.Tensor,
    prompt_masks: torch.Tensor,
    prompt_valid: torch.Tensor,
    centre_maps: torch.Tensor | None = None,
) -> EarthGPTXVisionOutput:
    """The vision side, shared by ``encode_vision`` and the ONNX export wrapper (which holds only these parts);
    ``centre_maps`` replaces the counting path's detected centres (teacher forcing in training)."""
    dtype = parts.vision_tower.band_adapter.weight.dtype
    pixel_values = pixel_values.to(dtype)
    prompt_masks = prompt_masks.to(dtype)
    tower = parts.vision_tower(pixel_values, modality_ids)
    prompt_features = parts.prompt_encoder(prompt_masks)
    fused_image, fused_prompts = parts.fusion(
        tower.image_features, prompt_features, prompt_masks, prompt_valid
    )
    mask_features = parts.mask_decoder.pixel_features(
        fused_image, tower.stride4, tower.stride8, tower.adapted
    )
    image_tokens, prompt_tokens = parts.multi_modal_projector(
        fused_image, fused_prompts, modality_ids, prompt_masks
    )
    counting = None
    if parts.counting_path is not None:
        with torch.autocast(device_type=mask_features.device.type, enabled=False):
            cover = cell_shares(prompt_masks.float(), mask_features.shape[-1])  # (B, N, P, P)
        counting = parts.counting_path(mask_features, cover, centre_maps)
        # the count tokens follow the image's grid tokens and each prompt's K tokens
        image_tokens = torch.cat([image_tokens, counting.image_count_tokens.to(image_tokens.dtype)], dim=1)
        prompt_tokens = torch.cat(
            [prompt_tokens, counting.region_count_tokens.to(prompt_tokens.dtype)], dim=2
        )
    prompt_tokens = prompt_tokens * prompt_valid.to(prompt_tokens.dtype)[:, :, None, None]
    return EarthGPTXVisionOutput(
        image_tokens=image_tokens,
        prompt_tokens=prompt_tokens,
        mask_features=mask_features,
        centre_logits=None if counting is None else counting.centre_logits,
        count_mix=None if counting is None else counting.count_mix,
        region_count_mix=None if counting is None else counting.region_count_mix,
    )


class EarthGPTXPreTrainedModel(PreTrainedModel):
    config_class = EarthGPTXConfig
    config: EarthGPTXConfig
    base_model_prefix = ""
    main_input_name = "input_ids"
    input_modalities = ["image", "text"]
    supports_gradient_checkpointing = True
    _no_split_modules = ["LlamaDecoderLayer", "Dinov2Layer", "ConvNextLayer", "EarthGPTXFusionLayer"]
    _supports_sdpa = True
    _supports_flash_attn = False

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        reset = getattr(module, "reset_custom_parameters", None)
        if callable(reset):
            reset()


class EarthGPTXForConditionalGeneration(EarthGPTXPreTrainedModel):
    """EarthGPT-X: hybrid vision tower + visual-prompt encoder + fusion + projector + Llama LM + mask decoder."""

    def __init__(self, config: EarthGPTXConfig) -> None:
        super().__init__(config)
        self.vision_tower = EarthGPTXVisionTower(config.vision_config)
        self.prompt_encoder = EarthGPTXPromptEncoder(config.prompt_config)
        self.fusion = EarthGPTXFusion(config)
        self.multi_modal_projector = EarthGPTXMultiModalProjector(config)
        self.language_model = AutoModelForCausalLM.from_config(config.text_config)
        self.mask_decoder = EarthGPTXMaskDecoder(config)
        counting = config.count_classes > 0
        self.counting_path = EarthGPTXCountingPath(config) if counting else None
        self.count_copy = EarthGPTXCountCopy(config.text_config.hidden_size) if counting else None
        self.post_init()

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls, pretrained_model_name_or_path: Any, *model_args: Any, **kwargs: Any
    ) -> EarthGPTXForConditionalGeneration:
        """``PreTrainedModel.from_pretrained``, reading older weight names through ``CHECKPOINT_KEY_MAPPING``."""
        kwargs.setdefault("key_mapping", CHECKPOINT_KEY_MAPPING)
        return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ LM plumbing
    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def resize_token_embeddings(
        self,
        new_num_tokens: int | None = None,
        pad_to_multiple_of: int | None = None,
        mean_resizing: bool = True,
    ) -> nn.Embedding:
        embeddings = self.language_model.resize_token_embeddings(
            new_num_tokens, pad_to_multiple_of, mean_resizing
        )
        self.config.text_config.vocab_size = embeddings.num_embeddings
        return embeddings

    # ------------------------------------------------------------------ vision side
    def _default_prompts(
        self, pixel_values: torch.Tensor, prompt_masks: torch.Tensor | None, prompt_valid: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch = pixel_values.shape[0]
        size = self.config.image_size
        if prompt_masks is None:
            prompt_masks = pixel_values.new_zeros(batch, 1, size, size)
            prompt_valid = torch.zeros(batch, 1, dtype=torch.bool, device=pixel_values.device)
        elif prompt_valid is None:
            prompt_valid = prompt_masks.flatten(2).amax(-1) > 0
        return prompt_masks, prompt_valid

    def encode_vision(
        self,
        pixel_values: torch.Tensor,
        modality_ids: torch.Tensor,
        prompt_masks: torch.Tensor,
        prompt_valid: torch.Tensor,
        centre_maps: torch.Tensor | None = None,
    ) -> EarthGPTXVisionOutput:
        """The whole vision side (tower + prompt encoder + fusion + projector + mask pixel features).

        Args:
            pixel_values: ``(B, 13, S, S)`` float, per-modality normalised band slots (see the processor).
            modality_ids: ``(B,)`` int64 in ``0..3`` (optical, multispectral, sar, infrared).
            prompt_masks: ``(B, N, S, S)`` float in [0, 1], one rasterised mask per prompt slot.
            prompt_valid: ``(B, N)`` bool, which prompt slots hold a real prompt.
            centre_maps: ``(B, count_classes, S/2, S/2)``, 1.0 in the pixel-feature cell of each true object centre:
                the counting path counts these instead of its detected peaks (teacher forcing; training only).
        """
        return run_vision_side(self, pixel_values, modality_ids, prompt_masks, prompt_valid, centre_maps)

    # ------------------------------------------------------------------ token merging
    def embed_inputs(
        self,
        input_ids: torch.Tensor,
        image_tokens: torch.Tensor,
        prompt_tokens: torch.Tensor,
        prompt_valid: torch.Tensor,
        answer_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Embed ``input_ids`` ``(B, L)`` and put vision tokens in place of the placeholders → ``(B, L, H)``.

        Every sample must contain exactly ``num_image_tokens`` ``<image>`` ids; each occurrence of
        ``<regionI>`` takes the next of prompt I's K tokens (cycling, so a region mentioned twice gets its K
        tokens twice). Region ids at ``answer_mask`` positions (answer tokens, which the model itself emits) keep
        their token embedding. Raises ``ValueError`` naming the sample when counts do not match.
        """
        config = self.config
        embed = self.get_input_embeddings()
        image_positions = input_ids == config.image_token_id
        is_region, region_index, occurrence = self._region_slots(input_ids, answer_mask)
        placeholders = image_positions | is_region
        embeds = embed(input_ids.masked_fill(placeholders, 0))

        counts = image_positions.sum(-1)
        expected = image_tokens.shape[1]
        bad = (counts != expected).nonzero().flatten().tolist()
        if bad:
            sample = bad[0]
            raise ValueError(
                f"image tokens and image features do not match: sample {sample} has {int(counts[sample])} "
                f"<image> ids but the vision tower gives {expected} tokens per image"
            )
        embeds = embeds.masked_scatter(image_positions.unsqueeze(-1), image_tokens.to(embeds.dtype))

        if bool(is_region.any()):
            num_prompts, k = prompt_tokens.shape[1], prompt_tokens.shape[2]
            batch_idx, pos_idx = is_region.nonzero(as_tuple=True)
            regions = region_index[batch_idx, pos_idx]
            too_high = regions >= num_prompts
            valid = prompt_valid.bool()
            if bool(too_high.any()) or not bool(valid[batch_idx, regions.clamp(max=num_prompts - 1)].all()):
                missing = too_high | ~valid[batch_idx, regions.clamp(max=num_prompts - 1)]
                first = int(missing.nonzero()[0])
                sample, region = int(batch_idx[first]), int(regions[first])
                given = int(valid[sample].sum())
                raise ValueError(
                    f"sample {sample} refers to <region{region + 1}> but only {given} visual prompt(s) were given"
                )
            slots = occurrence[batch_idx, pos_idx] % k
            values = prompt_tokens[batch_idx, regions, slots].to(embeds.dtype)
            embeds = embeds.index_put((batch_idx, pos_idx), values)
        return embeds

    def _region_slots(
        self, input_ids: torch.Tensor, answer_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Where the ``<regionI>`` placeholders are (``(B, L)`` bool; not at ``answer_mask`` positions), the region
        index (0-based) of every position, and which occurrence of its region in the sample each position is."""
        region_ids = torch.tensor(self.config.region_token_ids, device=input_ids.device)
        matches = input_ids.unsqueeze(-1) == region_ids
        is_region = matches.any(-1)
        if answer_mask is not None:
            is_region = is_region & ~answer_mask
        region_index = matches.long().argmax(-1)
        one_hot = F.one_hot(region_index, len(region_ids)) * is_region.unsqueeze(-1).long()
        occurrence = ((one_hot.cumsum(1) * one_hot).sum(-1) - 1).clamp_min(0)
        return is_region, region_index, occurrence

    def count_sources(
        self, input_ids: torch.Tensor, vision: EarthGPTXVisionOutput, answer_mask: torch.Tensor | None = None
    ) -> CountSources:
        """The count tokens' places in ``input_ids`` ``(B, L)`` (see ``counting_earthgptx.count_sources``)."""
        if vision.count_mix is None or vision.region_count_mix is None:
            raise ValueError("this model has no counting path")
        slots = self._region_slots(input_ids, answer_mask)
        return count_sources(self.config, input_ids, vision.count_mix, vision.region_count_mix, slots)

    def copy_positions(
        self, input_ids: torch.Tensor, labels: torch.Tensor | None, attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The positions the count copy acts at (see ``counting_earthgptx.copy_positions``)."""
        return copy_positions(input_ids, labels, attention_mask, self.config.ignore_index)

    def count_copy_loss(
        self,
        result: CountCopyResult,
        sources: CountSources,
        samples: torch.Tensor,
        count_targets: torch.Tensor,
    ) -> torch.Tensor:
        """The count copy's supervision, weighted by ``count_copy_loss_weight`` (see
        ``counting_earthgptx.count_copy_loss``)."""
        return count_copy_loss(result, sources, samples, count_targets, self.config.count_copy_loss_weight)

    def number_ids(self, device: torch.device) -> torch.Tensor:
        """The vocabulary ids of ``0..count_max``, what the count copy writes."""
        return count_number_tensor(self.config, device)

    # ------------------------------------------------------------------ masks
    def predict_masks(
        self, seg_hidden: torch.Tensor, seg_batch_index: torch.Tensor, mask_features: torch.Tensor
    ) -> torch.Tensor:
        """Mask logits ``(M, S, S)`` for ``M`` ``[SEG]`` hidden states ``(M, H)`` of samples ``seg_batch_index``."""
        return self.mask_decoder.predict(seg_hidden, mask_features[seg_batch_index])

    def _copy_counts(
        self,
        logits: torch.Tensor,
        hidden: torch.Tensor,
        input_ids: torch.Tensor,
        vision: EarthGPTXVisionOutput,
        answer_mask: torch.Tensor | None,
        labels: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        count_targets: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The row of each answer's first position becomes log-probabilities with the copied count mixed in;
        returns the logits and, with ``count_targets``, the copy's supervision."""
        assert self.count_copy is not None
        sources = self.count_sources(input_ids, vision, answer_mask)
        samples, at = self.copy_positions(input_ids, labels, attention_mask)
        result = self.count_copy(
            logits[samples, at], hidden[samples, at], hidden[samples], sources.mix[samples],
            sources.is_source[samples], self.number_ids(logits.device),
        )  # fmt: skip
        logits = logits.float().index_put((samples, at), result.log_probs)
        copy_loss = None
        if count_targets is not None:
            copy_loss = self.count_copy_loss(result, sources, samples, count_targets)
        return logits, copy_loss

    def _seg_masks(
        self, input_ids: torch.Tensor, hidden: torch.Tensor, mask_features: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Mask logits for every ``[SEG]`` in ``input_ids`` (``None`` when there is none) and the sample of each.
        The hidden state that predicts a ``[SEG]`` (position t-1 for a ``[SEG]`` at t) drives its mask; ``generate``
        sees exactly that state when it emits ``[SEG]``."""
        seg_at = input_ids == self.config.seg_token_id
        seg_at[:, 0] = False
        seg_batch, seg_pos = seg_at.nonzero(as_tuple=True)
        if not seg_batch.numel():
            return None, seg_batch
        return self.predict_masks(hidden[seg_batch, seg_pos - 1], seg_batch, mask_features), seg_batch

    def _lm_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Next-token cross-entropy over the labelled tokens (labels unshifted; an all-masked batch gives 0, not
        NaN, and still touches the graph)."""
        ignore = self.config.ignore_index
        shift_logits = logits[:, :-1].float()
        shift_labels = labels[:, 1:].to(logits.device)
        valid = shift_labels != ignore
        token_losses = F.cross_entropy(
            shift_logits.reshape(-1, shift_logits.shape[-1]),
            shift_labels.reshape(-1),
            ignore_index=ignore,
            reduction="sum",
        )
        return token_losses / valid.sum().clamp_min(1)

    def _mask_loss(
        self, mask_logits: torch.Tensor | None, target_masks: torch.Tensor | None
    ) -> torch.Tensor | None:
        """BCE + dice of the ``[SEG]`` masks against ``target_masks`` (one per ``[SEG]``, else ``ValueError``)."""
        if target_masks is None:
            return None
        count = 0 if mask_logits is None else mask_logits.shape[0]
        if target_masks.shape[0] != count:
            raise ValueError(
                f"found {count} [SEG] tokens in input_ids but target_masks has {target_masks.shape[0]} masks"
            )
        if mask_logits is None:
            return None
        bce, dice = mask_losses(mask_logits.float(), target_masks)
        return self.config.mask_loss_weight * bce + self.config.dice_loss_weight * dice

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor,
        modality_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        prompt_masks: torch.Tensor | None = None,
        prompt_valid: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        target_masks: torch.Tensor | None = None,
        centre_maps: torch.Tensor | None = None,
        count_targets: torch.Tensor | None = None,
    ) -> EarthGPTXOutput:
        """Teacher-forced forward pass.

        Args:
            input_ids: ``(B, L)`` with ``<image>`` expanded to ``num_image_tokens`` ids and each ``<regionI>``
                to ``tokens_per_prompt`` ids (the processor does this).
            pixel_values: ``(B, 13, S, S)``; modality_ids: ``(B,)``.
            attention_mask: ``(B, L)``, 1 for real tokens.
            prompt_masks: ``(B, N, S, S)``; prompt_valid: ``(B, N)`` bool (both optional: no prompts).
            labels: ``(B, L)``, ``ignore_index`` everywhere but the answer tokens (not shifted: label ``t`` is the
                token at position ``t``; the model shifts).
            target_masks: ``(M, S, S)`` in [0, 1], one per ``[SEG]`` id in ``input_ids`` (row-major order).
            centre_maps: true object centres for the counting path (see ``encode_vision``; training only).
            count_targets: ``(B,)``, for the count copy's supervision: the ``count_source_key`` of the count a
                counting question asks for, -1 for other questions (training only; see ``count_copy_loss``).
        """
        config = self.config
        prompt_masks, prompt_valid = self._default_prompts(pixel_values, prompt_masks, prompt_valid)
        vision = self.encode_vision(pixel_values, modality_ids, prompt_masks, prompt_valid, centre_maps)
        answer_mask = None if labels is None else labels != config.ignore_index
        embeds = self.embed_inputs(
            input_ids, vision.image_tokens, vision.prompt_tokens, prompt_valid, answer_mask
        )
        lm = self.language_model(
            inputs_embeds=embeds, attention_mask=attention_mask, output_hidden_states=True, use_cache=False
        )
        hidden = lm.hidden_states[-1]
        logits, copy_loss = lm.logits, None
        if self.count_copy is not None:
            logits, copy_loss = self._copy_counts(
                logits, hidden, input_ids, vision, answer_mask, labels, attention_mask, count_targets
            )
        mask_logits, seg_batch = self._seg_masks(input_ids, hidden, vision.mask_features)
        lm_loss = None if labels is None else self._lm_loss(logits, labels)
        mask_loss = self._mask_loss(mask_logits, target_masks)
        loss = None
        for part in (lm_loss, copy_loss, mask_loss):  # in this order: the sum is the same to the last bit
            if part is not None:
                loss = part if loss is None else loss + part
        return EarthGPTXOutput(
            loss=loss,
            lm_loss=lm_loss,
            mask_loss=mask_loss,
            copy_loss=copy_loss,
            logits=logits,
            mask_logits=mask_logits,
            seg_batch_index=seg_batch if mask_logits is not None else None,
            image_tokens=vision.image_tokens,
            prompt_tokens=vision.prompt_tokens,
            mask_features=vision.mask_features,
            centre_logits=vision.centre_logits,
        )

    # ------------------------------------------------------------------ generate
    @torch.no_grad()
    def generate(  # type: ignore[override]
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor,
        modality_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        prompt_masks: torch.Tensor | None = None,
        prompt_valid: torch.Tensor | None = None,
        max_new_tokens: int = 64,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        return_masks: bool = True,
    ) -> EarthGPTXGenerateOutput:
        """Decode answers for a batch of requests with a KV cache.

        Requests may differ in text length (left-pad ``input_ids``; the processor does so for inference
        batches) and in prompt count (pad prompt slots with ``prompt_valid=False``). Greedy by default.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if bool((attention_mask[:, -1] == 0).any()):
            raise ValueError("generate needs left-padded inputs: the last position of some sample is padding")
        text = self.config.text_config
        prompt_masks, prompt_valid = self._default_prompts(pixel_values, prompt_masks, prompt_valid)
        vision = self.encode_vision(pixel_values, modality_ids, prompt_masks, prompt_valid)
        embeds = self.embed_inputs(input_ids, vision.image_tokens, vision.prompt_tokens, prompt_valid)
        generation_config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            temperature=temperature if do_sample else None,
            top_p=top_p if do_sample else None,
            top_k=None,
            pad_token_id=text.pad_token_id,
            bos_token_id=text.bos_token_id,
            eos_token_id=text.eos_token_id,
            output_hidden_states=return_masks,
            return_dict_in_generate=True,
            use_cache=True,
        )
        processors = LogitsProcessorList()
        hook = None
        if self.count_copy is not None:
            sources = self.count_sources(input_ids, vision)
            copier = CountCopyLogitsProcessor(
                self.count_copy, sources.mix, sources.is_source, self.number_ids(input_ids.device)
            )
            hook = self.language_model.get_decoder().norm.register_forward_hook(copier.capture)
            processors.append(copier)
        try:
            generated = self.language_model.generate(
                inputs_embeds=embeds, attention_mask=attention_mask, generation_config=generation_config,
                logits_processor=processors,
            )  # fmt: skip
        finally:
            if hook is not None:
                hook.remove()
        sequences = generated.sequences
        if sequences.shape[1] > max_new_tokens:  # some versions return the (empty) prompt ids in front
            sequences = sequences[:, -max_new_tokens:]

        output = EarthGPTXGenerateOutput(sequences=sequences)
        if return_masks:
            seg_batch, seg_step = (sequences == self.config.seg_token_id).nonzero(as_tuple=True)
            if seg_batch.numel():
                # hidden_states[t][-1] is the last layer at step t; its last position predicted token t.
                last = torch.stack([step[-1][:, -1] for step in generated.hidden_states], dim=1)  # (B, T, H)
                seg_hidden = last[seg_batch, seg_step]
                output.mask_logits = self.predict_masks(seg_hidden, seg_batch, vision.mask_features)
                output.seg_batch_index = seg_batch
                output.seg_token_index = seg_step
        return output


__all__ = [
    "CHECKPOINT_KEY_MAPPING",
    "CountCopyResult",
    "CountSources",
    "EarthGPTXCountCopy",
    "EarthGPTXForConditionalGeneration",
    "EarthGPTXGenerateOutput",
    "EarthGPTXOutput",
    "EarthGPTXPreTrainedModel",
    "EarthGPTXVisionOutput",
    "count_source_key",
    "mask_losses",
    "run_vision_side",
    "sincos_1d",
    "sincos_2d",
]
