"""Settings of the resultstore service (``EGX_RESULTSTORE_*``), composing the shared Kafka and database blocks.

    EGX_RESULTSTORE_GROUP_ID=resultstore          consumer group (its dead letters go to dlq.<group>)
    EGX_RESULTSTORE_INPUT_TOPIC=inference.results
    EGX_RESULTSTORE_OUTPUT_TOPIC=results.stored
    EGX_RESULTSTORE_ALLOW_UNGEOREFERENCED=false   store pixel-only results for tiles without a georeference
    EGX_RESULTSTORE_METRICS_PORT=9108             Prometheus /metrics (unset: no metrics server)
    EGX_RESULTSTORE_LOG_FORMAT=json|text
    EGX_RESULTSTORE_ENVIRONMENT=production        (or EGX_ENVIRONMENT) refuses placeholder secrets at start
    EGX_RESULTSTORE_CLAIMS_BUCKET=claims          MinIO bucket of claim-checked ResultStored objects
    EGX_RESULTSTORE_BATCH=true                    one transaction and one producer flush per polled batch
    EGX_RESULTSTORE_PIPELINE=true                 prepare the next batch while one is written (with BATCH)
    EGX_RESULTSTORE_PRODUCER_BATCH_BYTES=262144   kafka-python batch_size of the ResultStored producer
plus ``EGX_KAFKA_*``, ``EGX_DB_*`` and ``EGX_S3_*`` (``earthgptx.settings``).
"""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from earthgptx.bus import topics
from earthgptx.runtime import ServiceSettings
from earthgptx.settings import DatabaseSettings, KafkaSettings, ObjectStoreSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EGX_RESULTSTORE_", extra="ignore")

    group_id: str = "resultstore"
    input_topic: str = topics.INFERENCE_RESULTS
    output_topic: str = topics.RESULTS_STORED
    # A result of a tile without a usable georeference is rejected unless the deployment allows pixel-only
    # results; it is never placed at (0, 0) (docs/architecture.md, "Georeferencing").
    allow_ungeoreferenced: bool = False
    # Transient failures of a record are retried this often before dead-lettering; outages (PostGIS, MinIO or
    # the broker down) are waited out without limit and never dead-letter a valid result.
    max_attempts: int = 8
    # Objects of a ResultStored too large to travel inline go to this bucket (claim check).
    claims_bucket: str = "claims"
    # Handle each poll's records together: one transaction and one producer flush per batch.
    batch: bool = True
    # With batch: decode, validate and georeference poll N+1 while poll N is written (the bus's pipelined mode).
    pipeline: bool = True
    # Seconds to wait for the broker to acknowledge each ResultStored (acks=all).
    publish_timeout_s: float = 30.0
    # kafka-python's batch_size for the ResultStored producer. A poll's events are published together and then
    # flushed, so larger batches add no latency; at the default 16 KiB the sender was woken (a socket write
    # under the GIL) for most events and sent many small produce requests. A batch the topic refuses as too
    # large is split by kafka-python and sent again.
    producer_batch_bytes: int = 256 * 1024
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)  # type: ignore[arg-type]
    objects: ObjectStoreSettings = Field(default_factory=ObjectStoreSettings)  # type: ignore[arg-type]

    @field_validator("group_id", "input_topic", "output_topic")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()

    @field_validator("max_attempts", "producer_batch_bytes")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be at least 1, got {value}")
        return value
