"""Engine and session factory for PostgreSQL + PostGIS, built from ``DatabaseSettings`` (``EGX_DB_*``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from earthgptx.settings import DatabaseSettings


def database_url(settings: DatabaseSettings | None = None) -> str:
    """The SQLAlchemy URL (with its password): hand it to SQLAlchemy, never to a log line."""
    return (settings or DatabaseSettings()).url.get_secret_value()  # type: ignore[call-arg]


def make_engine(
    settings: DatabaseSettings | None = None, *, url: str | None = None, **options: Any
) -> Engine:
    """An engine for the configured database, or for ``url`` (tests use throwaway databases).

    ``pool_pre_ping`` replaces connections the server dropped (restart, idle timeout) instead of failing
    the next event; ``hide_parameters`` keeps bound values (geometries by the thousand, key hashes) out of
    exception messages and logs.
    """
    settings = settings if settings is not None or url is not None else DatabaseSettings()  # type: ignore[call-arg]
    kwargs: dict[str, Any] = {
        "pool_pre_ping": True,
        "hide_parameters": True,
        "pool_size": settings.pool_size if settings is not None else 5,
        "connect_args": {"connect_timeout": 5, "application_name": "earthgptx"},
    }
    kwargs.update(options)
    if "poolclass" in options:
        kwargs.pop("pool_size")  # only queue pools take a size
    return create_engine(url or database_url(settings), **kwargs)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose loaded objects stay readable after commit (reads hand them to callers)."""
    return sessionmaker(engine, expire_on_commit=False)
