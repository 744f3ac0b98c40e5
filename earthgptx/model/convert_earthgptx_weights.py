"""Build an EarthGPT-X model from pretrained parts in local HF-format folders (nothing is downloaded).

- DINOv2 (``Dinov2Model`` folder, e.g. a local copy of dinov2-large): its position embeddings are resampled
  (bicubic) to our chip's patch grid when the sizes differ (DINOv2-L was trained at 518 px; `paper` reads 448 px).
- ConvNeXt (``ConvNextModel`` folder, e.g. convnext-large): the stage weights; its pooled-output norm is unused.
- The language model (any Llama-family ``*ForCausalLM`` folder with its tokenizer): the EarthGPT-X special tokens
  are added to its tokenizer and the embeddings resized to match.

The prompt encoder, fusion, projector, band adapter and mask decoder start from random initialisation. The
composite is created on the meta device and only those new parts are materialised, so a 7–13B LLM is loaded
once, straight into place.

    python -m earthgptx.model.convert_earthgptx_weights --dinov2 ~/models/dinov2-large \\
        --convnext ~/models/convnext-large-224 --llm ~/models/llama-2-7b --out ~/checkpoints/egx-paper
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, ConvNextModel, Dinov2Model

from earthgptx.model.configuration_earthgptx import EarthGPTXConfig, token_ids_from_tokenizer
from earthgptx.model.modeling_earthgptx import EarthGPTXForConditionalGeneration
from earthgptx.model.processing_earthgptx import EarthGPTXProcessor
from earthgptx.model.tokenization_earthgptx import add_special_tokens

logger = logging.getLogger(__name__)

# Parts that have no pretrained source and are initialised here.
NEW_PARTS = ("prompt_encoder", "fusion", "multi_modal_projector", "mask_decoder", "vision_tower.band_adapter")


def resample_position_embeddings(embeddings: torch.Tensor, grid: int) -> torch.Tensor:
    """``(1, 1 + g*g, C)`` ViT position embeddings (CLS first) → ``(1, 1 + grid*grid, C)``, bicubic."""
    cls, patches = embeddings[:, :1], embeddings[:, 1:]
    old = int(round(patches.shape[1] ** 0.5))
    if old * old != patches.shape[1]:
        raise ValueError(f"position embeddings of {patches.shape[1]} patches do not form a square grid")
    if old == grid:
        return embeddings
    square = patches.reshape(1, old, old, -1).permute(0, 3, 1, 2).float()
    resized = F.interpolate(square, size=(grid, grid), mode="bicubic", align_corners=False)
    resized = resized.permute(0, 2, 3, 1).reshape(1, grid * grid, -1).to(embeddings.dtype)
    return torch.cat([cls, resized], dim=1)


def _materialise_new_parts(model: EarthGPTXForConditionalGeneration, device: torch.device | str) -> None:
    for name in NEW_PARTS:
        module = model.get_submodule(name)
        module.to_empty(device=device, recurse=True)
        module.apply(model._init_weights)


def build_from_pretrained_parts(
    dinov2_dir: str | Path,
    convnext_dir: str | Path,
    llm_dir: str | Path,
    max_prompts: int = 8,
    dtype: torch.dtype = torch.bfloat16,
    device: torch.device | str = "cpu",
    overrides: dict[str, Any] | None = None,
) -> tuple[EarthGPTXForConditionalGeneration, EarthGPTXProcessor]:
    """The `paper` composite with pretrained DINOv2, ConvNeXt and LLM read from local folders.

    Sub-configs come from the folders (so a 13B LLM or another DINOv2 size just works); ``overrides`` are passed
    to ``EarthGPTXConfig.paper`` (e.g. ``{"vision_config": {"image_size": 448}}``).
    """
    tokenizer = AutoTokenizer.from_pretrained(str(llm_dir), local_files_only=True)
    added = add_special_tokens(tokenizer, max_prompts)
    text_config = AutoConfig.from_pretrained(str(llm_dir), local_files_only=True)
    dinov2_config = AutoConfig.from_pretrained(str(dinov2_dir), local_files_only=True)
    convnext_config = AutoConfig.from_pretrained(str(convnext_dir), local_files_only=True)
    text = text_config.to_dict()
    text.update(
        vocab_size=max(len(tokenizer), text_config.vocab_size),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    overrides = dict(overrides or {})
    vision = {"dinov2_config": dinov2_config.to_dict(), "convnext_config": convnext_config.to_dict()}
    vision.update(overrides.pop("vision_config", {}))
    prompt = {"max_prompts": max_prompts, **overrides.pop("prompt_config", {})}
    ids = token_ids_from_tokenizer(tokenizer, max_prompts)
    ids.pop("_text_ids")
    config = EarthGPTXConfig.paper(
        vision_config=vision, prompt_config=prompt, text_config=text, **ids, **overrides
    )
    logger.info("added %d special tokens to the LLM tokenizer (now %d)", added, len(tokenizer))

    with torch.device("meta"):
        model = EarthGPTXForConditionalGeneration(config)

    logger.info("loading DINOv2 from %s", dinov2_dir)
    dinov2 = Dinov2Model.from_pretrained(str(dinov2_dir), local_files_only=True, dtype=dtype)
    grid = config.vision_config.grid_size
    state = dinov2.state_dict()
    state["embeddings.position_embeddings"] = resample_position_embeddings(
        state["embeddings.position_embeddings"], grid
    )
    model.vision_tower.dinov2.load_state_dict(state, assign=True)

    logger.info("loading ConvNeXt from %s", convnext_dir)
    convnext = ConvNextModel.from_pretrained(str(convnext_dir), local_files_only=True, dtype=dtype)
    convnext.layernorm = nn.Identity()  # type: ignore[assignment]
    model.vision_tower.convnext.load_state_dict(convnext.state_dict(), assign=True)

    logger.info("loading the language model from %s", llm_dir)
    language_model = AutoModelForCausalLM.from_pretrained(str(llm_dir), local_files_only=True, dtype=dtype)

    def vocab_rows() -> int:
        embeddings = language_model.get_input_embeddings()
        assert isinstance(embeddings, nn.Embedding)
        return int(embeddings.num_embeddings)

    if vocab_rows() < len(tokenizer):
        language_model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    model.language_model = language_model
    model.config.text_config.vocab_size = vocab_rows()

    _materialise_new_parts(model, "cpu")
    model.to(device=device, dtype=dtype)  # type: ignore[call-arg]  # transformers wraps Module.to
    # Rotary / buffer tensors created on meta must be real too.
    leftovers = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftovers:
        raise RuntimeError(f"parameters left uninitialised after loading: {leftovers[:5]}")
    processor = EarthGPTXProcessor(tokenizer, model.config)
    return model.eval(), processor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Assemble EarthGPT-X from local pretrained HF folders.")
    parser.add_argument("--dinov2", required=True)
    parser.add_argument("--convnext", required=True)
    parser.add_argument("--llm", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--max-prompts", type=int, default=8)
    parser.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    model, processor = build_from_pretrained_parts(
        args.dinov2, args.convnext, args.llm, args.max_prompts, dtype
    )
    model.save_pretrained(args.out)
    processor.save_pretrained(args.out)
    logger.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
