"""What prompt generation reads and writes in PostGIS besides the shared repository: scenes to tile, the tasks and
answers of one tile (for the next level of the cascade), standing queries (AOIs) and ad-hoc queries.

Writes are idempotent, keyed by the caller's ids: a query is inserted once (``DO NOTHING``) and its tasks set
once; a query becomes ``answered`` when every one of its tasks is ``done`` (``mark_answered``, safe to call for
any task, any number of times), or ``no_coverage`` at once when no scene covers it.

Errors are the store's (``StoreUnavailable`` to retry, ``StoreError`` otherwise), through the repository's
translation.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa
from affine import Affine
from geoalchemy2.shape import to_shape
from shapely.geometry.base import BaseGeometry
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from earthgptx.store.models import Aoi, Query, Result, Scene, Task
from earthgptx.store.records import AoiRecord, TaskRecord
from earthgptx.store.repository import Repository, _translated, ewkb_hex

__all__ = ["PipelineStore", "QueryRow", "SceneInfo", "StoredAnswer", "StoredAoi", "TileTask"]

_queries = cast(sa.Table, Query.__table__)
_tasks = cast(sa.Table, Task.__table__)


@dataclass(frozen=True)
class SceneInfo:
    """What tiling and prompting need to know about a scene."""

    id: str
    modality: str
    bands: tuple[str, ...]
    dtype: str
    width: int
    height: int
    crs: str | None
    transform: Affine | None
    footprint: BaseGeometry | None
    acquired_at: dt.datetime | None
    object_bucket: str
    object_key: str


@dataclass(frozen=True)
class StoredAoi:
    id: str
    geom: BaseGeometry
    instruction: str


@dataclass(frozen=True)
class TileTask:
    """A task of one tile, as stored."""

    id: str
    level: int
    task: str
    instruction: str
    status: str
    aoi_id: str | None
    parent_task_id: str | None
    chip_bucket: str | None
    chip_key: str | None
    window: tuple[int, int, int, int]


@dataclass(frozen=True)
class StoredAnswer:
    """One stored result row of a task."""

    task_id: str
    ordinal: int
    label: str | None
    score: float | None
    attributes: dict[str, Any]
    pixel_geom: BaseGeometry | None  # scene pixels
    answer_text: str


@dataclass(frozen=True)
class QueryRow:
    id: str
    status: str
    task_ids: tuple[str, ...]
    reason: str | None


def _scene_info(scene: Scene) -> SceneInfo:
    transform = Affine(*scene.transform[:6]) if scene.transform else None
    return SceneInfo(
        id=scene.id,
        modality=scene.modality,
        bands=tuple(scene.bands),
        dtype=scene.dtype,
        width=scene.width,
        height=scene.height,
        crs=scene.crs,
        transform=transform,
        footprint=to_shape(scene.footprint) if scene.footprint is not None else None,
        acquired_at=scene.acquired_at,
        object_bucket=scene.object_bucket,
        object_key=scene.object_key,
    )


def _tile_task(task: Task) -> TileTask:
    return TileTask(
        id=task.id, level=task.level, task=task.task, instruction=task.instruction, status=task.status,
        aoi_id=task.aoi_id, parent_task_id=task.parent_task_id, chip_bucket=task.chip_bucket,
        chip_key=task.chip_key, window=(task.tile_col_off, task.tile_row_off, task.tile_width, task.tile_height),
    )  # fmt: skip


class PipelineStore:
    """Prompt generation's reads and writes; shares the repository's engine (and closes it)."""

    def __init__(self, repository: Repository) -> None:
        self.repository = repository
        self.engine = repository.engine

    def close(self) -> None:
        self.repository.close()

    # -- scenes --------------------------------------------------------------------------------------------

    def scene(self, scene_id: str) -> SceneInfo | None:
        found = self.repository.get_scene(scene_id)
        return _scene_info(found) if found is not None else None

    def scenes_covering(self, geometry: BaseGeometry, *, newest_only: bool) -> list[SceneInfo]:
        """Scenes whose footprint intersects a lon/lat geometry, newest acquisition first."""
        found = self.repository.scenes_intersecting(geometry, limit=1 if newest_only else None)
        return [_scene_info(scene) for scene in found]

    # -- AOIs ----------------------------------------------------------------------------------------------

    def active_aois(self, footprint: BaseGeometry) -> list[StoredAoi]:
        """Active AOIs whose geometry intersects a footprint (``ST_Intersects``), by id."""
        found: list[Aoi] = self.repository.aois_intersecting(footprint)
        return [StoredAoi(a.id, to_shape(a.geom), a.instruction) for a in found]

    def upsert_aoi(self, aoi: AoiRecord) -> None:
        self.repository.upsert_aoi(aoi)

    def set_aoi_active(self, aoi_id: str, active: bool) -> bool:
        return self.repository.set_aoi_active(aoi_id, active)

    # -- tasks ---------------------------------------------------------------------------------------------

    def add_tasks(self, tasks: Sequence[TaskRecord]) -> int:
        """Insert the tasks that are new (a re-delivery inserts none); returns how many were."""
        return self.repository.upsert_tasks(tasks)

    def done_tasks(self, task_ids: Sequence[str]) -> set[str]:
        """Which of these tasks are ``done`` already (their answers stored)."""
        if not task_ids:
            return set()
        statement = select(Task.id).where(Task.id.in_(list(task_ids)), Task.status == "done")
        with self.repository._session("done tasks") as session:
            return set(session.scalars(statement))

    def task(self, task_id: str) -> TileTask | None:
        found = self.repository.get_task(task_id)
        return _tile_task(found) if found is not None else None

    def tile_tasks(self, scene_id: str, window: tuple[int, int, int, int]) -> list[TileTask]:
        """Every task of one tile of a scene (any level), by id."""
        col_off, row_off, width, height = window
        query = (
            select(Task)
            .where(
                Task.scene_id == scene_id, Task.tile_col_off == col_off, Task.tile_row_off == row_off,
                Task.tile_width == width, Task.tile_height == height,
            )  # fmt: skip
            .order_by(Task.id)
        )
        with _translated(f"tasks of a tile of scene {scene_id}"), self.repository._session("tile tasks") as session:
            return [_tile_task(task) for task in session.scalars(query)]

    def answers(self, task_ids: Sequence[str]) -> list[StoredAnswer]:
        """The stored result rows of some tasks, by task id and ordinal."""
        if not task_ids:
            return []
        query = select(Result).where(Result.task_id.in_(list(task_ids))).order_by(Result.task_id, Result.ordinal)
        with self.repository._session("answers of tasks") as session:
            return [
                StoredAnswer(
                    task_id=r.task_id, ordinal=r.ordinal, label=r.label, score=r.score,
                    attributes=dict(r.attributes or {}),
                    pixel_geom=to_shape(r.pixel_geom) if r.pixel_geom is not None else None,
                    answer_text=r.answer_text,
                )  # fmt: skip
                for r in session.scalars(query)
            ]

    # -- ad-hoc queries ------------------------------------------------------------------------------------

    def add_query(
        self,
        query_id: str,
        *,
        instruction: str,
        owner: str,
        geom: BaseGeometry | None,
        scene_id: str | None,
        scene_prompt: dict[str, Any] | None,
        coverage: str,
    ) -> QueryRow:
        """Insert a query unless it exists; returns the stored row (a re-delivery finds the first one)."""
        row = {
            "id": query_id, "instruction": instruction, "owner": owner,
            "geom": func.ST_GeomFromEWKT(ewkb_hex(geom)) if geom is not None else None,
            "scene_id": scene_id, "scene_prompt": scene_prompt, "coverage": coverage,
        }  # fmt: skip
        statement = pg_insert(_queries).values(**row).on_conflict_do_nothing(index_elements=[_queries.c.id])
        with self.repository._transaction(f"add query {query_id}") as connection:
            connection.execute(statement)
        found = self.query(query_id)
        assert found is not None  # inserted above, or there already
        return found

    def query(self, query_id: str) -> QueryRow | None:
        statement = select(_queries.c.id, _queries.c.status, _queries.c.task_ids, _queries.c.reason).where(
            _queries.c.id == query_id
        )
        with self.repository._transaction(f"get query {query_id}") as connection:
            found = connection.execute(statement).first()
        return QueryRow(found.id, found.status, tuple(found.task_ids), found.reason) if found else None

    def set_query_tasks(self, query_id: str, task_ids: Sequence[str]) -> None:
        """Record the tasks asked for a query (then ``answered`` as soon as they are all done)."""
        statement = (
            sa.update(_queries)
            .where(_queries.c.id == query_id)
            .values(task_ids=list(task_ids), updated_at=func.now())
        )
        with self.repository._transaction(f"set tasks of query {query_id}") as connection:
            connection.execute(statement)
        for task_id in task_ids[:1]:
            self.mark_answered(task_id)

    def answer_no_coverage(self, query_id: str, reason: str) -> None:
        statement = (
            sa.update(_queries)
            .where(_queries.c.id == query_id, _queries.c.status == "pending")
            .values(status="no_coverage", reason=reason, answered_at=func.now(), updated_at=func.now())
        )
        with self.repository._transaction(f"answer query {query_id}") as connection:
            connection.execute(statement)

    def mark_answered(self, task_id: str) -> list[str]:
        """Mark the pending queries of a task ``answered`` when all their tasks are done; returns their ids."""
        statement = sa.text(
            """
            UPDATE queries AS q SET status = 'answered', answered_at = now(), updated_at = now()
            WHERE q.task_ids @> ARRAY[CAST(:task_id AS text)] AND q.status = 'pending'
              AND NOT EXISTS (
                  SELECT 1 FROM unnest(q.task_ids) AS qt(task_id)
                  LEFT JOIN tasks AS t ON t.id = qt.task_id
                  WHERE t.status IS DISTINCT FROM 'done'
              )
            RETURNING q.id
            """
        )
        with self.repository._transaction(f"answer the queries of task {task_id}") as connection:
            return [row.id for row in connection.execute(statement, {"task_id": task_id})]
