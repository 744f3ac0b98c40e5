"""``GET /tiles/{layer}/{z}/{x}/{y}``: vector tiles of scene footprints, results and AOIs for the map, served by
Martin (``deploy/local/martin.sh``, sources = the ``ogc`` schema's views) and passed through here, so the map
has one origin and the API's authentication and rate limit apply (``bench/bench_api.py`` measures the cost)."""

from __future__ import annotations

from typing import Annotated, Literal

import httpx
from fastapi import APIRouter, Path, Response

from services.api.deps import Reader, ResourcesDep
from services.api.errors import Unavailable

router = APIRouter(tags=["tiles"])

MVT = "application/vnd.mapbox-vector-tile"
MAX_ZOOM = 22


@router.get(
    "/tiles/{layer}/{z}/{x}/{y}",
    response_class=Response,
    responses={
        200: {"content": {MVT: {"schema": {"type": "string", "format": "binary"}}}, "description": "the tile"},
        204: {"description": "no feature in this tile, or x/y outside the zoom level's 2^z x 2^z tiles"},
    },
)
async def vector_tile(
    layer: Literal["scenes", "results", "result_points", "aois"],
    z: Annotated[int, Path(ge=0, le=MAX_ZOOM, description="zoom level", examples=[0, 8])],
    x: Annotated[int, Path(ge=0, lt=2**MAX_ZOOM, description="column, below 2^z", examples=[0, 136])],
    y: Annotated[int, Path(ge=0, lt=2**MAX_ZOOM, description="row, below 2^z", examples=[0, 86])],
    who: Reader,
    resources: ResourcesDep,
) -> Response:
    if x >= 2**z or y >= 2**z:
        return Response(status_code=204)
    try:
        # identity: Martin would otherwise compress each tile for this hop only to have it decompressed here.
        upstream = await resources.http.get(
            f"{resources.settings.martin_url}/{layer}/{z}/{x}/{y}", headers={"Accept-Encoding": "identity"}
        )
    except httpx.HTTPError as exc:
        raise Unavailable(f"the tile server does not answer ({type(exc).__name__})") from None
    if upstream.status_code == 204 or not upstream.content:
        return Response(status_code=204)
    if upstream.status_code != 200:
        raise Unavailable(f"the tile server answered {upstream.status_code}")
    return Response(upstream.content, media_type=MVT, headers={"Cache-Control": "no-cache"})
