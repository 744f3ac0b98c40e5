"""The resultstore process wiring that needs no broker: its settings and argument handling."""

from __future__ import annotations

import pytest

from services.resultstore.main import main
from services.resultstore.settings import Settings


def test_settings_prefix_and_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EGX_RESULTSTORE_GROUP_ID", "rs-test")
    monkeypatch.setenv("EGX_RESULTSTORE_OUTPUT_TOPIC", "out.topic")
    monkeypatch.setenv("EGX_DB_URL", "postgresql+psycopg2://u:p@h/db")
    settings = Settings()
    assert (settings.group_id, settings.output_topic, settings.input_topic) == ("rs-test", "out.topic", "inference.results")
    assert settings.database.url.get_secret_value().endswith("/db")
    monkeypatch.setenv("EGX_RESULTSTORE_MAX_ATTEMPTS", "0")
    with pytest.raises(ValueError, match="at least 1"):
        Settings()


def test_production_refuses_a_placeholder_database_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EGX_DB_URL", "postgresql+psycopg2://earthgptx:changeme@db/earthgptx")
    monkeypatch.setenv("EGX_RESULTSTORE_ENVIRONMENT", "production")
    with pytest.raises(ValueError, match=r"database\.url"):
        Settings()
    monkeypatch.setenv("EGX_DB_URL", "postgresql+psycopg2://earthgptx:Xq7vR2mLp9@db/earthgptx")
    assert Settings().environment == "production"


def test_main_refuses_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 2
    assert "EGX_RESULTSTORE_" in capsys.readouterr().err


def test_main_refuses_to_start_in_production_with_a_placeholder_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EGX_ENVIRONMENT", "production")
    monkeypatch.setenv("EGX_DB_URL", "postgresql+psycopg2://earthgptx:password@db/earthgptx")
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "placeholder secret" in err and "database.url" in err and "password@" not in err
