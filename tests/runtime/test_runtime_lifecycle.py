"""The service kit's lifecycles against real parts: a consumer service on the local broker, and an HTTP
service as its own process (uvicorn on ``create_app(settings)``), stopped with SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import httpx
import pytest
from kafka import KafkaAdminClient
from kits.broker import fast_options, read_topic, wait_until

from earthgptx.bus import EventProducer, route
from earthgptx.events import stamp
from earthgptx.runtime import ConsumerService
from earthgptx.settings import KafkaSettings
from earthgptx.v1.events_pb2 import SceneIngested

REPO_ROOT = Path(__file__).resolve().parents[2]


class Pool:
    def __init__(self) -> None:
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


@pytest.mark.kafka
def test_consumer_service_creates_its_topics_consumes_publishes_and_closes(kafka_cleanup: str) -> None:
    kafka = KafkaSettings()
    inbound, outbound, group = f"test.kit-in.{kafka_cleanup}", f"test.kit-out.{kafka_cleanup}", f"kit-{kafka_cleanup}"
    producer = EventProducer(kafka, client_id="test-kit", producer_name="kit")
    pool = Pool()

    def on_scene(event: SceneIngested) -> None:
        forwarded = SceneIngested(scene_id=event.scene_id, source="kit")
        producer.publish_and_wait(outbound, event.scene_id, stamp(forwarded, producer="kit"))

    service = ConsumerService(
        group, [route(inbound, SceneIngested, on_scene)], kafka,
        options=fast_options(), producer=producer, output_topics=[outbound], resources=[pool],
    )
    errors: list[BaseException] = []

    def run() -> None:
        try:
            service.run()
        except BaseException as exc:  # surfaced below, not lost in the thread
            errors.append(exc)

    thread = threading.Thread(target=run, name="kit-under-test")
    thread.start()
    try:
        admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap.split(","))
        try:
            wait_until(lambda: {inbound, outbound, f"dlq.{group}"} <= set(admin.list_topics()), 30, "the topics")
        finally:
            admin.close()
        with EventProducer(kafka, client_id="test-kit-source") as source:
            source.publish_and_wait(inbound, "scene-1", stamp(SceneIngested(scene_id="scene-1"), producer="test"))
        [record] = read_topic(kafka, outbound, 1)
        assert SceneIngested.FromString(record.value).scene_id == "scene-1"
    finally:
        service.stop()
        thread.join(timeout=30)
    assert not thread.is_alive() and not errors, errors
    assert pool.closed == 1 and service.producer is None  # closed once, producer included


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


APP = textwrap.dedent(
    """
    import sys

    from fastapi import FastAPI
    from pydantic_settings import SettingsConfigDict

    from earthgptx.runtime import HttpServiceSettings, run_http_service


    class Settings(HttpServiceSettings):
        model_config = SettingsConfigDict(env_prefix="EGX_KITHTTP_", extra="ignore")

        greeting: str = "hello"


    def create_app(settings: Settings) -> FastAPI:
        app = FastAPI()

        @app.get("/hello")
        def hello() -> dict[str, str]:
            return {"greeting": settings.greeting, "environment": settings.environment}

        return app


    raise SystemExit(run_http_service("kithttp", sys.argv[1:], Settings, create_app))
    """
)


def test_http_service_serves_create_app_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = _free_port()
    script = tmp_path / "kit_http.py"
    script.write_text(APP)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "EGX_KITHTTP_PORT": str(port),
           "EGX_KITHTTP_GREETING": "hi", "EGX_KITHTTP_LOG_FORMAT": "json"}  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, str(script)], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/hello", timeout=2)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"the service did not answer:\n{process.communicate()[0]}") from None
                time.sleep(0.1)
        assert response.json() == {"greeting": "hi", "environment": "development"}
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, output
    assert '"message": "kithttp starting (development)' in output and '"message": "kithttp stopped"' in output


def test_http_service_refuses_arguments() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", APP, "--port", "1"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert completed.returncode == 2
    assert "takes no arguments; configure it with EGX_KITHTTP_" in completed.stderr
