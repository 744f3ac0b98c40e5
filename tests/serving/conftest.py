"""Fixtures for the serving tests: the shipped checkpoint in process, and held-out records covering every task,
modality and prompt type (generated from the held-out seed, which no training stage used)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from earthgptx.data.generate import generate_dataset
from earthgptx.model import EarthGPTXForConditionalGeneration, EarthGPTXProcessor, ParsedAnswer
from earthgptx.serving.requests import ServingRequest
from earthgptx.training.datasets import collate_records, read_image

REPO_ROOT = Path(__file__).resolve().parents[2]
CHECKPOINT = REPO_ROOT / "models" / "earthgptx-tiny"
HELD_OUT_SEED = 90210
MAX_NEW_TOKENS = 48


def prompt_kind(record: dict[str, Any]) -> str:
    return "+".join(p["type"] for p in record.get("prompts", [])) or "none"


def covering_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A small subset holding every (task, modality) and every (modality, prompt type) pair of ``records``."""
    chosen: list[dict[str, Any]] = []
    seen: set[tuple[str, str, str]] = set()
    for record in records:
        keys = {("tm", record["task"], record["modality"]), ("mp", record["modality"], prompt_kind(record))}
        if not keys <= seen:
            chosen.append(record)
            seen |= keys
    return chosen


@pytest.fixture(scope="session")
def held_out(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    """(folder, records): a covering subset of three held-out scenes' records."""
    folder = tmp_path_factory.mktemp("held-out")
    path = generate_dataset(folder, n_scenes=3, seed=HELD_OUT_SEED, progress=False)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return folder, covering_records(records)


@pytest.fixture(scope="session")
def tiny_model() -> EarthGPTXForConditionalGeneration:
    torch.manual_seed(0)
    return EarthGPTXForConditionalGeneration.from_pretrained(str(CHECKPOINT), dtype=torch.float32).eval()


@pytest.fixture(scope="session")
def tiny_processor() -> EarthGPTXProcessor:
    return EarthGPTXProcessor.from_pretrained(CHECKPOINT)


def read_chip(folder: Path, record: dict[str, Any]) -> np.ndarray:
    return read_image(folder / record["image"])


def serving_request(folder: Path, record: dict[str, Any], **changes: Any) -> ServingRequest:
    """The record's first question as a request (raw bands sent as float32, as clients do)."""
    request = ServingRequest(
        bands=read_chip(folder, record).astype(np.float32),
        modality=record["modality"],
        band_names=list(record["bands"]),
        prompts=list(record.get("prompts", [])),
        instruction=record["conversations"][0]["value"],
        max_new_tokens=MAX_NEW_TOKENS,
    )
    for key, value in changes.items():
        setattr(request, key, value)
    return request


def in_process_answers(
    model: EarthGPTXForConditionalGeneration,
    processor: EarthGPTXProcessor,
    folder: Path,
    records: list[dict[str, Any]],
    batch_size: int = 8,
) -> list[ParsedAnswer]:
    """Greedy answers of ``model.generate`` in process (the reference), in batches of ``batch_size``."""
    answers: list[ParsedAnswer] = []
    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        batch = collate_records(chunk, folder, processor, train=False)
        generated = model.generate(**batch, max_new_tokens=MAX_NEW_TOKENS)
        answers += processor.post_process_generation(
            generated.sequences,
            generated.mask_logits,
            generated.seg_batch_index,
            sizes=[(r["width"], r["height"]) for r in chunk],
        )
    return answers


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)
