"""Shared test setup.

Integration tests talk to the real local stack started by ``make up`` (``deploy/local``). Its connection
values are read from ``.stack/stack.env`` unless already in the environment. If a service a test needs is
down, the test fails with a message saying so (it is never silently skipped): run ``make up`` first, or
deselect with ``-m "not kafka and not postgis and not minio and not triton"``.
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _load_stack_env() -> None:
    state_dir = Path(os.environ.get("EGX_STATE_DIR", REPO_ROOT / ".stack"))
    env_file = state_dir / "stack.env"
    if not env_file.exists():
        return
    for line in env_file.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        os.environ.setdefault(key.strip(), value.strip().strip("'\""))


_load_stack_env()


def _require_port(address: str, what: str) -> None:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=2):
            return
    except OSError as exc:
        pytest.fail(f"{what} is not reachable at {address} ({exc}); start the local stack with `make up`")


@pytest.fixture(autouse=True)
def _services_for_markers(request: pytest.FixtureRequest) -> None:
    """Fail fast, with the reason, when a marked test's service is down."""
    marks = {m.name for m in request.node.iter_markers()}
    if "kafka" in marks:
        _require_port(os.environ.get("EGX_KAFKA_BOOTSTRAP", "127.0.0.1:59092").split(",")[0], "Kafka")
    if "minio" in marks:
        _require_port(os.environ.get("EGX_S3_ENDPOINT", "127.0.0.1:59000"), "MinIO")
    if "postgis" in marks:
        _require_port("127.0.0.1:" + os.environ.get("EGX_PG_PORT", "55432"), "PostgreSQL")
    if "triton" in marks:
        _require_port(os.environ.get("EGX_TRITON_HTTP_URL", "127.0.0.1:58000"), "Triton")
    if "gpu" in marks:
        torch = pytest.importorskip("torch")
        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA device")


@pytest.fixture
def unique_name() -> str:
    """A short unique suffix for topics, buckets, consumer groups and schemas used by one test."""
    return uuid.uuid4().hex[:10]
