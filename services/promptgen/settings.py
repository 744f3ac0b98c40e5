"""Settings of the promptgen service (``EGX_PROMPTGEN_*``), composing the shared Kafka, database and MinIO blocks.

    EGX_PROMPTGEN_GROUP_ID=promptgen       consumer group (its dead letters go to dlq.<group>)
    EGX_PROMPTGEN_SCENES_TOPIC=scenes.ingested, _RESULTS_TOPIC=results.stored, _QUERIES_TOPIC=queries.requested,
    EGX_PROMPTGEN_OUTPUT_TOPIC=prompts.tasks
    EGX_PROMPTGEN_CHIP_SIZE=128            the model's input size (the shipped model's vision_config.image_size)
    EGX_PROMPTGEN_TILE_SIZE=128            window size in scene pixels (resized to the chip size)
    EGX_PROMPTGEN_OVERLAP=16               scene pixels shared by neighbouring tiles
    EGX_PROMPTGEN_MODEL_DIR=models/earthgptx-tiny   where the model version (and chip size) is read
    EGX_PROMPTGEN_MODEL_VERSION=...        the served model's version (default: read from MODEL_DIR)
    EGX_PROMPTGEN_POLICY='{"levels": [1, 2, 3, 4], "masks": false, "max_objects_per_tile": 4}'
    EGX_PROMPTGEN_MAX_QUERY_TILES=4        tiles asked per scene for one ad-hoc query

plus ``EGX_KAFKA_*``, ``EGX_DB_*`` and ``EGX_S3_*`` (``earthgptx.settings``).
"""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from earthgptx.bus import topics
from earthgptx.runtime import ServiceSettings
from earthgptx.settings import DatabaseSettings, KafkaSettings, ObjectStoreSettings
from services.promptgen.cascade import Policy


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EGX_PROMPTGEN_", extra="ignore")

    group_id: str = "promptgen"
    scenes_topic: str = topics.SCENES_INGESTED
    results_topic: str = topics.RESULTS_STORED
    queries_topic: str = topics.QUERIES_REQUESTED
    output_topic: str = topics.PROMPTS_TASKS
    chip_size: int = Field(default=128, gt=0)
    tile_size: int = Field(default=128, gt=0)
    overlap: int = Field(default=16, ge=0)
    model_dir: str = "models/earthgptx-tiny"
    model_version: str = ""
    policy: Policy = Field(default_factory=Policy)
    max_query_tiles: int = Field(default=4, gt=0)
    max_attempts: int = 8
    publish_timeout_s: float = 30.0

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)  # type: ignore[arg-type]
    objects: ObjectStoreSettings = Field(default_factory=ObjectStoreSettings)  # type: ignore[arg-type]

    @model_validator(mode="after")
    def _overlap_below_tile(self) -> Settings:
        if self.overlap >= self.tile_size:
            raise ValueError(f"overlap ({self.overlap}) must be smaller than tile_size ({self.tile_size})")
        return self
