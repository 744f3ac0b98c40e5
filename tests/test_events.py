"""The protobuf events: generated code is reproducible, field numbers are never reused, helpers behave."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from earthgptx.events import (
    EVENT_TYPES,
    SCHEMA_VERSION,
    DecodeFailure,
    EventDecodeError,
    decode_event,
    deterministic_id,
    encode_event,
    event_type_name,
    stamp,
    task_id,
)
from earthgptx.v1.events_pb2 import (
    EventHeader,
    Level,
    PixelBox,
    PixelPoint,
    PixelPolygon,
    PromptTask,
    SceneIngested,
    TileWindow,
    VisualPrompt,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
GENERATED = ["earthgptx/v1/__init__.py", "earthgptx/v1/events_pb2.py", "earthgptx/v1/events_pb2.pyi"]

sys.path.insert(0, str(REPO_ROOT / "proto"))
import fields_lock  # noqa: E402


def test_generated_code_is_reproducible_byte_for_byte(tmp_path: Path) -> None:
    env = {**os.environ, "EGX_VENV": sys.prefix}
    subprocess.run([str(REPO_ROOT / "deploy" / "gen_proto.sh"), str(tmp_path)], check=True, env=env,
                   capture_output=True)
    for name in GENERATED:
        assert (tmp_path / name).read_bytes() == (REPO_ROOT / name).read_bytes(), (
            f"{name} differs from what `make proto` generates: never edit it by hand, regenerate it"
        )


def _descriptors() -> descriptor_pb2.FileDescriptorSet:
    return fields_lock.compile_descriptors(REPO_ROOT / "proto")


def test_no_released_field_is_renumbered_retyped_or_dropped() -> None:
    lock = fields_lock.load_lock(REPO_ROOT / "proto" / "earthgptx" / "v1" / "fields.lock.json")
    assert fields_lock.violations(lock, _descriptors()) == []
    assert fields_lock.updated(lock, _descriptors()) == lock, "new fields: run `make proto` to lock them"


def test_the_lock_catches_reuse_and_unreserved_removal() -> None:
    descriptors = _descriptors()
    lock = fields_lock.updated({}, descriptors)
    lock["earthgptx.v1.SceneIngested"]["old_cloud_cover"] = [2, "float"]
    lock["earthgptx.v1.SceneIngested"]["retired"] = [99, "string"]
    lock["earthgptx.v1.Level"]["LEVEL_L4_RELATION"] = [5, "enum value"]
    problems = fields_lock.violations(lock, descriptors)
    assert any("number 2 of removed 'old_cloud_cover' is reused by 'scene_id'" in p for p in problems)
    assert any("retired (99) was removed without `reserved 99;`" in p for p in problems)
    assert any("LEVEL_L4_RELATION changed from 5" in p for p in problems)
    assert len(problems) == 3


def test_every_event_starts_with_the_common_header() -> None:
    for event_class in EVENT_TYPES:
        header = event_class.DESCRIPTOR.fields_by_number[1]
        assert header.name == "header" and header.message_type is EventHeader.DESCRIPTOR, event_class


def test_stamp_encode_decode_round_trip() -> None:
    produced_at = dt.datetime(2025, 5, 1, 12, 30, tzinfo=dt.UTC)
    event = SceneIngested(scene_id="s2a-123", bands=["red", "green", "blue"], width=10980, height=10980)
    event.transform.a, event.transform.c = 10.0, 499_980.0
    stamp(event, producer="ingest", now=produced_at)
    decoded = decode_event(SceneIngested, encode_event(event))
    assert decoded == event
    assert decoded.header.schema_version == SCHEMA_VERSION
    assert decoded.header.event_type == "earthgptx.v1.SceneIngested"
    assert decoded.header.produced_at.ToDatetime(tzinfo=dt.UTC) == produced_at
    assert decoded.header.trace_id == decoded.header.event_id != ""


def test_stamp_keeps_what_the_producer_set() -> None:
    event = SceneIngested(header=EventHeader(event_id="e-1", trace_id="t-1", producer="api"))
    stamp(event, producer="ingest", event_id="other")
    assert (event.header.event_id, event.header.trace_id, event.header.producer) == ("e-1", "t-1", "api")


def test_encode_refuses_an_event_without_header() -> None:
    with pytest.raises(ValueError, match="has no header"):
        encode_event(SceneIngested(scene_id="x"))


@pytest.mark.parametrize(
    ("payload", "failure"),
    [
        (b"", DecodeFailure.EMPTY),
        (b"\xff\xfe\xfd not protobuf", DecodeFailure.NOT_PROTOBUF),
        (SceneIngested(scene_id="no header").SerializeToString(), DecodeFailure.NO_HEADER),
        (SceneIngested(header=EventHeader(schema_version=7)).SerializeToString(), DecodeFailure.SCHEMA_VERSION),
        (encode_event(stamp(PromptTask(task_id="t"))), DecodeFailure.WRONG_TYPE),
    ],
    ids=["empty", "garbage", "no-header", "future-version", "wrong-type"],
)
def test_decode_rejects_bad_payloads_with_a_reason(payload: bytes, failure: DecodeFailure) -> None:
    with pytest.raises(EventDecodeError) as caught:
        decode_event(SceneIngested, payload)
    assert caught.value.failure is failure and caught.value.reason


def test_decode_keeps_fields_it_does_not_know() -> None:
    newer = stamp(SceneIngested(scene_id="s")).SerializeToString() + b"\xa8\x06\x01"  # field 101, varint 1
    decoded = decode_event(SceneIngested, newer)
    assert decoded.scene_id == "s" and decoded.SerializeToString() == newer


def _tile() -> TileWindow:
    tile = TileWindow(col_off=512, row_off=1024, width=512, height=512, chip_width=448, chip_height=448,
                      crs="EPSG:32631", tile_index=5)
    tile.chip_transform.a, tile.chip_transform.c = 11.43, 499_980.0
    return tile


def test_task_id_is_deterministic_and_depends_on_every_input() -> None:
    prompts = [VisualPrompt(box=PixelBox(x1=10, y1=20, x2=110, y2=220)), VisualPrompt(point=PixelPoint(x=5, y=6))]
    base = dict(scene_id="scene-1", tile=_tile(), level=Level.LEVEL_L3_ATTRIBUTE, task="attribute",
                prompts=prompts, model_version="tiny-0.1")
    first = task_id(**base)  # type: ignore[arg-type]
    assert first == task_id(**{**base, "tile": _tile(), "prompts": list(prompts)})  # type: ignore[arg-type]
    changes = {
        "scene_id": "scene-2",
        "level": Level.LEVEL_L4_RELATION,
        "task": "relation",
        "model_version": "tiny-0.2",
        "prompts": prompts[:1],
        "tile": TileWindow(col_off=0),
    }
    for name, value in changes.items():
        assert task_id(**{**base, name: value}) != first, name  # type: ignore[arg-type]
    polygon = VisualPrompt(polygon=PixelPolygon(points=[PixelPoint(x=1, y=1), PixelPoint(x=9, y=1)]))
    assert task_id(**{**base, "prompts": [polygon]}) != first  # type: ignore[arg-type]


def test_deterministic_ids_never_change_across_releases() -> None:
    # Ids are stored (PostGIS primary keys, dead-letter ids): the scheme must not drift with library versions.
    assert deterministic_id("scene", "S2A_20250501_T31UDQ") == deterministic_id("scene", "S2A_20250501_T31UDQ")
    assert deterministic_id("scene", 3) == deterministic_id("scene", 3.0)
    assert deterministic_id("scene", "a", "b") != deterministic_id("scene", "ab")
    assert deterministic_id("scene", "S2A_20250501_T31UDQ") == "0c60a06f-1d8b-5377-a8a2-47a401939aeb"


def test_event_type_names_follow_the_package() -> None:
    assert [event_type_name(c) for c in EVENT_TYPES] == [
        "earthgptx.v1.SceneIngested", "earthgptx.v1.PromptTask", "earthgptx.v1.InferenceResult",
        "earthgptx.v1.ResultStored", "earthgptx.v1.DeadLetter",
    ]
