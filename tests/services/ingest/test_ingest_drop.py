"""The drop bucket against the real stack: a file put into the bucket (metadata as object tags or a sidecar JSON)
reaches the service through MinIO's Kafka notifications and is ingested like an upload; a refused drop is moved to
``rejected/`` with ``.reason.txt`` beside it; the same scene by both ways in is one scene."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import RunningIngest
from kits.broker import wait_until
from kits.scene_files import generated_scene, write_raster
from minio.commonconfig import Tags

from earthgptx.scenes import scene_id_for
from earthgptx.store.objects import sha256_of_file

pytestmark = [pytest.mark.postgis, pytest.mark.minio, pytest.mark.kafka]

NOTIFICATION_S = 60.0


def _drop(service: RunningIngest, key: str, path: Path, tags: dict[str, str] | None = None) -> None:
    object_tags = None
    if tags:
        object_tags = Tags(for_object=True)
        object_tags.update(tags)
    service.objects.client.fput_object(service.settings.drop_bucket, key, str(path), tags=object_tags)


def _put_json(service: RunningIngest, key: str, data: bytes) -> None:
    service.objects.client.put_object(service.settings.drop_bucket, key, io.BytesIO(data), len(data))


def test_drop_with_tags_is_ingested_and_removed(ingest_service: RunningIngest, tmp_path: Path) -> None:
    path, bands = generated_scene(tmp_path, "sar", seed=21)
    scene_id = scene_id_for(sha256_of_file(path))
    _drop(ingest_service, "station-b/pass-1.tif", path, {"modality": "sar", "bands": " ".join(bands)})
    wait_until(lambda: ingest_service.scene_rows(scene_id) == 1, NOTIFICATION_S, "the dropped scene's row")
    status = ingest_service.wait_for_status(scene_id)
    assert status["status"] == "ingested" and status["channel"] == "drop"
    assert status["name"] == f"{ingest_service.settings.drop_bucket}/station-b/pass-1.tif"
    events = [e for e in ingest_service.events() if e.scene_id == scene_id]
    assert len(events) == 1 and events[0].source == f"drop:{ingest_service.settings.drop_bucket}"
    wait_until(lambda: "station-b/pass-1.tif" not in ingest_service.drop_objects(), 20, "the drop to be removed")


def test_drop_with_sidecar_then_same_scene_uploaded(ingest_service: RunningIngest, tmp_path: Path) -> None:
    path, bands = generated_scene(tmp_path, "infrared", seed=22)
    scene_id = scene_id_for(sha256_of_file(path))
    # The sidecar goes first, so it is there when the scene's notification is handled.
    _put_json(ingest_service, "thermal.tif.json", json.dumps({"modality": "infrared", "bands": list(bands),
                                                               "source": "station-c"}).encode())  # fmt: skip
    _drop(ingest_service, "thermal.tif", path)
    wait_until(lambda: ingest_service.scene_rows(scene_id) == 1, NOTIFICATION_S, "the dropped scene's row")
    assert ingest_service.wait_for_status(scene_id)["status"] == "ingested"
    wait_until(lambda: ingest_service.drop_objects() == [] or all(k.startswith("rejected/") or "station" in k
               for k in ingest_service.drop_objects()), 20, "the drop and its sidecar to be removed")  # fmt: skip
    # The same bytes by HTTP: a duplicate, nothing new.
    with ingest_service.client() as client:
        response = client.post("/v1/scenes", content=path.read_bytes(), headers={"Content-Type": "image/tiff"},
                               params={"modality": "infrared", "bands": ",".join(bands)})  # fmt: skip
    assert response.status_code == 200 and response.json()["duplicate"] is True
    # ... and dropped again: still one row, one object, one event.
    _drop(ingest_service, "thermal-again.tif", path, {"modality": "infrared", "bands": " ".join(bands)})
    wait_until(lambda: "thermal-again.tif" not in ingest_service.drop_objects(), NOTIFICATION_S, "the second drop")
    assert ingest_service.scene_rows(scene_id) == 1
    assert [k for k in ingest_service.cog_objects() if scene_id in k] == [f"cog/{scene_id}.tif"]
    assert len([e for e in ingest_service.events() if e.scene_id == scene_id]) == 1


def _rejected_reason(service: RunningIngest, key: str) -> str:
    reason_key = f"rejected/{key}.reason.txt"
    wait_until(lambda: reason_key in service.drop_objects(), NOTIFICATION_S, f"{reason_key}")
    wait_until(lambda: key not in service.drop_objects(), 20, f"{key} to be moved away")
    response = service.objects.client.get_object(service.settings.drop_bucket, reason_key)
    try:
        return response.read().decode()
    finally:
        response.close()
        response.release_conn()


def test_bad_drop_moves_to_rejected_with_reason(ingest_service: RunningIngest, tmp_path: Path) -> None:
    path = write_raster(tmp_path / "plain.tif", np.ones((3, 64, 64), np.uint8), crs=None)
    scene_id = scene_id_for(sha256_of_file(path))
    before = len(ingest_service.events())
    _drop(ingest_service, "nogeo.tif", path, {"modality": "optical", "bands": "red green blue"})
    assert "no georeference" in _rejected_reason(ingest_service, "nogeo.tif")
    objects = ingest_service.drop_objects()
    assert "rejected/nogeo.tif" in objects and "nogeo.tif" not in objects
    assert ingest_service.scene_rows(scene_id) == 0
    assert ingest_service.wait_for_status(scene_id)["status"] == "rejected"
    assert len(ingest_service.events()) == before
    assert not [k for k in ingest_service.cog_objects() if scene_id in k]


def test_drop_with_unreadable_sidecar(ingest_service: RunningIngest, tmp_path: Path) -> None:
    path, _ = generated_scene(tmp_path, "optical", seed=23)
    scene_id = scene_id_for(sha256_of_file(path))
    _put_json(ingest_service, "broken.tif.json", b"{modality: optical,,")
    _drop(ingest_service, "broken.tif", path)
    assert "sidecar metadata is not readable JSON" in _rejected_reason(ingest_service, "broken.tif")
    wait_until(lambda: "broken.tif.json" not in ingest_service.drop_objects(), 20, "the sidecar to be moved away")
    objects = ingest_service.drop_objects()
    assert {"rejected/broken.tif", "rejected/broken.tif.json"} <= set(objects)
    assert "broken.tif" not in objects and "broken.tif.json" not in objects
    assert ingest_service.scene_rows(scene_id) == 0
    # The service keeps serving both ways.
    with ingest_service.client() as client:
        assert client.get("/healthz").status_code == 200
    time.sleep(0.5)
    assert ingest_service.leftover_files() == []
