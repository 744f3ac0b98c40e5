"""Unit tests of the resultstore handler: no broker, no database (in-memory fakes)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pytest
from affine import Affine
from google.protobuf.message import Message
from pyproj import Transformer
from rasterio.windows import Window
from shapely.geometry import GeometryCollection, Point, Polygon

from earthgptx import events
from earthgptx.bus import DependencyUnavailable, EventTooLargeError, PermanentError
from earthgptx.geo import make_tile
from earthgptx.store.errors import IntegrityViolation, StoreUnavailable
from earthgptx.store.records import ResultRecord, TaskRecord, TaskResults
from earthgptx.v1.events_pb2 import (
    AffineTransform,
    Answer,
    DetectedBox,
    DetectedBoxList,
    InferenceResult,
    Level,
    PixelBox,
    PixelPoint,
    Relation,
    ResultStored,
    TileWindow,
    VisualPrompt,
)
from earthgptx.visual_prompts import message_region
from services.resultstore.handlers import ResultStoreHandler, result_id

UTM_33N = "EPSG:32633"
# 0.5 m pixels; the scene's top-left corner lies on the central meridian of zone 33 (15° E), where easting is
# 500 000 m by the definition of UTM.
SCENE_TRANSFORM = Affine(0.5, 0.0, 500_000.0, 0.0, -0.5, 4_650_000.0)
WINDOW = Window(64, 32, 256, 256)  # a chip made from this window at half resolution (128 px)


class FakeRepository:
    def __init__(self, fail_with: Exception | None = None) -> None:
        self.tasks: dict[str, TaskRecord] = {}
        self.results: dict[tuple[str, int], ResultRecord] = {}
        self.timings: dict[str, dict[str, float]] = {}
        self.fail_with = fail_with

    def record_results(self, batch: Sequence[TaskResults]) -> list[int]:
        if self.fail_with is not None:
            raise self.fail_with
        counts = []
        for item in batch:
            self.tasks.setdefault(item.task.id, item.task)
            written = 0
            for record in item.results:
                key = (record.task_id, record.ordinal)
                if self.results.get(key) != record:
                    self.results[key] = record
                    written += 1
            self.timings[item.task.id] = dict(item.timings)
            counts.append(written)
        return counts


class FakePublisher:
    """Publishes into a list; ``refuse_over`` bytes makes it refuse larger events as a small topic would."""

    def __init__(self, refuse_over: int | None = None) -> None:
        self.published: list[tuple[str, str, Message]] = []
        self.refuse_over = refuse_over

    def publish(self, topic: str, key: str, message: Message) -> Any:
        if self.refuse_over is not None and message.ByteSize() > self.refuse_over:
            return EventTooLargeError(f"MessageSizeTooLargeError: {message.ByteSize()} bytes")
        copy = type(message)()
        copy.CopyFrom(message)
        self.published.append((topic, key, copy))
        return None

    def wait(self, futures: Sequence[Any], *, timeout_s: float = 30.0) -> list[Any]:
        return list(futures)


class FakeClaims:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}

    def put_bytes(self, bucket: str, key: str, data: bytes, *, content_type: str = "") -> Any:
        self.objects[(bucket, key)] = data


def utm_tile() -> TileWindow:
    return make_tile(SCENE_TRANSFORM, UTM_33N, WINDOW, 128, 128, tile_index=3)


def grounding_result(**changes: Any) -> InferenceResult:
    fields: dict[str, Any] = {
        "task_id": "task-1",
        "scene_id": "scene-1",
        "level": Level.LEVEL_L2_GROUNDING,
        "task": "grounding",
        "tile": utm_tile(),
        "answer": Answer(
            text="[78, 156, 234, 312]",
            boxes=[
                DetectedBox(box=PixelBox(x1=10, y1=20, x2=30, y2=40), label="ship", score=0.9),
                DetectedBox(box=PixelBox(x1=100, y1=0, x2=128, y2=16)),
            ],
            label="ship",
        ),
        "model_version": "tiny-0.1",
        "timings_ms": {"total": 12.5},
    }
    fields.update(changes)
    event = InferenceResult(**fields)
    events.stamp(event, producer="test", trace_id="trace-1")
    return event


def handler(repository: FakeRepository | None = None, **options: Any) -> tuple[ResultStoreHandler, FakeRepository, FakePublisher]:
    repo = repository or FakeRepository()
    publisher = FakePublisher()
    return ResultStoreHandler(repo, publisher, output_topic="results.stored", **options), repo, publisher


def lonlat_of_scene_pixel(col: float, row: float) -> tuple[float, float]:
    """Independent of the handler's path: the *scene* transform and a fresh transformer."""
    x, y = SCENE_TRANSFORM @ (col, row)
    lon, lat = Transformer.from_crs(UTM_33N, "EPSG:4326", always_xy=True).transform(x, y)
    return lon, lat


def corners(polygon: Polygon) -> set[tuple[float, float]]:
    return {(round(x, 9), round(y, 9)) for x, y in polygon.exterior.coords}


def test_boxes_are_stored_in_4326_and_scene_pixels_through_the_chip_transform() -> None:
    h, repo, _ = handler()
    h.on_inference_result(grounding_result())

    first = repo.results[("task-1", 0)]
    # Chip pixel (x, y) is scene pixel (64 + 2x, 32 + 2y): window offset, then the 256 -> 128 px resize.
    assert first.pixel_geom is not None and first.pixel_geom.equals(
        Polygon([(84, 72), (124, 72), (124, 112), (84, 112)])
    )
    assert first.geom is not None and first.geom.geom_type == "Polygon"
    expected = {tuple(round(v, 9) for v in lonlat_of_scene_pixel(c, r)) for c in (84, 124) for r in (72, 112)}
    assert corners(first.geom) == expected
    # Sanity of the independent computation itself: scene pixel column 0 is on the 15° E meridian.
    assert lonlat_of_scene_pixel(0, 0)[0] == pytest.approx(15.0, abs=1e-9)
    lon, lat = first.geom.centroid.x, first.geom.centroid.y
    assert 15.0 < lon < 15.001 and 41.9 < lat < 42.1


def test_records_carry_labels_scores_and_answer() -> None:
    h, repo, _ = handler()
    h.on_inference_result(grounding_result())

    first, second = repo.results[("task-1", 0)], repo.results[("task-1", 1)]
    assert (first.label, first.score) == ("ship", pytest.approx(0.9))
    # A box without its own label takes the answer's; a score of 0.0 means "no score" in proto3.
    assert (second.label, second.score) == ("ship", None)
    assert first.answer_text == "[78, 156, 234, 312]" and first.model_version == "tiny-0.1"
    task = repo.tasks["task-1"]
    assert (task.scene_id, task.level, task.task, task.window) == ("scene-1", 2, "grounding", (64, 32, 256, 256))
    assert repo.timings["task-1"] == {"total": 12.5}


def test_result_stored_is_published_keyed_by_scene_with_objects_and_trace() -> None:
    h, _, publisher = handler()
    event = grounding_result()
    h.on_inference_result(event)

    [(topic, key, message)] = publisher.published
    assert (topic, key) == ("results.stored", "scene-1")
    assert isinstance(message, ResultStored)
    assert list(message.result_ids) == [result_id("task-1", 0), result_id("task-1", 1)]
    assert list(message.objects) == list(event.answer.boxes)
    assert message.tile == event.tile and message.level == Level.LEVEL_L2_GROUNDING
    assert message.header.trace_id == "trace-1"
    assert message.timings_ms["total"] == 12.5 and message.timings_ms["resultstore"] >= 0.0


def test_redelivery_writes_nothing_new_and_republishes_the_same_event_id() -> None:
    h, repo, publisher = handler()
    h.on_inference_result(grounding_result())
    before = dict(repo.results)
    h.on_inference_result(grounding_result())  # a new envelope (new event id), same content

    assert repo.results == before and len(repo.tasks) == 1
    first, second = (m for _, _, m in publisher.published)
    assert first.header.event_id == second.header.event_id
    other = grounding_result(answer=Answer(text="[0, 0, 1, 1]", boxes=[DetectedBox(box=PixelBox(x1=0, y1=0, x2=1, y2=1))]))
    h.on_inference_result(other)
    assert publisher.published[-1][2].header.event_id != first.header.event_id


def test_missing_task_id_is_derived_deterministically() -> None:
    h, repo, _ = handler()
    h.on_inference_result(grounding_result(task_id=""))
    h.on_inference_result(grounding_result(task_id=""))
    [derived] = repo.tasks
    event = grounding_result(task_id="")
    assert derived == events.task_id(
        event.scene_id, event.tile, event.level, event.task, event.prompts, event.model_version
    )


def test_a_boxless_answer_is_about_its_prompt_or_the_whole_chip() -> None:
    h, repo, _ = handler()
    scene_level = grounding_result(
        task_id="caption", level=Level.LEVEL_L1_SCENE, answer=Answer(text="A harbour.", label="water")
    )
    h.on_inference_result(scene_level)
    [chip] = [r for (t, _), r in repo.results.items() if t == "caption"]
    assert chip.label == "water" and chip.pixel_geom is not None
    assert chip.pixel_geom.equals(Polygon([(64, 32), (320, 32), (320, 288), (64, 288)]))

    point = VisualPrompt(point=PixelPoint(x=50, y=60))
    attribute = grounding_result(
        task_id="attr", level=Level.LEVEL_L3_ATTRIBUTE, prompts=[point],
        answer=Answer(text="red", attributes={"colour": "red"}),
    )
    h.on_inference_result(attribute)
    stored = repo.results[("attr", 0)]
    assert stored.pixel_geom is not None and stored.pixel_geom.equals(Point(164, 152))
    assert stored.geom is not None and stored.geom.geom_type == "Point"
    assert stored.geom.coords[0] == pytest.approx(lonlat_of_scene_pixel(164, 152), abs=1e-9)
    assert stored.attributes == {"colour": "red"}

    pair = [point, VisualPrompt(box=PixelBox(x1=1, y1=2, x2=5, y2=6))]
    relation = grounding_result(task_id="rel", level=Level.LEVEL_L4_RELATION, prompts=pair, answer=Answer(text="yes"))
    h.on_inference_result(relation)
    assert isinstance(repo.results[("rel", 0)].geom, GeometryCollection)


def test_counts_relations_and_masks_go_into_attributes() -> None:
    h, repo, _ = handler()
    answer = Answer(text="0", count=0)
    answer.mask.bucket, answer.mask.key = "chips", "masks/a.png"
    answer.relations.add(subject_index=0, object_index=1, predicate="left of")
    # A relation names two of the task's prompts.
    prompts = [VisualPrompt(point=PixelPoint(x=10, y=10)), VisualPrompt(point=PixelPoint(x=50, y=50))]
    h.on_inference_result(grounding_result(task_id="count", level=Level.LEVEL_L1_SCENE, task="counting", answer=answer,
                                           prompts=prompts))
    assert repo.results[("count", 0)].attributes == {
        "count": 0,
        "relations": [{"subject": 0, "object": 1, "predicate": "left of"}],
        "mask": {"bucket": "chips", "key": "masks/a.png"},
    }


def test_a_tile_in_4326_needs_no_reprojection() -> None:
    tile = TileWindow(
        width=128, height=128, chip_width=128, chip_height=128, crs="EPSG:4326",
        chip_transform=AffineTransform(a=0.001, c=10.0, e=-0.001, f=50.0),
    )
    h, repo, _ = handler()
    h.on_inference_result(grounding_result(tile=tile))
    geom = repo.results[("task-1", 0)].geom
    assert geom is not None and geom.bounds == pytest.approx((10.01, 49.96, 10.03, 49.98))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"answer": None}, "no answer"),
        ({"level": Level.LEVEL_UNSPECIFIED}, "not one of L1..L4"),
        ({"level": 42}, "not one of L1..L4"),
        ({"scene_id": ""}, "no scene id"),
        ({"model_version": ""}, "no model version"),
        ({"task": " "}, "no task name"),
        ({"tile": TileWindow(width=256, height=256)}, "positive sizes"),
        ({"box": PixelBox(x1=30, y1=20, x2=10, y2=40)}, "empty or inverted"),
        ({"box": PixelBox(x1=10, y1=20, x2=10, y2=40)}, "empty or inverted"),
        ({"box": PixelBox(x1=10, y1=20, x2=130, y2=40)}, "outside the 128 x 128 chip"),
        ({"box": PixelBox(x1=-1, y1=20, x2=10, y2=40)}, "outside the 128 x 128 chip"),
        ({"box": PixelBox(x1=math.nan, y1=20, x2=10, y2=40)}, "non-finite"),
        ({"crs": ""}, "no georeference"),
        ({"crs": "EPSG:999999"}, "not usable"),
        ({"identity": True}, "identity transform"),
    ],
)
def test_invalid_results_are_permanent_errors_with_a_reason(change: dict[str, Any], reason: str) -> None:
    event = grounding_result()
    if "answer" in change:
        event.ClearField("answer")
    if "box" in change:
        event.answer.boxes[0].box.CopyFrom(change["box"])
    if "crs" in change:
        event.tile.crs = change["crs"]
    if change.get("identity"):
        event.tile.chip_transform.CopyFrom(AffineTransform(a=1, e=1))
    for field in ("level", "scene_id", "model_version", "task", "tile"):
        if field in change:
            if isinstance(change[field], Message):
                getattr(event, field).CopyFrom(change[field])
            else:
                setattr(event, field, change[field])
    h, repo, publisher = handler()
    with pytest.raises(PermanentError, match=reason):
        h.on_inference_result(event)
    assert not repo.tasks and not repo.results and not publisher.published


def test_ungeoreferenced_tiles_give_pixel_only_results_when_allowed() -> None:
    event = grounding_result()
    event.tile.ClearField("chip_transform")
    event.tile.crs = ""
    h, repo, _ = handler(allow_ungeoreferenced=True)
    h.on_inference_result(event)
    stored = repo.results[("task-1", 0)]
    assert stored.geom is None and stored.pixel_geom is not None


def test_store_errors_propagate_as_the_bus_error_model_says() -> None:
    # The handler does not map them: a StoreUnavailable is an outage to the loop, a StoreError permanent.
    assert issubclass(StoreUnavailable, DependencyUnavailable) and issubclass(IntegrityViolation, PermanentError)
    h, _, publisher = handler(FakeRepository(fail_with=StoreUnavailable("connection refused")))
    with pytest.raises(StoreUnavailable, match="connection refused"):
        h.on_inference_result(grounding_result())
    h, _, publisher2 = handler(FakeRepository(fail_with=IntegrityViolation("scene-1 is not a scene")))
    with pytest.raises(IntegrityViolation, match="not a scene"):
        h.on_inference_result(grounding_result())
    assert not publisher.published and not publisher2.published


def test_prompt_geometry_shapes_and_errors() -> None:
    polygon = VisualPrompt()
    polygon.polygon.points.extend([PixelPoint(x=0, y=0), PixelPoint(x=4, y=0), PixelPoint(x=0, y=4)])
    assert message_region(polygon).area == pytest.approx(8.0)
    scribble = VisualPrompt()
    scribble.scribble.points.extend([PixelPoint(x=0, y=0), PixelPoint(x=10, y=0)])
    scribble.scribble.stroke_width = 2.0
    assert message_region(scribble).bounds == pytest.approx((-1.0, -1.0, 11.0, 1.0))
    with pytest.raises(ValueError, match="no shape"):
        message_region(VisualPrompt())
    bad = VisualPrompt()
    bad.polygon.points.extend([PixelPoint(x=0, y=0), PixelPoint(x=1, y=1)])
    with pytest.raises(ValueError, match="at least 3 points"):
        message_region(bad)


# -- issue 20: validation before writing, batches, sizing before commit ------------------------------------


def _metres_under_4326() -> TileWindow:
    tile = utm_tile()
    tile.crs = "EPSG:4326"  # the transform stays in UTM metres: POINT(500032 4649984) "in degrees"
    return tile


def _nan_transform() -> TileWindow:
    tile = utm_tile()
    tile.chip_transform.c = math.nan
    return tile


def _with_answer(**answer: Any) -> InferenceResult:
    event = grounding_result()
    for name, value in answer.items():
        if name == "relations":
            event.answer.relations.extend(value)
        else:
            setattr(event.answer, name, value)
    return event


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (grounding_result(tile=_metres_under_4326()), "outside the area of use of EPSG:4326"),
        (grounding_result(tile=_nan_transform()), "non-finite coefficient"),
        (_with_answer(score=math.nan), "answer score nan is not a number in"),
        (_with_answer(score=-0.5), "answer score -0.5"),
        (_with_answer(label="sh\x00ip"), "label contains a NUL"),
        (_with_answer(relations=[Relation(subject_index=0, object_index=3, predicate="near")]),
         "refers to prompt 0, but the task has 0 prompt"),
        (grounding_result(timings_ms={"total": math.nan}), "timings_ms must be finite"),
    ],
    ids=["metres-under-4326", "nan-transform", "nan-score", "negative-score", "nul-label", "relation-index",
         "nan-timing"],
)
def test_results_that_cannot_be_are_refused_before_anything_is_written(event: InferenceResult, reason: str) -> None:
    h, repo, publisher = handler()
    with pytest.raises(PermanentError, match=reason):
        h.on_inference_result(event)
    assert not repo.tasks and not repo.results and not publisher.published


def test_box_scores_are_checked_too() -> None:
    event = grounding_result()
    event.answer.boxes[1].score = 1.5
    with pytest.raises(PermanentError, match="box 1 score 1.5"):
        handler()[0].on_inference_result(event)


def test_a_batch_stores_the_good_records_together_and_returns_the_bad_ones() -> None:
    h, repo, publisher = handler()
    good = [grounding_result(task_id=f"task-{i}") for i in range(3)]
    bad = grounding_result(task_id="task-bad", tile=_metres_under_4326())
    rejected = h.on_inference_results([good[0], bad, good[1], good[2]])
    assert list(rejected) == [1] and "area of use" in str(rejected[1])
    assert sorted(repo.tasks) == ["task-0", "task-1", "task-2"]
    assert [m.task_id for _, _, m in publisher.published] == ["task-0", "task-1", "task-2"]  # poll order kept


def _many_boxes(count: int) -> InferenceResult:
    boxes = [DetectedBox(box=PixelBox(x1=i % 100, y1=i % 90, x2=i % 100 + 5, y2=i % 90 + 5), label="car",
                         score=0.5) for i in range(count)]
    return grounding_result(answer=Answer(text="many", boxes=boxes, label="car"))


def test_a_20000_box_answer_is_stored_and_announced_by_claim_check() -> None:
    claims = FakeClaims()
    h, repo, publisher = handler(claims=claims, claims_bucket="claims")
    h.on_inference_result(_many_boxes(20_000))
    assert len(repo.results) == 20_000
    [(_, _, stored)] = publisher.published
    assert isinstance(stored, ResultStored) and stored.ByteSize() < 4096
    assert stored.object_count == 20_000 and not stored.objects and not stored.result_ids
    ref = stored.objects_claim
    boxes = DetectedBoxList.FromString(claims.objects[(ref.bucket, ref.key)]).boxes
    assert len(boxes) == 20_000 and boxes[7].box.x1 == 7 and ref.size_bytes == len(claims.objects[(ref.bucket, ref.key)])


def test_without_an_object_store_an_oversized_event_is_refused_before_writing() -> None:
    h, repo, publisher = handler()
    with pytest.raises(PermanentError, match="no object store"):
        h.on_inference_result(_many_boxes(20_000))
    assert not repo.results and not repo.tasks and not publisher.published


def test_a_topic_that_refuses_an_event_as_too_large_gets_it_claim_checked() -> None:
    claims = FakeClaims()
    repo = FakeRepository()
    publisher = FakePublisher(refuse_over=2_000)
    h = ResultStoreHandler(repo, publisher, output_topic="results.stored", claims=claims)
    h.on_inference_result(_many_boxes(200))  # about 4 kB inline: under the handler's limit, over the topic's
    [(_, _, stored)] = publisher.published
    assert stored.HasField("objects_claim") and stored.object_count == 200 and len(claims.objects) == 1


def test_a_refusal_even_after_the_claim_check_is_a_permanent_failure_with_the_brokers_reason() -> None:
    publisher = FakePublisher(refuse_over=10)
    h = ResultStoreHandler(FakeRepository(), publisher, output_topic="results.stored", claims=FakeClaims())
    with pytest.raises(PermanentError, match="MessageSizeTooLargeError"):
        h.on_inference_result(grounding_result())
