"""The small, trainable word-level tokenizer of the ``tiny`` configuration.

Built with the ``tokenizers`` library and wrapped as a transformers ``PreTrainedTokenizerFast`` (so it pads,
saves and loads like any HF tokenizer). Its vocabulary is laid out so that ids are predictable:

====================  ==========================================
ids                   tokens
====================  ==========================================
0, 1, 2, 3            ``<pad>``, ``<s>``, ``</s>``, ``<unk>``
4                     ``<image>``
5                     ``[SEG]``
6 … 5+N               ``<region1>`` … ``<regionN>``
next 1000             the numbers ``0`` … ``999`` as whole words
the rest              words and punctuation seen in the training text, most frequent first
====================  ==========================================

Text is split on whitespace, punctuation is isolated and digit runs are kept together, so ``[12, 340, 56,
789]`` becomes ``[ 12 , 340 , 56 , 789 ]``: one token per coordinate. Numbers >= 1000 are not in the vocabulary
(coordinates live in ``[0, 1000)``) and map to ``<unk>``.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from earthgptx.formats import GRID, IMAGE_TOKEN, REGION_TOKEN_PATTERN, SEG_TOKEN, region_indices, region_token

logger = logging.getLogger(__name__)

PAD_TOKEN = "<pad>"
BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
UNK_TOKEN = "<unk>"
NUMBER_RANGE = GRID
"""The numbers ``0`` … ``NUMBER_RANGE - 1`` are whole words: one token per grid coordinate."""


def special_tokens(max_regions: int) -> list[str]:
    """All special tokens in id order for a tokenizer that supports ``max_regions`` prompts."""
    return [PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN, IMAGE_TOKEN, SEG_TOKEN] + [
        region_token(i + 1) for i in range(max_regions)
    ]


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Punctuation(behavior="isolated"),
            pre_tokenizers.Digits(individual_digits=False),
        ]
    )


def build_tokenizer(
    texts: Iterable[str],
    max_regions: int = 8,
    min_frequency: int = 1,
    max_vocab_size: int | None = None,
) -> PreTrainedTokenizerFast:
    """Train the word-level tokenizer on ``texts`` (e.g. every turn of every training record).

    Words seen fewer than ``min_frequency`` times are left out (they become ``<unk>``); ``max_vocab_size`` caps
    the total vocabulary (specials and numbers always included). Deterministic: the same texts give the same ids.
    """
    if max_regions < 1:
        raise ValueError(f"max_regions must be >= 1, got {max_regions}")
    specials = special_tokens(max_regions)
    numbers = [str(n) for n in range(NUMBER_RANGE)]
    splitter = _pre_tokenizer()
    counts: Counter[str] = Counter()
    for text in texts:
        # Placeholders are special tokens; keep their pieces out of the word counts.
        cleaned = REGION_TOKEN_PATTERN.sub(" ", text.replace(IMAGE_TOKEN, " ").replace(SEG_TOKEN, " "))
        counts.update(piece for piece, _ in splitter.pre_tokenize_str(cleaned))
    reserved = set(specials) | set(numbers)
    words = sorted(
        (w for w, c in counts.items() if c >= min_frequency and w not in reserved),
        key=lambda w: (-counts[w], w),
    )
    if max_vocab_size is not None:
        room = max_vocab_size - len(specials) - len(numbers)
        if room < 0:
            raise ValueError(
                f"max_vocab_size={max_vocab_size} is smaller than the {len(specials) + len(numbers)} reserved tokens"
            )
        words = words[:room]
    vocab = {token: i for i, token in enumerate(specials + numbers + words)}
    backend = Tokenizer(WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    backend.normalizer = normalizers.NFKC()
    backend.pre_tokenizer = _pre_tokenizer()
    tokenizer = wrap_backend(backend, max_regions)
    logger.info("built word-level tokenizer: %d tokens (%d words from text)", len(tokenizer), len(words))
    return tokenizer


def wrap_backend(backend: Tokenizer, max_regions: int) -> PreTrainedTokenizerFast:
    """Wrap a ``tokenizers.Tokenizer`` as a transformers tokenizer with the EarthGPT-X special tokens."""
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        extra_special_tokens=special_tokens(max_regions)[4:],
        clean_up_tokenization_spaces=False,
        model_max_length=4096,
    )
    return tokenizer


def add_special_tokens(tokenizer: PreTrainedTokenizerBase, max_regions: int = 8) -> int:
    """Add ``<image>``, ``[SEG]`` and ``<region1..N>`` (and a pad token if missing) to any HF tokenizer.

    For the large configurations (a Llama tokenizer). Returns how many tokens were added; resize the language
    model's embeddings to ``len(tokenizer)`` afterwards.
    """
    wanted: dict[str, Any] = {"extra_special_tokens": special_tokens(max_regions)[4:]}
    if tokenizer.pad_token is None:
        wanted["pad_token"] = tokenizer.unk_token or tokenizer.eos_token
    return int(tokenizer.add_special_tokens(wanted, replace_extra_special_tokens=False))


_SPACE_BEFORE = re.compile(r"\s+([,.;:!?\])}%])")
_SPACE_AFTER = re.compile(r"([\[({])\s+")
_JOINERS = re.compile(r"\s*([-'/])\s*")


def detokenize(text: str) -> str:
    """Undo the word-level tokenizer's spacing: ``"[ 12 , 34 ]"`` → ``"[12, 34]"``, ``"ship ' s"`` → ``"ship's"``."""
    text = _SPACE_BEFORE.sub(r"\1", text)
    text = _SPACE_AFTER.sub(r"\1", text)
    text = _JOINERS.sub(r"\1", text)
    return re.sub(r"\s{2,}", " ", text).strip()


__all__ = [
    "BOS_TOKEN",
    "EOS_TOKEN",
    "NUMBER_RANGE",
    "PAD_TOKEN",
    "UNK_TOKEN",
    "add_special_tokens",
    "build_tokenizer",
    "detokenize",
    "region_indices",  # re-exported until earthgptx.training imports it from earthgptx.formats
    "special_tokens",
    "wrap_backend",
]
