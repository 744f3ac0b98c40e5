"""Throwaway MinIO buckets: an ``ObjectStore`` whose scenes and chips buckets are unique, emptied and removed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from earthgptx.settings import ObjectStoreSettings
from earthgptx.store.objects import ObjectStore


@contextmanager
def throwaway_object_store(prefix: str = "egx-test") -> Iterator[ObjectStore]:
    """An ``ObjectStore`` on the stack's MinIO with buckets ``<prefix>-scenes-<unique>`` and ``-chips-``."""
    suffix = uuid.uuid4().hex[:10]
    settings = ObjectStoreSettings(  # type: ignore[call-arg]
        scenes_bucket=f"{prefix}-scenes-{suffix}", chips_bucket=f"{prefix}-chips-{suffix}"
    )
    object_store = ObjectStore(settings)
    object_store.ensure_buckets()
    try:
        yield object_store
    finally:
        for bucket in (settings.scenes_bucket, settings.chips_bucket):
            for found in object_store.client.list_objects(bucket, recursive=True):
                object_store.client.remove_object(bucket, found.object_name)
            object_store.client.remove_bucket(bucket)
