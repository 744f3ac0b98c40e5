"""Connection settings for the infrastructure every service shares.

Each block has its own environment prefix; a service composes the blocks it needs into its own
``Settings`` with the service prefix (``EGX_INGEST_`` ...). Secrets have no default and are never logged
(``SecretStr``). The local stack (``make up``) writes matching values into ``.stack/stack.env``.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = frozenset({"changeme", "change-me", "password", "minioadmin", "secret", ""})


class KafkaSettings(BaseSettings):
    """Kafka broker and topic layout (``EGX_KAFKA_*``)."""

    model_config = SettingsConfigDict(env_prefix="EGX_KAFKA_", extra="ignore")

    bootstrap: str = "127.0.0.1:59092"
    partitions: int = 3
    replication_factor: int = 1
    max_message_bytes: int = 1_000_000

    @field_validator("partitions", "replication_factor")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be at least 1, got {value}")
        return value


class DatabaseSettings(BaseSettings):
    """PostgreSQL + PostGIS (``EGX_DB_*``). ``url`` carries the password, so it is a secret."""

    model_config = SettingsConfigDict(env_prefix="EGX_DB_", extra="ignore")

    url: SecretStr
    pool_size: int = 5


class ObjectStoreSettings(BaseSettings):
    """S3-compatible object store, MinIO (``EGX_S3_*``)."""

    model_config = SettingsConfigDict(env_prefix="EGX_S3_", extra="ignore")

    endpoint: str = "127.0.0.1:59000"
    access_key: SecretStr
    secret_key: SecretStr
    secure: bool = False
    scenes_bucket: str = "scenes"
    chips_bucket: str = "chips"


class TritonSettings(BaseSettings):
    """Triton Inference Server (``EGX_TRITON_*``)."""

    model_config = SettingsConfigDict(env_prefix="EGX_TRITON_", extra="ignore")

    http_url: str = "127.0.0.1:58000"
    grpc_url: str = "127.0.0.1:58001"
    model_name: str = "earthgptx"
    timeout_s: float = 60.0


def refuse_placeholder(name: str, secret: SecretStr, environment: str) -> None:
    """Raise if a placeholder secret is used outside development."""
    if environment != "development" and secret.get_secret_value().strip().lower() in PLACEHOLDER_SECRETS:
        raise ValueError(f"{name} is a placeholder secret; set a real one for environment {environment!r}")


def load_stack_env(state_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """Put the local stack's connection values (``<state_dir>/stack.env``, written by ``make up``) into the
    environment, without overriding variables already set. Returns the names it set.

    ``state_dir`` defaults to ``EGX_STATE_DIR`` or ``./.stack``. A missing file is not an error: deployed
    services get their environment from the deployment, not from this file.
    """
    folder = Path(state_dir or os.environ.get("EGX_STATE_DIR") or ".stack")
    env_file = folder / "stack.env"
    if not env_file.is_file():
        return []
    loaded: list[str] = []
    for raw in env_file.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip()
        if key and key not in os.environ:
            os.environ[key] = value.strip().strip("'\"")
            loaded.append(key)
    return loaded
