"""``python -m services.resultstore``: consume ``inference.results`` into PostGIS until SIGTERM/SIGINT.

The process around it (settings, logging, metrics, topics, signals, closing) is the service kit's
(``earthgptx.runtime``); this module only wires the resultstore's resources: the PostGIS repository, the
producer of ``results.stored`` (and of dead letters), and ``ResultStoreHandler``'s two stages (prepare, write), which
the bus's pipelined mode overlaps across polls (``EGX_RESULTSTORE_PIPELINE``).
"""

from __future__ import annotations

from collections.abc import Sequence

from earthgptx.bus import ConsumerOptions, EventProducer, route, staged_batch_route
from earthgptx.runtime import ConsumerService, run_consumer_service
from earthgptx.store.objects import ObjectStore
from earthgptx.store.repository import Repository
from earthgptx.v1.events_pb2 import InferenceResult
from services.resultstore.handlers import PRODUCER_NAME, ResultStoreHandler
from services.resultstore.settings import Settings


class ResultStoreService(ConsumerService):
    """The service's resources and its consumer loop; ``run`` blocks until ``stop`` (or a signal)."""

    def __init__(self, settings: Settings, *, options: ConsumerOptions | None = None) -> None:
        self.settings = settings
        # Store errors are kinds of the bus's errors (an outage is waited out, bad input dead-lettered): no mapping.
        options = options or ConsumerOptions(max_attempts=settings.max_attempts,
                                             pipeline=settings.batch and settings.pipeline)
        self.repository = Repository.from_settings(settings.database)
        self.objects = ObjectStore(settings.objects)
        self.objects.ensure_buckets(settings.claims_bucket)
        producer = EventProducer(settings.kafka, client_id=f"egx-{settings.group_id}", producer_name=PRODUCER_NAME,
                                 batch_size=settings.producer_batch_bytes)
        self.handler = ResultStoreHandler(
            self.repository,
            producer,
            output_topic=settings.output_topic,
            allow_ungeoreferenced=settings.allow_ungeoreferenced,
            publish_timeout_s=settings.publish_timeout_s,
            claims=self.objects,
            masks=self.objects,
            claims_bucket=settings.claims_bucket,
        )
        consume = (
            staged_batch_route(settings.input_topic, InferenceResult, self.handler.prepare_results,
                               self.handler.write_results)
            if settings.batch
            else route(settings.input_topic, InferenceResult, self.handler.on_inference_result)
        )
        super().__init__(
            settings.group_id,
            [consume],
            settings.kafka,
            options=options,
            producer=producer,
            output_topics=[settings.output_topic],
            resources=[self.repository],
        )


def main(argv: Sequence[str] | None = None) -> int:
    return run_consumer_service("resultstore", argv, Settings, ResultStoreService)
