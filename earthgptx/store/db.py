"""Engine and session factory for PostgreSQL + PostGIS, built from ``DatabaseSettings`` (``EGX_DB_*``)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from earthgptx.settings import DatabaseSettings


def database_url(settings: DatabaseSettings | None = None) -> str:
    """The SQLAlchemy URL (with its password): hand it to SQLAlchemy, never to a log line."""
    return (settings or DatabaseSettings()).url.get_secret_value()  # type: ignore[call-arg]


class EncodedJson(str):
    """JSON text encoded ahead of a write (``encode_json``); ``dump_json`` hands it to the driver as it is."""

    __slots__ = ()


def encode_json(value: Any) -> EncodedJson:
    """A JSON column's value, encoded now (e.g. on a preparing thread) rather than when the statement runs."""
    return EncodedJson(json.dumps(value))


def dump_json(value: Any) -> str:
    """The engines' JSON serialiser: ``json.dumps``, except for text ``encode_json`` made already."""
    return value if isinstance(value, EncodedJson) else json.dumps(value)


def make_engine(
    settings: DatabaseSettings | None = None, *, url: str | None = None, **options: Any
) -> Engine:
    """An engine for the configured database, or for ``url`` (tests use throwaway databases).

    ``pool_pre_ping`` replaces connections the server dropped (restart, idle timeout) instead of failing
    the next event; ``hide_parameters`` keeps bound values (geometries by the thousand, key hashes) out of
    exception messages and logs. JSON columns are encoded by ``dump_json``, which passes ``encode_json``'s text
    through (``Repository.plan_results`` encodes ahead of the write).
    """
    settings = settings if settings is not None or url is not None else DatabaseSettings()  # type: ignore[call-arg]
    kwargs: dict[str, Any] = {
        "pool_pre_ping": True,
        "hide_parameters": True,
        "pool_size": settings.pool_size if settings is not None else 5,
        "connect_args": {"connect_timeout": 5, "application_name": "earthgptx"},
        "json_serializer": dump_json,
    }
    kwargs.update(options)
    if "poolclass" in options:
        kwargs.pop("pool_size")  # only queue pools take a size
    return create_engine(url or database_url(settings), **kwargs)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose loaded objects stay readable after commit (reads hand them to callers)."""
    return sessionmaker(engine, expire_on_commit=False)
