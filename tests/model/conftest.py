"""Fixtures for the model tests: a tokenizer, the tiny config and model, and a folder of dataset records."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import rasterio.errors
import torch

from earthgptx.model import (
    EarthGPTXConfig,
    EarthGPTXForConditionalGeneration,
    EarthGPTXProcessor,
    build_tokenizer,
)

CHIP = 128


def _write_raster(path: Path, array: np.ndarray, driver: str = "GTiff") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(
            path,
            "w",
            driver=driver,
            width=array.shape[2],
            height=array.shape[1],
            count=array.shape[0],
            dtype=array.dtype,
        ) as dst:
            dst.write(array)


def make_records(root: Path) -> list[dict[str, Any]]:
    """One record per modality, covering every prompt type, a [SEG] answer, a grounding answer and no prompts."""
    rng = np.random.default_rng(7)
    images = {
        "opt": ("optical", ["red", "green", "blue"], rng.integers(0, 256, (3, CHIP, CHIP), dtype=np.uint8)),
        "ms": (
            "multispectral",
            ["blue", "green", "red", "nir"],
            rng.integers(0, 6000, (4, CHIP, CHIP), dtype=np.uint16),
        ),
        "sar": ("sar", ["vv", "vh"], rng.gamma(1.0, 0.1, (2, CHIP, CHIP)).astype(np.float32)),
        "ir": ("infrared", ["tir"], rng.integers(28000, 31000, (1, CHIP, CHIP), dtype=np.uint16)),
    }
    for name, (_, _, array) in images.items():
        _write_raster(root / "images" / f"{name}.tif", array)
    mask = np.zeros((1, CHIP, CHIP), dtype=np.uint8)
    mask[0, 30:70, 40:90] = 255
    _write_raster(root / "masks" / "sar.png", mask, driver="PNG")

    def record(
        name: str, prompts: list[dict[str, Any]], question: str, answer: str, **extra: Any
    ) -> dict[str, Any]:
        modality, bands, _ = images[name]
        return {
            "id": f"{name}-{len(prompts)}",
            "image": f"images/{name}.tif",
            "modality": modality,
            "bands": bands,
            "width": CHIP,
            "height": CHIP,
            "prompts": prompts,
            "conversations": [
                {"from": "human", "value": f"<image>\n{question}"},
                {"from": "gpt", "value": answer},
            ],
            "level": "L2",
            "task": "region_classification",
            **extra,
        }

    return [
        record(
            "opt",
            [{"type": "box", "box": [10.0, 12.5, 50.0, 60.0]}, {"type": "point", "point": [90.2, 30.7]}],
            "What is the relation between <region1> and <region2>?",
            "<region1> is left of <region2>.",
            task="relation",
        ),
        record(
            "ms",
            [{"type": "polygon", "polygon": [[20, 20], [80, 25], [60, 90], [15, 70]]}],
            "What is <region1>?",
            "a storage tank",
        ),
        record(
            "sar",
            [
                {"type": "scribble", "line": [[5, 5], [60, 40], [120, 10]]},
                {"type": "box", "box": [40, 30, 90, 70]},
                {"type": "point", "point": [64, 64]},
            ],
            "Segment the object in <region2>.",
            "Sure, it is a ship [SEG].",
            task="pixel_grounding",
            mask="masks/sar.png",
        ),
        record("ir", [], "Where is the hottest vehicle?", "It is at [120, 340, 450, 800].", task="grounding"),
    ]


@pytest.fixture(scope="session")
def records_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    root = tmp_path_factory.mktemp("records")
    records = make_records(root)
    (root / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return root, records


@pytest.fixture(scope="session")
def tokenizer(records_dir: tuple[Path, list[dict[str, Any]]]) -> Any:
    _, records = records_dir
    texts = [t["value"] for r in records for t in r["conversations"]] + ["USER: ASSISTANT:"]
    return build_tokenizer(texts)


@pytest.fixture(scope="session")
def config(tokenizer: Any) -> EarthGPTXConfig:
    return EarthGPTXConfig.tiny(tokenizer=tokenizer)


@pytest.fixture(scope="session")
def processor(tokenizer: Any, config: EarthGPTXConfig) -> EarthGPTXProcessor:
    return EarthGPTXProcessor(tokenizer, config)


@pytest.fixture(scope="session")
def model(config: EarthGPTXConfig) -> EarthGPTXForConditionalGeneration:
    torch.manual_seed(0)
    return EarthGPTXForConditionalGeneration(config).eval()
