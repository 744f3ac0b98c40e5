"""Object store over MinIO (any S3 server) through the ``minio`` SDK: streaming puts and gets with a content hash.

Every object carries the SHA-256 of its bytes as user metadata (``x-amz-meta-sha256``), so a reader can check
what it got and a writer can skip re-uploading identical content (re-delivered events re-put the same key).

S3 sends metadata with the request that *starts* an upload, before the body, so the hash has to be known first:
- ``put_file`` hashes the file in a first pass (cheap: the second pass is usually served from the page cache);
- ``put_stream`` with ``sha256=`` (a caller that hashed while receiving) sends it up front and checks it
  against the bytes that actually went out;
- ``put_stream`` without a hash spools the stream to a temporary file while hashing it (in memory up to one
  part, on disk beyond), then uploads that like a file.
In every case the object appears together with its hash, and a re-put of identical content is skipped (a
``stat`` finds the same hash and size) instead of uploaded again.

Rejected alternative: upload first, then attach the hash with a ``copy_object`` of the object onto itself with
the metadata replaced. MinIO does that as a metadata-only update only for single-part objects; a multipart
object is rewritten (measured on the local MinIO: re-copying a 300 MiB object took as long as uploading it,
0.98 s vs 0.91 s), which would double the server's writes for every large scene, and the object would exist
without its hash in between. Spooling costs one local write and read of the stream instead.

Failures are translated at this boundary: ``StoreUnavailable`` for outages (connection refused, timeouts, 5xx,
``SlowDown``), ``ObjectNotFound`` for missing buckets or keys, ``StoreError`` for everything else.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import urllib3
from minio import Minio
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError

from earthgptx.settings import ObjectStoreSettings
from earthgptx.store.errors import ObjectNotFound, StoreError, StoreUnavailable

log = logging.getLogger(__name__)

SHA256_METADATA = "sha256"
MIN_PART_SIZE = 5 * 1024 * 1024  # S3's lower bound for every multipart part but the last
DEFAULT_PART_SIZE = 16 * 1024 * 1024
DEFAULT_CHUNK_SIZE = 1024 * 1024
_HASH_READ_SIZE = 4 * 1024 * 1024

_NOT_FOUND_CODES = frozenset(
    {"NoSuchKey", "NoSuchBucket", "NoSuchObject", "NoSuchVersion", "ResourceNotFound"}
)
# S3 error codes that describe the server's state rather than the request.
_TRANSIENT_CODES = frozenset(
    {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "XMinioServerNotInitialized"}
)


@dataclass(frozen=True)
class ObjectInfo:
    """What the store knows about one object. ``sha256`` is None for objects written by other tools."""

    bucket: str
    key: str
    size: int
    sha256: str | None
    content_type: str | None
    etag: str | None


class _HashingReader:
    """A ``read(n)`` file-like view of a binary stream or an iterable of byte chunks that hashes what it hands out."""

    def __init__(self, source: IO[bytes] | Iterable[bytes]) -> None:
        self._file: IO[bytes] | None = source if callable(getattr(source, "read", None)) else None  # type: ignore[assignment]
        self._chunks: Iterator[bytes] | None = None if self._file is not None else iter(source)  # type: ignore[arg-type]
        self._pending = b""
        self._hash = hashlib.sha256()
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        if self._file is not None:
            data = self._file.read(size)
        else:
            data = self._read_chunks(size)
        self._hash.update(data)
        self.bytes_read += len(data)
        return data

    def _read_chunks(self, size: int) -> bytes:
        assert self._chunks is not None
        parts = [self._pending]
        have = len(self._pending)
        while size < 0 or have < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            parts.append(chunk)
            have += len(chunk)
        data = b"".join(parts)
        if size >= 0:
            data, self._pending = data[:size], data[size:]
        else:
            self._pending = b""
        return data

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class ObjectChunks:
    """The body of one object as an iterator of chunks; close it (or use ``with``) if you stop early.

    With ``verify`` the bytes are hashed on the way and the last ``next`` raises ``StoreError`` if they do
    not match the object's stored SHA-256.
    """

    def __init__(self, response: Any, bucket: str, key: str, chunk_size: int, verify: bool) -> None:
        self._response = response
        self._chunks: Iterator[bytes] = response.stream(chunk_size)
        self._where = f"{bucket}/{key}"
        self._expected = response.headers.get(f"x-amz-meta-{SHA256_METADATA}") if verify else None
        if verify and self._expected is None:
            self.close()
            raise StoreError(f"{self._where} has no {SHA256_METADATA} metadata to verify against")
        self._hash = hashlib.sha256() if verify else None
        self._closed = False

    def __iter__(self) -> ObjectChunks:
        return self

    def __next__(self) -> bytes:
        if self._closed:
            raise StopIteration
        try:
            chunk = next(self._chunks)
        except StopIteration:
            self.close()
            self._check()
            raise
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            self.close()
            raise StoreUnavailable(f"reading {self._where} failed mid-stream: {exc}") from exc
        if self._hash is not None:
            self._hash.update(chunk)
        return chunk

    def _check(self) -> None:
        if self._hash is not None and self._hash.hexdigest() != self._expected:
            raise StoreError(f"{self._where}: content does not match its stored {SHA256_METADATA}")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._response.close()
            self._response.release_conn()

    def __enter__(self) -> ObjectChunks:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def sha256_of_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_HASH_READ_SIZE):
            digest.update(block)
    return digest.hexdigest()


def _check_part_size(part_size: int) -> None:
    if part_size < MIN_PART_SIZE:
        raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes (S3 minimum), got {part_size}")


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """Map SDK and transport exceptions onto the store's errors."""
    try:
        yield
    except S3Error as exc:
        if exc.code in _NOT_FOUND_CODES:
            raise ObjectNotFound(f"{what}: {exc.code}") from exc
        if exc.code in _TRANSIENT_CODES:
            raise StoreUnavailable(f"{what}: {exc.code}") from exc
        raise StoreError(f"{what}: {exc.code}: {exc.message}") from exc
    except (ServerError, InvalidResponseError) as exc:
        raise StoreUnavailable(f"{what}: {exc}") from exc
    except urllib3.exceptions.HTTPError as exc:
        raise StoreUnavailable(f"{what}: object store unreachable ({type(exc).__name__})") from exc
    except MinioException as exc:
        raise StoreError(f"{what}: {exc}") from exc


class ObjectStore:
    """Buckets and objects of one S3 endpoint. Thread-safe, as the underlying client is."""

    def __init__(
        self,
        settings: ObjectStoreSettings | None = None,
        *,
        client: Minio | None = None,
        retries: int = 3,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float | None = None,
    ) -> None:
        self.settings = settings or ObjectStoreSettings()  # type: ignore[call-arg]
        if read_timeout_s is None:
            read_timeout_s = self.settings.read_timeout_s
        if client is None:
            # The SDK's default pool retries for ~6 s and waits 5 min on reads (here EGX_S3_READ_TIMEOUT_S, 20 s):
            # an event consumer would rather get StoreUnavailable quickly and apply its own backoff without
            # blocking its poll loop.
            http = urllib3.PoolManager(
                timeout=urllib3.Timeout(connect=connect_timeout_s, read=read_timeout_s),
                maxsize=10,
                retries=urllib3.Retry(
                    total=retries, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]
                ),
            )
            client = Minio(
                self.settings.endpoint,
                access_key=self.settings.access_key.get_secret_value(),
                secret_key=self.settings.secret_key.get_secret_value(),
                secure=self.settings.secure,
                http_client=http,
            )
        self.client = client

    # -- buckets -------------------------------------------------------------------------------------------

    def ensure_buckets(self, *extra: str) -> list[str]:
        """Create the configured buckets (and ``extra``) if missing; safe to call from many processes at once."""
        names = list(dict.fromkeys([self.settings.scenes_bucket, self.settings.chips_bucket, *extra]))
        for name in names:
            with _translated(f"ensure bucket {name}"):
                if self.client.bucket_exists(name):
                    continue
                try:
                    self.client.make_bucket(name)
                    log.info("created bucket %s", name)
                except S3Error as exc:
                    # Another process won the race between bucket_exists and make_bucket.
                    if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise
        return names

    # -- writes --------------------------------------------------------------------------------------------

    def put_stream(
        self,
        bucket: str,
        key: str,
        stream: IO[bytes] | Iterable[bytes],
        length: int = -1,
        *,
        content_type: str = "application/octet-stream",
        part_size: int = DEFAULT_PART_SIZE,
        sha256: str | None = None,
        num_parallel_uploads: int = 3,
    ) -> ObjectInfo:
        """Upload a binary stream (or an iterable of byte chunks) without holding it in memory.

        ``length`` of -1 means unknown. Memory stays near ``part_size`` × (``num_parallel_uploads`` + 1).
        With a known ``sha256`` the upload starts at once (and nothing is read if that content is already
        stored); if the bytes do not match it, the object is removed and ``StoreError`` raised. Without one,
        the stream is first spooled to a temporary file (``TMPDIR``) to learn its hash.
        """
        _check_part_size(part_size)
        if sha256 is not None:
            return self._put_hashed(
                bucket, key, stream, length, sha256.lower(), content_type, part_size, num_parallel_uploads
            )
        with tempfile.SpooledTemporaryFile(max_size=part_size) as spool:
            reader = _HashingReader(stream)
            while block := reader.read(_HASH_READ_SIZE):
                spool.write(block)
            if length >= 0 and reader.bytes_read != length:
                raise StoreError(f"put {bucket}/{key}: stream gave {reader.bytes_read} bytes, not {length}")
            spool.seek(0)
            return self._put_hashed(
                bucket,
                key,
                spool,
                reader.bytes_read,
                reader.hexdigest(),
                content_type,
                part_size,
                num_parallel_uploads,
            )

    def _put_hashed(
        self,
        bucket: str,
        key: str,
        stream: IO[bytes] | Iterable[bytes],
        length: int,
        sha256: str,
        content_type: str,
        part_size: int,
        num_parallel_uploads: int,
    ) -> ObjectInfo:
        where = f"put {bucket}/{key}"
        existing = self._stat_or_none(bucket, key)
        if existing is not None and existing.sha256 == sha256 and (length < 0 or existing.size == length):
            log.debug("%s: identical content already stored, skipped", where)
            return existing
        reader = _HashingReader(stream)
        with _translated(where):
            result = self.client.put_object(
                bucket,
                key,
                reader,  # type: ignore[arg-type]
                length,
                content_type=content_type,
                metadata={SHA256_METADATA: sha256},
                part_size=part_size,
                num_parallel_uploads=num_parallel_uploads,
            )
        digest = reader.hexdigest()
        if digest != sha256:
            self.remove(bucket, key)
            raise StoreError(f"{where}: the bytes hash to {digest}, not the declared {sha256}")
        log.debug("%s: %d bytes, sha256 %s", where, reader.bytes_read, digest)
        return ObjectInfo(bucket, key, reader.bytes_read, digest, content_type, result.etag)

    def put_file(
        self,
        bucket: str,
        key: str,
        path: str | os.PathLike[str],
        *,
        content_type: str = "application/octet-stream",
        part_size: int = DEFAULT_PART_SIZE,
    ) -> ObjectInfo:
        """Upload a file; a no-op when the object already holds the same bytes."""
        digest = sha256_of_file(path)
        size = Path(path).stat().st_size
        with open(path, "rb") as handle:
            return self.put_stream(
                bucket, key, handle, size, content_type=content_type, part_size=part_size, sha256=digest
            )

    def put_bytes(
        self, bucket: str, key: str, data: bytes, *, content_type: str = "application/octet-stream"
    ) -> ObjectInfo:
        """Upload a small in-memory object (a chip, a JSON document); a no-op for identical content."""
        digest = hashlib.sha256(data).hexdigest()
        return self.put_stream(
            bucket, key, io.BytesIO(data), len(data), content_type=content_type, sha256=digest
        )

    def remove(self, bucket: str, key: str) -> None:
        """Delete an object; deleting a missing key is not an error (S3 semantics)."""
        with _translated(f"remove {bucket}/{key}"):
            self.client.remove_object(bucket, key)

    # -- reads ---------------------------------------------------------------------------------------------

    def get_stream(
        self, bucket: str, key: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE, verify: bool = False
    ) -> ObjectChunks:
        """Open an object for reading; missing objects raise ``ObjectNotFound`` here, not on the first chunk."""
        with _translated(f"get {bucket}/{key}"):
            response = self.client.get_object(bucket, key)
        return ObjectChunks(response, bucket, key, chunk_size, verify)

    def download_file(
        self, bucket: str, key: str, path: str | os.PathLike[str], *, verify: bool = True
    ) -> ObjectInfo:
        """Stream an object into a local file (written next to ``path`` and renamed into place when complete)."""
        target = Path(path)
        partial = target.with_name(target.name + ".part")
        try:
            with self.get_stream(bucket, key, verify=verify) as chunks, open(partial, "wb") as handle:
                for chunk in chunks:
                    handle.write(chunk)
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)
        return self.stat(bucket, key)

    def stat(self, bucket: str, key: str) -> ObjectInfo:
        """Size, hash and content type of an object; ``ObjectNotFound`` if it does not exist."""
        with _translated(f"stat {bucket}/{key}"):
            found = self.client.stat_object(bucket, key)
        metadata = found.metadata or {}
        return ObjectInfo(
            bucket=bucket,
            key=key,
            size=int(found.size or 0),
            sha256=metadata.get(f"x-amz-meta-{SHA256_METADATA}"),
            content_type=found.content_type,
            etag=found.etag,
        )

    def exists(self, bucket: str, key: str) -> bool:
        return self._stat_or_none(bucket, key) is not None

    def _stat_or_none(self, bucket: str, key: str) -> ObjectInfo | None:
        try:
            return self.stat(bucket, key)
        except ObjectNotFound:
            return None
