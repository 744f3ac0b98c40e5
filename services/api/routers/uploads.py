"""Uploads through the API: ``POST /v1/uploads`` streams the body to the ingest service's ``POST /v1/scenes``
(same query parameters, same content type, never held whole in memory) under the API's authentication, and
``GET /v1/uploads/{scene_id}`` asks ingest where that scene stands. Ingest's answer (202, 200, 413, 415, 422)
is passed back as it is; ingest not answering is a 503."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import httpx
from fastapi import APIRouter, Path, Request, Response

from services.api.deps import Reader, ResourcesDep, Writer
from services.api.errors import Unavailable

router = APIRouter(prefix="/v1/uploads", tags=["uploads"])

_PASSED = ("content-type", "location")


def _answer(upstream: httpx.Response, body: bytes) -> Response:
    headers = {k: v for k, v in upstream.headers.items() if k.lower() in _PASSED}
    return Response(body, status_code=upstream.status_code, headers=headers)


@router.post("", status_code=202, responses={413: {}, 415: {}, 422: {}, 503: {}})
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
    return _answer(upstream, upstream.content)


@router.get("/{scene_id}", responses={404: {}, 503: {}})
async def upload_status(
    scene_id: Annotated[str, Path(max_length=128, pattern=r"^[A-Za-z0-9._-]+$")], who: Reader, resources: ResourcesDep
) -> Response:
    try:
        upstream = await resources.http.get(f"{resources.settings.ingest_url}/v1/scenes/{scene_id}")
    except httpx.HTTPError as exc:
        raise Unavailable(f"the ingest service does not answer ({type(exc).__name__})") from None
    return _answer(upstream, upstream.content)
