"""``python -m services.inference``: consume ``prompts.tasks``, answer them with Triton, publish
``inference.results``, until SIGTERM/SIGINT.

The process around it (settings, JSON logging, metrics, topics, signals, closing) is the service kit's
(``earthgptx.runtime``); this module wires the inference service's resources: MinIO (chips in, masks out), the
Triton gRPC client (created by the handler in its own event loop), the producer of results and dead letters, the
batch route of ``InferenceHandler.on_prompt_tasks``, and a small health server: ``/healthz`` answers while the
process runs, ``/readyz`` only while the consumer's dependencies answer (Triton down or loading makes it 503 with
the reason, while the tasks wait).

The bus hands the handler one poll's records at a time (a batch route); the handler keeps up to ``max_in_flight``
of them in flight at Triton. A concurrent consumer mode of the bus (records of several polls in flight, commits up
to the first not done) is not in the bus yet; this service will move to it when it is.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from earthgptx.bus import ConsumerOptions, EventProducer, batch_route
from earthgptx.runtime import ConsumerService, run_consumer_service
from earthgptx.serving.client import AsyncTritonClient
from earthgptx.store.objects import ObjectStore
from earthgptx.v1.events_pb2 import PromptTask
from services.inference.handlers import PRODUCER_NAME, InferenceHandler
from services.inference.settings import Settings


class HealthServer:
    """``/healthz`` (200 while running) and ``/readyz`` (200 when ``ready()`` says so, else 503 and the reason)."""

    def __init__(self, host: str, port: int, ready: Callable[[], tuple[bool, str]]) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                if self.path == "/healthz":
                    status, body = 200, {"status": "ok"}
                elif self.path == "/readyz":
                    ok, reason = ready()
                    status, body = (
                        (200, {"status": "ready"}) if ok else (503, {"status": "not ready", "reason": reason})
                    )
                else:
                    status, body = 404, {"status": "not found"}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:  # probes are not worth a log line
                return

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, name="inference-health", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class InferenceService(ConsumerService):
    """The service's resources and its consumer loop; ``run`` blocks until ``stop`` (or a signal)."""

    def __init__(self, settings: Settings, *, options: ConsumerOptions | None = None) -> None:
        self.settings = settings
        options = options or ConsumerOptions(
            max_attempts=settings.max_attempts, max_poll_records=settings.max_poll_records
        )
        self.objects = ObjectStore(settings.objects)
        self.objects.ensure_buckets(settings.masks_bucket)
        producer = EventProducer(
            settings.kafka, client_id=f"egx-{settings.group_id}", producer_name=PRODUCER_NAME
        )
        triton = settings.triton
        self.handler = InferenceHandler(
            self.objects,
            lambda: AsyncTritonClient(triton.grpc_url, triton.model_name, triton.timeout_s),
            producer,
            output_topic=settings.output_topic,
            masks_bucket=settings.masks_bucket,
            max_in_flight=settings.max_in_flight,
            publish_timeout_s=settings.publish_timeout_s,
        )
        resources: list[HealthServer | InferenceHandler] = [self.handler]
        super().__init__(
            settings.group_id,
            [batch_route(settings.input_topic, PromptTask, self.handler.on_prompt_tasks)],
            settings.kafka,
            options=options,
            producer=producer,
            output_topics=[settings.output_topic],
            resources=resources,
        )
        self.health: HealthServer | None = None
        if settings.health_port is not None:
            self.health = HealthServer(settings.health_host, settings.health_port, self.readiness)
            self.resources = (*self.resources, self.health)

    def readiness(self) -> tuple[bool, str]:
        return self.loop.ready, self.loop.not_ready_reason


def main(argv: Sequence[str] | None = None) -> int:
    return run_consumer_service("inference", argv, Settings, InferenceService)
