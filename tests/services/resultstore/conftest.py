"""Fixtures of the resultstore service tests (``tests/services/resultstore/test_resultstore_*.py``).

Shared fixtures (``migrated_db_url``, ``kafka_settings``, ``kafka_cleanup``, ``object_store``, ``unique_name``) come
from ``tests/conftest.py``; Kafka, database and object-store helpers from ``tests/kits/``.
"""
