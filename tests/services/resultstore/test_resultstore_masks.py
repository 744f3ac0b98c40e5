"""A ``[SEG]`` answer is stored where its mask is: the PNG's polygons, through the chip transform, in EPSG:4326
(in-memory fakes: the handler's own logic)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from google.protobuf.message import Message
from rasterio.windows import Window

from earthgptx.geo import make_tile, world_to_chip
from earthgptx.store.records import TaskResults
from earthgptx.v1.events_pb2 import Answer, InferenceResult, Level, ObjectRef
from services.resultstore.handlers import ResultStoreHandler


class Rows:
    def __init__(self) -> None:
        self.items: list[TaskResults] = []

    def record_results(self, batch: Sequence[TaskResults]) -> list[int]:
        self.items.extend(batch)
        return [len(i.results) for i in batch]


class Acks:
    def publish(self, topic: str, key: str, message: Message) -> Any:
        return None

    def wait(self, futures: Sequence[Any], *, timeout_s: float = 30.0) -> list[Any]:
        return [object() for _ in futures]


class Masks:
    def __init__(self, data: bytes) -> None:
        self.data = data

    @contextmanager
    def get_stream(self, bucket: str, key: str) -> Iterator[list[bytes]]:
        assert (bucket, key) == ("masks", "t1.png")
        yield [self.data[:10], self.data[10:]]


def _png(mask: np.ndarray) -> bytes:
    with rasterio.MemoryFile() as memory:
        with memory.open(driver="PNG", height=mask.shape[0], width=mask.shape[1], count=1, dtype="uint8") as dst:
            dst.write(np.where(mask, 255, 0).astype(np.uint8)[None])
        return bytes(memory.read())


def test_a_mask_answer_is_stored_as_its_polygons() -> None:
    tile = make_tile(Affine(10.0, 0, 500_000.0, 0, -10.0, 5_000_000.0), "EPSG:32633", Window(0, 0, 64, 64), 64, 64)
    mask = np.zeros((64, 64), dtype=bool)
    mask[8:16, 20:36] = True
    event = InferenceResult(
        task_id="t1", scene_id="s1", level=Level.LEVEL_L2_GROUNDING, task="pixel_grounding", tile=tile,
        model_version="m", answer=Answer(text="[SEG]", mask=ObjectRef(bucket="masks", key="t1.png")),
    )  # fmt: skip
    rows = Rows()
    handler = ResultStoreHandler(rows, Acks(), output_topic="results.stored", masks=Masks(_png(mask)))
    assert handler.on_inference_results([event]) == {}
    [row] = rows.items[0].results
    assert row.geom is not None and row.pixel_geom is not None
    assert row.pixel_geom.bounds == (20.0, 8.0, 36.0, 16.0) and row.pixel_geom.area == mask.sum()
    assert np.allclose(world_to_chip(tile, row.geom).bounds, (20, 8, 36, 16), atol=1e-6)
    assert row.attributes["mask"] == {"bucket": "masks", "key": "t1.png"}
