"""``POST /v1/scenes`` against the real stack: good scenes of every modality become a COG, a row and one event;
every bad input of issue 22 is refused with its reason and leaves no object, row, event or temporary file; the
service keeps serving."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from conftest import MAX_UPLOAD_BYTES, RunningIngest
from kits.scene_files import baseline_tiff_header, gcp_scene, generated_scene, truncated_scene, write_raster

from earthgptx.scenes import scene_id_for
from earthgptx.store.objects import sha256_of_file

pytestmark = [pytest.mark.postgis, pytest.mark.minio, pytest.mark.kafka]


def _raw(service: RunningIngest, path: Path, **params: str) -> tuple[int, dict[str, object]]:
    with service.client() as client:
        response = client.post("/v1/scenes", content=path.read_bytes(), params=params,
                               headers={"Content-Type": "image/tiff"})  # fmt: skip
    return response.status_code, response.json()


def _assert_nothing_left(service: RunningIngest, path: Path, events_before: int) -> None:
    scene_id = scene_id_for(sha256_of_file(path))
    assert service.scene_rows(scene_id) == 0
    assert not [k for k in service.cog_objects() if scene_id in k]
    assert len(service.events()) == events_before
    assert service.leftover_files() == []


@pytest.mark.parametrize("modality", ["optical", "multispectral", "sar", "infrared"])
def test_generated_scene_is_ingested_once(ingest_service: RunningIngest, tmp_path: Path, modality: str) -> None:
    path, bands = generated_scene(tmp_path, modality, seed=11)
    before = len(ingest_service.events())
    status, body = _raw(ingest_service, path, modality=modality, bands=",".join(bands), sensor="generator",
                        acquired_at="2025-06-01T10:30:00Z", source="station-a")  # fmt: skip
    assert status == 202, body
    scene_id = str(body["scene_id"])
    assert scene_id == scene_id_for(sha256_of_file(path))
    assert body["status_url"] == f"/v1/scenes/{scene_id}"
    final = ingest_service.wait_for_status(scene_id)
    assert final["status"] == "ingested", final
    assert ingest_service.scene_rows(scene_id) == 1
    events = [e for e in ingest_service.events() if e.scene_id == scene_id]
    assert len(events) == 1 and len(ingest_service.events()) == before + 1
    event = events[0]
    assert list(event.bands) == list(bands) and event.source == "station-a" and event.georeferenced
    assert event.cog.key == f"cog/{scene_id}.tif" and event.cog.size_bytes > 0
    assert json.loads(event.stac_item_json)["id"] == scene_id
    assert json.loads(event.footprint.geojson)["type"] == "Polygon"
    assert event.acquired_at.seconds > 0
    assert ingest_service.leftover_files() == []

    # The same scene again: one row, one object, no second event.
    status, again = _raw(ingest_service, path, modality=modality, bands=",".join(bands))
    assert status == 200 and again["duplicate"] is True and again["scene_id"] == scene_id
    assert ingest_service.scene_rows(scene_id) == 1
    assert [k for k in ingest_service.cog_objects() if scene_id in k] == [f"cog/{scene_id}.tif"]
    assert len([e for e in ingest_service.events() if e.scene_id == scene_id]) == 1


def test_multipart_upload_with_json_metadata(ingest_service: RunningIngest, tmp_path: Path) -> None:
    path, bands = generated_scene(tmp_path, "optical", seed=12)
    with ingest_service.client() as client:
        response = client.post(
            "/v1/scenes",
            files={"file": ("scene.tif", path.read_bytes(), "image/tiff")},
            data={"metadata": json.dumps({"modality": "optical", "bands": list(bands), "product_level": "L2A"})},
        )
    assert response.status_code == 202, response.text
    scene_id = response.json()["scene_id"]
    final = ingest_service.wait_for_status(scene_id)
    assert final["status"] == "ingested" and final["name"] == "scene.tif" and final["channel"] == "upload"
    with ingest_service.engine.connect() as connection:
        row = connection.execute(
            sa.text("SELECT product_level, band_metadata, georeference FROM scenes WHERE id = :id"),
            {"id": scene_id},
        ).one()
    assert row.product_level == "L2A" and row.georeference == "transform"
    assert [b["name"] for b in row.band_metadata] == list(bands)


BAD_INPUTS = {
    "not a tiff": (lambda d: _bytes(d, b"GIF89a" + b"\x00" * 500), {}, 415, "not a TIFF"),
    "truncated": (lambda d: truncated_scene(d), {}, 422, "truncated"),
    "no georeference": (lambda d: write_raster(d / "p.tif", np.ones((3, 64, 64), np.uint8), crs=None), {}, 422, "no georeference"),
    "0 x 0": (lambda d: baseline_tiff_header(d / "z.tif", 0, 0), {}, 415, "cannot read"),
    "1 x 1": (lambda d: write_raster(d / "o.tif", np.ones((3, 1, 1), np.uint8)), {}, 422, "1 x 1 px"),
    "2,000,000 px header": (lambda d: baseline_tiff_header(d / "h.tif", 2_000_000, 2_000_000), {}, 422, "2000000 x 2000000"),
    "NaN-only bands": (
        lambda d: write_raster(d / "n.tif", np.full((2, 64, 64), np.nan, np.float32)),
        {"modality": "sar", "bands": "VV,VH"}, 422, "no valid pixel",
    ),
    "14 bands": (lambda d: write_raster(d / "b.tif", np.ones((14, 64, 64), np.uint16)), {"modality": "multispectral"}, 422, "14 bands"),
    "wrong band names": (
        lambda d: write_raster(d / "w.tif", np.ones((3, 64, 64), np.uint8)), {"bands": "red,green,nir"}, 422, "unknown optical band",
    ),
    "unknown modality": (
        lambda d: write_raster(d / "u.tif", np.ones((3, 64, 64), np.uint8)), {"modality": "lidar"}, 422, "unknown modality",
    ),
}  # fmt: skip


def _bytes(folder: Path, data: bytes) -> Path:
    path = folder / "blob.tif"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_refused_with_its_reason(ingest_service: RunningIngest, tmp_path: Path, case: str) -> None:
    make, params, expected_status, expected_reason = BAD_INPUTS[case]
    path = make(tmp_path)
    metadata = {"modality": "optical", "bands": "red,green,blue", **params}
    before = len(ingest_service.events())
    status, body = _raw(ingest_service, path, **metadata)
    assert status == expected_status, body
    assert expected_reason in str(body["reason"]) and body["error"]
    assert str(tmp_path) not in str(body["reason"])
    scene_id = scene_id_for(sha256_of_file(path))
    with ingest_service.client() as client:
        recorded = client.get(f"/v1/scenes/{scene_id}").json()
    assert recorded["status"] == "rejected" and expected_reason in recorded["reason"]
    _assert_nothing_left(ingest_service, path, before)
    # ... and the service keeps serving.
    with ingest_service.client() as client:
        assert client.get("/healthz").status_code == 200


def test_over_the_size_limit(ingest_service: RunningIngest, tmp_path: Path) -> None:
    path = _bytes(tmp_path, b"II*\x00" + b"\x00" * (MAX_UPLOAD_BYTES + 10))
    before = len(ingest_service.events())
    status, body = _raw(ingest_service, path, modality="optical", bands="red,green,blue")
    assert status == 413 and "limit" in str(body["reason"])

    # Without a Content-Length the limit is enforced while streaming.
    def chunks() -> object:
        for _ in range(MAX_UPLOAD_BYTES // 65536 + 2):
            yield b"\x00" * 65536

    with ingest_service.client() as client:
        response = client.post("/v1/scenes", content=chunks(), headers={"Content-Type": "image/tiff"},
                               params={"modality": "optical", "bands": "red,green,blue"})  # fmt: skip
    assert response.status_code == 413
    assert len(ingest_service.events()) == before
    assert ingest_service.leftover_files() == []


def test_client_disconnect_mid_upload_leaves_nothing(ingest_service: RunningIngest, tmp_path: Path) -> None:
    path, _ = generated_scene(tmp_path, "optical", seed=13, size=512)
    data = path.read_bytes()
    before = len(ingest_service.events())
    with socket.create_connection(("127.0.0.1", ingest_service.settings.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/scenes?modality=optical&bands=red,green,blue HTTP/1.1\r\nHost: test\r\n"
            b"Content-Type: image/tiff\r\nContent-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data[: len(data) // 2]
        )
    # The server notices the closed connection; the spool is removed and nothing was registered.
    from kits.broker import wait_until

    wait_until(lambda: ingest_service.leftover_files() == [], 20, "the partial upload to be removed")
    scene_id = scene_id_for(sha256_of_file(path))
    with ingest_service.client() as client:
        assert client.get(f"/v1/scenes/{scene_id}").status_code == 404
        assert client.get("/healthz").status_code == 200
    _assert_nothing_left(ingest_service, path, before)


def test_unknown_scene_status_is_404(ingest_service: RunningIngest) -> None:
    with ingest_service.client() as client:
        response = client.get("/v1/scenes/no-such-scene")
    assert response.status_code == 404 and response.json()["error"] == "not_found"


def test_gcp_scene_is_rectified_and_recorded_as_such(ingest_service: RunningIngest, tmp_path: Path) -> None:
    path = gcp_scene(tmp_path)
    with ingest_service.client() as client:
        response = client.post(
            "/v1/scenes", files={"file": ("gcps.tif", path.read_bytes(), "image/tiff")},
            data={"modality": "optical", "bands": "red,green,blue"},
        )  # fmt: skip
    assert response.status_code == 202, response.text
    scene_id = response.json()["scene_id"]
    assert ingest_service.wait_for_status(scene_id)["status"] == "ingested"
    with ingest_service.engine.connect() as connection:
        row = connection.execute(
            sa.text("SELECT georeference, crs, stac_item FROM scenes WHERE id = :id"),
            {"id": scene_id},
        ).one()
    assert row.georeference == "gcps" and row.crs == "EPSG:32633"
    assert row.stac_item["properties"]["earthgptx:gcp_count"] == 4
