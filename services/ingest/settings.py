"""Settings of the ingest service (``EGX_INGEST_*``), composing the shared Kafka, database and object-store blocks.

    EGX_INGEST_HOST=127.0.0.1 / EGX_INGEST_PORT=8081    where the HTTP API listens
    EGX_INGEST_MAX_UPLOAD_BYTES=4294967296             larger uploads and drops are refused (413)
    EGX_INGEST_WORKDIR=/var/tmp                        received files and COGs in progress (default: TMPDIR)
    EGX_INGEST_WORKERS=1                               uploads ingested at once (a COG uses every core)
    EGX_INGEST_DROP_ENABLED=true                       consume the drop bucket's notifications
    EGX_INGEST_DROP_BUCKET=incoming                    the drop bucket (notifications set up at start)
    EGX_INGEST_DROP_TOPIC=scenes.dropped               where MinIO's Kafka target publishes them
    EGX_INGEST_GROUP_ID=ingest                         consumer group of the drop topic (dead letters: dlq.ingest)
    EGX_INGEST_OUTPUT_TOPIC=scenes.ingested
plus ``EGX_KAFKA_*``, ``EGX_DB_*`` and ``EGX_S3_*`` (``earthgptx.settings``), and the kit's ``EGX_INGEST_LOG_*``,
``EGX_INGEST_METRICS_PORT``, ``EGX_INGEST_ENVIRONMENT``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from earthgptx.bus import topics
from earthgptx.runtime import HttpServiceSettings
from earthgptx.scenes.drops import DROP_TOPIC
from earthgptx.settings import DatabaseSettings, KafkaSettings, ObjectStoreSettings


class Settings(HttpServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EGX_INGEST_", extra="ignore")

    port: int = 8081
    max_upload_bytes: int = 4 * 1024**3
    # Bytes read from the client (or the drop bucket) at a time: the most a transfer holds in memory.
    chunk_bytes: int = 1024 * 1024
    workdir: Path | None = None
    workers: int = 1
    output_topic: str = topics.SCENES_INGESTED
    drop_enabled: bool = True
    drop_bucket: str = "incoming"
    drop_topic: str = DROP_TOPIC
    group_id: str = "ingest"
    publish_timeout_s: float = 30.0
    # GDAL's block cache while a COG is written: the main term of the process's memory for a large scene.
    cog_cache_mb: int = 256
    cog_threads: str = "ALL_CPUS"
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)  # type: ignore[arg-type]
    objects: ObjectStoreSettings = Field(default_factory=ObjectStoreSettings)  # type: ignore[arg-type]

    @field_validator("max_upload_bytes", "chunk_bytes", "workers", "cog_cache_mb")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be at least 1, got {value}")
        return value

    @field_validator("drop_bucket", "drop_topic", "group_id", "output_topic")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()
