"""Ad-hoc queries: ``POST /v1/queries`` (an instruction and a visual prompt → ``202`` with the query's id,
published to ``queries.requested`` for promptgen) and ``GET /v1/queries/{id}`` (status and answers as a GeoJSON
FeatureCollection). ``?wait=S`` (bounded by ``EGX_API_MAX_WAIT_S``) is a long poll: the answer comes back as soon
as the query is no longer ``pending``, or after S seconds with the state it is in.

The prompt is exactly one of: ``geometry`` (a GeoJSON Point, Polygon or MultiPolygon in lon/lat), ``bbox``
(west, south, east, north) or ``scene_id`` + ``scene_prompt`` (a point, box or polygon in that scene's pixels,
as ``{"type": "box", "box": [x1, y1, x2, y2]}``). States: ``requested`` (published, not yet registered by
promptgen), then promptgen's ``pending``, ``answered`` or ``no_coverage``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import OrderedDict
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Path, Query, Request, Response
from geojson_pydantic import MultiPolygon as GeoJSONMultiPolygon
from geojson_pydantic import Point as GeoJSONPoint
from geojson_pydantic import Polygon as GeoJSONPolygon
from pydantic import BaseModel, Field, field_validator, model_validator
from shapely.geometry import shape
from starlette.concurrency import run_in_threadpool

from earthgptx.v1.events_pb2 import QueryCoverage, QueryRequested
from earthgptx.visual_prompts import dict_to_message
from services.api.deps import Reader, ResourcesDep, Writer
from services.api.errors import Invalid, NotFound, Unavailable
from services.api.routers.aois import checked_geometry

router = APIRouter(prefix="/v1/queries", tags=["queries"])

FINAL = frozenset({"answered", "no_coverage", "failed"})
POLL_S = 0.25
PUBLISH_TIMEOUT_S = 10.0
_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_COVERAGE = {"newest": QueryCoverage.QUERY_COVERAGE_NEWEST, "all": QueryCoverage.QUERY_COVERAGE_ALL}


class QueryIn(BaseModel):
    instruction: str = Field(min_length=1, max_length=2000)
    geometry: GeoJSONPoint | GeoJSONPolygon | GeoJSONMultiPolygon | None = None
    bbox: list[float] | None = Field(default=None, min_length=4, max_length=4)
    scene_id: str | None = Field(default=None, max_length=128)
    scene_prompt: dict[str, Any] | None = None
    coverage: Literal["newest", "all"] = "newest"
    id: str | None = Field(default=None, pattern=_ID_PATTERN, description="your own id: the same id is the same query")

    @field_validator("instruction")
    @classmethod
    def _no_nul(cls, value: str) -> str:
        if "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value

    @model_validator(mode="after")
    def _one_prompt(self) -> QueryIn:
        given = [self.geometry is not None, self.bbox is not None, self.scene_id is not None]
        if sum(given) != 1:
            raise ValueError("give exactly one prompt: geometry, bbox, or scene_id with scene_prompt")
        if (self.scene_id is None) != (self.scene_prompt is None):
            raise ValueError("scene_id and scene_prompt go together")
        return self


class QueryAccepted(BaseModel):
    id: str
    status: str
    status_url: str


def _bbox(values: list[float]) -> list[float]:
    west, south, east, north = values
    if not all(map(lambda v: -180 <= v <= 180, (west, east))) or not all(-90 <= v <= 90 for v in (south, north)):
        raise Invalid("bbox must be west, south, east, north in lon/lat")
    if south >= north:
        raise Invalid("bbox: south must be below north")
    return values


def to_event(body: QueryIn, query_id: str, owner: str) -> QueryRequested:
    """The ``queries.requested`` event of a validated request; ``Invalid`` for a prompt that cannot be used."""
    event = QueryRequested(
        query_id=query_id, instruction=body.instruction, owner=owner, coverage=_COVERAGE[body.coverage]
    )
    if body.geometry is not None:
        if isinstance(body.geometry, GeoJSONPoint):
            point = shape(body.geometry.model_dump(exclude_none=True))
            if not (-180 <= point.x <= 180 and -90 <= point.y <= 90):
                raise Invalid("the point must be lon/lat in EPSG:4326")
        else:
            checked_geometry(body.geometry)
        event.geojson_4326 = body.geometry.model_dump_json(exclude_none=True)
    elif body.bbox is not None:
        event.bbox_4326.extend(_bbox(body.bbox))
    else:
        assert body.scene_id is not None and body.scene_prompt is not None
        try:
            event.scene_prompt.CopyFrom(dict_to_message(body.scene_prompt))
        except ValueError as exc:
            raise Invalid(f"scene_prompt: {exc}") from None
        event.scene_id = body.scene_id
    return event


class _Recent:
    """Ids this process published lately, so a query promptgen has not registered yet reads as ``requested``."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def add(self, query_id: str) -> None:
        self._ids[query_id] = None
        while len(self._ids) > self.size:
            self._ids.popitem(last=False)

    def __contains__(self, query_id: str) -> bool:
        return query_id in self._ids


recent = _Recent()


@router.post("", status_code=202, response_model=QueryAccepted)
async def create_query(
    body: QueryIn, who: Writer, resources: ResourcesDep, request: Request, response: Response
) -> QueryAccepted:
    query_id = body.id or uuid.uuid4().hex
    event = to_event(body, query_id, who.owner or "")
    key = body.scene_id or query_id

    def publish() -> None:
        resources.producer.publish_and_wait(resources.settings.queries_topic, key, event, timeout_s=PUBLISH_TIMEOUT_S)

    try:
        await run_in_threadpool(publish)
    except Exception as exc:  # the producer's errors all mean "not published": the client may retry
        raise Unavailable(f"the query could not be published ({type(exc).__name__}); retry later") from None
    recent.add(query_id)
    url = str(request.url_for("get_query", query_id=query_id).path)
    response.headers["Location"] = url
    return QueryAccepted(id=query_id, status="requested", status_url=url)


_QUERY = sa.text(
    "SELECT id, status, reason, instruction, coverage, scene_id, created_at, answered_at, "
    "ST_AsGeoJSON(geom, 7) AS geojson FROM queries WHERE id = :id"
)
_ANSWERS = sa.text(
    "SELECT r.task_id, r.ordinal, r.scene_id, t.level, t.task, r.answer_text, r.label, r.score, "
    "r.model_version, r.created_at, ST_AsGeoJSON(r.geom, 7) AS geojson "
    "FROM queries AS q JOIN tasks AS t ON t.id = ANY(q.task_ids) JOIN results AS r ON r.task_id = t.id "
    "WHERE q.id = :id ORDER BY t.level, r.task_id, r.ordinal"
)


def _read(resources: Any, query_id: str) -> dict[str, Any] | None:
    with resources.engine.connect() as connection:
        row = connection.execute(_QUERY, {"id": query_id}).first()
        if row is None:
            return None
        answers = connection.execute(_ANSWERS, {"id": query_id}).all()
    features = [
        {
            "type": "Feature",
            "id": f"{a.task_id}-{a.ordinal}",
            "geometry": json.loads(a.geojson) if a.geojson else None,
            "properties": {
                "task_id": a.task_id, "ordinal": a.ordinal, "scene_id": a.scene_id, "level": a.level,
                "task": a.task, "answer": a.answer_text, "label": a.label, "score": a.score,
                "model_version": a.model_version, "created_at": a.created_at.isoformat(),
            },
        }  # fmt: skip
        for a in answers
    ]
    return {
        "id": row.id,
        "status": row.status,
        "reason": row.reason,
        "instruction": row.instruction,
        "coverage": row.coverage,
        "scene_id": row.scene_id,
        "prompt": json.loads(row.geojson) if row.geojson else None,
        "created_at": row.created_at.isoformat(),
        "answered_at": row.answered_at.isoformat() if row.answered_at else None,
        "answers": {"type": "FeatureCollection", "features": features},
    }


@router.get("/{query_id}", name="get_query")
async def get_query(
    query_id: Annotated[str, Path(pattern=_ID_PATTERN)],
    who: Reader,
    resources: ResourcesDep,
    wait: Annotated[float, Query(ge=0, le=300, description="seconds to wait for the answer (long poll)")] = 0,
) -> dict[str, Any]:
    deadline = time.monotonic() + min(wait, resources.settings.max_wait_s)
    while True:
        found = await run_in_threadpool(_read, resources, query_id)
        if found is not None and found["status"] in FINAL:
            return found
        if time.monotonic() >= deadline:
            break
        await asyncio.sleep(POLL_S)
    if found is not None:
        return found
    if query_id in recent:
        return {"id": query_id, "status": "requested", "answers": {"type": "FeatureCollection", "features": []}}
    raise NotFound(f"no query {query_id}")
