"""The consumer loop: poll -> decode once -> typed handler -> commit, at least once.

Threads. kafka-python's consumer is driven from one thread (the loop's ``run``); handlers run on a single worker
thread, in partition order. When the worker takes longer than ``liveness_poll_s`` over a batch, every assigned
partition is paused and ``run`` keeps calling ``poll`` every ``liveness_poll_s`` until it is done: the consumer
stays in its group however long a handler takes (``max_poll_interval_ms`` is measured between polls), and no
records arrive meanwhile.

Routes. ``route(topic, cls, handler)`` hands the handler one record at a time. ``batch_route(topic, cls,
handler)`` hands it every record of one poll for that topic (across partitions, each partition in offset order),
so that it can write them in one transaction and flush its producer once; it returns the records it rejects (by
index) with their ``PermanentError``. When a batch handler raises a permanent error or exhausts its retries, the
batch is split into single records and each is handled alone, so that one bad record never takes others with it.

Pipelined mode. ``staged_batch_route(topic, cls, prepare, write)`` splits a batch handler in two: ``prepare``
(validation, conversion: CPU work that touches no shared state) returns what ``write`` (the database transaction,
the producer flush) then stores; ``write`` returns the rejected records like a batch handler. With
``ConsumerOptions(pipeline=True)`` the loop overlaps them: while poll N is in ``write`` on the worker thread (a
database call that waits without the GIL), poll N+1 is fetched by ``run`` and decoded and prepared on a second
thread. Offsets of poll N are committed only once its ``write`` returned (events acknowledged), and poll N+1 is
written only after that returned (the commit itself runs while poll N+1 is written), so partition order and
at-least-once hold as in the sequential mode. A ``prepare`` that raises counts as the first failed attempt of its batch; every retry and the one-by-one split after a permanent
failure call ``prepare`` and ``write`` again. On ``stop()`` or a rebalance while a prepared poll waits, it is
dropped uncommitted and fetched again (its records are delivered again; handlers are idempotent). Outages behave
as in the sequential mode (the prepared poll waits, partitions are paused, membership is kept).

    loop = ConsumerLoop("resultstore", [staged_batch_route(INFERENCE_RESULTS, InferenceResult, h.prepare_results,
                                                           h.write_results)], settings, ConsumerOptions(pipeline=True))

Concurrent mode. ``ConsumerOptions(concurrency=N)`` with N > 1 keeps up to N records in flight on N worker
threads (for a service whose handler waits on a server, e.g. inference keeping Triton's dynamic batcher fed).
Records of one partition may then finish out of order; each partition's offset is committed only up to its first
record not yet done, so a crash while some are in flight redelivers them (and any finished after them) and loses
nothing. Retries, outages and dead letters work per record exactly as in the sequential mode. While N records are
in flight, the partitions are paused and ``run`` keeps polling (membership kept). Single-record routes only.

    loop = ConsumerLoop("inference", [route(PROMPTS_TASKS, PromptTask, on_prompt_task)], settings,
                        ConsumerOptions(concurrency=16))

Acknowledgement policy. The offset after a record is committed only once the record is done: its handler
returned, or its dead letter was acknowledged by the broker (acks=all). Commits are made from ``run`` at the end of
every batch and, during a long batch, before each liveness poll (rebalances happen inside ``poll``, so progress is
committed before partitions can move). A record whose handler is interrupted (SIGTERM during a retry backoff,
partition revoked) is not committed and will be delivered again: handlers must be idempotent.

Failures (the error model of ``earthgptx.bus.errors``):
- ``DependencyUnavailable`` (PostGIS, MinIO, Triton or the broker does not answer; ``StoreUnavailable`` and
  ``PublishError`` are kinds of it): an outage, not a fault of the record. The record is kept and retried in place
  without an attempt limit (backoff up to ``outage_backoff_max_s``); partitions stay paused while the loop keeps
  polling, so the consumer keeps its group membership; ``ready`` turns false (and ``on_readiness`` is called)
  until the dependency answers again. A valid record is never dead-lettered because of an outage.
- ``TransientError`` (and the classes in ``ConsumerOptions.transient_exceptions``): retried in place with an
  exponential backoff up to ``max_attempts``; then dead-lettered as ``RETRIES_EXHAUSTED``.
- ``PermanentError`` (``StoreError``, ``EventTooLargeError``...), any other exception, and records that cannot be
  decoded (not protobuf, no header, unknown schema version, another message type, empty, larger than
  ``max_event_bytes``) go to ``dlq.<group>`` with the reason, the original topic/partition/offset/key and the
  attempt count, and the loop moves on to the next record.
- A dead letter the broker does not acknowledge is retried until it is (the record is not committed before); one
  refused as too large is sent again without its payload. Nothing a handler or the broker does ends ``run``
  with an exception: a service never crash-loops on a record.

Topics are not created here: the service's lifecycle creates ``loop.topics`` once at start (the broker does not
auto-create them).

Shutdown. ``stop()`` (or SIGTERM/SIGINT when ``run`` installs its handlers) lets the record in the handler finish,
commits, leaves the group and closes; records not yet handled stay uncommitted for the next consumer.
"""

from __future__ import annotations

import concurrent.futures
import enum
import itertools
import logging
import random
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message
from kafka import KafkaConsumer
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from earthgptx.bus import metrics
from earthgptx.bus.dead_letter import (
    CAUSE_OF_DECODE_FAILURE,
    ClaimStore,
    build_dead_letter,
    cause_label,
    declared_event_type,
    record_size,
    stripped,
)
from earthgptx.bus.errors import DependencyUnavailable, EventTooLargeError, PermanentError, TransientError
from earthgptx.bus.producer import EventProducer
from earthgptx.bus.topics import dead_letter_topic
from earthgptx.events import DecodeFailure, EventDecodeError, decode_event, event_type_name
from earthgptx.settings import KafkaSettings
from earthgptx.v1.events_pb2 import DeadLetterCause

log = logging.getLogger(__name__)

E = TypeVar("E", bound=Message)


BatchHandler = Callable[[Sequence[E]], Mapping[int, PermanentError] | None]
"""Handles the records of one poll; returns the ones it rejects, by index, with the reason (or None)."""

Prepare = Callable[[Sequence[E]], Any]
"""The first stage of a staged batch handler: what the ``write`` stage stores (it must not write anything shared)."""

Write = Callable[[Any], Mapping[int, PermanentError] | None]
"""The second stage: stores what ``prepare`` made; returns the rejected records by index (of the poll's events)."""


@dataclass(frozen=True)
class Route(Generic[E]):
    """A topic, the message class it carries, and its handler: of one record, or of a batch (``batch_route``)."""

    topic: str
    message_class: type[E]
    handler: Callable[[E], None] | None = None
    batch_handler: BatchHandler[E] | None = None
    # For topics that outside systems write (e.g. MinIO's bucket notifications, JSON): turns the record's value
    # into ``message_class`` at the edge, raising ``EventDecodeError`` when it cannot. None: the platform's protobuf.
    decode: Callable[[bytes | None], E] | None = None
    # A staged batch route (``staged_batch_route``): batch_handler is write(prepare(events)).
    prepare: Prepare[E] | None = None
    write: Write | None = None

    def __post_init__(self) -> None:
        if (self.handler is None) == (self.batch_handler is None):
            raise ValueError(f"route {self.topic}: give exactly one of handler and batch_handler")
        if (self.prepare is None) != (self.write is None) or (self.prepare is not None and self.batch_handler is None):
            raise ValueError(f"route {self.topic}: a staged route has both prepare and write, and a batch handler")

    @property
    def staged(self) -> bool:
        return self.prepare is not None


def route(
    topic: str,
    message_class: type[E],
    handler: Callable[[E], None],
    *,
    decode: Callable[[bytes | None], E] | None = None,
) -> Route[E]:
    """``Route`` with the handler's argument type checked against the message class (by mypy)."""
    return Route(topic, message_class, handler=handler, decode=decode)


def batch_route(topic: str, message_class: type[E], handler: BatchHandler[E]) -> Route[E]:
    """A route whose handler takes all of one poll's records of ``topic`` at once (see the module docstring)."""
    return Route(topic, message_class, batch_handler=handler)


def staged_batch_route(topic: str, message_class: type[E], prepare: Prepare[E], write: Write) -> Route[E]:
    """A batch route in two stages, ``write(prepare(events))``, that the pipelined mode overlaps across polls."""

    def handler(events: Sequence[E]) -> Mapping[int, PermanentError] | None:
        return write(prepare(events))

    return Route(topic, message_class, batch_handler=handler, prepare=prepare, write=write)


@dataclass(frozen=True)
class ConsumerOptions:
    """How the loop polls, retries, dead-letters and commits."""

    # Attempts per record for transient errors (None: retry forever); then the record is dead-lettered.
    # Outages (DependencyUnavailable) do not count: they are retried until the dependency answers.
    max_attempts: int | None = 8
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    # Cap of the backoff while a dependency is down: how long a recovered dependency may wait to be noticed.
    outage_backoff_max_s: float = 2.0
    backoff_multiplier: float = 2.0
    # Fraction of each backoff that is randomised, so that consumers do not retry in lockstep.
    backoff_jitter: float = 0.2
    # Records larger than this are dead-lettered without decoding (None: KafkaSettings.max_message_bytes).
    max_event_bytes: int | None = None
    # Payloads up to this size are copied whole into their dead letter; larger ones are truncated or claimed.
    dead_letter_payload_bytes: int = 64 * 1024
    dead_letter_preview_bytes: int = 4096
    # Exceptions besides TransientError that mean "try again later" (e.g. a database driver's OperationalError).
    transient_exceptions: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)
    poll_timeout_ms: int = 500
    max_poll_records: int = 500
    # Records in flight at once (1: one at a time, in partition order; N > 1: the concurrent mode).
    concurrency: int = 1
    # Prepare poll N+1 (staged batch routes) while poll N is written (the pipelined mode; module docstring).
    pipeline: bool = False
    # How often the loop polls while a handler runs; capped at a quarter of max_poll_interval_ms.
    liveness_poll_s: float = 0.5
    # How long to wait at start for the routed topics to appear in the broker's metadata.
    topic_wait_s: float = 30.0
    # Passed to KafkaConsumer as they are (session_timeout_ms, max_poll_interval_ms, auto_offset_reset...).
    consumer_overrides: Mapping[str, Any] = field(default_factory=dict)

    def backoff_s(self, attempt: int, *, outage: bool = False) -> float:
        """Delay before retry number ``attempt`` (1 = the first retry); capped lower during an outage."""
        cap = min(self.backoff_max_s, self.outage_backoff_max_s) if outage else self.backoff_max_s
        delay = min(cap, self.backoff_initial_s * self.backoff_multiplier ** (min(attempt, 64) - 1))
        return delay * (1.0 - self.backoff_jitter * random.random())


# Time given to each poll made while a handler runs (partitions paused, so it only serves the group protocol).
LIVENESS_POLL_MS = 100

CONSUMER_DEFAULTS: Mapping[str, Any] = {
    "enable_auto_commit": False,
    # A new group starts at the beginning: scenes published before the first deployment are not skipped.
    "auto_offset_reset": "earliest",
    "session_timeout_ms": 10_000,
    "heartbeat_interval_ms": 2_000,
    "max_poll_interval_ms": 300_000,
    "allow_auto_create_topics": False,
    # kafka-python's default climbs to 30 s between reconnects: a broker restart would cost half a minute.
    "reconnect_backoff_ms": 50,
    "reconnect_backoff_max_ms": 1000,
}


def consumer_config(
    settings: KafkaSettings, group_id: str, client_id: str, options: ConsumerOptions
) -> dict[str, Any]:
    """The kafka-python ``KafkaConsumer`` configuration used by the loop (also used by the benchmark baseline)."""
    max_event_bytes = options.max_event_bytes or settings.max_message_bytes
    config: dict[str, Any] = {
        **CONSUMER_DEFAULTS,
        "bootstrap_servers": settings.bootstrap.split(","),
        "group_id": group_id,
        "client_id": client_id,
        "max_poll_records": options.max_poll_records,
        # Fetch whole oversized records so that they can be dead-lettered instead of blocking the partition.
        "max_partition_fetch_bytes": max(1_048_576, settings.max_message_bytes + 64 * 1024, max_event_bytes),
    }
    config.update(options.consumer_overrides)
    return config


@dataclass
class LoopStats:
    """Counts of one loop's life (the Prometheus metrics aggregate over all loops of the process)."""

    processed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    abandoned: int = 0
    outage_retries: int = 0
    batches: int = 0
    commits: int = 0
    assignments: int = 0
    revocations: int = 0


class _Listener(ConsumerRebalanceListener):
    """Runs on kafka-python's IO thread: only records what happened; ``run`` acts on it after ``poll``."""

    def __init__(self, loop: ConsumerLoop) -> None:
        self._loop = loop

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if revoked and not self._loop._closing:
            self._loop.stats.revocations += 1
            self._loop._rebalanced = True
            self._loop._rebalance_metric.inc()
            log.info("group %s: partitions revoked %s", self._loop.group_id, sorted(revoked))

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._loop.stats.assignments += 1
        self._loop._rebalanced = True
        log.info("group %s: partitions assigned %s", self._loop.group_id, sorted(assigned))


class ConsumerLoop:
    """One consumer group member: subscribes to the routes' topics and runs their handlers.

    >>> loop = ConsumerLoop("promptgen", [route(SCENES_INGESTED, SceneIngested, on_scene_ingested)])
    >>> loop.run()   # until SIGTERM / SIGINT / loop.stop()
    """

    def __init__(
        self,
        group_id: str,
        routes: Sequence[Route[Any]],
        settings: KafkaSettings | None = None,
        options: ConsumerOptions | None = None,
        *,
        client_id: str | None = None,
        dead_letter_producer: EventProducer | None = None,
        claim_store: ClaimStore | None = None,
        on_readiness: Callable[[bool], None] | None = None,
    ) -> None:
        if not routes:
            raise ValueError("a consumer loop needs at least one route")
        topics = [r.topic for r in routes]
        if len(set(topics)) != len(topics):
            raise ValueError(f"each topic may have one route only, got {topics}")
        if options is not None and options.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {options.concurrency}")
        if options is not None and options.pipeline and options.concurrency > 1:
            raise ValueError("the pipelined mode and the concurrent mode exclude each other")
        if options is not None and options.concurrency > 1 and any(r.batch_handler is not None for r in routes):
            raise ValueError("the concurrent mode takes single-record routes only (a batch route handles a poll)")
        self.group_id = group_id
        self.routes: dict[str, Route[Any]] = {r.topic: r for r in routes}
        self.settings = settings or KafkaSettings()
        self.options = options or ConsumerOptions()
        self.client_id = client_id or f"egx-{group_id}"
        self.dead_letter_topic = dead_letter_topic(group_id)
        self.stats = LoopStats()
        self._claim_store = claim_store
        self._dead_letter_producer = dead_letter_producer
        self._owns_producer = dead_letter_producer is None
        self._max_event_bytes = self.options.max_event_bytes or self.settings.max_message_bytes
        self._expected = {t: event_type_name(r.message_class) for t, r in self.routes.items()}
        self._stop = threading.Event()
        # Wakes a retry backoff early: on stop, and when the partition of the waiting record is lost. Re-entrant
        # because stop() also runs from a signal handler, which may interrupt the run thread inside the lock.
        self._wakeup = threading.Condition(threading.RLock())
        self._lost: set[TopicPartition] = set()
        # Partitions of the batch in the worker's hands, and whether the group rebalanced while it worked.
        self._active: set[TopicPartition] = set()
        self._rebalanced_in_batch = False
        self._progress: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._rebalanced = False
        self._closing = False
        self._started = False
        self._consumer: KafkaConsumer | None = None
        self._metrics = {
            t: (
                metrics.RECORDS_PROCESSED.labels(group_id, t),
                metrics.RECORDS_RETRIED.labels(group_id, t),
                metrics.HANDLER_SECONDS.labels(group_id, t),
            )
            for t in self.routes
        }
        self._rebalance_metric = metrics.REBALANCES.labels(group_id)
        self._ready = True
        self._stats_lock = threading.Lock()
        self._in_flight = _InFlight()
        self.not_ready_reason = ""
        self._on_readiness = on_readiness
        self._ready_metric = metrics.CONSUMER_READY.labels(group_id)
        self._ready_metric.set(1)

    # -- public API -----------------------------------------------------------------------------------------

    @property
    def topics(self) -> list[str]:
        """The topics this loop needs: its routed topics and its dead-letter topic (the lifecycle creates them)."""
        return [*self.routes, self.dead_letter_topic]

    @property
    def ready(self) -> bool:
        """False while a dependency is unavailable (records wait, nothing is dead-lettered for it); a health
        endpoint reports it as not-ready. ``not_ready_reason`` says which dependency and why."""
        return self._ready

    def stop(self) -> None:
        """Ask the loop to finish the record in hand, commit and return from ``run`` (thread-safe)."""
        if not self._stop.is_set():
            log.info("group %s: stop requested; finishing in-flight work", self.group_id)
        with self._wakeup:
            self._stop.set()
            self._wakeup.notify_all()

    def install_signal_handlers(self) -> dict[int, Any]:
        """SIGTERM/SIGINT -> ``stop()``. A second signal gets the previous (default) behaviour.

        Returns the previous handlers (``run`` puts them back when it returns).
        """
        previous: dict[int, Any] = {}

        def _on_signal(signum: int, frame: FrameType | None) -> None:
            log.info("group %s: received %s", self.group_id, signal.Signals(signum).name)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, _on_signal)
        return dict(previous)

    def run(self, *, stop_when: Callable[[], bool] | None = None, handle_signals: bool | None = None) -> LoopStats:
        """Consume until ``stop()``, a signal, or ``stop_when()`` returns true (checked between polls).

        A loop runs once; build a new one to consume again.
        """
        if self._started:
            raise RuntimeError("this ConsumerLoop has already run; build a new one")
        self._started = True
        if handle_signals is None:
            handle_signals = threading.current_thread() is threading.main_thread()
        previous_handlers = self.install_signal_handlers() if handle_signals else {}
        worker: concurrent.futures.ThreadPoolExecutor | None = None
        try:
            if self._dead_letter_producer is None:
                self._dead_letter_producer = EventProducer(
                    self.settings, client_id=f"{self.client_id}-dlq", producer_name=f"consumer:{self.group_id}"
                )
            config = consumer_config(self.settings, self.group_id, self.client_id, self.options)
            self._consumer = consumer = KafkaConsumer(**config)
            liveness_s = min(self.options.liveness_poll_s, config["max_poll_interval_ms"] / 1000 / 4)
            consumer.subscribe(list(self.routes), listener=_Listener(self))
            self._wait_for_topic_metadata(consumer)
            worker = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.options.concurrency, thread_name_prefix=f"egx-{self.group_id}"
            )
            log.info("group %s: consuming %s (dead letters to %s)%s",
                     self.group_id, list(self.routes), self.dead_letter_topic,
                     f", up to {self.options.concurrency} records in flight" if self.options.concurrency > 1 else "")
            if self.options.concurrency > 1:
                self._run_concurrent(worker, stop_when)
                return self.stats
            if self.options.pipeline:
                self._run_pipelined(worker, stop_when, liveness_s)
                return self.stats
            carry: dict[TopicPartition, list[Any]] = {}
            while not self._stop.is_set() and not (stop_when is not None and stop_when()):
                records = carry or consumer.poll(timeout_ms=self.options.poll_timeout_ms)
                carry = {}
                self._after_poll()
                self._forget_lost()
                if records:
                    carry = self._run_batch(worker, records, liveness_s)
        finally:
            self._closing = True
            if worker is not None:
                worker.shutdown(wait=True)
            if self._consumer is not None:
                self._advance_in_flight()
                self._commit()
                self._consumer.close(autocommit=False)
            if self._owns_producer and self._dead_letter_producer is not None:
                self._dead_letter_producer.close()
                self._dead_letter_producer = None
            for sig, handler in previous_handlers.items():
                signal.signal(sig, handler)
            log.info("group %s: closed (%s)", self.group_id, self.stats)
        return self.stats

    # -- the run thread -------------------------------------------------------------------------------------

    def _wait_for_topic_metadata(self, consumer: KafkaConsumer) -> None:
        """Refresh metadata after subscribing and before the first join, until every routed topic is known.

        The group leader assigns from its metadata cache and compares that assignment with later metadata: a
        topic missing from the cache at the first join (just created, not fetched yet) gets no partitions, and
        the metadata arriving afterwards forces a second rebalance. A topic that does not exist at all is an
        error here, rather than a consumer that silently reads nothing (the broker does not auto-create).
        """
        deadline = time.monotonic() + self.options.topic_wait_s
        while True:
            missing = [t for t in self.routes if t not in consumer.topics()]
            if not missing:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"topics {missing} do not exist on {self.settings.bootstrap}; create them first")
            time.sleep(0.2)

    def _run_batch(
        self,
        worker: concurrent.futures.ThreadPoolExecutor,
        records: dict[TopicPartition, list[Any]],
        liveness_s: float,
    ) -> dict[TopicPartition, list[Any]]:
        """Hand one poll's records to the worker and keep the membership alive until it is done.

        Returns records that a liveness poll brought in (only possible for partitions assigned mid-batch).
        """
        consumer = self._consumer
        assert consumer is not None
        self.stats.batches += 1
        self._active = set(records)
        self._rebalanced_in_batch = False
        future = worker.submit(self._process_batch, records)
        carry = self._await(future, liveness_s)
        self._commit()
        if self._rebalanced_in_batch:
            self._restore_positions(records)
        self._active = set()
        if consumer.paused():
            consumer.resume(*consumer.paused())
        return carry

    def _await(self, future: concurrent.futures.Future[Any], liveness_s: float) -> dict[TopicPartition, list[Any]]:
        """Wait for a worker's ``future``, polling every ``liveness_s`` (partitions paused) to keep the membership.

        Returns the records a liveness poll brought in (only possible for partitions assigned meanwhile).
        """
        consumer = self._consumer
        assert consumer is not None
        carry: dict[TopicPartition, list[Any]] = {}
        while True:
            try:
                future.result(timeout=liveness_s)
                return carry
            except concurrent.futures.TimeoutError:
                pass
            # Paused only once a batch turns out slow: pausing drops what the fetcher has prefetched for the
            # partitions, which would cost a fetch round trip per batch on the fast path.
            consumer.pause(*consumer.assignment())
            self._commit()
            # Not 0: a rebalance needs a few round trips inside poll (join, then sync) to complete.
            extra = consumer.poll(timeout_ms=LIVENESS_POLL_MS)
            self._after_poll()
            for tp, recs in extra.items():
                carry.setdefault(tp, []).extend(recs)

    def _run_pipelined(
        self,
        worker: concurrent.futures.ThreadPoolExecutor,
        stop_when: Callable[[], bool] | None,
        liveness_s: float,
    ) -> None:
        """The pipelined mode's poll loop (module docstring): poll N+1 and prepare it while poll N is written.

        The run thread polls and commits; the worker thread writes (one poll at a time, in poll order); a second
        thread decodes and prepares. Poll N+1 is handed to the worker only after poll N's write returned; poll N's
        offsets are then committed while poll N+1 is written. After a rebalance or ``stop()`` poll N's offsets are
        committed first and poll N+1 is dropped, its partitions seeking back.
        """
        consumer = self._consumer
        assert consumer is not None
        preparer = concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                                         thread_name_prefix=f"egx-{self.group_id}-prepare")
        writing: _Poll | None = None
        carry: dict[TopicPartition, list[Any]] = {}
        try:
            while True:
                stopping = self._stop.is_set() or (stop_when is not None and stop_when())
                if stopping and writing is None:
                    return
                records: dict[TopicPartition, list[Any]] = {}
                if not stopping:
                    self._active = set(writing.records) if writing is not None else set()
                    # While a poll is written, the next one is fetched without waiting long for it.
                    timeout = LIVENESS_POLL_MS if writing is not None else self.options.poll_timeout_ms
                    records = carry or consumer.poll(timeout_ms=timeout)
                    carry = {}
                    self._after_poll()
                    if writing is None:
                        self._forget_lost()
                following: _Poll | None = None
                if records:
                    self.stats.batches += 1
                    following = _Poll(records, preparer.submit(self._prepare_poll, records))
                    self._active |= set(records)
                if writing is None:
                    self._rebalanced_in_batch = False
                    writing = self._start_write(worker, following)
                    continue
                carry = self._await(writing.future, liveness_s)
                if self._rebalanced_in_batch or self._stop.is_set() or (stop_when is not None and stop_when()):
                    self._commit()
                    # The prepared poll is not written: its records (and any the liveness polls brought) are
                    # fetched again from what was handled. The preparer is waited for, membership kept.
                    polls = [writing.records, carry]
                    if following is not None:
                        polls += [following.records, self._await(following.future, liveness_s)]
                    self._restore_positions(_merged(polls))
                    self._rebalanced_in_batch = False
                    self._active = set()
                    writing, following, carry = None, None, {}
                if consumer.paused():
                    consumer.resume(*consumer.paused())
                writing = self._start_write(worker, following)
                # Poll N's offsets are committed while poll N+1 is written: the commit's round trip to the group
                # coordinator is off the critical path (progress only ever covers records already done).
                self._commit()
        finally:
            preparer.shutdown(wait=True)
            self._active = set()

    def _start_write(self, worker: concurrent.futures.ThreadPoolExecutor, poll: _Poll | None) -> _Poll | None:
        """Hand a prepared poll to the worker (its write waits there for the preparation to end)."""
        if poll is None:
            return None
        return _Poll(poll.records, worker.submit(self._write_poll, poll))

    def _prepare_poll(self, records: dict[TopicPartition, list[Any]]) -> dict[str, _Staged]:
        """The preparer thread's part: decode the batch routes' records and prepare the staged ones."""
        staged: dict[str, _Staged] = {}
        for topic, topic_route in sorted(self.routes.items()):
            topic_records = [r for tp, recs in records.items() if tp.topic == topic for r in recs]
            if topic_route.batch_handler is not None and topic_records and not self._stop.is_set():
                staged[topic] = self._stage_topic(topic_records)
        return staged

    def _write_poll(self, poll: _Poll) -> None:
        """The worker's part of the pipelined mode: poll N once prepared, as ``_process_batch`` handles it."""
        try:
            staged = poll.future.result()
        except Exception:  # the preparer failed outside the error model: prepare here instead
            log.exception("group %s: preparing a poll failed; preparing it again on the worker", self.group_id)
            staged = {}
        self._process_batch(poll.records, staged)

    def _run_concurrent(
        self, worker: concurrent.futures.ThreadPoolExecutor, stop_when: Callable[[], bool] | None
    ) -> None:
        """The concurrent mode's poll loop: keep up to ``concurrency`` records in flight (module docstring)."""
        consumer = self._consumer
        assert consumer is not None
        capacity = self.options.concurrency
        in_flight_metric = metrics.RECORDS_IN_FLIGHT.labels(self.group_id)
        while not self._stop.is_set() and not (stop_when is not None and stop_when()):
            free = capacity - self._in_flight.count()
            if free > 0:
                if consumer.paused():
                    consumer.resume(*consumer.paused())
                # While records are in flight, poll briefly: completions are committed soon after they happen.
                timeout = LIVENESS_POLL_MS if self._in_flight.count() else self.options.poll_timeout_ms
                records = consumer.poll(timeout_ms=timeout, max_records=free)
            else:
                consumer.pause(*consumer.assignment())
                records = consumer.poll(timeout_ms=LIVENESS_POLL_MS)
            self._active = self._in_flight.partitions()
            self._after_poll()
            if self._lost:
                self._in_flight.forget(self._lost)
                # A lost partition assigned to us again starts afresh from its committed offset.
                self._lost -= consumer.assignment()
            for tp, partition_records in records.items():
                for record in partition_records:
                    ticket = self._in_flight.add(tp, record.offset)
                    worker.submit(self._run_in_flight, tp, record, ticket)
            in_flight_metric.set(self._in_flight.count())
            self._advance_in_flight()
            self._commit()
        in_flight_metric.set(0)

    def _run_in_flight(self, tp: TopicPartition, record: Any, ticket: int) -> None:
        """A worker thread's part: handle one record; mark it done unless it was interrupted."""
        try:
            done = self._process_record(record)
        except Exception:  # the record stays undone (redelivered); the worker must not die silently
            log.exception("group %s: record %s failed outside the error model", self.group_id, _where(record))
            done = False
        if not done:
            with self._stats_lock:
                self.stats.abandoned += 1
        self._in_flight.finish(tp, record.offset, ticket, done)

    def _advance_in_flight(self) -> None:
        """Move each partition's progress up to its first record not done (run thread)."""
        for tp, next_offset in self._in_flight.committable().items():
            if tp not in self._lost:
                self._progress[tp] = next_offset

    def _after_poll(self) -> None:
        """Act on a rebalance that happened inside ``poll``: partitions no longer ours are not worked on."""
        if not self._rebalanced:
            return
        self._rebalanced = False
        self._rebalanced_in_batch |= bool(self._active)
        assert self._consumer is not None
        owned = self._consumer.assignment()
        lost = {tp for tp in (*self._progress, *self._active) if tp not in owned}
        if lost:
            with self._wakeup:
                self._lost |= lost
                self._wakeup.notify_all()
        for tp in lost:
            self._progress.pop(tp, None)
            self._committed.pop(tp, None)

    def _forget_lost(self) -> None:
        """With nothing in flight: partitions lost earlier and assigned again start afresh (from their committed
        offset), so records of theirs are handled again rather than skipped as lost."""
        if self._lost:
            assert self._consumer is not None
            with self._wakeup:
                self._lost -= self._consumer.assignment()

    def _restore_positions(self, records: dict[TopicPartition, list[Any]]) -> None:
        """After a rebalance during a batch, make each kept partition's fetch position follow what was handled.

        kafka-python keeps the positions of partitions that stay assigned; but records skipped because their
        partition was lost (and then given back) must be fetched again, and a position reset to the committed
        offset would redeliver records already handled.
        """
        assert self._consumer is not None
        owned = self._consumer.assignment()
        for tp, recs in records.items():
            if tp in owned and recs:
                next_offset = self._progress.get(tp, recs[0].offset)
                if self._consumer.position(tp) != next_offset:
                    self._consumer.seek(tp, next_offset)
        self._lost.clear()

    def _commit(self) -> None:
        """Commit the offsets of the records done since the last commit (only partitions still owned)."""
        consumer = self._consumer
        if consumer is None:
            return
        owned = consumer.assignment()
        pending = {
            tp: OffsetAndMetadata(offset, "", -1)
            for tp, offset in self._progress.copy().items()  # the worker may be marking records done
            if tp in owned and self._committed.get(tp) != offset
        }
        if not pending:
            return
        try:
            consumer.commit(pending)
        except CommitFailedError as exc:
            # The group moved on (we were evicted); the new owners start from the last successful commit.
            log.warning("group %s: commit of %s failed, records will be redelivered: %s", self.group_id, pending, exc)
            return
        except KafkaError as exc:
            log.warning("group %s: commit failed, will retry: %r", self.group_id, exc)
            return
        self.stats.commits += 1
        for tp, meta in pending.items():
            self._committed[tp] = meta.offset

    # -- the worker thread ----------------------------------------------------------------------------------

    def _process_batch(
        self, records: dict[TopicPartition, list[Any]], staged: Mapping[str, _Staged] | None = None
    ) -> None:
        """Handle one poll: single-record routes record by record, batch routes per topic (``staged``: topics
        already decoded and prepared by the pipelined mode's preparer)."""
        batched = {t for t, r in self.routes.items() if r.batch_handler is not None}
        single = {tp: recs for tp, recs in records.items() if tp.topic not in batched}
        for tp, partition_records in single.items():
            for record in partition_records:
                if self._stop.is_set() or tp in self._lost:
                    break
                if self._process_record(record):
                    self._mark_done(record)
                else:
                    # Interrupted: nothing after this record may be marked done in this partition.
                    self.stats.abandoned += 1
                    break
        for topic in sorted(batched):
            topic_records = [r for tp, recs in records.items() if tp.topic == topic for r in recs]
            if topic_records and not self._stop.is_set():
                ready = (staged or {}).get(topic)
                self._finish_topic(ready if ready is not None else self._stage_topic(topic_records))

    def _mark_done(self, record: Any) -> None:
        tp = TopicPartition(record.topic, record.partition)
        if tp not in self._lost:
            self._progress[tp] = record.offset + 1

    def _process_record(self, record: Any) -> bool:
        """Handle or dead-letter one record. False if interrupted before it was done (it stays uncommitted)."""
        decoded = self._decode(record)
        if decoded is None:
            return True
        if isinstance(decoded, _Undone):
            return False
        topic_route = self.routes[record.topic]
        if topic_route.handler is not None:
            handler = topic_route.handler
            return self._handle([record], lambda: handler(decoded), decoded.header.trace_id)
        return self._handle_batch([record], [decoded])

    def _decode(self, record: Any) -> Message | _Undone | None:
        """The record's event; None if it was dead-lettered instead, ``_Undone`` if that was interrupted."""
        size = record_size(record)
        if size > self._max_event_bytes:
            done = self._dead_letter(
                record,
                DeadLetterCause.DEAD_LETTER_CAUSE_OVERSIZE,
                f"record of {size} bytes exceeds max_event_bytes={self._max_event_bytes}",
            )
            return None if done else _UNDONE
        try:
            topic_route = self.routes[record.topic]
            if topic_route.decode is not None:
                return topic_route.decode(record.value)
            return decode_event(topic_route.message_class, record.value)
        except EventDecodeError as exc:
            cause, reason = CAUSE_OF_DECODE_FAILURE[exc.failure], exc.reason
            if exc.failure is DecodeFailure.NOT_PROTOBUF:
                # Another event type can fail to parse as this one; its header still says what it is.
                declared = declared_event_type(record.value)
                if declared and declared != self._expected[record.topic]:
                    cause = DeadLetterCause.DEAD_LETTER_CAUSE_WRONG_TYPE
                    reason = f"header says {declared!r} but this topic carries {self._expected[record.topic]!r}"
            done = self._dead_letter(record, cause, reason, error=exc)
            return None if done else _UNDONE

    def _stage_topic(self, records: list[Any]) -> _Staged:
        """Decode one topic's records of a poll (dead-lettering the undecodable) and, for a staged route, prepare
        the good ones. Marks nothing done: ``_finish_topic`` does, once the records are written."""
        staged = _Staged(records)
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            if self._stop.is_set() or tp in self._lost:
                staged.interrupted = True
                return staged
            decoded = self._decode(record)
            if isinstance(decoded, _Undone):
                staged.interrupted = staged.undone = True
                return staged
            staged.outcomes.append(decoded)
        topic_route = self.routes[records[0].topic]
        events = [e for e in staged.outcomes if e is not None]
        if topic_route.prepare is not None and events:
            staged.has_prepared = True
            try:
                staged.prepared = topic_route.prepare(events)
            except Exception as exc:  # the first attempt's failure: _handle_batch applies the error model to it
                staged.error = exc
        return staged

    def _finish_topic(self, staged: _Staged) -> None:
        """Hand a staged topic batch's good records to its handler together; mark what is done."""
        kept: list[Any] = []
        events: list[Message] = []
        for record, decoded in zip(staged.records, staged.outcomes, strict=False):
            tp = TopicPartition(record.topic, record.partition)
            if decoded is None:
                # Dead-lettered; marked done only once the records before it in its partition are.
                if not any(TopicPartition(r.topic, r.partition) == tp for r in kept):
                    self._mark_done(record)
                continue
            kept.append(record)
            events.append(decoded)
        if staged.interrupted:
            if staged.undone:
                self.stats.abandoned += 1
            return
        if kept and self._handle_batch(kept, events, staged):
            for record in staged.records:
                self._mark_done(record)
        elif kept:
            self.stats.abandoned += 1

    def _handle_batch(self, records: list[Any], events: list[Message], staged: _Staged | None = None) -> bool:
        """Run the batch handler over ``events`` (retried as a whole); split it when it fails for good.

        ``staged``: the batch as the preparer left it; its ``prepare`` outcome stands for the first attempt's.
        """
        topic_route = self.routes[records[0].topic]
        batch_handler = topic_route.batch_handler
        assert batch_handler is not None
        rejected: dict[int, PermanentError] = {}
        first = staged if staged is not None and topic_route.write is not None and staged.has_prepared else None

        def call() -> None:
            nonlocal first
            rejected.clear()
            if first is not None:
                ready, first = first, None
                if ready.error is not None:
                    raise ready.error
                assert topic_route.write is not None
                rejected.update(topic_route.write(ready.prepared) or {})
                return
            rejected.update(batch_handler(events) or {})

        trace_id = events[0].header.trace_id if len(events) == 1 else ""  # type: ignore[attr-defined]
        outcome = self._attempt(records, call, split=len(records) > 1, trace_id=trace_id)
        if outcome is _Outcome.INTERRUPTED:
            return False
        if outcome is _Outcome.DEAD_LETTERED:
            return True
        if outcome is _Outcome.SPLIT:
            log.warning("group %s: a batch of %d records failed; handling them one by one",
                        self.group_id, len(records))
            for record, event in zip(records, events, strict=True):
                if not self._handle_batch([record], [event]):
                    return False
                self._mark_done(record)
            return True
        processed, _, _ = self._metrics[records[0].topic]
        for index, (record, event) in enumerate(zip(records, events, strict=True)):
            error = rejected.get(index)
            if error is None:
                processed.inc()
                self.stats.processed += 1
                continue
            if not self._dead_letter(
                record, DeadLetterCause.DEAD_LETTER_CAUSE_PERMANENT, str(error) or type(error).__name__,
                attempts=1, error=error, trace_id=event.header.trace_id,  # type: ignore[attr-defined]
            ):
                return False
        return True

    def _handle(self, records: list[Any], call: Callable[[], None], trace_id: str) -> bool:
        """Run a single-record handler with the retry policy; dead-letter the record if it fails for good."""
        outcome = self._attempt(records, call, split=False, trace_id=trace_id)
        if outcome is _Outcome.DONE:
            processed, _, _ = self._metrics[records[0].topic]
            processed.inc()
            with self._stats_lock:
                self.stats.processed += 1
        return outcome is not _Outcome.INTERRUPTED

    def _attempt(self, records: list[Any], call: Callable[[], None], *, split: bool, trace_id: str) -> _Outcome:
        """Call ``call`` until it succeeds or fails for good, following the error model (module docstring).

        Failing for good dead-letters the record (single) or returns ``SPLIT`` (a batch, when ``split``).
        """
        record = records[0]
        _, retried, handler_seconds = self._metrics[record.topic]
        attempt = failures = outages = 0
        while True:
            attempt += 1
            started = time.perf_counter()
            try:
                call()
                error: Exception | None = None
            except Exception as exc:
                error = exc
            handler_seconds.observe(time.perf_counter() - started)
            if error is None:
                self._set_ready(True)
                return _Outcome.DONE
            if isinstance(error, DependencyUnavailable):
                outages += 1
                self.stats.outage_retries += 1
                self._set_ready(False, str(error))
                delay = self._retry_delay(error, outages, outage=True)
                log.warning("group %s: dependency unavailable at %s (retry %d, in %.2fs); keeping the record: %s",
                            self.group_id, _where(record), outages, delay, error)
                if self._interrupted(record, delay):
                    return _Outcome.INTERRUPTED
                continue
            if isinstance(error, PermanentError):
                cause, reason = DeadLetterCause.DEAD_LETTER_CAUSE_PERMANENT, str(error) or type(error).__name__
            elif not isinstance(error, (TransientError, *self.options.transient_exceptions)):
                if not split:
                    log.error("group %s: unhandled error at %s", self.group_id, _where(record), exc_info=error)
                cause, reason = DeadLetterCause.DEAD_LETTER_CAUSE_UNHANDLED, f"{type(error).__name__}: {error}"
            else:
                failures += 1
                retried.inc()
                self.stats.retried += 1
                if self.options.max_attempts is None or failures < self.options.max_attempts:
                    delay = self._retry_delay(error, failures, outage=False)
                    log.warning("group %s: transient error at %s (attempt %d), retrying in %.2fs: %s",
                                self.group_id, _where(record), attempt, delay, error)
                    if self._interrupted(record, delay):
                        return _Outcome.INTERRUPTED
                    continue
                cause = DeadLetterCause.DEAD_LETTER_CAUSE_RETRIES_EXHAUSTED
                reason = f"still failing after {failures} attempts: {type(error).__name__}: {error}"
            if split:
                return _Outcome.SPLIT
            done = self._dead_letter(record, cause, reason, attempts=attempt, error=error, trace_id=trace_id)
            return _Outcome.DEAD_LETTERED if done else _Outcome.INTERRUPTED

    def _retry_delay(self, error: BaseException, attempt: int, *, outage: bool) -> float:
        retry_after = getattr(error, "retry_after_s", None)
        return retry_after if retry_after is not None else self.options.backoff_s(attempt, outage=outage)

    def _set_ready(self, ready: bool, reason: str = "") -> None:
        if ready == self._ready:
            return
        self._ready = ready
        self.not_ready_reason = "" if ready else reason
        self._ready_metric.set(1 if ready else 0)
        if ready:
            log.info("group %s: dependencies answer again; ready", self.group_id)
        else:
            log.warning("group %s: not ready, a dependency is unavailable: %s", self.group_id, reason)
        if self._on_readiness is not None:
            try:
                self._on_readiness(ready)
            except Exception:
                log.exception("group %s: readiness callback failed", self.group_id)

    def _interrupted(self, record: Any, delay_s: float) -> bool:
        """Sleep ``delay_s`` unless stopped or the record's partition is lost meanwhile (then True)."""
        tp = TopicPartition(record.topic, record.partition)
        with self._wakeup:
            return self._wakeup.wait_for(lambda: self._stop.is_set() or tp in self._lost, timeout=delay_s)

    def _dead_letter(
        self,
        record: Any,
        cause: DeadLetterCause,
        reason: str,
        *,
        attempts: int = 0,
        error: BaseException | None = None,
        trace_id: str = "",
    ) -> bool:
        """Publish the dead letter and wait for its acknowledgement; False if interrupted before it was acked."""
        letter = build_dead_letter(
            record,
            cause=cause,
            reason=reason,
            group_id=self.group_id,
            expected_type=self._expected[record.topic],
            attempts=attempts,
            error=error,
            max_payload_bytes=self.options.dead_letter_payload_bytes,
            preview_bytes=self.options.dead_letter_preview_bytes,
            claim_store=self._claim_store,
            trace_id=trace_id,
        )
        producer = self._dead_letter_producer
        assert producer is not None
        # Keyed like the source (scene id), so one scene's dead letters stay in order too.
        key = (record.key or b"")[:256].decode("utf-8", errors="replace")
        failures = 0
        while True:
            try:
                producer.publish_and_wait(self.dead_letter_topic, key, letter)
                break
            except EventTooLargeError as exc:
                if letter.payload or letter.source_key or letter.source_headers:
                    log.warning("group %s: dead letter for %s too large; sending it without payload",
                                self.group_id, _where(record))
                    letter = stripped(letter)
                    continue
                problem: Exception = exc
            except Exception as exc:
                # The record must not be committed before its dead letter is durable: retry, never drop, never
                # let the error end the loop (the producer replaces itself when it has failed for good).
                problem = exc
            failures += 1
            self._set_ready(False, f"dead-letter topic {self.dead_letter_topic}: {problem}")
            delay = self.options.backoff_s(failures, outage=True)
            log.warning("group %s: dead letter for %s not acknowledged, retrying in %.2fs: %r",
                        self.group_id, _where(record), delay, problem)
            if self._interrupted(record, delay):
                return False
        if failures:
            self._set_ready(True)
        label = cause_label(cause)
        metrics.RECORDS_DEAD_LETTERED.labels(self.group_id, record.topic, label).inc()
        with self._stats_lock:
            self.stats.dead_lettered += 1
        log.warning("group %s: dead-lettered %s to %s (%s): %s",
                    self.group_id, _where(record), self.dead_letter_topic, label, reason)
        return True


class _InFlight:
    """Offsets handed to workers, per partition; what may be committed is the prefix of each that is done.

    Thread-safe: workers mark records done or abandoned, the run thread adds records and reads the prefix. An
    abandoned record (interrupted: stop, partition lost) blocks its partition until the partition is forgotten,
    so nothing after it is committed and it is delivered again. Each entry has a ticket: a worker still busy with
    a record of a partition that was lost and assigned again cannot mark the new delivery of that offset.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # partition -> offset -> (ticket, state); state True: done, False: being handled, None: abandoned
        self._offsets: dict[TopicPartition, dict[int, tuple[int, bool | None]]] = {}
        self._tickets = itertools.count()

    def add(self, tp: TopicPartition, offset: int) -> int:
        with self._lock:
            ticket = next(self._tickets)
            self._offsets.setdefault(tp, {})[offset] = (ticket, False)
            return ticket

    def finish(self, tp: TopicPartition, offset: int, ticket: int, done: bool) -> None:
        with self._lock:
            partition = self._offsets.get(tp)
            if partition is not None and partition.get(offset, (None, None))[0] == ticket:
                partition[offset] = (ticket, True if done else None)

    def count(self) -> int:
        """Records still being handled (abandoned ones no longer occupy a worker)."""
        with self._lock:
            return sum(1 for p in self._offsets.values() for _, state in p.values() if state is False)

    def partitions(self) -> set[TopicPartition]:
        with self._lock:
            return {tp for tp, p in self._offsets.items() if p}

    def committable(self) -> dict[TopicPartition, int]:
        """Per partition with progress: the offset after its done prefix (those entries are dropped)."""
        out: dict[TopicPartition, int] = {}
        with self._lock:
            for tp, partition in self._offsets.items():
                for offset in sorted(partition):
                    if partition[offset][1] is not True:
                        break
                    del partition[offset]
                    out[tp] = offset + 1
        return out

    def forget(self, partitions: set[TopicPartition]) -> None:
        """Stop tracking partitions no longer ours (their records will be delivered to the new owner)."""
        if not partitions:
            return
        with self._lock:
            for tp in partitions:
                self._offsets.pop(tp, None)


@dataclass
class _Staged:
    """One topic's records of a poll after decoding (and, for a staged route, preparing)."""

    records: list[Any]
    # Per record from the first: its event, or None when it was dead-lettered (shorter when interrupted).
    outcomes: list[Message | None] = field(default_factory=list)
    interrupted: bool = False  # stopped or partition lost before every record was decoded
    undone: bool = False  # interrupted by a dead letter that was not acknowledged
    has_prepared: bool = False  # the route's prepare ran over the decoded events
    prepared: Any = None  # what it returned
    error: Exception | None = None  # what it raised instead


@dataclass
class _Poll:
    """A poll's records and the future of the stage it is in (preparing, then writing)."""

    records: dict[TopicPartition, list[Any]]
    future: concurrent.futures.Future[Any]


def _merged(polls: Sequence[dict[TopicPartition, list[Any]]]) -> dict[TopicPartition, list[Any]]:
    """Records of several polls per partition, in offset order."""
    out: dict[TopicPartition, list[Any]] = {}
    for poll in polls:
        for tp, recs in poll.items():
            out.setdefault(tp, []).extend(recs)
    return {tp: sorted(recs, key=lambda r: r.offset) for tp, recs in out.items()}


class _Outcome(enum.Enum):
    DONE = "done"
    DEAD_LETTERED = "dead-lettered"
    SPLIT = "split"
    INTERRUPTED = "interrupted"


class _Undone:
    """A record that could not be finished (stop or lost partition while its dead letter was retried)."""


_UNDONE = _Undone()


def _where(record: Any) -> str:
    return f"{record.topic}[{record.partition}]@{record.offset}"
