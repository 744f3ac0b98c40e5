"""The shared settings blocks, the placeholder-secret rule and ``load_stack_env`` (no services needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import SecretStr

from earthgptx.settings import (
    DatabaseSettings,
    KafkaSettings,
    ObjectStoreSettings,
    is_placeholder,
    load_stack_env,
    placeholder_secrets,
    refuse_placeholder,
    refuse_placeholders,
)


def test_stack_env_sets_only_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "stack.env").write_text(
        "# comment\n\nEGX_TEST_ALREADY=from-file\nEGX_TEST_QUOTED='x y'\nnot a setting\nEGX_TEST_PLAIN = 7 \n"
    )
    monkeypatch.setenv("EGX_TEST_ALREADY", "from-env")
    for name in ("EGX_TEST_QUOTED", "EGX_TEST_PLAIN"):
        monkeypatch.delenv(name, raising=False)
    assert load_stack_env(tmp_path) == ["EGX_TEST_QUOTED", "EGX_TEST_PLAIN"]
    assert (os.environ["EGX_TEST_ALREADY"], os.environ["EGX_TEST_QUOTED"], os.environ["EGX_TEST_PLAIN"]) == (
        "from-env", "x y", "7",
    )
    assert load_stack_env(tmp_path) == []  # everything is set now


def test_stack_env_folder_is_argument_then_state_dir_then_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("state", "fallback"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "stack.env").write_text(f"EGX_TEST_WHICH={name}\n")
    monkeypatch.delenv("EGX_TEST_WHICH", raising=False)
    monkeypatch.delenv("EGX_STATE_DIR", raising=False)
    assert load_stack_env(fallback=tmp_path / "fallback") == ["EGX_TEST_WHICH"]
    assert os.environ["EGX_TEST_WHICH"] == "fallback"

    monkeypatch.delenv("EGX_TEST_WHICH")
    monkeypatch.setenv("EGX_STATE_DIR", str(tmp_path / "state"))
    load_stack_env(fallback=tmp_path / "fallback")
    assert os.environ["EGX_TEST_WHICH"] == "state"

    monkeypatch.delenv("EGX_TEST_WHICH")
    assert load_stack_env(tmp_path / "missing") == []  # no file: deployed services get their environment elsewhere
    assert "EGX_TEST_WHICH" not in os.environ


@pytest.mark.parametrize(
    ("value", "placeholder"),
    [
        ("changeme", True),
        (" MinioAdmin ", True),
        ("", True),
        ("k3T9pWq2vX", False),
        ("postgresql+psycopg2://earthgptx:password@db:5432/earthgptx", True),
        ("postgresql+psycopg2://earthgptx:chang%65me@db/earthgptx", True),  # percent-encoded "changeme"
        ("postgresql+psycopg2://earthgptx:@db/earthgptx", True),
        ("postgresql+psycopg2://earthgptx:Xq7vR2mLp9@db/earthgptx", False),
        ("postgresql+psycopg2://earthgptx@db/earthgptx", False),  # no password in the URL (peer or .pgpass)
    ],
)
def test_placeholders_are_recognised_in_plain_secrets_and_url_passwords(value: str, placeholder: bool) -> None:
    assert is_placeholder(SecretStr(value)) is placeholder


def test_placeholders_are_refused_outside_development_only() -> None:
    refuse_placeholder("EGX_S3_SECRET_KEY", SecretStr("minioadmin"), "development")
    with pytest.raises(ValueError, match="EGX_S3_SECRET_KEY is a placeholder secret") as raised:
        refuse_placeholder("EGX_S3_SECRET_KEY", SecretStr("minioadmin"), "production")
    assert "minioadmin" not in str(raised.value)


def test_every_placeholder_of_composed_blocks_is_named() -> None:
    objects = ObjectStoreSettings(access_key=SecretStr("egx"), secret_key=SecretStr("secret"))
    database = DatabaseSettings(url=SecretStr("postgresql://u:password@db/egx"))
    assert placeholder_secrets(objects) == ["secret_key"]
    assert placeholder_secrets(database, "database.") == ["database.url"]
    assert placeholder_secrets(KafkaSettings()) == []
    refuse_placeholders(objects, "development")
    with pytest.raises(ValueError, match=r"placeholder secret\(s\) secret_key: set real ones for environment 'production'"):
        refuse_placeholders(objects, "production")


def test_kafka_settings_validate_counts() -> None:
    with pytest.raises(ValueError, match="at least 1, got 0"):
        KafkaSettings(partitions=0)
