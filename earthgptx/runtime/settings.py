"""The settings every service has, whatever it does: where it runs, how it logs, where its metrics are.

A service's ``Settings`` subclasses ``ServiceSettings`` (or ``HttpServiceSettings``), sets its own prefix and
composes the shared blocks of ``earthgptx.settings`` it needs::

    class Settings(ServiceSettings):
        model_config = SettingsConfigDict(env_prefix="EGX_PROMPTGEN_", extra="ignore")

        kafka: KafkaSettings = Field(default_factory=KafkaSettings)

The environment is ``EGX_<NAME>_ENVIRONMENT``, else the deployment-wide ``EGX_ENVIRONMENT``, else
``development``. In ``production``, building the settings fails when any secret of the service or of a block it
composes is a placeholder, so the service refuses to start.
"""

from __future__ import annotations

import os

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from earthgptx.runtime.logs import LogFormat
from earthgptx.settings import Environment, refuse_placeholders

ENVIRONMENT_VARIABLE = "EGX_ENVIRONMENT"


def _deployment_environment() -> str:
    return os.environ.get(ENVIRONMENT_VARIABLE, "development").strip().lower()


class ServiceSettings(BaseSettings):
    """Environment, logging and metrics of one service process."""

    model_config = SettingsConfigDict(extra="ignore")

    # validate_default: the value from EGX_ENVIRONMENT is checked like any other.
    environment: Environment = Field(default_factory=_deployment_environment, validate_default=True)  # type: ignore[arg-type]
    log_level: str = "INFO"
    log_format: LogFormat = "json"
    # Prometheus /metrics on this port (None: no metrics server).
    metrics_port: int | None = None

    @model_validator(mode="after")
    def _no_placeholder_secrets(self) -> ServiceSettings:
        refuse_placeholders(self, self.environment)
        return self


class HttpServiceSettings(ServiceSettings):
    """A service that answers HTTP: where it listens."""

    host: str = "127.0.0.1"
    port: int = 8080
