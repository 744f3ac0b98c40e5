"""Settings of the api service (``EGX_API_*``), composing the shared Kafka, database and object-store blocks.

    EGX_API_HOST=127.0.0.1 / EGX_API_PORT=8080       where the HTTP API listens
    EGX_API_READS_NEED_KEY=false                     reads (OGC, tiles, queries, AOIs) open, or keyed
    EGX_API_RATE_LIMIT="1200/minute"                 per API key (per client address for open reads)
    EGX_API_MAX_BODY_BYTES=1048576                   larger JSON bodies are refused (413); uploads excepted
    EGX_API_CORS_ORIGINS=[]                          CORS is closed unless origins are listed
    EGX_API_INGEST_URL=http://127.0.0.1:8081         uploads are proxied there under the API's authentication
    EGX_API_MAX_WAIT_S=30                            longest ``wait`` of GET /v1/queries/{id}
    EGX_API_WEB_DIR=web/dist                         the built web map served at ``/`` (absent: no map)
    EGX_API_MARTIN_URL=http://127.0.0.1:3000         Martin's vector tiles (the map's tile source)
    EGX_API_QUERIES_TOPIC=queries.requested          where ad-hoc queries are published
plus ``EGX_KAFKA_*``, ``EGX_DB_*`` and ``EGX_S3_*`` (``earthgptx.settings``), and the kit's ``EGX_API_LOG_*``,
``EGX_API_METRICS_PORT``, ``EGX_API_ENVIRONMENT``.
"""

from __future__ import annotations

from pathlib import Path

from limits import parse
from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from earthgptx.bus import topics
from earthgptx.runtime import HttpServiceSettings
from earthgptx.settings import DatabaseSettings, KafkaSettings, ObjectStoreSettings

REPO_ROOT = Path(__file__).resolve().parents[2]


class Settings(HttpServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EGX_API_", extra="ignore")

    port: int = 8080
    reads_need_key: bool = False
    # A map view loads tens of tiles at once: the limit is sized for a person panning a map.
    rate_limit: str = "1200/minute"
    max_body_bytes: int = 1024 * 1024
    cors_origins: list[str] = Field(default_factory=list)
    ingest_url: str = "http://127.0.0.1:8081"
    max_wait_s: float = 30.0
    web_dir: Path = REPO_ROOT / "web" / "dist"
    martin_url: str = "http://127.0.0.1:3000"
    # How long a verified key is remembered (argon2 runs once per key and period, not once per request);
    # a revoked key is refused at the latest this long after its revocation.
    key_cache_s: float = 60.0
    # Records a query may ask for at most on one page of the API's own lists.
    max_page: int = 1000
    queries_topic: str = topics.QUERIES_REQUESTED
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)  # type: ignore[arg-type]
    objects: ObjectStoreSettings = Field(default_factory=ObjectStoreSettings)  # type: ignore[arg-type]

    @field_validator("rate_limit")
    @classmethod
    def _limit(cls, value: str) -> str:
        parse(value)  # raises ValueError naming the bad value
        return value

    @field_validator("max_body_bytes", "max_page")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be at least 1, got {value}")
        return value

    @property
    def asyncpg_url(self) -> str:
        """The database URL as asyncpg (tipg) takes it: without SQLAlchemy's driver suffix."""
        url = self.database.url.get_secret_value()
        scheme, _, rest = url.partition("://")
        return f"{scheme.split('+')[0]}://{rest}"
