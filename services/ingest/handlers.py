"""What the ingest service does with one upload and with one dropped file. The work itself is
``earthgptx.scenes.SceneIngestor``'s; these classes decide when it runs and what the sender is told.

Uploads (``UploadHandler``). ``accept`` runs while the client waits: a scene ingested before is answered as a
duplicate; the file is validated (every rule, so nearly every bad input gets its 4xx at once); then the scene is
registered ``accepted`` and its COG, row and event are made by a worker thread. The worker retries outages (the
object store, PostGIS or the broker not answering) with backoff for as long as the service runs; a file whose
pixels turn out unreadable while its COG is written is ``rejected`` with the reason. If the process dies before
the scene is ingested, its status stays ``accepted``: sending the same file again completes it (same scene id).

Drops (``DropHandler.on_object_created``, a route of the bus). A scene dropped into the bucket is read (with its
object tags and its sidecar ``<key>.json``), ingested the same way in the consumer's thread, then removed from the
bucket; a refused one is moved to ``rejected/<key>`` with ``rejected/<key>.reason.txt`` beside it. Every step is
idempotent, so a re-delivered notification (after a crash) finishes the job without a second row, object or event.
Outages propagate as the bus's ``DependencyUnavailable`` (the record waits); notifications of other buckets, of
sidecars and of ``rejected/`` are ignored.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
from minio.commonconfig import CopySource
from minio.error import S3Error

from earthgptx.scenes import (
    SceneIngestor,
    SceneMetadata,
    SceneRejected,
    inspect_scene,
    parse_sidecar,
    receive,
)
from earthgptx.scenes.drops import REASON_SUFFIX, REJECTED_PREFIX, is_scene_key, sidecar_key
from earthgptx.scenes.receive import Received
from earthgptx.scenes.validate import InspectedScene
from earthgptx.store.errors import ObjectNotFound, StoreError, StoreUnavailable
from earthgptx.store.objects import ObjectStore
from earthgptx.v1.events_pb2 import ObjectCreated

log = logging.getLogger(__name__)

MAX_SIDECAR_BYTES = 64 * 1024
RETRY_INITIAL_S = 0.5
RETRY_MAX_S = 30.0


@dataclass(frozen=True)
class Accepted:
    """What the client is told: the scene id, its status, and whether it was ingested before."""

    scene_id: str
    status: str
    duplicate: bool = False


class UploadHandler:
    """Accepts uploads and ingests them on ``workers`` background threads."""

    def __init__(self, ingestor: SceneIngestor, *, workers: int = 1) -> None:
        self.ingestor = ingestor
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="egx-ingest")
        self._stopping = threading.Event()
        self._pending: set[concurrent.futures.Future[None]] = set()
        self._lock = threading.Lock()

    def accept(self, received: Received, metadata: SceneMetadata, name: str | None) -> Accepted:
        """Validate and register an uploaded file, then queue its ingest. Raises ``SceneRejected``.

        Takes ownership of the file: it is removed when refused, a duplicate, or once ingested.
        """
        scene_id = received.scene_id
        queued = False
        try:
            known = self.ingestor.catalog.get(scene_id)
            if known is not None and known.status == "ingested":
                return Accepted(scene_id, "ingested", duplicate=True)
            try:
                inspected = inspect_scene(received.path, metadata)
            except SceneRejected as exc:
                self.ingestor.refuse(received, metadata, exc.reason, channel="upload", name=name)
                raise
            record = self.ingestor.register(received, metadata, channel="upload", name=name)
            if record.status == "ingested":
                return Accepted(scene_id, "ingested", duplicate=True)
            self._queue(received, metadata, name, inspected)
            queued = True
            return Accepted(scene_id, "accepted")
        finally:
            if not queued:
                received.discard()

    def _queue(self, received: Received, metadata: SceneMetadata, name: str | None, inspected: InspectedScene) -> None:
        future = self._pool.submit(self._ingest, received, metadata, name, inspected)
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: concurrent.futures.Future[None]) -> None:
        with self._lock:
            self._pending.discard(future)

    def _ingest(self, received: Received, metadata: SceneMetadata, name: str | None, inspected: InspectedScene) -> None:
        delay = RETRY_INITIAL_S
        try:
            while not self._stopping.is_set():
                try:
                    self.ingestor.ingest(received, metadata, channel="upload", name=name, inspected=inspected)
                    return
                except Exception as exc:  # outages are retried; anything else is this scene's failure
                    if not getattr(exc, "transient", False):
                        log.exception("ingest of scene %s failed", received.scene_id)
                        self._reject_quietly(received.scene_id, f"ingest failed: {type(exc).__name__}: {exc}")
                        return
                    log.warning("scene %s: %s; retrying in %.1f s", received.scene_id, exc, delay)
                    self._stopping.wait(delay)
                    delay = min(RETRY_MAX_S, delay * 2)
        finally:
            received.discard()

    def _reject_quietly(self, scene_id: str, reason: str) -> None:
        try:
            self.ingestor.catalog.reject(scene_id, reason)
        except (StoreError, StoreUnavailable):
            log.exception("could not record the failure of scene %s", scene_id)

    @property
    def in_progress(self) -> int:
        with self._lock:
            return len(self._pending)

    def close(self) -> None:
        """Finish the ingest in hand; queued ones are dropped (their scenes stay ``accepted``)."""
        self._stopping.set()
        self._pool.shutdown(wait=True, cancel_futures=True)


class DropHandler:
    """Handles the drop bucket's ``ObjectCreated`` notifications (one route of the bus)."""

    def __init__(
        self,
        ingestor: SceneIngestor,
        objects: ObjectStore,
        *,
        bucket: str,
        workdir: Path | None,
        max_bytes: int,
        chunk_bytes: int = 1024 * 1024,
    ) -> None:
        self.ingestor = ingestor
        self.objects = objects
        self.bucket = bucket
        self.workdir = workdir
        self.max_bytes = max_bytes
        self.chunk_bytes = chunk_bytes

    def on_object_created(self, event: ObjectCreated) -> None:
        if event.bucket != self.bucket or not event.event_name.startswith("s3:ObjectCreated:"):
            return
        if not is_scene_key(event.key):
            return
        key = event.key
        name = f"{self.bucket}/{key}"
        try:
            metadata = self._metadata(key)
            chunks = self.objects.get_stream(self.bucket, key, chunk_size=self.chunk_bytes)
        except ObjectNotFound:
            log.info("drop %s is gone (handled before): nothing to do", name)
            return
        except SceneRejected as exc:
            self._move_to_rejected(key, exc.reason)
            return
        try:
            with chunks:
                received = receive(chunks, self.workdir, self.max_bytes)
        except SceneRejected as exc:
            self._move_to_rejected(key, exc.reason)
            return
        try:
            metadata = metadata if metadata.source else SceneMetadata(source=f"drop:{self.bucket}").merged(metadata)
            result = self.ingestor.ingest(received, metadata, channel="drop", name=name, trace_id=event.header.trace_id)
        finally:
            received.discard()
        if result.status == "rejected":
            self._move_to_rejected(key, result.reason or "rejected")
        else:
            self._remove(key)

    # -- the bucket ------------------------------------------------------------------------------------------

    def _metadata(self, key: str) -> SceneMetadata:
        """Object tags, completed by the sidecar ``<key>.json`` (the tags win); ``SceneRejected`` if unreadable."""
        tags = self._call(f"read tags of {key}", lambda: self.objects.client.get_object_tags(self.bucket, key))
        from_tags = SceneMetadata.parse(dict(tags or {}))
        try:
            with self.objects.get_stream(self.bucket, sidecar_key(key)) as chunks:
                data = b""
                for chunk in chunks:
                    data += chunk
                    if len(data) > MAX_SIDECAR_BYTES:
                        raise SceneRejected(f"sidecar metadata {sidecar_key(key)} is larger than {MAX_SIDECAR_BYTES} bytes")
        except ObjectNotFound:
            return from_tags
        return from_tags.merged(parse_sidecar(data))

    def _move_to_rejected(self, key: str, reason: str) -> None:
        """Copy the drop (and its sidecar) under ``rejected/``, write the reason beside it, then remove the
        originals: a crash in between leaves the original in place, and its re-delivered notification redoes it."""
        log.info("drop %s/%s rejected: %s", self.bucket, key, reason)
        moved = []
        for source in (key, sidecar_key(key)):
            copied = self._call(
                f"copy {source} to {REJECTED_PREFIX}{source}",
                lambda s=source: self.objects.client.copy_object(
                    self.bucket, REJECTED_PREFIX + s, CopySource(self.bucket, s)
                ),
                missing_ok=True,
            )
            if copied is not None:
                moved.append(source)
        reason_key = REJECTED_PREFIX + key + REASON_SUFFIX
        self.objects.put_bytes(self.bucket, reason_key, (reason + "\n").encode(), content_type="text/plain")
        for source in moved:
            self.objects.remove(self.bucket, source)

    def _remove(self, key: str) -> None:
        for source in (key, sidecar_key(key)):
            self.objects.remove(self.bucket, source)

    @staticmethod
    def _call(what: str, call: Any, *, missing_ok: bool = False) -> Any:
        """One call of the MinIO SDK, its errors mapped onto the store's (outage vs permanent)."""
        try:
            return call()
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchTagSet", "NoSuchObject"):
                if exc.code == "NoSuchTagSet" or missing_ok:
                    return None
                raise ObjectNotFound(f"{what}: {exc.code}") from exc
            raise StoreError(f"{what}: {exc.code}") from exc
        except (OSError, urllib3.exceptions.HTTPError) as exc:
            raise StoreUnavailable(f"{what}: object store unreachable ({type(exc).__name__})") from exc
