"""What a ground station says about a scene (modality, sensor, band names, acquisition time, source, product level).

It arrives as HTTP form fields or a JSON body part, as object tags or a sidecar JSON of a dropped file; values are
strings or JSON values. ``SceneMetadata.parse`` accepts both (band names as a list, or as text separated by commas
or spaces, since S3 tag values cannot hold commas; times as ISO 8601) and refuses anything it cannot read with a ``SceneRejected`` naming the field. Keys it does not know
are kept in ``extra`` (they go into the STAC item's properties), never silently dropped.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from earthgptx.scenes.errors import SceneRejected

__all__ = ["METADATA_FIELDS", "SceneMetadata", "parse_sidecar"]

METADATA_FIELDS = ("modality", "sensor", "bands", "acquired_at", "source", "product_level")
_MAX_TEXT = 200


def _text(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise SceneRejected(f"metadata {name!r} must be text, got {type(value).__name__}")
    text = value.strip()
    if len(text) > _MAX_TEXT:
        raise SceneRejected(f"metadata {name!r} is longer than {_MAX_TEXT} characters")
    return text or None


def _bands(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise SceneRejected(f"metadata 'bands' is not a JSON list: {exc}") from exc
        else:
            # Commas, or spaces where commas are not allowed (S3 object tags).
            value = [part for part in re.split(r"[,\s]+", text) if part]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v.strip() for v in value):
        raise SceneRejected("metadata 'bands' must be a list of band names (or comma-separated names)")
    return tuple(v.strip() for v in value) or None


def _time(value: Any) -> dt.datetime | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError as exc:
            raise SceneRejected(f"metadata 'acquired_at' {value!r} is not an ISO 8601 time") from exc
    else:
        raise SceneRejected(f"metadata 'acquired_at' must be an ISO 8601 time, got {type(value).__name__}")
    # A time without a zone is taken as UTC, the convention of every satellite product.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class SceneMetadata:
    modality: str | None = None
    sensor: str | None = None
    bands: tuple[str, ...] | None = None
    acquired_at: dt.datetime | None = None
    source: str | None = None
    product_level: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, values: Mapping[str, Any]) -> SceneMetadata:
        """Metadata from form fields, tags or a JSON object; ``SceneRejected`` naming the field it cannot read."""
        _refuse_nul(values)
        modality = _text("modality", values.get("modality"))
        extra = {
            str(k): str(v)[:_MAX_TEXT] for k, v in values.items() if k not in METADATA_FIELDS and v is not None
        }
        return cls(
            modality=modality.lower() if modality else None,
            sensor=_text("sensor", values.get("sensor")),
            bands=_bands(values.get("bands")),
            acquired_at=_time(values.get("acquired_at")),
            source=_text("source", values.get("source")),
            product_level=_text("product_level", values.get("product_level")),
            extra=extra,
        )

    def merged(self, fallback: SceneMetadata) -> SceneMetadata:
        """These values, with the unset ones taken from ``fallback`` (the request wins over the file)."""
        return SceneMetadata(
            modality=self.modality or fallback.modality,
            sensor=self.sensor or fallback.sensor,
            bands=self.bands or fallback.bands,
            acquired_at=self.acquired_at or fallback.acquired_at,
            source=self.source or fallback.source,
            product_level=self.product_level or fallback.product_level,
            extra={**fallback.extra, **self.extra},
        )

    def to_json(self) -> dict[str, Any]:
        """As stored with the ingest record (JSON values only)."""
        values = asdict(self)
        values["bands"] = list(self.bands) if self.bands else None
        values["acquired_at"] = self.acquired_at.isoformat() if self.acquired_at else None
        return {k: v for k, v in values.items() if v not in (None, {}, [])}


def _refuse_nul(value: Any, where: str = "metadata") -> None:
    """NUL characters cannot be stored (PostgreSQL text and JSONB refuse them): refuse them here, by field."""
    if isinstance(value, str):
        if "\x00" in value:
            raise SceneRejected(f"{where} contains a NUL character")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            name = str(key)
            if "\x00" in name:
                raise SceneRejected(f"a {where} field name contains a NUL character")
            _refuse_nul(item, f"metadata field {name!r}")
    elif isinstance(value, (list, tuple)):
        for item in value:
            _refuse_nul(item, where)


def parse_sidecar(data: bytes) -> SceneMetadata:
    """A sidecar JSON file (an object of metadata fields); ``SceneRejected`` when it is not one."""
    try:
        values = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SceneRejected(f"sidecar metadata is not readable JSON: {exc}") from exc
    if not isinstance(values, dict):
        raise SceneRejected(f"sidecar metadata must be a JSON object, got {type(values).__name__}")
    return SceneMetadata.parse(values)
