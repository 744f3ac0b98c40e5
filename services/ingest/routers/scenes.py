"""``POST /v1/scenes`` (a GeoTIFF and its metadata) and ``GET /v1/scenes/{scene_id}`` (where it stands).

The body is either the raw GeoTIFF (``Content-Type: image/tiff`` or ``application/octet-stream``) with the
metadata as query parameters (``?modality=optical&bands=red,green,blue&acquired_at=...``), or
``multipart/form-data`` with the file in the part ``file`` and the metadata as form fields (or as one JSON part
``metadata``). Either way the file is streamed to a temporary file chunk by chunk (never whole in memory) and
refused (413) as soon as it passes the size limit; a client that goes away mid-upload leaves nothing behind.

Answers: ``202`` with the scene id and its status URL (``Location``); ``200`` when the same file was ingested
before (``duplicate: true``); ``413``/``415``/``422`` with ``{"error", "reason"}`` saying what is wrong.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from earthgptx.scenes import SceneMetadata, SceneRejected, Spool
from services.ingest.deps import ResourcesDep

router = APIRouter(prefix="/v1/scenes", tags=["scenes"])

MAX_FIELD_BYTES = 64 * 1024
FILE_PART = "file"
RAW_TYPES = frozenset({"image/tiff", "image/geotiff", "application/octet-stream", ""})


class _MultipartSink:
    """Feeds a streamed multipart body: the ``file`` part into the spool, the other parts into fields."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self.fields: dict[str, str] = {}
        self.saw_file = False
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._name: str | None = None
        self._filename: str | None = None
        self._value = bytearray()
        self.filename: str | None = None

    def callbacks(self) -> Any:
        return {
            "on_part_begin": self._part_begin,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_header_field": lambda d, s, e: self._add_field(d[s:e]),
            "on_header_value": lambda d, s, e: self._add_value(d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
        }

    def _add_field(self, data: bytes) -> None:
        self._header_field += data

    def _add_value(self, data: bytes) -> None:
        self._header_value += data

    def _part_begin(self) -> None:
        self._headers, self._name, self._filename, self._value = {}, None, None, bytearray()

    def _header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field, self._header_value = b"", b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        self._filename = filename.decode("utf-8", "replace") if filename is not None else None
        if self._name == FILE_PART:
            if self.saw_file:
                raise SceneRejected("more than one 'file' part; send one scene per request")
            self.saw_file = True
            self.filename = self._filename

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._name == FILE_PART:
            self.spool.write(data[start:end])
        else:
            self._value += data[start:end]
            if len(self._value) > MAX_FIELD_BYTES:
                raise SceneRejected(f"form field {self._name!r} is longer than {MAX_FIELD_BYTES} bytes")

    def _part_end(self) -> None:
        if self._name and self._name != FILE_PART:
            self.fields[self._name] = self._value.decode("utf-8", "replace")


def _metadata(values: dict[str, Any]) -> SceneMetadata:
    if "metadata" in values:
        try:
            document = json.loads(values.pop("metadata"))
        except json.JSONDecodeError as exc:
            raise SceneRejected(f"the 'metadata' part is not JSON: {exc}") from exc
        if not isinstance(document, dict):
            raise SceneRejected("the 'metadata' part must be a JSON object")
        values = {**document, **values}
    return SceneMetadata.parse(values)


def _status_url(request: Request, scene_id: str) -> str:
    return str(request.url_for("scene_status", scene_id=scene_id).path)


@router.post("", status_code=202, response_model=None)
async def upload_scene(request: Request, resources: ResourcesDep) -> JSONResponse:
    settings = resources.settings
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > settings.max_upload_bytes:
        raise SceneRejected(f"the upload is larger than the limit of {settings.max_upload_bytes} bytes", kind="too_large")
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    fields: dict[str, Any] = dict(request.query_params)
    name: str | None = None
    with Spool(settings.workdir, settings.max_upload_bytes) as spool:
        try:
            if content_type == b"multipart/form-data":
                boundary = options.get(b"boundary")
                if not boundary:
                    raise SceneRejected("multipart body without a boundary", kind="not_geotiff")
                sink = _MultipartSink(spool)
                parser = MultipartParser(boundary, sink.callbacks())
                async for chunk in request.stream():
                    parser.write(chunk)
                parser.finalize()
                if not sink.saw_file:
                    raise SceneRejected("the multipart body has no 'file' part", kind="not_geotiff")
                fields.update(sink.fields)
                name = sink.filename
            elif content_type.decode() in RAW_TYPES:
                async for chunk in request.stream():
                    spool.write(chunk)
            else:
                raise SceneRejected(
                    f"content type {content_type.decode()!r}: send image/tiff or multipart/form-data",
                    kind="not_geotiff",
                )
        except ClientDisconnect:
            # The client went away: the spool removes the partial file; there is nobody to answer.
            return JSONResponse({"error": "disconnected"}, status_code=400)
        received = spool.finish()
    try:
        if name is not None and "\x00" in name:
            raise SceneRejected("the file name contains a NUL character")
        metadata = _metadata(fields)
    except SceneRejected:
        received.discard()
        raise
    accepted = await run_in_threadpool(resources.uploads.accept, received, metadata, name)
    url = _status_url(request, accepted.scene_id)
    body = {"scene_id": accepted.scene_id, "status": accepted.status, "status_url": url}
    if accepted.duplicate:
        return JSONResponse({**body, "duplicate": True}, status_code=200)
    return JSONResponse(body, status_code=202, headers={"Location": url})


@router.get("/{scene_id}", name="scene_status")
async def scene_status(scene_id: str, resources: ResourcesDep) -> JSONResponse:
    record = await run_in_threadpool(resources.catalog.get, scene_id)
    if record is None:
        return JSONResponse({"error": "not_found", "reason": f"no scene {scene_id}"}, status_code=404)
    body: dict[str, Any] = {
        "scene_id": record.scene_id,
        "status": record.status,
        "reason": record.reason,
        "channel": record.channel,
        "name": record.name,
        "size_bytes": record.size_bytes,
        "sha256": record.sha256,
        "received_at": record.received_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
        "ingested_at": record.ingested_at.isoformat() if record.ingested_at else None,
    }
    return JSONResponse(body)
