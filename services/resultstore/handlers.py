"""What the resultstore does with ``InferenceResult``s: validate them, georeference their answers, store each task
and its results in PostGIS (idempotently), then announce them with ``ResultStored`` events.

Geometry. The answer's boxes (``DetectedBox``) are in chip pixels (floats; the [0, 1000) grid exists only in
the model's text). Each box becomes one result row: its polygon in EPSG:4326 through the tile's own chip
transform and CRS, and in scene pixels through the window offset and resize (``earthgptx.geo``). An answer
without boxes (a scene label, a caption, an attribute, a relation, a count) becomes one row whose geometry is
what the question was about: its visual prompt(s), or the whole chip when it had none.

Validation before writing: a georeference that cannot be (non-finite transform, units that do not match the
CRS, a chip outside the CRS's area of use: ``earthgptx.geo.validation``), boxes outside the chip, scores outside
[0, 1], relation indices past the prompts, NUL characters and non-finite timings are refused with the reason.

Batches. ``on_inference_results`` takes every record of one poll (``batch_route``): the valid ones are written in
one transaction, their events published together and the producer flushed once. It is ``write_results`` of
``prepare_results``, the two stages of ``staged_batch_route`` that the bus's pipelined mode overlaps. The
single-record form ``on_inference_result`` is the same with a batch of one.

Sizing. Each ``ResultStored`` is sized before anything is written: when its objects would make it larger than
``inline_event_bytes``, they are stored in MinIO (``DetectedBoxList`` at ``objects_claim``; ``result_ids`` are
then left out, since they are ``<task id>:<ordinal>`` for ordinal < ``object_count``). A topic that still refuses
an event as too large gets it again with its objects claim-checked; only if that is refused too is the record a
permanent failure, with the broker's reason.

Idempotency. The task row is keyed by the event's task id (deterministic, from promptgen) and inserted only if
missing; results are keyed by (task id, ordinal) and rewritten only when they differ. The ``ResultStored``
event id hashes the task id and the answer, so a re-delivered result republishes the same event.

Failures. Bad input raises (or, in a batch, returns) ``PermanentError``; the store's own errors propagate as they
are (``StoreError``, e.g. a result for a scene that is not in the database, is permanent; ``StoreUnavailable`` is
an outage the bus waits out), and so does ``PublishError`` (the broker did not answer). The task and its results
are written in one transaction, so a failure leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import shapely
from google.protobuf import json_format
from google.protobuf.message import Message
from shapely.geometry import GeometryCollection, box
from shapely.geometry.base import BaseGeometry

from earthgptx import events
from earthgptx.bus import EventTooLargeError, PermanentError
from earthgptx.geo import is_georeferenced
from earthgptx.geo.crs import lonlat_transformer
from earthgptx.geo.masks import mask_from_png, mask_polygons
from earthgptx.geo.validation import check_chip_georeferences
from earthgptx.store.errors import StoreError
from earthgptx.store.records import ResultRecord, TaskRecord, TaskResults
from earthgptx.v1.events_pb2 import (
    Answer,
    DetectedBox,
    DetectedBoxList,
    InferenceResult,
    Level,
    ObjectRef,
    ResultStored,
    TileWindow,
)
from earthgptx.visual_prompts import message_region

log = logging.getLogger(__name__)

PRODUCER_NAME = "resultstore"
COUNT_TASKS = frozenset({"count", "counting"})
# A ResultStored larger than this carries its objects by claim check: events stay kilobytes (docs/architecture.md, "Topics").
INLINE_EVENT_BYTES = 64 * 1024
CLAIM_CONTENT_TYPE = "application/x-protobuf; messageType=earthgptx.v1.DetectedBoxList"


class ResultRepository(Protocol):
    """The part of ``earthgptx.store.repository.Repository`` the handler uses (tests pass a fake)."""

    def record_results(self, batch: Sequence[TaskResults]) -> list[int]: ...


@runtime_checkable
class PlanningRepository(Protocol):
    """A ``ResultRepository`` that splits ``record_results`` in two (the real one): each batch is then planned in
    the prepare stage, so that only the statements themselves are left for the write stage."""

    def record_results(self, batch: Sequence[TaskResults]) -> list[int]: ...

    def plan_results(self, batch: Sequence[TaskResults]) -> Any: ...

    def write_planned(self, plan: Any) -> list[int]: ...


class EventPublisher(Protocol):
    """The part of ``earthgptx.bus.EventProducer`` the handler uses."""

    def publish(self, topic: str, key: str, message: Message) -> Any: ...

    def wait(self, futures: Sequence[Any], *, timeout_s: float = 30.0) -> list[Any]: ...


class ClaimStore(Protocol):
    """The part of ``earthgptx.store.objects.ObjectStore`` the claim check uses."""

    def put_bytes(self, bucket: str, key: str, data: bytes, *, content_type: str = ...) -> Any: ...


class MaskReader(Protocol):
    """The part of ``earthgptx.store.objects.ObjectStore`` that reads a ``[SEG]`` answer's mask PNG."""

    def get_stream(self, bucket: str, key: str) -> Any: ...


def result_id(task_id: str, ordinal: int) -> str:
    """How ``ResultStored.result_ids`` name a row of ``results`` (its primary key is task id + ordinal)."""
    return f"{task_id}:{ordinal}"


@dataclass
class _Prepared:
    index: int
    event: InferenceResult
    item: TaskResults
    stored: ResultStored


@dataclass
class PreparedBatch:
    """A poll's results between ``prepare_results`` and ``write_results``."""

    started: float  # perf_counter at the start of preparation (the events' "resultstore" timing counts from it)
    size: int
    prepared: list[_Prepared]
    rejected: dict[int, PermanentError]
    plan: Any = None  # the repository's plan of the prepared items (``plan_results``), when it makes one


class ResultStoreHandler:
    """Handles ``inference.results``: ``on_inference_results`` is the batch route's handler."""

    def __init__(
        self,
        repository: ResultRepository,
        publisher: EventPublisher,
        *,
        output_topic: str,
        allow_ungeoreferenced: bool = False,
        publish_timeout_s: float = 30.0,
        claims: ClaimStore | None = None,
        claims_bucket: str = "claims",
        inline_event_bytes: int = INLINE_EVENT_BYTES,
        masks: MaskReader | None = None,
    ) -> None:
        self.repository = repository
        self.publisher = publisher
        self.output_topic = output_topic
        self.allow_ungeoreferenced = allow_ungeoreferenced
        self.publish_timeout_s = publish_timeout_s
        self.claims = claims
        self.claims_bucket = claims_bucket
        self.inline_event_bytes = inline_event_bytes
        self.masks = masks

    def on_inference_result(self, event: InferenceResult) -> None:
        """One record: stored and announced, or ``PermanentError`` raised."""
        rejected = self.on_inference_results([event])
        if rejected:
            raise rejected[0]

    def on_inference_results(self, batch: Sequence[InferenceResult]) -> dict[int, PermanentError]:
        """Store and announce a poll's records; returns the rejected ones (by index) with the reason."""
        return self.write_results(self.prepare_results(batch))

    def prepare_results(self, batch: Sequence[InferenceResult]) -> PreparedBatch:
        """The first stage (``staged_batch_route``): validate, georeference and build the events; writes nothing
        but claim-checked objects (keyed by task id, so a repeated preparation rewrites the same object)."""
        started = time.perf_counter()
        rejected: dict[int, PermanentError] = {}
        drafts: list[tuple[int, TaskRecord, _Draft]] = []
        for index, event in enumerate(batch):
            try:
                task = task_record(event)
                drafts.append((index, task, _draft(event, task.id, self.allow_ungeoreferenced, self._mask_region(event))))
            except PermanentError as exc:
                rejected[index] = exc
        # Georeferencing of the whole batch at once (one pyproj call per CRS).
        failed, rows = _place([d for _, _, d in drafts]) if drafts else ({}, [])
        prepared: list[_Prepared] = []
        for n, ((index, task, draft), results) in enumerate(zip(drafts, rows, strict=True)):
            try:
                if n in failed:
                    raise failed[n]
                prepared.append(self._prepare(index, draft.event, task, results))
            except PermanentError as exc:
                rejected[index] = exc
        return PreparedBatch(started, len(batch), prepared, rejected, self._plan(prepared))

    def _plan(self, prepared: list[_Prepared]) -> Any:
        """The repository's parameters for the batch, made here rather than in the write stage (None: the write
        stage makes them itself, where a refused batch then raises as it always did)."""
        if not prepared or not isinstance(self.repository, PlanningRepository):
            return None
        try:
            return self.repository.plan_results([p.item for p in prepared])
        except StoreError:
            return None

    def write_results(self, batch: PreparedBatch) -> dict[int, PermanentError]:
        """The second stage: one transaction for the prepared results, their events published and flushed once;
        returns the rejected records (by index into the poll's batch) with the reason."""
        started, prepared, rejected = batch.started, batch.prepared, dict(batch.rejected)
        if batch.plan is not None and isinstance(self.repository, PlanningRepository):
            written = self.repository.write_planned(batch.plan)
        else:
            written = self.repository.record_results([p.item for p in prepared]) if prepared else []
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        futures = []
        for p in prepared:
            p.stored.timings_ms["resultstore"] = round(elapsed_ms, 3)
            futures.append(self.publisher.publish(self.output_topic, p.event.scene_id, p.stored))
        outcomes = self.publisher.wait(futures, timeout_s=self.publish_timeout_s) if futures else []
        for p, outcome in zip(prepared, outcomes, strict=True):
            if isinstance(outcome, EventTooLargeError):
                outcome = self._republish_claimed(p, outcome)
            if isinstance(outcome, PermanentError):
                rejected[p.index] = outcome
            elif isinstance(outcome, Exception):
                raise outcome  # PublishError: the broker did not answer; the whole batch is retried (idempotent)
        for p, rows_written in zip(prepared, written, strict=True):
            if p.index in rejected:
                continue
            log.info(
                "stored task %s of scene %s: %d result(s), %d row(s) written",
                p.item.task.id, p.event.scene_id, len(p.item.results), rows_written,
                extra={
                    "task_id": p.item.task.id,
                    "scene_id": p.event.scene_id,
                    "trace_id": p.event.header.trace_id,
                    "results": len(p.item.results),
                    "rows_written": rows_written,
                    "batch": batch.size,
                    "store_ms": round(elapsed_ms, 2),
                },
            )
        return rejected

    def _mask_region(self, event: InferenceResult) -> BaseGeometry | None:
        """A ``[SEG]`` answer's mask (a PNG in MinIO) as polygons in chip pixels (``earthgptx.geo.masks``)."""
        ref = event.answer.mask
        if self.masks is None or not event.answer.HasField("mask") or not ref.key:
            return None
        with self.masks.get_stream(ref.bucket, ref.key) as chunks:
            return mask_polygons(mask_from_png(b"".join(chunks)))

    def _prepare(
        self, index: int, event: InferenceResult, task: TaskRecord, results: list[ResultRecord]
    ) -> _Prepared:
        timings = dict(event.timings_ms)
        bad = {name: value for name, value in timings.items() if not math.isfinite(value)}
        if bad:
            raise _reject(event, f"timings_ms must be finite numbers, got {bad}")
        stored = result_stored(event, task.id, results, 0.0)
        if stored.ByteSize() > self.inline_event_bytes:
            self._claim_objects(event, stored)
        return _Prepared(index, event, TaskResults(task, tuple(results), timings), stored)

    def _claim_objects(self, event: InferenceResult, stored: ResultStored) -> None:
        """Move the event's objects (and result ids) to MinIO, leaving the reference (before anything is written)."""
        if self.claims is None:
            raise _reject(
                event,
                f"ResultStored of {stored.ByteSize()} bytes exceeds {self.inline_event_bytes} and no object store "
                "is configured for its claim check",
            )
        payload = DetectedBoxList(boxes=stored.objects).SerializeToString()
        key = f"results.stored/{stored.scene_id}/{stored.task_id}.pb"
        info = self.claims.put_bytes(self.claims_bucket, key, payload, content_type=CLAIM_CONTENT_TYPE)
        stored.objects_claim.CopyFrom(
            ObjectRef(bucket=self.claims_bucket, key=key, size_bytes=len(payload),
                      etag=getattr(info, "etag", None) or "", content_type=CLAIM_CONTENT_TYPE)
        )
        stored.ClearField("objects")
        stored.ClearField("result_ids")

    def _republish_claimed(self, p: _Prepared, refused: EventTooLargeError) -> Exception | None:
        """The topic refused the event as too large: send it again with its objects claim-checked."""
        if p.stored.HasField("objects_claim") or not p.stored.objects:
            return _reject(p.event, f"ResultStored refused by the broker: {refused}")
        log.warning("results.stored refused %s as too large (%s); claim-checking its objects",
                    p.stored.task_id, refused)
        try:
            self._claim_objects(p.event, p.stored)
        except PermanentError as exc:
            return exc
        [outcome] = self.publisher.wait(
            [self.publisher.publish(self.output_topic, p.event.scene_id, p.stored)], timeout_s=self.publish_timeout_s
        )
        if isinstance(outcome, EventTooLargeError):
            return _reject(p.event, f"ResultStored refused by the broker even with its objects claim-checked: {outcome}")
        return outcome if isinstance(outcome, Exception) else None


# -- validation and records (pure functions) -------------------------------------------------------------


def _reject(event: InferenceResult, reason: str) -> PermanentError:
    return PermanentError(f"inference result {event.task_id or '(no task id)'} of scene "
                          f"{event.scene_id or '(no scene id)'}: {reason}")


def _check_tile(event: InferenceResult, tile: TileWindow) -> None:
    if not event.HasField("tile"):
        raise _reject(event, "no tile window")
    if tile.width <= 0 or tile.height <= 0 or tile.chip_width <= 0 or tile.chip_height <= 0:
        raise _reject(
            event,
            f"tile window {tile.width} x {tile.height} and chip {tile.chip_width} x {tile.chip_height} "
            "must have positive sizes",
        )
    if tile.col_off < 0 or tile.row_off < 0:
        raise _reject(event, f"tile offset ({tile.col_off}, {tile.row_off}) is negative")


def _check_box(event: InferenceResult, index: int, detected: DetectedBox) -> None:
    b, tile = detected.box, event.tile
    coords = (b.x1, b.y1, b.x2, b.y2)
    if not (math.isfinite(b.x1) and math.isfinite(b.y1) and math.isfinite(b.x2) and math.isfinite(b.y2)):
        raise _reject(event, f"box {index} has a non-finite coordinate {list(coords)}")
    if not (b.x1 < b.x2 and b.y1 < b.y2):
        raise _reject(event, f"box {index} {list(coords)} is empty or inverted (need x1 < x2 and y1 < y2)")
    if b.x1 < 0 or b.y1 < 0 or b.x2 > tile.chip_width or b.y2 > tile.chip_height:
        raise _reject(
            event,
            f"box {index} {list(coords)} lies outside the {tile.chip_width} x {tile.chip_height} chip "
            "(boxes are in chip pixels)",
        )


def _check_score(event: InferenceResult, what: str, score: float) -> None:
    if not (math.isfinite(score) and 0.0 <= score <= 1.0):
        raise _reject(event, f"{what} score {score} is not a number in [0, 1]")


def _check_answer(event: InferenceResult, answer: Answer) -> None:
    """Everything about an answer that would store nonsense or make PostgreSQL refuse the transaction."""
    if _has_nul(event, answer):
        _reject_nul(event, answer)
    _check_score(event, "answer", answer.score)
    for index, detected in enumerate(answer.boxes):
        _check_score(event, f"box {index}", detected.score)
    if event.HasField("answer_parsed") and not event.answer_parsed and (answer.boxes or answer.HasField("mask")):
        raise _reject(event, "an unparsed answer carries boxes or a mask; it is stored as text only")
    if not 0.0 <= event.nodata_fraction < 1.0:
        raise _reject(event, f"nodata_fraction {event.nodata_fraction} is not in [0, 1)")
    for index, relation in enumerate(answer.relations):
        for end in (relation.subject_index, relation.object_index):
            if end >= len(event.prompts):
                raise _reject(
                    event,
                    f"relation {index} refers to prompt {end}, but the task has {len(event.prompts)} prompt(s)",
                )


def _has_nul(event: InferenceResult, answer: Answer) -> bool:
    """The fast test (one join, no names built) for what ``_reject_nul`` then names."""
    texts = [answer.text, answer.label, event.scene_id, event.task, event.model_version, event.task_id,
             event.parse_failure]  # fmt: skip
    if answer.attributes:  # (a protobuf map's items() costs microseconds even when it is empty)
        texts += [k + v for k, v in answer.attributes.items()]
    texts += [d.label for d in answer.boxes]
    texts += [r.predicate for r in answer.relations]
    return "\x00" in "".join(texts)


def _reject_nul(event: InferenceResult, answer: Answer) -> None:
    texts = {"answer text": answer.text, "label": answer.label, "scene id": event.scene_id, "task": event.task,
             "model version": event.model_version, "task id": event.task_id, "parse failure": event.parse_failure}
    texts.update({f"attribute {k!r}": f"{k}{v}" for k, v in answer.attributes.items()})
    texts.update({f"box {i} label": d.label for i, d in enumerate(answer.boxes)})
    texts.update({f"relation {i} predicate": r.predicate for i, r in enumerate(answer.relations)})
    for what, text in texts.items():
        if "\x00" in text:
            raise _reject(event, f"{what} contains a NUL character")


def task_record(event: InferenceResult) -> TaskRecord:
    """The task row of a result (inserted only if promptgen has not written it already)."""
    if not event.scene_id.strip():
        raise _reject(event, "no scene id")
    if event.level not in Level.values() or event.level == Level.LEVEL_UNSPECIFIED:
        raise _reject(event, f"level {event.level} is not one of L1..L4")
    if not event.task.strip():
        raise _reject(event, "no task name")
    if not event.model_version.strip():
        raise _reject(event, "no model version")
    _check_tile(event, event.tile)
    tile = event.tile
    task_id = event.task_id or events.task_id(
        event.scene_id, tile, event.level, event.task, event.prompts, event.model_version
    )
    return TaskRecord(
        id=task_id,
        scene_id=event.scene_id,
        window=(tile.col_off, tile.row_off, tile.width, tile.height),
        level=int(event.level),
        task=event.task,
        # The InferenceResult does not carry the instruction; promptgen's task row (written first) has it.
        instruction="",
        model_version=event.model_version,
        prompts=tuple(json_format.MessageToDict(p, preserving_proto_field_name=True) for p in event.prompts),
    )


def _answer_attributes(event: InferenceResult, answer: Answer) -> dict[str, Any]:
    attributes: dict[str, Any] = dict(answer.attributes) if answer.attributes else {}
    if answer.count or event.task in COUNT_TASKS:
        attributes["count"] = answer.count
    if answer.relations:
        attributes["relations"] = [
            {"subject": r.subject_index, "object": r.object_index, "predicate": r.predicate}
            for r in answer.relations
        ]
    if answer.HasField("mask"):
        attributes["mask"] = {"bucket": answer.mask.bucket, "key": answer.mask.key}
    return attributes


def _asked_about(event: InferenceResult) -> BaseGeometry:
    """What a box-less answer is about, in chip pixels: its prompt(s), or the whole chip."""
    if not event.prompts:
        return box(0, 0, event.tile.chip_width, event.tile.chip_height)
    shapes = []
    for index, prompt in enumerate(event.prompts):
        try:
            shapes.append(message_region(prompt))
        except ValueError as exc:
            raise _reject(event, f"prompt {index}: {exc}") from exc
    return shapes[0] if len(shapes) == 1 else GeometryCollection(shapes)


@dataclass
class _Draft:
    """One answer on its way to rows: validated, with its shapes in chip pixels (placed by ``_place``)."""

    event: InferenceResult
    task_id: str
    shapes: list[BaseGeometry | tuple[float, float, float, float]]  # a box as (x1, y1, x2, y2), made in _place
    labels: list[str]
    scores: list[float]
    georeferenced: bool


def _draft(
    event: InferenceResult, task_id: str, allow_ungeoreferenced: bool, mask: BaseGeometry | None = None
) -> _Draft:
    if not event.HasField("answer"):
        raise _reject(event, "no answer")
    _check_tile(event, event.tile)
    answer = event.answer
    _check_answer(event, answer)
    georeferenced = is_georeferenced(event.tile)
    if not georeferenced and not allow_ungeoreferenced:
        raise _reject(event, "tile has no georeference (crs/chip_transform) and pixel-only results are not allowed")
    if not answer.boxes:
        # A [SEG] answer is where its mask is; other box-less answers are about what was asked.
        region = mask if mask is not None else _asked_about(event)
        return _Draft(event, task_id, [region], [answer.label], [answer.score], georeferenced)
    for index, detected in enumerate(answer.boxes):
        _check_box(event, index, detected)
    return _Draft(
        event, task_id, [(d.box.x1, d.box.y1, d.box.x2, d.box.y2) for d in answer.boxes],
        [d.label or answer.label for d in answer.boxes],
        [d.score for d in answer.boxes], georeferenced,
    )


def _scene_params(tile: TileWindow) -> tuple[float, ...]:
    """Chip pixel -> scene pixel (window offset x resize) as affine coefficients (``chip_to_scene_transform``)."""
    return (tile.width / tile.chip_width, 0.0, float(tile.col_off), 0.0, tile.height / tile.chip_height,
            float(tile.row_off))


def _chip_params(tile: TileWindow) -> tuple[float, ...]:
    t = tile.chip_transform
    return (t.a, t.b, t.c, t.d, t.e, t.f)


def _shape_array(drafts: list[_Draft]) -> np.ndarray[Any, Any]:
    """Every draft's shapes in one array; boxes are made in one vectorised call."""
    flat = [s for d in drafts for s in d.shapes]
    shapes: np.ndarray[Any, Any] = np.empty(len(flat), dtype=object)
    boxes = [k for k, s in enumerate(flat) if isinstance(s, tuple)]
    if boxes:
        corners = np.array([flat[k] for k in boxes], dtype=float)
        shapes[boxes] = shapely.box(corners[:, 0], corners[:, 1], corners[:, 2], corners[:, 3])
    for k, s in enumerate(flat):
        if not isinstance(s, tuple):
            shapes[k] = s
    return shapes


def _apply(params: np.ndarray[Any, Any], xy: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Each coordinate through its own affine (rows a, b, c, d, e, f in rasterio's order)."""
    x, y = xy[:, 0], xy[:, 1]
    return np.column_stack([params[:, 0] * x + params[:, 1] * y + params[:, 2],
                            params[:, 3] * x + params[:, 4] * y + params[:, 5]])


def _place(drafts: list[_Draft]) -> tuple[dict[int, PermanentError], list[list[ResultRecord]]]:
    """Rows of many answers at once: scene pixels and lon/lat through each tile's own transforms, one pyproj call
    per CRS for the whole batch. Returns the drafts refused (by index) and the rows of every draft (in order)."""
    failed: dict[int, PermanentError] = {}
    georeferenced = [i for i, d in enumerate(drafts) if d.georeferenced]
    for i, reason in zip(georeferenced, check_chip_georeferences([drafts[i].event.tile for i in georeferenced]),
                         strict=True):
        if reason is not None:
            failed[i] = _reject(drafts[i].event, f"unusable chip georeference: {reason}")
    shapes = _shape_array(drafts)
    owner = np.repeat(np.arange(len(drafts)), [len(d.shapes) for d in drafts])
    coords, geometry_index = shapely.get_coordinates(shapes, return_index=True)
    draft_of = owner[geometry_index]
    scene_params = np.array([_scene_params(d.event.tile) for d in drafts], dtype=float).reshape(-1, 6)
    scene_shapes = shapely.transform(shapes, lambda xy: _apply(scene_params[draft_of], xy))
    world_shapes: np.ndarray[Any, Any] = np.full(len(shapes), None, dtype=object)
    placed = [i for i in georeferenced if i not in failed]
    placed_set = set(placed)
    if placed:
        chip_params = np.zeros((len(drafts), 6))
        chip_params[placed] = np.array([_chip_params(drafts[i].event.tile) for i in placed], dtype=float)
        world_xy = _apply(chip_params[draft_of], coords)
        crs_of = np.array([d.event.tile.crs.strip() for d in drafts], dtype=object)[draft_of]
        for crs in {drafts[i].event.tile.crs.strip() for i in placed}:
            mask = crs_of == crs
            transformer = lonlat_transformer(crs)
            if transformer is not None:
                lon, lat = transformer.transform(world_xy[mask, 0], world_xy[mask, 1], errcheck=False)
                world_xy[mask] = np.column_stack([lon, lat])
        # Drafts with a coordinate that did not project (one pass over the coordinates, not one per draft).
        for i in np.unique(draft_of[~np.isfinite(world_xy).all(axis=1)]).tolist():
            if i in placed_set:
                failed[i] = _reject(drafts[i].event, f"geometry does not project from {drafts[i].event.tile.crs} "
                                                     "to EPSG:4326")
        in_world = np.isin(owner, [i for i in placed if i not in failed])  # per shape
        coord_in_world = in_world[geometry_index]  # per coordinate, in the order shapely.transform hands them over
        if in_world.any():
            world_shapes[in_world] = shapely.transform(shapes[in_world], lambda xy: world_xy[coord_in_world])
    rows: list[list[ResultRecord]] = []
    start = 0
    for i, d in enumerate(drafts):
        count = len(d.shapes)
        if i in failed:
            rows.append([])
        else:
            attributes = _answer_attributes(d.event, d.event.answer)
            rows.append([
                ResultRecord(
                    task_id=d.task_id, ordinal=ordinal, scene_id=d.event.scene_id, answer_text=d.event.answer.text,
                    model_version=d.event.model_version, label=label or None, attributes=attributes,
                    geom=world_shapes[start + ordinal], pixel_geom=scene_shapes[start + ordinal],
                    # proto3 floats have no presence: 0.0 is what an answer without a score carries.
                    score=float(score) if score else None,
                    **_parse_columns(d.event),
                )
                for ordinal, (label, score) in enumerate(zip(d.labels, d.scores, strict=True))
            ])
        start += count
    return failed, rows


def _parse_columns(event: InferenceResult) -> dict[str, Any]:
    """Whether the answer parsed (absent, from producers before the flag: parsed), why not, and the chip's
    no-data share: the columns an unparsed answer is stored with (one row: its text, no boxes)."""
    parsed = event.answer_parsed if event.HasField("answer_parsed") else True
    return {
        "answer_parsed": parsed,
        "parse_failure": None if parsed else (event.parse_failure or "unparsed answer"),
        "nodata_fraction": float(event.nodata_fraction),
    }


def result_records(
    event: InferenceResult, task_id: str, *, allow_ungeoreferenced: bool = False
) -> list[ResultRecord]:
    """The result rows of one answer: one per detected box, or one for a box-less answer."""
    failed, [rows] = _place([_draft(event, task_id, allow_ungeoreferenced)])
    if failed:
        raise failed[0]
    return rows


def result_stored(
    event: InferenceResult, task_id: str, results: list[ResultRecord], elapsed_ms: float
) -> ResultStored:
    """The announcement of stored results, with the objects in chip pixels for the next cascade level."""
    stored = ResultStored(
        task_id=task_id,
        scene_id=event.scene_id,
        level=event.level,
        task=event.task,
        result_ids=[result_id(task_id, r.ordinal) for r in results],
        objects=list(event.answer.boxes),
        object_count=len(event.answer.boxes),
        tile=event.tile,
        model_version=event.model_version,
        timings_ms={**event.timings_ms, "resultstore": round(elapsed_ms, 3)},
    )
    # Deterministic, so a re-delivered result republishes the same event (consumers can deduplicate on it).
    # The answer enters as the digest of its deterministic encoding: its JSON mapping cost a millisecond per event.
    answer_digest = hashlib.sha256(event.answer.SerializeToString(deterministic=True)).hexdigest()
    stored.header.event_id = events.deterministic_id("results.stored", task_id, answer_digest)
    stored.header.trace_id = event.header.trace_id
    stored.header.producer = PRODUCER_NAME
    return stored
