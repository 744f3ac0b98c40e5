"""The one mapping from exception to HTTP status, registered on the app by ``install``.

Every refusal has a JSON body ``{"error": <kind>, "reason": <sentence>}`` (422 adds ``detail``, the fields that
failed); only real 5xx errors are logged as errors, and never with a request's headers (they carry keys).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
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


def body(kind: str, reason: str, **extra: Any) -> dict[str, Any]:
    return {"error": kind, "reason": reason, **extra}


def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    if exc.status >= 500:
        log.error("%s %s: %s", request.method, request.url.path, exc.reason)
    headers = dict(exc.headers)
    if exc.status == 401:
        headers.setdefault("WWW-Authenticate", "Bearer")
    return JSONResponse(body(exc.kind, exc.reason), status_code=exc.status, headers=headers)


def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    detail = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
        for e in exc.errors()
    ]
    where = ", ".join(".".join(map(str, d["loc"])) for d in detail[:5])
    return JSONResponse(body("invalid", f"the request is not valid ({where})", detail=detail), status_code=422)


def _invalid_record(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(body("invalid", str(exc)), status_code=422)


def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.error("%s %s: %s", request.method, request.url.path, exc)
    return JSONResponse(body("unavailable", "a store is unavailable; retry later"), status_code=503)


def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    kinds = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 403: "forbidden"}
    kind = kinds.get(exc.status_code, "error" if exc.status_code >= 500 else "bad_request")
    return JSONResponse(
        body(kind, str(exc.detail)), status_code=exc.status_code, headers=getattr(exc, "headers", None)
    )


def _library(status: int) -> Any:
    kind = {404: "not_found", 422: "invalid"}.get(status, "bad_request")

    def handler(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(body(kind, str(exc)), status_code=status)

    return handler


def install(app: FastAPI) -> None:
    """Register the map on ``app`` (tipg's and titiler's own refusals included, in the same body shape)."""
    for codes in (TIPG_STATUS_CODES, TITILER_STATUS_CODES):
        for exc_type, status in codes.items():
            if status < 500:  # unexpected errors stay logged 500s, not quiet ones
                app.add_exception_handler(exc_type, _library(status))
    # Every published collection has a geometry and a time column: tipg raises these only for a column the
    # client named (``geom-column``, ``datetime-column``) that the collection does not have.
    for exc_type in (MissingGeometryColumn, MissingDatetimeColumn):
        app.add_exception_handler(exc_type, _library(404))
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(InvalidRecord, _invalid_record)
    app.add_exception_handler(DependencyUnavailable, _unavailable)
    app.add_exception_handler(StarletteHTTPException, _http)
