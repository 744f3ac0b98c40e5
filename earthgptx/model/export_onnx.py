"""The vision side of EarthGPT-X as one ONNX graph, and an onnxruntime runner for it.

Graph signature (fixed; batch ``B`` and prompt count ``N`` dynamic, ``S`` the chip size of the config):

=================  ==========  ===========================  ==================================================
name               dtype       shape                        meaning
=================  ==========  ===========================  ==================================================
``PIXEL_VALUES``   float32     ``(B, 13, S, S)``            per-modality normalised band slots (processor)
``MODALITY_IDS``   int64       ``(B,)``                     0 optical, 1 multispectral, 2 sar, 3 infrared
``PROMPT_MASKS``   float32     ``(B, N, S, S)``             rasterised visual prompts
``PROMPT_VALID``   bool        ``(B, N)``                   which prompt slots are real
``IMAGE_TOKENS``   float32     ``(B, T, H)``                replaces the ``<image>`` placeholders
``PROMPT_TOKENS``  float32     ``(B, N, K, H)``             replaces the ``<regionI>`` placeholders
``MASK_FEATURES``  float32     ``(B, D, S/2, S/2)``         pixel features for the mask decoder's ``[SEG]``
=================  ==========  ===========================  ==================================================

A model with the counting path (``count_classes`` C > 0) has two more outputs, the counts its count copy needs
beside the language model (``EarthGPTXVisionOutput.count_mix`` and ``region_count_mix``; ``count_max`` + 1 levels):

=====================  ==========  ============================  ==============================================
``COUNT_MIX``          float32     ``(B, C, count_max + 1)``     each class's whole-image count over the numbers
``REGION_COUNT_MIX``   float32     ``(B, N, C, count_max + 1)``  the same inside each prompt
=====================  ==========  ============================  ==============================================
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from earthgptx.model.modeling_earthgptx import EarthGPTXForConditionalGeneration, run_vision_side

logger = logging.getLogger(__name__)

INPUT_NAMES: tuple[str, ...] = ("PIXEL_VALUES", "MODALITY_IDS", "PROMPT_MASKS", "PROMPT_VALID")
OUTPUT_NAMES: tuple[str, ...] = ("IMAGE_TOKENS", "PROMPT_TOKENS", "MASK_FEATURES")
COUNT_OUTPUT_NAMES: tuple[str, ...] = ("COUNT_MIX", "REGION_COUNT_MIX")
DEFAULT_OPSET = 18


def output_names(model: EarthGPTXForConditionalGeneration) -> tuple[str, ...]:
    """The graph's outputs for ``model``: ``OUTPUT_NAMES``, then ``COUNT_OUTPUT_NAMES`` with a counting path."""
    return OUTPUT_NAMES + (COUNT_OUTPUT_NAMES if model.config.count_classes > 0 else ())


class EarthGPTXVisionOnnx(nn.Module):
    """Fixed-signature wrapper around the vision side of a model (holds only those parts, not the LLM)."""

    def __init__(self, model: EarthGPTXForConditionalGeneration) -> None:
        super().__init__()
        self.vision_tower = model.vision_tower
        self.prompt_encoder = model.prompt_encoder
        self.fusion = model.fusion
        self.multi_modal_projector = model.multi_modal_projector
        self.mask_decoder = model.mask_decoder
        self.counting_path = model.counting_path
        self.image_size = model.config.image_size

    def forward(
        self,
        pixel_values: torch.Tensor,
        modality_ids: torch.Tensor,
        prompt_masks: torch.Tensor,
        prompt_valid: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        out = run_vision_side(self, pixel_values, modality_ids, prompt_masks, prompt_valid)
        if out.count_mix is None or out.region_count_mix is None:
            return out.image_tokens, out.prompt_tokens, out.mask_features
        return out.image_tokens, out.prompt_tokens, out.mask_features, out.count_mix, out.region_count_mix


def example_inputs(
    image_size: int, batch: int = 2, num_prompts: int = 3, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random inputs of the graph's signature (box-shaped prompt masks, some slots invalid)."""
    generator = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(batch, 13, image_size, image_size, generator=generator)
    modality_ids = torch.randint(0, 4, (batch,), generator=generator)
    prompt_masks = torch.zeros(batch, num_prompts, image_size, image_size)
    corners = torch.randint(0, image_size // 2, (batch, num_prompts, 2), generator=generator)
    sizes = torch.randint(2, image_size // 2, (batch, num_prompts, 2), generator=generator)
    for b in range(batch):
        for n in range(num_prompts):
            (x, y), (w, h) = corners[b, n].tolist(), sizes[b, n].tolist()
            prompt_masks[b, n, y : y + h, x : x + w] = 1.0
    prompt_valid = torch.rand(batch, num_prompts, generator=generator) > 0.3
    prompt_valid[:, 0] = True
    return pixel_values, modality_ids, prompt_masks, prompt_valid


def export_vision_onnx(
    model: EarthGPTXForConditionalGeneration,
    path: str | Path,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Export the vision side of ``model`` (fp32, eval mode) to ``path`` with dynamic batch and prompt count.

    Uses the ``torch.export``-based exporter; the graph is checked with ``onnx.checker`` before returning.
    Weights are stored inside the file when it stays under 2 GB, otherwise next to it (``<path>.data``).
    """
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = EarthGPTXVisionOnnx(model).eval()
    # Sizes > 1 that differ from each other, so no dimension is specialised to a constant by accident.
    inputs = example_inputs(wrapper.image_size, batch=2, num_prompts=3)
    batch_dim = torch.export.Dim("batch", min=1, max=1024)
    prompt_dim = torch.export.Dim("prompts", min=1, max=64)
    dynamic_shapes = {
        "pixel_values": {0: batch_dim},
        "modality_ids": {0: batch_dim},
        "prompt_masks": {0: batch_dim, 1: prompt_dim},
        "prompt_valid": {0: batch_dim, 1: prompt_dim},
    }
    n_params = sum(p.numel() for p in wrapper.parameters())
    logger.info("exporting the vision side (%.1f M parameters) to %s", n_params / 1e6, path)
    with torch.no_grad():
        program = torch.onnx.export(
            wrapper,
            inputs,
            input_names=list(INPUT_NAMES),
            output_names=list(output_names(model)),
            opset_version=opset,
            dynamo=True,
            dynamic_shapes=dynamic_shapes,
            optimize=True,
            external_data=False,
        )
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    large = n_params * 4 > 1.8e9
    program.save(str(path), external_data=large)
    onnx.checker.check_model(str(path) if large else onnx.load(str(path)))
    logger.info("wrote %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return path


class VisionOnnxRunner:
    """Runs the exported vision graph with onnxruntime (CPU by default, CUDA when asked and available)."""

    def __init__(
        self,
        path: str | Path,
        providers: list[str] | None = None,
        intra_op_threads: int | None = None,
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_threads:
            options.intra_op_num_threads = intra_op_threads
        available = ort.get_available_providers()
        wanted = providers or ["CPUExecutionProvider"]
        chosen = [p for p in wanted if p in available] or ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=chosen)
        names = [i.name for i in self.session.get_inputs()]
        if tuple(names) != INPUT_NAMES:
            raise ValueError(f"{path} has inputs {names}, expected {list(INPUT_NAMES)}")
        outputs = tuple(o.name for o in self.session.get_outputs())
        if outputs not in (OUTPUT_NAMES, OUTPUT_NAMES + COUNT_OUTPUT_NAMES):
            raise ValueError(
                f"{path} has outputs {list(outputs)}, expected {list(OUTPUT_NAMES)} (+ the count mixes)"
            )
        self.output_names = outputs

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    def run(
        self,
        pixel_values: np.ndarray | torch.Tensor,
        modality_ids: np.ndarray | torch.Tensor,
        prompt_masks: np.ndarray | torch.Tensor,
        prompt_valid: np.ndarray | torch.Tensor,
    ) -> dict[str, np.ndarray]:
        """Inputs as numpy arrays or CPU tensors → ``{"IMAGE_TOKENS": …, "PROMPT_TOKENS": …, "MASK_FEATURES": …}``
        (and the count mixes, for a graph with the counting path)."""

        def as_numpy(value: np.ndarray | torch.Tensor, dtype: type) -> np.ndarray:
            array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
            return np.ascontiguousarray(array.astype(dtype, copy=False))

        feeds = {
            "PIXEL_VALUES": as_numpy(pixel_values, np.float32),
            "MODALITY_IDS": as_numpy(modality_ids, np.int64),
            "PROMPT_MASKS": as_numpy(prompt_masks, np.float32),
            "PROMPT_VALID": as_numpy(prompt_valid, np.bool_),
        }
        outputs = self.session.run(list(self.output_names), feeds)
        return dict(zip(self.output_names, outputs, strict=True))


__all__ = [
    "COUNT_OUTPUT_NAMES",
    "DEFAULT_OPSET",
    "INPUT_NAMES",
    "OUTPUT_NAMES",
    "EarthGPTXVisionOnnx",
    "VisionOnnxRunner",
    "example_inputs",
    "export_vision_onnx",
    "output_names",
]
