"""Connection settings for the infrastructure every service shares.

Each block has its own environment prefix; a service composes the blocks it needs into its own
``Settings`` with the service prefix (``EGX_INGEST_`` ...; base class ``earthgptx.runtime.ServiceSettings``).
Secrets have no default and are never logged (``SecretStr``). In the ``production`` environment a placeholder
secret (``changeme``, ``minioadmin``, a database URL whose password is ``password``...) is refused when the
settings are built, that is at the start of the service. The local stack (``make up``) writes matching values
into ``.stack/stack.env``, which ``load_stack_env`` reads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = frozenset({"changeme", "change-me", "password", "minioadmin", "secret", ""})

Environment = Literal["development", "production"]
"""Where a service runs: ``production`` refuses placeholder secrets, ``development`` accepts them."""


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
    # Seconds a request may wait for the next bytes of MinIO's answer. A connection that went dead without being
    # closed (seen once when MinIO was stopped mid-request) otherwise stalls a consumer's partition this long.
    read_timeout_s: float = Field(default=20.0, gt=0)


class TritonSettings(BaseSettings):
    """Triton Inference Server (``EGX_TRITON_*``)."""

    model_config = SettingsConfigDict(env_prefix="EGX_TRITON_", extra="ignore")

    http_url: str = "127.0.0.1:58000"
    grpc_url: str = "127.0.0.1:58001"
    model_name: str = "earthgptx"
    timeout_s: float = 60.0


def _secret_text(secret: SecretStr) -> str | None:
    """The part of a secret that must not be a placeholder: a URL's password (None when the URL has none),
    otherwise the whole value."""
    value = secret.get_secret_value().strip()
    if "://" in value:
        password = urlsplit(value).password
        return None if password is None else unquote(password)
    return value


def is_placeholder(secret: SecretStr) -> bool:
    """Whether ``secret`` (or the password of a URL secret) is a well-known placeholder."""
    text = _secret_text(secret)
    return text is not None and text.lower() in PLACEHOLDER_SECRETS


def refuse_placeholder(name: str, secret: SecretStr, environment: str) -> None:
    """Raise ``ValueError`` if a placeholder secret is used outside development."""
    if environment != "development" and is_placeholder(secret):
        raise ValueError(f"{name} is a placeholder secret; set a real one for environment {environment!r}")


def placeholder_secrets(settings: BaseModel, prefix: str = "") -> list[str]:
    """Dotted names of the ``SecretStr`` fields of ``settings``, and of the settings blocks it composes, that
    hold a placeholder (``["database.url", "objects.secret_key"]``)."""
    found: list[str] = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr) and is_placeholder(value):
            found.append(prefix + name)
        elif isinstance(value, BaseModel):
            found.extend(placeholder_secrets(value, f"{prefix}{name}."))
    return found


def refuse_placeholders(settings: BaseModel, environment: str) -> None:
    """Raise ``ValueError`` naming every placeholder secret of ``settings`` outside development."""
    if environment == "development":
        return
    found = placeholder_secrets(settings)
    if found:
        raise ValueError(
            f"placeholder secret(s) {', '.join(found)}: set real ones for environment {environment!r}"
        )


def load_stack_env(
    state_dir: str | os.PathLike[str] | None = None, *, fallback: str | os.PathLike[str] = ".stack"
) -> list[str]:
    """Put the local stack's connection values (``<state_dir>/stack.env``, written by ``make up``) into the
    environment, without overriding variables already set. Returns the names it set.

    The folder is ``state_dir``, else ``EGX_STATE_DIR``, else ``fallback`` (``./.stack``; tests and tools pass
    their checkout's ``.stack``). A missing file is not an error: deployed services get their environment from
    the deployment, not from this file.
    """
    folder = Path(state_dir or os.environ.get("EGX_STATE_DIR") or fallback)
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
