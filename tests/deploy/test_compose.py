"""docker-compose.yml validates against the Compose Specification's JSON schema (no engine needed).

The schema is the one the reference implementation embeds (module github.com/compose-spec/compose-go/v2,
file schema/compose-spec.json), fetched through the Go module proxy into the Go module cache, outside the clone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_GO = "github.com/compose-spec/compose-go/v2@v2.16.2"
INFRASTRUCTURE = {"kafka", "postgis", "minio", "triton"}


@pytest.fixture(scope="module")
def compose_schema(tmp_path_factory: pytest.TempPathFactory) -> dict:
    if "EGX_COMPOSE_SCHEMA" in os.environ:
        return json.loads(Path(os.environ["EGX_COMPOSE_SCHEMA"]).read_text())
    go = shutil.which("go")
    assert go, "the Go toolchain is needed to fetch the Compose Specification schema"
    workdir = tmp_path_factory.mktemp("compose-schema")
    env = {**os.environ, "GOFLAGS": "-mod=mod"}
    out = subprocess.run(
        [go, "mod", "download", "-json", COMPOSE_GO], cwd=workdir, env=env,
        capture_output=True, text=True, timeout=300, check=True,
    )
    module_dir = Path(json.loads(out.stdout)["Dir"])
    return json.loads((module_dir / "schema" / "compose-spec.json").read_text())


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_file_is_schema_valid(compose: dict, compose_schema: dict) -> None:
    validator = jsonschema.Draft202012Validator(compose_schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_schema_rejects_a_broken_file(compose: dict, compose_schema: dict) -> None:
    """The check can fail: an unknown top-level key and a malformed port are refused."""
    broken = {**compose, "servics": {}}
    broken["services"] = {**compose["services"], "kafka": {**compose["services"]["kafka"], "ports": [{"x": 1}]}}
    assert list(jsonschema.Draft202012Validator(compose_schema).iter_errors(broken))


def test_compose_names_the_infrastructure_and_reserves_a_gpu(compose: dict) -> None:
    services = compose["services"]
    assert INFRASTRUCTURE <= set(services)
    devices = services["triton"]["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d.get("capabilities", []) for d in devices)
    assert any(str(v).startswith("./model_repository:") for v in services["triton"]["volumes"])
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"


def test_no_secret_is_written_in_the_compose_file() -> None:
    text = (REPO / "docker-compose.yml").read_text()
    for line in text.splitlines():
        if any(k in line for k in ("PASSWORD:", "SECRET_KEY:", "ACCESS_KEY:")):
            assert "${" in line, f"secret given literally: {line.strip()}"


def test_the_services_image_installs_extras_and_runs_in_production(compose: dict) -> None:
    """The project's services image installs pyproject.toml extras pinned by the lock (torch only with "ml"),
    and every service of it runs with EGX_ENVIRONMENT=production, which refuses placeholder secrets."""
    dockerfile = (REPO / "deploy" / "compose" / "Dockerfile").read_text()
    assert 'pip install -c requirements.lock ".[${EXTRAS}]"' in dockerfile
    assert "pip install -r requirements.lock" not in dockerfile
    ours = {n: s for n, s in compose["services"].items() if (s.get("build") or {}).get("target") == "services"}
    assert {"migrate", "resultstore", "promptgen", "inference"} <= set(ours)
    assert ours["inference"]["command"] == ["python", "-m", "services.inference"]
    assert ours["inference"]["depends_on"]["triton"]["condition"] == "service_healthy"
    for name, service in ours.items():
        assert set(service["build"]["args"]["EXTRAS"].split(",")) <= {"platform", "api", "ml"}, name
        assert service["environment"]["EGX_ENVIRONMENT"] == "production", name


def test_ingest_service_and_the_drop_buckets_notification_target(compose: dict) -> None:
    services = compose["services"]
    ingest = services["ingest"]
    assert ingest["command"] == ["python", "-m", "services.ingest"]
    assert ingest["build"]["target"] == "services" and ingest["environment"]["EGX_ENVIRONMENT"] == "production"
    assert ingest["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert "/healthz" in " ".join(ingest["healthcheck"]["test"])
    minio = services["minio"]["environment"]
    assert minio["MINIO_NOTIFY_KAFKA_ENABLE_PRIMARY"] == "on"
    assert minio["MINIO_NOTIFY_KAFKA_BROKERS_PRIMARY"] == "kafka:9092"
    assert minio["MINIO_NOTIFY_KAFKA_TOPIC_PRIMARY"] == "scenes.dropped"  # earthgptx.scenes.drops.DROP_TOPIC
    queue = minio["MINIO_NOTIFY_KAFKA_QUEUE_DIR_PRIMARY"]
    assert any(str(v).endswith(":" + queue) for v in services["minio"]["volumes"])


def test_api_service_and_its_tile_server(compose: dict) -> None:
    services = compose["services"]
    api = services["api"]
    assert api["command"] == ["python", "-m", "services.api"]
    assert api["build"]["target"] == "services" and api["environment"]["EGX_ENVIRONMENT"] == "production"
    assert api["environment"]["EGX_API_MARTIN_URL"] == "http://martin:3000"
    assert api["environment"]["EGX_API_INGEST_URL"] == "http://ingest:8081"
    assert "/healthz" in " ".join(api["healthcheck"]["test"])
    martin = services["martin"]
    assert any(str(v).startswith("./deploy/local/martin.yaml:") for v in martin["volumes"])
    assert (REPO / "deploy" / "local" / "martin.yaml").is_file()
