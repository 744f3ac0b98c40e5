"""Alembic migrations of the PostGIS schema; run them with ``python -m earthgptx.store.migrate``."""
