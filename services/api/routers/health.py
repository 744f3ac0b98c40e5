"""``GET /healthz``: the process answers; ``GET /readyz``: PostGIS, Kafka and MinIO answer."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from services.api.deps import ResourcesDep

router = APIRouter(tags=["health"])


class NotReady(BaseModel):
    status: str
    problems: list[str]


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"model": NotReady, "description": "a dependency does not answer"}})
async def readyz(resources: ResourcesDep) -> Any:
    problems = await run_in_threadpool(resources.problems)
    if problems:
        return JSONResponse({"status": "not ready", "problems": problems}, status_code=503)
    return {"status": "ready"}
