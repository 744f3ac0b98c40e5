"""Text tensors of the served models: UTF-8 bytes in a UINT8 tensor, not Triton's BYTES type.

The python backend stub of the pip-wheel ``tritonserver`` was built for NumPy 1.x; under NumPy 2 it misreads BYTES
tensors (its deserialiser gets a wrong buffer: "unpack_from requires a buffer of at least 252645139 bytes"), while
fixed-size tensors cross through DLPack unharmed. So every string input and output (``INSTRUCTION``, ``MODALITY``,
``BAND_NAMES``, ``PROMPTS``, ``ANSWER``, ``LABEL``, ``MODEL_VERSION``) is a 1-D UINT8 tensor of UTF-8 bytes; a
batched model adds the batch dimension in front. ``earthgptx.serving.client`` does the encoding for clients.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch


def encode_text(text: str) -> np.ndarray:
    """``text`` → a 1-D uint8 array of its UTF-8 bytes."""
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).copy()


def decode_text(values: Any) -> str:
    """A uint8 array or tensor of UTF-8 bytes (any shape; flattened) → the text; bad bytes raise ``ValueError``."""
    array = values.detach().cpu().numpy() if hasattr(values, "detach") else np.asarray(values)
    if array.size == 0:  # some clients hand an empty tensor back as float64
        return ""
    if array.dtype != np.uint8:
        raise ValueError(f"a text tensor must be UINT8 (UTF-8 bytes), got {array.dtype}")
    try:
        return array.reshape(-1).tobytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"a text tensor is not valid UTF-8: {exc}") from exc


def text_tensor(text: str) -> torch.Tensor:
    """``text`` → a 1-D uint8 tensor (for DLPack)."""
    import torch

    return torch.from_numpy(encode_text(text))


__all__ = ["decode_text", "encode_text", "text_tensor"]
