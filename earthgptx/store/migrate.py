"""Run the schema migrations: ``python -m earthgptx.store.migrate upgrade head`` (from any directory).

The Alembic configuration is built in code from the packaged ``migrations`` folder, and the database URL comes
from ``EGX_DB_URL`` (``DatabaseSettings``) unless ``--url`` or a ``url=`` argument names another one.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, pool

from earthgptx.store.db import database_url, make_engine

MIGRATIONS_DIR = Path(__file__).resolve().with_name("migrations")


def alembic_config(url: str | None = None, connection: Connection | None = None) -> Config:
    """An Alembic ``Config`` for this package's migrations, bound to ``connection`` or ``url`` if given."""
    config = Config()
    # configparser interpolates '%' in option values
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if url is not None:
        config.attributes["url"] = url
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(revision: str = "head", *, url: str | None = None) -> None:
    """Migrate the database up to ``revision``."""
    command.upgrade(alembic_config(url), revision)


def downgrade(revision: str = "base", *, url: str | None = None) -> None:
    """Migrate the database down to ``revision`` (``base`` drops everything the migrations created)."""
    command.downgrade(alembic_config(url), revision)


def current_revision(url: str | None = None) -> str | None:
    """The revision the database is at, or None for a database without the schema."""
    engine = make_engine(url=url or database_url(), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m earthgptx.store.migrate", description=__doc__)
    parser.add_argument("--url", help="database URL (default: EGX_DB_URL)")
    sub = parser.add_subparsers(dest="action", required=True)
    up = sub.add_parser("upgrade", help="migrate up (default: head)")
    up.add_argument("revision", nargs="?", default="head")
    up.add_argument("--sql", action="store_true", help="print the SQL instead of running it")
    down = sub.add_parser("downgrade", help="migrate down (e.g. base, -1)")
    down.add_argument("revision")
    down.add_argument("--sql", action="store_true", help="print the SQL instead of running it")
    sub.add_parser("current", help="print the database's revision")
    sub.add_parser("history", help="list the revisions")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = alembic_config(args.url)
    if args.action == "upgrade":
        command.upgrade(config, args.revision, sql=args.sql)
    elif args.action == "downgrade":
        command.downgrade(config, args.revision, sql=args.sql)
    elif args.action == "current":
        sys.stdout.write(f"{current_revision(args.url) or 'base'}\n")
    elif args.action == "history":
        command.history(config)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
