"""Batched greedy generation for the LLM side of a served EarthGPT-X (the Triton ``llm`` model).

The vision side runs apart (the ONNX graph), so a request reaches this module as token ids plus the graph's outputs.
``BatchedGenerator.generate`` decodes any number of such requests together, as ``model.generate`` does in process:

- the requests are left-padded into one batch (attention mask and position ids from it), prompt slots padded with
  ``prompt_valid=False``, and decoded by the language model's own ``generate`` with a KV cache (greedy);
- each request keeps its own ``max_new_tokens`` and stop ids (a stopping criterion per row; a finished row is fed
  padding until the whole batch is done, its answer is cut at its own stop);
- the count copy acts on the first new token, from ``COUNT_MIX`` / ``REGION_COUNT_MIX`` and the prompt's last hidden
  states (the model's public ``count_sources`` and ``count_copy``);
- a ``[SEG]`` in an answer runs the mask decoder on the hidden state that predicted it;
- ``is_cancelled`` (optional, per request) is polled between steps: a cancelled row stops early and is reported so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)

from earthgptx.model import EarthGPTXForConditionalGeneration, EarthGPTXVisionOutput

DEFAULT_MAX_NEW_TOKENS = 48


@dataclass
class GenerationItem:
    """One request for the LLM side.

    ``input_ids`` ``(L,)`` (placeholders expanded, ending with ``ASSISTANT:``); ``image_tokens`` ``(T, H)``;
    ``prompt_tokens`` ``(N, K, H)`` and ``prompt_valid`` ``(N,)`` (``N`` >= 1); ``mask_features`` ``(D, S/2, S/2)``;
    ``count_mix`` ``(C, levels)`` and ``region_count_mix`` ``(N, C, levels)`` for a counting model.
    """

    input_ids: torch.Tensor
    image_tokens: torch.Tensor
    prompt_tokens: torch.Tensor
    prompt_valid: torch.Tensor
    mask_features: torch.Tensor
    count_mix: torch.Tensor | None = None
    region_count_mix: torch.Tensor | None = None
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    stop_ids: Sequence[int] = ()
    is_cancelled: Callable[[], bool] | None = None


@dataclass
class GenerationResult:
    """New token ids (stop token excluded), ``mask_logits`` ``(M, S, S)`` for the ``M`` ``[SEG]`` among them."""

    token_ids: list[int]
    mask_logits: torch.Tensor | None = None
    cancelled: bool = False
    seg_positions: list[int] = field(default_factory=list)


class _FirstTokenCountCopy(LogitsProcessor):
    """The count copy at the first new token: the prompt's last hidden states come from a hook on the final norm
    (the first call of the hook is the prefill)."""

    def __init__(
        self, model: EarthGPTXForConditionalGeneration, sources_mix: torch.Tensor, is_source: torch.Tensor
    ):
        self.model, self.mix, self.is_source = model, sources_mix, is_source
        self.prompt_hidden: torch.Tensor | None = None
        self.done = False

    def capture(self, module: torch.nn.Module, args: object, output: torch.Tensor) -> None:
        if self.prompt_hidden is None:
            self.prompt_hidden = output

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.done:
            return scores
        if self.prompt_hidden is None or self.model.count_copy is None:
            raise RuntimeError("the count copy saw no prompt hidden state")
        self.done = True
        result = self.model.count_copy(
            scores, self.prompt_hidden[:, -1], self.prompt_hidden, self.mix, self.is_source,
            self.model.number_ids(scores.device),
        )  # fmt: skip
        return result.log_probs.to(scores.dtype)  # type: ignore[return-value]


class _PerRowStop(StoppingCriteria):
    """Row ``i`` is done at its own ``max_new_tokens``, at one of its stop ids, or when its request is cancelled."""

    def __init__(self, prompt_length: int, items: Sequence[GenerationItem], eos_id: int) -> None:
        self.prompt_length = prompt_length
        self.limits = [item.max_new_tokens for item in items]
        self.stops = [set(item.stop_ids) | {eos_id} for item in items]
        self.cancel_checks = [item.is_cancelled for item in items]
        self.cancelled = [False] * len(items)

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: object
    ) -> torch.BoolTensor:
        produced = input_ids.shape[1] - self.prompt_length
        last = input_ids[:, -1].tolist()
        done = []
        for row, token in enumerate(last):
            check = self.cancel_checks[row]
            if check is not None and not self.cancelled[row] and check():
                self.cancelled[row] = True
            done.append(produced >= self.limits[row] or token in self.stops[row] or self.cancelled[row])
        return torch.tensor(done, device=input_ids.device)  # type: ignore[return-value]


def _stack_padded(tensors: Sequence[torch.Tensor], length: int, fill: float | bool = 0) -> torch.Tensor:
    """Stack ``(n_i, ...)`` tensors into ``(B, length, ...)``, padding the first dimension with ``fill``."""
    first = tensors[0]
    out = torch.full((len(tensors), length, *first.shape[1:]), fill, dtype=first.dtype, device=first.device)
    for index, tensor in enumerate(tensors):
        out[index, : tensor.shape[0]] = tensor
    return out


class BatchedGenerator:
    """Greedy decoding of many requests at once with one EarthGPT-X model (its LLM side, count copy, mask decoder)."""

    def __init__(self, model: EarthGPTXForConditionalGeneration) -> None:
        self.model = model.eval()
        text = model.config.text_config
        self.pad_id = int(text.pad_token_id if text.pad_token_id is not None else 0)
        self.eos_id = int(text.eos_token_id)
        self.bos_id = int(text.bos_token_id)
        self.seg_id = int(model.config.seg_token_id)
        self.device = next(model.parameters()).device

    def validate(self, item: GenerationItem) -> None:
        """Raise ``ValueError`` naming what is wrong with one request (checked before it joins a batch)."""
        config = self.model.config
        hidden = config.text_config.hidden_size
        if item.input_ids.ndim != 1 or item.input_ids.numel() == 0:
            raise ValueError(
                f"INPUT_IDS must be a non-empty 1-D sequence, got shape {tuple(item.input_ids.shape)}"
            )
        vocab = config.text_config.vocab_size
        if int(item.input_ids.min()) < 0 or int(item.input_ids.max()) >= vocab:
            raise ValueError(f"INPUT_IDS holds ids outside the vocabulary [0, {vocab})")
        expected_image = (config.num_image_tokens, hidden)
        if tuple(item.image_tokens.shape) != expected_image:
            raise ValueError(
                f"IMAGE_TOKENS has shape {tuple(item.image_tokens.shape)}, expected {expected_image}"
            )
        n = item.prompt_valid.shape[0] if item.prompt_valid.ndim == 1 else -1
        expected_prompts = (n, config.tokens_per_prompt, hidden)
        if n < 1 or tuple(item.prompt_tokens.shape) != expected_prompts:
            raise ValueError(
                f"PROMPT_TOKENS {tuple(item.prompt_tokens.shape)} and PROMPT_VALID {tuple(item.prompt_valid.shape)} "
                f"do not match: expected (N, {config.tokens_per_prompt}, {hidden}) and (N,) with N >= 1"
            )
        if item.mask_features.ndim != 3:
            raise ValueError(f"MASK_FEATURES must be (D, S/2, S/2), got {tuple(item.mask_features.shape)}")
        if self.model.count_copy is not None and (item.count_mix is None or item.region_count_mix is None):
            raise ValueError("this model counts: COUNT_MIX and REGION_COUNT_MIX are required")
        if not 1 <= item.max_new_tokens <= config.text_config.max_position_embeddings:
            raise ValueError(
                f"MAX_NEW_TOKENS must be between 1 and the model's context, got {item.max_new_tokens}"
            )
        if item.input_ids.numel() + item.max_new_tokens > config.text_config.max_position_embeddings:
            raise ValueError(
                f"the request ({item.input_ids.numel()} tokens + {item.max_new_tokens} new) exceeds the model's "
                f"context of {config.text_config.max_position_embeddings} tokens"
            )

    @torch.no_grad()
    def generate(self, items: Sequence[GenerationItem]) -> list[GenerationResult]:
        """Decode ``items`` together (validate each first); one result per item, in order."""
        if not items:
            return []
        model, device = self.model, self.device
        batch = len(items)
        length = max(int(item.input_ids.numel()) for item in items)
        input_ids = torch.full((batch, length), self.pad_id, dtype=torch.long, device=device)
        attention_mask = torch.zeros((batch, length), dtype=torch.long, device=device)
        for row, item in enumerate(items):
            n = int(item.input_ids.numel())
            input_ids[row, length - n :] = item.input_ids.to(device)
            attention_mask[row, length - n :] = 1
        prompts = max(int(item.prompt_valid.shape[0]) for item in items)
        dtype = model.get_input_embeddings().weight.dtype
        prompt_tokens = _stack_padded([item.prompt_tokens.to(device, dtype) for item in items], prompts)
        prompt_valid = _stack_padded(
            [item.prompt_valid.to(device, torch.bool) for item in items], prompts, False
        )
        image_tokens = torch.stack([item.image_tokens.to(device, dtype) for item in items])
        mask_features = torch.stack([item.mask_features.to(device) for item in items])
        embeds = model.embed_inputs(input_ids, image_tokens, prompt_tokens, prompt_valid)

        processors = LogitsProcessorList()
        hook = None
        if model.count_copy is not None:
            vision = EarthGPTXVisionOutput(
                image_tokens=image_tokens,
                prompt_tokens=prompt_tokens,
                mask_features=mask_features,
                count_mix=torch.stack(
                    [item.count_mix.to(device) for item in items if item.count_mix is not None]
                ),
                region_count_mix=_stack_padded(
                    [item.region_count_mix.to(device) for item in items if item.region_count_mix is not None],
                    prompts,
                ),
            )
            sources = model.count_sources(input_ids, vision)
            copier = _FirstTokenCountCopy(model, sources.mix, sources.is_source)
            hook = model.language_model.get_decoder().norm.register_forward_hook(copier.capture)
            processors.append(copier)
        stop = _PerRowStop(length, items, self.eos_id)
        longest = max(item.max_new_tokens for item in items)
        generation_config = GenerationConfig(
            max_new_tokens=longest,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            pad_token_id=self.pad_id,
            bos_token_id=self.bos_id,
            eos_token_id=self.eos_id,
            output_hidden_states=True,
            return_dict_in_generate=True,
            use_cache=True,
        )
        try:
            generated = model.language_model.generate(
                inputs_embeds=embeds, attention_mask=attention_mask, generation_config=generation_config,
                logits_processor=processors, stopping_criteria=StoppingCriteriaList([stop]),
            )  # fmt: skip
        finally:
            if hook is not None:
                hook.remove()
        sequences = (
            generated.sequences[:, -len(generated.hidden_states) :] if generated.hidden_states else None
        )
        results: list[GenerationResult] = []
        last_hidden = (
            torch.stack([step[-1][:, -1] for step in generated.hidden_states], dim=1)
            if generated.hidden_states
            else None
        )
        for row, item in enumerate(items):
            tokens: list[int] = []
            if sequences is not None:
                for token in sequences[row].tolist()[: item.max_new_tokens]:
                    if token in stop.stops[row]:
                        break
                    tokens.append(int(token))
            seg_positions = [step for step, token in enumerate(tokens) if token == self.seg_id]
            mask_logits = None
            if seg_positions and last_hidden is not None:
                seg_hidden = last_hidden[row, seg_positions]
                index = torch.zeros(len(seg_positions), dtype=torch.long, device=device)
                mask_logits = model.predict_masks(seg_hidden, index, mask_features[row : row + 1])
            results.append(GenerationResult(tokens, mask_logits, stop.cancelled[row], seg_positions))
        return results


__all__ = ["DEFAULT_MAX_NEW_TOKENS", "BatchedGenerator", "GenerationItem", "GenerationResult"]
