"""OGC API Features (and Tiles) by tipg, mounted into the API: which collections exist is decided by the ``ogc``
schema's views (migration 0003); this module only mounts tipg's router and tightens three of its parameters,
whose bad values tipg lets through as 500s: a non-numeric ``bbox``, a ``datetime`` that is not RFC 3339, a
``filter`` that does not parse, and tile indices outside any tile matrix. Each is a 422 here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from ciso8601 import parse_rfc3339
from fastapi import FastAPI, Path, Query
from fastapi.params import Depends
from morecantile import Tile
from tipg.dependencies import FilterLang, TileParams
from tipg.dependencies import bbox_query as tipg_bbox_query
from tipg.dependencies import datetime_query as tipg_datetime_query
from tipg.dependencies import filter_query as tipg_filter_query
from tipg.factory import Endpoints

from services.api.errors import Invalid

MAX_ZOOM = 24


def bbox_query(bbox: Annotated[str | None, Query(description="west,south,east,north (lon/lat)")] = None) -> Any:
    try:
        return tipg_bbox_query(bbox)
    except ValueError:
        raise Invalid(f"bbox must be four (or six) comma-separated numbers, got {bbox!r}") from None


def datetime_query(
    datetime: Annotated[str | None, Query(description="an RFC 3339 instant, or start/end with '..' for open")] = None,
) -> Any:
    parts = tipg_datetime_query(datetime)
    for part in parts or ():
        if part not in ("..", ""):
            try:
                parse_rfc3339(part)
            except ValueError:
                raise Invalid(f"datetime must be RFC 3339 (2025-06-01T00:00:00Z) or an interval, got {part!r}") from None
    return parts


def filter_query(
    query: Annotated[str | None, Query(description="CQL2 filter", alias="filter")] = None,
    filter_lang: Annotated[FilterLang | None, Query(description="cql2-text or cql2-json", alias="filter-lang")] = None,
) -> Any:
    try:
        return tipg_filter_query(query, filter_lang)
    except Exception as exc:  # cql2 raises plain Exception for every parse error
        raise Invalid(f"filter is not a valid CQL2 expression: {exc}") from None


def tile_params(
    z: Annotated[int, Path(ge=0, le=MAX_ZOOM, description="zoom level")],
    x: Annotated[int, Path(ge=0, lt=2**MAX_ZOOM, description="column")],
    y: Annotated[int, Path(ge=0, lt=2**MAX_ZOOM, description="row")],
) -> Tile:
    return Tile(x, y, z)


def mount(app: FastAPI, prefix: str, *, dependencies: Sequence[Depends] = ()) -> None:
    endpoints = Endpoints(title="EarthGPT-X OGC API", router_prefix=prefix, with_tiles_viewer=False)
    app.include_router(endpoints.router, prefix=prefix, dependencies=list(dependencies))
    app.dependency_overrides[tipg_bbox_query] = bbox_query
    app.dependency_overrides[tipg_filter_query] = filter_query
    app.dependency_overrides[tipg_datetime_query] = datetime_query
    app.dependency_overrides[TileParams] = tile_params
