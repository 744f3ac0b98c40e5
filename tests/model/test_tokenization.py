from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer

from earthgptx.formats import IMAGE_TOKEN, SEG_TOKEN, region_indices, region_token
from earthgptx.model.tokenization_earthgptx import build_tokenizer, detokenize

TEXTS = ["<image>\nWhat is <region1> next to <region2>?", "A ship at [12, 340, 56, 789].", "Sure [SEG]"]


def test_special_token_layout() -> None:
    tok = build_tokenizer(TEXTS, max_regions=8)
    assert [tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id] == [0, 1, 2, 3]
    assert tok.convert_tokens_to_ids([IMAGE_TOKEN, SEG_TOKEN]) == [4, 5]
    assert tok.convert_tokens_to_ids([region_token(i) for i in range(1, 9)]) == list(range(6, 14))


def test_numbers_are_whole_tokens() -> None:
    tok = build_tokenizer(TEXTS)
    for number in (0, 7, 42, 340, 999):
        ids = tok(str(number), add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and ids[0] != tok.unk_token_id
    box = tok("[12, 340, 56, 789]", add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(box) == ["[", "12", ",", "340", ",", "56", ",", "789", "]"]
    assert tok("1000", add_special_tokens=False)["input_ids"] == [tok.unk_token_id]


def test_placeholders_are_single_tokens_and_unknown_words_are_unk() -> None:
    tok = build_tokenizer(TEXTS)
    ids = tok("<image> <region2> [SEG] zebra", add_special_tokens=False)["input_ids"]
    assert ids == [4, 7, 5, tok.unk_token_id]


def test_training_is_deterministic_and_frequency_ordered() -> None:
    a = build_tokenizer(TEXTS + ["ship ship ship"])
    b = build_tokenizer(TEXTS + ["ship ship ship"])
    assert a.get_vocab() == b.get_vocab()
    first_word = a.convert_ids_to_tokens(14 + 1000)
    assert first_word == "ship"  # seen four times, more than any other word


def test_min_frequency_and_cap() -> None:
    tok = build_tokenizer(TEXTS, min_frequency=2)
    assert tok("ship", add_special_tokens=False)["input_ids"] == [tok.unk_token_id]
    capped = build_tokenizer(TEXTS, max_vocab_size=1014 + 3)
    assert len(capped) == 1017


def test_detokenize_round_trip_of_answers() -> None:
    tok = build_tokenizer(TEXTS + ["the ship's left-most part"])
    for text in ["A ship at [12, 340, 56, 789].", "the ship's left-most part", "What is <region1>?"]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert detokenize(tok.decode(ids)) == text


def test_save_and_load(tmp_path: Path) -> None:
    tok = build_tokenizer(TEXTS)
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    assert loaded.get_vocab() == tok.get_vocab()
    assert loaded("<region2> ship")["input_ids"] == tok("<region2> ship")["input_ids"]


def test_region_indices() -> None:
    assert region_indices("<region2> and <region10> near <region2>") == [2, 10, 2]
