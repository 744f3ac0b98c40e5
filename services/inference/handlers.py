"""What the inference service does with ``PromptTask``s: read each chip, ask the served model, publish the answers.

Batches. ``on_prompt_tasks`` takes every record of one poll (``batch_route``) and works on them concurrently, at
most ``max_in_flight`` Triton requests at once (so Triton's dynamic batcher has work), in an asyncio loop the
handler owns (its gRPC client lives there). ``on_prompt_task`` is the same with a batch of one.

Per task: the chip GeoTIFF is read from MinIO (rasterio, in memory), its bands go to Triton raw as float32 with the
task's modality, band names (the chip's band descriptions when the task names none), prompts (chip pixels, as the
processor's dicts: ``earthgptx.visual_prompts``) and instruction. The ``InferenceResult`` carries the parsed answer
(text, label, boxes in chip pixels, count, the mask as a PNG in ``masks_bucket`` referenced by an ``ObjectRef``,
``attributes`` for attribute tasks, ``relations`` for relation tasks), the model version Triton reports and the
stage timings in milliseconds (``queue``: since the task was produced, ``read_chip``, ``triton``, ``total``;
the publish time is logged). Its event id hashes the task id and the model version, so a re-delivered task republishes the same
event (and the resultstore's upserts make the effect exactly once).

Chips and answers. The chip's declared no-data pixels are sent as NaN (masked by the processor; their share is
``InferenceResult.nodata_fraction``); a chip that is entirely no-data, too small or a strip is refused before Triton
is asked (``earthgptx.radiometry.check_chip``). The answer text is parsed strictly with the task's form
(``earthgptx.answers.parse_answer_strict``): an answer that does not parse is published as text only, with
``answer_parsed`` false and ``parse_failure`` the reason, and no boxes, mask, count, attributes or relations.

Failures (the bus's error model; ``earthgptx.serving.client`` sorts Triton's): a task Triton rejects as invalid, a
refused chip, a missing chip, a task without modality or with unusable prompts is rejected with the reason
(dead-lettered).
Triton down, not ready or loading raises ``TritonUnavailable`` (an outage: the batch is retried without limit,
never dead-lettered); the tasks already answered and acknowledged are remembered, so the retry neither asks Triton
again nor publishes them twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import rasterio
from google.protobuf.message import Message
from prometheus_client import Counter, Gauge, Histogram
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

from earthgptx import events
from earthgptx.answers import StrictAnswer, parse_answer_strict
from earthgptx.bus import PermanentError
from earthgptx.data.vocabulary import TASKS
from earthgptx.radiometry import RefusedInput, check_chip, nodata_mask
from earthgptx.serving.answers import ServedAnswer, ServingRequest
from earthgptx.serving.client import TritonRejected, TritonUnavailable
from earthgptx.v1.events_pb2 import (
    Answer,
    DetectedBox,
    InferenceResult,
    Modality,
    ObjectRef,
    PixelBox,
    PromptTask,
    Relation,
)
from earthgptx.visual_prompts import messages_to_dicts

log = logging.getLogger(__name__)

PRODUCER_NAME = "inference"
ATTRIBUTE_TASKS = frozenset({"attribute", "attributes"})
RELATION_TASKS = frozenset({"relation", "relations"})
MASK_CONTENT_TYPE = "image/png"
_REMEMBERED = 10_000

IN_FLIGHT = Gauge("egx_inference_in_flight", "Triton requests in flight")
LATENCY = Histogram(
    "egx_inference_latency_seconds", "Time from reading a task's chip to its answer", ["stage"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)  # fmt: skip
ERRORS = Counter("egx_inference_errors_total", "Tasks that failed, by cause", ["cause"])
ANSWERED = Counter("egx_inference_answered_total", "Tasks answered and published")
UNPARSED = Counter("egx_inference_unparsed_total", "Answers published as unparsed text (no geometry)")


class Objects(Protocol):
    """The part of ``earthgptx.store.objects.ObjectStore`` the handler uses."""

    def get_stream(self, bucket: str, key: str) -> Any: ...

    def put_bytes(self, bucket: str, key: str, data: bytes, *, content_type: str = ...) -> Any: ...


class ServedModel(Protocol):
    """The part of ``earthgptx.serving.client.AsyncTritonClient`` the handler uses."""

    async def answer(self, request: ServingRequest) -> ServedAnswer: ...

    async def close(self) -> None: ...


class EventPublisher(Protocol):
    """The part of ``earthgptx.bus.EventProducer`` the handler uses."""

    def publish(self, topic: str, key: str, message: Message) -> Any: ...

    def wait(self, futures: Sequence[Any], *, timeout_s: float = 30.0) -> list[Any]: ...


def modality_name(value: int) -> str:
    """``Modality`` enum → the processor's modality name; ``PermanentError`` for an unspecified one."""
    if value == Modality.MODALITY_UNSPECIFIED or value not in Modality.values():
        raise PermanentError(f"the task has no modality ({value})")
    return Modality.Name(value).removeprefix("MODALITY_").lower()


def read_chip(data: bytes) -> tuple[np.ndarray, list[str]]:
    """A chip GeoTIFF's bytes → its ``(C, H, W)`` bands as float32 (NaN where the chip declares no-data) and band
    descriptions; ``PermanentError`` if unreadable."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.MemoryFile(data) as memory, memory.open() as source:
                bands, nodata = source.read(), list(source.nodatavals)
                descriptions = [d or "" for d in source.descriptions]
    except RasterioIOError as exc:
        raise PermanentError(f"the chip is not a readable raster: {exc}") from exc
    values = bands.astype(np.float32)
    if any(v is not None for v in nodata):
        values[:, nodata_mask(bands, nodata)] = np.nan
    return values, descriptions


def check_answer(task: str, answer: ServedAnswer) -> StrictAnswer:
    """The strict parse of ``answer``'s text, with the task's form where the task is one the model was trained on
    (``earthgptx.data.vocabulary.TASKS``; AOI and query tasks are free questions: the form of their boxes only)."""
    if not answer.parsed:
        return StrictAnswer(text=answer.text, parsed=False, failure=answer.parse_failure or "unparsed answer")
    return parse_answer_strict(answer.text, task if task in TASKS else None)


def mask_png(mask: np.ndarray) -> bytes:
    """A 0/1 ``(H, W)`` mask → an 8-bit PNG (0 background, 255 object)."""
    import warnings

    data = np.where(mask > 0, 255, 0).astype(np.uint8)[None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.MemoryFile() as memory:
            with memory.open(
                driver="PNG", height=data.shape[1], width=data.shape[2], count=1, dtype="uint8"
            ) as dst:
                dst.write(data)
            return bytes(memory.read())


class InferenceHandler:
    """Handles ``prompts.tasks``: ``on_prompt_tasks`` is the batch route's handler."""

    def __init__(
        self,
        objects: Objects,
        model_factory: Callable[[], ServedModel],
        publisher: EventPublisher,
        *,
        output_topic: str,
        masks_bucket: str = "masks",
        max_in_flight: int = 16,
        publish_timeout_s: float = 30.0,
    ) -> None:
        self.objects = objects
        self.model_factory = model_factory
        self.publisher = publisher
        self.output_topic = output_topic
        self.masks_bucket = masks_bucket
        self.max_in_flight = max_in_flight
        self.publish_timeout_s = publish_timeout_s
        self._loop = asyncio.new_event_loop()
        self._model: ServedModel | None = None
        # Tasks answered and acknowledged by the broker (task id -> result), so a batch retried after an outage
        # neither asks Triton again nor publishes them twice.
        self._published: OrderedDict[str, InferenceResult] = OrderedDict()

    # ------------------------------------------------------------------ the bus's entry points
    def on_prompt_task(self, event: PromptTask) -> None:
        """One record: answered and published, or ``PermanentError`` raised."""
        rejected = self.on_prompt_tasks([event])
        if rejected:
            raise rejected[0]

    def on_prompt_tasks(self, batch: Sequence[PromptTask]) -> dict[int, PermanentError]:
        """Answer and publish a poll's tasks; returns the rejected ones (by index) with the reason. Raises
        ``TritonUnavailable`` (after publishing what was answered) when Triton could not answer some."""
        return self._loop.run_until_complete(self._handle(batch))

    def close(self) -> None:
        """Close the Triton client and the handler's event loop."""
        if self._model is not None:
            self._loop.run_until_complete(self._model.close())
            self._model = None
        self._loop.close()

    # ------------------------------------------------------------------ one poll
    async def _handle(self, batch: Sequence[PromptTask]) -> dict[int, PermanentError]:
        if self._model is None:
            self._model = self.model_factory()  # created in the handler's loop, where its channel lives
        limit = asyncio.Semaphore(self.max_in_flight)
        todo = [(i, task) for i, task in enumerate(batch) if task.task_id not in self._published]
        outcomes = await asyncio.gather(
            *(self._answer(task, limit) for _, task in todo), return_exceptions=True
        )
        rejected: dict[int, PermanentError] = {}
        answered: list[InferenceResult] = []
        outage: TritonUnavailable | None = None
        for (index, task), outcome in zip(todo, outcomes, strict=True):
            if isinstance(outcome, InferenceResult):
                answered.append(outcome)
            elif isinstance(outcome, PermanentError):
                ERRORS.labels("rejected" if isinstance(outcome, TritonRejected) else "invalid_task").inc()
                log.warning(
                    "task %s rejected: %s", task.task_id, outcome, extra={"trace_id": task.header.trace_id}
                )
                rejected[index] = PermanentError(f"task {task.task_id}: {outcome}")
            elif isinstance(outcome, TritonUnavailable):
                ERRORS.labels("triton_unavailable").inc()
                outage = outcome
            elif isinstance(outcome, BaseException):
                ERRORS.labels("other").inc()
                raise outcome
        self._publish(answered)
        if outage is not None:
            raise outage
        return rejected

    async def _answer(self, task: PromptTask, limit: asyncio.Semaphore) -> InferenceResult:
        started = time.perf_counter()
        timings: dict[str, float] = {}
        if task.header.HasField("produced_at"):
            timings["queue"] = max(0.0, time.time() - task.header.produced_at.ToMicroseconds() / 1e6) * 1000.0
        if not task.chip.bucket or not task.chip.key:
            raise PermanentError("the task names no chip")
        modality = modality_name(task.modality)
        try:
            prompts = messages_to_dicts(task.prompts)
        except ValueError as exc:
            raise PermanentError(str(exc)) from exc
        bands, descriptions = await asyncio.to_thread(self._read, task.chip.bucket, task.chip.key)
        band_names = list(task.bands) or descriptions
        try:
            checked = check_chip(bands)
        except RefusedInput as exc:
            raise PermanentError(f"the chip is refused: {exc}") from exc
        timings["read_chip"] = (time.perf_counter() - started) * 1000.0
        request = ServingRequest(
            bands=bands, modality=modality, band_names=band_names, prompts=prompts, instruction=task.instruction,
        )  # fmt: skip
        async with limit:
            IN_FLIGHT.inc()
            asked = time.perf_counter()
            try:
                answer = await self._model_or_fail().answer(request)
            finally:
                IN_FLIGHT.dec()
            timings["triton"] = (time.perf_counter() - asked) * 1000.0
        LATENCY.labels("triton").observe(timings["triton"] / 1000.0)
        result = self._result(task, answer, checked.nodata_fraction)
        if answer.mask.size and result.answer_parsed:
            result.answer.mask.CopyFrom(await asyncio.to_thread(self._store_mask, task.task_id, answer.mask))
        timings["total"] = (time.perf_counter() - started) * 1000.0
        LATENCY.labels("total").observe(timings["total"] / 1000.0)
        for name, value in timings.items():
            result.timings_ms[name] = value
        return result

    def _model_or_fail(self) -> ServedModel:
        if self._model is None:
            raise RuntimeError("the Triton client is not open")
        return self._model

    def _read(self, bucket: str, key: str) -> tuple[np.ndarray, list[str]]:
        with self.objects.get_stream(bucket, key) as chunks:
            data = b"".join(chunks)
        return read_chip(data)

    def _store_mask(self, task_id: str, mask: np.ndarray) -> ObjectRef:
        data = mask_png(mask)
        key = f"{task_id}.png"
        self.objects.put_bytes(self.masks_bucket, key, data, content_type=MASK_CONTENT_TYPE)
        return ObjectRef(
            bucket=self.masks_bucket, key=key, size_bytes=len(data), content_type=MASK_CONTENT_TYPE
        )

    @staticmethod
    def _result(task: PromptTask, answer: ServedAnswer, nodata_fraction: float = 0.0) -> InferenceResult:
        checked = check_answer(task.task, answer)
        parsed = Answer(text=answer.text)
        if checked.parsed:
            parsed.label = answer.label
            for x1, y1, x2, y2 in answer.boxes:
                parsed.boxes.append(DetectedBox(box=PixelBox(x1=x1, y1=y1, x2=x2, y2=y2), label=answer.label))
            if answer.count >= 0:
                parsed.count = answer.count
            if task.task in ATTRIBUTE_TASKS and answer.label:
                parsed.attributes["answer"] = answer.label
            if task.task in RELATION_TASKS and len(task.prompts) >= 2 and answer.label:
                # The model answers the question asked about <region1> and <region2>; the predicate is its answer.
                parsed.relations.append(Relation(subject_index=0, object_index=1, predicate=answer.label))
        else:  # text only: a malformed answer is never stored as a wrong geometry
            UNPARSED.inc()
        result = InferenceResult(
            task_id=task.task_id, scene_id=task.scene_id, level=task.level, task=task.task, tile=task.tile,
            answer=parsed, model_version=answer.model_version, prompts=task.prompts,
            answer_parsed=checked.parsed, parse_failure=checked.failure or "", nodata_fraction=nodata_fraction,
        )  # fmt: skip
        event_id = events.deterministic_id("inference-result", task.task_id, answer.model_version)
        return events.stamp(result, producer=PRODUCER_NAME, event_id=event_id, trace_id=task.header.trace_id)

    def _publish(self, results: Sequence[InferenceResult]) -> None:
        if not results:
            return
        started = time.perf_counter()
        futures = [self.publisher.publish(self.output_topic, r.scene_id, r) for r in results]
        self.publisher.wait(futures, timeout_s=self.publish_timeout_s)
        publish_ms = (time.perf_counter() - started) * 1000.0
        for result in results:
            self._published[result.task_id] = result
            log.info(
                "task %s answered: %r", result.task_id, result.answer.text,
                extra={"trace_id": result.header.trace_id, "task_id": result.task_id,
                       "timings_ms": dict(result.timings_ms), "publish_ms": publish_ms},
            )  # fmt: skip
        ANSWERED.inc(len(results))
        while len(self._published) > _REMEMBERED:
            self._published.popitem(last=False)
