"""The one module through which every write to PostGIS goes, plus the reads the services share.

Writes are idempotent upserts keyed by the caller's deterministic ids (``INSERT ... ON CONFLICT``), so an event
delivered twice leaves the same rows behind:
- scenes and AOIs: ``DO UPDATE`` of their descriptive columns, skipped (``WHERE ... IS DISTINCT FROM``) when
  nothing changed, so a re-delivery writes no new row version; a scene's ``status`` is never reset by a re-ingest;
- tasks: ``DO NOTHING`` (the id hashes the whole definition, and a re-delivery must not reset a finished task);
- results: bulk, chunked ``DO UPDATE ... WHERE changed``, keyed by (task id, ordinal).

Geometries go in as hex EWKB made by shapely in one vectorised call per chunk and parsed by PostGIS
(``ST_GeomFromEWKT`` accepts hex EWKB), which keeps bulk result writes fast (see bench/bench_result_writes.py).

Errors (kinds of the bus's error model, so a consumer's handler lets them propagate): ``StoreUnavailable`` when
the database cannot be reached (retry later), ``IntegrityViolation`` for constraint violations (a result for an
unknown task...), ``InvalidRecord`` for records that are wrong before they reach the database (a footprint that
is not a polygon, a NUL character in a text, a non-finite timing), ``StoreError`` for other database errors.

A task and its results are written in one transaction (``record_results``): a failure leaves nothing behind.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from typing import Any, TypeVar, cast

import numpy as np
import shapely
import sqlalchemy as sa
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry
from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from earthgptx.settings import DatabaseSettings
from earthgptx.store.db import dump_json, encode_json, make_engine
from earthgptx.store.errors import IntegrityViolation, InvalidRecord, StoreError, StoreUnavailable
from earthgptx.store.models import SRID_WGS84, Aoi, Result, Scene, Task
from earthgptx.store.records import AoiRecord, ResultRecord, SceneRecord, TaskRecord, TaskResults

log = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 2000

_T = TypeVar("_T")

_scenes = cast(sa.Table, Scene.__table__)
_tasks = cast(sa.Table, Task.__table__)
_results = cast(sa.Table, Result.__table__)
_aois = cast(sa.Table, Aoi.__table__)

_RESULT_COLUMNS = (
    "task_id", "ordinal", "scene_id", "answer_text", "label", "attributes", "geom", "pixel_geom", "score",
    "model_version", "answer_parsed", "parse_failure", "nodata_fraction",
)  # fmt: skip


def ewkb_hex(geometry: BaseGeometry | None, srid: int = SRID_WGS84) -> str | None:
    """Hex EWKB (with SRID) of a shapely geometry, the form PostGIS parses fastest."""
    if geometry is None:
        return None
    return str(shapely.to_wkb(shapely.set_srid(geometry, srid), hex=True, include_srid=True))


def _ewkb_hex_many(geometries: Sequence[BaseGeometry | None], srid: int | None) -> list[str | None]:
    """Vectorised ``ewkb_hex``; ``srid=None`` writes plain WKB (pixel geometries carry no SRID)."""
    array = np.asarray(geometries, dtype=object)
    if srid is not None:
        array = shapely.set_srid(array, srid)
    encoded = shapely.to_wkb(array, hex=True, include_srid=srid is not None)
    return encoded.tolist()  # type: ignore[no-any-return]


def _geometry_param(geometry: BaseGeometry) -> sa.ColumnElement[Any]:
    return func.ST_GeomFromEWKT(ewkb_hex(geometry))


def _chunks(items: Iterable[_T], size: int) -> Iterator[list[_T]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _changed(table: sa.Table, excluded: Any, columns: Sequence[str]) -> sa.ColumnElement[bool]:
    """True when the proposed row differs from the stored one in any of ``columns`` (NULL-safe)."""
    return sa.tuple_(*(table.c[name] for name in columns)).is_distinct_from(
        sa.tuple_(*(excluded[name] for name in columns))
    )


def _same(value: Any) -> Any:
    return value


def _encoder(engine: Engine) -> Callable[[Any], Any]:
    """How row builders hand JSON columns over: encoded already where the engine passes ``EncodedJson`` through
    (``make_engine``'s), as Python values for any other engine."""
    return encode_json if getattr(engine.dialect, "_json_serializer", None) is dump_json else _same


@dataclass(frozen=True)
class PlannedResults:
    """A ``record_results`` batch as statement parameters (``Repository.plan_results``), for ``write_planned``."""

    task_ids: tuple[str, ...]  # per item of the batch, in order (the outcome counts per item)
    task_chunks: list[list[dict[str, Any]]]
    result_chunks: list[list[dict[str, Any]]]
    engine: Engine  # the plan's parameters are in the form this engine's dialect takes


def _scene_row(scene: SceneRecord) -> dict[str, Any]:
    if scene.footprint is not None and not isinstance(scene.footprint, Polygon):
        raise InvalidRecord(f"scene {scene.id}: footprint must be a Polygon, got {scene.footprint.geom_type}")
    if scene.transform is not None and len(scene.transform) != 6:
        raise InvalidRecord(f"scene {scene.id}: transform must have 6 coefficients, got {len(scene.transform)}")
    return {
        "id": scene.id,
        "source": scene.source,
        "sensor": scene.sensor,
        "modality": scene.modality,
        "bands": list(scene.bands),
        "dtype": scene.dtype,
        "width": scene.width,
        "height": scene.height,
        "crs": scene.crs,
        "transform": list(scene.transform) if scene.transform is not None else None,
        "footprint": ewkb_hex(scene.footprint),
        "acquired_at": scene.acquired_at,
        "object_bucket": scene.object_bucket,
        "object_key": scene.object_key,
        "sha256": scene.sha256,
        "stac_item": scene.stac_item,
        "status": scene.status,
    }


def _task_row(task: TaskRecord, encode: Callable[[Any], Any] = _same) -> dict[str, Any]:
    for name in ("scene_id", "task", "instruction", "model_version"):
        _check_text(f"task {task.id}: {name}", getattr(task, name))
    col_off, row_off, width, height = task.window
    return {
        "id": task.id,
        "scene_id": task.scene_id,
        "tile_col_off": col_off,
        "tile_row_off": row_off,
        "tile_width": width,
        "tile_height": height,
        "chip_bucket": task.chip_bucket,
        "chip_key": task.chip_key,
        "level": task.level,
        "task": task.task,
        "instruction": task.instruction,
        "prompts": encode(list(task.prompts)),
        "model_version": task.model_version,
        "parent_task_id": task.parent_task_id,
        "aoi_id": task.aoi_id,
    }


def _result_rows(results: Sequence[ResultRecord], encode: Callable[[Any], Any] = _same) -> list[dict[str, Any]]:
    for r in results:
        _check_text(f"result {r.task_id}:{r.ordinal}: answer text", r.answer_text)
        _check_text(f"result {r.task_id}:{r.ordinal}: label", r.label)
        _check_text(f"result {r.task_id}:{r.ordinal}: parse failure", r.parse_failure)
    geoms = _ewkb_hex_many([r.geom for r in results], SRID_WGS84)
    pixel_geoms = _ewkb_hex_many([r.pixel_geom for r in results], None)
    return [
        {
            "task_id": r.task_id,
            "ordinal": r.ordinal,
            "scene_id": r.scene_id,
            "answer_text": r.answer_text,
            "label": r.label,
            "attributes": encode(r.attributes),
            "geom": geom,
            "pixel_geom": pixel_geom,
            "score": r.score,
            "model_version": r.model_version,
            "answer_parsed": r.answer_parsed,
            "parse_failure": r.parse_failure,
            "nodata_fraction": r.nodata_fraction,
        }
        for r, geom, pixel_geom in zip(results, geoms, pixel_geoms, strict=True)
    ]


def _upsert_results_statement() -> Any:
    insert = pg_insert(_results)
    data_columns = [name for name in _RESULT_COLUMNS if name not in ("task_id", "ordinal")]
    # RETURNING does two jobs: it counts the rows really written (skipped rows return nothing), and it makes
    # SQLAlchemy batch the rows into multi-row VALUES statements ("insertmanyvalues"), which it does not do
    # for ON CONFLICT statements without RETURNING; row-by-row executemany was 4x slower.
    return insert.on_conflict_do_update(
        index_elements=[_results.c.task_id, _results.c.ordinal],
        set_={**{name: insert.excluded[name] for name in data_columns}, "updated_at": func.now()},
        where=_changed(_results, insert.excluded, data_columns),
    ).returning(_results.c.task_id, _results.c.ordinal)


def _done_tasks_statement() -> Any:
    insert = pg_insert(_tasks)
    # RETURNING so that SQLAlchemy sends multi-row VALUES (see results), and no bound parameter in SET (a
    # literal NULL, not None), which would make it fall back to row at a time: either way this statement went
    # one round trip per task, half of a batch's database time.
    return insert.on_conflict_do_update(
        index_elements=[_tasks.c.id],
        set_={
            "status": insert.excluded.status,
            "error": sa.null(),
            "updated_at": func.now(),
            "timings": _tasks.c.timings.op("||")(insert.excluded.timings),
        },
    ).returning(_tasks.c.id)


def _dedupe_results(chunk: list[ResultRecord]) -> list[ResultRecord]:
    # One INSERT ... ON CONFLICT DO UPDATE may not touch the same row twice; the last record for a key wins.
    by_key = {(r.task_id, r.ordinal): r for r in chunk}
    return chunk if len(by_key) == len(chunk) else list(by_key.values())


def _check_timings(task_id: str, timings: dict[str, float]) -> None:
    # JSON has no NaN or infinity: PostgreSQL would refuse the whole transaction with an obscure message.
    bad = {name: value for name, value in timings.items() if not math.isfinite(value)}
    if bad:
        raise InvalidRecord(f"task {task_id}: timings must be finite numbers, got {bad}")


def _check_text(what: str, value: str | None) -> None:
    if value is not None and "\x00" in value:
        raise InvalidRecord(f"{what} contains a NUL character, which PostgreSQL text cannot store")


class Repository:
    """PostGIS reads and (all) writes. One instance per process; thread-safe through the engine's pool."""

    def __init__(self, engine: Engine, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        self.engine = engine
        self.chunk_size = chunk_size
        self._upsert_results_stmt = _upsert_results_statement()
        self._done_tasks_stmt = _done_tasks_statement()

    @classmethod
    def from_settings(cls, settings: DatabaseSettings | None = None, **options: Any) -> Repository:
        return cls(make_engine(settings), **options)

    def close(self) -> None:
        self.engine.dispose()

    # -- plumbing ------------------------------------------------------------------------------------------

    @contextmanager
    def _transaction(self, what: str) -> Iterator[Connection]:
        with _translated(what), self.engine.begin() as connection:
            yield connection

    @contextmanager
    def _session(self, what: str) -> Iterator[Session]:
        with _translated(what), Session(self.engine, expire_on_commit=False) as session:
            yield session

    # -- scenes --------------------------------------------------------------------------------------------

    def upsert_scene(self, scene: SceneRecord) -> None:
        """Insert a scene or refresh its description; the stored ``status`` is left as it is."""
        row = _scene_row(scene)
        insert = pg_insert(_scenes).values(**row)
        refreshed = [name for name in row if name not in ("id", "status")]
        statement = insert.on_conflict_do_update(
            index_elements=[_scenes.c.id],
            set_={**{name: insert.excluded[name] for name in refreshed}, "updated_at": func.now()},
            where=_changed(_scenes, insert.excluded, refreshed),
        )
        with self._transaction(f"upsert scene {scene.id}") as connection:
            connection.execute(statement)

    def set_scene_status(self, scene_id: str, status: str) -> bool:
        """Set a scene's status; False if there is no such scene."""
        statement = (
            sa.update(_scenes).where(_scenes.c.id == scene_id).values(status=status, updated_at=func.now())
        )
        with self._transaction(f"set status of scene {scene_id}") as connection:
            return connection.execute(statement).rowcount == 1

    def get_scene(self, scene_id: str) -> Scene | None:
        with self._session(f"get scene {scene_id}") as session:
            return session.get(Scene, scene_id)

    def scenes_intersecting(
        self,
        geometry: BaseGeometry,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
    ) -> list[Scene]:
        """Scenes whose footprint intersects a lon/lat geometry, newest acquisition first."""
        query = select(Scene).where(func.ST_Intersects(Scene.footprint, _geometry_param(geometry)))
        if since is not None:
            query = query.where(Scene.acquired_at >= since)
        if until is not None:
            query = query.where(Scene.acquired_at < until)
        query = query.order_by(Scene.acquired_at.desc().nulls_last(), Scene.id).limit(limit)
        with self._session("scenes intersecting a geometry") as session:
            return list(session.scalars(query))

    # -- tasks ---------------------------------------------------------------------------------------------

    def upsert_task(self, task: TaskRecord) -> bool:
        """Insert a task unless it exists; True if it was new."""
        return self.upsert_tasks([task]) == 1

    def upsert_tasks(self, tasks: Iterable[TaskRecord]) -> int:
        """Insert tasks that do not exist yet (in one transaction); returns how many were new."""
        # RETURNING: only new rows come back, and it lets SQLAlchemy batch the VALUES (see results).
        statement = (
            pg_insert(_tasks).on_conflict_do_nothing(index_elements=[_tasks.c.id]).returning(_tasks.c.id)
        )
        created = 0
        with self._transaction("upsert tasks") as connection:
            for chunk in _chunks(tasks, self.chunk_size):
                rows = list({row["id"]: row for row in map(_task_row, chunk)}.values())
                created += len(connection.execute(statement, rows).all())
        return created

    def set_task_status(
        self,
        task_id: str,
        status: str,
        *,
        error: str | None = None,
        timings: dict[str, float] | None = None,
        count_attempt: bool = False,
    ) -> bool:
        """Move a task to ``status``; ``timings`` are merged into the stored ones. False if no such task."""
        values: dict[str, Any] = {"status": status, "error": error, "updated_at": func.now()}
        if timings:
            values["timings"] = _tasks.c.timings.op("||")(sa.cast(timings, _tasks.c.timings.type))
        if count_attempt:
            values["attempts"] = _tasks.c.attempts + 1
        statement = sa.update(_tasks).where(_tasks.c.id == task_id).values(**values)
        with self._transaction(f"set status of task {task_id}") as connection:
            return connection.execute(statement).rowcount == 1

    def get_task(self, task_id: str) -> Task | None:
        with self._session(f"get task {task_id}") as session:
            return session.get(Task, task_id)

    # -- results -------------------------------------------------------------------------------------------

    def upsert_results(self, results: Iterable[ResultRecord]) -> int:
        """Bulk idempotent upsert, in one transaction; returns the rows inserted or changed (0 on a replay)."""
        with self._transaction("upsert results") as connection:
            return self._write_results(connection, results)

    def record_task_results(
        self,
        task: TaskRecord | str,
        results: Iterable[ResultRecord],
        *,
        timings: dict[str, float] | None = None,
    ) -> int:
        """Store a task's results and mark it done, in one transaction; returns the rows inserted or changed.

        Given a ``TaskRecord``, the task row is inserted too (if missing) in the same transaction; given an id,
        the task must exist already.
        """
        if isinstance(task, str):
            results = list(results)
            stray = {r.task_id for r in results} - {task}
            if stray:
                raise InvalidRecord(f"results of other tasks given for task {task}: {sorted(stray)}")
            _check_timings(task, timings or {})
            with self._transaction(f"record results of task {task}") as connection:
                written = self._write_results(connection, results)
                self._mark_done(connection, [(task, dict(timings or {}))])
            return written
        return self.record_results([TaskResults(task, tuple(results), dict(timings or {}))])[0]

    def record_results(self, batch: Sequence[TaskResults]) -> list[int]:
        """Write tasks (each inserted if missing) with their results and mark them done, in one transaction.

        Returns the rows inserted or changed per item (0 for a replay). Any failure rolls the whole batch back.
        It is ``write_planned(plan_results(batch))``.
        """
        return self.write_planned(self.plan_results(batch))

    def plan_results(self, batch: Sequence[TaskResults]) -> PlannedResults:
        """The database-free half of ``record_results``: checks, then the statements' parameters (hex EWKB, and
        JSON already encoded where the engine is ``make_engine``'s). A pipelined caller (the resultstore) makes
        the plan of its next batch while this one's ``write_planned`` waits on PostgreSQL. Raises
        ``InvalidRecord`` as ``record_results`` does."""
        for item in batch:
            stray = {r.task_id for r in item.results} - {item.task.id}
            if stray:
                raise InvalidRecord(f"results of other tasks given for task {item.task.id}: {sorted(stray)}")
            _check_timings(item.task.id, item.timings)
        encode = _encoder(self.engine)
        # One statement per chunk inserts the missing tasks and marks every task done (a redelivered task keeps
        # its other columns); the last item of a task id in the batch gives its timings.
        task_rows = list({
            item.task.id: {**_task_row(item.task, encode), "status": "done", "error": None,
                           "timings": encode(dict(item.timings))}
            for item in batch
        }.values())
        result_chunks = [
            _result_rows(_dedupe_results(chunk), encode)
            for chunk in _chunks((r for item in batch for r in item.results), self.chunk_size)
        ]
        return PlannedResults(
            tuple(item.task.id for item in batch),
            list(_chunks(task_rows, self.chunk_size)),
            result_chunks,
            self.engine,
        )

    def write_planned(self, plan: PlannedResults) -> list[int]:
        """The database half of ``record_results``: one transaction; rows written per item (0 for a replay)."""
        if plan.engine is not self.engine:
            raise ValueError("a plan is written by the repository (engine) that made it")
        if not plan.task_ids:
            return []
        with self._transaction(f"record results of {len(plan.task_ids)} task(s)") as connection:
            for task_rows in plan.task_chunks:
                connection.execute(self._done_tasks_stmt, task_rows).all()
            written = self._upsert_result_rows(connection, plan.result_chunks)
        outcome: list[int] = []
        seen: set[str] = set()
        for task_id in plan.task_ids:
            # A task twice in one batch (a redelivery) had its rows written once: they count for the first.
            outcome.append(0 if task_id in seen else written.get(task_id, 0))
            seen.add(task_id)
        return outcome

    def _mark_done(self, connection: Connection, tasks: Sequence[tuple[str, dict[str, float]]]) -> None:
        """Set tasks done and merge their timings; raises ``IntegrityViolation`` if one does not exist."""
        statement = (
            sa.update(_tasks)
            .where(_tasks.c.id == sa.bindparam("done_task_id"))
            .values(
                status="done",
                error=None,
                updated_at=func.now(),
                timings=_tasks.c.timings.op("||")(sa.bindparam("done_timings", type_=_tasks.c.timings.type)),
            )
        )
        rows = [{"done_task_id": task_id, "done_timings": dict(timings)} for task_id, timings in tasks]
        found = connection.execute(statement, rows).rowcount
        if found != len(rows):
            raise IntegrityViolation(f"{len(rows) - found} of {len(rows)} task(s) do not exist")

    def _write_results(self, connection: Connection, results: Iterable[ResultRecord]) -> int:
        return sum(self._write_results_by_task(connection, results).values())

    def _write_results_by_task(self, connection: Connection, results: Iterable[ResultRecord]) -> dict[str, int]:
        """Upsert results in chunks; returns the rows really inserted or changed, per task."""
        encode = _encoder(self.engine)
        chunks = (_result_rows(_dedupe_results(chunk), encode) for chunk in _chunks(results, self.chunk_size))
        return self._upsert_result_rows(connection, chunks)

    def _upsert_result_rows(self, connection: Connection, chunks: Iterable[list[dict[str, Any]]]) -> dict[str, int]:
        """Run the results upsert once per chunk of rows; returns the rows really inserted or changed, per task."""
        written: dict[str, int] = {}
        for rows in chunks:
            for task_id, _ in connection.execute(self._upsert_results_stmt, rows):
                written[task_id] = written.get(task_id, 0) + 1
        return written

    def results_for_scene(self, scene_id: str) -> list[Result]:
        query = select(Result).where(Result.scene_id == scene_id).order_by(Result.task_id, Result.ordinal)
        with self._session(f"results of scene {scene_id}") as session:
            return list(session.scalars(query))

    def results_for_task(self, task_id: str) -> list[Result]:
        query = select(Result).where(Result.task_id == task_id).order_by(Result.ordinal)
        with self._session(f"results of task {task_id}") as session:
            return list(session.scalars(query))

    def results_intersecting(
        self,
        geometry: BaseGeometry,
        *,
        label: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
    ) -> list[Result]:
        """Results whose geometry intersects a lon/lat geometry; the time window is on scene acquisition."""
        query = select(Result).where(func.ST_Intersects(Result.geom, _geometry_param(geometry)))
        if label is not None:
            query = query.where(Result.label == label)
        if since is not None or until is not None:
            query = query.join(Scene, Scene.id == Result.scene_id)
            if since is not None:
                query = query.where(Scene.acquired_at >= since)
            if until is not None:
                query = query.where(Scene.acquired_at < until)
        query = query.order_by(Result.task_id, Result.ordinal).limit(limit)
        with self._session("results intersecting a geometry") as session:
            return list(session.scalars(query))

    # -- areas of interest ---------------------------------------------------------------------------------

    def upsert_aoi(self, aoi: AoiRecord) -> None:
        """Create or update a standing query."""
        geom = aoi.geom
        if isinstance(geom, Polygon):
            geom = MultiPolygon([geom])
        if not isinstance(geom, MultiPolygon):
            raise InvalidRecord(
                f"AOI {aoi.id}: geometry must be a Polygon or MultiPolygon, got {geom.geom_type}"
            )
        row = {
            "id": aoi.id,
            "name": aoi.name,
            "geom": ewkb_hex(geom),
            "instruction": aoi.instruction,
            "owner": aoi.owner,
            "active": aoi.active,
        }
        insert = pg_insert(_aois).values(**row)
        changing = [name for name in row if name != "id"]
        statement = insert.on_conflict_do_update(
            index_elements=[_aois.c.id],
            set_={**{name: insert.excluded[name] for name in changing}, "updated_at": func.now()},
            where=_changed(_aois, insert.excluded, changing),
        )
        with self._transaction(f"upsert AOI {aoi.id}") as connection:
            connection.execute(statement)

    def set_aoi_active(self, aoi_id: str, active: bool) -> bool:
        statement = sa.update(_aois).where(_aois.c.id == aoi_id).values(active=active, updated_at=func.now())
        with self._transaction(f"set AOI {aoi_id} active={active}") as connection:
            return connection.execute(statement).rowcount == 1

    def aois_intersecting(self, footprint: BaseGeometry, *, active_only: bool = True) -> list[Aoi]:
        """The standing queries a scene footprint touches (``ST_Intersects``)."""
        query = select(Aoi).where(func.ST_Intersects(Aoi.geom, _geometry_param(footprint)))
        if active_only:
            query = query.where(Aoi.active.is_(True))
        with self._session("AOIs intersecting a footprint") as session:
            return list(session.scalars(query.order_by(Aoi.id)))


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """Map SQLAlchemy/driver exceptions onto the store's errors (transient vs permanent)."""
    try:
        yield
    except sa.exc.IntegrityError as exc:
        raise IntegrityViolation(f"{what}: {exc.orig}") from exc
    except (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError) as exc:
        # Connection refused or dropped, server shutting down, pool exhausted, serialization failures and
        # deadlocks: all worth retrying.
        raise StoreUnavailable(f"{what}: database unavailable ({type(exc).__name__})") from exc
    except sa.exc.DBAPIError as exc:
        if exc.connection_invalidated:
            raise StoreUnavailable(f"{what}: connection lost") from exc
        raise StoreError(f"{what}: {exc.orig}") from exc
    except sa.exc.SQLAlchemyError as exc:
        raise StoreError(f"{what}: {exc}") from exc
