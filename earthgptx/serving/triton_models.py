"""The three Triton python models of the EarthGPT-X repository; each ``model.py`` only subclasses one of these.

- ``VisionEncoderModel`` (``vision_encoder``, the python-backend variant): the ONNX graph in ONNX Runtime, one run
  over all the requests of an ``execute`` (``earthgptx.serving.vision``).
- ``LlmModel`` (``llm``): batched greedy generation over all the requests of an ``execute``
  (``earthgptx.serving.generation``); returns the new ids and one mask-logit map per ``[SEG]``.
- ``EntryModel`` (``earthgptx``): what clients call. Preprocesses with the project's processor, then calls
  ``vision_encoder`` through BLS with the whole batch of its ``execute`` in one request (one hand-off, one graph
  run; each request alone only if that fails, so a bad one gets its own error) and ``llm`` with one request per
  item, sent back to back so the llm's dynamic batcher sees them together, and parses the answer.

Every model returns exactly one response per request, in order; a bad request gets its own ``TritonError``
(``INVALID_ARG``), a cancelled one a ``CANCELLED`` error, and the rest of the batch is answered normally. Tensors
cross the stub boundary through DLPack (torch), never as NumPy arrays, and text as UINT8 UTF-8 bytes
(``earthgptx.serving.text`` says why).
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.dlpack import from_dlpack, to_dlpack

from earthgptx.serving.generation import DEFAULT_MAX_NEW_TOKENS, BatchedGenerator, GenerationItem
from earthgptx.serving.requests import (
    InvalidRequest,
    PreparedRequest,
    ServingRequest,
    finish_answer,
    parse_band_names,
    parse_prompts,
    prepare_request,
)
from earthgptx.serving.text import decode_text, text_tensor
from earthgptx.serving.version import checkpoint_version
from earthgptx.serving.vision import PROMPT_OUTPUTS, BatchedVisionEncoder, VisionInputs

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
VISION_OUTPUTS = ("IMAGE_TOKENS", "PROMPT_TOKENS", "MASK_FEATURES", "COUNT_MIX", "REGION_COUNT_MIX")
ENTRY_OUTPUTS = ("ANSWER", "BOXES", "LABEL", "COUNT", "MASK", "MODEL_VERSION")


def _pb() -> Any:
    """The stub's utility module (importable only inside a Triton python backend process)."""
    import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]

    return pb_utils


def _parameters(config: dict[str, Any]) -> dict[str, str]:
    return {key: str(value.get("string_value", "")) for key, value in config.get("parameters", {}).items()}


def _version_dir(args: dict[str, Any]) -> Path:
    return Path(args["model_repository"]) / str(args["model_version"])


def _threads(parameters: dict[str, str]) -> int:
    value = int(parameters.get("threads", "0") or 0)
    return value if value > 0 else max(1, torch.get_num_threads())


def get_tensor(request: Any, name: str) -> torch.Tensor | None:
    """An input of ``request`` as a CPU tensor (through DLPack), or ``None`` when the client did not send it."""
    tensor = _pb().get_input_tensor_by_name(request, name)
    if tensor is None:
        return None
    return from_dlpack(tensor.to_dlpack())


def require_tensor(request: Any, name: str) -> torch.Tensor:
    value = get_tensor(request, name)
    if value is None:
        raise InvalidRequest(f"input {name} is missing")
    return value


def get_output(response: Any, name: str) -> torch.Tensor | None:
    tensor = _pb().get_output_tensor_by_name(response, name)
    return None if tensor is None else from_dlpack(tensor.to_dlpack())


def make_tensor(name: str, value: torch.Tensor | np.ndarray) -> Any:
    """A ``pb_utils.Tensor`` through DLPack (contiguous CPU copy when needed)."""
    tensor = torch.from_numpy(np.ascontiguousarray(value)) if isinstance(value, np.ndarray) else value
    tensor = tensor.detach().contiguous()
    if tensor.numel() == 0:
        # torch gives empty tensors strides the stub does not accept as C order; build the C-order ones.
        strides: list[int] = []
        step = 1
        for size in reversed(tensor.shape):
            strides.insert(0, step)
            step *= size
        tensor = torch.empty_strided(tuple(tensor.shape), tuple(strides), dtype=tensor.dtype)
    return _pb().Tensor.from_dlpack(name, to_dlpack(tensor))


def error_response(message: str, code: str = "INVALID_ARG") -> Any:
    pb = _pb()
    return pb.InferenceResponse(
        output_tensors=[], error=pb.TritonError(message, getattr(pb.TritonError, code))
    )


def _is_cancelled(request: Any) -> bool:
    check = getattr(request, "is_cancelled", None)
    return bool(check()) if callable(check) else False


def _single(value: torch.Tensor, name: str) -> torch.Tensor:
    """Drop the batch dimension of a batched model's input (each request carries one item)."""
    if value.ndim == 0 or value.shape[0] != 1:
        raise InvalidRequest(
            f"{name} must carry exactly one item in its batch dimension, got {tuple(value.shape)}"
        )
    return value[0]


# --------------------------------------------------------------------------------------------------- vision
class VisionEncoderModel:
    """``vision_encoder`` in the python backend: the ONNX graph in ONNX Runtime (dev hosts' wheel server)."""

    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        parameters = _parameters(config)
        gpu = args.get("model_instance_kind") == "GPU"
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if gpu else ["CPUExecutionProvider"]
        self.encoder = BatchedVisionEncoder(
            _version_dir(args) / "model.onnx", providers=providers, intra_op_threads=_threads(parameters)
        )
        self.image_size = self.encoder.image_size

    def execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        batch: list[tuple[int, VisionInputs]] = []
        for index, request in enumerate(requests):
            if _is_cancelled(request):
                responses[index] = error_response("request cancelled", "CANCELLED")
                continue
            try:
                inputs = VisionInputs(
                    require_tensor(request, "PIXEL_VALUES").numpy(),
                    require_tensor(request, "MODALITY_IDS").numpy(),
                    require_tensor(request, "PROMPT_MASKS").numpy(),
                    require_tensor(request, "PROMPT_VALID").numpy(),
                )
                inputs.check(self.image_size)
            except (InvalidRequest, ValueError) as exc:
                responses[index] = error_response(str(exc))
                continue
            batch.append((index, inputs))
        if batch:
            outputs = self.encoder.run_batched([inputs for _, inputs in batch])
            for (index, _), values in zip(batch, outputs, strict=True):
                tensors = [make_tensor(name, value) for name, value in values.items()]
                responses[index] = _pb().InferenceResponse(output_tensors=tensors)
        return responses


# --------------------------------------------------------------------------------------------------- llm
class LlmModel:
    """``llm``: the language model, count copy and mask decoder of the checkpoint, batched greedy decoding."""

    def initialize(self, args: dict[str, Any]) -> None:
        from earthgptx.model import EarthGPTXForConditionalGeneration

        config = json.loads(args["model_config"])
        parameters = _parameters(config)
        torch.set_num_threads(_threads(parameters))
        checkpoint = _version_dir(args) / CHECKPOINT_DIR
        device = torch.device("cpu")
        if args.get("model_instance_kind") == "GPU" and torch.cuda.is_available():
            device = torch.device("cuda", int(args.get("model_instance_device_id", 0)))
        dtype = getattr(torch, parameters.get("dtype", "float32") or "float32")
        model = EarthGPTXForConditionalGeneration.from_pretrained(str(checkpoint), dtype=dtype)
        model.to(device)  # type: ignore[arg-type]  # transformers types .to for its own arguments only
        self.generator = BatchedGenerator(model.eval())
        self.default_max_new_tokens = int(parameters.get("default_max_new_tokens", DEFAULT_MAX_NEW_TOKENS))
        self.model_version = checkpoint_version(checkpoint)
        log.info("llm %s loaded on %s", self.model_version, device)

    def _item(self, request: Any) -> GenerationItem:
        def optional(name: str) -> torch.Tensor | None:
            value = get_tensor(request, name)
            return None if value is None else _single(value, name)

        limit = optional("MAX_NEW_TOKENS")
        stop = optional("STOP_IDS")
        item = GenerationItem(
            input_ids=_single(require_tensor(request, "INPUT_IDS"), "INPUT_IDS").long(),
            image_tokens=_single(require_tensor(request, "IMAGE_TOKENS"), "IMAGE_TOKENS"),
            prompt_tokens=_single(require_tensor(request, "PROMPT_TOKENS"), "PROMPT_TOKENS"),
            prompt_valid=_single(require_tensor(request, "PROMPT_VALID"), "PROMPT_VALID").bool(),
            mask_features=_single(require_tensor(request, "MASK_FEATURES"), "MASK_FEATURES"),
            count_mix=optional("COUNT_MIX"),
            region_count_mix=optional("REGION_COUNT_MIX"),
            max_new_tokens=self.default_max_new_tokens if limit is None else int(limit.reshape(-1)[0]),
            stop_ids=[] if stop is None else [int(v) for v in stop.reshape(-1).tolist()],
            is_cancelled=getattr(request, "is_cancelled", None),
        )
        self.generator.validate(item)
        return item

    def execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        batch: list[tuple[int, GenerationItem]] = []
        for index, request in enumerate(requests):
            if _is_cancelled(request):
                responses[index] = error_response("request cancelled", "CANCELLED")
                continue
            try:
                batch.append((index, self._item(request)))
            except (InvalidRequest, ValueError) as exc:
                responses[index] = error_response(str(exc))
        results = self.generator.generate([item for _, item in batch])
        size = self.generator.model.config.image_size
        for (index, _), result in zip(batch, results, strict=True):
            if result.cancelled:
                responses[index] = error_response("request cancelled", "CANCELLED")
                continue
            ids = torch.tensor([result.token_ids], dtype=torch.long)
            masks = result.mask_logits if result.mask_logits is not None else torch.zeros(0, size, size)
            tensors = [
                make_tensor("OUTPUT_IDS", ids),
                make_tensor("MASK_LOGITS", masks.float().cpu()[None]),
                make_tensor("MODEL_VERSION", text_tensor(self.model_version)[None]),
            ]
            responses[index] = _pb().InferenceResponse(output_tensors=tensors)
        return responses


# --------------------------------------------------------------------------------------------------- entry
def read_request(request: Any) -> ServingRequest:
    """The entry model's inputs → a ``ServingRequest`` (``InvalidRequest`` naming a missing or bad input)."""

    def text(name: str, required: bool = True) -> str:
        value = get_tensor(request, name)
        if value is None:
            if required:
                raise InvalidRequest(f"input {name} is missing")
            return ""
        try:
            return decode_text(_single(value, name))
        except ValueError as exc:
            raise InvalidRequest(f"{name}: {exc}") from exc

    bands = _single(require_tensor(request, "BANDS"), "BANDS")
    limit = get_tensor(request, "MAX_NEW_TOKENS")
    return ServingRequest(
        bands=bands.float().numpy(),
        modality=text("MODALITY").strip(),
        band_names=parse_band_names(text("BAND_NAMES")),
        prompts=parse_prompts(text("PROMPTS", required=False)),
        instruction=text("INSTRUCTION"),
        max_new_tokens=None if limit is None else int(_single(limit, "MAX_NEW_TOKENS").reshape(-1)[0]),
        sar_scale=text("SAR_SCALE", required=False).strip() or "amplitude",
    )


class EntryModel:
    """``earthgptx``: preprocess → ``vision_encoder`` → ``llm`` (BLS) → parsed answer at chip size."""

    def initialize(self, args: dict[str, Any]) -> None:
        from earthgptx.model import EarthGPTXProcessor

        config = json.loads(args["model_config"])
        parameters = _parameters(config)
        torch.set_num_threads(_threads(parameters))
        checkpoint = _version_dir(args) / CHECKPOINT_DIR
        self.processor = EarthGPTXProcessor.from_pretrained(checkpoint)
        self.model_version = checkpoint_version(checkpoint)
        self.vision_model = parameters.get("vision_model", "vision_encoder") or "vision_encoder"
        self.llm_model = parameters.get("llm_model", "llm") or "llm"
        self.default_max_new_tokens = int(parameters.get("default_max_new_tokens", DEFAULT_MAX_NEW_TOKENS))
        self.max_new_tokens_cap = int(parameters.get("max_new_tokens_cap", 256))
        self.stop_ids = torch.tensor(
            [[int(v) for v in parameters.get("stop_ids", "").split(",") if v.strip()]]
        )

    def _vision_request(self, batch: list[PreparedRequest]) -> Any:
        """One ``vision_encoder`` request for all of ``batch`` (its own batch dimension, prompt slots padded to the
        largest count with ``PROMPT_VALID=False``, as the processor pads an in-process batch): one BLS hand-off and
        one graph run instead of one per request."""
        pb = _pb()
        slots = max(p.prompt_masks.shape[0] for p in batch)

        def padded(value: torch.Tensor, fill: float | bool) -> torch.Tensor:
            if value.shape[0] == slots:
                return value
            pad = torch.full((slots - value.shape[0], *value.shape[1:]), fill, dtype=value.dtype)
            return torch.cat([value, pad])

        inputs = [
            make_tensor("PIXEL_VALUES", torch.stack([p.pixel_values.float() for p in batch])),
            make_tensor("MODALITY_IDS", torch.tensor([[p.modality_id] for p in batch], dtype=torch.int64)),
            make_tensor("PROMPT_MASKS", torch.stack([padded(p.prompt_masks.float(), 0.0) for p in batch])),
            make_tensor("PROMPT_VALID", torch.stack([padded(p.prompt_valid.bool(), False) for p in batch])),
        ]
        return pb.InferenceRequest(model_name=self.vision_model, inputs=inputs, requested_output_names=[])

    @staticmethod
    def _vision_rows(vision: Any, batch: list[PreparedRequest]) -> list[dict[str, torch.Tensor]]:
        """Each request's outputs of a batched ``vision_encoder`` response: its row, cut to its own prompt slots."""
        outputs = {name: get_output(vision, name) for name in VISION_OUTPUTS}
        rows = []
        for row, prepared in enumerate(batch):
            slots = prepared.prompt_masks.shape[0]
            rows.append(
                {
                    name: value[row : row + 1, :slots] if name in PROMPT_OUTPUTS else value[row : row + 1]
                    for name, value in outputs.items()
                    if value is not None
                }
            )
        return rows

    async def _vision(self, batch: dict[int, PreparedRequest]) -> dict[int, Any]:
        """``vision_encoder`` outputs per request (``{name: tensor}``), or the error response of a request it refused.
        The batch goes in one request; should that fail, each request is sent alone, so only a bad one fails."""
        order = list(batch)
        response = await self._vision_request([batch[i] for i in order]).async_exec()
        if not response.has_error():
            return dict(zip(order, self._vision_rows(response, [batch[i] for i in order]), strict=True))
        if len(order) == 1:
            return {order[0]: self._bls_error(self.vision_model, response)}
        alone = await asyncio.gather(*(self._vision_request([batch[i]]).async_exec() for i in order))
        return {
            index: self._bls_error(self.vision_model, single)
            if single.has_error()
            else self._vision_rows(single, [batch[index]])[0]
            for index, single in zip(order, alone, strict=True)
        }

    def _llm_request(self, prepared: PreparedRequest, vision: dict[str, torch.Tensor]) -> Any:
        pb = _pb()
        inputs = [
            make_tensor("INPUT_IDS", prepared.input_ids[None]),
            make_tensor("PROMPT_VALID", prepared.prompt_valid[None].bool()),
            make_tensor("MAX_NEW_TOKENS", torch.tensor([[prepared.max_new_tokens]], dtype=torch.int32)),
        ]
        inputs += [make_tensor(name, value) for name, value in vision.items()]
        if self.stop_ids.numel():
            inputs.append(make_tensor("STOP_IDS", self.stop_ids))
        return pb.InferenceRequest(model_name=self.llm_model, inputs=inputs, requested_output_names=[])

    @staticmethod
    def _bls_error(stage: str, response: Any) -> Any | None:
        if not response.has_error():
            return None
        error = response.error()
        pb = _pb()
        code = error.code() if callable(getattr(error, "code", None)) else pb.TritonError.INTERNAL
        return pb.InferenceResponse(
            output_tensors=[], error=pb.TritonError(f"{stage}: {error.message()}", code)
        )

    def _answer_response(self, prepared: PreparedRequest, llm: Any) -> Any:
        ids = get_output(llm, "OUTPUT_IDS")
        masks = get_output(llm, "MASK_LOGITS")
        token_ids = [] if ids is None else ids.reshape(-1).tolist()
        mask_logits = None if masks is None or masks.numel() == 0 else masks[0]
        answer = finish_answer(
            self.processor, token_ids, mask_logits, prepared.width, prepared.height, self.model_version
        )
        boxes = torch.tensor(answer.boxes, dtype=torch.float32).reshape(1, -1, 4)
        tensors = [
            make_tensor("ANSWER", text_tensor(answer.text)[None]),
            make_tensor("BOXES", boxes),
            make_tensor("LABEL", text_tensor(answer.label)[None]),
            make_tensor("COUNT", torch.tensor([[answer.count]], dtype=torch.int32)),
            make_tensor("MASK", torch.from_numpy(answer.mask)[None]),
            make_tensor("MODEL_VERSION", text_tensor(self.model_version)[None]),
        ]
        return _pb().InferenceResponse(output_tensors=tensors)

    async def execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        prepared: dict[int, PreparedRequest] = {}
        for index, request in enumerate(requests):
            if _is_cancelled(request):
                responses[index] = error_response("request cancelled", "CANCELLED")
                continue
            try:
                prepared[index] = prepare_request(
                    self.processor,
                    read_request(request),
                    self.default_max_new_tokens,
                    self.max_new_tokens_cap,
                )
            except InvalidRequest as exc:
                responses[index] = error_response(str(exc))
        visions = await self._vision(prepared) if prepared else {}
        llm_calls = {}
        for index, vision in visions.items():
            if isinstance(vision, dict):
                llm_calls[index] = self._llm_request(prepared[index], vision)
            else:
                responses[index] = vision
        answers = await asyncio.gather(*(call.async_exec() for call in llm_calls.values()))
        for index, llm in zip(llm_calls, answers, strict=True):
            failed = self._bls_error(self.llm_model, llm)
            if failed is not None:
                responses[index] = failed
                continue
            try:
                responses[index] = self._answer_response(prepared[index], llm)
            except Exception as exc:  # this request's failure alone; the rest of the batch is answered
                log.exception("postprocessing failed")
                responses[index] = error_response(f"postprocessing failed: {exc}", "INTERNAL")
        return responses


__all__ = [
    "CHECKPOINT_DIR",
    "ENTRY_OUTPUTS",
    "EntryModel",
    "LlmModel",
    "VisionEncoderModel",
    "read_request",
]
