"""ObjectStore against the real MinIO of the local stack (and a few checks that need no server)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import socket
import threading
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import SecretStr

from earthgptx.settings import ObjectStoreSettings
from earthgptx.store.errors import ObjectNotFound, StoreError, StoreUnavailable
from earthgptx.store.objects import MIN_PART_SIZE, ObjectStore, _HashingReader

MiB = 1024 * 1024


def _random_chunks(total: int, chunk: int, seed: int) -> Iterator[bytes]:
    """Deterministic pseudo-random bytes in uneven chunks, so part boundaries never line up with them."""
    rng = np.random.default_rng(seed)
    sent = 0
    while sent < total:
        size = min(total - sent, chunk + int(rng.integers(0, 4096)))
        yield rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        sent += size


def _count_uploads(store: ObjectStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the keys the SDK is asked to upload from now on."""
    uploads: list[str] = []
    real_put = store.client.put_object

    def counting_put(bucket: str, key: str, *args: Any, **kwargs: Any) -> Any:
        uploads.append(key)
        return real_put(bucket, key, *args, **kwargs)

    monkeypatch.setattr(store.client, "put_object", counting_put)
    return uploads


@pytest.fixture(scope="module")
def store(object_store: ObjectStore) -> ObjectStore:
    """Buckets of this module's own (tests/conftest.py)."""
    return object_store


@pytest.mark.minio
def test_streamed_round_trip_of_a_multi_megabyte_object(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket, key, total = store.settings.scenes_bucket, "round-trip/12mb.bin", 12 * MiB
    expected = hashlib.sha256()
    for chunk in _random_chunks(total, 256 * 1024, seed=7):
        expected.update(chunk)

    # Unknown length and hash: spooled to learn the hash, then uploaded in 5 MiB parts with it as metadata.
    info = store.put_stream(bucket, key, _random_chunks(total, 256 * 1024, seed=7), part_size=MIN_PART_SIZE)
    assert info.size == total
    assert info.sha256 == expected.hexdigest()

    stat = store.stat(bucket, key)
    assert stat.size == total
    assert stat.sha256 == expected.hexdigest()  # x-amz-meta-sha256 as stored by the server
    assert stat.etag is not None and stat.etag.endswith("-3")  # three parts went up

    got = hashlib.sha256()
    received = largest = 0
    tracemalloc.start()
    try:
        with store.get_stream(bucket, key, chunk_size=256 * 1024, verify=True) as chunks:
            for chunk in chunks:
                got.update(chunk)
                received += len(chunk)
                largest = max(largest, len(chunk))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert received == total
    assert got.hexdigest() == expected.hexdigest()
    assert largest <= 256 * 1024
    assert peak < 4 * MiB, f"reading held {peak} bytes at once; it should stream"

    # A re-delivered upload of the same bytes leaves the stored object alone.
    uploads = _count_uploads(store, monkeypatch)
    again = store.put_stream(bucket, key, _random_chunks(total, 256 * 1024, seed=7), part_size=MIN_PART_SIZE)
    assert again.sha256 == expected.hexdigest()
    assert uploads == []


@pytest.mark.minio
def test_declared_hash_is_checked_against_the_bytes(store: ObjectStore) -> None:
    bucket, key = store.settings.chips_bucket, "declared/wrong.bin"
    data = b"chip bytes" * 1000
    with pytest.raises(StoreError, match="hash"):
        store.put_stream(
            bucket, key, io.BytesIO(data), len(data), sha256=hashlib.sha256(b"other").hexdigest()
        )
    assert not store.exists(bucket, key)

    info = store.put_stream(bucket, key, io.BytesIO(data), len(data), sha256=hashlib.sha256(data).hexdigest())
    assert store.stat(bucket, key).sha256 == info.sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.minio
def test_re_putting_identical_content_is_a_no_op(
    store: ObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket, key = store.settings.scenes_bucket, "idempotent/scene.tif"
    path = tmp_path / "scene.tif"
    path.write_bytes(b"".join(_random_chunks(6 * MiB, 64 * 1024, seed=3)))

    uploads = _count_uploads(store, monkeypatch)
    first = store.put_file(bucket, key, path, content_type="image/tiff")
    second = store.put_file(bucket, key, path, content_type="image/tiff")
    assert second.sha256 == first.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert uploads == [key]  # the second put found the same hash and sent nothing

    path.write_bytes(b"different content")
    third = store.put_file(bucket, key, path)
    assert third.sha256 == hashlib.sha256(b"different content").hexdigest()
    assert store.stat(bucket, key).size == len(b"different content")

    downloaded = tmp_path / "back.tif"
    assert store.download_file(bucket, key, downloaded).sha256 == third.sha256
    assert downloaded.read_bytes() == b"different content"


@pytest.mark.minio
def test_missing_objects_raise_object_not_found(store: ObjectStore) -> None:
    bucket = store.settings.scenes_bucket
    assert not store.exists(bucket, "no/such/key")
    with pytest.raises(ObjectNotFound):
        store.stat(bucket, "no/such/key")
    with pytest.raises(ObjectNotFound):
        store.get_stream(bucket, "no/such/key")
    with pytest.raises(ObjectNotFound):
        store.get_stream(f"egx-missing-{uuid.uuid4().hex[:8]}", "key")


@pytest.mark.minio
def test_ensure_buckets_is_idempotent(store: ObjectStore) -> None:
    extra = f"egx-test-extra-{uuid.uuid4().hex[:8]}"
    try:
        first = store.ensure_buckets(extra)
        second = store.ensure_buckets(extra)
        assert first == second == [store.settings.scenes_bucket, store.settings.chips_bucket, extra]
        assert all(store.client.bucket_exists(name) for name in first)
    finally:
        store.client.remove_bucket(extra)


def test_unreachable_server_is_transient() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = ObjectStoreSettings(
        endpoint=f"127.0.0.1:{port}", access_key=SecretStr("test-user"), secret_key=SecretStr("test-secret")
    )
    store = ObjectStore(settings, retries=0, connect_timeout_s=1)
    with pytest.raises(StoreUnavailable):
        store.stat("scenes", "key")
    with pytest.raises(StoreUnavailable):
        store.put_stream("scenes", "key", io.BytesIO(b"x"), 1)
    assert not issubclass(StoreUnavailable, StoreError)  # `except StoreError` must not swallow outages


def test_a_server_that_never_answers_is_an_outage_after_the_read_timeout() -> None:
    """MinIO stopped mid-request can leave a connection open and silent (seen in the ingest chaos test): the
    request must end as StoreUnavailable after ``EGX_S3_READ_TIMEOUT_S``, not hang the consumer."""
    held: list[socket.socket] = []
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]

        def hold() -> None:  # accept and never answer
            with contextlib.suppress(OSError):
                held.append(server.accept()[0])

        thread = threading.Thread(target=hold, daemon=True)
        thread.start()
        settings = ObjectStoreSettings(endpoint=f"127.0.0.1:{port}", access_key=SecretStr("test-user"),
                                       secret_key=SecretStr("test-secret"), read_timeout_s=0.5)
        store = ObjectStore(settings, retries=0, connect_timeout_s=1)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            store.stat("scenes", "key")
        assert time.monotonic() - started < 10, "the read timeout of the settings was not applied"
        assert held, "the request never reached the silent server"
        for connection in held:
            connection.close()


def test_hashing_reader_reassembles_uneven_chunks() -> None:
    chunks = [b"a" * 5, b"", b"bc" * 7, b"d", b"e" * 100]
    reader = _HashingReader(chunks)
    pieces = []
    while piece := reader.read(8):
        assert len(piece) <= 8
        pieces.append(piece)
    data = b"".join(chunks)
    assert b"".join(pieces) == data
    assert reader.bytes_read == len(data)
    assert reader.hexdigest() == hashlib.sha256(data).hexdigest()


def test_part_size_below_the_s3_minimum_is_refused() -> None:
    settings = ObjectStoreSettings(access_key=SecretStr("u"), secret_key=SecretStr("p"))
    with pytest.raises(ValueError, match="part_size"):
        ObjectStore(settings).put_stream("b", "k", io.BytesIO(b"x"), 1, part_size=MIN_PART_SIZE - 1)
