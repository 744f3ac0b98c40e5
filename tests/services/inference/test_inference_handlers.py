"""``InferenceHandler`` with in-memory ports (no broker, no MinIO, no Triton): what a task becomes, what is rejected,
what an outage does, how many requests are in flight."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import rasterio
from google.protobuf.message import Message

from earthgptx import events
from earthgptx.serving.answers import ServedAnswer, ServingRequest
from earthgptx.serving.client import TritonRejected, TritonUnavailable
from earthgptx.v1.events_pb2 import (
    InferenceResult,
    Level,
    Modality,
    ObjectRef,
    PixelBox,
    PromptTask,
    VisualPrompt,
)
from services.inference.handlers import InferenceHandler, read_chip

VERSION = "earthgptx-tiny@000000000000"


def chip_bytes(bands: int = 3, size: int = 32, nodata: int | None = None, empty_rows: int = 0) -> bytes:
    data = np.arange(bands * size * size, dtype=np.uint16).reshape(bands, size, size) + 1
    data[:, :empty_rows] = 0 if nodata is None else nodata
    memory = rasterio.MemoryFile()
    with memory.open(
        driver="GTiff", width=size, height=size, count=bands, dtype="uint16", nodata=nodata
    ) as dst:
        dst.write(data)
        dst.descriptions = tuple(["red", "green", "blue"][:bands])
    return bytes(memory.read())


class FakeObjects:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {("chips", "c.tif"): chip_bytes()}

    @contextmanager
    def get_stream(self, bucket: str, key: str) -> Iterator[Any]:
        data = self.objects[(bucket, key)]
        yield iter([data[:100], data[100:]])

    def put_bytes(self, bucket: str, key: str, data: bytes, *, content_type: str = "") -> None:
        self.objects[(bucket, key)] = data


class FakeModel:
    """Answers by instruction: "count" -> 3, "segment" -> a mask, "bad" -> rejected, "down" -> unavailable."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.most_in_flight = 0
        self.asked: list[str] = []
        self.requests: list[ServingRequest] = []
        self.down = True

    async def answer(self, request: ServingRequest) -> ServedAnswer:
        self.asked.append(request.instruction)
        self.requests.append(request)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(0.01)
        self.in_flight -= 1
        if request.instruction == "bad":
            raise TritonRejected("the image has 2 bands but 3 band names were given")
        if request.instruction == "down" and self.down:
            raise TritonUnavailable("StatusCode.UNAVAILABLE: connection refused")
        empty = np.zeros((0, 0), dtype=np.uint8)
        if request.instruction == "segment":
            mask = np.zeros((32, 32), dtype=np.uint8)
            mask[4:8, 4:12] = 1
            return ServedAnswer("[SEG]", "", [], -1, mask, VERSION)
        if request.instruction == "count":
            return ServedAnswer("3", "3", [], 3, empty, VERSION)
        if request.instruction == "malformed":  # what the served model returns for "[SEG] ship [5, 9, 2]"
            mask = np.ones((32, 32), dtype=np.uint8)
            return ServedAnswer("[SEG] ship [5, 9, 2]", "", [], -1, mask, VERSION, parsed=False,
                                parse_failure="malformed box '[5, 9, 2]': a box has 4 coordinates, got 3")  # fmt: skip
        if request.instruction == "no box":
            return ServedAnswer("a ship", "a ship", [], -1, empty, VERSION)
        return ServedAnswer("ship [100, 200, 300, 400]", "ship", [[3.2, 6.4, 9.6, 12.8]], -1, empty, VERSION)

    async def close(self) -> None:
        return None


class FakePublisher:
    def __init__(self) -> None:
        self.published: list[tuple[str, str, Message]] = []

    def publish(self, topic: str, key: str, message: Message) -> int:
        self.published.append((topic, key, message))
        return len(self.published)

    def wait(self, futures: Any, *, timeout_s: float = 30.0) -> list[Any]:
        return list(futures)


def task(task_id: str, instruction: str, **changes: Any) -> PromptTask:
    event = PromptTask(
        task_id=task_id, scene_id="scene-1", chip=ObjectRef(bucket="chips", key="c.tif"),
        level=Level.LEVEL_L3_ATTRIBUTE, task="attribute", instruction=instruction,
        prompts=[VisualPrompt(box=PixelBox(x1=1, y1=2, x2=10, y2=12))], modality=Modality.MODALITY_OPTICAL,
        bands=["red", "green", "blue"], model_version=VERSION,
    )  # fmt: skip
    for key, value in changes.items():
        if isinstance(value, list):
            del getattr(event, key)[:]
            getattr(event, key).extend(value)
        elif isinstance(value, Message):
            getattr(event, key).CopyFrom(value)
        else:
            setattr(event, key, value)
    return events.stamp(event, producer="test", trace_id=f"trace-{task_id}")


@pytest.fixture
def parts() -> tuple[InferenceHandler, FakeObjects, FakeModel, FakePublisher]:
    objects, model, publisher = FakeObjects(), FakeModel(), FakePublisher()
    handler = InferenceHandler(objects, lambda: model, publisher, output_topic="out", max_in_flight=3)
    yield handler, objects, model, publisher
    handler.close()


def test_a_task_becomes_a_result(
    parts: tuple[InferenceHandler, FakeObjects, FakeModel, FakePublisher],
) -> None:
    handler, objects, _, publisher = parts
    handler.on_prompt_task(task("t1", "What is <region1>?"))
    [(topic, key, message)] = publisher.published
    assert isinstance(message, InferenceResult) and (topic, key) == ("out", "scene-1")
    assert (message.task_id, message.model_version, message.answer.label) == ("t1", VERSION, "ship")
    box = message.answer.boxes[0].box
    assert (box.x1, box.y1, box.x2, box.y2) == pytest.approx((3.2, 6.4, 9.6, 12.8))
    assert dict(message.answer.attributes) == {"answer": "ship"}
    assert message.header.trace_id == "trace-t1"
    assert message.header.event_id == events.deterministic_id("inference-result", "t1", VERSION)
    assert {"queue", "read_chip", "triton", "total"} <= set(message.timings_ms)
    assert list(message.prompts) == list(task("t1", "x").prompts)


def test_masks_go_to_the_object_store_and_counts_into_the_answer(
    parts: tuple[InferenceHandler, FakeObjects, FakeModel, FakePublisher],
) -> None:
    handler, objects, _, publisher = parts
    assert handler.on_prompt_tasks([task("seg", "segment"), task("cnt", "count", prompts=[])]) == {}
    results = {m.task_id: m for _, _, m in publisher.published}
    ref = results["seg"].answer.mask
    assert (ref.bucket, ref.key, ref.content_type) == ("masks", "seg.png", "image/png")
    with rasterio.MemoryFile(objects.objects[("masks", "seg.png")]) as memory, memory.open() as png:
        stored = png.read(1)
    assert stored.shape == (32, 32) and (stored[4:8, 4:12] == 255).all() and stored.sum() == 255 * 32
    assert results["cnt"].answer.count == 3 and not results["cnt"].answer.HasField("mask")


def test_rejected_and_invalid_tasks_are_returned_with_the_reason(
    parts: tuple[InferenceHandler, FakeObjects, FakeModel, FakePublisher],
) -> None:
    handler, _, model, publisher = parts
    batch = [
        task("ok", "What is <region1>?"),
        task("bad", "bad"),
        task("nomod", "What?", modality=Modality.MODALITY_UNSPECIFIED),
        task("nochip", "What?", chip=ObjectRef()),
    ]
    rejected = handler.on_prompt_tasks(batch)
    assert sorted(rejected) == [1, 2, 3]
    assert "task bad: the image has 2 bands" in str(rejected[1])
    assert "no modality" in str(rejected[2]) and "names no chip" in str(rejected[3])
    assert [m.task_id for _, _, m in publisher.published] == ["ok"]


def test_an_outage_is_raised_after_publishing_and_the_retry_publishes_the_rest_once(
    parts: tuple[InferenceHandler, FakeObjects, FakeModel, FakePublisher],
) -> None:
    handler, _, model, publisher = parts
    batch = [task("a", "count"), task("b", "down"), task("c", "segment")]
    with pytest.raises(TritonUnavailable):
        handler.on_prompt_tasks(batch)
    assert sorted(m.task_id for _, _, m in publisher.published) == ["a", "c"]
    model.down = False
    model.asked.clear()
    assert handler.on_prompt_tasks(batch) == {}
    assert model.asked == ["down"]  # the answered tasks are not asked again
    assert sorted(m.task_id for _, _, m in publisher.published) == ["a", "b", "c"]


def test_requests_in_flight_are_bounded(
    parts: tuple[InferenceHandler, FakeObjects, FakeModel, FakePublisher],
) -> None:
    handler, _, model, publisher = parts
    handler.on_prompt_tasks([task(f"t{i}", "count") for i in range(10)])
    assert model.most_in_flight == 3 and len(publisher.published) == 10


def test_band_names_default_to_the_chip_descriptions(
    parts: tuple[InferenceHandler, FakeObjects, FakeModel, FakePublisher],
) -> None:
    bands, names = read_chip(chip_bytes())
    assert bands.shape == (3, 32, 32) and names == ["red", "green", "blue"]
    handler, _, model, publisher = parts
    handler.on_prompt_task(task("nb", "count", bands=[]))
    assert publisher.published[0][2].answer.count == 3


def test_unparsed_answers_are_published_as_text_without_geometry(
    parts: tuple[InferenceHandler, FakeObjects, FakeModel, FakePublisher],
) -> None:
    handler, objects, _, publisher = parts
    batch = [
        task("served", "malformed", task="pixel_grounding", prompts=[]),
        task(
            "form", "no box", task="grounding", prompts=[]
        ),  # parses as text, but a grounding answer has a box
        task("ok", "Where is the ship?", task="grounding", prompts=[]),
    ]
    assert handler.on_prompt_tasks(batch) == {}
    results = {m.task_id: m for _, _, m in publisher.published}
    served, form, ok = results["served"], results["form"], results["ok"]
    assert not served.answer_parsed and "a box has 4 coordinates" in served.parse_failure
    assert served.answer.text == "[SEG] ship [5, 9, 2]"
    assert not served.answer.boxes and not served.answer.HasField("mask") and not served.answer.label
    assert ("masks", "served.png") not in objects.objects  # no mask stored for an unparsed answer
    assert not form.answer_parsed and form.parse_failure == "a grounding answer needs a box [x1, y1, x2, y2]"
    assert form.answer.text == "a ship" and not form.answer.boxes
    assert ok.HasField("answer_parsed") and ok.answer_parsed and ok.parse_failure == ""
    assert len(ok.answer.boxes) == 1 and ok.answer.label == "ship"


def test_no_data_is_sent_as_nan_and_an_empty_chip_is_refused_before_triton(
    parts: tuple[InferenceHandler, FakeObjects, FakeModel, FakePublisher],
) -> None:
    handler, objects, model, publisher = parts
    objects.objects[("chips", "part.tif")] = chip_bytes(nodata=0, empty_rows=8)
    objects.objects[("chips", "empty.tif")] = chip_bytes(nodata=0, empty_rows=32)
    objects.objects[("chips", "nan.tif")] = chip_bytes(empty_rows=8)  # zeros without a no-data value are data
    batch = [
        task("part", "count", chip=ObjectRef(bucket="chips", key="part.tif"), prompts=[]),
        task("empty", "count", chip=ObjectRef(bucket="chips", key="empty.tif"), prompts=[]),
        task("zeros", "count", chip=ObjectRef(bucket="chips", key="nan.tif"), prompts=[]),
    ]
    rejected = handler.on_prompt_tasks(batch)
    assert sorted(rejected) == [1]
    assert "the chip is refused: every pixel of the 32 x 32 chip is no-data or NaN" in str(rejected[1])
    assert len(model.requests) == 2  # the empty chip never reached the model
    zeros, part = sorted(model.requests, key=lambda r: int(np.isnan(r.bands).sum()))  # asked concurrently
    assert np.isnan(part.bands[:, :8]).all() and np.isfinite(part.bands[:, 8:]).all()
    assert np.isfinite(zeros.bands).all()
    results = {m.task_id: m for _, _, m in publisher.published}
    assert results["part"].nodata_fraction == pytest.approx(0.25)
    assert results["zeros"].nodata_fraction == 0.0
