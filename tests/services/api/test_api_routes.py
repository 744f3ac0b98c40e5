"""Every route of the api service against the real PostGIS, Kafka and MinIO: OGC API Features (landing,
conformance, collections, items with bbox, datetime, limit and paging), AOIs, queries (published to the topic,
answers read back from the tables), health, metrics, and the JSON body of each refusal."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import RunningApi, put_cog, seed_results, seed_scene
from kits.broker import read_topic, record_count

from earthgptx.events import decode_event
from earthgptx.store.objects import ObjectStore
from earthgptx.v1.events_pb2 import QueryCoverage, QueryRequested

pytestmark = [pytest.mark.postgis, pytest.mark.kafka, pytest.mark.minio]

SQUARE = {"type": "Polygon", "coordinates": [[[10, 50], [10.5, 50], [10.5, 50.5], [10, 50.5], [10, 50]]]}


def _refusal(response: Any, status: int, kind: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == kind and body["reason"], body
    return dict(body)


# -- health, metrics, landing ---------------------------------------------------------------------------


def test_health_ready_and_metrics(api: RunningApi) -> None:
    with api.client() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").json() == {"status": "ready"}
        metrics = client.get("/metrics/")
        assert metrics.status_code == 200 and "python_info" in metrics.text
        landing = client.get("/")
        assert landing.status_code == 200 and ("id=\"map\"" in landing.text or "/ogc" in landing.text)


def test_cors_is_closed_by_default(api: RunningApi) -> None:
    with api.client() as client:
        response = client.options(
            "/v1/aois", headers={"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "POST"}
        )
        assert "access-control-allow-origin" not in response.headers
        assert "access-control-allow-origin" not in client.get("/healthz", headers={"Origin": "https://x.example"}).headers


# -- OGC API Features (tipg) ----------------------------------------------------------------------------


def test_ogc_landing_conformance_and_collections(api: RunningApi) -> None:
    with api.client() as client:
        landing = client.get("/ogc/", follow_redirects=True).json()
        assert {link["rel"] for link in landing["links"]} >= {"conformance", "data"}
        conformance = client.get("/ogc/conformance").json()["conformsTo"]
        assert any("ogcapi-features-1/1.0/conf/core" in c for c in conformance)
        ids = {c["id"] for c in client.get("/ogc/collections").json()["collections"]}
        assert {"ogc.scenes", "ogc.results", "ogc.aois", "ogc.queries"} <= ids
        # Nothing outside the ogc schema is published (the api_keys table least of all).
        assert not {i for i in ids if not i.startswith("ogc.")}
        assert client.get("/ogc/collections/public.api_keys/items").status_code == 404


def test_ogc_items_bbox_datetime_limit_and_paging(api: RunningApi) -> None:
    west = 20.0 + (uuid.uuid4().int % 1000) / 10  # an area of this test's own
    scene = seed_scene(api.repository, (west, 10.0, west + 0.2, 10.2))
    boxes = [(west + i * 0.01, 10.05, west + i * 0.01 + 0.005, 10.055) for i in range(7)]
    task = seed_results(api.repository, scene, boxes, label="ship")
    bbox = f"{west},9.9,{west + 0.3},10.3"
    with api.client() as client:
        page = client.get("/ogc/collections/ogc.results/items", params={"bbox": bbox, "limit": 3}).json()
        assert page["numberMatched"] == 7 and page["numberReturned"] == 3
        seen = [f["id"] for f in page["features"]]
        while (following := [link for link in page["links"] if link["rel"] == "next"]):
            page = client.get(following[0]["href"]).json()
            seen += [f["id"] for f in page["features"]]
        assert sorted(seen) == sorted(f"{task}-{i}" for i in range(7))
        one = client.get(f"/ogc/collections/ogc.results/items/{task}-3").json()
        assert one["properties"]["label"] == "ship" and one["geometry"]["type"] == "Polygon"
        # Scenes have no acquisition time here: a datetime window excludes them.
        inside = client.get("/ogc/collections/ogc.scenes/items", params={"bbox": bbox}).json()
        assert [f["id"] for f in inside["features"]] == [scene]
        dated = client.get(
            "/ogc/collections/ogc.scenes/items", params={"bbox": bbox, "datetime": "2020-01-01T00:00:00Z/.."}
        ).json()
        assert dated["numberReturned"] == 0
        assert client.get("/ogc/collections/ogc.results/items", params={"bbox": "1,2,3"}).status_code == 422
        assert client.get("/ogc/collections/ogc.results/items", params={"limit": -1}).status_code == 422
        _refusal(client.get("/ogc/collections/ogc.scenes/items", params={"datetime": "null"}), 422, "invalid")
        _refusal(client.get("/ogc/collections/ogc.results/items", params={"filter": "label =="}), 422, "invalid")
        _refusal(client.get("/ogc/collections/ogc.results/tiles/WebMercatorQuad/99/0/0"), 422, "invalid")
        _refusal(client.get("/ogc/collections/ogc.nothing/items"), 404, "not_found")
        # tipg raises some refusals without a message (found by test_api_schema.py): the reason is still a text.
        tilejson = client.get("/ogc/collections/ogc.queries/tiles/WebMercatorQuad/tilejson.json", params={"geom-column": ""})
        assert _refusal(tilejson, 404, "not_found")["reason"] == "missing geometry column"


def test_ogc_bbox_is_bound_not_formatted(api: RunningApi) -> None:
    with api.client() as client:
        response = client.get("/ogc/collections/ogc.results/items", params={"bbox": "1,2,3,4);DROP TABLE results;--"})
        assert response.status_code == 422
    with api.engine.connect() as connection:
        assert connection.scalar(sa.text("SELECT to_regclass('public.results') IS NOT NULL"))


# -- AOIs -----------------------------------------------------------------------------------------------


def test_aoi_create_list_get_deactivate(api: RunningApi) -> None:
    with api.client(api.writer_token) as client:
        created = client.post("/v1/aois", json={"name": "bay", "instruction": "count the ships", "geometry": SQUARE})
        assert created.status_code == 201, created.text
        aoi = created.json()
        assert created.headers["location"] == f"/v1/aois/{aoi['id']}"
        assert aoi["active"] and aoi["geometry"]["type"] == "MultiPolygon"
        assert client.get(f"/v1/aois/{aoi['id']}").json() == aoi
        assert aoi["id"] in [a["id"] for a in client.get("/v1/aois", params={"active": True}).json()]
        done = client.post(f"/v1/aois/{aoi['id']}/deactivate").json()
        assert done["active"] is False
        assert aoi["id"] not in [a["id"] for a in client.get("/v1/aois", params={"active": True}).json()]
        ogc = client.get(f"/ogc/collections/ogc.aois/items/{aoi['id']}").json()
        assert ogc["properties"]["active"] is False and "owner" not in ogc["properties"]
    with api.client(api.reader_token) as client:
        _refusal(client.post(f"/v1/aois/{aoi['id']}/deactivate"), 403, "forbidden")
    other = api.keys.create("someone-else").token
    with api.client(other) as client:
        _refusal(client.post(f"/v1/aois/{aoi['id']}/deactivate"), 403, "forbidden")
        _refusal(client.get("/v1/aois/does-not-exist"), 404, "not_found")


@pytest.mark.parametrize(
    "geometry",
    [
        {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]},  # self-intersecting
        {"type": "Polygon", "coordinates": [[[200, 0], [201, 0], [201, 1], [200, 0]]]},  # not lon/lat
        {"type": "Point", "coordinates": [10, 50]},  # not an area
        {"type": "Polygon", "coordinates": [[[0, 0], [1, 0]]]},  # not a ring
    ],
)
def test_aoi_refuses_bad_geometry(api: RunningApi, geometry: dict[str, Any]) -> None:
    with api.client(api.writer_token) as client:
        body = _refusal(client.post("/v1/aois", json={"instruction": "x", "geometry": geometry}), 422, "invalid")
        assert "geometry" in body["reason"] or "coordinates" in body["reason"] or "area" in body["reason"]


# -- authentication and body limits ---------------------------------------------------------------------


def test_writes_need_a_key_with_the_write_scope(api: RunningApi) -> None:
    body = {"instruction": "what is here?", "geometry": {"type": "Point", "coordinates": [10.2, 50.2]}}
    with api.client() as client:
        response = client.post("/v1/queries", json=body)
        _refusal(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"
        _refusal(client.post("/v1/aois", json={"instruction": "x", "geometry": SQUARE}), 401, "unauthorized")
        _refusal(client.post("/v1/uploads", content=b"x"), 401, "unauthorized")
    with api.client("egx_nothing_wrong") as client:
        _refusal(client.post("/v1/queries", json=body), 401, "unauthorized")
    with api.client("not-a-key") as client:
        _refusal(client.get("/v1/aois"), 401, "unauthorized")
    with api.client(api.reader_token) as client:
        _refusal(client.post("/v1/queries", json=body), 403, "forbidden")
    key_id = api.writer_token.split("_")[1]
    with api.engine.connect() as connection:
        stored = connection.scalar(sa.text("SELECT key_hash FROM api_keys WHERE id = :id"), {"id": key_id})
    assert stored.startswith("$argon2id$") and api.writer_token.split("_", 2)[2] not in stored


def test_a_revoked_key_is_refused(api: RunningApi) -> None:
    issued = api.keys.create("short-lived")
    with api.client(issued.token) as client:
        assert client.get("/v1/aois").status_code == 200
        api.keys.revoke(issued.key_id)
        # The server's own cache forgets it within key_cache_s; a new process refuses it at once.
    with api.engine.connect() as connection:
        assert connection.scalar(sa.text("SELECT revoked_at IS NOT NULL FROM api_keys WHERE id = :id"), {"id": issued.key_id})


def test_too_large_and_invalid_bodies(api: RunningApi) -> None:
    with api.client(api.writer_token) as client:
        huge = {"instruction": "x" * (api.settings.max_body_bytes + 10), "geometry": SQUARE}
        _refusal(client.post("/v1/aois", json=huge), 413, "too_large")
        body = _refusal(client.post("/v1/queries", json={"geometry": SQUARE}), 422, "invalid")
        assert body["detail"][0]["loc"][-1] == "instruction"
        _refusal(client.post("/v1/queries", content=b"{not json", headers={"content-type": "application/json"}), 422, "invalid")


# -- queries --------------------------------------------------------------------------------------------


def test_query_is_published_and_answers_are_read_back(api: RunningApi) -> None:
    topic = api.settings.queries_topic
    before = record_count(api.settings.kafka, topic)
    body = {"instruction": "what is at <region1>?", "bbox": [10.0, 50.0, 10.1, 50.1], "coverage": "all"}
    with api.client(api.writer_token) as client:
        accepted = client.post("/v1/queries", json=body)
        assert accepted.status_code == 202, accepted.text
        query_id = accepted.json()["id"]
        assert accepted.headers["location"] == f"/v1/queries/{query_id}"
        assert client.get(f"/v1/queries/{query_id}").json()["status"] == "requested"
    events = [decode_event(QueryRequested, r.value) for r in read_topic(api.settings.kafka, topic, before + 1)]
    (event,) = [e for e in events if e.query_id == query_id]
    assert list(event.bbox_4326) == [10.0, 50.0, 10.1, 50.1]
    assert event.coverage == QueryCoverage.QUERY_COVERAGE_ALL and event.owner.startswith("analyst-")

    # promptgen registers the query and its tasks; the resultstore stores the answer (here: through the tables).
    scene = seed_scene(api.repository, (10.0, 50.0, 10.1, 50.1))
    task = seed_results(api.repository, scene, [(10.02, 50.02, 10.03, 50.03)], label="ship", answer="one ship")
    with api.engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO queries (id, instruction, owner, geom, status, task_ids, answered_at) VALUES "
                "(:id, :instruction, 'analyst', ST_MakeEnvelope(10, 50, 10.1, 50.1, 4326), 'answered', :tasks, now())"
            ),
            {"id": query_id, "instruction": body["instruction"], "tasks": [task]},
        )
    with api.client() as client:
        found = client.get(f"/v1/queries/{query_id}", params={"wait": 2}).json()
    assert found["status"] == "answered"
    (feature,) = found["answers"]["features"]
    assert feature["properties"]["answer"] == "one ship" and feature["properties"]["model_version"] == "tiny-test"
    assert feature["geometry"]["type"] == "Polygon" and found["prompt"]["type"] == "Polygon"


def test_query_wait_is_bounded_and_returns_the_pending_state(api: RunningApi) -> None:
    query_id = uuid.uuid4().hex
    with api.engine.begin() as connection:
        connection.execute(sa.text("INSERT INTO queries (id, instruction) VALUES (:id, 'x')"), {"id": query_id})
    with api.client() as client:
        found = client.get(f"/v1/queries/{query_id}", params={"wait": 0.5}).json()
        assert found["status"] == "pending" and found["answers"]["features"] == []
        _refusal(client.get(f"/v1/queries/{uuid.uuid4().hex}"), 404, "not_found")
        _refusal(client.get(f"/v1/queries/{query_id}", params={"wait": 10_000}), 422, "invalid")


@pytest.mark.parametrize(
    "body",
    [
        {"instruction": "x"},  # no prompt
        {"instruction": "x", "bbox": [0, 0, 1, 1], "geometry": {"type": "Point", "coordinates": [0, 0]}},
        {"instruction": "x", "bbox": [0, 10, 1, 5]},  # south above north
        {"instruction": "x", "geometry": {"type": "Point", "coordinates": [500, 0]}},
        {"instruction": "x", "scene_id": "s"},  # scene without prompt
        {"instruction": "x", "scene_id": "s", "scene_prompt": {"type": "box", "box": [1, 2]}},
        {"instruction": "x\u0000", "bbox": [0, 0, 1, 1]},
    ],
)
def test_query_refuses_bad_prompts(api: RunningApi, body: dict[str, Any]) -> None:
    with api.client(api.writer_token) as client:
        _refusal(client.post("/v1/queries", json=body), 422, "invalid")


def test_query_in_scene_pixels(api: RunningApi) -> None:
    topic = api.settings.queries_topic
    before = record_count(api.settings.kafka, topic)
    body = {"instruction": "what is <region1>?", "scene_id": "scene-1", "scene_prompt": {"type": "box", "box": [10, 20, 30, 40]}}
    with api.client(api.writer_token) as client:
        accepted = client.post("/v1/queries", json=body)
        assert accepted.status_code == 202
    events = [decode_event(QueryRequested, r.value) for r in read_topic(api.settings.kafka, topic, before + 1)]
    (event,) = [e for e in events if e.query_id == accepted.json()["id"]]
    assert event.scene_id == "scene-1" and event.scene_prompt.box.x2 == 30


# -- imagery --------------------------------------------------------------------------------------------


def test_scene_imagery_tiles_from_minio(api: RunningApi, object_store: ObjectStore) -> None:
    key = f"cogs/{uuid.uuid4().hex}.tif"
    put_cog(object_store, key, (10.0, 50.0, 10.1, 50.1))
    scene = seed_scene(api.repository, (10.0, 50.0, 10.1, 50.1), object_key=key, bucket=object_store.settings.scenes_bucket)
    with api.client() as client:
        # z12 tile over (10.05, 50.05)
        redirect = client.get(f"/v1/scenes/{scene}/tiles/12/2162/1388.png")
        assert redirect.status_code == 307
        location = redirect.headers["location"]
        assert "bidx=1" in location and "rescale=0%2C255" in location
        tile = client.get(location)
        assert tile.status_code == 200, tile.text
        assert tile.headers["content-type"] == "image/png" and tile.content[:4] == b"\x89PNG"
        _refusal(client.get("/v1/scenes/nothing/tiles/12/2162/1388.png"), 404, "not_found")
        far = client.get(f"/v1/scenes/{scene}/tiles/12/0/0.png", follow_redirects=True)
        _refusal(far, 404, "not_found")
        _refusal(client.get("/imagery/tiles/WebMercatorQuad/12/2162/1388.png", params={"scene": "nothing"}), 404, "not_found")
        # Refusals test_api_schema.py found as 500s: a nodata the data type cannot hold, a zoom level past any
        # tile matrix, a point outside the scene.
        tile_url = "/imagery/tiles/WebMercatorQuad/12/2162/1388.png"
        for nodata in ("3.5e16", "-1", "inf", "nan", "many"):
            refused = _refusal(client.get(tile_url, params={"scene": scene, "nodata": nodata}), 422, "invalid")
            assert "nodata" in refused["reason"]
        assert client.get(tile_url, params={"scene": scene, "nodata": "0"}).status_code == 200
        _refusal(client.get("/imagery/tiles/WebMercatorQuad/695785/5235/212", params={"scene": scene}), 422, "invalid")
        _refusal(client.get("/imagery/point/0.0,0.0", params={"scene": scene}), 404, "not_found")
        assert client.get("/imagery/point/10.05,50.05", params={"scene": scene}).json()["values"][0] == 40
        _refusal(client.get("/ogc/collections/ogc.scenes/tiles/UTM31WGS84Quad/0/0/0"), 422, "invalid")
        _refusal(client.get("/imagery/point/3.5e70,-4.5e16", params={"scene": scene}), 422, "invalid")
        # A tile hundreds of times as wide as the scene is refused at once (GDAL took minutes over it).
        wide = client.get("/imagery/tiles/WGS1984Quad/1/1/1", params={"scene": scene, "expression": "b1/b2"})
        assert "zoom in" in _refusal(wide, 404, "not_found")["reason"]
        assert client.get("/imagery/tiles/WebMercatorQuad/8/135/86.png", params={"scene": scene}).status_code == 200


# -- uploads --------------------------------------------------------------------------------------------


def test_upload_proxy_reports_an_absent_ingest_service(api: RunningApi) -> None:
    with api.client(api.writer_token) as client:
        _refusal(client.post("/v1/uploads", content=b"II*\x00"), 503, "unavailable")
        _refusal(client.get("/v1/uploads/abc"), 503, "unavailable")
