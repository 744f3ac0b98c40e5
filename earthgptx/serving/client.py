"""Calling the served entry model (``earthgptx``) with ``tritonclient``: inputs built, outputs parsed, errors sorted.

``build_inputs`` makes the entry model's inputs for either client flavour (``tritonclient.grpc`` or ``.http``);
``parse_outputs`` turns a result into a ``ServedAnswer``. ``AsyncTritonClient`` wraps the gRPC asyncio client and
translates failures, once, into the bus's error model (``earthgptx.bus.errors``), so a handler lets them propagate:

- ``TritonUnavailable`` (transient): the server is not reachable, not ready, or the model is not loaded / loading,
  the call timed out, or the server failed internally. Retry later; never dead-letter for it.
- ``TritonRejected`` (permanent): Triton said the request is invalid (``INVALID_ARGUMENT``: bad bands, a prompt
  outside the chip, an unknown modality, ...). Retrying cannot help; the reason is Triton's message.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from earthgptx.answers import parse_answer_strict
from earthgptx.bus.errors import DependencyUnavailable, PermanentError
from earthgptx.serving.answers import ServedAnswer, ServingRequest
from earthgptx.serving.text import decode_text, encode_text

ENTRY_MODEL = "earthgptx"
OUTPUT_NAMES = ("ANSWER", "BOXES", "LABEL", "COUNT", "MASK", "MODEL_VERSION")
# gRPC status codes (and the HTTP client's textual statuses) that mean "the request itself is wrong".
_INVALID_STATUSES = frozenset({"StatusCode.INVALID_ARGUMENT", "400"})


class TritonUnavailable(DependencyUnavailable):
    """Triton could not answer now (down, not ready, model loading, timeout, internal failure): retry later, without
    limit (the bus never dead-letters a record for it)."""


class TritonRejected(PermanentError):
    """Triton refused the request as invalid; ``reason`` is its message."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _text_input(module: Any, name: str, text: str) -> Any:
    data = encode_text(text)[None]
    tensor = module.InferInput(name, list(data.shape), "UINT8")
    tensor.set_data_from_numpy(data)
    return tensor


def build_inputs(module: Any, request: ServingRequest) -> list[Any]:
    """The entry model's inputs for ``request``; ``module`` is ``tritonclient.grpc`` or ``tritonclient.http``."""
    bands = np.ascontiguousarray(np.asarray(request.bands, dtype=np.float32))
    if bands.ndim == 2:
        bands = bands[None]
    pixels = module.InferInput("BANDS", [1, *bands.shape], "FP32")
    pixels.set_data_from_numpy(bands[None])
    inputs = [
        pixels,
        _text_input(module, "MODALITY", request.modality),
        _text_input(module, "BAND_NAMES", json.dumps(list(request.band_names))),
        _text_input(module, "PROMPTS", json.dumps(list(request.prompts))),
        _text_input(module, "INSTRUCTION", request.instruction),
    ]
    if request.sar_scale != "amplitude":
        inputs.append(_text_input(module, "SAR_SCALE", request.sar_scale))
    if request.max_new_tokens is not None:
        limit = module.InferInput("MAX_NEW_TOKENS", [1, 1], "INT32")
        limit.set_data_from_numpy(np.array([[request.max_new_tokens]], dtype=np.int32))
        inputs.append(limit)
    return inputs


def requested_outputs(module: Any) -> list[Any]:
    return [module.InferRequestedOutput(name) for name in OUTPUT_NAMES]


def parse_outputs(result: Any) -> ServedAnswer:
    """A result of the entry model (either client flavour) → ``ServedAnswer``."""

    def array(name: str) -> np.ndarray:
        value = result.as_numpy(name)
        if value is None:
            raise ValueError(f"the entry model's answer has no {name}")
        return np.asarray(value)

    mask = array("MASK")[0].astype(np.uint8)
    text = decode_text(array("ANSWER")[0])
    # The entry model parsed this text with the same strict parser (and sent no geometry when it failed).
    checked = parse_answer_strict(text)
    return ServedAnswer(
        text=text,
        label=decode_text(array("LABEL")[0]),
        boxes=[[float(v) for v in box] for box in array("BOXES")[0].reshape(-1, 4)],
        count=int(array("COUNT").reshape(-1)[0]),
        mask=mask,
        model_version=decode_text(array("MODEL_VERSION")[0]),
        parsed=checked.parsed,
        parse_failure=checked.failure or "",
    )


def classify_error(error: Exception) -> TritonUnavailable | TritonRejected:
    """Sort a ``tritonclient`` failure into the two library errors (see the module docstring)."""
    status = str(getattr(error, "status", lambda: "")() or "")
    message = str(getattr(error, "message", lambda: "")() or error)
    if status in _INVALID_STATUSES and "not ready" not in message and "unknown model" not in message:
        return TritonRejected(message)
    return TritonUnavailable(f"{status or type(error).__name__}: {message}")


def channel_args(grpc_module: Any) -> list[tuple[str, int]]:
    """gRPC channel options: tritonclient's defaults (message size, keep-alive) plus a reconnect back-off capped at
    1 s. gRPC's own cap is 120 s, so after a Triton outage the client could wait up to two minutes before it tried
    again; with 1 s it answers within about a second of Triton being back."""
    keepalive = grpc_module.KeepAliveOptions()
    size = int(grpc_module.MAX_GRPC_MESSAGE_SIZE)
    return [
        ("grpc.max_send_message_length", size),
        ("grpc.max_receive_message_length", size),
        ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", int(keepalive.keepalive_permit_without_calls)),
        ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ]


class AsyncTritonClient:
    """The entry model over gRPC (asyncio); ``answer`` raises ``TritonUnavailable`` or ``TritonRejected``."""

    def __init__(self, url: str, model_name: str = ENTRY_MODEL, timeout_s: float = 60.0) -> None:
        import tritonclient.grpc.aio as grpc_aio

        self._grpc_aio = grpc_aio
        self.url, self.model_name, self.timeout_s = url, model_name, timeout_s
        self._client = grpc_aio.InferenceServerClient(url=url, channel_args=channel_args(grpc_aio))

    async def ready(self) -> bool:
        """Whether the server is ready and the entry model loaded (False when unreachable)."""
        try:
            return bool(await self._client.is_server_ready()) and bool(
                await self._client.is_model_ready(self.model_name)
            )
        except Exception:  # any failure to ask means "not ready"
            return False

    async def answer(self, request: ServingRequest) -> ServedAnswer:
        import tritonclient.grpc as grpc_module
        from tritonclient.utils import InferenceServerException

        try:
            result = await self._client.infer(
                self.model_name,
                build_inputs(grpc_module, request),
                outputs=requested_outputs(grpc_module),
                client_timeout=self.timeout_s,
            )
        except InferenceServerException as exc:
            raise classify_error(exc) from exc
        except (OSError, TimeoutError) as exc:
            raise TritonUnavailable(f"{type(exc).__name__}: {exc}") from exc
        return parse_outputs(result)

    async def close(self) -> None:
        await self._client.close()


def answer_many_http(
    url: str, requests: Sequence[ServingRequest], model_name: str = ENTRY_MODEL
) -> list[Any]:
    """Send ``requests`` concurrently over HTTP; each item is a ``ServedAnswer`` or the exception it raised
    (sorted by ``classify_error``). For tests and tools."""
    import tritonclient.http as http_module
    from tritonclient.utils import InferenceServerException

    client = http_module.InferenceServerClient(
        url=url, concurrency=max(1, len(requests)), network_timeout=300.0
    )
    try:
        pending = [
            client.async_infer(
                model_name, build_inputs(http_module, r), outputs=requested_outputs(http_module)
            )
            for r in requests
        ]
        results: list[Any] = []
        for handle in pending:
            try:
                results.append(parse_outputs(handle.get_result()))
            except InferenceServerException as exc:
                results.append(classify_error(exc))
        return results
    finally:
        client.close()


__all__ = [
    "ENTRY_MODEL",
    "OUTPUT_NAMES",
    "AsyncTritonClient",
    "TritonRejected",
    "TritonUnavailable",
    "answer_many_http",
    "build_inputs",
    "classify_error",
    "parse_outputs",
    "requested_outputs",
]
