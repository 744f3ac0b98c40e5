"""How a service process starts, runs and stops (the same for every service).

``start_service``: refuse command-line arguments (services are configured by their environment), read the local
stack's ``.stack/stack.env`` if there is one, build the settings once (a placeholder secret in production stops
here), configure logging, start the Prometheus metrics server.

``run_consumer_service``: ``start_service``, build the ``ConsumerService`` from the settings, freeze the heap
built so far (``freeze_heap``), create its topics (once, at start), run its ``ConsumerLoop`` until SIGTERM/SIGINT,
close its producer and resources, exit 0.

``run_http_service``: ``start_service``, then uvicorn on ``create_app(settings)`` until SIGTERM/SIGINT.

Exit codes: 0 after a clean stop, 2 when the process cannot start (arguments given, settings missing or invalid).
"""

from __future__ import annotations

import gc
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any, Protocol, TypeVar

from prometheus_client import start_http_server
from pydantic import ValidationError

from earthgptx.bus import ConsumerLoop, ConsumerOptions, EventProducer, LoopStats, Route
from earthgptx.bus.topics import ensure_topics_from_settings
from earthgptx.runtime.logs import configure_logging
from earthgptx.runtime.settings import HttpServiceSettings, ServiceSettings
from earthgptx.settings import KafkaSettings, load_stack_env

log = logging.getLogger(__name__)

S = TypeVar("S", bound=ServiceSettings)
H = TypeVar("H", bound=HttpServiceSettings)


class SupportsClose(Protocol):
    def close(self) -> Any: ...


class ServiceStartError(RuntimeError):
    """The process cannot start; the message says why and what to set."""


class ConsumerService:
    """One consumer group with the resources its handlers use.

    ``producer`` publishes the handlers' outputs and the dead letters; it and ``resources`` (database pools,
    clients) are closed when ``run`` returns, in reverse order of creation. ``output_topics`` are created at
    start together with the routed topics and the group's dead-letter topic.
    """

    def __init__(
        self,
        group_id: str,
        routes: Sequence[Route[Any]],
        kafka: KafkaSettings,
        *,
        options: ConsumerOptions | None = None,
        producer: EventProducer | None = None,
        output_topics: Sequence[str] = (),
        resources: Sequence[SupportsClose] = (),
    ) -> None:
        self.kafka = kafka
        self.producer = producer
        self.output_topics = tuple(output_topics)
        self.resources = tuple(resources)
        self.loop = ConsumerLoop(group_id, routes, kafka, options, dead_letter_producer=producer)

    @property
    def group_id(self) -> str:
        return self.loop.group_id

    @property
    def input_topics(self) -> list[str]:
        return list(self.loop.routes)

    @property
    def topics(self) -> list[str]:
        """Every topic the service reads or writes: inputs, outputs and its dead-letter topic."""
        return [*self.input_topics, *self.output_topics, self.loop.dead_letter_topic]

    def run(self) -> LoopStats:
        """Create the topics, consume until ``stop`` (or SIGTERM/SIGINT on the main thread), then close."""
        try:
            ensure_topics_from_settings(self.kafka, self.topics)
            return self.loop.run()
        finally:
            self.close()

    def stop(self) -> None:
        """Finish the record in hand, commit and return from ``run`` (thread-safe)."""
        self.loop.stop()

    def close(self) -> None:
        """Close the producer and the resources (each once; a failure is logged, the others still close)."""
        owned: list[SupportsClose] = [*self.resources, *([self.producer] if self.producer is not None else [])]
        self.resources, self.producer = (), None
        for resource in reversed(owned):
            try:
                resource.close()
            except Exception:
                log.exception("closing %s failed", type(resource).__name__)


def start_service(name: str, argv: Sequence[str] | None, settings_type: type[S]) -> S:
    """The start every service shares; returns its settings, built once. Raises ``ServiceStartError``."""
    prefix = settings_type.model_config.get("env_prefix") or "EGX_"
    if argv:
        raise ServiceStartError(f"python -m services.{name} takes no arguments; configure it with {prefix}*")
    load_stack_env()
    try:
        settings = settings_type()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(settings)'}: {e['msg']}" for e in exc.errors())
        raise ServiceStartError(f"{name}: settings missing or invalid ({problems})") from None
    configure_logging(settings.log_level, settings.log_format)
    if settings.metrics_port is not None:
        start_http_server(settings.metrics_port)
        log.info("metrics on :%d/metrics", settings.metrics_port)
    return settings


def freeze_heap() -> int:
    """Collect, then move every object alive to the collector's permanent generation (``gc.freeze``); returns
    how many were moved.

    A service's start leaves some 10^5 objects that live as long as the process (modules, classes, clients,
    settings). The cyclic collector would walk all of them in every full collection, which a busy consumer
    triggers several times a minute: in the result store's benchmark, collections took about 1 s of a 7.5 s run
    (under the GIL, so every thread waited), 0.4 s once the start's objects were frozen. Objects frozen are still
    freed when their last reference goes; only a reference cycle among them would be kept.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def _start_or_report(name: str, argv: Sequence[str] | None, settings_type: type[S]) -> S | None:
    """``start_service``, or ``None`` after writing why it could not start (the caller exits 2)."""
    try:
        return start_service(name, argv, settings_type)
    except ServiceStartError as exc:
        sys.stderr.write(f"{exc}\n")
        return None


def run_consumer_service(
    name: str,
    argv: Sequence[str] | None,
    settings_type: type[S],
    build: Callable[[S], ConsumerService],
) -> int:
    """``main`` of a consumer service: start, build, consume until SIGTERM, close. Returns the exit code."""
    settings = _start_or_report(name, argv, settings_type)
    if settings is None:
        return 2
    service = build(settings)
    frozen = freeze_heap()
    log.info(
        "%s starting (%s): group %s consumes %s, publishes %s (kafka %s); %d objects of the start frozen",
        name, settings.environment, service.group_id, service.input_topics, list(service.output_topics),
        service.kafka.bootstrap, frozen,
    )
    stats = service.run()
    log.info(
        "%s stopped: %d processed, %d dead-lettered", name, stats.processed, stats.dead_lettered,
        extra={"processed": stats.processed, "dead_lettered": stats.dead_lettered, "retried": stats.retried},
    )
    return 0


def run_http_service(
    name: str,
    argv: Sequence[str] | None,
    settings_type: type[H],
    create_app: Callable[[H], Any],
) -> int:
    """``main`` of an HTTP service: start, then serve ``create_app(settings)`` with uvicorn until SIGTERM."""
    import uvicorn  # only HTTP services need it

    settings = _start_or_report(name, argv, settings_type)
    if settings is None:
        return 2
    app = create_app(settings)
    log.info("%s starting (%s): http://%s:%d", name, settings.environment, settings.host, settings.port)
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal to the handler it found; a quiet
    # handler here lets the process end like a consumer service, with exit code 0 after a clean stop.
    previous = {sig: signal.signal(sig, _stopped_by) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        # log_config=None keeps the process's logging (JSON lines) for uvicorn's own loggers too.
        uvicorn.run(app, host=settings.host, port=settings.port, log_config=None)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("%s stopped", name)
    return 0


def _stopped_by(signum: int, frame: FrameType | None) -> None:
    log.info("received %s after a graceful shutdown", signal.Signals(signum).name)
