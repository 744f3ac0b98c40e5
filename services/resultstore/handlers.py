"""What the resultstore does with one ``InferenceResult``: validate it, georeference its answer, store the task
and its results in PostGIS (idempotently), then announce them with a ``ResultStored`` event.

Geometry. The answer's boxes (``DetectedBox``) are in chip pixels (floats; the [0, 1000) grid exists only in
the model's text). Each box becomes one result row: its polygon in EPSG:4326 through the tile's own chip
transform and CRS, and in scene pixels through the window offset and resize (``earthgptx.geo``). An answer
without boxes (a scene label, a caption, an attribute, a relation, a count) becomes one row whose geometry is
what the question was about: its visual prompt(s), or the whole chip when it had none.

Idempotency. The task row is keyed by the event's task id (deterministic, from promptgen) and inserted only if
missing; results are keyed by (task id, ordinal) and rewritten only when they differ. The ``ResultStored``
event id hashes the task id and the answer, so a re-delivered result republishes the same event.

Failures. Bad input (no answer, an unknown level, a box outside the chip, a tile without a usable georeference)
raises ``PermanentError``; the store's own errors propagate as they are (``StoreError``, e.g. a result for a
scene that is not in the database, is permanent; ``StoreUnavailable`` is an outage the bus waits out). The task
and its results are written in one transaction, so a failure leaves nothing behind.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from typing import Any, Protocol

from google.protobuf import json_format
from google.protobuf.message import Message
from shapely.geometry import GeometryCollection, box
from shapely.geometry.base import BaseGeometry

from earthgptx import events
from earthgptx.bus import PermanentError
from earthgptx.geo import GeoreferenceError, chip_to_scene, chip_to_world, is_georeferenced
from earthgptx.store.records import ResultRecord, TaskRecord
from earthgptx.v1.events_pb2 import Answer, DetectedBox, InferenceResult, Level, ResultStored, TileWindow
from earthgptx.visual_prompts import message_region, pixel_box

log = logging.getLogger(__name__)

PRODUCER_NAME = "resultstore"
COUNT_TASKS = frozenset({"count", "counting"})


class ResultRepository(Protocol):
    """The part of ``earthgptx.store.repository.Repository`` the handler uses (tests pass a fake)."""

    def record_task_results(
        self, task: TaskRecord, results: Iterable[ResultRecord], *, timings: dict[str, float] | None = None
    ) -> int: ...


class EventPublisher(Protocol):
    """The part of ``earthgptx.bus.EventProducer`` the handler uses."""

    def publish_and_wait(self, topic: str, key: str, message: Message, *, timeout_s: float = 30.0) -> Any: ...


def result_id(task_id: str, ordinal: int) -> str:
    """How ``ResultStored.result_ids`` name a row of ``results`` (its primary key is task id + ordinal)."""
    return f"{task_id}:{ordinal}"


class ResultStoreHandler:
    """Handles ``inference.results``; ``on_inference_result`` is the route's handler."""

    def __init__(
        self,
        repository: ResultRepository,
        publisher: EventPublisher,
        *,
        output_topic: str,
        allow_ungeoreferenced: bool = False,
        publish_timeout_s: float = 30.0,
    ) -> None:
        self.repository = repository
        self.publisher = publisher
        self.output_topic = output_topic
        self.allow_ungeoreferenced = allow_ungeoreferenced
        self.publish_timeout_s = publish_timeout_s

    def on_inference_result(self, event: InferenceResult) -> None:
        started = time.perf_counter()
        task = task_record(event)
        results = result_records(event, task.id, allow_ungeoreferenced=self.allow_ungeoreferenced)
        written = self.repository.record_task_results(task, results, timings=dict(event.timings_ms))
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        stored = result_stored(event, task.id, results, elapsed_ms)
        self.publisher.publish_and_wait(self.output_topic, event.scene_id, stored, timeout_s=self.publish_timeout_s)
        log.info(
            "stored task %s of scene %s: %d result(s), %d row(s) written",
            task.id, event.scene_id, len(results), written,
            extra={
                "task_id": task.id,
                "scene_id": event.scene_id,
                "trace_id": event.header.trace_id,
                "results": len(results),
                "rows_written": written,
                "store_ms": round(elapsed_ms, 2),
            },
        )


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
    if not all(math.isfinite(v) for v in coords):
        raise _reject(event, f"box {index} has a non-finite coordinate {list(coords)}")
    if not (b.x1 < b.x2 and b.y1 < b.y2):
        raise _reject(event, f"box {index} {list(coords)} is empty or inverted (need x1 < x2 and y1 < y2)")
    if b.x1 < 0 or b.y1 < 0 or b.x2 > tile.chip_width or b.y2 > tile.chip_height:
        raise _reject(
            event,
            f"box {index} {list(coords)} lies outside the {tile.chip_width} x {tile.chip_height} chip "
            "(boxes are in chip pixels)",
        )


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
    attributes: dict[str, Any] = dict(answer.attributes)
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


def result_records(
    event: InferenceResult, task_id: str, *, allow_ungeoreferenced: bool = False
) -> list[ResultRecord]:
    """The result rows of one answer: one per detected box, or one for a box-less answer."""
    if not event.HasField("answer"):
        raise _reject(event, "no answer")
    _check_tile(event, event.tile)
    answer, tile = event.answer, event.tile
    georeferenced = is_georeferenced(tile)
    if not georeferenced and not allow_ungeoreferenced:
        raise _reject(event, "tile has no georeference (crs/chip_transform) and pixel-only results are not allowed")

    def world(geometry: BaseGeometry) -> BaseGeometry | None:
        if not georeferenced:
            return None
        try:
            return chip_to_world(tile, geometry)
        except GeoreferenceError as exc:
            raise _reject(event, str(exc)) from exc

    attributes = _answer_attributes(event, answer)

    def row(ordinal: int, shape: BaseGeometry, label: str, score: float) -> ResultRecord:
        return ResultRecord(
            task_id=task_id,
            ordinal=ordinal,
            scene_id=event.scene_id,
            answer_text=answer.text,
            model_version=event.model_version,
            label=label or None,
            attributes=attributes,
            geom=world(shape),
            pixel_geom=chip_to_scene(tile, shape),
            # proto3 floats have no presence: 0.0 is what an answer without a score carries.
            score=float(score) if score else None,
        )

    if not answer.boxes:
        return [row(0, _asked_about(event), answer.label, answer.score)]
    for index, detected in enumerate(answer.boxes):
        _check_box(event, index, detected)
    return [
        row(ordinal, pixel_box(d.box), d.label or answer.label, d.score)
        for ordinal, d in enumerate(answer.boxes)
    ]


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
        tile=event.tile,
        model_version=event.model_version,
        timings_ms={**event.timings_ms, "resultstore": round(elapsed_ms, 3)},
    )
    # Deterministic, so a re-delivered result republishes the same event (consumers can deduplicate on it).
    stored.header.event_id = events.deterministic_id("results.stored", task_id, event.answer)
    stored.header.trace_id = event.header.trace_id
    stored.header.producer = PRODUCER_NAME
    return stored
