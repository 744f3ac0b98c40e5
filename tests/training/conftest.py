"""Fixtures of the training tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from training_testkit import CHIP, TRAIN_SCENES

from earthgptx.data import generate_dataset


@pytest.fixture(scope="session")
def train_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A training dataset of a few hundred records (generated once per session)."""
    out = tmp_path_factory.mktemp("train-data")
    generate_dataset(out, TRAIN_SCENES, seed=3, chip_size=CHIP, progress=False)
    return out
