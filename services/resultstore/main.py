"""``python -m services.resultstore``: consume ``inference.results`` into PostGIS until SIGTERM/SIGINT.

At start it creates its topics (input, output, dead letters; idempotent), optionally serves Prometheus metrics,
and then runs the bus's ``ConsumerLoop`` with ``ResultStoreHandler.on_inference_result``. On SIGTERM the record
in hand is finished and committed, the consumer leaves its group, and the process exits 0.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from collections.abc import Sequence

from prometheus_client import start_http_server

from earthgptx.bus import ConsumerLoop, ConsumerOptions, EventProducer, LoopStats, route
from earthgptx.bus.topics import dead_letter_topic, ensure_topics_from_settings
from earthgptx.store.errors import StoreUnavailable
from earthgptx.store.repository import Repository
from earthgptx.v1.events_pb2 import InferenceResult
from services.resultstore.handlers import PRODUCER_NAME, ResultStoreHandler
from services.resultstore.settings import Settings, load_stack_env

log = logging.getLogger("services.resultstore")

# Attributes every LogRecord has; anything else was passed with ``extra=`` and goes into the JSON line.
_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the ``extra=`` fields, and the traceback."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str, log_format: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # kafka-python logs every connection at INFO.
    logging.getLogger("kafka").setLevel(logging.WARNING)


class ResultStoreService:
    """The service's resources and its consumer loop; ``run`` blocks until ``stop`` (or a signal)."""

    def __init__(self, settings: Settings, *, options: ConsumerOptions | None = None) -> None:
        self.settings = settings
        self.options = options or ConsumerOptions(
            max_attempts=settings.max_attempts,
            # The repository raises StoreUnavailable for outages; the handler maps it, this is a safety net.
            transient_exceptions=(ConnectionError, TimeoutError, StoreUnavailable),
        )
        self.repository = Repository.from_settings(settings.database)
        self.producer = EventProducer(
            settings.kafka, client_id=f"egx-{settings.group_id}", producer_name=PRODUCER_NAME
        )
        self.handler = ResultStoreHandler(
            self.repository,
            self.producer,
            output_topic=settings.output_topic,
            allow_ungeoreferenced=settings.allow_ungeoreferenced,
            publish_timeout_s=settings.publish_timeout_s,
        )
        self.loop = ConsumerLoop(
            settings.group_id,
            [route(settings.input_topic, InferenceResult, self.handler.on_inference_result)],
            settings.kafka,
            self.options,
            dead_letter_producer=self.producer,
        )

    def run(self) -> LoopStats:
        """Create the topics, consume until stopped, then release the producer and the database pool."""
        try:
            ensure_topics_from_settings(
                self.settings.kafka,
                [self.settings.input_topic, self.settings.output_topic, dead_letter_topic(self.settings.group_id)],
            )
            return self.loop.run()
        finally:
            self.producer.close()
            self.repository.close()

    def stop(self) -> None:
        self.loop.stop()


def main(argv: Sequence[str] | None = None) -> int:
    if argv:
        sys.stderr.write("python -m services.resultstore takes no arguments; configure it with EGX_RESULTSTORE_*\n")
        return 2
    load_stack_env()
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    if settings.metrics_port is not None:
        start_http_server(settings.metrics_port)
        log.info("metrics on :%d/metrics", settings.metrics_port)
    log.info(
        "resultstore starting: %s -> PostGIS -> %s (group %s, kafka %s)",
        settings.input_topic, settings.output_topic, settings.group_id, settings.kafka.bootstrap,
    )
    stats = ResultStoreService(settings).run()
    log.info("resultstore stopped: %d stored, %d dead-lettered", stats.processed, stats.dead_lettered,
             extra={"processed": stats.processed, "dead_lettered": stats.dead_lettered, "retried": stats.retried})
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
