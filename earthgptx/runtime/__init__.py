"""The service kit: what every ``services/<name>`` process shares (settings base, logging, start and stop).

A consumer service (``services/<name>/main.py``)::

    from earthgptx.runtime import ConsumerService, run_consumer_service

    class PromptgenService(ConsumerService):
        def __init__(self, settings: Settings, *, options: ConsumerOptions | None = None) -> None:
            producer = EventProducer(settings.kafka, client_id="egx-promptgen", producer_name="promptgen")
            handler = PromptgenHandler(producer, ...)
            super().__init__(
                settings.group_id,
                [route(topics.SCENES_INGESTED, SceneIngested, handler.on_scene_ingested)],
                settings.kafka,
                options=options,
                producer=producer,                  # outputs and dead letters; closed at exit
                output_topics=[topics.PROMPTS_TASKS],
                resources=[repository],             # anything else with close()
            )

    def main(argv: Sequence[str] | None = None) -> int:
        return run_consumer_service("promptgen", argv, Settings, PromptgenService)

An HTTP service: ``run_http_service("api", argv, Settings, create_app)`` with ``Settings(HttpServiceSettings)``.
``Settings`` subclasses ``ServiceSettings`` (environment, log level and format, metrics port) with the prefix
``EGX_<NAME>_`` and composes the blocks of ``earthgptx.settings`` it needs. Tests build the service class with
their own settings and call ``run()`` in a thread and ``stop()``; ``main`` is only the process around it.
"""

from earthgptx.runtime.logs import JsonFormatter, configure_logging
from earthgptx.runtime.service import (
    ConsumerService,
    ServiceStartError,
    freeze_heap,
    run_consumer_service,
    run_http_service,
    start_service,
)
from earthgptx.runtime.settings import HttpServiceSettings, ServiceSettings

__all__ = [
    "ConsumerService",
    "HttpServiceSettings",
    "JsonFormatter",
    "ServiceSettings",
    "ServiceStartError",
    "configure_logging",
    "freeze_heap",
    "run_consumer_service",
    "run_http_service",
    "start_service",
]
