"""Dependencies of the routes: the service's resources (built once by ``main.create_app``) and its settings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

if TYPE_CHECKING:
    from services.ingest.main import IngestResources


def get_resources(request: Request) -> IngestResources:
    return request.app.state.resources  # type: ignore[no-any-return]


ResourcesDep = Annotated["IngestResources", Depends(get_resources)]
