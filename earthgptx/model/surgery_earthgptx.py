"""Model surgery: what a training stage does to a built or loaded model before it trains.

- ``apply_init_overrides``: a saved model's config with a stage's top-level overrides applied (a new part such as
  ``prompt_position_features`` then starts from its own initialisation when the weights load);
- ``init_ordinal_numbers``: the number tokens ``0`` … ``999`` start from sine/cosine features of their value;
- ``reinit_parts``: named modules start again from the model's own initialisation;
- ``init_count_tokens``: the counting path's name and number tables start from the text embeddings of the words
  they stand for; ``count_number_ids`` / ``count_name_token_ids`` find those words;
- ``count_copy_targets``: what the count copy's supervision points at, read from dataset records.

None of these runs at inference; they live beside the model because they reach into its parts by name.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from earthgptx.formats import region_indices
from earthgptx.model.configuration_earthgptx import EarthGPTXConfig
from earthgptx.model.modeling_earthgptx import EarthGPTXForConditionalGeneration, count_source_key, sincos_1d
from earthgptx.model.tokenization_earthgptx import NUMBER_RANGE

logger = logging.getLogger(__name__)


def apply_init_overrides(config: EarthGPTXConfig, overrides: Mapping[str, Any]) -> None:
    """Apply a stage's ``model.overrides`` to the config of the saved model it starts from: top-level fields only.
    Sub-config overrides are ignored with a warning, since the saved weights fix those shapes; unknown fields are
    refused."""
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


def count_number_ids(tokenizer: Any, count_max: int) -> list[int]:
    """The token ids of the numbers ``"0"`` … ``count_max`` (what the count copy writes)."""
    numbers = [tokenizer.convert_tokens_to_ids(str(n)) for n in range(count_max + 1)]
    if any(i in (None, tokenizer.unk_token_id) for i in numbers):
        raise ValueError(f"the tokenizer lacks a number token in 0..{count_max}")
    return numbers


def count_name_token_ids(tokenizer: Any, class_words: Sequence[str]) -> list[int]:
    """The token id standing for each counted class: ``class_words`` holds, per class in the counting path's order,
    the word a counting question ends the class name with (the last word of its plural: "storage tanks" → "tanks")."""
    ids = [tokenizer.convert_tokens_to_ids(word) for word in class_words]
    missing = [w for w, i in zip(class_words, ids, strict=True) if i in (None, tokenizer.unk_token_id)]
    if missing:
        raise ValueError(f"the tokenizer has no token for the class word(s) {missing}")
    return ids


def saved_count_tokens(folder: Path | None) -> bool:
    """Whether a saved model folder holds trained count-token tables (a counting stage continued)."""
    if folder is None:
        return False
    with safe_open(str(folder / "model.safetensors"), framework="pt") as saved:
        return any(".count_numbers." in f".{key}" for key in saved.keys())  # noqa: SIM118 (not a dict)


@torch.no_grad()
def init_count_tokens(
    model: EarthGPTXForConditionalGeneration, tokenizer: Any, class_words: Sequence[str]
) -> None:
    """Start the counting path's name and number tables from the text embeddings of the class words and of the
    numbers ``"0"`` … ``count_max``: the count tokens then read, to the language model, as words it knows."""
    path = model.counting_path
    if path is None:
        raise ValueError("the model has no counting path (count_classes = 0)")
    if len(class_words) != model.config.count_classes:
        raise ValueError(
            f"{len(class_words)} class words for a counting path of {model.config.count_classes} classes"
        )
    embeddings: torch.Tensor = model.get_input_embeddings().weight  # type: ignore[assignment]
    numbers = count_number_ids(tokenizer, model.config.count_max)
    names = count_name_token_ids(tokenizer, class_words)
    path.count_numbers.weight.copy_(embeddings[torch.tensor(numbers, device=embeddings.device)])
    path.count_names.weight.copy_(embeddings[torch.tensor(names, device=embeddings.device)])


def count_copy_targets(records: Sequence[Mapping[str, Any]], counted_classes: Sequence[str]) -> torch.Tensor:
    """``(N,)`` the count copy's targets for ``records`` (``forward``'s ``count_targets``): for a counting question,
    the key of the count token that answers it (its class, over the whole image or inside the region the question
    names); -1 for every other record, and for a question about a class the counting path does not count (its gate
    learns to stay shut there). ``counted_classes`` are the path's classes, in its order."""
    targets = torch.full((len(records),), -1, dtype=torch.long)
    counted = list(counted_classes)
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
        targets[i] = count_source_key(counted.index(str(answer["class"])), region, len(counted))
    return targets


__all__ = [
    "apply_init_overrides",
    "count_copy_targets",
    "count_name_token_ids",
    "count_number_ids",
    "init_count_tokens",
    "init_ordinal_numbers",
    "number_token_ids",
    "reinit_parts",
    "saved_count_tokens",
]
