"""The one mapping from exception to HTTP status, registered on the app by ``install``.

Every refusal has a JSON body ``{"error": <kind>, "reason": <sentence>}`` (422 adds ``detail``, the fields that
failed); only real 5xx errors are logged as errors, and never with a request's headers (they carry keys).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from rio_tiler.errors import PointOutsideBounds
from starlette.exceptions import HTTPException as StarletteHTTPException
from tipg.errors import DEFAULT_STATUS_CODES as TIPG_STATUS_CODES
from tipg.errors import MissingDatetimeColumn, MissingGeometryColumn
from titiler.core.errors import DEFAULT_STATUS_CODES as TITILER_STATUS_CODES

from earthgptx.bus import DependencyUnavailable
from earthgptx.store.errors import InvalidRecord

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A refusal with its status, kind and reason (and headers such as ``Retry-After``)."""

    status = 400
    kind = "bad_request"

    def __init__(self, reason: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.headers = headers or {}


class Unauthorized(ApiError):
    status, kind = 401, "unauthorized"


class Forbidden(ApiError):
    status, kind = 403, "forbidden"


class NotFound(ApiError):
    status, kind = 404, "not_found"


class Conflict(ApiError):
    status, kind = 409, "conflict"


class TooLarge(ApiError):
    status, kind = 413, "too_large"


class Invalid(ApiError):
    status, kind = 422, "invalid"


class RateLimited(ApiError):
    status, kind = 429, "rate_limited"


class Unavailable(ApiError):
    status, kind = 503, "unavailable"


class BadGateway(ApiError):
    status, kind = 502, "bad_gateway"


class ErrorBody(BaseModel):
    """What every refusal (4xx, and 503) carries; ``detail`` only with 422 (the fields that failed)."""

    error: str = Field(description="the kind: unauthorized, forbidden, not_found, invalid, rate_limited, ...")
    reason: str = Field(description="a sentence saying what is wrong")
    detail: list[dict[str, Any]] | None = None


ERROR_STATUSES = {
    400: "the request is malformed",
    401: "no API key, or an unknown, malformed or revoked one",
    403: "the API key lacks the scope",
    404: "not found",
    413: "the request body is too large",
    415: "the body's type is not accepted",
    422: "a parameter or the body is not valid",
    429: "past the rate limit (see Retry-After)",
    502: "a service behind this API failed",
    503: "a dependency does not answer; retry later",
}
# Documented on every operation (``FastAPI(responses=...)``), so a client, and the schema test, knows the shape.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text} for status, text in ERROR_STATUSES.items()
}


def body(kind: str, reason: str, **extra: Any) -> dict[str, Any]:
    return {"error": kind, "reason": reason, **extra}


def _answer(
    request: Request, status: int, kind: str, reason: str, headers: Mapping[str, str] | None = None, *,
    cause: object = None, **extra: Any,
) -> JSONResponse:  # fmt: skip
    """The one refusal shape: ``body(kind, reason, **extra)`` with ``status``; 5xx are logged (with ``cause``
    when the client is told less), 401 names the scheme."""
    if status >= 500:
        log.error("%s %s: %s", request.method, request.url.path, cause or reason)
    headers = dict(headers or {})
    if status == 401:
        headers.setdefault("WWW-Authenticate", "Bearer")
    return JSONResponse(body(kind, reason, **extra), status_code=status, headers=headers)


def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return _answer(request, exc.status, exc.kind, exc.reason, exc.headers)


def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    detail = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
        for e in exc.errors()
    ]
    where = ", ".join(".".join(map(str, d["loc"])) for d in detail[:5])
    return _answer(request, 422, "invalid", f"the request is not valid ({where})", detail=detail)


def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    kinds = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 403: "forbidden"}
    kind = kinds.get(exc.status_code, "error" if exc.status_code >= 500 else "bad_request")
    return _answer(request, exc.status_code, kind, str(exc.detail), getattr(exc, "headers", None))


def _refusal(status: int, kind: str | None = None, reason: str | None = None) -> Any:
    """A handler of an exception type: ``status`` with ``kind`` and ``reason`` (default: the exception's text)."""
    kind = kind or {404: "not_found", 422: "invalid", 503: "unavailable"}.get(status, "bad_request")

    def handler(request: Request, exc: Exception) -> JSONResponse:
        return _answer(request, status, kind, reason or str(exc) or _sentence(type(exc)), cause=exc)

    return handler


def _sentence(exc_type: type) -> str:
    """A reason for an exception raised without a message (tipg's ``MissingGeometryColumn()``): its name."""
    return re.sub(r"(?<!^)(?=[A-Z])", " ", exc_type.__name__).lower()


# Routes whose numbers (tile indices, sizes, coordinates, nodata) go straight into the libraries' arithmetic.
_LIBRARY_PATHS = ("/imagery/", "/ogc/")


def _overflow(request: Request, exc: Exception) -> JSONResponse:
    """tipg, titiler, rio-tiler and morecantile raise ``OverflowError`` for numbers too large to compute with
    (a zoom level past any tile matrix, a size past a C long): a 422 on their routes; elsewhere a bug, a 500."""
    if request.url.path.startswith(_LIBRARY_PATHS):
        return _answer(request, 422, "invalid", f"a number in the request is out of range ({exc})")
    log.error("%s %s: unexpected overflow", request.method, request.url.path, exc_info=exc)
    return _answer(request, 500, "error", "internal error")


def install(app: FastAPI) -> None:
    """Register the map on ``app`` (tipg's and titiler's own refusals included, in the same body shape)."""
    for codes in (TIPG_STATUS_CODES, TITILER_STATUS_CODES):
        for exc_type, status in codes.items():
            if status < 500:  # unexpected errors stay logged 500s, not quiet ones
                app.add_exception_handler(exc_type, _refusal(status))
    # Every published collection has a geometry and a time column: tipg raises these only for a column the
    # client named (``geom-column``, ``datetime-column``) that the collection does not have.
    for exc_type in (MissingGeometryColumn, MissingDatetimeColumn):
        app.add_exception_handler(exc_type, _refusal(404))
    app.add_exception_handler(PointOutsideBounds, _refusal(404))
    app.add_exception_handler(OverflowError, _overflow)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(InvalidRecord, _refusal(422))
    app.add_exception_handler(
        DependencyUnavailable, _refusal(503, reason="a store is unavailable; retry later")
    )
    app.add_exception_handler(StarletteHTTPException, _http)
