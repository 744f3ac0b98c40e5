"""A property test generated from the API's OpenAPI schema (schemathesis), over every operation of the schema:
the API's own routes, tipg's OGC routes, titiler's imagery routes, the vector tiles (from a real Martin) and the
uploads (to a real ingest service). Its phases: the schema's examples, coverage (boundary and invalid values of
every parameter and body, unsupported methods) and fuzzing. Its checks, on every answer: never a 5xx; the body
conforms to the schema of the documented status; every 4xx is the API's refusal ``{"error", "reason"}``
(``schema_checks.py``). Examples are bounded (a few per operation, a fixed seed) so the run stays short; the
server is the real one (uvicorn, PostGIS, Kafka, MinIO) with a key that may read and write. schemathesis runs as
its own command against the live server (its pytest plugin does not load under this project's pytest)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from conftest import api_settings, seed_results, serve
from kits.broker import delete_leftovers
from kits.scene_files import generated_scene
from shapely.geometry import box, mapping, shape

from earthgptx.store.db import make_engine
from earthgptx.store.objects import ObjectStore
from earthgptx.store.repository import Repository
from services.api.security import KeyStore

pytestmark = [pytest.mark.postgis, pytest.mark.kafka, pytest.mark.minio, pytest.mark.slow]

MAX_EXAMPLES = 5
CHECKS = ("not_a_server_error", "response_schema_conformance", "refusals_have_the_error_shape")
PHASES = ("examples", "coverage", "fuzzing")
HERE = Path(__file__).resolve().parent
ARTIFACTS = HERE.parents[1] / "artifacts"


@dataclass
class LiveApi:
    url: str
    token: str
    identifiers: dict[str, list[str]]  # dictionary name -> real identifiers the generated requests may use


@pytest.fixture(scope="module")
def live_api(
    migrated_db_url: str, object_store: ObjectStore, martin: str, ingest: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveApi]:
    unique = uuid.uuid4().hex[:10]
    settings = api_settings(
        migrated_db_url, object_store, unique, rate_limit="100000/minute", martin_url=martin, ingest_url=ingest
    )
    server, thread = serve(settings)
    engine = make_engine(url=migrated_db_url, poolclass=sa.pool.NullPool)
    url = f"http://127.0.0.1:{settings.port}"
    token = KeyStore(engine).create(f"fuzzer-{unique}").token
    try:
        # Something real to find, made the way users make it: a scene uploaded through the API (ingested by the
        # real ingest into a COG), results over it, an AOI and a query; their ids go into the run's dictionaries.
        path, bands = generated_scene(tmp_path_factory.mktemp("schema-scene"), "optical", seed=2026)
        with httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {token}"}) as client:
            uploaded = client.post("/v1/uploads", content=path.read_bytes(), headers={"Content-Type": "image/tiff"},
                                   params={"modality": "optical", "bands": ",".join(bands)})  # fmt: skip
            assert uploaded.status_code == 202, uploaded.text
            scene = uploaded.json()["scene_id"]
            deadline = time.monotonic() + 90
            while (status := client.get(f"/v1/uploads/{scene}").json()["status"]) == "accepted":
                assert time.monotonic() < deadline, "the scene was not ingested in time"
                time.sleep(0.2)
            assert status == "ingested", status
            footprint = shape(client.get(f"/ogc/collections/ogc.scenes/items/{scene}").json()["geometry"])
            west, south, east, north = footprint.bounds
            dx, dy = (east - west) / 10, (north - south) / 10
            boxes = [(west + i * dx, south + i * dy, west + (i + 1) * dx, south + (i + 1) * dy) for i in (2, 5)]
            task = seed_results(Repository(engine), scene, boxes)
            aoi = client.post("/v1/aois", json={"instruction": "count the ships", "geometry": mapping(box(*boxes[0]))})
            assert aoi.status_code == 201, aoi.text
            query = client.post("/v1/queries", json={"instruction": "what is here?", "bbox": list(boxes[1])})
            assert query.status_code == 202, query.text
        identifiers = {
            "scenes": [scene],
            "aois": [aoi.json()["id"]],
            "queries": [query.json()["id"]],
            "items": [f"{task}-0", f"{task}-1", scene, aoi.json()["id"], query.json()["id"]],
        }
        yield LiveApi(url, token, identifiers)
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        engine.dispose()
        delete_leftovers(settings.kafka, unique)


def _config(identifiers: dict[str, list[str]]) -> str:
    """schemathesis's configuration: real identifiers for the parameters that name a stored thing (most generated
    values are then real ones, the rest random)."""
    bindings = {
        "query.scene": "scenes", "path.scene_id": "scenes", "path.aoi_id": "aois", "path.query_id": "queries",
        "path.itemId": "items",
    }  # fmt: skip
    lines = []
    for name, values in identifiers.items():
        lines += [f"[dictionaries.{name}]", f"values = {json.dumps(values)}", ""]
    lines.append("[parameters]")
    lines += [f'"{key}" = {{ dictionary = "{name}", probability = 0.8 }}' for key, name in bindings.items()]
    return "\n".join(lines) + "\n"


def test_no_operation_answers_a_server_error(live_api: LiveApi, tmp_path: Path) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(_config(live_api.identifiers))
    command = [
        str(Path(sys.executable).with_name("schemathesis")), "--config-file", str(config),
        "run", f"{live_api.url}/openapi.json",
        "--checks", ",".join(CHECKS), "--max-examples", str(MAX_EXAMPLES), "--seed", "26",
        "--generation-deterministic", "--request-timeout", "60", "--suppress-health-check", "all",
        "--phases", ",".join(PHASES), "--workers", "2", "--max-failures", "20",
        "-H", f"Authorization: Bearer {live_api.token}",
    ]  # fmt: skip
    env = {
        **os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": "schema_checks",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
    }  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=540, cwd=tmp_path, env=env)
    report = (done.stdout + done.stderr).replace(live_api.token, "<key>")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "schemathesis-report.txt").write_text(report)  # the whole report, for a failure's details
    failures = report[report.find("FAILURES") : report.find("WARNINGS")]
    assert done.returncode == 0, (failures[:12000] or report[-8000:]) + "\n(whole report: tests/artifacts/)"
    assert "Server error" not in report
    # Every operation of the schema was selected and tested, tiles and uploads included.
    operations = re.search(r"Operations:\s+(\d+) selected / (\d+) total", report)
    tested = re.search(r"Tested:\s+(\d+)", report)
    assert operations and tested and operations[1] == operations[2] == tested[1], report[-3000:]
