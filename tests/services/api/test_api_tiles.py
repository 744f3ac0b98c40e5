"""Vector tiles through the API from a real Martin (built by deploy/local/martin.sh, configured by
deploy/local/martin.yaml) over the test's own PostGIS database. Martin warns that PostGIS 3.3 is older than it
recommends (some geometry may be hidden at some zoom levels), so every stored result is looked for in the tile
that holds it, at several zoom levels: a feature is in a tile when its id (a property) is in the tile's values."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator

import httpx
import morecantile
import pytest
from conftest import RunningApi, api_settings, free_port, seed_results, seed_scene, serve
from kits.broker import delete_leftovers

from earthgptx.store.db import make_engine
from earthgptx.store.objects import ObjectStore
from earthgptx.store.repository import Repository

pytestmark = [pytest.mark.postgis, pytest.mark.kafka, pytest.mark.minio]

WEB_MERCATOR = morecantile.tms.get("WebMercatorQuad")


@pytest.fixture(scope="module")
def tiled_api(migrated_db_url: str, object_store: ObjectStore, martin: str) -> Iterator[RunningApi]:
    unique = uuid.uuid4().hex[:10]
    settings = api_settings(migrated_db_url, object_store, unique, martin_url=martin)
    server, thread = serve(settings)
    engine = make_engine(url=migrated_db_url)
    try:
        yield RunningApi(settings, f"http://127.0.0.1:{settings.port}", engine, Repository(engine), None, "", "")  # type: ignore[arg-type]
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        engine.dispose()
        delete_leftovers(settings.kafka, unique)


def _tile(client: httpx.Client, layer: str, lon: float, lat: float, zoom: int) -> bytes:
    tile = WEB_MERCATOR.tile(lon, lat, zoom)
    response = client.get(f"/tiles/{layer}/{tile.z}/{tile.x}/{tile.y}")
    assert response.status_code in (200, 204), response.text
    if response.status_code == 200:
        assert response.headers["content-type"] == "application/vnd.mapbox-vector-tile"
    return response.content


def test_every_stored_result_is_in_its_tiles(tiled_api: RunningApi) -> None:
    rng = random.Random(26)
    scene_bounds = (30.0, -10.0, 30.5, -9.5)
    scene = seed_scene(tiled_api.repository, scene_bounds)
    boxes = []
    for _ in range(60):
        lon, lat = rng.uniform(30.0, 30.49), rng.uniform(-10.0, -9.51)
        size = rng.choice([0.00005, 0.0005, 0.005])  # from a few metres to half a kilometre
        boxes.append((lon, lat, lon + size, lat + size))
    task = seed_results(tiled_api.repository, scene, boxes, level=2, label="ship")
    with httpx.Client(base_url=tiled_api.url, timeout=60) as client:
        # Every result is a point in its tile at every zoom level, and a polygon where it spans a tile unit.
        missing = []
        for ordinal, (west, south, east, north) in enumerate(boxes):
            lon, lat = (west + east) / 2, (south + north) / 2
            for zoom in (8, 11, 14):
                if f"{task}-{ordinal}".encode() not in _tile(client, "result_points", lon, lat, zoom):
                    missing.append(("point", ordinal, zoom))
                units = (east - west) / (360 / 2**zoom / 4096)
                if units >= 2 and f"{task}-{ordinal}".encode() not in _tile(client, "results", lon, lat, zoom):
                    missing.append(("polygon", ordinal, zoom))
            if f"{task}-{ordinal}".encode() not in _tile(client, "results", lon, lat, 18):
                missing.append(("polygon", ordinal, 18))
        assert not missing, f"results absent from their tiles (layer, ordinal, zoom): {missing}"
        footprint = _tile(client, "scenes", 30.25, -9.75, 8)
        assert scene.encode() in footprint
        # A tile far from any data is empty (204), and an index outside the zoom's matrix is no tile.
        assert client.get("/tiles/results/14/0/0").status_code == 204
        assert client.get("/tiles/results/2/7/1").status_code == 204
        refused = client.get("/tiles/nothing/1/0/0")
        assert refused.status_code == 422 and refused.json()["error"] == "invalid"


def test_tile_server_down_is_a_503(migrated_db_url: str, object_store: ObjectStore) -> None:
    unique = uuid.uuid4().hex[:10]
    settings = api_settings(migrated_db_url, object_store, unique, martin_url=f"http://127.0.0.1:{free_port()}")
    server, thread = serve(settings)
    try:
        response = httpx.get(f"http://127.0.0.1:{settings.port}/tiles/results/1/0/0", timeout=30)
        assert response.status_code == 503 and response.json()["error"] == "unavailable"
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        delete_leftovers(settings.kafka, unique)
