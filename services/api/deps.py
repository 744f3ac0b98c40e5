"""Dependencies of the routes: the service's resources (built once by ``main.create_app``), who is asking
(``Reader``, ``Writer``: authenticated and counted against the rate limit) and the database pool."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from services.api.security import Principal, require_scope

if TYPE_CHECKING:
    from services.api.main import ApiResources

_bearer = HTTPBearer(auto_error=False, description="API key: `Authorization: Bearer egx_<id>_<secret>`")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key (alternative header)")


def get_resources(request: Request) -> ApiResources:
    return request.app.state.resources  # type: ignore[no-any-return]


ResourcesDep = Annotated["ApiResources", Depends(get_resources)]


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def principal(
    request: Request,
    resources: ResourcesDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    header: Annotated[str | None, Security(_header)],
) -> Principal:
    """Who is asking (a verified key, or anonymous), counted against the rate limit."""
    token = bearer.credentials if bearer is not None else header
    if token:
        found = await run_in_threadpool(resources.keys.verify, token, _client(request))
    else:
        found = Principal(None, None, frozenset(), _client(request))
    resources.limiter.hit(found)
    return found


async def reader(who: Annotated[Principal, Depends(principal)], resources: ResourcesDep) -> Principal:
    if resources.settings.reads_need_key:
        require_scope(who, "read")
    return who


async def writer(who: Annotated[Principal, Depends(principal)]) -> Principal:
    require_scope(who, "write")
    return who


Reader = Annotated[Principal, Depends(reader)]
Writer = Annotated[Principal, Depends(writer)]
