"""Uploads through the API to a real ingest service (``conftest.ingest``: uvicorn serving ingest's app on the
test's PostGIS database, MinIO buckets and Kafka topics): a generated GeoTIFF goes in through ``POST
/v1/uploads``, ingest's answer comes back with its status code and scene id, and the scene is then served by the
API (its upload status, and its footprint in the OGC ``ogc.scenes`` collection); bad uploads get ingest's 4xx
reason through the proxy, never a 5xx."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
from conftest import INGEST_MAX_UPLOAD_BYTES, RunningApi, api_settings, serve
from kits.broker import delete_leftovers
from kits.scene_files import generated_scene, write_raster

from earthgptx.scenes import scene_id_for
from earthgptx.store.db import make_engine
from earthgptx.store.objects import ObjectStore, sha256_of_file
from earthgptx.store.repository import Repository
from services.api.security import KeyStore

pytestmark = [pytest.mark.postgis, pytest.mark.kafka, pytest.mark.minio]


@pytest.fixture(scope="module")
def upload_api(migrated_db_url: str, object_store: ObjectStore, ingest: str) -> Iterator[RunningApi]:
    unique = uuid.uuid4().hex[:10]
    settings = api_settings(migrated_db_url, object_store, unique, ingest_url=ingest)
    server, thread = serve(settings)
    engine = make_engine(url=migrated_db_url, poolclass=sa.pool.NullPool)
    keys = KeyStore(engine)
    writer = keys.create(f"uploader-{unique}").token
    reader = keys.create(f"viewer-{unique}", ["read"]).token
    try:
        yield RunningApi(
            settings, f"http://127.0.0.1:{settings.port}", engine, Repository(engine), keys, writer, reader
        )
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        engine.dispose()
        delete_leftovers(settings.kafka, unique)


def _final_status(client: httpx.Client, scene_id: str, timeout_s: float = 90.0) -> dict[str, object]:
    """The upload's status through the API once ingest has finished with it."""
    deadline = time.monotonic() + timeout_s
    while True:
        answer = client.get(f"/v1/uploads/{scene_id}")
        assert answer.status_code == 200, answer.text
        body = dict(answer.json())
        if body["status"] != "accepted" or time.monotonic() > deadline:
            return body
        time.sleep(0.2)


def _refused(response: httpx.Response, status: int, reason: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    body = dict(response.json())
    assert isinstance(body["error"], str) and body["error"], body
    assert reason in str(body["reason"]), body
    return body


def test_a_geotiff_uploaded_through_the_api_is_ingested_and_served(
    upload_api: RunningApi, tmp_path: Path
) -> None:
    path, bands = generated_scene(tmp_path, "optical", seed=26)
    expected_id = scene_id_for(sha256_of_file(path))
    params = {"modality": "optical", "bands": ",".join(bands), "sensor": "generator", "source": "api-test",
              "acquired_at": "2026-06-01T10:30:00Z"}  # fmt: skip
    with upload_api.client(upload_api.writer_token) as client:
        accepted = client.post(
            "/v1/uploads", content=path.read_bytes(), params=params, headers={"Content-Type": "image/tiff"}
        )
        assert accepted.status_code == 202, accepted.text
        body = accepted.json()
        assert body["scene_id"] == expected_id and body["status"] == "accepted"
        # The status URL is the API's (ingest's own path is not served here), and it answers.
        assert body["status_url"] == accepted.headers["location"] == f"/v1/uploads/{expected_id}"
        final = _final_status(client, expected_id)
        assert final["status"] == "ingested" and final["channel"] == "upload", final

        # The scene is in the OGC collection, with the footprint ingest computed.
        feature = client.get(f"/ogc/collections/ogc.scenes/items/{expected_id}")
        assert feature.status_code == 200, feature.text
        assert feature.json()["id"] == expected_id
        assert feature.json()["geometry"]["type"] in ("Polygon", "MultiPolygon")
        with upload_api.engine.connect() as connection:
            west, south, east, north = connection.execute(
                sa.text("SELECT ST_XMin(f), ST_YMin(f), ST_XMax(f), ST_YMax(f) FROM "
                        "(SELECT footprint::geometry AS f FROM scenes WHERE id = :id) AS s"), {"id": expected_id},
            ).one()  # fmt: skip
        bbox = f"{west - 0.01},{south - 0.01},{east + 0.01},{north + 0.01}"
        found = client.get("/ogc/collections/ogc.scenes/items", params={"bbox": bbox, "limit": 1000}).json()
        assert expected_id in [f["id"] for f in found["features"]]

        # The same file again: ingest's 200 with duplicate, passed through as it is.
        again = client.post(
            "/v1/uploads", content=path.read_bytes(), params=params, headers={"Content-Type": "image/tiff"}
        )
        assert again.status_code == 200, again.text
        assert again.json()["duplicate"] is True and again.json()["scene_id"] == expected_id


def test_a_multipart_upload_is_streamed_through(upload_api: RunningApi, tmp_path: Path) -> None:
    path, bands = generated_scene(tmp_path, "sar", seed=27)
    with upload_api.client(upload_api.writer_token) as client:
        accepted = client.post(
            "/v1/uploads",
            files={"file": ("harbour.tif", path.read_bytes(), "image/tiff")},
            data={"metadata": json.dumps({"modality": "sar", "bands": list(bands)})},
        )
        assert accepted.status_code == 202, accepted.text
        scene_id = accepted.json()["scene_id"]
        assert scene_id == scene_id_for(sha256_of_file(path))
        final = _final_status(client, scene_id)
        assert final["status"] == "ingested" and final["name"] == "harbour.tif", final


def test_bad_uploads_get_ingests_reason_not_a_server_error(upload_api: RunningApi, tmp_path: Path) -> None:
    not_a_tiff = tmp_path / "blob.tif"
    not_a_tiff.write_bytes(b"GIF89a" + bytes(500))
    no_crs = write_raster(tmp_path / "plain.tif", np.ones((3, 64, 64), np.uint8), crs=None)
    optical = {"modality": "optical", "bands": "red,green,blue"}
    with upload_api.client(upload_api.writer_token) as client:
        for path, status, reason in ((not_a_tiff, 415, "not a TIFF"), (no_crs, 422, "no georeference")):
            refused = client.post(
                "/v1/uploads", content=path.read_bytes(), params=optical, headers={"Content-Type": "image/tiff"}
            )
            _refused(refused, status, reason)
            assert str(tmp_path) not in refused.text
            # Ingest recorded the refusal with its reason, and the API shows it; no scene was made.
            recorded = client.get(f"/v1/uploads/{scene_id_for(sha256_of_file(path))}").json()
            assert recorded["status"] == "rejected" and reason in recorded["reason"], recorded
            with upload_api.engine.connect() as connection:
                rows = connection.scalar(
                    sa.text("SELECT count(*) FROM scenes WHERE id = :id"), {"id": scene_id_for(sha256_of_file(path))}
                )
            assert rows == 0

        # A multipart body without the file part, an unknown modality, a body over ingest's size limit.
        _refused(client.post("/v1/uploads", data={"modality": "optical"}, files={"other": ("x", b"x")}), 415,
                 "no 'file' part")  # fmt: skip
        good, _ = generated_scene(tmp_path, "optical", seed=28)
        _refused(
            client.post("/v1/uploads", content=good.read_bytes(), params={"modality": "lidar"},
                        headers={"Content-Type": "image/tiff"}),
            422, "unknown modality",
        )  # fmt: skip
        big = b"II*\x00" + bytes(INGEST_MAX_UPLOAD_BYTES + 10)
        _refused(
            client.post("/v1/uploads", content=big, params=optical, headers={"Content-Type": "image/tiff"}),
            413, "larger than the limit",
        )  # fmt: skip
        _refused(client.get("/v1/uploads/no-such-scene"), 404, "no scene")

    # Without a write key nothing reaches ingest.
    with upload_api.client(upload_api.reader_token) as client:
        _refused(client.post("/v1/uploads", content=not_a_tiff.read_bytes()), 403, "write")
    with upload_api.client() as client:
        _refused(client.post("/v1/uploads", content=not_a_tiff.read_bytes()), 401, "write")
