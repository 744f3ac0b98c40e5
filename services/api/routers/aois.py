"""Standing queries: ``POST /v1/aois`` (create), ``GET /v1/aois`` (list), ``GET /v1/aois/{id}``,
``POST /v1/aois/{id}/deactivate``. Geometry is GeoJSON (Polygon or MultiPolygon, lon/lat, valid and within
the world's bounds); a key may deactivate only the AOIs it created."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Annotated, Any

import shapely
import sqlalchemy as sa
from fastapi import APIRouter, Query, Request, Response
from geojson_pydantic import MultiPolygon as GeoJSONMultiPolygon
from geojson_pydantic import Polygon as GeoJSONPolygon
from pydantic import BaseModel, Field, field_validator
from shapely.geometry import shape
from starlette.concurrency import run_in_threadpool

from earthgptx.store.models import Aoi
from earthgptx.store.records import AoiRecord
from services.api.deps import Reader, ResourcesDep, Writer
from services.api.errors import Forbidden, Invalid, NotFound

router = APIRouter(prefix="/v1/aois", tags=["aois"])

MAX_VERTICES = 10_000


class AoiIn(BaseModel):
    name: str | None = Field(default=None, max_length=200)
    instruction: str = Field(min_length=1, max_length=2000)
    geometry: GeoJSONPolygon | GeoJSONMultiPolygon

    @field_validator("instruction", "name")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value


class AoiOut(BaseModel):
    id: str
    name: str | None
    instruction: str
    active: bool
    created_at: datetime
    updated_at: datetime
    geometry: dict[str, Any]


def checked_geometry(geometry: GeoJSONPolygon | GeoJSONMultiPolygon) -> shapely.Geometry:
    """A shapely geometry from validated GeoJSON; ``Invalid`` when it is not a usable lon/lat area."""
    geom = shape(geometry.model_dump(exclude_none=True))
    if shapely.get_num_coordinates(geom) > MAX_VERTICES:
        raise Invalid(f"the geometry has more than {MAX_VERTICES} vertices")
    if not geom.is_valid:
        raise Invalid(f"the geometry is not valid: {shapely.is_valid_reason(geom)}")
    minx, miny, maxx, maxy = geom.bounds
    if minx < -180 or maxx > 180 or miny < -90 or maxy > 90:
        raise Invalid("coordinates must be lon/lat in EPSG:4326 (lon in [-180, 180], lat in [-90, 90])")
    if geom.area == 0:
        raise Invalid("the geometry has no area")
    return geom


_COLUMNS = (
    Aoi.id, Aoi.name, Aoi.instruction, Aoi.active, Aoi.created_at, Aoi.updated_at,
    sa.func.ST_AsGeoJSON(Aoi.geom, 7).label("geojson"),
)  # fmt: skip


def _out(row: Any) -> AoiOut:
    return AoiOut(
        id=row.id, name=row.name, instruction=row.instruction, active=row.active,
        created_at=row.created_at, updated_at=row.updated_at, geometry=json.loads(row.geojson),
    )  # fmt: skip


def _get(resources: Any, aoi_id: str) -> tuple[AoiOut, str]:
    with resources.engine.connect() as connection:
        row = connection.execute(sa.select(*_COLUMNS, Aoi.owner).where(Aoi.id == aoi_id)).first()
    if row is None:
        raise NotFound(f"no AOI {aoi_id}")
    return _out(row), row.owner


@router.post("", status_code=201, response_model=AoiOut)
async def create_aoi(body: AoiIn, who: Writer, resources: ResourcesDep, request: Request, response: Response) -> AoiOut:
    geom = checked_geometry(body.geometry)
    aoi_id = uuid.uuid4().hex
    record = AoiRecord(id=aoi_id, geom=geom, instruction=body.instruction, owner=who.owner or "", name=body.name)
    await run_in_threadpool(resources.repository.upsert_aoi, record)
    response.headers["Location"] = str(request.url_for("get_aoi", aoi_id=aoi_id).path)
    out, _ = await run_in_threadpool(_get, resources, aoi_id)
    return out


@router.get("", response_model=list[AoiOut])
async def list_aois(
    who: Reader,
    resources: ResourcesDep,
    active: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[AoiOut]:
    query = sa.select(*_COLUMNS).order_by(Aoi.created_at, Aoi.id).limit(limit).offset(offset)
    if active is not None:
        query = query.where(Aoi.active.is_(active))

    def rows() -> list[AoiOut]:
        with resources.engine.connect() as connection:
            return [_out(row) for row in connection.execute(query)]

    return await run_in_threadpool(rows)


@router.get("/{aoi_id}", name="get_aoi", response_model=AoiOut)
async def get_aoi(aoi_id: str, who: Reader, resources: ResourcesDep) -> AoiOut:
    out, _ = await run_in_threadpool(_get, resources, aoi_id)
    return out


@router.post("/{aoi_id}/deactivate", response_model=AoiOut)
async def deactivate_aoi(aoi_id: str, who: Writer, resources: ResourcesDep) -> AoiOut:
    _, owner = await run_in_threadpool(_get, resources, aoi_id)
    if owner != who.owner:
        raise Forbidden("only the key owner who created this AOI may deactivate it")
    await run_in_threadpool(resources.repository.set_aoi_active, aoi_id, False)
    out, _ = await run_in_threadpool(_get, resources, aoi_id)
    return out
