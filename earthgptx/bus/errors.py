"""Errors a handler raises to tell the consumer loop what to do with the record it is handling.

- ``TransientError``: the side effect could not be made *now* (Triton, PostGIS or MinIO unavailable, a timeout).
  The loop retries the same record with exponential backoff, without moving past it, up to its attempt cap.
- ``PermanentError``: the record itself is bad (invalid geometry, unknown scene...). Retrying cannot help: the
  loop sends it to the group's dead-letter topic with the reason and moves on.

Any other exception from a handler is treated as permanent (dead-lettered as "unhandled"), unless the loop was
given its class in ``ConsumerOptions.transient_exceptions``.
"""

from __future__ import annotations


class BusError(Exception):
    """Base class of the bus errors."""


class TransientError(BusError):
    """Retry later; the record is kept. ``retry_after_s`` overrides the backoff for this attempt."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class PermanentError(BusError):
    """Never retry; the record goes to the dead-letter topic."""


class PublishError(TransientError):
    """The broker did not acknowledge a record in time (or refused it for a retriable reason)."""


class EventTooLargeError(PermanentError, ValueError):
    """An event is larger than the bus accepts (events carry object keys, never images)."""
