"""Rate limits (429 with Retry-After, per key, anonymous clients by address), reads behind a key when the setting
asks for it, and the key CLI (the token shown once, only its argon2id hash stored, never a secret in the logs)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import api_settings, serve

from earthgptx.store.db import make_engine
from earthgptx.store.objects import ObjectStore
from services.api.security import KeyStore

pytestmark = [pytest.mark.postgis, pytest.mark.kafka, pytest.mark.minio]

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def strict_api(migrated_db_url: str, object_store: ObjectStore) -> Iterator[tuple[str, KeyStore]]:
    """An API whose reads need a key and which allows 5 requests a minute per key (or address)."""
    settings = api_settings(
        migrated_db_url, object_store, uuid.uuid4().hex[:10], rate_limit="5/minute", reads_need_key=True
    )
    server, thread = serve(settings)
    engine = make_engine(url=migrated_db_url, poolclass=sa.pool.NullPool)
    try:
        yield f"http://127.0.0.1:{settings.port}", KeyStore(engine)
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        engine.dispose()


def test_reads_need_a_key_when_configured(strict_api: tuple[str, KeyStore]) -> None:
    import httpx

    url, keys = strict_api
    reader = keys.create("reader", ["read"]).token
    writer_only = keys.create("writer-only", ["write"]).token
    with httpx.Client(base_url=url) as client:
        assert client.get("/healthz").status_code == 200  # health stays open for the orchestrator
        refused = client.get("/ogc/collections")
        assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"
        assert client.get("/v1/aois").status_code == 401
        assert client.get("/ogc/collections", headers={"X-API-Key": reader}).status_code == 200
        assert client.get("/v1/aois", headers={"Authorization": f"Bearer {reader}"}).status_code == 200
        assert client.get("/v1/aois", headers={"X-API-Key": writer_only}).status_code == 403


def test_rate_limit_per_key_answers_429_with_retry_after(strict_api: tuple[str, KeyStore]) -> None:
    import httpx

    url, keys = strict_api
    first, second = keys.create("busy").token, keys.create("calm").token
    with httpx.Client(base_url=url, headers={"X-API-Key": first}) as client:
        answers = [client.get("/v1/aois") for _ in range(6)]
    assert [a.status_code for a in answers[:5]] == [200] * 5
    limited = answers[5]
    assert limited.status_code == 429
    assert limited.json()["error"] == "rate_limited" and "5 per 1 minute" in limited.json()["reason"]
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    # Another key has its own budget.
    with httpx.Client(base_url=url, headers={"X-API-Key": second}) as client:
        assert client.get("/v1/aois").status_code == 200
    # Clients without a key share one budget per address (refused with 401, but counted, so at the latest the
    # 6th is a 429; the module's other tests may have spent part of it).
    with httpx.Client(base_url=url) as client:
        statuses = [client.get("/v1/aois").status_code for _ in range(6)]
    first_limited = statuses.index(429)
    assert set(statuses[:first_limited]) <= {401} and set(statuses[first_limited:]) == {429}


@pytest.mark.slow
def test_keys_cli_creates_lists_and_revokes(migrated_db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    env = {**os.environ, "EGX_DB_URL": migrated_db_url, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "services.api", "keys"]
    created = subprocess.run(
        [*command, "create", "--name", "cli-analyst", "--scope", "read"], env=env, capture_output=True, text=True,
        timeout=120, cwd=REPO,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("egx_") and token not in created.stderr
    key_id = token.split("_")[1]
    engine = make_engine(url=migrated_db_url, poolclass=sa.pool.NullPool)
    try:
        with caplog.at_level(logging.DEBUG):
            principal = KeyStore(engine).verify(token, "127.0.0.1")
        assert principal.owner == "cli-analyst" and principal.scopes == frozenset({"read"})
        assert token.split("_", 2)[2] not in caplog.text
        listed = subprocess.run([*command, "list"], env=env, capture_output=True, text=True, timeout=120, cwd=REPO)
        assert f"{key_id}\tcli-analyst\tread" in listed.stdout and token not in listed.stdout
        revoked = subprocess.run([*command, "revoke", key_id], env=env, capture_output=True, text=True, timeout=120, cwd=REPO)
        assert revoked.returncode == 0
        again = subprocess.run([*command, "revoke", key_id], env=env, capture_output=True, text=True, timeout=120, cwd=REPO)
        assert again.returncode == 1
        with engine.connect() as connection:
            stored = connection.scalar(sa.text("SELECT key_hash FROM api_keys WHERE id = :id"), {"id": key_id})
        assert stored.startswith("$argon2id$")
    finally:
        engine.dispose()


def test_the_service_refuses_arguments() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "services.api", "--port", "1"], capture_output=True, text=True, timeout=120, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert done.returncode == 2 and "takes no arguments" in done.stderr
