"""Alembic environment: the database comes from the caller or from ``DatabaseSettings`` (``EGX_DB_URL``).

``earthgptx.store.migrate`` builds the Alembic config in code (no alembic.ini to find), so migrations run from
any working directory. A caller may hand over an open connection (``config.attributes["connection"]``) or a
URL (``config.attributes["url"]``); the URL is never put into the config file options, where it could be
interpolated or echoed.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import Connection, pool

from earthgptx.store.db import database_url, make_engine
from earthgptx.store.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.attributes.get("url")
    return str(url) if url else database_url()


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Leave tables this schema does not define alone (PostGIS's ``spatial_ref_sys``, topology, tiger)."""
    if type_ == "table" and reflected and compare_to is None:
        return False
    return True


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        include_object=include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    """Emit the SQL instead of running it (``migrate upgrade head --sql``)."""
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        return
    engine = make_engine(url=_url(), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            _configure(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
