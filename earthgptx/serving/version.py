"""The served model's version string: the checkpoint folder's name and a digest of its weights and config.

``checkpoint_version`` reads ``version.txt`` when the model-repository build wrote one beside the copied
checkpoint, and computes the digest otherwise, so a model answers with the same string wherever it is loaded.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

VERSION_FILE = "version.txt"
_HASHED_SUFFIXES = (".safetensors", ".bin", ".json")
_CHUNK = 1 << 20


def compute_checkpoint_version(checkpoint: str | Path, name: str | None = None) -> str:
    """``<name>@<12 hex digits>``: SHA-256 over the folder's weight and JSON files (sorted by name)."""
    folder = Path(checkpoint)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in _HASHED_SUFFIXES)
    if not any(p.suffix in (".safetensors", ".bin") for p in files):
        raise FileNotFoundError(f"{folder} holds no model weights (*.safetensors / *.bin)")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    return f"{name or folder.resolve().name}@{digest.hexdigest()[:12]}"


def checkpoint_version(checkpoint: str | Path) -> str:
    """The version written by the build (``version.txt``), or computed from the folder."""
    stored = Path(checkpoint) / VERSION_FILE
    if stored.is_file():
        text = stored.read_text(encoding="utf-8").strip()
        if text:
            return text
    return compute_checkpoint_version(checkpoint)


__all__ = ["VERSION_FILE", "checkpoint_version", "compute_checkpoint_version"]
