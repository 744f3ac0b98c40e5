"""The service kit without a broker: log lines, the settings base, and what a consumer service owns."""

from __future__ import annotations

import json
import logging
import sys

import pytest
from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from earthgptx.bus import route
from earthgptx.runtime import (
    ConsumerService,
    JsonFormatter,
    ServiceSettings,
    ServiceStartError,
    start_service,
)
from earthgptx.settings import KafkaSettings, ObjectStoreSettings
from earthgptx.v1.events_pb2 import SceneIngested


class DemoSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EGX_KITTEST_", extra="ignore")

    objects: ObjectStoreSettings = Field(default_factory=ObjectStoreSettings)  # type: ignore[arg-type]


def test_json_log_lines_carry_the_extra_fields_and_the_traceback() -> None:
    record = logging.makeLogRecord(
        {"name": "services.resultstore", "levelname": "INFO", "msg": "stored task %s", "args": ("t-1",),
         "task_id": "t-1", "rows_written": 2}
    )
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "stored task t-1" and line["level"] == "INFO"
    assert (line["task_id"], line["rows_written"]) == ("t-1", 2)
    assert "args" not in line and "msg" not in line

    try:
        raise RuntimeError("boom")
    except RuntimeError:
        failed = logging.makeLogRecord({"msg": "failed", "exc_info": sys.exc_info()})
    assert "RuntimeError: boom" in json.loads(JsonFormatter().format(failed))["exception"]


def test_environment_comes_from_the_service_prefix_then_the_deployment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EGX_S3_ACCESS_KEY", "minioadmin")
    monkeypatch.setenv("EGX_S3_SECRET_KEY", "minioadmin")
    monkeypatch.delenv("EGX_ENVIRONMENT", raising=False)
    assert DemoSettings().environment == "development"  # placeholders are fine in development

    monkeypatch.setenv("EGX_ENVIRONMENT", "production")
    with pytest.raises(ValueError, match=r"objects\.access_key, objects\.secret_key"):
        DemoSettings()
    monkeypatch.setenv("EGX_KITTEST_ENVIRONMENT", "development")  # the service's own setting wins
    assert DemoSettings().environment == "development"

    monkeypatch.setenv("EGX_KITTEST_ENVIRONMENT", "staging")
    with pytest.raises(ValueError, match="development"):
        DemoSettings()

    monkeypatch.setenv("EGX_KITTEST_ENVIRONMENT", "production")
    real = DemoSettings(objects=ObjectStoreSettings(access_key=SecretStr("egx"), secret_key=SecretStr("k3T9pWq2")))
    assert real.environment == "production"


def test_start_service_refuses_arguments_and_names_bad_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ServiceStartError, match="takes no arguments; configure it with EGX_KITTEST_"):
        start_service("kittest", ["--verbose"], DemoSettings)
    monkeypatch.setenv("EGX_KITTEST_METRICS_PORT", "not-a-port")
    with pytest.raises(ServiceStartError, match="metrics_port"):
        start_service("kittest", [], DemoSettings)


class Closing:
    def __init__(self, name: str, closed: list[str], fail: bool = False) -> None:
        self.name, self.closed, self.fail = name, closed, fail

    def close(self) -> None:
        self.closed.append(self.name)
        if self.fail:
            raise OSError(f"{self.name} would not close")


def test_consumer_service_names_its_topics_and_closes_everything_once(caplog: pytest.LogCaptureFixture) -> None:
    closed: list[str] = []
    service = ConsumerService(
        "kittest",
        [route("in.topic", SceneIngested, lambda event: None)],
        KafkaSettings(bootstrap="127.0.0.1:1"),
        output_topics=["out.topic"],
        resources=[Closing("pool", closed), Closing("client", closed, fail=True)],
    )
    assert (service.group_id, service.input_topics) == ("kittest", ["in.topic"])
    assert service.topics == ["in.topic", "out.topic", "dlq.kittest"]
    service.close()
    service.close()
    assert closed == ["client", "pool"]  # reverse order of creation; a failure does not stop the others
    assert "closing Closing failed" in caplog.text


def test_a_consumer_service_runs_with_the_heap_of_its_start_frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    """``run_consumer_service`` freezes what the start built (``gc.freeze``) before the loop runs, so that the
    collector's full passes skip the start's objects; the service's own objects are among those frozen."""
    import gc

    from earthgptx.bus import LoopStats
    from earthgptx.runtime import run_consumer_service

    monkeypatch.delenv("EGX_KITTEST_METRICS_PORT", raising=False)  # no metrics server
    seen: dict[str, object] = {}

    class Built:
        group_id, input_topics, output_topics = "kittest", ["in.topic"], ["out.topic"]
        kafka = KafkaSettings(bootstrap="127.0.0.1:1")

        def __init__(self) -> None:
            self.client = {"made": "at start"}

        def run(self) -> LoopStats:
            tracked = {id(o) for o in gc.get_objects()}
            seen["frozen"] = gc.get_freeze_count()
            seen["client tracked"] = id(self.client) in tracked
            return LoopStats()

    gc.unfreeze()
    try:
        assert run_consumer_service("kittest", [], DemoSettings, lambda settings: Built()) == 0  # type: ignore[arg-type, return-value]
    finally:
        gc.unfreeze()
    assert isinstance(seen["frozen"], int) and seen["frozen"] > 10_000  # the imports alone are tens of thousands
    assert seen["client tracked"] is False  # frozen: no longer among the objects the collector walks
