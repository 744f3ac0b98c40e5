"""Helpers shared by the tests and the benchmarks, one copy each: ``kits.broker`` (Kafka), ``kits.databases``
(throwaway PostGIS databases), ``kits.objects`` (throwaway MinIO buckets).

Tests import them as ``from kits.broker import read_topic`` (pytest puts ``tests/`` on ``sys.path``); benchmarks
and helper processes put ``tests/`` on ``sys.path`` themselves. The servers of the local stack are shared with
other engineers' runs, so every topic, group, database and bucket made here has a unique name and is removed.
"""


class StackNotReady(RuntimeError):
    """A service of the local stack is missing or unusable; the message says which and how to start it."""
