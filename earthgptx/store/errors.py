"""Errors of the stores (MinIO and PostGIS), as kinds of the bus's error model (``earthgptx.bus.errors``).

``StoreUnavailable`` is a ``DependencyUnavailable``: the server is down, overloaded or the connection broke, so
the same call may succeed later; a consumer keeps the record, pauses and retries it until the store answers.
``StoreError`` (and its subclasses) is a ``PermanentError`` for the given input: retrying will not help, and a
consumer dead-letters the record with the reason. A handler lets both propagate; it never maps them.
The two are siblings, not parent and child, so that ``except StoreError`` never swallows an outage.
"""

from __future__ import annotations

from earthgptx.bus.errors import DependencyUnavailable, PermanentError


class StoreUnavailable(DependencyUnavailable):
    """The store could not be reached or answered with a server error; retrying later may succeed."""


class StoreError(PermanentError):
    """A store call failed in a way that retrying the same call will not fix."""


class ObjectNotFound(StoreError):
    """The requested bucket or object does not exist."""


class IntegrityViolation(StoreError):
    """A write broke a database constraint (a task for an unknown scene, a result for an unknown task, ...)."""


class InvalidRecord(StoreError, ValueError):
    """A record is wrong before it reaches the store (a footprint that is not a polygon, results of another task)."""
