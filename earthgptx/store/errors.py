"""Errors of the stores (MinIO and PostGIS), split by what a caller should do about them.

``StoreUnavailable`` is transient: the server is down, overloaded or the connection broke, so the same call may
succeed later and an event consumer should retry with backoff instead of dead-lettering the message.
``StoreError`` (and its subclasses) is permanent for the given input: retrying the same call will not help.
The two are deliberately siblings, not parent and child, so that ``except StoreError`` never swallows an outage.

They live here, not in ``earthgptx.bus.errors``, so that the stores do not depend on the bus; the lead plans to
unify them (``StoreUnavailable`` becoming a kind of the bus's transient error) without changing these names.
Both carry a class attribute ``transient`` for code that maps exceptions generically.
"""

from __future__ import annotations


class StoreUnavailable(Exception):
    """The store could not be reached or answered with a server error; retrying later may succeed."""

    transient = True


class StoreError(Exception):
    """A store call failed in a way that retrying the same call will not fix."""

    transient = False


class ObjectNotFound(StoreError):
    """The requested bucket or object does not exist."""


class IntegrityViolation(StoreError):
    """A write broke a database constraint (a task for an unknown scene, a result for an unknown task, ...)."""
