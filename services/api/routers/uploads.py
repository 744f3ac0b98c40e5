"""Uploads through the API: ``POST /v1/uploads`` streams the body to the ingest service's ``POST /v1/scenes``
(same query parameters, same content type, never held whole in memory) under the API's authentication, and
``GET /v1/uploads/{scene_id}`` asks ingest where that scene stands. Ingest's answer (202, 200, 413, 415, 422,
404) is passed back with its status and body, its status URL rewritten to this API's (``/v1/uploads/{id}``);
ingest not answering is a 503."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel

from services.api.deps import Reader, ResourcesDep, Writer
from services.api.errors import BadGateway, Unavailable

router = APIRouter(prefix="/v1/uploads", tags=["uploads"])

SCENE_ID = r"^[A-Za-z0-9._-]+$"
MODALITIES = ["optical", "multispectral", "sar", "infrared"]
_METADATA: dict[str, Any] = {
    "modality": {"type": "string", "enum": MODALITIES},
    "bands": {"type": "string", "description": "band names, comma-separated (red,green,blue)"},
    "sensor": {"type": "string"},
    "acquired_at": {"type": "string", "format": "date-time"},
    "source": {"type": "string"},
    "product_level": {"type": "string"},
}
# The body is streamed to ingest, not parsed here, so FastAPI cannot derive it: it is written out for the schema.
UPLOAD_BODY: dict[str, Any] = {
    "required": True,
    "description": "a GeoTIFF: raw (metadata as query parameters) or multipart (metadata as form fields, or as "
    "one JSON part 'metadata')",
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {
                    "file": {"type": "string", "format": "binary", "description": "the GeoTIFF"},
                    **_METADATA,
                    "metadata": {"type": "string", "description": "the metadata fields as one JSON object"},
                },
            },
            "encoding": {"file": {"contentType": "image/tiff"}},
        },
        "image/tiff": {"schema": {"type": "string", "format": "binary"}},
    },
}
UPLOAD_PARAMETERS = [
    {"name": name, "in": "query", "required": False, "schema": schema, "description": "with a raw body"}
    for name, schema in _METADATA.items()
]


class UploadAccepted(BaseModel):
    scene_id: str
    status: str
    status_url: str
    duplicate: bool | None = None


class UploadStatus(BaseModel):
    scene_id: str
    status: str
    reason: str | None = None
    channel: str | None = None
    name: str | None = None
    size_bytes: int | None = None
    sha256: str | None = None
    received_at: str | None = None
    updated_at: str | None = None
    ingested_at: str | None = None


def _answer(request: Request, upstream: httpx.Response) -> Response:
    """Ingest's answer as this API's: same status and body; a status URL of ingest's becomes this API's.
    Ingest failing (5xx) is a 502 here, logged, its body not shown."""
    if upstream.status_code >= 500:
        raise BadGateway(f"the ingest service failed ({upstream.status_code})")
    media_type = upstream.headers.get("content-type")
    content = upstream.content
    headers = {}
    try:
        found = json.loads(content) if media_type == "application/json" else None
    except ValueError:
        found = None
    if isinstance(found, dict) and isinstance(found.get("scene_id"), str):
        url = str(request.url_for("upload_status", scene_id=found["scene_id"]).path)
        if "status_url" in found:
            found["status_url"] = url
            content = json.dumps(found).encode()
        if "location" in upstream.headers:
            headers["Location"] = url
    return Response(content, status_code=upstream.status_code, media_type=media_type, headers=headers)


@router.post(
    "",
    status_code=202,
    response_model=UploadAccepted,
    responses={200: {"model": UploadAccepted, "description": "the same file was uploaded before"}},
    openapi_extra={"requestBody": UPLOAD_BODY, "parameters": UPLOAD_PARAMETERS},
)
async def upload(request: Request, who: Writer, resources: ResourcesDep) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        async for chunk in request.stream():
            yield chunk

    headers = {"content-type": request.headers.get("content-type", "application/octet-stream")}
    if "content-length" in request.headers:
        headers["content-length"] = request.headers["content-length"]
    try:
        upstream = await resources.http.post(
            f"{resources.settings.ingest_url}/v1/scenes",
            params=list(request.query_params.multi_items()),
            content=chunks(),
            headers=headers,
        )
    except httpx.HTTPError as exc:
        raise Unavailable(f"the ingest service does not answer ({type(exc).__name__})") from None
    return _answer(request, upstream)


@router.get("/{scene_id}", name="upload_status", response_model=UploadStatus)
async def upload_status(
    scene_id: Annotated[str, Path(max_length=128, pattern=SCENE_ID)], request: Request, who: Reader,
    resources: ResourcesDep,
) -> Response:  # fmt: skip
    try:
        upstream = await resources.http.get(f"{resources.settings.ingest_url}/v1/scenes/{scene_id}")
    except httpx.HTTPError as exc:
        raise Unavailable(f"the ingest service does not answer ({type(exc).__name__})") from None
    return _answer(request, upstream)
