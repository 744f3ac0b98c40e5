"""The platform's one error model: what a handler raises tells the consumer loop what to do with its record.

- ``PermanentError``: the record itself is bad (invalid geometry, unknown scene...). Retrying cannot help: the
  loop sends it to the group's dead-letter topic with the reason and moves on.
- ``TransientError``: this attempt failed but the same record may succeed later (a lock timeout, a request the
  server shed). The loop retries it in place with exponential backoff, up to ``ConsumerOptions.max_attempts``.
- ``DependencyUnavailable`` (a ``TransientError``): a dependency (PostGIS, MinIO, Triton, the broker) does not
  answer. Nothing is wrong with the record, so it is never dead-lettered for that: the loop keeps it, pauses,
  reports not-ready, and retries without an attempt limit until the dependency answers.

The library's own errors are kinds of these: ``earthgptx.store.errors.StoreUnavailable`` is a
``DependencyUnavailable`` and ``StoreError`` a ``PermanentError``; ``PublishError`` (broker did not acknowledge)
is a ``DependencyUnavailable``; ``EventTooLargeError`` (refused as too large) is permanent. A handler therefore
never translates library errors: it lets them propagate, or raises one of these itself.

Any other exception from a handler is treated as permanent (dead-lettered as "unhandled", with its traceback
logged), unless the loop was given its class in ``ConsumerOptions.transient_exceptions``. Each class carries a
``transient`` attribute for code outside the loop that needs the same decision.
"""

from __future__ import annotations


class BusError(Exception):
    """Base class of the bus errors."""

    transient = False


class TransientError(BusError):
    """Retry later; the record is kept. ``retry_after_s`` overrides the backoff for this attempt."""

    transient = True

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DependencyUnavailable(TransientError):
    """A dependency does not answer: retried without limit while the consumer reports not-ready."""


class PermanentError(BusError):
    """Never retry; the record goes to the dead-letter topic."""


class PublishError(DependencyUnavailable):
    """The broker did not acknowledge a record in time (or refused it for a retriable reason)."""


class EventTooLargeError(PermanentError, ValueError):
    """An event is larger than the bus (or the topic) accepts; events carry object keys, never images."""
