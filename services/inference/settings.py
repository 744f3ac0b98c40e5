"""Settings of the inference service (``EGX_INFERENCE_*``), composing the shared Kafka, object-store and Triton
blocks.

    EGX_INFERENCE_GROUP_ID=inference              consumer group (its dead letters go to dlq.<group>)
    EGX_INFERENCE_INPUT_TOPIC=prompts.tasks
    EGX_INFERENCE_OUTPUT_TOPIC=inference.results
    EGX_INFERENCE_MASKS_BUCKET=masks              MinIO bucket of the answers' mask PNGs
    EGX_INFERENCE_MAX_IN_FLIGHT=16                Triton requests in flight at once (feeds its dynamic batcher)
    EGX_INFERENCE_HEALTH_PORT=8090                /healthz and /readyz (unset: no health server)
    EGX_INFERENCE_METRICS_PORT=9109               Prometheus /metrics (unset: no metrics server)
    EGX_INFERENCE_LOG_FORMAT=json|text
plus ``EGX_KAFKA_*``, ``EGX_S3_*`` and ``EGX_TRITON_*`` (``earthgptx.settings``).
"""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from earthgptx.bus import topics
from earthgptx.runtime import ServiceSettings
from earthgptx.settings import KafkaSettings, ObjectStoreSettings, TritonSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EGX_INFERENCE_", extra="ignore")

    group_id: str = "inference"
    input_topic: str = topics.PROMPTS_TASKS
    output_topic: str = topics.INFERENCE_RESULTS
    masks_bucket: str = "masks"
    # Requests to Triton in flight at once; a poll's tasks beyond it wait for a free slot.
    max_in_flight: int = 16
    # Records per poll: the most tasks one batch handler call sees.
    max_poll_records: int = 64
    # Transient failures of a record (not outages) are retried this often before dead-lettering; Triton being
    # down, not ready or loading is an outage, waited out without limit.
    max_attempts: int = 8
    publish_timeout_s: float = 30.0
    health_host: str = "127.0.0.1"
    health_port: int | None = None
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    objects: ObjectStoreSettings = Field(default_factory=ObjectStoreSettings)  # type: ignore[arg-type]
    triton: TritonSettings = Field(default_factory=TritonSettings)

    @field_validator("group_id", "input_topic", "output_topic", "masks_bucket")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()

    @field_validator("max_in_flight", "max_attempts", "max_poll_records")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be at least 1, got {value}")
        return value
