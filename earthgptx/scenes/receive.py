"""Receiving a file: streamed to a temporary file in bounded chunks, hashed on the way, with a size limit.

Nothing is held in memory beyond one chunk, and nothing is left behind when the transfer stops early (client
gone, limit exceeded, error): the temporary file is removed. The SHA-256 of the bytes as received names the scene
(``scene_id``), so the same file sent twice, by either way in, is one scene.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from earthgptx.events import deterministic_id
from earthgptx.scenes.errors import SceneRejected

__all__ = ["Received", "Spool", "receive", "scene_id_for"]


def scene_id_for(sha256: str) -> str:
    """The scene id of a file: a UUID derived from the SHA-256 of its bytes only."""
    return deterministic_id("scene", sha256.lower())


@dataclass(frozen=True)
class Received:
    """A file received completely: where it is, its size and hash, and the scene id they give."""

    path: Path
    size: int
    sha256: str

    @property
    def scene_id(self) -> str:
        return scene_id_for(self.sha256)

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


class Spool:
    """``with Spool(folder, limit) as spool: spool.write(chunk) ...; received = spool.finish()``.

    ``write`` raises ``SceneRejected`` (kind ``too_large``) as soon as the bytes pass ``limit``; leaving the
    ``with`` block without ``finish`` (or with an exception) removes the partial file.
    """

    def __init__(self, folder: str | os.PathLike[str] | None, limit: int) -> None:
        if limit <= 0:
            raise ValueError(f"limit must be positive, got {limit}")
        self.limit = limit
        handle, name = tempfile.mkstemp(prefix="egx-ingest-", suffix=".tif", dir=folder)
        self.path = Path(name)
        self._file = os.fdopen(handle, "wb")
        self._hash = hashlib.sha256()
        self.size = 0
        self._finished = False

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise SceneRejected(f"the file is larger than the limit of {self.limit} bytes", kind="too_large")
        self._hash.update(chunk)
        self._file.write(chunk)

    def finish(self) -> Received:
        self._file.close()
        if self.size == 0:
            raise SceneRejected("the file is empty", kind="not_geotiff")
        self._finished = True
        return Received(self.path, self.size, self._hash.hexdigest())

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> Spool:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None or not self._finished:
            self.abort()


def receive(chunks: Iterable[bytes], folder: str | os.PathLike[str] | None, limit: int) -> Received:
    """Spool an iterable of byte chunks (an object-store stream, a file) into a temporary file."""
    with Spool(folder, limit) as spool:
        for chunk in chunks:
            spool.write(chunk)
        return spool.finish()
