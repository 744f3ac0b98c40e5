"""``python -m services.promptgen``: tile new scenes, run the cascade, register AOIs and ask ad-hoc queries until
SIGTERM/SIGINT. The process around it is the service kit's (``earthgptx.runtime``); this module wires the
resources: the PostGIS store, MinIO, the producer of ``prompts.tasks`` (and of dead letters) and the handler.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from earthgptx.bus import ConsumerOptions, EventProducer, route
from earthgptx.runtime import ConsumerService, run_consumer_service
from earthgptx.serving.version import checkpoint_version
from earthgptx.store.objects import ObjectStore
from earthgptx.store.pipeline import PipelineStore
from earthgptx.store.repository import Repository
from earthgptx.v1.events_pb2 import QueryRequested, ResultStored, SceneIngested
from services.promptgen.handlers import PRODUCER_NAME, PromptgenHandler
from services.promptgen.settings import Settings


def model_version(settings: Settings) -> str:
    """The configured model version, else the one of the checkpoint in ``model_dir`` (as the server computes it)."""
    return settings.model_version or checkpoint_version(Path(settings.model_dir))


class PromptgenService(ConsumerService):
    """The service's resources and its consumer loop; ``run`` blocks until ``stop`` (or a signal)."""

    def __init__(self, settings: Settings, *, options: ConsumerOptions | None = None) -> None:
        self.settings = settings
        options = options or ConsumerOptions(max_attempts=settings.max_attempts)
        self.store = PipelineStore(Repository.from_settings(settings.database))
        self.objects = ObjectStore(settings.objects)
        self.objects.ensure_buckets()
        producer = EventProducer(settings.kafka, client_id=f"egx-{settings.group_id}", producer_name=PRODUCER_NAME)
        self.handler = PromptgenHandler(
            self.store,
            self.objects,
            producer,
            model_version=model_version(settings),
            chips_bucket=settings.objects.chips_bucket,
            chip_size=settings.chip_size,
            tile_size=settings.tile_size,
            overlap=settings.overlap,
            policy=settings.policy,
            max_query_tiles=settings.max_query_tiles,
            output_topic=settings.output_topic,
            publish_timeout_s=settings.publish_timeout_s,
        )
        super().__init__(
            settings.group_id,
            [
                route(settings.scenes_topic, SceneIngested, self.handler.on_scene_ingested),
                route(settings.results_topic, ResultStored, self.handler.on_result_stored),
                route(settings.queries_topic, QueryRequested, self.handler.on_query_requested),
            ],
            settings.kafka,
            options=options,
            producer=producer,
            output_topics=[settings.output_topic],
            resources=[self.store],
        )


def main(argv: Sequence[str] | None = None) -> int:
    return run_consumer_service("promptgen", argv, Settings, PromptgenService)
